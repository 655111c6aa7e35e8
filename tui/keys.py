"""Keys: terminal input that Textual reads differently from what xterm and tmux mean, and the keys bound now."""

from __future__ import annotations

import re
from collections.abc import Iterable
from enum import Enum

from textual import _ansi_sequences
from textual._xterm_parser import BRACKETED_PASTE_END, BRACKETED_PASTE_START, XTermParser
from textual.dom import DOMNode
from textual.message import Message

ESC = "\x1b"
_ESCAPE_SEQUENCE = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[0-Z\\^-~])")
"""A complete CSI (colours, cursor moves), OSC (titles, links) or two-character escape sequence."""
_UNFINISHED = re.compile(r"\x1b(?:\[[0-?]*[ -/]*|\][^\x07\x1b]*\x1b?)?\Z")
"""The start of one, at the end of what was read so far."""
_LONGEST_HELD = 256
"""Past this, an unfinished escape sequence in a paste is dropped as garbage instead of waiting for its end."""


AltDigit = Enum("AltDigit", {f"ALT_{digit}": f"alt+{digit}" for digit in "0123456789"}, type=str)
"""Key names for the ESC-digit sequences, in the form Textual's table of sequences gives its keys."""


def read_escape_digits_as_alt() -> None:
    """Make ESC followed by a digit arrive as alt+1…9 (and alt+0), as xterm, tmux and most Linux terminals mean it.

    Textual 8 maps those sequences to ``¡™£¢∞§¶•ªº``, because WezTerm on macOS sends them for option+digit; that
    leaves alt+N, the usual "go to tab N" key, unreachable everywhere else. A ``¡`` typed as a character is not
    affected, only the two-byte ESC sequences are. Mapped, not removed: Textual reads an unknown ESC sequence as
    alt+key only after its escape delay (0.1 s), which made alt+N switch tabs twice as slowly as ctrl+PgDn.
    Safe to call more than once.
    """
    for digit in "0123456789":
        _ansi_sequences.ANSI_SEQUENCES_KEYS[f"\x1b{digit}"] = (AltDigit[f"ALT_{digit}"],)  # type: ignore[assignment]


def read_pastes_whole() -> None:
    """Have Textual's Linux driver parse input with `PasteSafeParser` (it builds its parser from this name)."""
    try:
        from textual.drivers import linux_driver
    except ImportError:  # Windows: no termios
        return
    linux_driver.XTermParser = PasteSafeParser  # type: ignore[misc]


def without_escapes(text: str) -> str:
    return _ESCAPE_SEQUENCE.sub("", text).replace(ESC, "")


class PasteSafeParser(XTermParser):
    """Textual's parser, given pasted text without the escape sequences it may hold.

    Text copied from a terminal log can carry colour codes (``ESC[31m``). Inside a bracketed paste, Textual reads
    an ESC as the start of a key sequence and replays what follows as key presses: a pasted line break became
    Enter and sent part of the paste, and the rest landed in the prompt out of order. Many terminals strip ESC
    from a paste; this does it for those that do not. Outside a paste, input passes through untouched.
    """

    def __init__(self, debug: bool = False) -> None:
        super().__init__(debug)
        self._in_paste = False
        self._tail = ""
        """The end of the input outside a paste, to find a paste's start sent in two reads."""
        self._held = ""
        """Pasted input from an ESC on, not yet known to be the paste's end or a whole escape sequence."""

    def feed(self, data: str) -> Iterable[Message]:
        if not data:  # the end of input
            held, self._held = without_escapes(self._held), ""
            return [*(super().feed(held) if held else ()), *super().feed("")]
        filtered = self._filter(data)
        return super().feed(filtered) if filtered else ()  # all of it held: an empty feed would mean the end

    def _filter(self, data: str) -> str:
        out: list[str] = []
        while data:
            if not self._in_paste:
                joined = self._tail + data
                start = joined.find(BRACKETED_PASTE_START)
                if start < 0:
                    self._tail = joined[-(len(BRACKETED_PASTE_START) - 1) :]
                    out.append(data)
                    break
                end = start + len(BRACKETED_PASTE_START) - len(self._tail)
                out.append(data[:end])
                data, self._tail, self._in_paste = data[end:], "", True
                continue
            joined, self._held = self._held + data, ""
            end = joined.find(BRACKETED_PASTE_END)
            if end >= 0:
                out.append(without_escapes(joined[:end]) + BRACKETED_PASTE_END)
                data, self._in_paste = joined[end + len(BRACKETED_PASTE_END) :], False
                continue
            unfinished = _UNFINISHED.search(joined)
            if unfinished and len(joined) - unfinished.start() < _LONGEST_HELD:
                joined, self._held = joined[: unfinished.start()], joined[unfinished.start() :]
            out.append(without_escapes(joined))
            break
        return "".join(out)


def bound_keys(node: DOMNode, action: str, *, as_footer: bool = True) -> list[str]:
    """The keys that run ``action`` on ``node`` now (as remapped in config.toml), as the Footer shows them ("^r"),
    or else as written in the config ("ctrl+r", for prose)."""
    # Textual applies the app's keymap to a copy of each node's bindings as it dispatches a key; so does this.
    bindings = node._bindings.copy()
    bindings.apply_keymap(node.app._keymap)
    return [
        node.app.get_key_display(binding) if as_footer else binding.key
        for for_key in bindings.key_to_bindings.values()
        for binding in for_key
        if binding.action == action
    ]


def with_keys(text: str, node: DOMNode, action: str) -> str:
    """``text`` followed by the keys of ``action`` on ``node``, e.g. "Open a new chat tab (^t)", for the palette."""
    keys = bound_keys(node, action)
    return f"{text} ({', '.join(keys)})" if keys else text
