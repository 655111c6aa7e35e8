"""The splash: the first frame, drawn before Textual is imported, must read and look like the app's own first frame,
hand the terminal over intact, and put it back as it was when the start fails."""

from __future__ import annotations

import fcntl
import json
import os
import pty
import re
import sqlite3
import struct
import termios
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest
from rich.color import ColorSystem
from rich.console import COLOR_SYSTEMS
from rich.segment import Segment

from core.config import Settings, load_settings
from tests.helpers import app_running_in_terminal, query, screen_text
from tui.app import ChatApp
from tui.splash import (
    COLOURS_STATE,
    DEFAULT_COLOURS,
    ENTER,
    LEAVE,
    Splash,
    colour_system,
    frame,
    rendered_colours,
    stored_colours,
)

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def splash_rows(width: int, height: int, sub_title: str) -> list[str]:
    """The splash as plain text, row by row (each row starts with a cursor move)."""
    drawn = frame(width, height, DEFAULT_COLOURS["truecolor"], sub_title)
    return [ANSI.sub("", row) for row in re.split(r"\x1b\[\d+;1H", drawn)[1:]]


def sgr(segment: Segment, foreground: bool) -> str:
    assert segment.style is not None
    colour = segment.style.color if foreground else segment.style.bgcolor
    assert colour is not None
    return ";".join(colour.downgrade(ColorSystem.TRUECOLOR).get_ansi_codes(foreground))


def rendered_rows(app: ChatApp) -> list[list[Segment]]:
    return [list(strip) for strip in app.screen._compositor.render_strips()]


@pytest.mark.parametrize(("size", "demo"), [((80, 24), True), ((123, 31), True), ((160, 48), False)])
async def test_the_splash_reads_and_looks_like_the_apps_first_frame(
    tmp_path: Path, size: tuple[int, int], demo: bool
) -> None:
    settings = load_settings(db=tmp_path / "c.db", demo=demo, config=tmp_path / "none.toml", environ={})
    async with ChatApp(settings).run_test(size=size) as pilot:
        app = pilot.app
        await pilot.pause()
        rows = splash_rows(*size, "demo" if demo else "")
        assert len(rows) == size[1]
        assert rows[0] == screen_text(app).splitlines()[0].ljust(size[0])  # the header, to the column
        assert all(row == " " * size[0] for row in rows[1:])

        # The colours kept for the splash are the ones on screen: the title, the sub title, the background
        # around the empty chat's hint, the footer's.
        colours = rendered_colours(app, "truecolor")
        header, middle, footer = rendered_rows(app)[0], rendered_rows(app)[size[1] // 2], rendered_rows(app)[-1]
        title = next(s for s in header if s.text == "chat-tui")
        assert colours["header"] == f"{sgr(title, True)};{sgr(title, False)}"
        if demo:
            assert colours["dim"] == sgr(next(s for s in header if s.text == "demo"), True)
        assert colours["screen"] == sgr(middle[0], False)
        assert colours["footer"] == sgr(footer[0], False)


@pytest.mark.parametrize("system", ["truecolor", "256", "standard"])
async def test_the_default_colours_are_the_default_themes(tmp_path: Path, system: str) -> None:
    """A first start has no colours kept: the splash draws textual-dark's, which must be what the app renders."""
    settings = load_settings(db=tmp_path / "c.db", demo=True, config=tmp_path / "none.toml", environ={})
    assert settings.theme == "textual-dark"
    async with ChatApp(settings).run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        assert rendered_colours(pilot.app, system) == {"system": system, **DEFAULT_COLOURS[system]}


async def test_the_colours_of_a_new_theme_are_kept_for_the_next_splash(settings: Settings) -> None:
    async with ChatApp(settings).run_test(size=(80, 24)) as pilot:
        app = pilot.app
        system = app.console.color_system
        await _until(pilot, lambda: stored_colours(settings.db_path, system) is not None)
        dark = stored_colours(settings.db_path, system)
        app.theme = "textual-light"
        await _until(pilot, lambda: stored_colours(settings.db_path, system) != dark)
        light = stored_colours(settings.db_path, system)
        assert light == {k: v for k, v in rendered_colours(app).items() if k != "system"}
        assert light != dark


@pytest.mark.parametrize("theme", ["ansi-dark", "ansi-light"])
async def test_the_ansi_themes_terminal_colours_are_kept_for_the_next_splash(settings: Settings, theme: str) -> None:
    async with ChatApp(settings).run_test(size=(80, 24)) as pilot:
        app = pilot.app
        system = app.console.color_system
        await _until(pilot, lambda: stored_colours(settings.db_path, system) is not None)
        dark = stored_colours(settings.db_path, system)
        app.theme = theme
        await _until(pilot, lambda: stored_colours(settings.db_path, system) != dark)
        kept = stored_colours(settings.db_path, system)
        assert kept is not None and kept["dim"].endswith(";2")  # the terminal's foreground, dimmed by it
        assert app.is_running


async def _until(pilot: Any, condition: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met"
        await pilot.pause(0.02)


def test_kept_colours_are_refused_unless_plain_sgr_numbers_for_this_colour_system(tmp_path: Path) -> None:
    db = tmp_path / "c.db"
    assert stored_colours(db, "256") is None  # no database: nothing is created either
    assert not db.exists()
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.execute("CREATE TABLE app_state (key TEXT PRIMARY KEY, value TEXT)")
    assert stored_colours(db, "256") is None
    good = {"system": "256", "screen": "48;5;233", "header": "38;5;253;48;5;17", "dim": "38;5;247", "footer": "1"}
    for value, expected in [
        (good, {k: v for k, v in good.items() if k != "system"}),
        ({**good, "system": "truecolor"}, None),
        ({**good, "screen": "48;5;233m\x1b]0;pwned\x07"}, None),  # an escape sequence of its own
        ({**good, "dim": 7}, None),
        ("not a dict", None),
    ]:
        with closing(sqlite3.connect(db)) as connection, connection:
            connection.execute("INSERT OR REPLACE INTO app_state VALUES (?, ?)", (COLOURS_STATE, json.dumps(value)))
        assert stored_colours(db, "256") == expected
    db.write_bytes(b"not a database" * 100)
    assert stored_colours(db, "256") is None


def test_the_colour_system_is_rich_s(monkeypatch: pytest.MonkeyPatch) -> None:
    from rich.console import Console

    for env in [
        {"TERM": "xterm-256color"},
        {"TERM": "xterm-256color", "COLORTERM": "truecolor"},
        {"TERM": "xterm"},
        {"TERM": "xterm-kitty"},
        {"TERM": "screen", "COLORTERM": "24bit"},
    ]:
        for name in ("TERM", "COLORTERM", "TEXTUAL_COLOR_SYSTEM", "NO_COLOR"):
            monkeypatch.delenv(name, raising=False)
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        expected = Console(force_terminal=True, force_jupyter=False, _environ=dict(env)).color_system
        assert colour_system() == expected, env
        assert COLOR_SYSTEMS[colour_system()]


@pytest.fixture
def terminal() -> Iterator[tuple[int, int]]:
    """A pseudo-terminal: (controller, terminal) file descriptors."""
    controller, tty = pty.openpty()
    fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    try:
        yield controller, tty
    finally:
        os.close(controller)
        os.close(tty)


def _read_all(fd: int) -> bytes:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            return b"".join(chunks)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


def test_the_splash_holds_keys_unechoed_and_gives_the_terminal_back(
    tmp_path: Path, terminal: tuple[int, int], monkeypatch: pytest.MonkeyPatch
) -> None:
    controller, tty = terminal
    monkeypatch.setenv("TERM", "xterm-256color")
    modes = termios.tcgetattr(tty)
    with open(tty, "w", closefd=False) as out, open(tty, closefd=False) as keys:
        splash = Splash.show(tmp_path / "none.db", "demo", out=out, tty=keys)
        assert splash.shown
        quiet = termios.tcgetattr(tty)
        assert not quiet[3] & (termios.ECHO | termios.ICANON)
        drawn = _read_all(controller).decode()
        assert drawn.startswith(ENTER) and "chat-tui — demo" in ANSI.sub("", drawn)
        splash.close()
        assert termios.tcgetattr(tty) == modes
        assert _read_all(controller).decode() == LEAVE

        # Handed over to Textual: the modes go back before it saves them, the frame stays for it to cover.
        splash = Splash.show(tmp_path / "none.db", out=out, tty=keys)
        _read_all(controller)
        splash.hand_over()
        assert termios.tcgetattr(tty) == modes
        splash.close()
        assert _read_all(controller) == b""


def test_no_splash_off_a_terminal(tmp_path: Path, terminal: tuple[int, int], monkeypatch: pytest.MonkeyPatch) -> None:
    controller, tty = terminal
    with open(tty, "w", closefd=False) as out, open(tty, closefd=False) as keys:
        fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 0, 0, 0, 0))  # a size unknown
        assert not Splash.show(tmp_path / "none.db", out=out, tty=keys).shown
        fcntl.ioctl(tty, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
        monkeypatch.setenv("TERM", "dumb")
        assert not Splash.show(tmp_path / "none.db", out=out, tty=keys).shown
        monkeypatch.setenv("TERM", "xterm-256color")
        with open(os.devnull, "w") as nowhere:
            assert not Splash.show(tmp_path / "none.db", out=nowhere, tty=keys).shown
    assert _read_all(controller) == b""


def test_the_real_app_keeps_keys_typed_on_the_splash_and_restores_the_terminal(tmp_path: Path) -> None:
    """`chat-tui --demo` in a pseudo-terminal: the splash comes first, Textual does not clear it (one switch to the
    alternate screen), keys typed on it reach the prompt, and at exit the terminal's modes are as before."""
    db = tmp_path / "demo.sqlite3"
    modes = _fresh_terminal_modes()  # the app may have changed its terminal's already
    with app_running_in_terminal(tmp_path, db) as app:
        app.wait_until(lambda: "chat-tui" in ANSI.sub("", app.output))
        os.write(app.controller, b"typed on the splash")
        # The app has saved its colours once its first frame is up; then quit, which keeps the prompt's text.
        app.wait_until(lambda: db.exists() and _kept(db, COLOURS_STATE))
        os.write(app.controller, b"\x11")  # ctrl+q
        assert app.process.wait(15) == 0
        modes_after = termios.tcgetattr(app.terminal)
    assert _kept(db, "draft:new") == ['"typed on the splash"']
    output = app.output
    assert output.startswith(ENTER)
    assert output.count("\x1b[?1049h") == 1
    assert "\x1b[?1049l" in output
    assert modes_after == modes


def _fresh_terminal_modes() -> list[Any]:
    controller, tty = pty.openpty()
    try:
        return termios.tcgetattr(tty)
    finally:
        os.close(controller)
        os.close(tty)


def _kept(db: Path, key: str) -> list[str]:
    try:
        return [row[0] for row in query(db, "SELECT value FROM app_state WHERE key = ?", (key,))]
    except Exception:  # noqa: BLE001 - created, not migrated yet
        return []
