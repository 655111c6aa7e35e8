"""The whole app under Pilot: real tabs, a real local OpenAI-compatible server, a real SQLite file in tmp_path.

Tests assert state — tabs, MessageList entries, database rows, what the server received — and wait on conditions,
never on fixed sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import socket
import sqlite3
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len
from textual import events, messages
from textual._compositor import LayoutUpdate
from textual.command import CommandPalette
from textual.driver import Driver
from textual.geometry import Region
from textual.message import Message
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import DataTable, Footer, Input, Static, Tabs, TextArea
from textual.widgets._footer import FooterKey
from textual.worker import Worker, WorkerState

from core.config import Settings, load_settings
from core.engine import ChatEngine
from core.models import Message as CoreMessage
from core.models import Role, Status
from core.server import LocalServer, parse_directives, reply_text, strip_directives
from core.store import Store
from tests.helpers import screen_text
from tui.app import MAX_LABEL, OPEN_TABS_STATE, ChatApp
from tui.keys import PasteSafeParser, read_escape_digits_as_alt
from tui.screens.dialogs import TextPrompt
from tui.screens.help import HelpScreen
from tui.screens.model_picker import ModelPicker
from tui.screens.session_browser import SessionBrowser
from tui.widgets import chat_tab as chat_tab_module
from tui.widgets.chat_tab import ChatTab, TurnStats
from tui.widgets.message_list import ChatEntry, MessageList
from tui.widgets.prompt_input import PromptInput
from tui.widgets.status_line import StatusLine

SIZE = (120, 40)
SLOW = "[[tokens=400 tps=40]]"
"""A reply of ~10 s: long enough to still be streaming whatever the test does meanwhile."""


# -- fixtures (``server`` and ``settings`` come from tests/conftest.py) ------------------------------------------


@pytest.fixture(autouse=True)
def failed_workers(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[tuple[str, BaseException | None]]]:
    """Workers with exit_on_error=False fail silently (the app goes on): collect their errors and fail the test."""
    failures: list[tuple[str, BaseException | None]] = []
    original = Worker._run

    async def run(self: Worker[Any], app: Any) -> None:
        await original(self, app)
        if self.state == WorkerState.ERROR:
            failures.append((self.name, self.error))

    monkeypatch.setattr(Worker, "_run", run)
    yield failures
    assert not failures, f"workers failed: {failures}"


# -- helpers ----------------------------------------------------------------------------------------------------


async def until(pilot: Pilot[Any], condition: Callable[[], object], what: str = "", timeout: float = 15.0) -> None:
    """Let the app run until ``condition()`` holds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or 'the app'}")
        await pilot.pause(0.05)


async def press(pilot: Pilot[Any], *keys: str) -> None:
    """Press keys like ``pilot.press``, without its wait for an idle CPU (up to 2 s a key while replies stream).

    Callers wait for the effect they expect with ``until``.
    """
    for key in keys:
        event = events.Key(key, key if len(key) == 1 else None)
        event.set_sender(pilot.app)  # as the driver sends it: the key bubbles up to the app's bindings
        pilot.app.post_message(event)
        await pilot.pause(0)


async def terminal_input(pilot: Pilot[Any], data: str) -> None:
    """Send raw terminal input through the parser the driver uses (escape sequences included)."""
    parser = PasteSafeParser()
    for event in [*parser.feed(data), *parser.feed("")]:
        event.set_sender(pilot.app)
        pilot.app.post_message(event)
    await pilot.pause(0)


def expected_reply(prompt: str) -> str:
    """What the local server streams for a prompt (directives choose its length and are not part of it)."""
    return reply_text(strip_directives(prompt), parse_directives(prompt).get("tokens", 120))


def message_list(tab: ChatTab) -> MessageList:
    return tab.query_one(MessageList)


def prompt_input(tab: ChatTab) -> PromptInput:
    return tab.query_one(PromptInput)


def entries(tab: ChatTab) -> list[ChatEntry]:
    """The tab's displayed entries, with text streamed in so far."""
    view = message_list(tab)
    found = (view.entry(e.message.id) for e in view.entries)
    return [e for e in found if e is not None]


def last_reply(tab: ChatTab) -> ChatEntry:
    reply = entries(tab)[-1]
    assert reply.message.role is Role.ASSISTANT
    return reply


def settled(tab: ChatTab) -> bool:
    """The tab's last reply has ended and the tab has taken it in."""
    return tab.turn is not None and tab.turn.done and not tab.streaming


def label(app: ChatApp, tab: ChatTab) -> str:
    return app.tabbed.get_tab(tab).label.plain


def shown_prose(app: ChatApp) -> str:
    """The screen's text with the message gutters and line wrapping undone, to look for a sentence in."""
    return " ".join(screen_text(app).replace("▌", " ").split())


def last_sentence(markdown: str) -> str:
    """The last line of a reply as it reads once rendered (without emphasis and code marks)."""
    return " ".join(markdown.rstrip().splitlines()[-1].replace("**", "").replace("`", "").split())


def db_rows(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the database from a separate connection, as another process would."""
    with contextlib.closing(sqlite3.connect(path)) as db:
        return db.execute(sql, params).fetchall()


def session_messages(path: Path, session_id: int) -> list[tuple[Any, ...]]:
    """(id, parent_id, role, content, status, error) of a session's messages, oldest first."""
    return db_rows(
        path,
        "SELECT id, parent_id, role, content, status, error FROM messages WHERE session_id = ? ORDER BY id",
        (session_id,),
    )


def prompts_seen(server: LocalServer) -> Counter[str]:
    return Counter(record.prompt for record in server.requests)


def recorded_updates(app: ChatApp, monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every update the app hands to the terminal from now on: a ChopsUpdate, or a LayoutUpdate (with its region)
    for a full screen."""
    updates: list[Any] = []
    display = app._display

    def recording(screen: Screen[Any], update: Any) -> None:
        updates.append(update)
        display(screen, update)

    monkeypatch.setattr(app, "_display", recording)
    return updates


@contextlib.asynccontextmanager
async def one_turn(
    settings: Settings, prompt: str = "Asked here"
) -> AsyncIterator[tuple[ChatApp, Pilot[Any], ChatTab, CoreMessage]]:
    """The app on a chat holding one finished turn: (app, pilot, its tab, the turn's reply)."""
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send_and_wait(pilot, prompt)
        yield app, pilot, tab, last_reply(tab).message


@contextlib.asynccontextmanager
async def empty_chat(settings: Settings) -> AsyncIterator[tuple[ChatApp, Pilot[Any], ChatTab]]:
    """The app on a chat saved without a message (as one given a setting first): (app, pilot, its tab)."""
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        tab = app.active_tab
        await started(pilot)
        assert app.engine is not None and tab is not None
        tab.set_session(await app.engine.store.create_session(profile=settings.default_profile))
        yield app, pilot, tab


def gate(monkeypatch: pytest.MonkeyPatch, obj: object, name: str, when: Callable[..., bool]) -> asyncio.Event:
    """Hold the first call of ``obj.name`` for which ``when(*args, **kwargs)`` holds until the returned event is
    set; ``gate.entered`` (an attribute of that event) is set once the call is held."""
    original = getattr(obj, name)
    release, entered = asyncio.Event(), asyncio.Event()
    release.entered = entered  # type: ignore[attr-defined]

    async def held(*args: Any, **kwargs: Any) -> Any:
        if not entered.is_set() and when(*args, **kwargs):
            entered.set()
            await release.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(obj, name, held)
    return release


async def started(pilot: Pilot[Any]) -> ChatApp:
    """Wait for the app's first tab (the engine opens on mount)."""
    app = pilot.app
    assert isinstance(app, ChatApp)
    await until(pilot, lambda: app.active_tab is not None and app.active_tab.is_mounted, "the first tab")
    # The model client is imported in a thread after the first frame: let it finish before timing-free key presses.
    await until(pilot, lambda: app.preloaded, "preload")
    return app


async def open_browser(pilot: Pilot[Any]) -> SessionBrowser:
    """Press ctrl+o; return the conversations browser once it shows."""
    await pilot.press("ctrl+o")
    await until(pilot, lambda: isinstance(pilot.app.screen, SessionBrowser), "the browser")
    browser = pilot.app.screen
    assert isinstance(browser, SessionBrowser)
    return browser


async def new_tab(pilot: Pilot[Any]) -> ChatTab:
    """Press ctrl+t; return the new tab once it is the active one, its prompt focused."""
    app = pilot.app
    assert isinstance(app, ChatApp)
    before = app.tabs
    await press(pilot, "ctrl+t")
    await until(
        pilot,
        lambda: (
            len(app.tabs) == len(before) + 1
            and app.active_tab is not None
            and app.active_tab not in before
            and app.focused is prompt_input(app.active_tab)
        ),
        "the new tab",
    )
    assert app.active_tab is not None
    return app.active_tab


async def send(pilot: Pilot[Any], text: str) -> ChatTab:
    """Put ``text`` in the active tab's prompt and press Enter; return the tab once the turn has started."""
    app = pilot.app
    assert isinstance(app, ChatApp)
    tab = app.active_tab
    assert tab is not None
    prompt = prompt_input(tab)
    assert app.focused is prompt
    turn = tab.turn
    prompt.insert(text)
    await press(pilot, "enter")
    await until(pilot, lambda: tab.turn is not turn and prompt.text == "", f"the send of {text!r}")
    return tab


async def send_in_new_tabs(pilot: Pilot[Any], prompts: list[str]) -> list[ChatTab]:
    """Send the first prompt in the current tab and each other one in a new tab: one tab a prompt."""
    tabs = [await send(pilot, prompts[0])]
    for prompt in prompts[1:]:
        await new_tab(pilot)
        tabs.append(await send(pilot, prompt))
    return tabs


async def send_and_wait(pilot: Pilot[Any], text: str) -> ChatTab:
    tab = await send(pilot, text)
    await until(pilot, lambda: settled(tab), f"the reply to {text!r}")
    return tab


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# -- launch, send -----------------------------------------------------------------------------------------------


async def test_launch_shows_one_empty_tab_in_demo_mode_with_the_prompt_focused(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        app = await started(pilot)
        assert len(app.tabs) == 1
        tab = app.tabs[0]
        assert tab.session is None and message_list(tab).entries == []
        assert tab.has_class("-empty")
        assert "demo" in app.sub_title
        assert "demo" in screen_text(app).splitlines()[0]  # the header
        assert app.focused is prompt_input(tab)
        assert label(app, tab) == "New chat"


async def test_back_from_a_suspend_the_whole_screen_is_repainted(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After ctrl+z and fg the terminal shows the shell's screen: repainting only what changed left it blank."""
    async with ChatApp(settings).run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.pause()
        updates = recorded_updates(app, monkeypatch)
        app.post_message(Driver.SignalResume())
        full = Region(0, 0, *SIZE)
        await until(pilot, lambda: any(getattr(u, "region", None) == full for u in updates), "a full repaint")


async def test_send_shows_the_reply_and_saves_both_messages(
    settings: Settings, server: LocalServer, tmp_path: Path
) -> None:
    prompt = "Tell me about tabs and streams"
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press(*prompt)  # typed, key by key
        tab = app.active_tab
        assert tab is not None and prompt_input(tab).text == prompt
        await pilot.press("enter")
        await until(pilot, lambda: settled(tab), "the reply")

        user, reply = entries(tab)
        assert (user.message.role, user.message.content) == (Role.USER, prompt)
        assert reply.message.content == expected_reply(prompt)
        assert reply.message.status is Status.COMPLETE
        assert prompt_input(tab).text == ""
        assert tab.session_id is not None
        assert session_messages(tmp_path / "h.db", tab.session_id) == [
            (user.message.id, None, "user", prompt, "complete", None),
            (reply.message.id, user.message.id, "assistant", expected_reply(prompt), "complete", None),
        ]
        assert prompts_seen(server) == {prompt: 1}
        assert label(app, tab) == prompt[:21] + "…"
        assert "You asked:" in screen_text(app)


# -- several tabs streaming at once -----------------------------------------------------------------------------


async def test_switching_tabs_mid_response_keeps_each_reply_in_its_own_tab_and_session(
    settings: Settings, server: LocalServer, tmp_path: Path
) -> None:
    prompts = [
        f"Tab {n} wants to hear about {topic} [[tokens=240 tps=60]]"
        for n, topic in ((1, "apples"), (2, "bridges"), (3, "comets"))
    ]
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tabs = await send_in_new_tabs(pilot, prompts)
        assert all(tab.streaming for tab in tabs), "the three replies should overlap"

        # Back and forth while they stream, typing a draft in each prompt on the way.
        drafts = {tab: "" for tab in tabs}
        expected = {tab: expected_reply(prompt) for tab, prompt in zip(tabs, prompts, strict=True)}
        grown_while_hidden = 0

        def streamed(tab: ChatTab) -> str:
            return last_reply(tab).message.content

        def each_shows_its_own_reply_so_far() -> None:
            # Before a reply ends, what a tab shows is what its stream handed it (the saved row replaces it after).
            for tab in tabs:
                assert expected[tab].startswith(streamed(tab)), f"tab {tabs.index(tab)} shows {streamed(tab)!r}"

        async def switch(key: str, index: int) -> None:
            nonlocal grown_while_hidden
            tab = tabs[index]
            await press(pilot, key)
            await until(
                pilot, lambda: app.active_tab is tab and app.focused is prompt_input(tab), f"{key} to tab {index}"
            )
            each_shows_its_own_reply_so_far()
            drafts[tab] += key[-1]
            await press(pilot, key[-1])
            await until(pilot, lambda: prompt_input(tab).text == drafts[tab], f"typing in tab {index}")
            # The hidden tabs go on taking in their own replies.
            hidden = {other: len(streamed(other)) for other in tabs if other is not tab and other.streaming}
            await until(
                pilot,
                lambda: all(len(streamed(t)) > n or not t.streaming for t, n in hidden.items()),
                f"the replies hidden behind tab {index} to grow",
            )
            grown_while_hidden += sum(len(streamed(t)) > n for t, n in hidden.items())
            each_shows_its_own_reply_so_far()

        await switch("alt+1", 0)
        await switch("alt+2", 1)
        await switch("ctrl+pagedown", 2)
        await switch("ctrl+pagedown", 0)  # wraps around
        await switch("ctrl+pageup", 2)  # and back
        await switch("ctrl+pageup", 1)
        await switch("alt+3", 2)
        await switch("alt+1", 0)
        assert any(tab.streaming for tab in tabs), "the switching should happen mid-response"
        assert grown_while_hidden >= 8, "hidden replies should have been seen growing"

        await until(pilot, lambda: all(settled(tab) for tab in tabs), "all three replies")
        for tab, prompt in zip(tabs, prompts, strict=True):
            user, reply = entries(tab)
            assert user.message.content == prompt
            assert reply.message.status is Status.COMPLETE
            assert reply.message.content == expected_reply(prompt)
            assert prompt_input(tab).text == drafts[tab]
            assert tab.session_id is not None
            rows = session_messages(tmp_path / "h.db", tab.session_id)
            assert [(r[2], r[3], r[4]) for r in rows] == [
                ("user", prompt, "complete"),
                ("assistant", expected_reply(prompt), "complete"),
            ]
        assert len({tab.session_id for tab in tabs}) == 3
        # And each tab shows its own reply's end once it is brought to the front.
        for number, (tab, prompt) in enumerate(zip(tabs, prompts, strict=True), start=1):
            await press(pilot, f"alt+{number}")
            ending = last_sentence(expected_reply(prompt))
            await until(
                pilot, lambda t=tab, e=ending: app.active_tab is t and e in shown_prose(app), f"the end in tab {number}"
            )
            assert all(last_sentence(expected_reply(p)) not in shown_prose(app) for p in prompts if p != prompt)
        assert prompts_seen(server) == {strip_directives(p): 1 for p in prompts}
        assert len(server.requests) == 3


# -- stopping a reply -------------------------------------------------------------------------------------------


async def test_closing_a_streaming_tab_keeps_the_partial_reply_as_interrupted(
    settings: Settings, server: LocalServer, tmp_path: Path
) -> None:
    prompt = f"A very long story please {SLOW}"
    db = tmp_path / "h.db"
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        other = await new_tab(pilot)
        await pilot.press("alt+1")
        tab = await send(pilot, prompt)
        assert tab.turn is not None and tab.session_id is not None
        turn, session_id, reply_id = tab.turn, tab.session_id, tab.turn.reply.id
        # Wait until some of the reply is in the database, then close the tab mid-stream.
        await until(pilot, lambda: db_rows(db, "SELECT content FROM messages WHERE id = ?", (reply_id,))[0][0])
        assert tab.streaming
        await press(pilot, "ctrl+w")
        await until(pilot, lambda: turn.done and app.tabs == [other], "the tab to close")

        assert app.tabs == [other] and app.active_tab is other
        assert app.focused is prompt_input(other)
        ((content, status),) = db_rows(db, "SELECT content, status FROM messages WHERE id = ?", (reply_id,))
        assert status == "interrupted"
        assert content and expected_reply(prompt).startswith(content) and content != expected_reply(prompt)
        # Nothing writes into the row after that (the server would still be streaming for seconds).
        for _ in range(20):
            await pilot.pause(0.05)
        assert db_rows(db, "SELECT content, status FROM messages WHERE id = ?", (reply_id,)) == [(content, status)]
        assert [r[4] for r in session_messages(db, session_id)] == ["complete", "interrupted"]
        assert prompts_seen(server) == {strip_directives(prompt): 1}
        assert entries(other) == [] and other.turn is None
        assert app._exception is None
    assert app._exception is None


async def test_escape_stops_the_reply_keeps_the_partial_text_and_the_next_send_works(
    settings: Settings, server: LocalServer, tmp_path: Path
) -> None:
    prompt = f"Count to a thousand {SLOW}"
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send(pilot, prompt)
        await until(pilot, lambda: len(last_reply(tab).message.content) > 20, "some streamed text")
        await press(pilot, "escape")
        await until(pilot, lambda: settled(tab), "the stop")

        stopped = last_reply(tab)
        assert stopped.message.status is Status.INTERRUPTED
        partial = stopped.message.content
        assert partial and expected_reply(prompt).startswith(partial) and partial != expected_reply(prompt)
        assert tab.session_id is not None
        rows = session_messages(tmp_path / "h.db", tab.session_id)
        assert [(r[3], r[4]) for r in rows] == [(prompt, "complete"), (partial, "interrupted")]

        follow_up = "Fine, summarise what you said"
        await send_and_wait(pilot, follow_up)
        assert [(e.message.content, e.message.status) for e in entries(tab)] == [
            (prompt, Status.COMPLETE),
            (partial, Status.INTERRUPTED),
            (follow_up, Status.COMPLETE),
            (expected_reply(follow_up), Status.COMPLETE),
        ]
        rows = session_messages(tmp_path / "h.db", tab.session_id)
        assert rows[2][1] == stopped.message.id  # the new turn follows the stopped reply
        assert rows[3][3:5] == (expected_reply(follow_up), "complete")
        # The partial reply is part of the conversation the model sees.
        assert [m["content"] for m in server.requests[-1].messages] == [prompt, partial, follow_up]


# -- branches ---------------------------------------------------------------------------------------------------


async def test_regenerate_and_edit_make_branches_and_left_right_switch_between_them(
    settings: Settings, server: LocalServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    question = "What is a branch?"
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send_and_wait(pilot, question)
        assert app.engine is not None
        store = app.engine.store
        user, first = (e.message for e in entries(tab))
        view = message_list(tab)

        # r on the reply: a second reply beside the first.
        view.focus()
        view.selected_id = first.id
        await pilot.press("r")
        await until(pilot, lambda: tab.turn is not None and tab.turn.reply.id != first.id and settled(tab))
        second = tab.turn.reply
        assert await store.siblings(first.id) == [first.id, second.id]
        shown_user, shown_reply = entries(tab)
        assert shown_user.message.id == user.id
        assert (shown_reply.message.id, shown_reply.sibling_index, shown_reply.sibling_count) == (second.id, 2, 2)
        assert shown_reply.message.content == expected_reply(question)
        view.selected_id = second.id  # scrolls its header, with the mark, into view
        await until(pilot, lambda: "Assistant · demo  ‹ 2/2 ›" in screen_text(app), "the sibling mark")

        # e on the question: a dialog to edit it; ctrl+s sends the edited text as a second question.
        view.focus()
        view.selected_id = user.id
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the edit dialog")
        field = app.screen.query_one(TextArea)
        assert field.text == question
        await pilot.press("ctrl+w")  # in a dialog ctrl+w deletes a word; it does not close the tab behind
        assert field.text == "What is a branch" and isinstance(app.screen, TextPrompt) and app.tabs == [tab]
        await pilot.press(*"ing strategy? Explain like I am five.", "ctrl+s")
        edited = "What is a branching strategy? Explain like I am five."
        await until(pilot, lambda: not isinstance(app.screen, TextPrompt) and tab.turn.user is not None)
        await until(pilot, lambda: settled(tab), "the reply to the edited question")
        edited_user = tab.turn.user
        assert edited_user is not None and edited_user.content == edited
        assert await store.siblings(user.id) == [user.id, edited_user.id]
        shown = entries(tab)
        assert [(e.message.content, e.sibling_index, e.sibling_count) for e in shown] == [
            (edited, 2, 2),
            (expected_reply(edited), 1, 1),
        ]
        assert prompts_seen(server) == {question: 2, edited: 1}

        # ← on the question shows the first branch again (with its newest reply), → comes back.
        view.focus()
        view.selected_id = edited_user.id
        await pilot.press("left")
        await until(pilot, lambda: entries(tab)[0].message.id == user.id, "the first branch")
        assert [(e.message.id, e.sibling_index, e.sibling_count) for e in entries(tab)] == [
            (user.id, 1, 2),
            (second.id, 2, 2),
        ]
        assert view.selected_id == user.id
        await pilot.press("right")
        await until(pilot, lambda: entries(tab)[0].message.id == edited_user.id, "the second branch")
        assert entries(tab)[1].message.content == expected_reply(edited)
        await pilot.press("left")
        await until(pilot, lambda: entries(tab)[0].message.id == user.id, "the first branch again")

        # Nothing comes before the first version: not from ←, nor from a request the list did not bound-check.
        # Both are handled before the ← on the reply that follows them, which is the one load recorded.
        loads: list[int | None] = []
        load = tab.load

        async def recording_load(session_id: int, leaf_id: int | None = None, *, select: int | None = None) -> None:
            loads.append(select)
            await load(session_id, leaf_id, select=select)

        monkeypatch.setattr(tab, "load", recording_load)
        await pilot.press("left")
        view.post_message(MessageList.SiblingRequested(view, user.id, -1))
        # ← on the reply (of the first branch) shows the other reply.
        view.selected_id = second.id
        await pilot.press("left")
        await until(pilot, lambda: loads == [first.id] and entries(tab)[1].message.id == first.id, "the first reply")
        assert [(e.message.id, e.sibling_index, e.sibling_count) for e in entries(tab)] == [
            (user.id, 1, 2),
            (first.id, 1, 2),
        ]
        assert view.selected_id == first.id
        await until(pilot, lambda: "Assistant · demo  ‹ 1/2 ›" in screen_text(app), "the other reply's mark")

        # A prompt sent now follows the branch on screen, not the newest message of the session.
        follow_up = "And on this first branch?"
        prompt_input(tab).focus()
        await until(pilot, lambda: app.focused is prompt_input(tab), "the prompt")
        await send_and_wait(pilot, follow_up)
        assert tab.session_id is not None
        rows = {row[0]: row for row in session_messages(tmp_path / "h.db", tab.session_id)}
        asked = entries(tab)[-2].message
        assert (asked.content, rows[asked.id][1]) == (follow_up, first.id)
        assert [m["content"] for m in server.requests[-1].messages] == [question, expected_reply(question), follow_up]
        assert [e.message.id for e in entries(tab)[:2]] == [user.id, first.id]


async def test_a_chat_reopens_on_the_branch_it_was_shown_on_not_the_one_that_grew_last(settings: Settings) -> None:
    async with ChatEngine.open(settings) as engine:
        session = await engine.store.create_session("Two replies")
        question, first = await engine.store.add_messages(
            session.id, None, [(Role.USER, "A question"), (Role.ASSISTANT, "The first reply")]
        )
        (second,) = await engine.store.add_messages(session.id, question.id, [(Role.ASSISTANT, "The second reply")])
        await engine.store.set_state(OPEN_TABS_STATE, {"sessions": [session.id], "active": 0})

    def shown(tab: ChatTab) -> list[int]:
        return [e.message.id for e in entries(tab)]

    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = app.tabs[0]
        await until(pilot, lambda: shown(tab) == [question.id, second.id], "the newest branch, never shown before")
        view = message_list(tab)
        view.focus()
        view.selected_id = second.id
        await pilot.press("left")
        await until(pilot, lambda: shown(tab) == [question.id, first.id], "the first reply's branch")

    # Meanwhile another process goes on from the second reply: its branch is now the newest.
    async with ChatEngine.open(settings) as engine:
        (elsewhere,) = await engine.store.add_messages(session.id, second.id, [(Role.USER, "Asked elsewhere")])

    again = ChatApp(settings)
    async with again.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = again.tabs[0]
        await until(pilot, lambda: tab.session_id == session.id and bool(entries(tab)), "the restored tab")
        assert shown(tab) == [question.id, first.id]
        # Closed, then opened from the session browser: the same branch again.
        await pilot.press("ctrl+w")
        await until(pilot, lambda: again.tab_for(session.id) is None, "the tab closed")
        await again.open_session(session.id)
        reopened = again.tab_for(session.id)
        assert reopened is not None
        await until(pilot, lambda: bool(entries(reopened)), "the reopened chat")
        assert shown(reopened) == [question.id, first.id]
        # A search hit on the other branch shows that one, and it is the one remembered from then on.
        await again.open_session(session.id, elsewhere.id)
        await until(pilot, lambda: shown(reopened) == [question.id, second.id, elsewhere.id], "the hit's branch")
        assert again.engine is not None
        await until(pilot, lambda: not again.engine._pending, "the engine's writes")  # type: ignore[union-attr]
        assert await again.engine.store.get_state(f"branch:{session.id}") == elsewhere.id


async def test_versions_made_by_another_process_show_when_a_reply_ends_or_the_tab_is_shown(
    settings: Settings,
) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send(pilot, "Asked here [[tokens=60 tps=60]]")
        await until(pilot, lambda: tab.streaming and len(entries(tab)) == 2, "the reply streaming")
        asked = entries(tab)[0].message
        # Another process asks beside it meanwhile (as `chat-tui ask` would): a second version of the question.
        async with ChatEngine.open(settings) as engine:
            await engine.store.add_messages(asked.session_id, None, [(Role.USER, "Asked elsewhere")])
        await until(pilot, lambda: settled(tab), "the reply")
        await until(pilot, lambda: entries(tab)[0].sibling_count == 2, "the question's versions")
        assert "You  ‹ 1/2 ›" in screen_text(app)

        # And one made while the tab is hidden shows when it is shown again.
        await new_tab(pilot)
        async with ChatEngine.open(settings) as engine:
            await engine.store.add_messages(asked.session_id, None, [(Role.USER, "Asked a third time")])
        await press(pilot, "alt+1")
        await until(pilot, lambda: entries(tab)[0].sibling_count == 3, "the third version")
        assert entries(tab)[0].sibling_index == 1


async def test_what_another_process_writes_to_the_chat_in_view_shows_within_seconds(settings: Settings) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        async with await Store.open(settings.db_path) as other:
            # A turn streamed by another process on the branch shown (as `chat-tui ask` does): its question and
            # the reply as flushed so far, then its end.
            question, streamed = await other.start_turn(here.session_id, here.id, "Asked elsewhere", "demo")
            await other.flush_reply(streamed.id, "Half of")
            await until(pilot, lambda: [e.message.id for e in entries(tab)][-2:] == [question.id, streamed.id])
            await until(pilot, lambda: last_reply(tab).message.content == "Half of", "the partial reply")
            assert last_reply(tab).message.status is Status.STREAMING
            await until(pilot, lambda: label(app, tab).startswith("⋯ "), "the streaming mark")
            assert "streaming elsewhere…" in str(tab.query_one(StatusLine).text)
            # A follow-up now would be sent without the rest of that reply: refused, the text kept.
            prompt_input(tab).insert("Too soon")
            await press(pilot, "enter")
            await until(pilot, lambda: any("wait for its end" in n.message for n in app._notifications), "the refusal")
            assert prompt_input(tab).text == "Too soon"
            prompt_input(tab).clear()
            # Its end shows even in a tab in the background: the label's mark goes.
            await new_tab(pilot)
            await other.finish_reply(streamed.id, "Half of it, and the rest.", Status.COMPLETE, completion_tokens=7)
            await until(pilot, lambda: not label(app, tab).startswith("⋯ "), "the streaming mark gone")
            await press(pilot, "alt+1")
            await until(pilot, lambda: "Half of it, and the rest." in shown_prose(app), "the reply's end")
            assert last_reply(tab).message.status is Status.COMPLETE
            assert "↓7 tokens" in str(tab.query_one(StatusLine).text)
            await other.update_session(here.session_id, title="Renamed elsewhere")
            await until(pilot, lambda: tab.title == "Renamed elsewhere", "the new title")

            # A hidden tab's chat catches up when it is shown.
            await press(pilot, "alt+2")
            await until(pilot, lambda: app.active_tab is not tab, "the other tab")
            (later,) = await other.add_messages(here.session_id, streamed.id, [(Role.USER, "Later, elsewhere")])
            await pilot.pause(1.5)
            await press(pilot, "alt+1")
            await until(pilot, lambda: entries(tab)[-1].message.id == later.id, "the hidden tab's catch-up")
        # The next prompt here follows the branch as shown.
        await send_and_wait(pilot, "And here again")
        assert tab.turn is not None and tab.turn.user is not None
        assert tab.turn.user.parent_id == later.id
        assert [e.message.content for e in entries(tab)][:3] == ["Asked here", here.content, "Asked elsewhere"]


async def test_enter_again_sends_beside_a_reply_streaming_elsewhere(settings: Settings) -> None:
    """The way out when the process streaming into the chat hangs (stopped, stalled): a branch of one's own."""
    async with one_turn(settings) as (app, pilot, tab, here):
        async with await Store.open(settings.db_path) as other:
            question, streamed = await other.start_turn(here.session_id, here.id, "Asked elsewhere", "demo")
            await until(pilot, lambda: last_reply(tab).message.id == streamed.id, "the other turn")
            prompt_input(tab).insert("Mine")
            await press(pilot, "enter")
            await until(pilot, lambda: any("Enter again" in n.message for n in app._notifications), "the refusal")
            assert tab.turn is not None and tab.turn.reply.id == here.id  # nothing sent
            await press(pilot, "enter")
            await until(pilot, lambda: settled(tab) and tab.turn.reply.id != here.id, "the reply beside")
        assert tab.turn.user is not None and tab.turn.user.parent_id == here.id
        shown = entries(tab)
        assert [e.message.content for e in shown] == ["Asked here", here.content, "Mine", expected_reply("Mine")]
        assert (shown[2].sibling_index, shown[2].sibling_count) == (2, 2)


async def test_a_chat_deleted_or_cleared_elsewhere(settings: Settings) -> None:
    async with one_turn(settings) as (app, pilot, tab, _):
        session_id = tab.session_id
        assert session_id is not None
        async with await Store.open(settings.db_path) as other:
            # Cleared, then asked again (`chat-tui ask -s`): the new start shows, not the messages gone.
            await other.clear_session(session_id)
            (fresh,) = await other.add_messages(session_id, None, [(Role.USER, "A fresh start")])
            await until(pilot, lambda: [e.message.id for e in entries(tab)] == [fresh.id], "the new start")
            # Deleted: the tab becomes a new chat, and what was typed in it stays.
            prompt_input(tab).insert("Still mine")
            await other.delete_session(session_id)
            await until(pilot, lambda: tab.session is None, "the chat gone")
        assert (entries(tab), tab.title, tab.leaf_id) == ([], "New chat", None)
        assert "deleted in another window" in screen_text(app)
        assert prompt_input(tab).text == "Still mine"
        saved = app.engine.store.get_state  # type: ignore[union-attr]
        assert session_id not in (await saved(OPEN_TABS_STATE))["sessions"]
        before = tab.turn
        await press(pilot, "enter")
        await until(pilot, lambda: tab.turn is not before and settled(tab), "the reply in the new chat")
        assert tab.session_id not in (None, session_id)


async def test_a_catch_up_keeps_a_rename_made_here_meanwhile(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_turn(settings) as (app, pilot, tab, _):
        assert app.engine is not None and tab.session_id is not None
        store = app.engine.store
        await pilot.pause(0.5)  # the catch-ups of the reply's end and of the tab shown at start are over
        await until(pilot, lambda: not tab.catching_up, "the catch-ups before")
        release = gate(monkeypatch, store, "newest_leaf_under", lambda *_: True)
        worker = tab.catch_up()
        await release.entered.wait()  # type: ignore[attr-defined]
        app._session_changed(await store.update_session(tab.session_id, title="Renamed here"))
        release.set()
        await until(pilot, lambda: worker.is_finished and not tab.catching_up, "the catch-up")
        assert tab.title == "Renamed here"


async def test_a_load_cut_short_leaves_the_tab_as_it_was(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """More than a page added elsewhere is shown by loading the branch again; cancelled mid-read (the next catch-up
    starts), it must not leave the tab's branch pointing past the messages shown."""
    async with one_turn(settings) as (app, pilot, tab, _):
        assert app.engine is not None and tab.session_id is not None
        leaf = tab.leaf_id
        roles = itertools.cycle([Role.USER, Role.ASSISTANT])
        async with await Store.open(settings.db_path) as other:
            added = await other.add_messages(
                tab.session_id, leaf, [(next(roles), f"m{i}") for i in range(chat_tab_module.PAGE + 20)]
            )
        reads = itertools.count(1)  # the catch-up's own read of the branch, then the load's: held
        release = gate(
            monkeypatch, app.engine.store, "path", lambda leaf, **_: leaf == added[-1].id and next(reads) == 2
        )
        tab.catch_up()
        await release.entered.wait()  # type: ignore[attr-defined]
        assert (tab.leaf_id, last_reply(tab).message.id) == (leaf, leaf)
        tab.catch_up()  # cancels the first
        release.set()
        await until(pilot, lambda: last_reply(tab).message.id == added[-1].id, "the messages added")
        assert tab.leaf_id == added[-1].id


async def test_a_long_history_written_elsewhere_into_an_empty_chat_in_view_reads_back_to_its_start(
    settings: Settings,
) -> None:
    # A chat given a setting before any message (a session, no branch), then a LangChain app's import.
    async with empty_chat(settings) as (app, pilot, tab):
        roles = itertools.cycle([Role.USER, Role.ASSISTANT])
        async with await Store.open(settings.db_path) as other:
            added = await other.add_messages(tab.session_id, None, [(next(roles), f"m{i}") for i in range(150)])
        await until(pilot, lambda: bool(entries(tab)) and last_reply(tab).message.id == added[-1].id, "the import")
        message_list(tab).action_select_first()
        await until(pilot, lambda: entries(tab)[0].message.id == added[0].id, "the first message")


async def test_a_chat_in_the_background_marks_a_turn_made_elsewhere(settings: Settings) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        await new_tab(pilot)
        async with await Store.open(settings.db_path) as other:
            _, streamed = await other.start_turn(here.session_id, here.id, "Asked elsewhere", "demo")
            await until(pilot, lambda: label(app, tab).startswith("⋯ "), "the streaming mark")
            await other.finish_reply(streamed.id, "Done.", Status.COMPLETE)
            await until(pilot, lambda: label(app, tab).startswith("● "), "the unread mark")
            # A turn that begins and ends between two looks is marked too.
            (_, answer) = await other.add_messages(
                here.session_id, streamed.id, [(Role.USER, "q"), (Role.ASSISTANT, "a")]
            )
            await press(pilot, "alt+1")
            await until(pilot, lambda: not label(app, tab).startswith("● "), "the mark read")
            await press(pilot, "alt+2")
            await until(pilot, lambda: app.active_tab is not tab, "the other tab")
            await other.add_messages(here.session_id, answer.id, [(Role.USER, "q2"), (Role.ASSISTANT, "a2")])
            await until(pilot, lambda: label(app, tab).startswith("● "), "the unread mark again")
            # More than a page at once: read as if opened again, and marked the same.
            await press(pilot, "alt+1")
            await until(pilot, lambda: not label(app, tab).startswith("● "), "the mark read")
            await press(pilot, "alt+2")
            await until(pilot, lambda: app.active_tab is not tab, "the other tab")
            roles = itertools.cycle([Role.USER, Role.ASSISTANT])
            added = await other.add_messages(
                here.session_id, tab.leaf_id, [(next(roles), f"m{i}") for i in range(chat_tab_module.PAGE + 20)]
            )
            await until(pilot, lambda: last_reply(tab).message.id == added[-1].id, "the import in the background")
            await until(pilot, lambda: label(app, tab).startswith("● "), "the unread mark after a page")


async def test_a_turn_made_elsewhere_in_an_empty_background_chat_marks_it_unread(settings: Settings) -> None:
    async with empty_chat(settings) as (app, pilot, tab):
        await new_tab(pilot)
        async with await Store.open(settings.db_path) as other:
            await other.add_messages(tab.session_id, None, [(Role.USER, "q"), (Role.ASSISTANT, "a")])
        await until(pilot, lambda: len(entries(tab)) == 2, "the turn in the background tab")
        await until(pilot, lambda: label(app, tab).startswith("● "), "the unread mark")


async def test_a_send_while_a_catch_up_reads_the_chat_again_is_kept(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        assert app.engine is not None
        roles = itertools.cycle([Role.USER, Role.ASSISTANT])
        # More than a page written elsewhere: the app's clock starts a catch-up, which reads the branch, then
        # reads it again as if opened anew; held there.
        reads = itertools.count(1)
        newest = here.id + chat_tab_module.PAGE + 20
        release = gate(monkeypatch, app.engine.store, "path", lambda leaf, **_: leaf == newest and next(reads) == 2)
        async with await Store.open(settings.db_path) as other:
            added = await other.add_messages(
                here.session_id, here.id, [(next(roles), f"m{i}") for i in range(chat_tab_module.PAGE + 20)]
            )
        assert added[-1].id == newest
        await until(pilot, release.entered.is_set, "the catch-up's second read")  # type: ignore[attr-defined]
        await send(pilot, "Mine [[tokens=40 tps=40]]")  # still streaming when the catch-up goes on
        release.set()
        await until(pilot, lambda: settled(tab), "my reply")
        await pilot.pause(0.5)
        assert tab.turn is not None and tab.leaf_id == tab.turn.reply.id == entries(tab)[-1].message.id
        assert [e.message.content for e in entries(tab)][-2] == "Mine [[tokens=40 tps=40]]"


async def test_the_chat_deleted_elsewhere_as_a_prompt_is_saved(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_turn(settings) as (app, pilot, tab, _):
        assert app.engine is not None
        engine_send = app.engine.send

        async def send_then_deleted(session_id: int, text: str, **kwargs: Any) -> Any:
            turn = await engine_send(session_id, text, **kwargs)
            async with await Store.open(settings.db_path) as other:
                await other.delete_session(session_id)
            await tab.catch_up().wait()
            return turn

        monkeypatch.setattr(app.engine, "send", send_then_deleted)
        prompt_input(tab).insert("Sent meanwhile")
        await press(pilot, "enter")
        await until(pilot, lambda: tab.session is None, "the chat gone")
        await pilot.pause(0.3)
        assert app.is_running and app._exception is None
        assert (entries(tab), prompt_input(tab).text) == ([], "Sent meanwhile")


async def test_a_chat_opened_while_another_process_writes_opens_on_its_saved_branch(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with await Store.open(settings.db_path) as other:
        session = await other.create_session("Two branches")
        question, first = await other.add_messages(session.id, None, [(Role.USER, "q"), (Role.ASSISTANT, "a1")])
        await other.add_messages(session.id, question.id, [(Role.ASSISTANT, "a2")])
        await other.set_branch(session.id, first.id)
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert app.engine is not None
        release = gate(monkeypatch, app.engine.store, "get_branch", lambda session_id: session_id == session.id)
        opening = asyncio.ensure_future(app.open_session(session.id))
        # Not Pilot's waits while the read is held: they wait for the new tab, busy opening, to be idle.
        await asyncio.wait_for(release.entered.wait(), 5)  # type: ignore[attr-defined]
        async with await Store.open(settings.db_path) as other:
            await other.set_state("elsewhere", 1)  # any commit by another process
        await asyncio.sleep(1.5)  # the app's clock looks meanwhile
        release.set()
        await opening
        tab = app.tab_for(session.id)
        assert tab is not None
        await pilot.pause(1.0)
        assert [e.message.content for e in entries(tab)] == ["q", "a1"]


async def test_an_edit_sent_after_its_chat_was_deleted_elsewhere_comes_back_to_the_prompt(settings: Settings) -> None:
    async with one_turn(settings) as (app, pilot, tab, _):
        question = entries(tab)[0].message
        view = message_list(tab)
        view.focus()
        view.selected_id = question.id
        await pilot.press("e")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the edit dialog")
        await pilot.press(*" carefully")
        async with await Store.open(settings.db_path) as other:
            await other.delete_session(question.session_id)
        await until(pilot, lambda: tab.session is None, "the chat gone")
        await pilot.press("ctrl+s")
        await until(pilot, lambda: prompt_input(tab).text == "Asked here carefully", "the edit in the prompt")
        assert "deleted in another window" in screen_text(app)


@pytest.mark.parametrize("gone", ["deleted", "cleared"])
async def test_this_tabs_reply_streaming_into_a_chat_deleted_or_cleared_elsewhere_stops(
    settings: Settings, gone: str
) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send(pilot, SLOW)  # ~10 s
        async with await Store.open(settings.db_path) as other:
            session_id = tab.session_id or 0
            await (other.delete_session(session_id) if gone == "deleted" else other.clear_session(session_id))
        await until(pilot, lambda: not tab.streaming, "the reply stopped", timeout=5)
        await until(pilot, lambda: not entries(tab), "the messages gone")
        assert (tab.session is None) == (gone == "deleted")


async def test_another_processs_reply_grows_on_the_branch_shown_while_this_tabs_streams_on_another(
    settings: Settings,
) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        question = entries(tab)[0].message
        await send(pilot, SLOW)  # ours streams on after "here"
        async with await Store.open(settings.db_path) as other:
            theirs = await other.start_reply(here.session_id, question.id, "demo")  # their regenerate of "here"
            await tab.load(here.session_id, theirs.id)  # shown: theirs
            await other.flush_reply(theirs.id, "Their words so far")
            await until(pilot, lambda: last_reply(tab).message.content == "Their words so far", "their reply")
            assert tab.streaming  # ours goes on


async def test_a_chat_renamed_elsewhere_is_relabelled_in_the_background(settings: Settings) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        async with await Store.open(settings.db_path) as other:
            await other.set_state("elsewhere", 1)
            await pilot.pause(1.5)  # the app has seen a write elsewhere once: every open chat is known
            await new_tab(pilot)
            await other.update_session(here.session_id, title="Renamed elsewhere")
        await until(pilot, lambda: label(app, tab) == "Renamed elsewhere", "the new label")


async def test_a_chat_cleared_elsewhere_says_so(settings: Settings) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        async with await Store.open(settings.db_path) as other:
            await other.clear_session(here.session_id)
        await until(pilot, lambda: not entries(tab), "the messages gone")
        # Said in the same read; on screen with the next frame (the banner's row is laid out then).
        await until(pilot, lambda: "cleared in another window" in screen_text(app), "the word on screen")


async def test_the_window_quit_last_is_the_one_whose_tabs_come_back(settings: Settings) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        async with await Store.open(settings.db_path) as other:  # a second window saves its tabs
            await other.set_state(OPEN_TABS_STATE, {"sessions": [], "active": 0})
        await pilot.press("ctrl+q")
    async with await Store.open(settings.db_path) as store:
        assert (await store.get_state(OPEN_TABS_STATE))["sessions"] == [here.session_id]


async def test_the_open_conversations_list_shows_what_another_process_wrote(settings: Settings) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, SessionBrowser), "the session browser")
        browser = app.screen
        assert isinstance(browser, SessionBrowser)
        await until(pilot, lambda: [c.session_id for c in browser.choices] == [here.session_id], "the list")
        async with await Store.open(settings.db_path) as other:
            newer = await other.create_session("Made elsewhere")
            await other.add_messages(newer.id, None, [(Role.USER, "q")])
        await until(pilot, lambda: [c.session_id for c in browser.choices] == [newer.id, here.session_id])
        assert browser.highlighted_choice == browser.choices[1]  # still the chat it was on


async def test_opening_a_chat_deleted_elsewhere_says_so_in_words(settings: Settings) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        await new_tab(pilot)
        async with await Store.open(settings.db_path) as other:
            gone = await other.create_session("Listed, then deleted")
            await other.delete_session(gone.id)
        await app.open_session(gone.id)  # chosen from a list read before the deletion
        await until(pilot, lambda: any("That chat is gone" in n.message for n in app._notifications), "the word")
        assert len(app.tabs) == 2


async def test_a_commit_seen_while_the_tab_catches_up_is_not_lost(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The clock skips a tab that is catching up, yet consumes data_version and records the marks: a commit made
    after that catch-up's reads is never shown (not even in the active tab) until some other commit."""
    async with one_turn(settings) as (app, pilot, tab, here):
        assert app.engine is not None
        release = gate(monkeypatch, app.engine.store, "sibling_counts", lambda *a, **k: True)
        tab.catch_up()  # e.g. the one `_finish` starts, or the clock's own
        await asyncio.wait_for(release.entered.wait(), 5)  # type: ignore[attr-defined]
        async with await Store.open(settings.db_path) as other:
            await other.add_messages(here.session_id, here.id, [(Role.USER, "q2"), (Role.ASSISTANT, "a2")])
        await asyncio.sleep(1.5)  # the clock sees the commit; the tab is skipped (catching_up)
        release.set()
        await asyncio.sleep(2.5)
        assert [e.message.content for e in entries(tab)][-2:] == ["q2", "a2"]


async def test_search_refresh_keeps_the_highlighted_hit_not_the_sessions_first(settings: Settings) -> None:
    async with await Store.open(settings.db_path) as other:
        s = await other.create_session("Searched")
        await other.add_messages(s.id, None, [(Role.USER, "zebra one"), (Role.ASSISTANT, "zebra two")])
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        browser = await open_browser(pilot)
        await pilot.press(*"zebra")
        await until(pilot, lambda: len(browser.choices) == 2, "two hits")
        await pilot.press("down")
        await until(pilot, lambda: browser.results.highlighted == 1)
        hit = browser.highlighted_choice
        async with await Store.open(settings.db_path) as other:  # another hit, listed anew
            more = await other.create_session("More")
            await other.add_messages(more.id, None, [(Role.USER, "zebra three")])
        await until(pilot, lambda: len(browser.choices) == 3, "the new hit")
        assert browser.highlighted_choice == hit


async def test_own_reply_cancelled_in_a_deleted_background_chat_leaves_no_unread_new_chat(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send(pilot, SLOW)
        await new_tab(pilot)
        async with await Store.open(settings.db_path) as other:
            await other.delete_session(tab.session_id or 0)
        await until(pilot, lambda: tab.session is None and not tab.streaming, "the reply stopped", timeout=5)
        await pilot.pause(0.5)
        assert label(app, tab) == "New chat"


async def test_the_list_scrolled_by_the_mouse_stays_put_when_another_process_writes(settings: Settings) -> None:
    async with await Store.open(settings.db_path) as other:
        for i in range(45):
            await other.create_session(f"Chat {i}")
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        browser = await open_browser(pilot)
        await until(pilot, lambda: len(browser.choices) == 45, "the list")
        results = browser.results
        assert results.max_scroll_y > 12
        results.scroll_to(y=10, animate=False)  # the mouse wheel: the highlight stays on row 0
        await pilot.pause(0.3)
        assert results.scroll_y == 10
        async with await Store.open(settings.db_path) as other:  # a new chat, listed first
            await other.create_session("Chat 45")
        await until(pilot, lambda: len(browser.choices) == 46, "the new chat")
        assert results.scroll_y == 10


async def test_a_send_failing_because_its_chat_was_deleted_keeps_the_words(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        assert app.engine is not None
        release = gate(monkeypatch, app.engine.store, "start_turn", lambda *a, **k: True)
        prompt_input(tab).insert("Sent meanwhile")
        await press(pilot, "enter")
        await asyncio.wait_for(release.entered.wait(), 5)  # type: ignore[attr-defined]
        async with await Store.open(settings.db_path) as other:
            await other.delete_session(here.session_id)
        for _ in range(40):
            if tab.session is None:
                break
            await asyncio.sleep(0.1)
        assert tab.session is None
        release.set()
        await asyncio.sleep(0.5)
        banner = str(tab.query_one(".banner", Static).render())
        assert prompt_input(tab).text == "Sent meanwhile"
        assert "deleted in another window" in banner, banner


async def test_a_window_terminated_or_closed_saves_its_tabs_as_a_quit_does(settings: Settings) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        async with await Store.open(settings.db_path) as other:  # a second window saves its tabs
            await other.set_state(OPEN_TABS_STATE, {"sessions": [], "active": 0})
        app._terminate()  # SIGTERM's handler
    async with await Store.open(settings.db_path) as store:
        assert (await store.get_state(OPEN_TABS_STATE))["sessions"] == [here.session_id]


async def test_a_reply_whose_process_died_mid_stream_shows_as_interrupted(settings: Settings) -> None:
    async with one_turn(settings) as (app, pilot, tab, here):
        async with await Store.open(settings.db_path) as other:
            other.writer_token = f"{socket.gethostname()}:999999999:0"  # a process that no longer runs
            _, streamed = await other.start_turn(here.session_id, here.id, "Asked, then killed", "demo")
            await other.flush_reply(streamed.id, "Cut sho")
        # No process commits anything after this: the app still finds the reply's writer gone.
        await until(pilot, lambda: last_reply(tab).message.id == streamed.id, "the other turn")
        await until(pilot, lambda: last_reply(tab).message.status is Status.INTERRUPTED, "the interrupted mark")
        assert last_reply(tab).message.content == "Cut sho"
        assert "interrupted, partial reply kept" in screen_text(app)
        assert not tab.shows_foreign_stream
        await send_and_wait(pilot, "Go on")  # the chat takes prompts again
        assert tab.turn is not None and tab.turn.user is not None and tab.turn.user.parent_id == streamed.id


async def test_a_prompt_sent_while_another_processs_turn_shows_up_is_a_branch_of_its_own(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with one_turn(settings) as (app, pilot, tab, _):
        first = [e.message.id for e in entries(tab)]
        assert app.engine is not None
        engine_send = app.engine.send

        async def send_while_another_turn_shows(session_id: int, text: str, **kwargs: Any) -> Any:
            turn = await engine_send(session_id, text, **kwargs)
            # While the prompt was being saved, another process answered the same question, and the tab
            # showed it.
            async with await Store.open(settings.db_path) as other:
                await other.add_messages(session_id, first[-1], [(Role.USER, "Elsewhere"), (Role.ASSISTANT, "Hi")])
            await tab.catch_up().wait()
            assert [e.message.content for e in entries(tab)][-2:] == ["Elsewhere", "Hi"]
            return turn

        monkeypatch.setattr(app.engine, "send", send_while_another_turn_shows)
        await send_and_wait(pilot, "Sent meanwhile")
        shown = entries(tab)
        assert [e.message.id for e in shown][:2] == first
        assert [e.message.content for e in shown][2:] == ["Sent meanwhile", expected_reply("Sent meanwhile")]
        assert (shown[2].sibling_index, shown[2].sibling_count) == (1, 2)


# -- failures ---------------------------------------------------------------------------------------------------


async def test_a_regenerated_reply_that_ends_while_its_branch_loads_shows_in_full(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fast reply may end before the new branch is read: the branch's rows must not replace the finished reply."""
    async with one_turn(settings, "Quick one") as (app, pilot, tab, first):
        assert app.engine is not None
        store = app.engine.store
        counts = store.sibling_counts

        async def slow_counts(ids: Any) -> Any:
            await asyncio.sleep(0.5)  # the full-speed reply ends meanwhile
            return await counts(ids)

        monkeypatch.setattr(store, "sibling_counts", slow_counts)
        view = message_list(tab)
        view.focus()
        view.selected_id = first.id
        await pilot.press("r")
        await until(pilot, lambda: tab.turn is not None and tab.turn.reply.id != first.id and settled(tab))
        await pilot.pause(0.3)
        shown = last_reply(tab)
        assert shown.message.id == tab.turn.reply.id
        assert shown.message.status is Status.COMPLETE
        assert shown.message.content == expected_reply("Quick one")


async def test_a_failing_tab_beside_a_healthy_one_and_retry(
    settings: Settings, server: LocalServer, tmp_path: Path
) -> None:
    failing = "This one will fail"
    # The server answers 500 to every request unless the prompt says otherwise; the healthy prompt does.
    healthy = "This one is fine [[status=none tokens=150 tps=100]]"
    server.options.status = 500
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        good = await send(pilot, healthy)
        await new_tab(pilot)
        bad = await send(pilot, failing)
        await until(pilot, lambda: settled(bad), "the failure")
        assert good.streaming, "the healthy reply goes on beside the failure"

        error = last_reply(bad)
        assert error.message.status is Status.ERROR
        assert error.message.error is not None and "(500)" in error.message.error
        assert "Traceback" not in error.message.error
        await until(pilot, lambda: "ctrl+r to retry" in screen_text(app), "the error on screen")

        await until(pilot, lambda: settled(good), "the healthy reply")
        assert last_reply(good).message.status is Status.COMPLETE
        assert last_reply(good).message.content == expected_reply(healthy)
        await until(pilot, lambda: good.unread and label(app, good).startswith("● "), "the unread mark")

        # The server is back: ctrl+r, from the prompt, makes a new reply beside the failed one, which completes.
        server.options.status = None
        assert app.focused is prompt_input(bad)
        await pilot.press("ctrl+r")
        await until(pilot, lambda: bad.turn is not None and bad.turn.reply.id != error.message.id and settled(bad))
        retried = last_reply(bad)
        assert retried.message.status is Status.COMPLETE
        assert retried.message.content == expected_reply(failing)
        assert (retried.sibling_index, retried.sibling_count) == (2, 2)
        assert bad.session_id is not None
        rows = session_messages(tmp_path / "h.db", bad.session_id)
        assert [(r[1], r[4]) for r in rows] == [(None, "complete"), (rows[0][0], "error"), (rows[0][0], "complete")]
        assert prompts_seen(server) == {failing: 2, strip_directives(healthy): 1}


async def test_a_failed_reply_names_the_retry_key_as_remapped(settings: Settings) -> None:
    app = ChatApp(replace(settings, keys={"tab.retry_last": "f9"}))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send(pilot, "Fail [[status=500]]")
        await until(pilot, lambda: settled(tab), "the failure")
        await until(pilot, lambda: "f9 to retry" in screen_text(app), "the mark naming f9")
        await pilot.press("f9")
        await until(pilot, lambda: last_reply(tab).sibling_count == 2, "the retry")
    # ctrl+r given to another action takes it from retry, which the mark then does not name.
    app = ChatApp(replace(settings, keys={"tab.cancel_reply": "ctrl+r"}))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await until(pilot, lambda: "⚠" in screen_text(app), "the failed reply restored")
        assert "to retry" not in screen_text(app)


async def test_a_missing_key_shows_a_banner_and_sending_saves_nothing(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text('[profiles.default]\nbase_url = "https://api.example.invalid/v1"\n', encoding="utf-8")
    settings = load_settings(db=tmp_path / "h.db", config=config, environ={})
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        app = await started(pilot)
        tab = app.active_tab
        assert tab is not None
        await until(pilot, lambda: tab.has_class("-banner"), "the banner")
        assert "OPENAI_API_KEY" in screen_text(app)

        await pilot.press(*"hello", "enter")
        await pilot.pause()
        assert tab.has_class("-banner")
        assert "OPENAI_API_KEY" in screen_text(app)
        assert prompt_input(tab).text == "hello"  # kept, to send once the key is set
        assert tab.turn is None and tab.session is None
        assert db_rows(tmp_path / "h.db", "SELECT count(*) FROM messages") == [(0,)]
        assert db_rows(tmp_path / "h.db", "SELECT count(*) FROM sessions") == [(0,)]


@pytest.mark.parametrize("where", ["here", "in another window"])
async def test_choosing_a_profile_without_a_key_says_so_at_once(settings: Settings, where: str) -> None:
    """Not at the next send only: a restart shows the banner at once, and the picture kept for it did not."""
    async with one_turn(settings) as (app, pilot, tab, _reply):
        assert tab.session is not None and app.engine is not None and not tab.has_class("-banner")
        for profile, banner in (("default", True), ("demo", False)):
            if where == "here":
                app._session_changed(await app.engine.store.update_session(tab.session.id, profile=profile))
            else:
                async with ChatEngine.open(settings) as other:
                    await other.store.update_session(tab.session.id, profile=profile)
            await until(pilot, lambda banner=banner: tab.has_class("-banner") == banner, f"the banner for {profile}")
            await pilot.pause()
            assert ("OPENAI_API_KEY" in screen_text(app)) == banner


async def test_an_unreachable_server_shows_an_error_in_plain_words(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    settings = load_settings(db=tmp_path / "h.db", demo=True, config=tmp_path / "none.toml", environ={})
    app = ChatApp(settings.with_demo_server(url))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send_and_wait(pilot, "Anyone there?")
        reply = last_reply(tab)
        assert reply.message.status is Status.ERROR
        assert reply.message.error == f"Cannot connect to {url}. Is the server running?"
        text = screen_text(app)
        assert "Cannot connect to" in text and "Traceback" not in text


# -- the prompt ---------------------------------------------------------------------------------------------------


async def test_a_multi_line_paste_does_not_send_and_enter_sends_it_whole(
    settings: Settings, server: LocalServer, tmp_path: Path
) -> None:
    pasted = "line1\nline2\nline3"
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        app = await started(pilot)
        tab = app.active_tab
        assert tab is not None
        prompt = prompt_input(tab)
        assert app.focused is prompt
        paste = events.Paste(pasted)  # what the terminal sends for a bracketed paste, to the app, as the driver does
        paste.set_sender(app)
        app.post_message(paste)
        await until(pilot, lambda: prompt.text == pasted, "the paste")
        for _ in range(5):
            await pilot.pause(0.02)
        assert tab.turn is None and server.requests == []

        await pilot.press("enter")
        await until(pilot, lambda: settled(tab), "the reply")
        user, reply = entries(tab)
        assert user.message.content == pasted
        assert reply.message.content == expected_reply(pasted)
        assert [r.prompt for r in server.requests] == [pasted]
        assert db_rows(tmp_path / "h.db", "SELECT content FROM messages WHERE role = 'user'") == [(pasted,)]


async def test_a_paste_holding_escape_sequences_lands_whole_without_them(
    settings: Settings, server: LocalServer
) -> None:
    """Text copied from a terminal log keeps its colour codes; Textual's parser read what followed an ESC in a
    paste as key presses, so a pasted line break sent part of the paste."""
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        app = await started(pilot)
        tab = app.active_tab
        assert tab is not None
        prompt = prompt_input(tab)
        await terminal_input(pilot, "\x1b[200~$ make\rerror: \x1b[31mfailed\x1b[0m at line 3\rnext\x1b[201~")
        expected = "$ make\nerror: failed at line 3\nnext"
        await until(pilot, lambda: prompt.text.replace("\r", "\n") == expected, "the paste")
        for _ in range(5):
            await pilot.pause(0.02)
        assert tab.turn is None and server.requests == []


async def test_ctrl_j_inserts_a_newline(settings: Settings, server: LocalServer) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        app = await started(pilot)
        tab = app.active_tab
        assert tab is not None
        await pilot.press("a", "ctrl+j", "b")
        assert prompt_input(tab).text == "a\nb"
        await pilot.pause()
        assert tab.turn is None and server.requests == []


async def test_keys_typed_while_the_prompt_is_being_saved_stay_in_the_box(
    settings: Settings, server: LocalServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The box is cleared once the prompt is committed; a fast typist's next words must not go with it."""
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        app = await started(pilot)
        tab = app.active_tab
        assert tab is not None and app.engine is not None
        original = app.engine.send
        typed_while_saving: list[str] = []

        async def slow_send(*args: Any, **kwargs: Any) -> Any:
            await asyncio.sleep(1.0)  # the keys below arrive meanwhile
            typed_while_saving.append(prompt.text)
            return await original(*args, **kwargs)

        monkeypatch.setattr(app.engine, "send", slow_send)
        prompt = prompt_input(tab)
        prompt.insert("first question")
        await pilot.press("enter", *"and more")
        await until(pilot, lambda: tab.turn is not None, "the turn")
        assert typed_while_saving[0].startswith("first questiona"), "keys were typed while the prompt was saved"
        assert prompt.text == "and more"
        await until(pilot, lambda: settled(tab), "the reply")
        assert [e.message.content for e in entries(tab)][0] == "first question"
        assert prompts_seen(server) == {"first question": 1}


async def test_ctrl_w_in_a_prompt_holding_text_deletes_a_word_instead_of_closing_the_tab(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        app = await started(pilot)
        await pilot.press("ctrl+t")
        await until(pilot, lambda: len(app.tabs) == 2, "the second tab")
        tab = app.active_tab
        assert tab is not None
        prompt = prompt_input(tab)
        await pilot.press(*"a long prompt")
        await pilot.press("ctrl+w")
        assert prompt.text == "a long " and app.tabs[1] is tab

        def close_key_disabled() -> bool:
            close = next(key for key in app.query_one(Footer).query(FooterKey) if key.action == "close_tab")
            return close.has_class("-disabled")

        await until(pilot, close_key_disabled, "Close shown disabled")
        await pilot.press("ctrl+w", "ctrl+w")
        assert prompt.text == ""
        await until(pilot, lambda: not close_key_disabled(), "Close enabled again")
        await pilot.press("ctrl+w")
        await until(pilot, lambda: len(app.tabs) == 1, "the tab closed")


async def test_a_removed_prompt_still_on_a_dialogs_backdrop_paints_blank(settings: Settings) -> None:
    """What a dialog showed of a chat deleted behind it: the removed prompt must paint, not raise (it ended the app)."""
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await new_tab(pilot)
        prompt = prompt_input(tab)
        prompt.insert("typed")
        await app.tabbed.remove_pane(tab.id or "")
        assert not prompt.is_attached
        lines = prompt.render_lines(Region(0, 0, 20, 3))
        assert [line.text for line in lines] == [" " * 20] * 3


# -- sessions: restoring, browsing ------------------------------------------------------------------------------


async def test_the_open_tabs_come_back_at_the_next_start(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        first = await send_and_wait(pilot, "First chat")
        await new_tab(pilot)
        second = await send_and_wait(pilot, "Chat [b]two[/b]")  # a title that is not markup
        sessions = [first.session_id, second.session_id]
        contents = [[e.message.content for e in entries(tab)] for tab in (first, second)]

    again = ChatApp(settings)
    async with again.run_test(size=SIZE) as pilot:
        await started(pilot)
        await until(pilot, lambda: len(again.tabs) == 2, "the restored tabs")
        assert [tab.session_id for tab in again.tabs] == sessions
        assert [[e.message.content for e in entries(tab)] for tab in again.tabs] == contents
        assert again.active_tab is again.tabs[1]
        assert [label(again, tab) for tab in again.tabs] == ["First chat", "Chat [b]two[/b]"]


async def test_a_reopened_chat_shows_its_last_replys_token_counts(settings: Settings) -> None:
    async with one_turn(settings, "Count my tokens") as (app, pilot, tab, _):
        await until(pilot, lambda: tab.stats.completion_tokens is not None, "the usage")
        counts = f"↑{tab.stats.prompt_tokens} ↓{tab.stats.completion_tokens} tokens"
        assert counts in tab.query_one(StatusLine).text

    again = ChatApp(settings)
    async with again.run_test(size=SIZE) as pilot:
        await started(pilot)
        await until(pilot, lambda: counts in again.tabs[0].query_one(StatusLine).text, "the saved counts")


def test_tokens_per_second_counts_the_time_between_the_first_token_and_the_last() -> None:
    stats = TurnStats(started=0.0, first_token=1.0, finished=3.0, completion_tokens=11)
    assert stats.describe() == "↑0 ↓11 tokens · first token 1.00 s · 5 tok/s"
    assert "tok/s" not in TurnStats(started=0.0, first_token=1.0, finished=3.0, completion_tokens=1).describe()


async def test_the_tabs_saved_last_come_back_after_a_quit_that_comes_before_the_write(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        first = await send_and_wait(pilot, "First chat")
        assert app.engine is not None
        store = app.engine.store
        set_state = store.set_state

        async def slow_set_state(key: str, value: object) -> None:
            await asyncio.sleep(2)  # queued behind other writes: still waiting when the app quits
            await set_state(key, value)

        monkeypatch.setattr(store, "set_state", slow_set_state)
        await new_tab(pilot)
        second = await send(pilot, "Second chat")
        await until(pilot, lambda: second.session_id is not None, "the second chat saved")
        sessions = [first.session_id, second.session_id]

    again = ChatApp(settings)
    async with again.run_test(size=SIZE) as pilot:
        await started(pilot)
        await until(pilot, lambda: [tab.session_id for tab in again.tabs] == sessions, "both tabs back")


async def theme_at_start(settings: Settings) -> tuple[str, list[str]]:
    """The theme a start of the app shows, and the warnings it gives."""
    app = ChatApp(settings)
    warnings: list[str] = []
    app.notify = lambda message, severity="information", **_: warnings.append(message)  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.pause()
        return app.theme, warnings


async def test_a_picked_theme_is_remembered_until_the_configured_one_changes(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        app.theme = "nord"  # as the palette's Theme command sets it
        await until(pilot, lambda: "nord" in str(db_rows(settings.db_path, "SELECT value FROM app_state")))
    assert await theme_at_start(settings) == ("nord", [])
    # CHAT_TUI_THEME or the config file naming another theme is a newer choice than the pick.
    assert await theme_at_start(replace(settings, theme="gruvbox")) == ("gruvbox", [])
    assert await theme_at_start(replace(settings, theme="no-such-theme")) == (
        "textual-dark",
        ["There is no theme 'no-such-theme': choose one with ctrl+p, Theme."],
    )
    assert await theme_at_start(replace(settings, theme="gruvbox")) == ("gruvbox", [])  # the typo fixed: no "nord"
    # An earlier version kept a bare name, also when nothing was picked: it counts for the default theme only.
    with sqlite3.connect(settings.db_path) as db:
        db.execute("UPDATE app_state SET value = ? WHERE key = 'theme'", ('"nord"',))
    assert await theme_at_start(replace(settings, theme="gruvbox")) == ("gruvbox", [])
    with sqlite3.connect(settings.db_path) as db:
        db.execute("UPDATE app_state SET value = ? WHERE key = 'theme'", ('"nord"',))
    assert await theme_at_start(settings) == ("nord", [])


async def long_session(settings: Settings, count: int) -> tuple[int, list[str]]:
    """A session of ``count`` messages, saved as the tab to restore at start: (session id, the texts)."""
    texts = [f"Message number {n:03d}" for n in range(count)]
    async with ChatEngine.open(settings) as engine:
        session = await engine.store.create_session("A long one")
        roles = [Role.USER, Role.ASSISTANT]
        await engine.store.add_messages(session.id, None, [(roles[n % 2], text) for n, text in enumerate(texts)])
        await engine.store.set_state(OPEN_TABS_STATE, {"sessions": [session.id], "active": 0})
    return session.id, texts


@contextlib.asynccontextmanager
async def on_long_session(
    settings: Settings, count: int
) -> AsyncIterator[tuple[ChatApp, Pilot[Any], ChatTab, MessageList, list[str]]]:
    """The app restored on a `long_session`, its newest page shown: (app, pilot, its tab, the tab's messages,
    the texts of all of them)."""
    session_id, texts = await long_session(settings, count)
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = app.tabs[0]
        view = message_list(tab)
        await until(pilot, lambda: tab.session_id == session_id and view.entries, "the restored session")
        yield app, pilot, tab, view, texts


async def test_scrolling_to_the_top_loads_earlier_messages_and_home_goes_to_the_first(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A session opens on its newest page of messages; the top of the list brings in the page before, and one
    Home (from the messages) brings in every earlier page, down to the first message."""
    monkeypatch.setattr(chat_tab_module, "PAGE_TO_FIRST", 100)  # three pages on the way to the first
    async with on_long_session(settings, 450) as (app, pilot, tab, view, texts):
        page = len(view.entries)
        assert page < len(texts)  # a page, not all of it
        view.scroll_home(animate=False)  # as with the wheel or the scrollbar
        await until(pilot, lambda: len(view.entries) > page, "the page before")
        assert len(view.entries) == 2 * page
        await press(pilot, "shift+tab")
        await until(pilot, lambda: app.focused is view, "the messages")
        await press(pilot, "home")
        await until(pilot, lambda: texts[0] in screen_text(app), "the first message")
        assert [e.message.content for e in view.entries] == texts  # each once, in order
        assert view.selected_id == view.entries[0].message.id
        assert view.scroll_y == 0


async def test_more_than_a_page_written_elsewhere_leaves_a_reader_scrolled_up_where_they_are(
    settings: Settings,
) -> None:
    async with on_long_session(settings, 300) as (app, pilot, tab, view, texts):
        loaded = [e.message.content for e in view.entries]
        view.scroll_to(y=view.max_scroll_y // 3, animate=False)  # reading something above the end
        await pilot.pause(0.3)
        before = screen_text(app)
        roles = itertools.cycle([Role.USER, Role.ASSISTANT])
        imported = [f"Imported {n:03d}" for n in range(chat_tab_module.PAGE + 50)]
        async with await Store.open(settings.db_path) as other:  # a LangChain app's import
            await other.add_messages(tab.session_id, tab.leaf_id, [(next(roles), text) for text in imported])
        await until(pilot, lambda: view.entries[-1].message.content == imported[-1], "the import")
        assert [e.message.content for e in view.entries] == loaded + imported  # nothing from above the page
        await pilot.pause(0.3)

        def without_scrollbar(screen: str) -> list[str]:  # its thumb shrinks: the list grew below
            return [line[:-1] for line in screen.splitlines()]

        assert without_scrollbar(screen_text(app)) == without_scrollbar(before)


@pytest.mark.parametrize("move", ["end", "up", "wheel up"])
async def test_moving_before_home_reached_the_first_message_stops_it_there(
    settings: Settings, monkeypatch: pytest.MonkeyPatch, move: str
) -> None:
    monkeypatch.setattr(chat_tab_module, "PAGE_TO_FIRST", 100)
    async with on_long_session(settings, 350) as (app, pilot, tab, view, texts):
        # The request for earlier messages is held back until the user has moved.
        held: list[Message] = []
        post = view.post_message

        def holding(message: Message) -> bool:
            if isinstance(message, MessageList.LoadEarlierRequested):
                held.append(message)
                return True
            return post(message)

        monkeypatch.setattr(view, "post_message", holding)
        await press(pilot, "shift+tab")
        await until(pilot, lambda: app.focused is view, "the messages")
        loaded = len(view.entries)
        await press(pilot, "home")
        await until(pilot, lambda: held, "the request for the earlier messages")
        # Up and the wheel, at the top already, change no position; End goes back to the newest.
        if move == "wheel up":
            view.post_message(events.MouseScrollUp(view, 5, 5, 0, -1, 0, False, False, False))
        else:
            await press(pilot, move)
        await until(pilot, lambda: not view._to_first, "the walk to the first message stopped")
        monkeypatch.setattr(view, "post_message", post)
        post(held.pop())
        await until(pilot, lambda: len(view.entries) > loaded, "the earlier messages")
        await pilot.pause()
        assert len(view.entries) == loaded + 100  # the page asked for, no more
        assert not held
        if move == "end":
            assert view.selected_id is None
            assert view.scroll_y == view.max_scroll_y > 0
            assert texts[-1] in screen_text(app)


@pytest.mark.parametrize("shorter", ["a prompt of three lines", "a smaller terminal"])
async def test_the_end_stays_in_view_when_the_messages_get_shorter(settings: Settings, shorter: str) -> None:
    """Textual keeps a view's offset when it gets shorter: the end of the chat went below it (and the picture
    kept for the next start showed it so)."""
    async with on_long_session(settings, 40) as (app, pilot, tab, view, texts):
        await pilot.pause()
        assert view.scroll_y == view.max_scroll_y > 0
        last_row, height = screen_text(app).splitlines()[view.region.bottom - 1], view.region.height
        if shorter == "a smaller terminal":
            await pilot.resize_terminal(SIZE[0], SIZE[1] - 4)
        else:
            await press(pilot, *"one", "ctrl+j", *"two", "ctrl+j", *"three")
        await until(pilot, lambda: view.region.height < height, "the messages shorter")
        await pilot.pause()
        assert view.scroll_y == view.max_scroll_y
        assert screen_text(app).splitlines()[view.region.bottom - 1] == last_row


async def test_a_page_asked_for_on_one_branch_is_dropped_if_another_branch_is_shown_meanwhile(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(chat_tab_module, "PAGE_TO_FIRST", 100)
    async with ChatEngine.open(settings) as engine:
        session = await engine.store.create_session("A long one")
        roles = [Role.USER, Role.ASSISTANT]
        thread = await engine.store.add_messages(session.id, None, [(roles[n % 2], f"M{n:03d}") for n in range(350)])
        (other,) = await engine.store.add_messages(session.id, thread[299].id, [(Role.USER, "Other branch")])
        await engine.store.set_state(OPEN_TABS_STATE, {"sessions": [session.id], "active": 0})
        await engine.store.set_state(f"branch:{session.id}", thread[-1].id)
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = app.tabs[0]
        view = message_list(tab)
        await until(pilot, lambda: view.entries and view.entries[-1].message.id == thread[-1].id, "the long branch")
        store = tab.engine.store
        path, release, held = store.path, asyncio.Event(), asyncio.Event()

        async def held_path(leaf_id: int, *, limit: int | None = None) -> list[Any]:
            if leaf_id == thread[149].id:  # the second page on the way to the first
                held.set()
                await release.wait()
            return await path(leaf_id, limit=limit)

        monkeypatch.setattr(store, "path", held_path)
        await press(pilot, "shift+tab", "home")
        await asyncio.wait_for(held.wait(), 10)
        await app.open_session(session.id, other.id)  # a search hit on the other branch, meanwhile
        await until(pilot, lambda: view.entries[-1].message.id == other.id, "the other branch")
        release.set()
        await until(pilot, lambda: not tab.engine._pending and not tab.workers, "the held page")
        await pilot.pause()
        shown = [e.message for e in view.entries]
        assert all(below.parent_id == above.id for above, below in zip(shown, shown[1:], strict=False))


async def test_a_chat_opened_from_the_list_and_closed_unused_is_kept(settings: Settings) -> None:
    """It may be another window's new chat, or a LangChain app's about to save its first turn."""
    async with ChatEngine.open(settings) as engine:
        session = await engine.store.create_session(profile=settings.default_profile, system_prompt="Be brief")
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await app.open_session(session.id)
        await until(pilot, lambda: app.tab_for(session.id) is not None, "the chat's tab")
        await app.action_close_tab()
        assert app.engine is not None
        await until(pilot, lambda: not app.engine._pending, "the engine's writes")  # type: ignore[union-attr]
    assert db_rows(settings.db_path, "SELECT id, system_prompt FROM sessions") == [(session.id, "Be brief")]


async def test_a_damaged_page_of_the_database_is_told_in_the_tab_and_the_app_goes_on(settings: Settings) -> None:
    """Opening a conversation whose messages sit on a damaged page shows SQLite's complaint in plain words."""
    marker = "Damaged-page-marker"
    async with ChatEngine.open(settings) as engine:
        session = await engine.store.create_session("On a damaged page")
        rows = [(Role.USER if n % 2 == 0 else Role.ASSISTANT, f"{marker} {n:03d} " + "words " * 60) for n in range(60)]
        await engine.store.add_messages(session.id, None, rows)
        await engine.store.set_state(OPEN_TABS_STATE, {"sessions": [session.id], "active": 0})
    data = bytearray(settings.db_path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    damaged = 0
    for start in range(page_size, len(data), page_size):  # never page 1: the header and the schema
        if marker.encode() in data[start : start + page_size]:
            data[start : start + page_size] = b"\xff" * page_size
            damaged += 1
    assert damaged
    settings.db_path.write_bytes(bytes(data))

    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = app.tabs[0]
        await until(pilot, lambda: tab.has_class("-banner"), "the banner")
        assert "is damaged" in screen_text(app)
        await new_tab(pilot)  # the app goes on
        assert app.is_running and len(app.tabs) == 2


async def saved_draft(pilot: Pilot[Any], session_id: int | None) -> str:
    """The unsent text saved for a session, once the engine's pending writes are done."""
    app = pilot.app
    assert isinstance(app, ChatApp) and app.engine is not None
    engine = app.engine
    await until(pilot, lambda: not engine._pending, "the engine's writes")
    return await engine.store.get_draft(session_id)


async def test_unsent_text_comes_back_after_a_restart_and_a_reopened_tab(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        chat = await send_and_wait(pilot, "First chat")
        session_id = chat.session_id
        prompt_input(chat).insert("half a thought")
        fresh = await new_tab(pilot)
        prompt_input(fresh).insert("a new chat's\nfirst words")

    again = ChatApp(settings)
    async with again.run_test(size=SIZE) as pilot:
        await started(pilot)
        await until(pilot, lambda: len(again.tabs) == 2, "the restored tab and a new chat")
        restored, new_chat = again.tabs
        assert restored.session_id == session_id
        await until(pilot, lambda: prompt_input(restored).text == "half a thought", "the draft")
        assert new_chat.session_id is None and prompt_input(new_chat).text == "a new chat's\nfirst words"

        # Closed from the palette (ctrl+w would delete a word): the draft is back when the chat is reopened.
        again.activate(restored)
        await palette_run(pilot, "close tab", "Close this tab")
        await until(pilot, lambda: len(again.tabs) == 1, "the tab closed")
        await again.open_session(session_id)
        reopened = again.tab_for(session_id)
        assert reopened is not None
        await until(pilot, lambda: prompt_input(reopened).text == "half a thought", "the draft after reopening")

        # Sent: no draft left behind.
        again.activate(reopened)
        await until(pilot, lambda: again.focused is prompt_input(reopened))
        await press(pilot, "enter")
        await until(pilot, lambda: settled(reopened) and not prompt_input(reopened).text, "the draft sent")
        assert await saved_draft(pilot, session_id) == ""


async def test_deleting_an_open_chat_closes_its_tab_and_leaves_no_draft(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        chat = await send_and_wait(pilot, "Soon gone")
        session_id = chat.session_id
        prompt_input(chat).insert("never sent")
        await pilot.press("ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, SessionBrowser) and "Soon gone" in screen_text(app))
        await pilot.press("ctrl+d")
        await until(pilot, lambda: "Delete" in screen_text(app) and not isinstance(app.screen, SessionBrowser))
        await pilot.press("y")
        await until(pilot, lambda: app.tab_for(session_id) is None, "the tab closed")
        assert await saved_draft(pilot, session_id) == ""


async def test_the_session_browser_opens_a_search_hit_or_focuses_its_open_tab(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        closed = await send_and_wait(pilot, "Tell me about pelicans")
        closed_id = closed.session_id
        await new_tab(pilot)
        kept = await send_and_wait(pilot, "Tell me about otters")
        await pilot.press("alt+1", "ctrl+w")
        await until(pilot, lambda: app.tabs == [kept])

        async def search_and_open(word: str, expected: int | None) -> None:
            await pilot.press("ctrl+o")
            await until(pilot, lambda: isinstance(app.screen, SessionBrowser), "the session browser")
            browser = app.screen
            assert isinstance(browser, SessionBrowser)
            await pilot.press(*word)
            assert browser.query_one("#search", Input).value == word
            # Search hits carry a message id; the plain session list does not.
            await until(pilot, lambda: browser.choices and all(c.message_id for c in browser.choices), "the hits")
            assert {c.session_id for c in browser.choices} == {expected}
            await pilot.press("enter")
            await until(pilot, lambda: app.screen is not browser, "the browser to close")

        await search_and_open("pelicans", closed_id)
        await until(pilot, lambda: len(app.tabs) == 2, "the reopened tab")
        reopened = app.tabs[1]
        assert reopened.session_id == closed_id and app.active_tab is reopened
        await until(pilot, lambda: len(entries(reopened)) == 2)
        assert entries(reopened)[0].message.content == "Tell me about pelicans"
        assert app.focused is prompt_input(reopened)

        # A session already open: its tab comes to the front, no second tab.
        await search_and_open("otters", kept.session_id)
        await until(pilot, lambda: app.active_tab is kept, "the open tab")
        assert len(app.tabs) == 2
        assert [tab.session_id for tab in app.tabs].count(kept.session_id) == 1


async def test_a_chat_closed_unused_after_a_setting_leaves_no_empty_chat_unless_it_holds_text(
    settings: Settings,
) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert app.engine is not None
        engine = app.engine

        async def closed_after_a_system_prompt(typed: str) -> int:
            tab = await new_tab(pilot)
            await press(pilot, "f4")
            await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the system prompt dialog")
            await press(pilot, "B", "e", " ", "b", "r", "i", "e", "f", "ctrl+s")
            await until(pilot, lambda: tab.session_id is not None and not engine._pending, "the saved setting")
            session_id = tab.session_id
            assert session_id is not None
            if typed:
                await press(pilot, *typed)
            await app.action_close_tab()  # as ctrl+w, which deletes a word while the prompt holds text
            await until(pilot, lambda: tab not in app.tabs and not engine._pending, "the tab closed")
            return session_id

        left = await closed_after_a_system_prompt("")
        kept = await closed_after_a_system_prompt("unsent")
        ids = [row[0] for row in db_rows(settings.db_path, "SELECT id FROM sessions")]
        assert left not in ids
        assert kept in ids and await engine.store.get_draft(kept) == "unsent"
        # One left open at a quit: restored at the next start, then closed unused.
        await new_tab(pilot)
        await press(pilot, "f4")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the system prompt dialog")
        await press(pilot, "B", "e", "ctrl+s")
        await until(pilot, lambda: app.active_tab is not None and app.active_tab.session_id is not None, "saved")
        restored = app.active_tab.session_id  # type: ignore[union-attr]

    again = ChatApp(settings)
    async with again.run_test(size=SIZE) as pilot:
        await started(pilot)
        await until(pilot, lambda: again.tab_for(restored) is not None, "the restored chat")  # type: ignore[arg-type]
        again.activate(again.tab_for(restored))  # type: ignore[arg-type]
        await again.action_close_tab()
        assert again.engine is not None
        await until(pilot, lambda: not again.engine._pending, "the engine's writes")  # type: ignore[union-attr]
    assert restored not in [row[0] for row in db_rows(settings.db_path, "SELECT id FROM sessions")]


async def test_opening_a_chat_replaces_an_untouched_new_chat_but_not_one_with_text(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        first = await send_and_wait(pilot, "An old chat")
        old_id = first.session_id
        assert old_id is not None
        await pilot.press("ctrl+w")
        await until(pilot, lambda: app.tab_for(old_id) is None and len(app.tabs) == 1, "a new chat in its place")
        blank = app.tabs[0]
        await app.open_session(old_id)
        await until(pilot, lambda: [t.session_id for t in app.tabs] == [old_id], "the blank tab replaced")
        assert not blank.is_attached

        await pilot.press("ctrl+t")
        await until(pilot, lambda: len(app.tabs) == 2 and app.active_tab is not None and app.active_tab.is_blank)
        typed = app.active_tab
        prompt_input(typed).insert("keep me")
        await pilot.press("alt+1")
        await until(pilot, lambda: app.active_tab is app.tabs[0])
        await pilot.press("ctrl+w")  # the old chat closes: the tab with text stays, and is shown
        await until(pilot, lambda: app.tabs == [typed], "only the typed tab")
        await app.open_session(old_id)
        await until(pilot, lambda: len(app.tabs) == 2, "a second tab")
        assert app.tabs[0] is typed and prompt_input(typed).text == "keep me"


# -- tab marks, help, command palette -----------------------------------------------------------------------------


async def test_tab_labels_mark_streaming_and_unread_replies(settings: Settings) -> None:
    prompt = "Mark me [[tokens=80 tps=40]]"
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send(pilot, prompt)
        await until(pilot, lambda: label(app, tab).startswith("⋯ "), "the streaming mark")
        await new_tab(pilot)
        await until(pilot, lambda: settled(tab) and tab.unread, "the hidden reply")
        await until(pilot, lambda: label(app, tab) == "● " + prompt[:21] + "…", "the unread mark")

        await pilot.press("alt+1")
        await until(pilot, lambda: label(app, tab) == prompt[:21] + "…", "the mark to clear")
        assert not tab.unread

        # A reply that ends in the visible tab is not unread.
        await send_and_wait(pilot, "Short one")
        assert not tab.unread
        # The label follows the tab's state through a message: it may take a moment after the reply ends.
        await until(pilot, lambda: not label(app, tab).startswith(("●", "⋯")), "the streaming mark to clear")
        assert not tab.unread


async def test_a_title_is_shown_inert_and_cut_to_the_tab_width_in_cells(settings: Settings) -> None:
    """A prompt's first words name the chat: an escape sequence in them reached the terminal from the tab label
    and the conversations list, and a CJK title was cut by characters, taking twice the width of others."""
    prompt = "日本語 \x1b[31mred\x1b[0m のとても長いタイトル and more words"
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send(pilot, prompt)
        await until(pilot, lambda: settled(tab) and not label(app, tab).startswith("⋯"), "the reply")
        shown = label(app, tab)
        assert shown.startswith("日本語 ␛[31mred") and shown.endswith("…"), shown
        assert cell_len(shown) <= MAX_LABEL  # cut by characters, it took 25 cells
        assert "\x1b" not in screen_text(app)
        await press(pilot, "ctrl+o")
        await until(pilot, lambda: isinstance(app.screen, SessionBrowser) and "␛[31mred" in screen_text(app))
        assert "\x1b" not in screen_text(app)


async def test_the_active_tab_label_is_brought_into_view_at_start_and_for_a_new_tab(
    settings: Settings, tmp_path: Path
) -> None:
    """Textual scrolls the tab bar to a tab as it is activated, before a just-added label has a width: the tabs
    restored at start showed the first ones while the last was active, and a new tab was cut at the right edge."""
    async with ChatEngine.open(settings) as engine:
        sessions = [await engine.store.create_session(f"Restored chat number {n} has a long title") for n in range(8)]
        await engine.store.set_state(OPEN_TABS_STATE, {"sessions": [s.id for s in sessions], "active": 7})

    def in_view(app: ChatApp, tab: ChatTab) -> bool:
        bar = app.tabbed.query_one(Tabs).region
        return bar.contains_region(app.tabbed.get_tab(tab).region)

    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: len(app.tabs) == 8 and app.active_tab is app.tabs[7], "the restored tabs")
        await until(pilot, lambda: in_view(app, app.tabs[7]), "the active label in view")
        assert not in_view(app, app.tabs[0])  # they do overflow the bar
        tab = await new_tab(pilot)
        await until(pilot, lambda: in_view(app, tab), "the new tab's label in view")


async def test_tab_moves_between_the_messages_and_the_prompt_not_to_the_tab_bar(settings: Settings) -> None:
    """Tab from the prompt went to the tab bar, where typed keys were silently dropped."""
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = app.active_tab
        assert tab is not None
        for _ in range(3):
            await pilot.press("tab")
            assert isinstance(app.focused, MessageList | PromptInput), app.focused
        await pilot.press("tab", "a")
        assert app.focused is prompt_input(tab) and prompt_input(tab).text == "a"


async def test_a_tab_switch_is_one_partial_update_with_its_label(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A switch moves the focus to the other tab's prompt, for which Textual repaints the whole screen; and the
    unread mark, cleared through a message, cost a layout and a frame of its own. Both came after the switch's
    frame: ~16 KB more for the terminal each time. Now the label changes with the switch, and no frame is full."""
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        first = app.tabs[0]
        assert app.engine is not None
        # The reply ends once the second tab is shown: at full speed it could end before, and leave no mark.
        release = gate(monkeypatch, app.engine.store, "finish_reply", lambda *_, **__: True)
        await send(pilot, "Read me later")
        await new_tab(pilot)
        release.set()
        await until(pilot, lambda: settled(first) and label(app, first).startswith("● "), "the unread mark")
        await pilot.wait_for_scheduled_animations()

        updates = recorded_updates(app, monkeypatch)
        app.activate(first)
        assert label(app, first) == "Read me later"  # at once: in the switch's layout
        await until(pilot, lambda: "Read me later" in screen_text(app), "the first tab's messages")
        await pilot.wait_for_scheduled_animations()
        assert updates and not [u for u in updates if isinstance(u, LayoutUpdate)]


async def test_a_tab_whose_reply_ended_while_hidden_is_painted_once_when_shown(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Its message list catches up inside the layout that shows it, and that layout's frame paints it. The repaint
    that catching up asked for (the view scrolls to the reply's end) came as a second frame of the same rows."""
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        first = app.tabs[0]
        prompt = "A long one [[tokens=600 tps=300]]"
        await send(pilot, prompt)
        await new_tab(pilot)
        await until(pilot, lambda: settled(first), "the hidden reply to end")
        await pilot.wait_for_scheduled_animations()

        repaints: list[Widget] = []
        post_message = Screen.post_message

        def record(self: Screen, message: Message) -> bool:
            if isinstance(message, messages.Update) and isinstance(message.widget, MessageList):
                repaints.append(message.widget)
            return post_message(self, message)

        monkeypatch.setattr(Screen, "post_message", record)
        await pilot.press("alt+1")
        end = last_sentence(expected_reply(prompt))
        await until(pilot, lambda: end in shown_prose(app), "the reply's end")
        await pilot.wait_for_scheduled_animations()
        assert repaints == []


async def test_switching_between_streaming_and_idle_tabs_keeps_the_footer(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        footer = app.query_one(Footer)

        def keys() -> list[FooterKey]:
            return list(footer.query(FooterKey))

        streaming = await send(pilot, "Keep going [[tokens=200 tps=20]]")
        assert not prompt_input(streaming).cursor_blink  # held still while the reply streams: a blink is a frame
        await until(pilot, lambda: "Esc stops" in streaming.query_one(StatusLine).text, "the Esc hint")
        idle = await new_tab(pilot)
        await until(pilot, lambda: keys() and not footer._recompose_required)
        shown = keys()
        for _ in range(2):
            await press(pilot, "ctrl+pageup")
            await until(pilot, lambda: app.active_tab is streaming, "the streaming tab")
            await press(pilot, "ctrl+pagedown")
            await until(pilot, lambda: app.active_tab is idle, "the idle tab")
        await pilot.pause(0.2)
        # The same widgets: rebuilding the Footer on a switch costs ~30 ms and a layout.
        assert keys() == shown
        assert streaming.streaming

        streaming.action_cancel_reply()
        await until(pilot, lambda: settled(streaming), "the reply")
        assert prompt_input(streaming).cursor_blink


async def test_the_footer_shows_whole_keys_that_fit_and_always_the_help_key(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=(80, 24)) as pilot:
        await started(pilot)
        tab = await send_and_wait(pilot, "Short [[tokens=20]]")
        footer = app.query_one(Footer)
        view = message_list(tab)
        view.focus()
        view.selected_id = entries(tab)[-1].message.id  # the reply's keys come first: more than 80 columns in all

        def shown(width: int) -> list[str]:
            palette = footer.query_one(".-command-palette")
            keys = [key for key in footer.query(FooterKey) if key is not palette]
            # Textual clips the last key that does not fit under the palette ("^w Clos"); none may overlap it.
            assert all(key.region.right <= palette.region.x <= width for key in keys)
            return [key.description for key in keys]

        for width in (80, 60, 40, 200):
            await pilot.resize_terminal(width, 24)
            await until(pilot, lambda width=width: footer.size.width == width and not footer._recompose_required)
            await pilot.pause(0.1)
            described = shown(width)
            assert described[:2] == ["Copy", "Copy code"]
            assert described[-1] == "Keys"
            if width == 200:
                assert {"Regenerate", "Quit", "New chat", "Close", "Chats", "Rename", "Model"} <= set(described)
            elif width == 40:
                assert "Regenerate" not in described


async def test_alt_digit_as_xterm_and_tmux_send_it_goes_to_the_tab_and_types_nothing(settings: Settings) -> None:
    read_escape_digits_as_alt()  # as the launcher does
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        first = app.active_tab
        second = await new_tab(pilot)
        await terminal_input(pilot, "\x1b1")  # alt+1 in xterm and tmux: ESC 1
        await until(pilot, lambda: app.active_tab is first, "tab 1")
        await terminal_input(pilot, "\x1b2")
        await until(pilot, lambda: app.active_tab is second, "tab 2")
        await terminal_input(pilot, "¡£")  # typed characters stay characters
        await until(pilot, lambda: prompt_input(second).text == "¡£", "the typed text")
        assert first is not None and prompt_input(first).text == ""


async def test_keys_remapped_in_the_config_work_and_an_unknown_id_is_reported(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    keys = {"app.new_tab": "ctrl+n", "app.new_tabz": "ctrl+x", "tab.cancel_reply": "f5", "app.help": "ctrl+x,f1"}
    app = ChatApp(replace(settings, keys=keys))
    notices: list[tuple[str, str]] = []
    monkeypatch.setattr(app, "notify", lambda message, severity="information", **_: notices.append((message, severity)))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await until(pilot, lambda: notices, "the warning")
        assert notices == [
            (
                "config.toml [keys]: no binding has the id app.new_tabz (F1 lists the ids); ctrl+x (app.help) is "
                "taken by the prompt (cut) while it has the focus",
                "warning",
            )
        ]
        # The status line and the palette name the keys as remapped.
        tab = await send(pilot, f"Stop me {SLOW}")
        status = tab.query_one(StatusLine)
        await until(pilot, lambda: "streaming… (f5 stops)" in status.text, f"the stop key in {status.text!r}")
        assert "Open a new chat tab (^n)" in [c.help for c in app.get_system_commands(app.screen)]
        await press(pilot, "f5")
        await until(pilot, lambda: settled(tab), "the reply stopped by the remapped key")
        await press(pilot, "ctrl+n")
        await until(pilot, lambda: len(app.tabs) == 2, "a tab opened by the remapped key")
        # F1 lists the key as remapped.
        await press(pilot, "f1")
        await until(pilot, lambda: help_rows(app), "the help's rows")
        assert [row for row in help_rows(app) if row[3] == "app.new_tab"] == [
            ["App", "ctrl+n", "New chat", "app.new_tab"]
        ]


def help_rows(app: ChatApp) -> list[list[str]]:
    """The rows of the help screen's table, once it is shown and filled (it is filled after it is mounted)."""
    tables = app.screen.query(DataTable) if isinstance(app.screen, HelpScreen) else []
    table = tables.first() if tables else None
    return [[str(cell) for cell in table.get_row_at(n)] for n in range(table.row_count)] if table else []


async def test_f1_lists_the_key_bindings(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("f1")
        await until(pilot, lambda: help_rows(app), "the help's rows")
        rows = help_rows(app)
        ids = {row[3] for row in rows}
        assert {"app.new_tab", "app.close_tab", "app.sessions", "tab.cancel_reply", "message_list.regenerate"} <= ids
        assert ["App", "ctrl+t", "New chat", "app.new_tab"] in rows
        assert [
            "Messages",
            "left, [",
            "Previous version",
            "message_list.sibling_previous",
        ] in rows  # not "left_square_bracket"
        assert any(row[1] == "shift+tab, tab" for row in rows)  # how to reach the messages' keys at all
        assert ["Messages", "mouse drag", "Select text", ""] in rows  # and what the mouse does
        assert "New chat" in screen_text(app)
        await pilot.press("escape")
        await until(pilot, lambda: not isinstance(app.screen, HelpScreen))


@pytest.mark.parametrize(
    ("key", "screen", "hint"),
    [
        ("ctrl+o", SessionBrowser, "^d Delete"),
        ("f2", TextPrompt, "Enter Save"),
        ("f4", TextPrompt, "^s Save"),
        ("f3", ModelPicker, "Enter Choose"),
        ("f1", HelpScreen, "Esc closes"),
    ],
)
async def test_every_dialog_shows_its_keys_under_the_app_styles(
    settings: Settings, key: str, screen: type[Screen[Any]], hint: str
) -> None:
    """The app's own styles once pushed every dialog's one-row key hint out of sight (it passed in a bare host)."""
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press(key)
        await until(pilot, lambda: isinstance(app.screen, screen), screen.__name__)
        await until(pilot, lambda: hint in screen_text(app), f"the hint {hint!r}")


async def test_the_command_palette_offers_new_chat(settings: Settings) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
        await until(pilot, lambda: "New chat" in screen_text(app), "New chat in the list")
        await pilot.press(*"new chat")
        await until(pilot, lambda: "Open a new chat tab" in screen_text(app))
        await pilot.press("enter")
        await until(pilot, lambda: len(app.tabs) == 2, "the new tab")
        assert app.active_tab is app.tabs[1]
        # One "Keys": ours, the list of every binding (Textual's opens a panel of the focused widget's).
        keys = [command for command in app.get_system_commands(app.screen) if command.title == "Keys"]
        assert [command.callback for command in keys] == [app.action_help]


async def palette_run(pilot: Pilot[Any], query: str, shown: str) -> None:
    """Open the command palette, type `query`, wait for `shown` (a command's help) and run the top hit."""
    app = pilot.app
    await pilot.press("ctrl+p")
    await until(pilot, lambda: isinstance(app.screen, CommandPalette), "the command palette")
    await pilot.press(*query)
    await until(pilot, lambda: shown in screen_text(app), shown)
    await pilot.press("enter")
    await until(pilot, lambda: not isinstance(app.screen, CommandPalette), "the palette closed")


async def test_sending_while_scrolled_up_shows_the_new_prompt_and_follows_its_reply(settings: Settings) -> None:
    """Scrolled up to reread something, a sent prompt and its reply stayed below the view, with no sign of them."""
    async with one_turn(settings, "A long one first [[tokens=600]]") as (app, pilot, tab, _):
        view = message_list(tab)
        view.scroll_home(animate=False)
        await until(pilot, lambda: view.scroll_y == 0 and "A long one first" in screen_text(app), "the top")
        await send(pilot, "The newest question")
        await until(pilot, lambda: settled(tab), "the reply")
        await until(pilot, lambda: last_sentence(expected_reply("The newest question")) in shown_prose(app), "the end")


async def test_edit_is_refused_before_its_dialog_while_the_tab_streams(settings: Settings) -> None:
    """Refused after the dialog, the edited text was thrown away."""
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send(pilot, f"Keep streaming {SLOW}")
        await pilot.press("shift+tab", "e")
        await until(pilot, lambda: any("still streaming" in n.message for n in app._notifications), "the refusal")
        assert app.screen is app.screen_stack[0]  # no dialog to type into
        assert tab.streaming


async def test_a_second_send_or_regenerate_in_a_streaming_tab_is_refused_and_keeps_the_text(
    settings: Settings, server: LocalServer
) -> None:
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        earlier = last_reply(await send_and_wait(pilot, "A quick one first")).message
        tab = await send(pilot, f"Keep streaming {SLOW}")
        turn = tab.turn

        def refusals() -> int:
            return sum("still streaming" in n.message for n in app._notifications)

        # Enter with text in the prompt: a warning, and the text stays to send later.
        prompt_input(tab).insert("Wait, one more thing")
        await press(pilot, "enter")
        await until(pilot, lambda: refusals() == 1, "the refusal of the send")
        assert prompt_input(tab).text == "Wait, one more thing"
        # r on the earlier, finished reply, from the messages.
        await press(pilot, "shift+tab")
        view = message_list(tab)
        await until(pilot, lambda: app.focused is view, "the messages")
        view.selected_id = earlier.id
        await press(pilot, "r")
        await until(pilot, lambda: refusals() == 2, "the refusal of the regenerate")

        assert tab.turn is turn and tab.streaming
        assert [e.message.id for e in entries(tab)][:2] == [earlier.parent_id, earlier.id]
        assert len(entries(tab)) == 4
        assert prompts_seen(server) == {"A quick one first": 1, "Keep streaming": 1}
        assert prompt_input(tab).text == "Wait, one more thing"


async def test_ctrl_c_over_selected_text_copies_it_and_says_so(settings: Settings) -> None:
    app = ChatApp(settings)
    copied: list[str] = []
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send_and_wait(pilot, "Select me [[tokens=20]]")
        view = message_list(tab)
        rows = [view.render_line(y).text for y in range(view.scrollable_content_region.height)]
        row = next(y for y, line in enumerate(rows) if "You asked: Select me" in line)
        await pilot.click(MessageList, offset=(8, row), times=2)  # a double click selects the message under it
        await until(pilot, lambda: view.text_selection is not None, "the selection")
        await pilot.press("ctrl+c")
        assert len(copied) == 1 and copied[0].startswith("You asked: Select me"), copied  # the reply as shown
        await until(pilot, lambda: any("Copied the selected text" in n.message for n in app._notifications))


async def test_rename_starts_from_the_title_the_first_prompt_gave(settings: Settings) -> None:
    """The tab kept the session as it was before the first prompt named it: F2 opened on an empty field."""
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        await send_and_wait(pilot, "Name me after this")
        await pilot.press("f2")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the rename dialog")
        assert app.screen.query_one(Input).value == "Name me after this"


async def test_the_palette_offers_the_message_actions_where_they_apply(settings: Settings, server: LocalServer) -> None:
    question = "Palette, please"
    app = ChatApp(settings)
    copied: list[str] = []
    app.copy_to_clipboard = copied.append  # type: ignore[method-assign]
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        assert not [
            c.title for c in app.get_system_commands(app.screen) if "Regenerate" in c.title or "Copy" in c.title
        ]
        tab = await send_and_wait(pilot, question)
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert {"Copy message", "Copy code block", "Regenerate reply", "Edit prompt"} <= set(titles)
        assert "Retry reply" not in titles and "Next version" not in titles  # nothing failed, one version

        await palette_run(pilot, "copy message", "Copy the selected or last message")
        assert copied == [expected_reply(question)]

        first = last_reply(tab).message
        await palette_run(pilot, "regenerate", "A new version of the selected or last reply")
        await until(pilot, lambda: tab.turn is not None and tab.turn.reply.id != first.id and settled(tab))
        assert (last_reply(tab).sibling_index, last_reply(tab).sibling_count) == (2, 2)
        assert "Previous version" in [c.title for c in app.get_system_commands(app.screen)]
        assert prompts_seen(server) == {question: 2}

        await palette_run(pilot, "edit prompt", "Edit the selected or last prompt")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt), "the edit dialog")
        assert app.screen.query_one(TextArea).text == question


# -- quitting ---------------------------------------------------------------------------------------------------


async def test_export_writes_the_branch_and_a_failed_write_is_a_notice(
    settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    app = ChatApp(settings)
    notices: list[tuple[str, str]] = []
    monkeypatch.setattr(app, "notify", lambda message, severity="information", **_: notices.append((message, severity)))
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tab = await send_and_wait(pilot, "Export me")
        target = tmp_path / f"chat-{tab.session_id}.md"
        await palette_run(pilot, "export", "Save this branch as Markdown")
        await until(pilot, target.exists, "the export")
        assert "Export me" in target.read_text(encoding="utf-8")
        assert notices == [(f"Exported to {target}", "information")]

        target.unlink()
        target.write_text("an earlier export, kept", encoding="utf-8")
        await palette_run(pilot, "export", "Save this branch as Markdown")
        second = tmp_path / f"chat-{tab.session_id}-2.md"
        await until(pilot, lambda: len(notices) == 2, "the second export")
        assert notices[1] == (f"Exported to {second}", "information") and "Export me" in second.read_text("utf-8")
        assert target.read_text(encoding="utf-8") == "an earlier export, kept"

        gone = tmp_path / "gone"
        gone.mkdir()
        monkeypatch.chdir(gone)
        gone.rmdir()  # the folder cannot be written to now
        await palette_run(pilot, "export", "Save this branch as Markdown")
        await until(pilot, lambda: len(notices) == 3, "the notice")
        assert notices[2] == ("Could not export the chat: No such file or directory", "error")
        assert app.is_running


async def test_quitting_while_replies_stream_keeps_them_as_interrupted(settings: Settings, tmp_path: Path) -> None:
    prompts = [f"First long one {SLOW}", f"Second long one {SLOW}", f"Third long one {SLOW}"]
    app = ChatApp(settings)
    async with app.run_test(size=SIZE) as pilot:
        await started(pilot)
        tabs = await send_in_new_tabs(pilot, prompts)
        await until(pilot, lambda: all(len(last_reply(tab).message.content) > 20 for tab in tabs), "streamed text")
        replies = [tab.turn.reply.id for tab in tabs if tab.turn is not None]
    assert app._exception is None
    rows = db_rows(tmp_path / "h.db", "SELECT id, content, status FROM messages WHERE role = 'assistant' ORDER BY id")
    assert [row[0] for row in rows] == replies
    for (_, content, status), prompt in zip(rows, prompts, strict=True):
        assert status == "interrupted"
        assert content and expected_reply(prompt).startswith(content)
