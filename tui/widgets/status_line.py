"""A one-line status whose updates repaint only itself: a Static would re-lay out the screen on every update."""

from __future__ import annotations

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget


class StatusLine(Widget):
    """Model, tokens, time to first token, tokens per second: refreshed every second while a reply streams."""

    text: reactive[str] = reactive("", layout=False)
    """The line's text; plain, never markup."""

    def render(self) -> Content:
        return Content(self.text)
