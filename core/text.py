"""Text from a model made safe to show: control and escape sequences become visible, inert symbols."""

from __future__ import annotations

# C0 controls (but tab and newline) as their Unicode control pictures (ESC → ␛), DEL → ␡, C1 → �.
_INERT = (
    {c: 0x2400 + c for c in range(32) if c not in (9, 10)} | {0x7F: 0x2421} | {c: 0xFFFD for c in range(0x80, 0xA0)}
)


def inert(text: str) -> str:
    """``text`` with every control and escape sequence shown, never passed to the terminal."""
    return text.translate(_INERT)
