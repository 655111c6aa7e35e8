"""Textual's driver for a terminal that the splash (tui/splash.py) has already switched to the alternate screen."""

from __future__ import annotations

from textual.drivers.linux_driver import LinuxDriver

from tui.splash import ALTERNATE_SCREEN


class AfterSplashDriver(LinuxDriver):
    """Textual switches to the alternate screen as it starts, and many terminals (xterm among them) clear that
    screen on every switch: the splash would turn blank until the first frame, ~0.1 s later. The first switch is
    left out, since the splash made it; later ones (back from ctrl+z) go through."""

    _splash_on_screen = True

    def write(self, data: str) -> None:
        if self._splash_on_screen and data == ALTERNATE_SCREEN:
            self._splash_on_screen = False
            return
        super().write(data)
