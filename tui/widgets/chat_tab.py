"""One chat tab: bound to one session, owns its reply stream, shows its branch of the conversation.

The stream runs as an async worker of this tab; the reply itself lives in a task of the engine, so switching tabs
(which only hides the pane) changes nothing, and closing the tab cancels the worker, which interrupts the reply
and has the engine save its partial text. Every stream captures its session and message ids when it starts.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from functools import partial

from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.content import Content
from textual.message import Message as TextualMessage
from textual.reactive import reactive
from textual.widgets import Static, TabPane

from core.config import Profile
from core.engine import ChatEngine, ReplyDelta, ReplyFailed, ReplyFinished, ReplyUsage, Turn
from core.errors import ChatError, NotFound
from core.models import Message, Role, Session, Status
from tui.keys import bound_keys, with_keys
from tui.widgets.message_list import ChatEntry, MessageList
from tui.widgets.prompt_input import PromptInput
from tui.widgets.status_line import StatusLine

PAGE = 100
"""Messages loaded at a time: the newest first, earlier ones when the user scrolls to the top."""
PAGE_TO_FIRST = 1000
"""Messages loaded at a time on the way to the first one (Home): ~30 ms on the event loop to add (and render the
first screen of) here; ten steps take a 10,000-message chat to its start in ~0.7 s."""


@dataclass
class TurnStats:
    """What the status line shows about the latest reply of a tab."""

    started: float = 0.0
    first_token: float | None = None
    finished: float | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    chunks: int = 0

    @classmethod
    def stored(cls, message: Message | None) -> TurnStats:
        """The figures a saved reply keeps (its token counts): what a chat opened shows for its last reply."""
        if message is None or message.role is not Role.ASSISTANT:
            return cls()
        return cls(prompt_tokens=message.prompt_tokens, completion_tokens=message.completion_tokens)

    def describe(self) -> str:
        parts = []
        if self.prompt_tokens is not None or self.completion_tokens is not None:
            parts.append(f"↑{self.prompt_tokens or 0} ↓{self.completion_tokens or 0} tokens")
        if self.first_token is not None:
            parts.append(f"first token {self.first_token - self.started:.2f} s")
            end = self.finished or time.monotonic()
            tokens = self.completion_tokens or self.chunks
            if end > self.first_token and tokens > 1:
                # The first token came at first_token: the time after it holds the other tokens.
                parts.append(f"{(tokens - 1) / (end - self.first_token):.0f} tok/s")
        return " · ".join(parts)


@dataclass(frozen=True, slots=True)
class _Branch:
    """A branch of a session as read for showing: its last page of messages."""

    session: Session
    leaf_id: int | None
    messages: list[Message]
    entries: list[ChatEntry]


class ChatTab(TabPane):
    """A tab pane holding one conversation: messages, prompt and status line."""

    BINDINGS = [
        # Not in the Footer: the status line names its key while a reply streams, and a key that comes and goes
        # with streaming would rebuild the Footer on every switch between a streaming tab and an idle one.
        Binding("escape", "cancel_reply", "Stop reply", show=False, id="tab.cancel_reply"),
        # Works from the prompt, where the focus nearly always is (r in the message list needs the reply selected).
        Binding("ctrl+r", "retry_last", "Retry", id="tab.retry_last"),
    ]

    streaming: reactive[bool] = reactive(False, bindings=True)
    """A reply is streaming in this tab."""
    unread: reactive[bool] = reactive(False)
    """A reply finished while the tab was hidden."""
    title: reactive[str] = reactive("New chat")

    class StateChanged(TextualMessage):
        """Title, streaming or unread changed: the app relabels the tab."""

        def __init__(self, tab: ChatTab) -> None:
            super().__init__()
            self.tab = tab

    class SessionBound(TextualMessage):
        """The tab got (or changed) its session: the app saves the open tabs."""

        def __init__(self, tab: ChatTab) -> None:
            super().__init__()
            self.tab = tab

    class ReplyEnded(TextualMessage):
        def __init__(self, tab: ChatTab, message: Message) -> None:
            super().__init__()
            self.tab = tab
            self.message = message

    def __init__(
        self, engine: ChatEngine, *, id: str, session: Session | None = None, cut: Callable[[str], str] = str
    ) -> None:
        # Its label as the app writes it from the start (``cut``): a label changed later moves the tab bar's
        # underline (Textual animates it), and at a start that would undo the first frame the splash drew.
        super().__init__(Content(cut(session.display_title if session else "New chat")), id=id)  # not markup
        self.engine = engine
        self.session = session
        self.leaf_id: int | None = None
        self._remembered_leaf: int | None = None
        """The `leaf_id` last saved as this session's branch (see `_remember_branch`)."""
        self.made_for_setting = False
        """The session was made here for a setting (model, system prompt) before any message: if the tab closes
        with the session still unused, the session goes too."""
        self.turn: Turn | None = None
        self._live_text: list[str] = []
        self.stats = TurnStats()
        self.set_reactive(ChatTab.title, session.display_title if session else "New chat")
        self._prompt = PromptInput(placeholder="Message… (Enter to send, ctrl+j for a new line)")
        self._draft = ""
        """The unsent text saved for this chat, as last read or written."""
        self._keep_draft = True
        self._no_key = False
        """The banner says the chat's profile has no API key."""
        self._asked_beside: str | None = None
        """A prompt refused while another process streams into this chat: sent beside that turn if sent again."""
        self._loaded = False
        """The chat the tab opened with has been read (`catch_up` waits for it: it would read it again)."""
        self.catching_up = 0
        """Catch-ups reading now: the app's clock does not cut one short, it starts the next one after it."""

    @property
    def session_id(self) -> int | None:
        return self.session.id if self.session else None

    @property
    def is_blank(self) -> bool:
        """A new chat nothing was typed or sent in."""
        return self.session is None and self.turn is None and not self._prompt.text

    def compose(self) -> ComposeResult:
        yield Static("Ask anything. Enter sends · ctrl+j adds a line · F1 lists every key.", classes="empty-hint")
        retry = bound_keys(self, "retry_last", as_footer=False)  # none if remapped away
        yield MessageList(retry_key=retry[0] if retry else None)
        yield Static("", classes="banner")
        yield self._prompt
        yield StatusLine(classes="status-line")

    async def on_mount(self) -> None:
        if self.session is not None:
            await self.load(self.session.id)
        else:
            self._set_empty(True)
        self._loaded = True
        await self._restore_draft()
        self._check_key()
        self.refresh_status()

    def on_unmount(self) -> None:
        # Unsent text outlives the tab (closed, or the app quitting): it is back when the chat is opened again.
        # Tracked, so that the engine waits for the write before it closes.
        text = self._prompt.text
        if self._keep_draft and text != self._draft:
            self.engine.track(self.engine.store.set_draft(self.session_id, text))

    async def _restore_draft(self) -> None:
        draft = await self.engine.store.get_draft(self.session_id)
        if not draft.strip():
            return
        if not self._prompt.text:
            self._prompt.load_text(draft)
            self._prompt.move_cursor(self._prompt.document.end)
        self._draft = draft
        if self.session_id is None:
            self._forget_draft()  # a new chat's draft goes to one new tab only

    def _forget_draft(self) -> None:
        """The saved draft was sent (or taken by a tab): a crash before the next save must not bring it back."""
        if self._draft:
            self.engine.track(self.engine.store.set_draft(self.session_id, ""))
            self._draft = ""

    def discard_draft(self) -> None:
        """Save nothing when the tab goes (its session was deleted)."""
        self._keep_draft = False

    def _shown_profile(self) -> Profile:
        """The profile of the chat as last read (a profile gone from the configuration: the default one)."""
        settings = self.engine.settings
        return settings.profile(
            self.session.profile if self.session and self.session.profile in settings.profiles else None
        )

    def _check_key(self) -> None:
        """Say at once, not at the next send, that the chat's profile has no API key (and what to do); take it back
        when another profile is chosen (here or in another window)."""
        try:
            self._shown_profile().resolve_key(self.engine.settings.environ)
        except ChatError as error:
            self.show_banner(str(error))
            self._no_key = True
            return
        if self._no_key:
            self.show_banner("")
        self._no_key = False

    async def _profile(self) -> Profile:
        if self.session is None:
            return self.engine.settings.profile()
        return await self.engine.profile_for(self.session.id)

    # -- reactive → CSS and labels --------------------------------------------------------------------------

    def watch_streaming(self, streaming: bool) -> None:
        self.set_class(streaming, "-streaming")
        # The prompt's cursor holds still while the reply streams: each blink is a frame of its own, and at
        # 200 tokens/s the blinking cost a sixth of the app's CPU.
        if self.is_mounted:
            self._prompt.hold_cursor(streaming)
        self.post_message(self.StateChanged(self))

    def watch_unread(self) -> None:
        self.post_message(self.StateChanged(self))

    def watch_title(self) -> None:
        self.post_message(self.StateChanged(self))

    def _set_empty(self, empty: bool) -> None:
        self.set_class(empty, "-empty")

    def show_banner(self, text: str) -> None:
        """A plain-words problem with what to do (missing key, bad profile) above the prompt."""
        self.query_one(".banner", Static).update(Content(text))  # errors quote URLs and names: not markup
        self.set_class(bool(text), "-banner")

    def focus_prompt(self) -> None:
        # At once, not later like Widget.focus: if the pane being hidden still held the focus, Textual would move
        # it to a sibling in that pane, and the TabbedContent would switch back to it.
        self._prompt.screen.set_focus(self._prompt)

    # -- loading ---------------------------------------------------------------------------------------------

    async def _entries(self, messages: list[Message]) -> list[ChatEntry]:
        counts = await self.engine.store.sibling_counts(m.id for m in messages)
        turn = self.turn
        entries = []
        for message in messages:
            if turn is not None and message.id == turn.reply.id:
                # The row was read while the reply streamed: the text this tab holds is ahead of it, and if the
                # reply ended since (a fast one, while a new branch loaded), the row as it ended is.
                message = turn.result or replace(message, content="".join(self._live_text))
            index, count = counts.get(message.id, (1, 1))
            entries.append(ChatEntry(message, index, count))
        return entries

    async def load(self, session_id: int, leaf_id: int | None = None, *, select: int | None = None) -> None:
        """Show the session's branch ending at ``leaf_id`` (default: its newest message), newest page first.

        A read that fails (a damaged page of the database) is told in the banner; the tab stays as it was.
        """
        try:
            await self._load(session_id, leaf_id, select=select)
        except ChatError as error:
            self.show_banner(str(error))

    async def _load(self, session_id: int, leaf_id: int | None, *, select: int | None) -> None:
        self._show(await self._read(session_id, leaf_id), select=select)

    async def _read(self, session_id: int, leaf_id: int | None) -> _Branch:
        """What `_show` shows of the session's branch ending at ``leaf_id`` (default: the one shown last)."""
        store = self.engine.store
        session = await store.get_session(session_id)
        if leaf_id is None:
            leaf_id = await self._branch_shown_last(session_id)
        if leaf_id is None:
            leaf_id = await store.latest_leaf(session_id)
        messages = await store.path(leaf_id, limit=PAGE) if leaf_id is not None else []
        return _Branch(session, leaf_id, messages, await self._entries(messages))

    def _show(self, branch: _Branch, *, select: int | None = None) -> None:
        """Show what `_read` read, at once: every read comes first, so a load cut short (cancelled, failed)
        leaves the tab as it was, its branch and the messages shown still one."""
        session, messages = branch.session, branch.messages
        self.session = session
        self.title = session.display_title
        self.leaf_id = branch.leaf_id
        self._remember_branch()
        if self.turn is None or self.turn.done:  # else the live figures of the reply streaming into this branch
            self.stats = TurnStats.stored(messages[-1] if messages else None)
        message_list = self.query_one(MessageList)
        message_list.set_entries(branch.entries, has_earlier=bool(messages and messages[0].parent_id))
        if select is not None:
            message_list.selected_id = select
        self._set_empty(not messages)
        self.refresh_status()
        self.refresh_bindings()  # Retry shows when the last reply failed
        self.post_message(self.SessionBound(self))

    async def _branch_shown_last(self, session_id: int) -> int | None:
        """The end of the branch this session was shown on last (here or in a tab since closed), grown by any
        messages added to it since; None if never saved, or gone (that branch deleted)."""
        saved = await self.engine.store.get_branch(session_id)
        if saved is None:
            return None
        with contextlib.suppress(NotFound):
            if (await self.engine.store.get_message(saved)).session_id == session_id:
                self._remembered_leaf = saved  # saved already: no write unless it grew
                return await self.engine.store.newest_leaf_under(saved)
        return None

    def _remember_branch(self) -> None:
        """Save which branch is shown: a reopened chat shows it again, not whichever branch grew last (a
        regenerated reply's, another process's turn)."""
        if self.session is not None and self.leaf_id is not None and self.leaf_id != self._remembered_leaf:
            self._remembered_leaf = self.leaf_id
            self.engine.track(self.engine.store.set_branch(self.session.id, self.leaf_id))

    @on(MessageList.LoadEarlierRequested)
    async def _load_earlier(self, event: MessageList.LoadEarlierRequested) -> None:
        store = self.engine.store
        try:
            first = await store.get_message(event.message_id)
            if first.parent_id is None:
                return
            messages = await store.path(first.parent_id, limit=PAGE_TO_FIRST if event.to_first else PAGE)
            entries = await self._entries(messages)
        except ChatError as error:
            self.show_banner(str(error))
            self.query_one(MessageList).earlier_failed()
            return
        self.query_one(MessageList).prepend_entries(
            entries, has_earlier=bool(messages and messages[0].parent_id), before=event.message_id
        )

    # -- sending ---------------------------------------------------------------------------------------------

    def _refuse_while_streaming(self) -> bool:
        if self.turn is not None and not self.turn.done:
            self.notify("A reply is still streaming in this tab: press Esc to stop it first.", severity="warning")
            return True
        return False

    @on(PromptInput.Submitted)
    async def _submitted(self, event: PromptInput.Submitted) -> None:
        event.stop()
        if self._refuse_while_streaming():
            return
        beside = self.shows_foreign_stream
        if beside and self._asked_beside != event.text:
            # Sent after it, the prompt would follow a reply its request never included (what was saved of it so
            # far). Beside it, it starts a branch of its own: the way out when that process hangs.
            self._asked_beside = event.text
            self.notify(
                "Another window (or the CLI) is streaming a reply into this chat: wait for its end, "
                "or press Enter again to send yours beside it, as a new branch.",
                severity="warning",
            )
            return
        self._asked_beside = None
        if await self.send(event.text, beside_last_turn=beside):
            event.prompt.accept(event.typed)
            self._forget_draft()

    async def send(self, text: str, *, beside_last_turn: bool = False) -> bool:
        """Send ``text`` after the displayed branch (or beside its last turn: a branch of its own). False when it
        could not be sent (the banner says why)."""
        store = self.engine.store
        try:
            if self.session is None:
                # A missing key fails here, before an empty session is saved (the engine checks it again).
                (await self._profile()).resolve_key(self.engine.settings.environ)
                profile = self.engine.settings.default_profile
                self.session = await store.create_session(profile=profile)
                self.post_message(self.SessionBound(self))
            session, parent_id = self.session, self.leaf_id
            if beside_last_turn and parent_id is not None:
                question = (await store.get_message(parent_id)).parent_id
                parent_id = (await store.get_message(question)).parent_id if question else None
            turn = await self.engine.send(session.id, text, parent_id=parent_id)
            if session.title is None:  # the first prompt named the session
                session = await store.get_session(session.id)
        except ChatError as error:
            if self.session is not None:  # else the banner says the chat was deleted
                self.show_banner(str(error))
            return False
        if self.session is None:  # deleted elsewhere meanwhile: the tab is a new chat, the text stays in the box
            turn.cancel()
            return False
        self.show_banner("")
        if self.session.id == session.id and self.session.title is None:
            self.session = session
            self.title = session.display_title
        if self.leaf_id != parent_id:
            # Sent beside the last turn; or another process's turn was shown while the prompt was saved (the prompt
            # answers what was on screen when it was typed, so it is a branch beside that turn): show that branch.
            await self._start_branch(turn)
            return True
        message_list = self.query_one(MessageList)
        assert turn.user is not None
        message_list.action_follow_end()  # scrolled up to reread something: the new prompt and its reply show anyway
        message_list.append_entry(ChatEntry(turn.user))
        message_list.append_entry(ChatEntry(turn.reply))
        self._set_empty(False)
        self._start(turn)
        return True

    async def _start_branch(self, turn: Turn) -> None:
        """A regenerated or edited reply lives on a new branch: show that branch, then stream into it."""
        self._start(turn)
        await self.load(turn.session_id, turn.reply.id)

    def _start(self, turn: Turn) -> None:
        self.turn = turn
        self.leaf_id = turn.reply.id
        self._remember_branch()
        self._live_text = []
        self.stats = TurnStats(started=time.monotonic())
        self.streaming = True
        self.refresh_status()  # "streaming…" at once; figures follow every second
        self._stream(turn)

    @work(group="stream", exit_on_error=False)
    async def _stream(self, turn: Turn) -> None:
        # Ids captured now: nothing below looks at which tab is active.
        reply_id = turn.reply.id
        message_list = self.query_one(MessageList)
        status_timer = self.set_interval(1.0, self.refresh_status)
        try:
            async for event in turn:
                if isinstance(event, ReplyDelta):
                    if self.stats.first_token is None:
                        self.stats.first_token = time.monotonic()
                        self.refresh_status()
                    self.stats.chunks += 1
                    self._live_text.append(event.text)
                    message_list.append_text(reply_id, event.text)
                elif isinstance(event, ReplyUsage):
                    self.stats.prompt_tokens = event.prompt_tokens
                    self.stats.completion_tokens = event.completion_tokens
                elif isinstance(event, ReplyFinished | ReplyFailed):
                    self._finish(event.message)
        finally:
            status_timer.stop()

    def _finish(self, message: Message) -> None:
        self.stats.finished = time.monotonic()
        message_list = self.query_one(MessageList)
        entry = message_list.entry(message.id)
        if entry is not None:
            message_list.update_entry(replace(entry, message=message))
        self.streaming = False
        self.refresh_status()
        self.post_message(self.ReplyEnded(self, message))
        self.catch_up()

    @property
    def shows_foreign_stream(self) -> bool:
        """The branch shown ends with a reply another process is streaming (as last read)."""
        lists = self.query(MessageList)
        last = lists.first().last_entry if lists else None
        if last is None or last.message.status is not Status.STREAMING:
            return False
        return self.turn is None or last.message.id != self.turn.reply.id

    @property
    def at_rest(self) -> bool:
        """Nothing in flight or passing shows in the tab (a reply, a read, an unread mark, a banner): reopened, at
        the next start, it looks the same."""
        return not (self.streaming or self.unread or self.catching_up or self.shows_foreign_stream) and (
            not self.has_class("-banner")
        )

    @property
    def opens_as_shown(self) -> bool:
        """In view now, the tab looks as the next start will show it: at rest, its chat at the end with no message
        selected, its prompt focused with the cursor after the text (a draft comes back so; one of blanks does
        not come back)."""
        prompt, messages = self._prompt, self.query_one(MessageList)
        return (
            self.at_rest
            and prompt.has_focus
            and messages.following
            and messages.selected_id is None
            and prompt.selection.is_empty
            and prompt.cursor_location == prompt.document.end
            and (not prompt.text or bool(prompt.text.strip()))
        )

    def show_as_at_start(self) -> None:
        """Look as the next start will show the tab: the latest reply's timings are this run's only (the tokens
        are kept with it), the cursor is on (Textual's first frame draws it)."""
        last = self.query_one(MessageList).last_entry
        self.stats = TurnStats.stored(last.message if last else None)
        self.refresh_status()
        self._prompt.hold_cursor(True)

    @work(group="catch-up", exclusive=True, exit_on_error=False)
    async def catch_up(self) -> None:
        """Show what other processes (the CLI, a LangChain app, a second window) wrote to this chat since it was
        read: messages added to the branch shown, a reply they stream there and its end, a new title, versions
        marks ("‹ 1/2 ›") beside the newest messages; the chat deleted or cleared."""
        lists = self.query(MessageList)
        if not lists or self.session is None or not self._loaded:  # being removed; a new chat; still opening
            return
        message_list = lists.first()
        store = self.engine.store
        session, leaf_id, turn = self.session, self.leaf_id, self.turn
        # While this tab's own reply streams (or has just ended, its figures not taken yet) on the branch shown,
        # that branch is known: only the title and the marks.
        live = turn is not None and (not turn.done or self.streaming)
        own_reply = live and turn is not None and leaf_id == turn.reply.id
        tail = message_list.last_entries(PAGE)
        entries: list[ChatEntry] = []
        newest = leaf_id
        reread: _Branch | None = None
        self.catching_up += 1
        try:
            try:
                fresh = await store.get_session(session.id)
            except NotFound:
                if self.session is not session:
                    return
                if live and turn is not None:
                    turn.cancel()  # its last save fails: its end comes back here
                else:
                    self._session_gone()
                return
            if own_reply and turn is not None:
                try:
                    await store.get_message(turn.reply.id)
                except NotFound:  # the chat was cleared: a reply no longer saved streams for nothing
                    turn.cancel()
                    return
            else:
                streams = any(entry.message.status is Status.STREAMING for entry in tail)
                if streams:
                    await store.recover_interrupted()  # the process streaming it may have died (killed, crashed)
                if leaf_id is None:
                    newest = await store.latest_leaf(session.id)
                else:
                    newest = await store.newest_leaf_under(leaf_id)  # None: that branch was deleted
                    if newest is not None and (newest != leaf_id or streams):
                        messages = await store.path(newest, limit=PAGE)
                        if newest != leaf_id and leaf_id not in {message.id for message in messages}:
                            # More than a page came (a LangChain app's import): all of it up to a bound, so
                            # that a reader scrolled up stays where they are.
                            messages = await store.path(newest, limit=PAGE_TO_FIRST)
                        entries = await self._entries(messages)
                if newest != leaf_id and (newest is None or leaf_id not in {entry.message.id for entry in entries}):
                    # The chat showed none, or the branch shown is gone, or more was added to it than the bound:
                    # read as if opened again (the branch shown last, or the newest), or from the newest.
                    reread = await self._read(session.id, None if leaf_id is None else newest)
            # The entries read carry their marks.
            counts = {} if entries or reread else await store.sibling_counts(entry.message.id for entry in tail)
        except ChatError:  # a damaged page: a read failing here changes nothing shown
            return
        finally:
            self.catching_up -= 1
        if self.leaf_id != leaf_id or self.turn is not turn or self.session is not session:
            return  # the tab moved on meanwhile (a send, another branch, a rename here): what was read may not fit
        if reread is not None:
            shown = {entry.message.id: entry.message.status for entry in tail}
            self._show(reread)
            if newest is None and not reread.messages:
                self.show_banner("This chat was cleared in another window (or by another program).")
            last = reread.messages[-1] if reread.messages else None
            if last is not None and last.role is Role.ASSISTANT and last.status is not Status.STREAMING:
                if shown.get(last.id, Status.STREAMING) is Status.STREAMING:
                    self.post_message(self.ReplyEnded(self, last))  # unread, if the tab is in the background
            self.post_message(self.StateChanged(self))
            return
        if fresh != session:
            self.session = fresh
            self.title = fresh.display_title
            self._check_key()
        changed, ended, added = False, None, []
        ids = [entry.message.id for entry in entries]
        first_new = ids.index(leaf_id) + 1 if leaf_id in ids else 0
        for position, entry in enumerate(entries):
            if (shown_entry := message_list.entry(entry.message.id)) is None:
                if position < first_new:
                    continue  # above the messages loaded: they come when the reader scrolls up
                added.append(entry)
            elif shown_entry != entry:
                message_list.update_entry(entry)
            else:
                continue
            changed = True
            done = entry.message.role is Role.ASSISTANT and entry.message.status is not Status.STREAMING
            if done and (shown_entry is None or shown_entry.message.status is Status.STREAMING):
                ended = entry.message
        message_list.append_entries(added)
        for message_id, (index, count) in counts.items():
            shown_entry = message_list.entry(message_id)
            if shown_entry is not None and (shown_entry.sibling_index, shown_entry.sibling_count) != (index, count):
                message_list.update_entry(replace(shown_entry, sibling_index=index, sibling_count=count))
        if changed:
            self.post_message(self.StateChanged(self))  # the label's streaming mark, for a reply streamed elsewhere
            if newest != leaf_id:
                self.leaf_id = newest
                self._remember_branch()
                self._set_empty(False)
            if not live:  # else the figures of this tab's reply, streaming on another branch
                self.stats = TurnStats.stored(entries[-1].message)
            self.refresh_status()
            self.refresh_bindings()  # Retry shows when the last reply failed
        if ended is not None:
            self.post_message(self.ReplyEnded(self, ended))  # unread, if the tab is in the background

    def _session_gone(self) -> None:
        """The chat was deleted elsewhere: the tab becomes a new chat, and what was typed in it stays."""
        self.session = None
        self.leaf_id = self._remembered_leaf = None
        self.made_for_setting = False
        self._asked_beside = None
        self.unread = False  # a reply of this tab's, stopped as the chat went
        if self.turn is not None and self.turn.done:
            self.turn = None  # an untouched new chat again: opening a chat from the list takes its place
        self._draft = ""
        self.title = "New chat"
        self.stats = TurnStats()
        self.query_one(MessageList).set_entries([])
        self._set_empty(True)
        self.show_banner("This chat was deleted in another window (or by another program): this tab is a new chat.")
        self.refresh_status()
        self.refresh_bindings()
        self.post_message(self.SessionBound(self))  # the open tabs saved no longer name it

    def action_cancel_reply(self) -> None:
        if self.turn is not None and not self.turn.done:
            self.turn.cancel()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "cancel_reply":
            return self.streaming
        if action == "retry_last":
            return not self.streaming and self._failed_reply() is not None
        return True

    def _failed_reply(self) -> Message | None:
        """The last reply shown, if it failed or was interrupted."""
        lists = self.query(MessageList)
        entry = lists.first().last_entry if lists else None
        last = entry.message if entry is not None else None
        if last is not None and last.role is Role.ASSISTANT and last.status in (Status.ERROR, Status.INTERRUPTED):
            return last
        return None

    async def action_retry_last(self) -> None:
        if (failed := self._failed_reply()) is not None:
            await self._branch_action(failed.id, regenerate=True)

    def palette_commands(self) -> Iterator[SystemCommand]:
        """The message actions for the command palette, offered where they apply: like their keys among the
        messages, to the selected message, else the last one (Edit: the last prompt)."""
        messages = self.query_one(MessageList)
        if self.check_action("retry_last", ()):
            retry = with_keys("Ask again for the failed or interrupted reply", self, "retry_last")
            yield SystemCommand("Retry reply", retry, self.action_retry_last)
        offered = [
            ("copy", "Copy message", "Copy the selected or last message to the clipboard", messages.action_copy),
            (
                "copy_code",
                "Copy code block",
                "Copy the selected or last message's code; again for the next",
                messages.action_copy_code,
            ),
            (
                "regenerate",
                "Regenerate reply",
                "A new version of the selected or last reply, beside it",
                messages.action_regenerate,
            ),
            (
                "edit",
                "Edit prompt",
                "Edit the selected or last prompt and send it as a new version",
                messages.action_edit,
            ),
            (
                "sibling(-1)",
                "Previous version",
                "Show the previous version of the selected or last message",
                partial(messages.action_sibling, -1),
            ),
            (
                "sibling(1)",
                "Next version",
                "Show the next version of the selected or last message",
                partial(messages.action_sibling, 1),
            ),
        ]
        for action, title, help_text, callback in offered:  # an action as bound: its name, then any arguments
            if messages.check_action(action.partition("(")[0], ()):
                yield SystemCommand(title, with_keys(help_text, messages, action), callback)

    # -- branches --------------------------------------------------------------------------------------------

    async def _branch_action(self, message_id: int, *, regenerate: bool, text: str | None = None) -> None:
        if self._refuse_while_streaming():
            return
        try:
            if regenerate:
                turn = await self.engine.regenerate(message_id)
            else:
                assert text is not None
                turn = await self.engine.edit(message_id, text)
        except ChatError as error:
            if text is not None:  # an edit: the text typed is not lost with it
                self._keep_in_prompt(text)
            if self.session is not None:  # else the banner says the chat was deleted
                self.show_banner(str(error))
            return
        await self._start_branch(turn)

    def _keep_in_prompt(self, text: str) -> None:
        """Put text that could not be sent in the prompt, after what is typed there."""
        typed = self._prompt.text.rstrip()
        self._prompt.load_text(f"{typed}\n\n{text}" if typed else text)
        self._prompt.move_cursor(self._prompt.document.end)

    @on(MessageList.RegenerateRequested)
    async def _regenerate(self, event: MessageList.RegenerateRequested) -> None:
        await self._branch_action(event.message_id, regenerate=True)

    @on(MessageList.RetryRequested)
    async def _retry(self, event: MessageList.RetryRequested) -> None:
        await self._branch_action(event.message_id, regenerate=True)

    @on(MessageList.EditRequested)
    def _edit(self, event: MessageList.EditRequested) -> None:
        from tui.screens.dialogs import TextPrompt

        entry = self.query_one(MessageList).entry(event.message_id)
        if entry is None or self._refuse_while_streaming():  # refused now, not after the edit is written
            return

        async def resend(text: str | None) -> None:
            if text and text.strip() and text != entry.message.content:
                await self._branch_action(event.message_id, regenerate=False, text=text)

        dialog = TextPrompt("Edit and resend", entry.message.content, multiline=True, accept_label="Send")
        self.app.push_screen(dialog, resend)

    @on(MessageList.SiblingRequested)
    async def _sibling(self, event: MessageList.SiblingRequested) -> None:
        store = self.engine.store
        try:
            siblings = await store.siblings(event.message_id)
            position = siblings.index(event.message_id) + event.direction
            if self.session is None or not 0 <= position < len(siblings):
                return
            leaf = await store.newest_leaf_under(siblings[position])
        except ChatError as error:
            self.show_banner(str(error))
            return
        await self.load(self.session.id, leaf, select=siblings[position])

    # -- status ----------------------------------------------------------------------------------------------

    def refresh_status(self) -> None:
        if not self.is_mounted or not self.display:  # a hidden tab is brought up to date when shown
            return
        profile = self._shown_profile()
        model = self.session.model if self.session and self.session.model else profile.model
        parts = [f"{profile.name} · {model}"]
        parts.append(self.stats.describe())
        if self.streaming:
            parts.append(f"streaming… ({self._stop_key()} stops)")
        elif self.shows_foreign_stream:
            parts.append("streaming elsewhere…")
        self.query_one(StatusLine).text = " │ ".join(p for p in parts if p)

    def _stop_key(self) -> str:
        """The key that stops the reply, as remapped in config.toml (written as the retry key in marks is)."""
        keys = bound_keys(self, "cancel_reply", as_footer=False)
        return "Esc" if not keys or keys[0] == "escape" else keys[0]

    def set_session(self, session: Session) -> None:
        """Session data changed elsewhere (rename, model, system prompt)."""
        self.session = session
        self.title = session.display_title
        self._check_key()
        self.refresh_status()
