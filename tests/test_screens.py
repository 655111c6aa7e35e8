"""The modal screens, driven by Pilot in a tiny host app over a real store (and a real local server)."""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from textual.app import App
from textual.message import Message
from textual.pilot import Pilot
from textual.screen import Screen
from textual.widgets import DataTable, Input, OptionList, TextArea

from core.config import load_settings
from core.engine import ChatEngine
from core.errors import NotFound
from core.models import Role
from core.server import LocalServer
from core.store import Store
from tests.helpers import screen_text
from tui.screens.dialogs import Confirm, TextPrompt
from tui.screens.help import HelpScreen
from tui.screens.model_picker import ModelChoice, ModelPicker
from tui.screens.session_browser import PAGE_SIZE, SessionBrowser, SessionChoice, short_time, snippet_text

SCREENS_CSS = Path(__file__).resolve().parents[1] / "tui" / "styles" / "screens.tcss"


class Host(App[None]):
    """Pushes one screen on mount and records its result and the messages it posts."""

    CSS_PATH = SCREENS_CSS

    def __init__(self, screen: Screen[Any], keymap: dict[str, str] | None = None) -> None:
        super().__init__()
        self.pushed = screen
        self.keymap = keymap or {}
        self.results: list[Any] = []
        self.posted: list[Message] = []

    def on_mount(self) -> None:
        self.set_keymap(self.keymap)
        self.push_screen(self.pushed, self.results.append)

    def on_session_browser_session_renamed(self, message: SessionBrowser.SessionRenamed) -> None:
        self.posted.append(message)

    def on_session_browser_session_deleted(self, message: SessionBrowser.SessionDeleted) -> None:
        self.posted.append(message)


def fixed_clock() -> Callable[[], str]:
    """Stored timestamps one minute apart, from 2026-11-25 15:00 UTC."""
    minutes = itertools.count()

    def clock() -> str:
        minute = next(minutes)
        return f"2026-11-{25 + minute // 600:02d}T{15 + minute // 60 % 10:02d}:{minute % 60:02d}:00.000000Z"

    return clock


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    store = await Store.open(tmp_path / "h.db", clock=fixed_clock())
    try:
        yield store
    finally:
        await store.close()


@pytest.fixture
def zone(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[str], None]]:
    """Set the local time zone (dates are shown in local time) for one test."""

    def set_zone(name: str) -> None:
        monkeypatch.setenv("TZ", name)
        time.tzset()

    yield set_zone
    monkeypatch.undo()
    time.tzset()


async def until(pilot: Pilot[Any], condition: Callable[[], object], timeout: float = 5.0) -> None:
    """Let the app run until ``condition()`` holds (workers and screens settle on their own time)."""
    for _ in range(int(timeout / 0.02)):
        if condition():
            await pilot.pause()
            return
        await pilot.pause(0.02)
    raise AssertionError("timed out waiting for the app")


async def chat(store: Store, title: str | None, *texts: str) -> int:
    """A session with alternating user/assistant messages; returns its id."""
    session = await store.create_session(title)
    roles = itertools.cycle([Role.USER, Role.ASSISTANT])
    if texts:
        await store.add_messages(session.id, None, [(next(roles), text) for text in texts])
    return session.id


# -- TextPrompt ---------------------------------------------------------------------------------------------


async def test_text_prompt_single_line_accepts_with_enter() -> None:
    app = Host(TextPrompt("Rename chat", "abc"))
    async with app.run_test() as pilot:
        await until(pilot, lambda: isinstance(app.screen, TextPrompt))
        assert "Rename chat" in screen_text(app)
        await pilot.press("end", "d", "enter")  # the value starts selected, so typing alone replaces it
        await until(pilot, lambda: app.results)
    assert app.results == ["abcd"]


async def test_text_prompt_single_line_escape_cancels() -> None:
    app = Host(TextPrompt("Rename chat", "abc"))
    async with app.run_test() as pilot:
        await until(pilot, lambda: isinstance(app.screen, TextPrompt))
        await pilot.press("x", "escape")
        await until(pilot, lambda: app.results)
    assert app.results == [None]


async def test_text_prompt_multiline_enter_is_a_newline_and_ctrl_s_saves() -> None:
    app = Host(TextPrompt("System prompt", "Be brief.", multiline=True))
    async with app.run_test() as pilot:
        await until(pilot, lambda: isinstance(app.screen, TextPrompt))
        assert isinstance(app.focused, TextArea)
        assert "Save" in screen_text(app)
        await pilot.press("enter", "O", "k", "ctrl+s")
        await until(pilot, lambda: app.results)
    assert app.results == ["Be brief.\nOk"]


async def test_text_prompt_multiline_save_button_and_escape() -> None:
    app = Host(TextPrompt("Edit", "one", multiline=True))
    async with app.run_test() as pilot:
        await until(pilot, lambda: isinstance(app.screen, TextPrompt))
        await pilot.click("#accept")
        await until(pilot, lambda: app.results)
    assert app.results == ["one"]

    app = Host(TextPrompt("Edit", "one", multiline=True))
    async with app.run_test() as pilot:
        await until(pilot, lambda: isinstance(app.screen, TextPrompt))
        await pilot.press("x", "escape")
        await until(pilot, lambda: app.results)
    assert app.results == [None]


# -- Confirm ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("keys", "danger", "expected"),
    [
        (["y"], True, True),
        (["n"], True, False),
        (["escape"], True, False),
        (["enter"], True, False),  # focus starts on Cancel for dangerous actions
        (["tab", "enter"], True, True),
        (["enter"], False, True),
    ],
)
async def test_confirm(keys: list[str], danger: bool, expected: bool) -> None:
    app = Host(Confirm("Delete “[b]x[/b]” and its 2 messages?", danger=danger))
    async with app.run_test() as pilot:
        await until(pilot, lambda: isinstance(app.screen, Confirm))
        assert "Delete “[b]x[/b]” and its 2 messages?" in screen_text(app)
        await pilot.press(*keys)
        await until(pilot, lambda: app.results)
    assert app.results == [expected]


async def test_confirm_and_text_prompt_name_their_keys_as_their_buttons() -> None:
    app = Host(Confirm("Delete “x”?"))
    async with app.run_test() as pilot:
        await until(pilot, lambda: isinstance(app.screen, Confirm))
        await until(pilot, lambda: "y Delete  n Cancel" in screen_text(app))
    app = Host(TextPrompt("Edit and resend", "one", multiline=True, accept_label="Send"))
    async with app.run_test() as pilot:
        await until(pilot, lambda: isinstance(app.screen, TextPrompt))
        await until(pilot, lambda: "^s Send" in screen_text(app))
        assert "Save" not in screen_text(app)


# -- SessionBrowser -----------------------------------------------------------------------------------------


async def open_browser(pilot: Pilot[Any]) -> SessionBrowser:
    app = pilot.app
    await until(pilot, lambda: isinstance(app.screen, SessionBrowser) and not app.workers)
    assert isinstance(app.screen, SessionBrowser)
    return app.screen


def test_short_time_is_the_stored_utc_time_in_the_local_zone(zone: Callable[[str], None]) -> None:
    zone("EET-2")  # POSIX for UTC+2, no tz database needed
    assert short_time("2026-11-25T15:45:12.123456Z") == "2026-11-25 17:45"
    zone("UTC")
    assert short_time("2026-11-25T15:45:12.123456Z") == "2026-11-25 15:45"


async def test_browser_lists_newest_first_with_dates_counts_and_open_marks(
    store: Store, zone: Callable[[str], None]
) -> None:
    zone("UTC")
    first = await chat(store, "First", "hi", "hello")
    second = await chat(store, "Second", "a", "b", "c")
    empty = await chat(store, None)
    app = Host(SessionBrowser(store, open_ids={second}))
    async with app.run_test(size=(120, 30)) as pilot:
        browser = await open_browser(pilot)
        assert browser.choices == (SessionChoice(empty), SessionChoice(second), SessionChoice(first))
        rows = [line.strip("│ ") for line in screen_text(app).splitlines() if "2026-" in line]
        assert rows == [
            "2026-11-25 15:04    0 msgs  New chat",
            "● 2026-11-25 15:03    3 msgs  Second",  # open in a tab
            "2026-11-25 15:01    2 msgs  First",
        ]
        await pilot.press("down", "enter")
        await until(pilot, lambda: app.results)
    assert app.results == [SessionChoice(second)]


async def test_browser_click_on_a_row_chooses_it(store: Store) -> None:
    first = await chat(store, "First", "hi")
    await chat(store, "Second", "hi")
    app = Host(SessionBrowser(store))
    async with app.run_test(size=(120, 30)) as pilot:
        await open_browser(pilot)
        await pilot.click(OptionList, offset=(4, 1))
        await until(pilot, lambda: app.results)
    assert app.results == [SessionChoice(first)]


async def test_browser_empty_state_and_escape(store: Store) -> None:
    app = Host(SessionBrowser(store))
    async with app.run_test() as pilot:
        await open_browser(pilot)
        assert "No conversations yet" in screen_text(app)
        await pilot.press("escape")
        await until(pilot, lambda: app.results)
    assert app.results == [None]


async def test_browser_loads_the_next_page_when_the_highlight_nears_the_end(store: Store) -> None:
    ids = [await chat(store, f"chat {n}") for n in range(PAGE_SIZE + 12)]
    app = Host(SessionBrowser(store))
    async with app.run_test(size=(100, 30)) as pilot:
        browser = await open_browser(pilot)
        assert len(browser.choices) == PAGE_SIZE
        for _ in range(4):
            await pilot.press("pagedown")
        await until(pilot, lambda: len(browser.choices) == PAGE_SIZE + 12)
        assert [c.session_id for c in browser.choices] == ids[::-1]


async def test_browser_search_highlights_matches_and_chooses_the_message(store: Store) -> None:
    await chat(store, "Fruit", "what about apples", "Apples are fine")
    target = await chat(store, "Smoothies", "blend a banana", "A [b]ripe[/b] banana is sweet")
    message_id = await store.latest_leaf(target)
    app = Host(SessionBrowser(store))
    async with app.run_test(size=(120, 30)) as pilot:
        browser = await open_browser(pilot)
        await pilot.press(*"ripe")
        await until(pilot, lambda: browser.choices == (SessionChoice(target, message_id),))
        text = screen_text(app)
        assert "Smoothies" in text
        assert "A [b]ripe[/b] banana is sweet" in text  # user text shown literally, match marks removed
        await pilot.press("enter")
        await until(pilot, lambda: app.results)
    assert app.results == [SessionChoice(target, message_id)]


async def test_browser_search_without_matches_says_so(store: Store) -> None:
    await chat(store, "Fruit", "apples")
    app = Host(SessionBrowser(store))
    async with app.run_test(size=(120, 30)) as pilot:
        browser = await open_browser(pilot)
        await pilot.press(*"kiwi")
        await until(pilot, lambda: not app.workers and browser.has_class("-empty"))
        assert "No matches for “kiwi”" in screen_text(app)
        await pilot.press(*["backspace"] * 4)
        await until(pilot, lambda: not app.workers and len(browser.choices) == 1)


def test_snippet_text_highlights_query_words_and_keeps_literal_brackets() -> None:
    text = snippet_text("…a [ripe] [[bold]] x[/] [Café]…", "ripe bold cafe")
    assert text.plain == "…a ripe [bold] x[/] Café…"
    highlighted = [text.plain[span.start : span.end] for span in text.spans]
    assert highlighted == ["ripe", "bold", "Café"]


def test_a_reply_snippet_reads_as_the_rendered_reply() -> None:
    snippet = "…asked: *How do [lighthouses] work* ## Lenses **Fresnel** `lens` keeps 2*3*4 and snake_case \\* ok…"
    text = snippet_text(snippet, "lighthouse", markdown=True)
    assert text.plain == "…asked: How do lighthouses work Lenses Fresnel lens keeps 2*3*4 and snake_case * ok…"
    assert [text.plain[span.start : span.end] for span in text.spans] == ["lighthouses"]
    # A prompt is shown as typed.
    assert snippet_text("use **bold** [here]", "here").plain == "use **bold** here"


def test_a_reply_snippet_drops_table_pipes_and_separator_rows() -> None:
    snippet = "| [Name] | Value |\n| --- | :---: |\n| cache | on \\| off |\n\n---\nThe cache…"
    text = snippet_text(snippet, "name", markdown=True)
    assert text.plain == "Name Value cache on | off The cache…"
    assert [text.plain[span.start : span.end] for span in text.spans] == ["Name"]
    # A prompt is shown as typed; a snippet may start or end inside a row.
    assert snippet_text("| a | [b] |", "b").plain == "| a | b |"
    assert snippet_text("…[Value] |\n| --- | --- |\n| cac…", "value", markdown=True).plain == "…Value cac…"


def test_a_snippet_keeps_a_short_lead_before_its_match() -> None:
    text = snippet_text("…one two three four five six seven eight nine [ten] eleven", "ten")
    assert text.plain == "…six seven eight nine ten eleven"
    assert [text.plain[span.start : span.end] for span in text.spans] == ["ten"]
    assert snippet_text("a few words [ten] eleven", "ten").plain == "a few words ten eleven"


TABLE_REPLY = """Here is a plan for the import job.

1. Read the rows in windows of 500.
2. Validate each row.
3. Batch each window.

| Name | Value |
| --- | --- |
| batch_size | 500 |
| retries | 3 |
| cache | enabled, kept for an hour between the runs of the import job |
"""


async def test_browser_search_shows_the_match_of_a_long_snippet_at_80_columns(store: Store) -> None:
    await chat(store, "Import job", "How should I tune the import job?", TABLE_REPLY)
    app = Host(SessionBrowser(store))
    async with app.run_test(size=(80, 24)) as pilot:
        browser = await open_browser(pilot)
        await pilot.press(*"cache")
        await until(pilot, lambda: not app.workers and len(browser.choices) == 1 and browser.choices[0].message_id)
        row = next(line for line in screen_text(app).splitlines() if "AI: " in line)
        assert "cache" in row and "|" not in row.split("AI: ")[1].split("│")[0]


async def test_browser_shows_markup_in_titles_literally(store: Store) -> None:
    await chat(store, "[bold]x[/]", "hello")
    app = Host(SessionBrowser(store))
    async with app.run_test(size=(120, 30)) as pilot:
        await open_browser(pilot)
        assert "[bold]x[/]" in screen_text(app)


async def test_browser_rename_updates_the_store_and_posts_session_renamed(store: Store) -> None:
    older = await chat(store, "Older", "one")
    newer = await chat(store, "Newer", "two")
    app = Host(SessionBrowser(store, open_ids={older}))
    async with app.run_test(size=(120, 30)) as pilot:
        browser = await open_browser(pilot)
        await pilot.press("down", "ctrl+r")
        await until(pilot, lambda: isinstance(app.screen, TextPrompt))
        assert app.screen.query_one(Input).value == "Older"
        app.screen.query_one(Input).value = "[i]Renamed[/i]"
        await pilot.press("enter")
        await until(pilot, lambda: app.screen is browser and app.posted and not app.workers)
        assert [(m.session_id, m.title) for m in app.posted] == [(older, "[i]Renamed[/i]")]
        assert (await store.get_session(older)).title == "[i]Renamed[/i]"
        assert "[i]Renamed[/i]" in screen_text(app)
        assert browser.choices == (SessionChoice(newer), SessionChoice(older))
        assert browser.highlighted_choice == SessionChoice(older)


async def test_browser_delete_asks_then_removes_and_posts_session_deleted(store: Store) -> None:
    keep = await chat(store, "Keep", "one")
    doomed = await chat(store, "Doomed", "one", "two")
    app = Host(SessionBrowser(store))
    async with app.run_test(size=(120, 30)) as pilot:
        browser = await open_browser(pilot)
        await pilot.press("ctrl+d")
        await until(pilot, lambda: isinstance(app.screen, Confirm))
        assert "Delete “Doomed” and its 2 messages?" in screen_text(app)
        await pilot.press("n")
        await until(pilot, lambda: app.screen is browser and not app.workers)
        assert (await store.get_session(doomed)).title == "Doomed"
        assert not app.posted

        await pilot.press("delete")  # the search box is empty: Delete deletes the highlighted session
        await until(pilot, lambda: isinstance(app.screen, Confirm))
        await pilot.press("y")
        await until(pilot, lambda: app.screen is browser and app.posted and not app.workers)
        assert [m.session_id for m in app.posted] == [doomed]
        with pytest.raises(NotFound):
            await store.get_session(doomed)
        assert browser.choices == (SessionChoice(keep),)


async def test_browser_archive_hides_and_the_archived_view_restores(store: Store) -> None:
    keep = await chat(store, "Keep", "one")
    shelved = await chat(store, "Shelved", "one")
    app = Host(SessionBrowser(store))
    async with app.run_test(size=(120, 30)) as pilot:
        browser = await open_browser(pilot)
        await pilot.press("ctrl+a")
        await until(pilot, lambda: not app.workers and browser.choices == (SessionChoice(keep),))
        assert (await store.get_session(shelved)).archived
        assert [s.id for s in await store.list_sessions()] == [keep]

        await pilot.press("ctrl+o")
        await until(pilot, lambda: not app.workers and browser.choices == (SessionChoice(shelved),))
        assert "Archived conversations" in screen_text(app)
        await pilot.press("ctrl+a")
        await until(pilot, lambda: not app.workers and browser.choices == ())
        assert "No archived conversations" in screen_text(app)
        assert not (await store.get_session(shelved)).archived


async def test_browser_hints_follow_the_keymap(store: Store) -> None:
    app = Host(SessionBrowser(store), keymap={"sessions.rename": "f3"})
    async with app.run_test(size=(120, 30)) as pilot:
        await open_browser(pilot)
        text = screen_text(app)
        assert "f3 Rename" in text and "^d Delete" in text


# -- HelpScreen ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(80, 24), (120, 30)])
async def test_help_shows_every_binding_id_whole(size: tuple[int, int]) -> None:
    app = Host(HelpScreen({}))
    async with app.run_test(size=size) as pilot:
        await until(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen.query_one(DataTable).row_count)
        table = app.screen.query_one(DataTable)
        ids = {str(table.get_row_at(n)[3]) for n in range(table.row_count)} - {""}
        assert table.max_scroll_x == 0  # no column hidden to the right
        if size[0] >= 120:  # wide enough for one line a row
            assert {row.height for row in table.rows.values()} == {1}
        seen: set[str] = set()
        while True:
            seen |= set(screen_text(app).split())
            if table.scroll_y >= table.max_scroll_y:
                break
            table.scroll_relative(y=table.size.height // 2, animate=False)  # half a page: none skipped
            await pilot.pause()
        assert ids <= seen


# -- ModelPicker --------------------------------------------------------------------------------------------


@pytest.fixture
def demo_server() -> Any:
    with LocalServer() as server:
        yield server


def demo_settings(tmp_path: Path, base_url: str) -> Any:
    settings = load_settings(db=tmp_path / "m.db", demo=True, config=tmp_path / "none.toml", environ={})
    return settings.with_demo_server(base_url)


async def test_model_picker_lists_profiles_and_server_models(tmp_path: Path, demo_server: LocalServer) -> None:
    async with ChatEngine.open(demo_settings(tmp_path, demo_server.url)) as engine:
        picker = ModelPicker(engine, current=ModelChoice("demo"))
        app = Host(picker)
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: picker.server_models is not None)
            text = screen_text(app)
            assert f"Models on {demo_server.url}" in text
            assert "● demo" in text and "OpenAI" in text
            assert all(name in text for name in ("demo-fast", "demo-long"))
            await pilot.press("down", "down", "enter")  # past the heading: demo, then demo-fast
            await until(pilot, lambda: app.results)
    assert app.results == [ModelChoice("demo", "demo-fast")]


async def test_model_picker_marks_the_current_server_model_and_picks_a_profile(
    tmp_path: Path, demo_server: LocalServer
) -> None:
    async with ChatEngine.open(demo_settings(tmp_path, demo_server.url)) as engine:
        picker = ModelPicker(engine, current=ModelChoice("demo", "demo-long"))
        app = Host(picker)
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: picker.server_models is not None)
            assert "● demo-long" in screen_text(app)
            await pilot.press("up", "up", "up", "up", "enter")  # demo-long → … → the default profile
            await until(pilot, lambda: app.results)
    assert app.results == [ModelChoice("default")]


async def test_model_picker_offers_the_demo_profile_only_in_demo_mode(tmp_path: Path, demo_server: LocalServer) -> None:
    environ = {"OPENAI_API_KEY": "sk-test", "OPENAI_BASE_URL": demo_server.url}
    settings = load_settings(db=tmp_path / "m.db", config=tmp_path / "none.toml", environ=environ)
    async with ChatEngine.open(settings) as engine:
        picker = ModelPicker(engine, current=ModelChoice("default"))
        app = Host(picker)
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: picker.server_models is not None)
            text = screen_text(app)
            assert "● default" in text and "demo-fast" in text  # the server's models are listed
            assert "OpenAI" not in text  # the demo profile's row: without its server it would ask OpenAI


async def test_model_picker_with_a_dead_server_lists_none_and_escape_cancels(tmp_path: Path) -> None:
    with LocalServer() as server:
        dead_url = server.url  # stopped when the block ends: nothing listens there any more
    async with ChatEngine.open(demo_settings(tmp_path, dead_url)) as engine:
        picker = ModelPicker(engine, current=ModelChoice("demo"))
        app = Host(picker)
        async with app.run_test(size=(120, 30)) as pilot:
            await until(pilot, lambda: picker.server_models is not None)
            assert "none listed" in screen_text(app)
            await pilot.press("escape")
            await until(pilot, lambda: app.results)
    assert app.results == [None]
