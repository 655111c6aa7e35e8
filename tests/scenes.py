"""The scenes users see, set up deterministically: shared by the snapshot tests and screenshots/generate.py.

Every scene seeds a fresh database with a fixed clock, opens the app on it against the local server, and drives it
to a frame that holds still: fixed size and theme, no blinking cursor, no clock, streams stalled at a fixed token.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import DataTable, Input, TextArea

from core.config import load_settings
from core.models import Role, Status
from core.server import LocalServer, reply_text, reply_tokens
from core.store import Store
from tui.app import ChatApp
from tui.screens.help import HelpScreen
from tui.screens.session_browser import SessionBrowser
from tui.widgets.chat_tab import ChatTab
from tui.widgets.message_list import MessageList
from tui.widgets.prompt_input import PromptInput

FIXED_TIME = "2026-11-20T09:30:00.000000Z"
THEME = "textual-dark"
STREAM_PROMPT = "Draft a packing list"

CODE_PROMPT = "Show me how to read a SQLite table in Python, with an example"
CODE_REPLY = """\
## Reading a table with `sqlite3`

The standard library is enough. Open a connection, run a query, iterate:

```python
import sqlite3

with sqlite3.connect("history.sqlite3") as db:
    for title, updated in db.execute("SELECT title, updated_at FROM sessions"):
        print(f"{updated[:10]}  {title}")
```

A few things worth knowing:

- **WAL mode** lets readers work while a writer commits.
- Use `?` placeholders, never string formatting, for values.
- `Row` objects (`db.row_factory = sqlite3.Row`) give you columns by name.

| pragma | why |
|---|---|
| `journal_mode=WAL` | readers never block the writer |
| `busy_timeout` | wait instead of failing with *database is locked* |
"""


@contextmanager
def utc_zone() -> Iterator[None]:
    """Dates in the session browser are local time: pin the zone so shots match everywhere, then put it back."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "UTC"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


async def seed(db: Path) -> dict[str, int]:
    """A small history with a fixed clock: returns session ids by name."""
    store = await Store.open(db, clock=lambda: FIXED_TIME)
    try:
        ids: dict[str, int] = {}
        session = await store.create_session()
        await store.add_messages(session.id, None, [(Role.USER, CODE_PROMPT), (Role.ASSISTANT, CODE_REPLY)])
        ids["code"] = session.id

        session = await store.create_session("Weekend trip to the Alps")
        await store.add_messages(
            session.id,
            None,
            [(Role.USER, "Plan two days of hiking near Chamonix"), (Role.ASSISTANT, reply_text("alps", 60))],
        )
        ids["trip"] = session.id

        session = await store.create_session()
        user, reply = await store.start_turn(session.id, None, "Summarise the SQLite WAL docs for me", "demo")
        partial = "## WAL in short\n\nWrite-ahead logging appends changes to a separate file, so"
        await store.finish_reply(
            reply.id, partial, Status.ERROR, error="Rate limited by the server (429). Try again in 3 s."
        )
        ids["error"] = session.id

        session = await store.create_session("Escape sequences in model output")
        await store.add_messages(
            session.id,
            None,
            [(Role.USER, "Print a red word"), (Role.ASSISTANT, "Here: \x1b[31mred\x1b[0m and a bell \x07 — inert.")],
        )
        ids["escapes"] = session.id
        return ids
    finally:
        await store.close()


async def open_tabs(db: Path, sessions: list[int], active: int = 0) -> None:
    store = await Store.open(db, clock=lambda: FIXED_TIME)
    try:
        await store.set_state("open_tabs", {"sessions": sessions, "active": active})
    finally:
        await store.close()


async def wait_for(pilot: Pilot, condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the scene did not reach its frame: {condition.__doc__ or condition}")
        await pilot.pause(0.05)


async def settle(pilot: Pilot) -> None:
    """No blinking cursors in a shot, and the layout done."""
    for widget in pilot.app.query(TextArea):
        widget.cursor_blink = False
    for widget in pilot.app.query(Input):
        widget.cursor_blink = False
    await pilot.pause(0.2)
    for widget in pilot.app.screen.query(TextArea):
        widget.cursor_blink = False
    for widget in pilot.app.screen.query(Input):
        widget.cursor_blink = False
    await pilot.pause()


def app_ready(app: ChatApp) -> bool:
    return app.engine is not None and bool(app.tabs) and app.active_tab is not None


@dataclass
class Scene:
    name: str
    size: tuple[int, int]
    tabs: list[str]
    """Seeded sessions open at start, by name; empty: one new chat."""
    drive: Callable[[Pilot], Awaitable[None]] | None = None
    """Pilot steps from a ready app (engine open, tabs restored) to the scene's frame."""
    active: int = 0


async def _drive_background_stream(pilot: Pilot) -> None:
    app = pilot.app
    assert isinstance(app, ChatApp)
    await pilot.press("ctrl+t")
    await wait_for(pilot, lambda: len(app.tabs) == 2)
    # 40 tokens, then the server stalls: the background tab stays "streaming" at a fixed text.
    tab = app.tabs[1]
    prompt = tab.query_one(PromptInput)
    prompt.load_text(f"{STREAM_PROMPT} [[stall=60 stall_after=40 tokens=200]]")
    prompt.submit()
    expected = len("".join(reply_tokens(STREAM_PROMPT, 200)[:40]))
    await wait_for(pilot, lambda: _streamed(tab) == expected)
    await pilot.press("alt+1")
    await wait_for(pilot, lambda: app.active_tab is app.tabs[0])


def _streamed(tab: ChatTab) -> int:
    if tab.turn is None:
        return 0
    entry = tab.query_one(MessageList).entry(tab.turn.reply.id)
    return len(entry.message.content) if entry else 0


async def _drive_browser(pilot: Pilot) -> None:
    app = pilot.app
    await pilot.press("ctrl+o")
    await wait_for(pilot, lambda: isinstance(app.screen, SessionBrowser) and bool(app.screen.choices))
    await pilot.press(*"sqlite")

    def hits_listed() -> bool:
        """The search's hits are listed (they carry a message id; the plain session list does not)."""
        browser = app.screen
        return (
            isinstance(browser, SessionBrowser)
            and browser.query_one("#search", Input).value == "sqlite"
            and bool(browser.choices)
            and all(choice.message_id for choice in browser.choices)
            and not any(worker.node is browser and not worker.is_finished for worker in app.workers)
        )

    await wait_for(pilot, hits_listed)


async def _drive_help(pilot: Pilot) -> None:
    app = pilot.app
    await pilot.press("f1")
    await wait_for(pilot, lambda: isinstance(app.screen, HelpScreen) and app.screen.query_one(DataTable).row_count > 0)


SCENES = {
    "first_launch": Scene("first_launch", (100, 30), []),
    "conversation": Scene("conversation", (110, 40), ["code"]),
    "background_stream": Scene("background_stream", (110, 32), ["trip"], _drive_background_stream),
    "browser_search": Scene("browser_search", (110, 32), ["trip"], _drive_browser),
    "error": Scene("error", (100, 24), ["error"]),
    "escapes": Scene("escapes", (100, 20), ["escapes"]),
    "help": Scene("help", (110, 36), [], _drive_help),
    "small_80x24": Scene("small_80x24", (80, 24), ["code", "trip"]),
}


def build(scene: Scene, tmp: Path, server: LocalServer) -> tuple[ChatApp, Callable[[Pilot], Awaitable[None]]]:
    """The app for a scene and the pilot steps that bring it to its frame."""
    db = tmp / f"{scene.name}.sqlite3"
    ids = asyncio.run(seed(db))
    if scene.tabs:
        asyncio.run(open_tabs(db, [ids[name] for name in scene.tabs], scene.active))
    else:
        asyncio.run(open_tabs(db, [], 0))
    settings = load_settings(db=db, demo=True, config=tmp / "none.toml", environ={"CHAT_TUI_THEME": THEME})
    app = ChatApp(settings.with_demo_server(server.url))

    async def run_before(pilot: Pilot) -> None:
        try:
            # Up to the shot: what the app shows of a date (the browser's) is rendered by then.
            with utc_zone():
                await wait_for(pilot, lambda: app_ready(app))
                if scene.drive is not None:
                    await scene.drive(pilot)
                await settle(pilot)
        except BaseException:
            app.exit(return_code=1)  # an exception here would otherwise leave the headless app running
            raise

    return app, run_before
