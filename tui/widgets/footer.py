"""The Footer, rebuilt only when what it shows changes, and showing only the keys that fit."""

from __future__ import annotations

from typing import Any

from rich.cells import cell_len
from textual import events
from textual.app import ComposeResult
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Footer
from textual.widgets._footer import FooterKey

COMPACT_BELOW = 100
"""Terminals narrower than this get the compact footer: with Textual's padding, F1 Keys fell off 80 columns."""


def key_width(key: FooterKey, *, compact: bool) -> int:
    """Cells a FooterKey takes with Textual 8's Footer CSS: " key desc " plain, "key desc" and a margin compact;
    the command palette's key, docked right, has a border in place of the padding, and the margin as well."""
    width = cell_len(key.key_display) + cell_len(key.description) + (2 if compact else 3)
    return width + 1 if compact and key.has_class("-command-palette") else width


class SteadyFooter(Footer):
    """Textual's Footer recomposes (some twenty widgets, a CSS pass and a layout: ~30 ms here) whenever the
    bindings might have changed, which is every focus change. Switching tabs moves focus to another prompt with
    the very same keys, so the rebuild bought nothing but a slower switch; it now happens only when a key,
    label or enabled state would look different.

    Textual's Footer also clips what does not fit mid-word ("^w Clos"), leaving the end of a key under the palette's
    margin; this one drops whole keys from the end instead, but never `keep_action` (the help key that lists them
    all)."""

    _shown: tuple[Any, ...] | None = None

    def __init__(self, *, keep_action: str | None = None) -> None:
        super().__init__()
        self.keep_action = keep_action
        self._needed = 0
        """Cells every key would take at the last compose: a resize that crosses it composes again."""
        self._composed_width = 0

    def compose(self) -> ComposeResult:
        children: list[Widget] = list(super().compose())
        keys = [child for child in children if isinstance(child, FooterKey)]
        if len(keys) != len(children):
            yield from children  # groups or labels: their widths are not the ones above, so shown as Textual would
            return
        compact = self.compact
        for key in keys:
            # A FooterKey starts compact and is bound to the Footer's value once mounted: each change of class
            # restyles it on the spot (~2 ms apiece, every key of every rebuild). Given the value now, it has none.
            # The palette's key is not bound: always compact.
            if not key.has_class("-command-palette"):
                key.set_reactive(FooterKey.compact, compact)
        needed = sum(key_width(key, compact=compact) for key in keys)
        self._needed, self._composed_width = needed, self.size.width
        dropped: set[int] = set()
        for key in reversed(keys):
            if needed <= self.size.width:
                break
            if key.action != self.keep_action and not key.has_class("-command-palette"):
                dropped.add(id(key))
                needed -= key_width(key, compact=compact)
        yield from (child for child in children if id(child) not in dropped)

    @staticmethod
    def _keys_of(screen: Screen[Any]) -> tuple[Any, ...]:
        return tuple(
            (binding.key, binding.action, binding.description, binding.group, enabled, tooltip)
            for _node, binding, enabled, tooltip in screen.active_bindings.values()
            if binding.show
        )

    def bindings_changed(self, screen: Screen[Any]) -> None:
        shown = self._keys_of(screen)
        if shown == self._shown:
            return
        super().bindings_changed(screen)
        # Remembered only once a rebuild is on its way (Footer skips it while the app has no focus).
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self._shown = shown

    async def show_keys_now(self) -> None:
        """Rebuild for the keys of the focus now, not after the next frame as Textual does: at a start, the
        first frame showed the keys of no focus (in another order) under the splash's picture of the right ones."""
        self._shown = self._keys_of(self.screen)
        with self._context():  # as the Footer's own: its keys bind to its data (private; Textual is pinned)
            await self.recompose()

    def on_resize(self, event: events.Resize) -> None:
        width = event.size.width
        compact = width < COMPACT_BELOW
        widened = self.compact and not compact  # every key a cell wider: what fitted may not
        self.compact = compact
        if widened or self._needed > min(width, self._composed_width):
            self.call_after_refresh(self.recompose)
