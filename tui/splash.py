"""The first frame, drawn before Textual is imported: the app's title bar on its theme's colours.

Importing Textual takes 0.3-0.4 s on a small machine and the app's own first frame comes after that; until then
the terminal went on showing the shell. This draws what that frame begins with (the header, the screen's and the
footer's colours) with a few escape sequences and the standard library only. Textual's first frame then paints
every cell over it. The colours are the ones the app rendered last time, kept in its database's app state (read
here read-only), or the default theme's on a first start.

Nothing here imports Textual at import time: `tui.launch` imports this module before Textual.
"""

from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TextIO

from tui.picture import COLOURS_STATE, read_only, stored_picture

if TYPE_CHECKING:
    from textual.app import App

APP_TITLE = "chat-tui"
HEADER_ICON = "◆"
DEMO_SUB_TITLE = "demo"

Colours = dict[str, str]
"""SGR parameters per part of the frame: "screen" and "footer" (backgrounds), "header" (fore- and background),
"dim" (the sub title's foreground); as kept by the app, also "system", the colour system they were made for."""

PARTS = ("screen", "header", "dim", "footer")
DEFAULT_COLOURS: dict[str, Colours] = {
    # Textual's default theme (textual-dark), as the app renders it for a colour system; pinned by a test.
    "truecolor": {
        "screen": "48;2;18;18;18",
        "header": "38;2;224;224;224;48;2;36;47;56",
        "dim": "38;2;160;163;166",
        "footer": "48;2;36;47;56",
    },
    "256": {"screen": "48;5;233", "header": "38;5;253;48;5;17", "dim": "38;5;247", "footer": "48;5;17"},
    "standard": {"screen": "40", "header": "97;100", "dim": "37", "footer": "100"},
}
NO_COLOURS: Colours = {"screen": "0", "header": "7", "dim": "2", "footer": "7"}
_SGR = re.compile(r"[0-9;]{1,64}")
"""What a stored colour may hold: the file is the user's, but nothing read from it reaches the terminal as an
escape sequence of its own."""
_ICON_WIDTH, _CLOCK_WIDTH = 8, 10  # Textual's HeaderIcon and HeaderClockSpace
ALTERNATE_SCREEN = "\x1b[?1049h"
ENTER, LEAVE = ALTERNATE_SCREEN + "\x1b[?25l\x1b[?7l", "\x1b[0m\x1b[?7h\x1b[?25h\x1b[?1049l"
"""The alternate screen, no cursor, no line wrap; and back."""


def frame(width: int, height: int, colours: Colours, sub_title: str) -> str:
    """The escape sequences drawing the frame on a ``width`` x ``height`` screen (from its top left corner)."""
    sub = f" — {sub_title}" if sub_title else ""
    room = width - _ICON_WIDTH - _CLOCK_WIDTH  # Textual centres the title between the icon and the clock's place
    left = f" {HEADER_ICON}".ljust(_ICON_WIDTH) + " " * max(0, (room - len(APP_TITLE) - len(sub)) // 2) + APP_TITLE
    header, dim = colours["header"], colours["dim"]
    # Past the right edge, a row is cut: line wrap is off.
    rows = [
        f"\x1b[1;1H\x1b[0;{header}m{left}\x1b[0;{header};{dim}m{sub}\x1b[0;{header}m" + " " * (width - len(left + sub))
    ]
    body = f"\x1b[0;{colours['screen']}m" + " " * width
    rows += [f"\x1b[{row};1H{body}" for row in range(2, height)]
    if height > 1:
        rows.append(f"\x1b[{height};1H\x1b[0;{colours['footer']}m" + " " * width)
    return "".join(rows) + "\x1b[0m"


def stored_colours(db_path: Path, system: str) -> Colours | None:
    """The colours the app kept in the database for this colour system, or None (none kept, another colour
    system, no database yet, an older one, unreadable, locked)."""
    import sqlite3

    if not db_path.is_file():
        return None  # connecting read-only to a missing file would fail anyway; this is quicker
    try:
        with read_only(db_path) as connection:
            row = connection.execute("SELECT value FROM app_state WHERE key = ?", (COLOURS_STATE,)).fetchone()
        value = json.loads(row[0]) if row else None
    except (sqlite3.Error, ValueError, OSError):
        return None
    if not isinstance(value, dict) or value.get("system") != system:
        return None
    if not all(isinstance(value.get(part), str) and _SGR.fullmatch(value[part]) for part in PARTS):
        return None
    return {part: value[part] for part in PARTS}


def colour_system() -> str:
    """The colour system Textual will render with here, found as Rich finds it (without importing Rich)."""
    chosen = os.environ.get("TEXTUAL_COLOR_SYSTEM", "auto")
    if chosen != "auto":
        return chosen
    if os.environ.get("COLORTERM", "").strip().lower() in ("truecolor", "24bit"):
        return "truecolor"
    return "256" if os.environ.get("TERM", "").lower().rpartition("-")[2] in ("256color", "kitty") else "standard"


def colours_for_this_terminal(db_path: Path) -> Colours:
    if "NO_COLOR" in os.environ:
        return NO_COLOURS
    system = colour_system()
    return stored_colours(db_path, system) or DEFAULT_COLOURS.get(system, DEFAULT_COLOURS["standard"])


def rendered_colours(app: App[Any], system: str | None = None) -> Colours:
    """The colours of ``app``'s first frame as it renders them now (for its terminal's colour system, or
    ``system``), for the next start's splash."""
    from rich.color import ColorSystem
    from rich.console import COLOR_SYSTEMS
    from textual.filter import dim_color
    from textual.widgets import Footer, Header

    system = system or app.console.color_system or "truecolor"
    target = COLOR_SYSTEMS.get(system, ColorSystem.TRUECOLOR)

    def sgr(colour: Any, foreground: bool) -> str:  # a Rich colour, as this colour system writes it
        return ";".join(colour.downgrade(target).get_ansi_codes(foreground))

    def dimmed(background: Any, foreground: Any) -> str:
        # The ANSI themes' colours are the terminal's own ("default", numbered), which only it can blend: ask it to.
        if background.triplet is None or foreground.triplet is None:
            return f"{sgr(foreground, True)};2"
        return sgr(dim_color(background, foreground), True)

    screen = app.screen_stack[0]  # the chats, under whatever dialog is open
    _, _, header_bg, header_fg = screen.query_one(Header).colors
    background, foreground = header_bg.rich_color, header_fg.rich_color
    return {
        "system": system,
        "screen": sgr(screen.colors[2].rich_color, False),
        "header": f"{sgr(foreground, True)};{sgr(background, False)}",
        "dim": dimmed(background, foreground),
        "footer": sgr(screen.query_one(Footer).colors[2].rich_color, False),
    }


class Splash:
    """The frame on screen until Textual takes over; a context manager that puts the terminal back on error.

    Shown only on a terminal (Textual writes to stderr and reads stdin). While shown, keys typed are neither
    echoed over it nor held for a whole line: they wait for the app, which reads them once it runs.
    """

    def __init__(self, out: TextIO | None = None, tty: int | None = None) -> None:
        self._out, self._tty = out, tty
        self._modes: list[Any] | None = None
        self._handed_over = False

    @classmethod
    def show(
        cls,
        db_path: Path,
        sub_title: str = "",
        *,
        context: str | None = None,
        out: TextIO | None = None,
        tty: TextIO | None = None,
    ) -> Splash:
        """Draw the frame on ``out`` (Textual's output, stderr), keys held on ``tty`` (its input, stdin): the
        picture the app kept of the screen it opens on, when it holds for this ``context`` (tui/picture.py), or
        the header on the theme's colours."""
        out, tty = out or sys.__stderr__, tty or sys.__stdin__
        try:
            import termios

            if out is None or tty is None or not (out.isatty() and tty.isatty()):
                return cls()
            size = os.get_terminal_size(out.fileno())
        except (ImportError, OSError, ValueError):  # no termios (Windows), a closed stream
            return cls()
        if os.environ.get("TERM", "dumb") in ("", "dumb") or size.columns < 1 or size.lines < 1:
            return cls()
        splash = cls(out, tty.fileno())
        picture = stored_picture(db_path, context, size.columns, size.lines) if context is not None else None
        drawing = picture or frame(size.columns, size.lines, colours_for_this_terminal(db_path), sub_title)
        try:
            splash._modes = termios.tcgetattr(splash._tty)
            quiet = termios.tcgetattr(splash._tty)
            quiet[3] &= ~(termios.ECHO | termios.ICANON)
            termios.tcsetattr(splash._tty, termios.TCSANOW, quiet)
            out.write(ENTER + drawing)
            out.flush()
        except (termios.error, OSError, ValueError):
            splash.close()
            return cls()
        return splash

    @property
    def shown(self) -> bool:
        return self._out is not None

    def hand_over(self) -> None:
        """Give the terminal's modes back just before Textual starts: it saves them to restore at exit (and when
        suspended), so it must not save the splash's. The frame stays until Textual's first one covers it."""
        self._restore_modes()
        self._handed_over = True

    def close(self) -> None:
        """Put the terminal back as it was, unless Textual took it over (it leaves the screen itself)."""
        self._restore_modes()
        if self._out is not None and not self._handed_over:
            try:
                self._out.write(LEAVE)
                self._out.flush()
            except (OSError, ValueError):
                pass
        self._out = None

    def _restore_modes(self) -> None:
        if self._modes is None or self._tty is None:
            return
        import termios

        try:
            termios.tcsetattr(self._tty, termios.TCSADRAIN, self._modes)
        except termios.error:
            pass
        self._modes = None

    def __enter__(self) -> Splash:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()
