"""Terminal key input that Textual reads differently from what xterm and tmux mean."""

from __future__ import annotations

from textual import _ansi_sequences


def read_escape_digits_as_alt() -> None:
    """Make ESC followed by a digit arrive as alt+1…9 (and alt+0), as xterm, tmux and most Linux terminals mean it.

    Textual 8 maps those sequences to ``¡™£¢∞§¶•ªº``, because WezTerm on macOS sends them for option+digit; that
    leaves alt+N, the usual "go to tab N" key, unreachable everywhere else. A ``¡`` typed as a character is not
    affected, only the two-byte ESC sequences are. Safe to call more than once.
    """
    for digit in "0123456789":
        _ansi_sequences.ANSI_SEQUENCES_KEYS.pop(f"\x1b{digit}", None)
