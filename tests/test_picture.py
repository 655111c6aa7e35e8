"""The picture of the screen kept at a quit for the next start's splash (tui/picture.py): it is the screen that start
opens on, it is kept only at rest, and it is refused once anything it shows may have changed."""

from __future__ import annotations

import json
import os
import re
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from textual._compositor import LayoutUpdate
from textual.strip import Strip
from textual.widgets import Tabs
from textual.widgets._tabs import Underline
from textual.worker import Worker, WorkerState

from core.config import Settings
from core.models import Role
from core.store import Store
from tests.helpers import app_running_in_terminal, query
from tests.test_app import SIZE, press, recorded_updates, send, send_and_wait, started, until
from tui.app import ChatApp
from tui.picture import PICTURE_STATE, PROBE, picture_key, rows_of, stored_picture
from tui.widgets.message_list import MessageList
from tui.widgets.prompt_input import PromptInput

CONTEXT = "the settings of these tests"
PROMPT = "Show me some code [[tokens=150]]"


def kept(db: Path) -> dict[str, Any] | None:
    rows = query(db, "SELECT value FROM app_state WHERE key = ?", (PICTURE_STATE,))
    return json.loads(rows[0][0]) if rows else None


def catch_ups(app: ChatApp) -> list[Worker[Any]]:
    """The tabs' reads of what other processes wrote, queued or under way."""
    return [w for w in app.workers if w.group == "catch-up" and w.state in (WorkerState.PENDING, WorkerState.RUNNING)]


def screen_rows(app: ChatApp) -> list[Any]:
    # As kept (JSON has lists, not tuples).
    return json.loads(json.dumps(rows_of(app.screen._compositor.render_strips(), app.console.color_system or "")))


async def quit_at_rest(settings: Settings) -> None:
    """A turn, a draft typed after it, then ctrl+q."""
    app = ChatApp(settings, start_context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await send_and_wait(pilot, PROMPT)
        await pilot.press(*"a draft")
        app.query_one(PromptInput)._cursor_visible = False  # quit in a blink's off phase: the picture has it on
        await pilot.press("ctrl+q")


async def next_start(settings: Settings, draft: str = "") -> list[Any]:
    """The screen the next start settles on (the cursor drawn, as in Textual's first frame)."""
    app = ChatApp(settings, start_context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = app.active_tab
        assert tab is not None
        await until(pilot, lambda: tab.query_one(PromptInput).text == draft, "the draft back")
        tab.query_one(PromptInput).cursor_blink = False
        underline = app.query_one(Underline)
        await until(pilot, lambda: underline.highlight_end > 0, "the tab bar's underline in place")
        await pilot.pause()
        return screen_rows(app)


async def test_a_quit_at_rest_keeps_the_screen_the_next_start_opens_on(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    await quit_at_rest(settings)
    picture = kept(settings.db_path)
    assert picture is not None
    assert stored_picture(settings.db_path, CONTEXT, *SIZE) is not None

    # Textual slid the tab bar's underline in from the left edge at a start, away from where the picture has it.
    slides: list[Any] = []
    monkeypatch.setattr(Underline, "animate", lambda self, *args, **kwargs: slides.append(args))
    now = await next_start(settings, draft="a draft")
    texts = ["".join(text for _, text in row) for row in picture["rows"]]
    assert any("a draft" in row for row in texts)
    assert any("Show me some code" in row for row in texts)
    assert picture["rows"] == now
    assert slides == []


async def test_the_first_frame_shows_the_keys_of_the_focused_prompt(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Footer was built for no focus at first (its keys in another order) and rebuilt a frame later: under the
    picture, a flash of the wrong footer."""
    await quit_at_rest(settings)  # a draft: the prompt's keys differ from no focus's (ctrl+w shown disabled)
    app = ChatApp(settings, start_context=CONTEXT)
    updates = recorded_updates(app, monkeypatch)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.pause(0.1)
        settled_footer = screen_rows(app)[-1]
    # The first with the chat (a headless app paints an empty screen before its on_mount ends; a real one not).
    frames = [[Strip.join(list(row)) for row in u.strips] for u in updates if isinstance(u, LayoutUpdate)]
    first = next(rows for rows in frames if any("a draft" in row.text for row in rows))
    first_footer = rows_of(first[-1:], app.console.color_system or "")[0]
    assert json.loads(json.dumps(first_footer)) == settled_footer


@pytest.mark.parametrize(
    "change",
    [
        "a message in another chat",
        "the open chat renamed",
        "the open chat deleted",
        "its draft changed",
        "a reply streaming",
        "another size",
        "other settings",
    ],
)
async def test_the_picture_is_refused_once_what_it_shows_may_have_changed(settings: Settings, change: str) -> None:
    await quit_at_rest(settings)
    db, size, context = settings.db_path, SIZE, CONTEXT
    assert stored_picture(db, context, *size) is not None
    (session_id,) = json.loads(query(db, "SELECT value FROM app_state WHERE key = 'open_tabs'")[0][0])["sessions"]
    store = await Store.open(db)
    try:
        if change == "a message in another chat":
            other = await store.create_session("Elsewhere")
            await store.add_messages(other.id, None, [(Role.USER, "Hello")])
        elif change == "the open chat renamed":
            await store.update_session(session_id, title="Renamed")
        elif change == "the open chat deleted":
            await store.delete_session(session_id)
        elif change == "its draft changed":
            await store.set_draft(session_id, "another draft")
        elif change == "a reply streaming":
            with closing(sqlite3.connect(db)) as connection, connection:
                connection.execute("UPDATE messages SET status = 'streaming' WHERE role = 'assistant'")
        elif change == "another size":
            size = (SIZE[0] + 1, SIZE[1])
        else:
            context = "other settings"
    finally:
        await store.close()
    assert stored_picture(db, context, *size) is None


async def test_no_picture_is_kept_unless_the_screen_is_the_one_a_start_opens_on(settings: Settings) -> None:
    app = ChatApp(settings, start_context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await send_and_wait(pilot, "A first question")
        await pilot.press("f1")  # the help screen over the chat
        await until(pilot, lambda: len(app.screen_stack) > 1, "the help screen")
        await pilot.press("ctrl+q")
    assert kept(settings.db_path) is None

    app = ChatApp(settings, start_context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send(pilot, "A long reply [[tokens=2000 tps=100]]")
        await until(pilot, lambda: tab.streaming, "the reply streaming")
        await pilot.press("ctrl+q")
    assert kept(settings.db_path) is None

    app = ChatApp(settings, start_context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("shift+tab")  # the focus on the messages
        await pilot.press("ctrl+q")
    assert kept(settings.db_path) is None

    app = ChatApp(settings, start_context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        view, prompt = app.query_one(MessageList), app.query_one(PromptInput)
        await pilot.press("shift+tab", "up", "tab")  # a message selected, the focus back on the prompt
        await until(pilot, lambda: view.selected_id is not None and prompt.has_focus, "a message selected")
        await pilot.press("ctrl+q")
    assert kept(settings.db_path) is None

    app = ChatApp(settings, start_context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        app.app_focus = False  # the terminal window lost the focus (a SIGTERM then)
        app._terminate()
    assert kept(settings.db_path) is None


@pytest.mark.parametrize("what", ["another process wrote", "a warning at the start"])
async def test_no_picture_is_kept_by_a_run_unsure_of_the_next_start(settings: Settings, what: str) -> None:
    """Another process's commit may change what a start shows beyond what this window reads again (drafts,
    versions, the theme), and its catch-up comes after the look; a toast of the start comes again."""
    if what == "a warning at the start":
        settings = replace(settings, theme="no such theme")
    app = ChatApp(settings, start_context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send_and_wait(pilot, "A first question")
        if what == "another process wrote":
            store = await Store.open(settings.db_path)
            try:  # the next start shows it in the prompt; this window does not read it again
                await store.set_draft(tab.session_id, "typed in another window")
            finally:
                await store.close()
            await app._catch_up_with_others()
            await until(pilot, lambda: not catch_ups(app), "the catch-up over")
        else:
            await until(pilot, lambda: len(app._notifications) == 1, "the warning")
            app.clear_notifications()  # gone by the quit
        await pilot.press("ctrl+q")
    assert kept(settings.db_path) is None


async def test_a_quit_as_the_tab_bar_s_underline_slides_pictures_it_in_place(settings: Settings) -> None:
    app = ChatApp(settings, start_context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await send_and_wait(pilot, "A first question")
        await pilot.press("ctrl+t")
        await until(pilot, lambda: len(app.tabs) == 2, "a second tab")
        await send_and_wait(pilot, "A second question")
        await until(pilot, lambda: all(t.at_rest for t in app.tabs), "the tabs at rest")
        await press(pilot, "alt+1", "ctrl+q")  # the underline still sliding to the first tab
    picture = kept(settings.db_path)
    assert picture is not None
    assert picture["rows"] == await next_start(settings)


async def test_no_picture_is_kept_when_a_closed_new_chat_comes_back(settings: Settings) -> None:

    app = ChatApp(settings, start_context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await send_and_wait(pilot, "A first question")
        await pilot.press("ctrl+t", *"a new chat's draft")
        await until(pilot, lambda: len(app.tabs) == 2, "a new chat")
        await app.action_close_tab()  # the palette's Close tab: its text is kept and brings the tab back
        underline = app.query_one(Underline)
        tab_bar = app.query_one(Tabs)
        await until(pilot, lambda: underline.highlight_start == tab_bar.active_tab.region.x + 1, "the underline")
        await pilot.press("ctrl+q")
    assert kept(settings.db_path) is None


async def test_no_picture_is_kept_when_the_tab_bar_overflows(settings: Settings) -> None:
    store = await Store.open(settings.db_path)
    try:
        sessions = [await store.create_session(f"A chat with a long title, number {n}") for n in range(8)]
        await store.set_state("open_tabs", {"sessions": [s.id for s in sessions], "active": 7})
    finally:
        await store.close()
    app = ChatApp(settings, start_context=CONTEXT)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await until(pilot, lambda: app.query_one("#tabs-scroll").max_scroll_x > 0, "the tab bar overflowing")
        await pilot.press("ctrl+q")
    assert kept(settings.db_path) is None


async def test_a_state_derived_from_reads_is_not_set_once_another_process_committed(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "p.db")
    try:
        since = await store.data_version()
        assert await store.set_state_unless_changed_since("k", lambda probe: list(probe), "SELECT 1", since=since)
        assert await store.data_version() == since  # its own commits do not count
        with closing(sqlite3.connect(tmp_path / "p.db")) as other, other:
            other.execute("INSERT INTO app_state VALUES ('elsewhere', '1')")
        assert not await store.set_state_unless_changed_since("k", lambda probe: ["later"], "SELECT 1", since=since)
        assert await store.get_state("k") == [1]
        assert await store.changed_elsewhere()  # a look after it still sees that commit
        assert not await store.set_state_unless_changed_since("k", lambda probe: None, "SELECT 1", since=since + 1)
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("rows", "height", "drawn"),
    [
        ([[["1;38;5;214", "plain text"]]], 1, "\x1b[1;1H\x1b[0;1;38;5;214mplain text\x1b[0m"),
        ([[["1;38;5;214", "\x1b[2Jcleared"]]], 1, None),
        ([[["1;38;5;214", "\x9b2J"]]], 1, None),  # a C1 control sequence introducer
        ([[["0m\x1b[2J", "x"]]], 1, None),
        ([[["1", 7]]], 1, None),
        ([[["1", "a", "b"]]], 1, None),
        ([[["1", "one row"]]], 2, None),  # for a screen of two
    ],
)
def test_only_text_and_colours_of_a_picture_reach_the_terminal(
    tmp_path: Path, rows: list[Any], height: int, drawn: str | None
) -> None:
    db = tmp_path / "p.db"
    with closing(sqlite3.connect(db)) as connection, connection:
        connection.executescript(
            "CREATE TABLE sessions (id INTEGER PRIMARY KEY AUTOINCREMENT, title, profile, model, system_prompt, "
            "archived, updated_at);"
            "CREATE TABLE messages (id INTEGER PRIMARY KEY AUTOINCREMENT, session_id, status);"
            "CREATE TABLE app_state (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
        )
        probe = connection.execute(PROBE).fetchone()
        value = {"key": picture_key(CONTEXT, 10, height, probe), "rows": rows}
        connection.execute("INSERT INTO app_state VALUES (?, ?)", (PICTURE_STATE, json.dumps(value)))
    assert stored_picture(db, CONTEXT, 10, height) == drawn


def test_the_next_start_of_the_real_app_draws_the_chat_before_textual_starts(tmp_path: Path) -> None:
    """`chat-tui --demo` in a pseudo-terminal: a turn, a quit; started again, the reply is on screen before Textual
    writes its first byte (it turns the mouse on first)."""
    db = tmp_path / "demo.sqlite3"
    prompt = "Show me a table [[tokens=60]]"

    def run(typed: bytes, until_done: Callable[[str], object]) -> str:
        with app_running_in_terminal(tmp_path, db, size=(100, 30)) as app:
            app.wait_until(lambda: "\x1b[?1000h" in app.output)  # Textual is up
            os.write(app.controller, typed)
            app.wait_until(lambda: until_done(app.output))
            os.write(app.controller, b"\x11")  # ctrl+q
            assert app.process.wait(15) == 0
        return app.output

    def ended(output: str) -> bool:
        """The status line of the reply ended (its figures, no "streaming…" after them), and the tab's label
        without its streaming mark after that."""
        status = re.search(r"↓60 tokens · first token [0-9.]+ s · [0-9]+ tok/s\x1b", output)
        label = output.rfind("Show me a table [[tok…")
        return status is not None and output[label - 2 : label] != "⋯ "

    run(prompt.encode() + b"\r", ended)
    assert kept(db) is not None
    output = run(b"", lambda output: True)
    splash = output.split("\x1b[?1000h")[0]
    assert "Show me a table" in splash
