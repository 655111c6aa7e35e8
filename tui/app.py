"""The chat-tui app: tabs of conversations over one engine. Thin: tabs do the chatting, screens the choosing."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import signal
from collections.abc import Iterable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from rich.cells import cell_len
from textual import on, work
from textual.actions import SkipAction
from textual.app import App, ComposeResult, SystemCommand
from textual.binding import Binding
from textual.content import Content
from textual.css.query import NoMatches
from textual.driver import Driver
from textual.reactive import Reactive
from textual.screen import Screen
from textual.widget import Widget
from textual.widgets import Header, TabbedContent, Tabs
from textual.widgets._tabs import Underline

from core.config import DEFAULT_THEME, Settings
from core.engine import ChatEngine
from core.errors import ChatError, NotFound
from core.export import to_markdown
from core.models import Session
from tui.keys import with_keys
from tui.picture import OPEN_TABS_STATE, PICTURE_STATE, PROBE, Row, picture_value, rows_of
from tui.splash import APP_TITLE, COLOURS_STATE, DEMO_SUB_TITLE, HEADER_ICON, rendered_colours
from tui.widgets.chat_tab import ChatTab
from tui.widgets.footer import SteadyFooter
from tui.widgets.markdown_render import preload_markdown
from tui.widgets.message_list import copy_selected_text
from tui.widgets.prompt_input import PromptInput

if TYPE_CHECKING:
    from textual.constants import AnimationLevel

    from tui.screens.session_browser import SessionBrowser

CATCH_UP_AFTER_SWITCH = 0.3
"""Seconds after a tab is shown that it reads what other processes wrote to its chat (see ChatTab.catch_up)."""
OTHERS_INTERVAL = 1.0
"""Seconds between two looks at whether another process wrote to the database."""
THEME_STATE = "theme"
MAX_LABEL = 22


@dataclass(frozen=True)
class _Picture:
    """The screen taken at a quit for the next start's splash (tui/picture.py)."""

    context: str
    rows: list[Row]
    width: int
    new_chat: bool
    """The tab in view is a new chat (its text comes back as the saved draft of no chat)."""


class MainScreen(Screen[None]):
    """The screen of the chat tabs."""

    # Textual repaints the whole screen when the focus moves (a reactive's default), though the widgets whose look
    # depends on it repaint themselves. A tab switch moves it (each tab has its own prompt): the switch's frame was
    # followed by a full one, ~16 KB more for the terminal.
    focused: Reactive[Widget | None] = Reactive(None, repaint=False)

    def action_copy_text(self) -> None:
        # ctrl+c over a selection in the messages: Textual copies without a word; y says what it copied.
        if not copy_selected_text(self):
            raise SkipAction()


class ChatApp(App[None]):
    """Opens the engine on mount, restores the tabs of the last run, and closes the engine on exit."""

    CSS_PATH = ["styles/app.tcss", "styles/message_list.tcss", "styles/screens.tcss"]
    TITLE = APP_TITLE
    BINDINGS = [
        Binding("ctrl+t", "new_tab", "New chat", id="app.new_tab"),
        # Priority: the prompt (a TextArea, focused nearly always) binds ctrl+w to delete a word.
        Binding("ctrl+w", "close_tab", "Close", id="app.close_tab", priority=True),
        Binding("ctrl+pagedown,alt+right", "next_tab", "Next tab", show=False, id="app.next_tab"),
        Binding("ctrl+pageup,alt+left", "previous_tab", "Previous tab", show=False, id="app.previous_tab"),
        *(Binding(f"alt+{n}", f"goto_tab({n})", f"Tab {n}", show=False, id=f"app.goto_tab_{n}") for n in range(1, 10)),
        Binding("ctrl+o", "sessions", "Chats", id="app.sessions"),
        Binding("f2", "rename", "Rename", id="app.rename"),
        Binding("f3", "choose_model", "Model", id="app.choose_model"),
        Binding("f4", "system_prompt", "System prompt", show=False, id="app.system_prompt"),
        Binding("f1", "help", "Keys", id="app.help"),
        Binding("ctrl+q", "quit", "Quit", id="app.quit", priority=True),
    ]

    def __init__(self, settings: Settings, *, after_splash: bool = False, start_context: str | None = None) -> None:
        driver: type[Driver] | None = None
        if after_splash:  # a splash needs termios, so this is Textual's Linux driver (which Windows cannot import)
            from tui.driver import AfterSplashDriver

            driver = AfterSplashDriver
        super().__init__(driver_class=driver)
        self.settings = settings
        self.engine: ChatEngine | None = None
        self._exit_stack = contextlib.AsyncExitStack()
        self._next_tab = 1
        self.preloaded = False
        """The model client and the Markdown renderer are imported (a thread does it after the first frame)."""
        self._hang_up_task: asyncio.Future[None] | None = None
        self.set_keymap(settings.keys)
        if settings.demo:
            self.sub_title = DEMO_SUB_TITLE
        self._first_frame_colours: object = None
        """What the next start's splash will draw (tui/splash.py), as kept in the database."""
        self._start_context = start_context
        """What this start's screen was made from besides the database (tui/picture.py), when it had a splash."""
        self._picture: _Picture | None = None
        """The screen as the next start will open on it, taken at a quit, kept as the app closes."""
        self._version_at_start = 0
        """The database's `data_version` as the app began reading it."""
        self._warned_at_start = False
        """The start said something (a toast) the next start says again: no picture shows it."""
        self._again: set[ChatTab] = set()
        """Tabs to catch up at the next look: they were still reading one when another process wrote."""
        self._marks: dict[int, tuple[str | None, int | None]] = {}
        """Each open chat's title and newest message id when another process last wrote (see
        `_catch_up_with_others`)."""

    def get_default_screen(self) -> Screen:
        return MainScreen(id="_default")

    def compose(self) -> ComposeResult:
        yield Header(icon=HEADER_ICON)
        yield TabbedContent(id="tabs")
        yield SteadyFooter(keep_action="help")

    async def on_mount(self) -> None:
        # Tab from the prompt went to the tab bar, where typed keys were dropped: tabs change with keys of their own
        # (alt+arrows, alt+N) or a click, and Tab moves between the messages and the prompt.
        self.tabbed.query_one(Tabs).can_focus = False
        # Closing the terminal window (SIGHUP) or a plain `kill` (SIGTERM) would end the process on the spot and
        # lose up to a flush interval of each streaming reply; both now save them as interrupted first.
        loop = asyncio.get_running_loop()
        for name, handler in (("SIGHUP", self._hang_up), ("SIGTERM", self._terminate)):
            with contextlib.suppress(AttributeError, NotImplementedError, RuntimeError, ValueError):  # Windows, threads
                loop.add_signal_handler(getattr(signal, name), handler)
        try:
            self.engine = await self._exit_stack.enter_async_context(ChatEngine.open(self.settings))
        except ChatError as error:
            self.exit(return_code=1, message=f"chat-tui: {error}")
            return
        store = self.engine.store
        self._version_at_start = await store.data_version()  # no picture if another process commits from now on
        await store.changed_elsewhere()  # from now on: the chats are read below
        saved = await store.get_state(THEME_STATE)
        self.theme = self._theme_to_use(saved)
        if saved != self._theme_state():  # what it overrides, from now on (an older version kept a name only)
            self._write_state(THEME_STATE, self._theme_state())
        self.theme_changed_signal.subscribe(self, self._remember_theme)
        self.app_resume_signal.subscribe(self, self._repaint_after_suspend)
        self._first_frame_colours = await store.get_state(COLOURS_STATE)
        # The tabs are built before the first frame: a frame without them came ~40 ms sooner here, but the full
        # screen ~70 ms later. Textual slides the tab bar's underline to a tab as it is added: at a start, from
        # the left edge to the tab, for 0.3 s, under a splash that had drawn it in place. It is put in place.
        animation_level, self.animation_level = self.animation_level, "none"
        self.call_after_refresh(self._animate_again, animation_level)
        state = await store.get_state(OPEN_TABS_STATE, {}) or {}
        for session_id in state.get("sessions", []):
            with contextlib.suppress(ChatError):
                session = await store.get_session(session_id)
                tab = await self.add_tab(session, activate=False)
                # Restored with no message and no title, it is one a tab of ours made for a setting (a first
                # prompt names a chat, a LangChain app's key too): closed unused, it goes as it would have before.
                tab.made_for_setting = session.title is None and not session.message_count
        # A chat not saved yet has no session to restore; its unsent text brings its tab back.
        if not self.tabs or await store.get_draft(None):
            await self.add_tab(activate=False)
        index = state.get("active", 0)
        self.activate(self.tabs[index if 0 <= index < len(self.tabs) else 0])
        await self.query_one(SteadyFooter).show_keys_now()
        # After the first frame: the imports hold the GIL, and would slow the frame down from their thread.
        self.call_after_refresh(self._preload)
        self.call_after_refresh(self._remember_first_frame)
        self.call_after_refresh(self._check_keymap)
        self.set_interval(OTHERS_INTERVAL, self._catch_up_with_others, name="others")

    def _animate_again(self, animation_level: AnimationLevel) -> None:
        self.animation_level = animation_level
        self._underline_in_place()

    def _underline_span(self) -> tuple[Underline, tuple[int, int]] | None:
        """The tab bar's underline, and where it goes: under the active tab as laid out. (Underline is private;
        Textual is pinned.)"""
        with contextlib.suppress(NoMatches):  # the app is leaving already
            tabs = self.tabbed.query_one(Tabs)
            if (tab := tabs.active_tab) is not None:
                return tabs.query_one(Underline), tab.virtual_region.shrink(tab.styles.gutter).column_span
        return None

    def _underline_in_place(self) -> None:
        # Once laid out, and at once: at a start, Textual's own move had no tab width to go by yet, and takes a
        # frame more.
        if (found := self._underline_span()) is not None:
            underline, span = found
            underline.highlight_start, underline.highlight_end = span

    async def on_unmount(self) -> None:
        try:
            if self._picture is not None and self.engine is not None:
                await self._keep_picture(self.engine, self._picture)
        finally:
            await self._exit_stack.aclose()

    async def _catch_up_with_others(self) -> None:
        """The chats open show what another process (the CLI, a second window, a LangChain app) wrote to them: the
        one in view within a second; one in the background when its title or newest message changed (a turn:
        its marks, unread) or it was deleted, and otherwise when shown; the conversations list, if open, lists
        again. A look reads nothing while nothing changed, unless a tab shows another process's reply streaming:
        it follows that reply to its end, and that process may have died, leaving no commit to see."""
        if self.engine is None:
            return
        store = self.engine.store
        tabs = self.tabs
        moved: set[int] = set()
        try:
            changed = await store.changed_elsewhere()
            if changed:
                open_ids = {tab.session_id for tab in tabs if tab.session_id is not None}
                marks = await store.session_marks(open_ids)
                moved = open_ids - marks.keys()  # deleted
                moved |= {session_id for session_id, mark in marks.items() if self._marks.get(session_id) != mark}
                self._marks = marks
        except (ChatError, ValueError):  # ValueError: the store closed under it (the terminal hung up)
            return
        self._again &= set(tabs)
        for tab in tabs:
            wanted = (changed and tab is self.active_tab) or tab.session_id in moved or tab.shows_foreign_stream
            if not (wanted or tab in self._again):
                continue
            if tab.catching_up:  # a slow read (a locked database) is not cut short: the next look starts one
                self._again.add(tab)
            else:
                self._again.discard(tab)
                tab.catch_up()
        if changed and len(self.screen_stack) > 1:  # a dialog is open: the browser, maybe
            from tui.screens.session_browser import SessionBrowser

            if isinstance(browser := self.screen, SessionBrowser):
                browser.refresh_rows()

    def _terminate(self) -> None:
        self._save_tabs()  # as a quit does
        self._take_picture()
        self.exit()

    def _hang_up(self) -> None:
        """The terminal is gone: save the live replies, then leave without Textual's shutdown, which waits on
        writes to that terminal and would keep the process alive, unseen, for good."""
        self._save_tabs()  # as a quit does: the window closed last is the one whose tabs come back

        async def save_and_leave() -> None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._exit_stack.aclose(), 10)
            os._exit(128 + signal.SIGHUP)

        self._hang_up_task = asyncio.ensure_future(save_and_leave())

    @work(thread=True, exit_on_error=False)
    def _preload(self) -> None:
        # The model client costs ~0.7 s to import and ~0.2 s to build: pay both now, not on the first send.
        preload_markdown()
        ChatEngine.preload()
        if self.engine is not None:
            with contextlib.suppress(ChatError):
                self.engine.chat_model(self.engine.settings.profile())
        self.preloaded = True

    # -- tabs ------------------------------------------------------------------------------------------------

    @property
    def tabbed(self) -> TabbedContent:
        return self.query_one("#tabs", TabbedContent)

    @property
    def tabs(self) -> list[ChatTab]:
        # Messages still in flight at exit (a reply that just ended) are handled after the screen is gone.
        with contextlib.suppress(NoMatches):
            return list(self.tabbed.query(ChatTab).results(ChatTab)) if self.is_mounted else []
        return []

    @property
    def active_tab(self) -> ChatTab | None:
        with contextlib.suppress(NoMatches):
            pane = self.tabbed.active_pane
            return pane if isinstance(pane, ChatTab) else None
        return None

    async def add_tab(self, session: Session | None = None, *, activate: bool = True) -> ChatTab:
        assert self.engine is not None
        tab = ChatTab(self.engine, id=f"chat-{self._next_tab}", session=session, cut=_cut_label)
        self._next_tab += 1
        await self.tabbed.add_pane(tab)
        if activate:
            self.activate(tab)
        return tab

    def activate(self, tab: ChatTab) -> None:
        assert tab.id is not None
        tab.focus_prompt()  # first: see ChatTab.focus_prompt
        self.tabbed.active = tab.id
        tab.unread = False
        # The label with the switch, not a layout and a frame of its own once its message arrives.
        self._label(tab)
        self.call_after_refresh(self._show_active_label)

    def _show_active_label(self) -> None:
        """Scroll the tab bar to the active tab's label. Textual does it as the tab is activated, but a label just
        added (a new tab, the tabs restored at start) has no width yet then, and it was left out of view."""
        if (tab := self.active_tab) is not None and tab.is_mounted:
            with contextlib.suppress(NoMatches):
                self.tabbed.get_tab(tab).scroll_visible(animate=False, force=True)

    def tab_for(self, session_id: int) -> ChatTab | None:
        return next((t for t in self.tabs if t.session_id == session_id), None)

    @on(TabbedContent.TabActivated)
    def _tab_activated(self, event: TabbedContent.TabActivated) -> None:
        # Only for the pane still active: focusing a pane that was left meanwhile would switch back to it.
        # Not at exit either: the pane's widgets may be gone.
        if isinstance(event.pane, ChatTab) and event.pane is self.active_tab and self.is_running:
            event.pane.unread = False
            event.pane.refresh_status()
            # Once the switch is on screen: it is the figure users feel, and marks changed elsewhere can wait.
            event.pane.set_timer(CATCH_UP_AFTER_SWITCH, event.pane.catch_up)
            event.pane.focus_prompt()
            self._save_tabs()

    @on(ChatTab.StateChanged)
    def _relabel(self, event: ChatTab.StateChanged) -> None:
        self._label(event.tab)

    @staticmethod
    def _label_of(tab: ChatTab) -> str:
        mark = "⋯ " if tab.streaming or tab.shows_foreign_stream else "● " if tab.unread else ""
        return mark + _cut_label(tab.title)

    def _label(self, tab: ChatTab) -> None:
        if not tab.is_mounted:
            return
        label = self._label_of(tab)
        with contextlib.suppress(Exception):  # the tab may be mid-removal
            content_tab = self.tabbed.get_tab(tab)
            if content_tab.label.plain != label:  # a new label costs a layout of the tab bar
                content_tab.label = Content(label)  # a title is the user's text, never markup
                if tab is self.active_tab:  # its new width may push it out of view
                    self.call_after_refresh(self._show_active_label)

    @on(ChatTab.ReplyEnded)
    def _reply_ended(self, event: ChatTab.ReplyEnded) -> None:
        # Not for a reply stopped as its chat was deleted elsewhere: the tab is a new chat now.
        if event.tab is not self.active_tab and event.tab.session is not None:
            event.tab.unread = True

    @on(ChatTab.SessionBound)
    def _session_bound(self) -> None:
        self._save_tabs()

    def _save_tabs(self) -> None:
        if self.engine is None or not self.is_running:  # at exit the tabs are gone, not closed: keep the saved list
            return
        tabs = self.tabs
        sessions = [t.session_id for t in tabs if t.session_id is not None]
        active = self.active_tab
        index = sessions.index(active.session_id) if active and active.session_id in sessions else 0
        self._write_state(OPEN_TABS_STATE, {"sessions": sessions, "active": index})

    def _write_state(self, key: str, value: object) -> None:
        # Tracked by the engine, which waits for it before closing: as a worker, a write queued behind others
        # (drafts, branches) at a quit was cancelled with the app's workers, and the tabs came back as before.
        assert self.engine is not None
        self.engine.track(self.engine.store.set_state(key, value))

    def _theme_to_use(self, saved: object) -> str:
        """The theme last picked in the app, unless the configured one (environment, config file) changed since
        the pick: the latest choice wins. An unknown name is reported, not fatal."""
        configured = self.settings.theme
        if configured not in self.available_themes:
            self._warned_at_start = True
            self.notify(
                f"There is no theme {configured!r}: choose one with ctrl+p, Theme.",
                title="Unknown theme",
                severity="warning",
                markup=False,
            )
            configured = DEFAULT_THEME
        if isinstance(saved, dict) and saved.get("over") == self.settings.theme:
            picked = saved.get("theme")
        elif isinstance(saved, str) and self.settings.theme == DEFAULT_THEME:
            picked = saved  # kept by an earlier version, with no record of what it overrode: not a configured one
        else:
            picked = None
        return picked if isinstance(picked, str) and picked in self.available_themes else configured

    def _theme_state(self) -> dict[str, str]:
        return {"theme": self.theme, "over": self.settings.theme}

    def _remember_theme(self, theme: object) -> None:
        self._write_state(THEME_STATE, self._theme_state())
        self.call_after_refresh(self._remember_first_frame)

    def _repaint_after_suspend(self, _app: object) -> None:
        # Back from ctrl+z (SIGTSTP, then fg): the terminal holds the shell's screen, yet Textual repaints only what
        # changed meanwhile, which left a blank screen with a line or two of the app on it.
        self.screen.refresh()

    def _check_keymap(self) -> None:
        """Say what in config.toml [keys] cannot work: Textual ignores an id that names no binding (a typo went
        unnoticed), and a key the prompt binds itself never reaches a chat or app binding while you type."""
        from tui.screens.help import binding_ids, prompt_clashes

        problems = []
        if unknown := sorted(set(self.settings.keys) - binding_ids()):
            problems.append(f"no binding has the id{'s' * (len(unknown) > 1)} {', '.join(unknown)} (F1 lists the ids)")
        problems += [
            f"{key} ({binding_id}) is taken by the prompt ({what}) while it has the focus"
            for binding_id, key, what in prompt_clashes(self.settings.keys)
        ]
        if problems:
            self._warned_at_start = True
            self.notify(
                "config.toml [keys]: " + "; ".join(problems),
                title="Key not remapped",
                severity="warning",
                timeout=15,
                markup=False,
            )

    def _remember_first_frame(self) -> None:
        colours = rendered_colours(self)
        if colours != self._first_frame_colours:
            self._first_frame_colours = colours
            self._write_state(COLOURS_STATE, colours)

    async def open_session(self, session_id: int, message_id: int | None = None) -> None:
        """Focus the tab already showing the session, or open it in a new tab; at ``message_id``'s branch."""
        assert self.engine is not None
        store = self.engine.store
        try:
            tab = self.tab_for(session_id)
            if tab is None:
                blank = self.active_tab if self.active_tab is not None and self.active_tab.is_blank else None
                tab = await self.add_tab(await store.get_session(session_id))
                if blank is not None:  # an untouched new chat gives its place up, as a browser's blank tab does
                    await self.tabbed.remove_pane(blank.id or "")
                    self._save_tabs()
            else:
                self.activate(tab)
            leaf = await store.newest_leaf_under(message_id) if message_id is not None else None
        except NotFound:
            self.notify("That chat is gone: it was deleted in another window (or by another program).")
            return
        except ChatError as error:  # a damaged page of the database
            self.notify(str(error), severity="error", markup=False)
            return
        if leaf is not None:
            await tab.load(session_id, leaf, select=message_id)

    # -- actions: one line each where they can be ----------------------------------------------------------------

    async def action_quit(self) -> None:
        # Two windows on one database share the saved tabs, each saving its own on every change: the window
        # quit last (or closed, or terminated) is the one whose tabs come back, not the one that changed a tab last.
        self._save_tabs()
        self._take_picture()
        await super().action_quit()

    def _take_picture(self) -> None:
        """Picture the screen for the next start's splash (tui/picture.py), if it is the one that start opens on:
        the tabs at rest (and each a saved chat, unless it is the only one), their labels as they read, the one in
        view at its end with no message selected and its prompt focused; no dialog, notification, selection or
        hover over them, the terminal focused, the tab bar not overflowing, no resize still to lay out; no warning
        at the start. It is kept only if no other process committed since the start (`_keep_picture`)."""
        tab, tabs, context = self.active_tab, self.tabs, self._start_context
        if context is None or tab is None or self._warned_at_start:
            return
        if len(self.screen_stack) > 1 or self._notifications:  # (private; Textual is pinned)
            return
        if self.screen.selections or self.hover_over is not None or not self.app_focus:
            return
        # Where a start scrolls an overflowing tab bar is its own. (Tabs' inner container; Textual is pinned.)
        if self.tabbed.query_one("#tabs-scroll").max_scroll_x:
            return
        if len(tabs) > 1 and any(t.session_id is None for t in tabs):  # a new chat's tab is not saved
            return
        if not (tab.opens_as_shown and all(t.at_rest for t in tabs) and self._settle_tab_bar()):
            return
        compositor = self.screen._compositor  # what Textual paints (private; Textual is pinned)
        if compositor.size != self.size:  # resized, not laid out again yet
            return
        tab.show_as_at_start()
        rows = rows_of(compositor.render_strips(), self.console.color_system or "")
        self._picture = _Picture(context, rows, self.size.width, new_chat=tab.session_id is None)

    def _settle_tab_bar(self) -> bool:
        """Put the underline under the active tab at once (it may be sliding there after a switch, a reply's start
        or end), if each label reads as it should: not a change still on its way, as a reply ends."""
        if any(self.tabbed.get_tab(t).label.plain != self._label_of(t) for t in self.tabs):
            return False
        if (found := self._underline_span()) is None:
            return False
        underline, span = found
        for attribute in ("highlight_start", "highlight_end"):
            self.animator.force_stop_animation(underline, attribute)
        underline.highlight_start, underline.highlight_end = span
        return True

    async def _keep_picture(self, engine: ChatEngine, picture: _Picture) -> None:
        """After the last writes (a draft, the open tabs), unless another process committed since the start: this
        window reads drafts, versions and the theme once, and a look's catch-up comes after it, so it cannot tell
        what such a commit changes at the next start."""
        await engine.settled()
        # A nicety: whatever goes wrong (the database locked, or closed under it by a hang-up), the quit goes on.
        with contextlib.suppress(Exception):
            if not picture.new_chat and await engine.store.get_draft(None):
                return  # a new chat was closed with text in it: the next start brings its tab back
            await engine.store.set_state_unless_changed_since(
                PICTURE_STATE,
                lambda probe: picture_value(picture.context, picture.rows, picture.width, probe),
                PROBE,
                since=self._version_at_start,
            )

    async def action_new_tab(self) -> None:
        await self.add_tab()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A dialog's text field keeps ctrl+w (delete a word): never close or switch the tab behind a modal screen.
        if action in ("close_tab", "goto_tab") and self.screen is not self.screen_stack[0]:
            return False
        # So does a prompt holding text, as in a shell: the tab would have closed with the unsent text. Shown
        # disabled meanwhile; the palette's "Close tab" still closes.
        if action == "close_tab" and isinstance(self.focused, PromptInput) and self.focused.text:
            return None
        return True

    async def action_close_tab(self) -> None:
        tab = self.active_tab
        if tab is None:
            return
        # Removing the pane cancels its stream worker; the engine saves the partial reply as interrupted.
        await self.tabbed.remove_pane(tab.id or "")
        if tab.made_for_setting and tab.session_id is not None and self.engine is not None:
            # A chat given a model or a system prompt, then closed unused, is not kept as an empty "New chat"
            # in the history. After the tab's draft is saved: its unsent text keeps the chat. Only a session this
            # tab made: one opened from the list may be another window's, or a LangChain app's, still to be used.
            self.engine.track(self.engine.store.delete_session_if_unused(tab.session_id))
        if not self.tabs:
            await self.add_tab()
        elif self.active_tab:
            self.activate(self.active_tab)
        self._save_tabs()

    def _cycle(self, step: int) -> None:
        tabs, active = self.tabs, self.active_tab
        if tabs and active in tabs:
            self.activate(tabs[(tabs.index(active) + step) % len(tabs)])

    def action_next_tab(self) -> None:
        self._cycle(1)

    def action_previous_tab(self) -> None:
        self._cycle(-1)

    def action_goto_tab(self, number: int) -> None:
        tabs = self.tabs
        if 0 < number <= len(tabs):
            self.activate(tabs[number - 1])

    async def _session_of_active(self) -> Session | None:
        """The active tab's session, made now if the tab has none yet (a rename or model choice before sending)."""
        tab = self.active_tab
        if tab is None or self.engine is None:
            return None
        if tab.session is None:
            tab.set_session(await self.engine.store.create_session(profile=self.settings.default_profile))
            tab.made_for_setting = True
            self._save_tabs()
            return tab.session
        # As saved now: the tab's copy predates its first prompt (the title), and other processes change it too.
        try:
            return await self.engine.store.get_session(tab.session.id)
        except ChatError as error:  # deleted meanwhile by another process
            self.notify(str(error), severity="error", markup=False)
            return None

    @work(exclusive=True, group="dialog")
    async def action_rename(self) -> None:
        from tui.screens.dialogs import TextPrompt

        session = await self._session_of_active()
        if session is None or self.engine is None:
            return
        title = await self.push_screen_wait(TextPrompt("Rename chat", session.title or ""))
        if title and title.strip():
            self._session_changed(await self.engine.store.update_session(session.id, title=title.strip()))

    @work(exclusive=True, group="dialog")
    async def action_system_prompt(self) -> None:
        from tui.screens.dialogs import TextPrompt

        session = await self._session_of_active()
        if session is None or self.engine is None:
            return
        dialog = TextPrompt("System prompt for this chat", session.system_prompt or "", multiline=True)
        text = await self.push_screen_wait(dialog)
        if text is not None:
            updated = await self.engine.store.update_session(session.id, system_prompt=text.strip() or None)
            self._session_changed(updated)
            self.notify("System prompt saved." if text.strip() else "System prompt cleared.")

    @work(exclusive=True, group="dialog")
    async def action_choose_model(self) -> None:
        from tui.screens.model_picker import ModelChoice, ModelPicker

        session = await self._session_of_active()
        if session is None or self.engine is None:
            return
        profile = await self.engine.profile_for(session.id)
        current = ModelChoice(profile.name, session.model)
        choice = await self.push_screen_wait(ModelPicker(self.engine, current=current))
        if choice is not None:
            updated = await self.engine.store.update_session(session.id, profile=choice.profile, model=choice.model)
            self._session_changed(updated)

    def _session_changed(self, session: Session) -> None:
        tab = self.tab_for(session.id)
        if tab is not None:
            tab.set_session(session)

    @work(exclusive=True, group="dialog")
    async def action_sessions(self) -> None:
        from tui.screens.session_browser import SessionBrowser

        assert self.engine is not None
        open_ids = {t.session_id for t in self.tabs if t.session_id is not None}
        choice = await self.push_screen_wait(SessionBrowser(self.engine.store, open_ids=open_ids))
        if choice is not None:
            await self.open_session(choice.session_id, choice.message_id)

    def on_session_browser_session_renamed(self, event: SessionBrowser.SessionRenamed) -> None:
        tab = self.tab_for(event.session_id)
        if tab is not None and tab.session is not None:
            tab.set_session(replace(tab.session, title=event.title))

    async def on_session_browser_session_deleted(self, event: SessionBrowser.SessionDeleted) -> None:
        # Closing the tab cancels its stream before anything else could write into the deleted session.
        tab = self.tab_for(event.session_id)
        if tab is not None:
            tab.discard_draft()
            await self.tabbed.remove_pane(tab.id or "")
            if not self.tabs:
                await self.add_tab()
            self._save_tabs()

    def action_help(self) -> None:
        from tui.screens.help import HelpScreen

        self.push_screen(HelpScreen(self.settings.keys))

    async def action_export(self) -> None:
        tab = self.active_tab
        if tab is None or tab.leaf_id is None or self.engine is None:  # before a session would be made for it
            self.notify("Nothing to export yet.", severity="warning")
            return
        session = await self._session_of_active()
        if session is None:
            return
        text = to_markdown(session, await self.engine.store.path(tab.leaf_id))
        try:
            # Off the event loop: a long conversation is megabytes, and the folder may be a slow or network one.
            target = await asyncio.to_thread(_write_new_file, f"chat-{session.id}", text)
        except OSError as error:  # the folder is gone, read-only, full
            self.notify(f"Could not export the chat: {error.strerror or error}", severity="error", markup=False)
            return
        self.notify(f"Exported to {target}", markup=False)

    def get_system_commands(self, screen: Screen) -> Iterable[SystemCommand]:
        # Textual's "Keys" opens its help panel: the focused widget's keys only, beside our F1 list of all of them.
        yield from (command for command in super().get_system_commands(screen) if command.title != "Keys")
        commands = [
            ("New chat", "Open a new chat tab", "new_tab"),
            ("Close tab", "Close this tab; a streaming reply stops, its text kept", "close_tab"),
            ("Next tab", "Go to the next tab", "next_tab"),
            ("Previous tab", "Go to the previous tab", "previous_tab"),
            ("Chats", "Browse and search past conversations", "sessions"),
            ("Rename chat", "Rename this conversation", "rename"),
            ("Choose model", "Pick the model profile for this chat", "choose_model"),
            ("System prompt", "Set this chat's system prompt", "system_prompt"),
            ("Export chat", "Save this branch as Markdown in the current folder", "export"),
        ]
        for title, help_text, action in commands:
            yield SystemCommand(title, with_keys(help_text, self, action), getattr(self, f"action_{action}"))
        if (tab := self.active_tab) is not None:
            stop = with_keys("Stop the reply streaming in this tab", tab, "cancel_reply")
            yield SystemCommand("Stop reply", stop, tab.action_cancel_reply)
            yield from tab.palette_commands()
        yield SystemCommand(
            "Keys", with_keys("List every key binding and its id for remapping", self, "help"), self.action_help
        )


def _cut_label(text: str, width: int = MAX_LABEL) -> str:
    """``text`` in at most ``width`` cells, ending with "…" if cut. Counted in cells: a CJK character takes two."""
    if cell_len(text) <= width:
        return text
    kept, used = [], 0
    for character in text:
        used += cell_len(character)
        if used > width - 1:
            break
        kept.append(character)
    return "".join(kept).rstrip() + "…"


def _write_new_file(stem: str, text: str) -> Path:
    """Write ``text`` to ``stem``.md in the current folder, or ``stem``-2.md and on: an earlier export is never
    overwritten."""
    folder = Path.cwd()
    for number in itertools.count(1):
        target = folder / (f"{stem}.md" if number == 1 else f"{stem}-{number}.md")
        try:
            with target.open("x", encoding="utf-8") as file:
                file.write(text)
        except FileExistsError:
            continue
        return target
    raise AssertionError("unreachable")
