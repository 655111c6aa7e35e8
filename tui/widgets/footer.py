"""The Footer, rebuilt only when what it shows changes."""

from __future__ import annotations

from typing import Any

from textual import events
from textual.screen import Screen
from textual.widgets import Footer

COMPACT_BELOW = 100
"""Terminals narrower than this get the compact footer: with Textual's padding, F1 Keys fell off 80 columns."""


class SteadyFooter(Footer):
    """Textual's Footer recomposes (some twenty widgets, a CSS pass and a layout: ~30 ms here) whenever the
    bindings might have changed, which is every focus change. Switching tabs moves focus to another prompt with
    the very same keys, so the rebuild bought nothing but a slower switch; it now happens only when a key,
    label or enabled state would look different."""

    _shown: tuple[Any, ...] | None = None

    def bindings_changed(self, screen: Screen[Any]) -> None:
        shown = tuple(
            (binding.key, binding.action, binding.description, binding.group, enabled, tooltip)
            for _node, binding, enabled, tooltip in screen.active_bindings.values()
            if binding.show
        )
        if shown == self._shown:
            return
        super().bindings_changed(screen)
        # Remembered only once a rebuild is on its way (Footer skips it while the app has no focus).
        if screen.app.app_focus and self.is_attached and screen is self.screen:
            self._shown = shown

    def on_resize(self, event: events.Resize) -> None:
        self.compact = event.size.width < COMPACT_BELOW
