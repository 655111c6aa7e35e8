"""The conversation view of one chat tab: a line-API ScrollView that serves cached, pre-rendered lines.

Messages are rendered with Rich (``Markdown`` for replies, wrapped ``Text`` for prompts) into Strips once per
width; a streaming reply keeps its finished Markdown blocks as lines and re-renders only the live tail at a
bounded rate. Only messages near the viewport are rendered; the others carry estimated heights.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from time import monotonic
from typing import ClassVar

from rich.cells import cell_len
from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from textual import events
from textual import message as textual_message
from textual.binding import Binding, BindingType
from textual.geometry import Offset, Region, Size
from textual.reactive import reactive
from textual.screen import Screen
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip
from textual.timer import Timer
from textual.widget import Widget
from textual.worker import Worker, WorkerState

from core.models import Message, Role, Status
from tui.widgets.markdown_render import (
    BlockScanner,
    ReplyConsole,
    code_blocks,
    end_start,
    estimate_rows,
    inert_text,
    render_end,
    render_markdown,
    render_plain,
)

__all__ = ["ChatEntry", "MessageList"]

FLUSH_INTERVAL = 0.15
"""Seconds between re-renders of a streaming tail (under 7 Hz): the tail is the only per-delta render."""
CODE_PIECE_LINES = 4
"""Complete lines of an open code block rendered as one piece (see `MessageList._render_open_fence`)."""
PARTIAL_CHARS = 3000
"""New text beyond which the last message is first rendered from its end only (see `_render_item`)."""
SETTLE_CHARS = 3000
"""Length beyond which a reply finishing in view gets its one-shot render from a thread (see `_settle`)."""
PARTIAL_MARGIN = 4
"""Rows beyond the view's height that a partial render covers (see `_render_item`)."""
SETTLE_GROUP = "settle"
"""Worker group of the threads making a finished reply's one-shot render (see `MessageList._settle`)."""
GUTTER = "▌"
GUTTER_WIDTH = 2
"""The gutter and the space after it, before every row's text."""
ROWS_PER_MESSAGE = 1 << 24
"""Text selection addresses row r of message m as y = m * ROWS_PER_MESSAGE + r: ids grow along a conversation's
path, so the order holds, and no address moves when earlier messages load or a reply above grows."""
STREAMING_MARK = "▍"
INTERRUPTED_NOTE = "⏸ interrupted, partial reply kept"
INTERRUPTED_EMPTY_NOTE = "⏸ interrupted before the first word"


@dataclass(frozen=True, slots=True)
class ChatEntry:
    """What the tab hands down for each message on the displayed path."""

    message: Message
    sibling_index: int = 1
    """1-based position among the message's siblings (same parent, same role)."""
    sibling_count: int = 1


@dataclass(frozen=True, slots=True)
class _Styles:
    """Rich styles resolved from the component classes, cached until the CSS or theme changes."""

    base: Style
    user: Style
    assistant: Style
    selected: Style
    error: Style
    status: Style
    meta: Style


class _Item:
    """One displayed message: its text, its rendered lines and where it sits in the virtual space."""

    __slots__ = (
        "entry",
        "_parts",
        "width",
        "dirty",
        "body",
        "footer",
        "height",
        "top",
        "rows",
        "rows_generation",
        "scanner",
        "done_end",
        "done_body",
        "done_width",
        "code_start",
        "code_end",
        "code_lines",
        "code_pad",
        "rendered_length",
        "partial",
        "placeholder",
        "prerendered",
        "settling",
        "final",
    )

    def __init__(self, entry: ChatEntry) -> None:
        self.entry = entry
        self._parts: list[str] = [entry.message.content]
        self.width = 0
        """Width `body` was rendered for; 0 until rendered."""
        self.dirty = True
        """The text or the entry changed since `body` was rendered."""
        self.body: list[Strip] = []
        self.footer: list[Strip] = []
        """Status lines below the body (plain strips; styled when composed)."""
        self.height = 0
        """Rows in the virtual space: header, body, footer, separator. An estimate until rendered."""
        self.top = 0
        self.rows: dict[int, Strip] = {}
        """Composed rows (gutter, styles, selection) by row number: render_line serves these."""
        self.rows_generation = -1
        self.scanner: BlockScanner | None = None
        self.done_end = 0
        """While streaming (or settling): end offset of the finished blocks already rendered into `done_body`."""
        self.done_body: list[Strip] = []
        self.done_width = 0
        self.code_start = -1
        """While the tail is an open code fence: offset of its opening line (-1: none)."""
        self.code_end = 0
        """End offset of the code lines already rendered into `code_lines`."""
        self.code_lines: list[Strip] = []
        self.code_pad: Strip | None = None
        """The block's bottom padding row, cut from `code_lines` so that the next piece can join on."""
        self.rendered_length = 0
        """Length of the text when `body` was rendered."""
        self.partial = False
        """`body` renders only the end of the text, with estimated blank rows above (see `_render_item`)."""
        self.placeholder = 0
        """While `partial`: how many blank rows stand for the unrendered start of the text, at the top of `body`."""
        self.prerendered: tuple[ReplyConsole, int, int, int, tuple[int, list[Strip]] | None] | None = None
        """(console, width, rows, text length, `render_end`'s result): made by a thread while the list was hidden."""
        self.settling = False
        """Finished, and shown as streamed while a thread makes its one-shot render (see `_settle`)."""
        self.final: tuple[int, str, list[Strip]] | None = None
        """(width, text, lines): the one-shot render a thread made, for the next render to use."""

    @property
    def id(self) -> int:
        return self.entry.message.id

    @property
    def text(self) -> str:
        parts = self._parts
        if len(parts) > 1:
            parts[:] = ["".join(parts)]
        return parts[0]

    def append(self, text: str) -> None:
        self._parts.append(text)

    def set_text(self, text: str) -> None:
        self._parts = [text]

    @property
    def is_user(self) -> bool:
        return self.entry.message.role == Role.USER

    @property
    def is_streaming(self) -> bool:
        return self.entry.message.status == Status.STREAMING

    @property
    def rendered(self) -> bool:
        return not self.dirty and self.width > 0

    def estimate_height(self, width: int) -> int:
        """A cheap guess of the rendered height, good enough for the scrollbar until the real render."""
        rows = estimate_rows(self.text, width)
        status = self.entry.message.status
        footer = 2 if status == Status.ERROR else 1 if status in (Status.STREAMING, Status.INTERRUPTED) else 0
        return 1 + rows + footer + 1


class _EntryMessage(textual_message.Message):
    """Base of the messages MessageList posts about one of its entries."""

    def __init__(self, message_list: MessageList, message_id: int) -> None:
        super().__init__()
        self.message_list = message_list
        """The MessageList that posted the message."""
        self.message_id = message_id
        """Id of the `core.models.Message` the request is about."""

    @property
    def control(self) -> MessageList:
        return self.message_list


def copy_selected_text(screen: Screen[object]) -> bool:
    """Copy the screen's text selection to the clipboard and say so; False if nothing is selected."""
    selected = screen.get_selected_text()
    if not selected:
        return False
    screen.app.copy_to_clipboard(selected)
    screen.notify(f"Copied the selected text ({len(selected):,} characters)")
    return True


class MessageList(ScrollView, can_focus=True):
    """The conversation of one tab, as a scrollable list of messages.

    Data comes down through `set_entries`, `prepend_entries`, `append_entry`, `append_text` and
    `update_entry`; user requests go up as messages. Call `update_entry` with the final message when a
    stream ends: the lines it then shows come from a one-shot render, the same as a fresh render of the text
    (made by a thread for a long reply, and for a reply shown from its end once the view gets to its start).
    """

    DEFAULT_CSS = """
    MessageList {
        overflow-x: hidden;
        overflow-y: scroll;
    }
    """
    # overflow-y is `scroll` on purpose: a scrollbar that comes and goes would change the width and force a
    # re-render of every visible message, and its appearance needs a layout pass.

    COMPONENT_CLASSES: ClassVar[set[str]] = {
        "message-list--user",
        "message-list--assistant",
        "message-list--selected",
        "message-list--error",
        "message-list--status",
        "message-list--meta",
        "message-list--code",
    }
    """
    | Class | Description |
    | :- | :- |
    | `message-list--user` | Gutter and name of the user's messages (color). |
    | `message-list--assistant` | Gutter and name of the assistant's messages (color). |
    | `message-list--selected` | The selected message: background of its lines, color of its gutter. |
    | `message-list--error` | The error line of a failed reply (color). |
    | `message-list--status` | Streaming and interrupted marks (color). |
    | `message-list--meta` | Model name and sibling position in headers (color). |
    | `message-list--code` | Inline code in replies (color, background, text style). |
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("up", "select_previous", "Previous message", show=False, id="message_list.select_previous"),
        Binding("down", "select_next", "Next message", show=False, id="message_list.select_next"),
        Binding("home", "select_first", "First message", show=False, id="message_list.select_first"),
        Binding("end", "follow_end", "Last message", show=False, id="message_list.follow_end"),
        Binding("escape", "clear_selection", "Unselect", show=False, id="message_list.clear_selection"),
        Binding("y", "copy", "Copy", id="message_list.copy"),
        Binding("Y", "copy_code", "Copy code", id="message_list.copy_code"),
        Binding("r", "regenerate", "Regenerate", id="message_list.regenerate"),
        Binding("r", "retry", "Retry", id="message_list.retry"),
        Binding("e", "edit", "Edit", id="message_list.edit"),
        Binding(
            "left,left_square_bracket",
            "sibling(-1)",
            "Previous version",
            show=False,
            id="message_list.sibling_previous",
        ),
        Binding(
            "right,right_square_bracket",
            "sibling(1)",
            "Next version",
            show=False,
            id="message_list.sibling_next",
        ),
        Binding("pageup", "page_up", "Page up", show=False, id="message_list.page_up"),
        Binding("pagedown", "page_down", "Page down", show=False, id="message_list.page_down"),
    ]

    selected_id: reactive[int | None] = reactive(None, repaint=False, init=False)
    """The message the keyboard cursor is on; None follows the end of the conversation."""

    class RegenerateRequested(_EntryMessage):
        """The user asked for a new reply in place of an assistant message (key r)."""

    class RetryRequested(_EntryMessage):
        """The user asked to retry a reply that failed with an error (key r)."""

    class EditRequested(_EntryMessage):
        """The user asked to edit one of their messages (key e)."""

    class SiblingRequested(_EntryMessage):
        """The user asked to show another version of a message (left/right or [ and ])."""

        def __init__(self, message_list: MessageList, message_id: int, direction: int) -> None:
            super().__init__(message_list, message_id)
            self.direction = direction
            """-1 for the previous sibling, +1 for the next one."""

    class LoadEarlierRequested(_EntryMessage):
        """The view reached the top and earlier messages exist: load those before `message_id`.

        Posted once per load: the next one waits for `prepend_entries` or `set_entries`.
        """

        def __init__(self, message_list: MessageList, message_id: int, *, to_first: bool = False) -> None:
            super().__init__(message_list, message_id)
            self.to_first = to_first
            """The user asked for the first message of all: more will be asked for until it is loaded (a bigger
            page saves round trips; none of it is rendered but the page's first screen)."""

    def __init__(
        self,
        entries: Sequence[ChatEntry] = (),
        *,
        has_earlier: bool = False,
        retry_key: str | None = "ctrl+r",
        name: str | None = None,
        id: str | None = None,
        classes: str | None = None,
        disabled: bool = False,
    ) -> None:
        super().__init__(name=name, id=id, classes=classes, disabled=disabled)
        self._retry_key = retry_key
        """The key named in the last reply's mark when it failed or was interrupted (its owner binds it)."""
        self._items: list[_Item] = []
        self._by_id: dict[int, _Item] = {}
        self._tops: list[int] = []
        self._total = 0
        self._width = 0
        """Body width the items are rendered (or estimated) for; 0 before the first layout."""
        self._follow = True
        """Keep the view at the bottom as content grows (the user has not scrolled up)."""
        self._adjusting = False
        """Set while the widget moves the scroll position itself (not a user scroll)."""
        self._layout_stale = True
        self._has_earlier = has_earlier
        self._earlier_requested = False
        self._to_first = False
        """Home was pressed before the first message was loaded: each page that arrives shows its first message,
        until the first of all, unless the user moves meanwhile."""
        self._reserved_height = 0
        """While a reply streams, the virtual height grows in steps (see `_apply_scroll`)."""
        self._view_height = 0
        """Rows of the view when last shown (a hidden widget has none)."""
        self._flush_timer: Timer | None = None
        self._flush_pending = False
        """A flush is queued with call_later (the interval since the last one has already passed)."""
        self._last_flush = 0.0
        self._styles: _Styles | None = None
        self._style_generation = 0
        self._replies_console: ReplyConsole | None = None
        self._code_cursor: tuple[int, int] | None = None
        """(message id, index) of the code block "Y" copied last, to cycle on repeated presses."""
        self._bindings_state: tuple[bool | None, ...] | None = None
        """`check_action`'s answers when bindings were last refreshed."""
        self._streaming: list[_Item] | None = None
        """The streaming items (few, usually the last one), or None to recompute."""
        self._sync_pending = True
        """A sync was skipped (hidden or not laid out yet): the next layout that shows the widget runs it."""
        self._off_screen = True
        """Not laid out since a layout hid it (or ever): the next layout paints the whole widget."""
        self._batch_depth = 0
        """Inside `_one_sync`: syncs are deferred to its end."""
        self._painting = False
        """Inside `render_lines`: rows are painted, not hit-tested (see `render_line`)."""
        self._paint_frame = (0, 0, False)
        """While painting: the content width, the top row and whether attached, the same for every row."""
        self._painted_selection: Selection | None = None
        """The text selection (as row addresses), looked up once for all the rows `render_lines` paints."""
        self._batched_sync = False
        if entries:
            self._replace_items(entries)

    # ----------------------------------------------------------------------------------------------------
    # Public API: data down

    @property
    def following(self) -> bool:
        """The view is at the end and stays there as content grows."""
        return self._follow and round(self.scroll_y) >= self.max_scroll_y

    def set_entries(self, entries: Sequence[ChatEntry], *, has_earlier: bool = False) -> None:
        """Replace every message (a session opened, a branch switched) and show the conversation's end."""
        if self.is_attached and self.text_selection is not None:
            self.screen.clear_selection()  # its rows were messages that may be gone, or elsewhere now
        self._replace_items(entries)
        self._has_earlier = has_earlier
        self._earlier_requested = False
        self._to_first = False
        self._follow = True
        self._reserved_height = 0
        if self.selected_id is not None and self.selected_id not in self._by_id:
            self.selected_id = None
        self._sync()
        self._request_earlier_if_unfilled()
        self._refresh_bindings_if_changed()

    def prepend_entries(self, entries: Sequence[ChatEntry], *, has_earlier: bool, before: int | None = None) -> None:
        """Insert earlier messages above the first one, keeping the viewport's content where it is.

        With `before` (the id the page was asked for before), a page that no longer fits is dropped: the list
        was replaced meanwhile (another branch shown), and it would have left a gap in the thread.
        """
        if before is not None and (not self._items or self._items[0].id != before):
            return
        new_items = [_Item(entry) for entry in entries if entry.message.id not in self._by_id]
        anchor = self._anchor()
        width = self._width
        for item in new_items:
            self._by_id[item.id] = item
            if width:
                item.height = item.estimate_height(width)
        self._items[:0] = new_items
        self._streaming = None
        self._has_earlier = has_earlier
        self._earlier_requested = False
        self._layout()
        if self._to_first:
            self._show_first()
            return
        if anchor is not None:
            # Keep the anchor now, with estimated heights: the sync below is skipped while the tab is hidden.
            self._apply_scroll(anchor, None, self._total, False)
        self._sync(anchor=anchor)
        self._request_earlier_if_unfilled()

    def append_entry(self, entry: ChatEntry) -> None:
        """Add a message at the end (the user's prompt, or an empty streaming reply)."""
        self.append_entries([entry])

    def append_entries(self, entries: Sequence[ChatEntry]) -> None:
        """Add messages at the end (a prompt and its reply; the turns another process made), laid out once."""
        new = []
        for entry in entries:
            if entry.message.id in self._by_id:
                self.update_entry(entry)
            else:
                new.append(entry)
        if not new:
            return
        before = self._items[-1] if self._items else None
        for entry in new:
            item = _Item(entry)
            if self._width:
                item.height = item.estimate_height(self._width)
            self._items.append(item)
            self._by_id[item.id] = item
        if before is not None and before.footer and before.width:
            # No longer the last: its mark no longer names the retry key.
            before.footer = self._footer(self._reply_console(), before, before.width)
            before.height = 1 + len(before.body) + len(before.footer) + 1
            before.rows.clear()
        self._streaming = None
        self._layout_stale = True
        self._reserved_height = 0
        self._sync()
        self._refresh_bindings_if_changed()

    def append_text(self, message_id: int, text: str) -> None:
        """Add a streamed delta to a message.

        Costs a list append; rendering happens at most every FLUSH_INTERVAL, and not at all while the widget
        is hidden (it catches up once when shown).
        """
        item = self._by_id.get(message_id)
        if item is None or not text:
            return
        item.append(text)
        item.dirty = True
        if self._flush_timer is not None or self._flush_pending or self._sync_pending:
            return
        if not self._is_shown():
            self._sync_pending = True
        else:
            delay = self._last_flush + FLUSH_INTERVAL - monotonic()
            if delay > 0:
                self._flush_timer = self.set_timer(delay, self._flush, name="message-list-flush")
            else:
                self._flush_pending = True
                self.call_later(self._flush)

    def update_entry(self, entry: ChatEntry) -> None:
        """Replace one message's data (final content, status, error, sibling counts) and re-render it.

        While the message is still streaming, text already streamed in is kept if the given content is a
        prefix of it (the row in the database lags behind the stream).
        """
        item = self._by_id.get(entry.message.id)
        if item is None:
            return
        content = entry.message.content
        current = item.text
        if not (entry.message.status == Status.STREAMING and current.startswith(content)):
            item.set_text(content)
        finished = entry.message.status != Status.STREAMING
        settle = (
            finished
            and item.scanner is not None
            and not item.partial
            and len(item.text) > SETTLE_CHARS
            and self._is_shown()
        )
        if finished:
            if not settle:
                self._unsettle(item)
            if not any(other.is_streaming for other in self._items if other is not item):
                # The rows kept free below a stream: a finished reply rests with its last line at the bottom,
                # as it will when the conversation is opened again.
                self._reserved_height = 0
        item.entry = entry
        item.dirty = True
        item.settling = settle
        self._streaming = None
        if self._width and not self._is_shown():
            item.height = item.estimate_height(self._width)
            self._layout_stale = True
            if entry.message.status != Status.STREAMING and item is self._items[-1]:
                self._prerender_end(item)
        self._sync()
        if settle:
            self._settle(item)
        self._refresh_bindings_if_changed()

    def _settle(self, item: _Item) -> None:
        """A long reply just finished in view: make its one-shot render in a thread, then show it.

        The one-shot render settles what block-by-block rendering cannot (link references), but costs ~50 ms
        per 1,000 tokens: on the event loop it would stall typing and the other tabs' streams when a reply
        ends. Meanwhile the reply stays as streamed, its last text rendered like a streaming tail.
        """
        text, width, console = item.text, self._width, self._reply_console()

        def render() -> tuple[_Item, ReplyConsole, tuple[int, str, list[Strip]]]:
            return item, console, (width, text, render_markdown(console, text, width))

        self.run_worker(render, thread=True, group=SETTLE_GROUP, exit_on_error=False)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group != SETTLE_GROUP:
            return
        event.stop()
        if event.state == WorkerState.SUCCESS:
            self._settled(*event.worker.result)
        elif event.state == WorkerState.ERROR:
            for item in self._items:
                if item.settling:  # rendered on the loop instead, once
                    self._unsettle(item)
                    item.dirty = True
            self._sync()

    def _settled(self, item: _Item, console: ReplyConsole, final: tuple[int, str, list[Strip]]) -> None:
        # Thrown away when the reply changed since (a later update gets a render of its own), when it was
        # re-rendered meanwhile (`_unsettle`), or rendered in another theme's colours.
        if not item.settling or self._by_id.get(item.id) is not item or final[1] != item.text:
            return
        self._unsettle(item)
        item.final = final if console is self._replies_console else None
        item.dirty = True
        self._sync()

    @staticmethod
    def _unsettle(item: _Item) -> None:
        """Drop an item's streamed state (blocks rendered so far, a settle to come): its next render starts over."""
        item.settling = False
        item.scanner = None
        item.done_body, item.done_end, item.done_width = [], 0, 0

    def _prerender_end(self, item: _Item) -> None:
        """A reply finished while the list is hidden: render the screenful its first frame will show now, in a
        thread, so that switching to the tab costs no Markdown rendering (~40 ms for 2,000 tokens)."""
        text = item.text
        width, rows = self._width, self._view_height + PARTIAL_MARGIN
        if item.is_user or len(text) <= PARTIAL_CHARS or not self._view_height:
            return
        console = self._reply_console()

        def render() -> None:
            item.prerendered = (console, width, rows, len(text), render_end(console, text, width, rows))

        self.run_worker(render, thread=True, group="prerender", exit_on_error=False)

    def entry(self, message_id: int) -> ChatEntry | None:
        """The entry for a message, its content including any text streamed in since it was handed down."""
        item = self._by_id.get(message_id)
        if item is None:
            return None
        text = item.text
        if text != item.entry.message.content:
            return replace(item.entry, message=replace(item.entry.message, content=text))
        return item.entry

    @property
    def entries(self) -> list[ChatEntry]:
        """The displayed entries, oldest first (contents as handed down)."""
        return [item.entry for item in self._items]

    def last_entries(self, count: int) -> list[ChatEntry]:
        """The last ``count`` displayed entries, oldest first, without building the whole list."""
        return [item.entry for item in self._items[-count:]]

    @property
    def last_entry(self) -> ChatEntry | None:
        """The last displayed entry, without building the whole list (bindings ask for it on every check)."""
        return self._items[-1].entry if self._items else None

    # ----------------------------------------------------------------------------------------------------
    # Layout: heights, anchors, lazy rendering

    def _replace_items(self, entries: Sequence[ChatEntry]) -> None:
        self._items = []
        self._by_id = {}
        for entry in entries:
            if entry.message.id in self._by_id:
                continue
            item = _Item(entry)
            if self._width:
                item.height = item.estimate_height(self._width)
            self._items.append(item)
            self._by_id[item.id] = item
        self._layout_stale = True
        self._streaming = None
        self._code_cursor = None

    def _is_shown(self) -> bool:
        """Is the widget part of what the screen displays (it and every ancestor have a display)?"""
        if not self.is_attached:
            return False
        node: Widget | None = self
        while node is not None:
            if node.styles.display == "none":
                return False
            parent = node.parent
            node = parent if isinstance(parent, Widget) else None
        return True

    def _body_width(self) -> int:
        """Width of the message bodies: the content width less the gutter."""
        return self.scrollable_content_region.width - GUTTER_WIDTH

    def _layout(self) -> None:
        """Recompute every item's top from the heights (a prefix sum: cheap even for hundreds of messages)."""
        top = 0
        tops = []
        for item in self._items:
            item.top = top
            tops.append(top)
            top += item.height
        self._tops = tops
        self._total = top
        self._layout_stale = False

    def _index(self, item: _Item) -> int:
        """Position of `item` in `_items`, by its top (a scan only before the first layout, when heights are 0)."""
        if self._layout_stale:
            self._layout()
        index = bisect_right(self._tops, item.top) - 1
        return index if 0 <= index < len(self._items) and self._items[index] is item else self._items.index(item)

    def _item_at(self, y: int) -> _Item | None:
        if self._layout_stale:
            self._layout()
        if y < 0 or y >= self._total:
            return None
        return self._items[bisect_right(self._tops, y) - 1]

    def _anchor(self) -> tuple[_Item, int] | None:
        """The item and row at the top of the viewport, or None when following the end."""
        if self._follow or not self._items or not self._width:
            return None
        scroll_y = round(self.scroll_y)
        item = self._item_at(scroll_y)
        if item is None:
            return None
        return item, scroll_y - item.top

    @contextmanager
    def _one_sync(self) -> Iterator[None]:
        """Run the syncs requested inside the block as one, at its end (a key press asks for several)."""
        self._batch_depth += 1
        try:
            yield
        finally:
            self._batch_depth -= 1
            if not self._batch_depth and self._batched_sync:
                self._batched_sync = False
                self._sync()

    def _sync(self, anchor: tuple[_Item, int] | None = None) -> None:
        """Bring what the viewport shows up to date.

        Renders the streaming messages and every stale message within a viewport's height of the visible
        region, corrects heights, then restores the scroll position: the bottom when following, otherwise the
        row that was at the top (so heights changing above the viewport do not move its content).
        """
        if self._batch_depth and anchor is None:
            self._batched_sync = True
            return
        if not self._is_shown():
            self._sync_pending = True
            return
        width = self._body_width()
        if width < 1 or not self.size.height:
            self._sync_pending = True
            return
        self._sync_pending = False
        if anchor is None:
            anchor = self._anchor()
        if width != self._width:
            self._width = width
            self._reserved_height = 0
            for item in self._items:
                item.height = item.estimate_height(width)
                item.rows.clear()
            self._layout_stale = True
        console = self._reply_console()
        changed_top: int | None = None
        # The height painted last: when the messages were replaced by fewer rows, those below the new end
        # must be repainted blank too.
        old_total = self._total
        if self._layout_stale:
            self._layout()
        streamed = False
        view_height = self._view_height = self.scrollable_content_region.height
        last = self._items[-1] if self._items else None
        # Only the end of the last message shows when following: a big one may be rendered from its end first.
        partial_rows = view_height + PARTIAL_MARGIN if anchor is None and self._follow else 0
        streaming = self._streaming
        if streaming is None:
            streaming = self._streaming = [item for item in self._items if item.is_streaming]
        for item in streaming:
            if not item.rendered:
                row = self._render_item(console, item, width, partial_rows if item is last else 0)
                changed_top = item.top + row if changed_top is None else min(changed_top, item.top + row)
                self._layout_stale = True
                streamed = True
        for _ in range(10):
            if self._layout_stale:
                self._layout()
            if anchor is None:
                top = self._total - view_height
            else:
                item, row = anchor
                top = item.top + min(row, max(0, item.height - 1))
            rendered_any = False
            low, high = max(0, top - view_height), max(0, top + 2 * view_height)
            start = max(0, bisect_right(self._tops, low) - 1)
            for index in range(start, len(self._items)):
                item = self._items[index]
                if item.top >= high:
                    break
                was_partial, old_rows = item.partial and item.width == width, len(item.body)
                if not item.rendered or item.width != width:
                    row = self._render_item(console, item, width, partial_rows if item is last else 0)
                elif item.partial and top <= item.top + item.placeholder:
                    # The view reached the blank rows of a partial render: render it in full.
                    row = self._render_item(console, item, width, full=True)
                else:
                    continue
                if was_partial and not item.partial and anchor is not None and anchor[0] is item:
                    # Rendered in full (reached, or finished while scrolled up): keep the rows shown where they
                    # are; the partial's end is exact, its blank rows above were an estimate.
                    anchor = (item, max(0, anchor[1] + len(item.body) - old_rows))
                changed_top = item.top + row if changed_top is None else min(changed_top, item.top + row)
                rendered_any = True
                self._layout_stale = True
            if not rendered_any:
                break
        if self._layout_stale:
            self._layout()
        if changed_top is None and old_total > self._total:
            changed_top = self._total
        self._apply_scroll(anchor, changed_top, max(old_total, self._total), streamed)

    def _apply_scroll(
        self, anchor: tuple[_Item, int] | None, changed_top: int | None, changed_end: int, streamed: bool
    ) -> None:
        """Publish the virtual size, restore the scroll position and repaint the rows that changed.

        While a reply streams, the virtual height grows a third of the view at a time, leaving blank rows
        below the tail: a scroll repaints the whole view and a virtual height change the whole scrollbar
        (each costs as much as rendering the tail), so they happen every few seconds instead of every flush.
        """
        total = self._total
        if streamed and total > self._reserved_height:
            self._reserved_height = total + max(4, self.scrollable_content_region.height // 3)
        self._publish_size()
        old_scroll = round(self.scroll_y)
        if anchor is None:
            target = self.max_scroll_y if self._follow else min(old_scroll, self.max_scroll_y)
        else:
            item, row = anchor
            target = item.top + min(row, max(0, item.height - 1))
        self._set_scroll_y(target)
        if round(self.scroll_y) == old_scroll and changed_top is not None:
            view_top = round(self.scroll_y)
            start = max(changed_top, view_top)
            end = min(changed_end, view_top + self.size.height)
            if start < end:
                self.refresh_lines(start, end - start)

    def _publish_size(self) -> None:
        """Set the virtual size from the layout (and the rows reserved for a stream)."""
        size = Size(self.scrollable_content_region.width, max(self._total, self._reserved_height))
        if size != self.virtual_size:
            # Set without the layout pass the reactive would trigger: our height never depends on content.
            self.set_reactive(Widget.virtual_size, size)
            self._scroll_update(size)

    def _set_scroll_y(self, y: float) -> None:
        """Move the view without it counting as a user scroll."""
        adjusting, self._adjusting = self._adjusting, True
        try:
            self.scroll_target_y = y
            self.scroll_y = y
        finally:
            self._adjusting = adjusting

    def watch_scroll_y(self, old_value: float, new_value: float) -> None:
        super().watch_scroll_y(old_value, new_value)
        if self._adjusting:
            return
        # A user scroll: follow the end again only once they are back at the bottom.
        self._to_first = False
        self._follow = round(new_value) >= self.max_scroll_y
        self._sync()
        if round(new_value) == 0:
            self._request_earlier()

    def earlier_failed(self) -> None:
        """The earlier messages asked for could not be read: the next scroll to the top asks again."""
        self._earlier_requested = False
        self._to_first = False

    def _request_earlier(self) -> None:
        if self._has_earlier and not self._earlier_requested and self._items:
            self._earlier_requested = True
            self.post_message(self.LoadEarlierRequested(self, self._items[0].id, to_first=self._to_first))

    def _request_earlier_if_unfilled(self) -> None:
        """Earlier messages are due at once when the loaded ones do not fill the view (nothing to scroll)."""
        if self._width and self.max_scroll_y == 0:
            self._request_earlier()

    def _flush(self) -> None:
        """Render the streamed text that arrived since the last flush (the FLUSH_INTERVAL timer's callback)."""
        self._flush_timer = None
        self._flush_pending = False
        self._last_flush = monotonic()
        self._sync()

    def _size_updated(self, size: Size, virtual_size: Size, container_size: Size, layout: bool = True) -> bool:
        # Called by the screen's layout pass, before it paints: a widget that was just shown (or resized)
        # catches up here, once, so that its first frame is already up to date. The Resize and Show events
        # come after that frame; they only cover what this missed.
        adjusting, self._adjusting = self._adjusting, True
        try:
            changed = super()._size_updated(size, virtual_size, container_size, layout)
        finally:
            self._adjusting = adjusting
        if size.width and size.height and (self._sync_pending or self._body_width() != self._width):
            self._sync()
            if self._off_screen:
                # Shown again: this layout pass paints the whole widget, after this sync. The repaint the sync asked
                # for (a scroll repaints the view) would send the same rows again as a frame of their own (~15 KB at
                # 160x48). Textual's private flags (textual is pinned; a test in test_app.py checks the request).
                self._repaint_required = False
                self._repaint_regions.clear()
        elif self._follow and size.height and round(self.scroll_y) != self.max_scroll_y:
            # Shorter (a prompt of more lines, a smaller terminal): Textual keeps the offset, which hid the end.
            self._set_scroll_y(self.max_scroll_y)
        self._off_screen = False
        return changed

    def on_hide(self, event: events.Hide) -> None:
        self._off_screen = True

    def on_show(self, event: events.Show) -> None:
        # Whatever arrived while the tab was hidden is rendered now, once (usually already by `_size_updated`).
        if self._sync_pending:
            self._sync()

    def on_resize(self, event: events.Resize) -> None:
        if self._sync_pending or self._body_width() != self._width:
            self._sync()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._styles = None
        self._style_generation += 1
        if self._replies_console is not None:
            self.call_later(self._restyle_replies)

    def _reply_console(self) -> ReplyConsole:
        """The console replies are rendered with, in the current theme's colours."""
        if self._replies_console is None:
            code = self.get_component_rich_style("message-list--code")
            self._replies_console = ReplyConsole({"markdown.code": code}, dark=self.app.current_theme.dark)
        return self._replies_console

    def _restyle_replies(self) -> None:
        """The styles changed (a new theme, or a class that left the replies alone): render them again if their
        colours changed."""
        old, self._replies_console = self._replies_console, None
        new = self._reply_console()
        if (
            old is not None
            and old.code_theme == new.code_theme
            and old.get_style("markdown.code") == new.get_style("markdown.code")
        ):
            self._replies_console = old
            return
        for item in self._items:
            if not item.is_user:
                if item.settling:
                    self._unsettle(item)  # the thread renders in the old colours: render once, now
                item.dirty = True
                item.done_width = 0  # finished blocks of a stream, in the old colours
                item.code_start = -1
                item.prerendered = item.final = None
        self._sync()

    # ----------------------------------------------------------------------------------------------------
    # Rendering

    def _render_item(
        self, console: Console, item: _Item, width: int, partial_rows: int = 0, *, full: bool = False
    ) -> int:
        """Render an item's body and footer for `width`; return the first row whose content may have changed.

        With `partial_rows`, an assistant message with much new text (a hidden tab's reply, a session just
        opened) is rendered from the last block boundary that leaves at least that many rows, with estimated
        blank rows above: the frame that shows its end comes at once, and the full render waits until the view
        reaches those blank rows (`full`: `_sync`, or `render_line` for a jump straight there). A reply still
        streaming goes on from its partial render, block by block; once finished, its end is rendered again.
        """
        first_changed = 0
        text = item.text
        if full and item.partial:
            self._unsettle(item)
            item.placeholder = 0
        if item.settling and item.width != width:
            # Re-wrapped (a resize) before the thread's render came: that render is for the old width.
            self._unsettle(item)
        new_text = len(text) - (item.rendered_length if item.width == width else 0)
        body: list[Strip] | None = None
        if (
            partial_rows
            and not full
            and not item.is_user
            and (new_text > PARTIAL_CHARS or (item.partial and not item.is_streaming))
        ):
            body = self._render_partial(console, item, width, partial_rows)
        partial = body is not None
        if body is not None:
            pass
        elif item.is_user:
            body = render_plain(console, text, width)
        elif item.is_streaming or item.settling:
            old_body = item.body if item.width == width else []
            body, first_changed = self._render_streaming(console, item, width)
            partial = item.placeholder > 0
            # Usually only the last line or two of the tail differ: repaint from the first that does.
            limit = min(len(body), len(old_body))
            row = first_changed - 1
            while row < limit and body[row] == old_body[row]:
                row += 1
            first_changed = row + 1
        elif item.final is not None and item.final[0] == width and item.final[1] == text:
            body = item.final[2]
        elif text:
            body = render_markdown(console, text, width)
        else:
            body = []
        item.final = None
        item.body = body
        item.partial = partial
        if not partial:
            item.placeholder = 0
        item.footer = self._footer(console, item, width)
        item.width = width
        item.dirty = False
        item.rendered_length = len(text)
        item.height = 1 + len(body) + len(item.footer) + 1
        item.rows.clear()
        return first_changed

    def _footer(self, console: Console, item: _Item, width: int) -> list[Strip]:
        """The lines below a reply's body: the streaming mark, or what went wrong and how to retry."""
        message = item.entry.message
        if message.status == Status.STREAMING:
            return [Strip([Segment(STREAMING_MARK)], 1).adjust_cell_length(width)]
        if message.status == Status.INTERRUPTED:
            mark = INTERRUPTED_NOTE if item.text.strip() else INTERRUPTED_EMPTY_NOTE
        elif message.status == Status.ERROR:
            mark = "⚠ " + (message.error or "The reply failed.").strip()
        else:
            return []
        # The retry key acts on the last reply only: an earlier one is retried by selecting it (r).
        if self._retry_key and self._items and item is self._items[-1]:
            mark += f" — {self._retry_key} to retry"
        return render_plain(console, mark, width)

    def _render_partial(self, console: Console, item: _Item, width: int, rows: int) -> list[Strip] | None:
        """Render the end of an item's text (see `_render_item`); None if it cannot be split."""
        text = item.text
        if item.is_streaming:
            return self._render_partial_stream(console, item, width, rows)
        ready, item.prerendered = item.prerendered, None
        if ready is not None and ready[:4] == (console, width, rows, len(text)):
            end = ready[4]
        else:
            end = render_end(console, text, width, rows)
        if end is None:
            return None
        start, end_lines = end
        placeholder = Strip.blank(width)
        item.placeholder = estimate_rows(text[:start], width)
        body = [placeholder] * item.placeholder + end_lines
        item.scanner = None
        item.done_body, item.done_end, item.done_width = [], 0, 0
        item.code_start = -1
        return body

    def _render_partial_stream(self, console: Console, item: _Item, width: int, rows: int) -> list[Strip] | None:
        """Start a streaming reply's rendering at a late block boundary, blank rows standing for the blocks above,
        then stream on from there (see `_render_item`); None if it cannot be split."""
        text = item.text
        scanner = BlockScanner()
        scanner.feed(text)
        start = end_start(scanner, text, width, rows)
        if start is None:
            return None
        item.scanner = scanner
        item.placeholder = estimate_rows(text[:start], width)
        item.done_body = [Strip.blank(width)] * item.placeholder
        item.done_end, item.done_width = start, width
        item.code_start = -1
        body, _ = self._render_streaming(console, item, width)
        return body

    def _render_streaming(self, console: Console, item: _Item, width: int) -> tuple[list[Strip], int]:
        """Render a streaming reply: finished blocks once (kept as lines), the live tail every time."""
        text = item.text
        if item.scanner is None:
            item.scanner = BlockScanner()
        boundary = item.scanner.feed(text)
        if item.done_width != width:
            item.done_body, item.done_end, item.done_width = [], 0, width
            item.placeholder = 0
        first_changed = 1 + len(item.done_body)
        if boundary > item.done_end:
            lines = render_markdown(console, text[item.done_end : boundary], width)
            if item.done_body and lines:
                item.done_body.append(Strip.blank(width))
            item.done_body.extend(lines)
            item.done_end = boundary
        scanner = item.scanner
        if scanner.fence is not None and scanner.fence_start == item.done_end:
            tail_lines = self._render_open_fence(console, item, text, width)
        else:
            item.code_start = -1
            tail = text[item.done_end :]
            tail_lines = render_markdown(console, tail, width) if tail.strip() else []
        body = list(item.done_body)
        if body and tail_lines:
            body.append(Strip.blank(width))
        body.extend(tail_lines)
        return body, first_changed

    def _render_open_fence(self, console: Console, item: _Item, text: str, width: int) -> list[Strip]:
        """Render a tail that is a code block still open, without re-highlighting the lines already shown.

        Rich's Syntax costs about half a millisecond a line, so a long block re-rendered whole ten times a
        second would dominate. Complete lines are rendered once, in pieces closed with the block's own
        fence; the pieces' padding rows at the seams are dropped so they join into one block. Only the last
        few lines are re-rendered at each flush. (Highlighting that spans a seam may differ until the
        one-shot render that follows the stream.)
        """
        scanner = item.scanner
        assert scanner is not None and scanner.fence is not None
        opener = text[scanner.fence_start : scanner.fence_body]
        closer = scanner.fence + "\n"
        if item.code_start != scanner.fence_start or item.done_width != width:
            item.code_start, item.code_end = scanner.fence_start, scanner.fence_body
            item.code_lines, item.code_pad = [], None
        pending = text[item.code_end : scanner.position]
        if pending.count("\n") >= CODE_PIECE_LINES:
            # End the piece after its last non-blank line: the block's renderer strips trailing blank lines.
            stripped = pending.rstrip()
            piece_end = text.find("\n", item.code_end + len(stripped)) + 1
            if stripped and piece_end > item.code_end:
                lines = render_markdown(console, opener + text[item.code_end : piece_end] + closer, width)
                if item.code_lines:
                    lines = lines[1:]
                if lines:
                    item.code_pad = lines.pop()
                item.code_lines.extend(lines)
                item.code_end = piece_end
        rest = text[item.code_end :]
        if not item.code_lines:
            return render_markdown(console, opener + rest, width)
        if rest.strip():
            rest += "" if rest.endswith("\n") else "\n"
            return item.code_lines + render_markdown(console, opener + rest + closer, width)[1:]
        return item.code_lines + ([item.code_pad] if item.code_pad is not None else [])

    def _get_styles(self) -> _Styles:
        if self._styles is None:
            get = self.get_component_rich_style
            self._styles = _Styles(
                base=self.rich_style,
                user=get("message-list--user"),
                assistant=get("message-list--assistant"),
                selected=get("message-list--selected"),
                error=get("message-list--error"),
                status=get("message-list--status"),
                meta=get("message-list--meta"),
            )
        return self._styles

    def _compose_row(self, item: _Item, row: int, content_width: int) -> Strip:
        """Build one displayed row of an item: gutter, then header, body or footer, in the current styles."""
        styles = self._get_styles()
        base = styles.base
        if row >= item.height - 1:
            return Strip.blank(content_width, base)
        selected = item.id == self.selected_id
        role = styles.user if item.is_user else styles.assistant
        if selected:
            under = base + Style(bgcolor=styles.selected.bgcolor)
            gutter = Segment(GUTTER, under + Style(color=styles.selected.color))
        else:
            under = base
            gutter = Segment(GUTTER, base + Style(color=role.color))
        space = Segment(" ", under)
        if row == 0:
            entry = item.entry
            name = "You" if item.is_user else "Assistant"
            meta = ""
            if not item.is_user and entry.message.model:
                meta += f" · {entry.message.model}"
            if entry.sibling_count > 1:
                meta += f"  ‹ {entry.sibling_index}/{entry.sibling_count} ›"
            segments = [
                gutter,
                space,
                Segment(name, under + Style(color=role.color, bold=True)),
                Segment(inert_text(meta), under + Style(color=styles.meta.color)),
            ]
            return Strip(segments).adjust_cell_length(content_width, under)
        row -= 1
        if row < len(item.body):
            line = item.body[row]
            style = under
        else:
            row -= len(item.body)
            if row >= len(item.footer):
                return Strip.blank(content_width, under)
            line = item.footer[row]
            status = item.entry.message.status
            color = styles.error.color if status == Status.ERROR else styles.status.color
            style = under + Style(color=color)
        segments = [gutter, space, *Segment.apply_style(line._segments, style)]
        return Strip(segments, 2 + line.cell_length).adjust_cell_length(content_width, under)

    def render_line(self, y: int) -> Strip:
        if self._painting:
            content_width, top, attached = self._paint_frame
        else:
            content_width, top, attached = self.scrollable_content_region.width, round(self.scroll_y), self.is_attached
        if not attached:  # painted behind a dialog after its tab closed: see PromptInput.render_lines
            return Strip.blank(content_width)
        item = self._item_at(top + y)
        if item is None:
            return Strip.blank(content_width, self._get_styles().base)
        if self._width and (item.width != self._width or (item.partial and 0 < top + y - item.top <= item.placeholder)):
            # Painted before a sync reached it (rare): render now, let a sync settle heights after the frame.
            # (An item that is merely dirty keeps serving its old lines until the next flush.)
            self._render_item(self._reply_console(), item, self._width, full=True)
            self._layout()
            self.call_later(self._sync)
        row = top + y - item.top
        if item.rows_generation != self._style_generation:
            item.rows.clear()
            item.rows_generation = self._style_generation
        strip = item.rows.get(row)
        if strip is None:
            strip = item.rows[row] = self._compose_row(item, row, content_width)
        address = item.id * ROWS_PER_MESSAGE + row
        if not self._painting:
            # Textual hit-tests the mouse by asking `render_line` itself: offsets tell it which text is under the
            # pointer. Painted rows (through `render_lines`) need none: offsets made every new row ~4x dearer.
            return strip.apply_offsets(0, address)
        if (selection := self._painted_selection) is not None and (span := selection.get_span(address)) is not None:
            strip = self._highlight(strip, *span)
        return strip

    def render_lines(self, crop: Region) -> list[Strip]:
        # Detached (its tab closed behind a dialog) it has no screen to hold a selection: see `render_line`.
        attached = self.is_attached
        selection = self.text_selection if attached else None
        self._painting, self._painted_selection = True, self._addressed(selection) if selection else None
        # Once for all the rows: the content region is looked up through the screen, a sizeable part of a row.
        self._paint_frame = (self.scrollable_content_region.width, round(self.scroll_y), attached)
        try:
            return super().render_lines(crop)
        finally:
            self._painting = False

    def _addressed(self, selection: Selection) -> Selection:
        """The selection with both ends as row addresses, in order. Textual gives the pointer's view row instead
        when it is over the padding left of the gutter (no text there)."""

        def address(offset: Offset | None) -> Offset | None:
            if offset is None or offset.y >= ROWS_PER_MESSAGE or not self._items:
                return offset
            y = min(round(self.scroll_y) + offset.y, self._total - 1)
            item = self._item_at(y)
            assert item is not None
            return Offset(offset.x, item.id * ROWS_PER_MESSAGE + y - item.top)

        start, end = address(selection.start), address(selection.end)
        return Selection.from_offsets(start, end) if start is not None and end is not None else Selection(start, end)

    def _highlight(self, strip: Strip, start: int, end: int) -> Strip:
        """The strip with characters start:end (end -1: to the line's end) in the selection's style; the
        gutter is never selected."""
        text = strip.text
        start, end = max(start, GUTTER_WIDTH), len(text) if end == -1 else min(end, len(text))
        if start >= end:
            return strip
        style = self._selection_style()
        # Selections count characters, strips cells (a CJK character is two).
        cuts = [cell_len(text[:start]), cell_len(text[:end]), strip.cell_length]
        before, selected, after = strip.divide(cuts)
        selected = Strip(Segment.apply_style(selected._segments, post_style=style), selected.cell_length)
        return Strip.join([before, selected, after])

    def _selection_style(self) -> Style:
        """The theme's selection colours. Its usual foreground is transparent, which as a Rich style would be the
        background colour (text gone): then the text keeps its own colours."""
        rich = self.screen.get_component_rich_style("screen--selection")
        if self.screen.get_component_styles("screen--selection").color.a == 0:
            return Style(bgcolor=rich.bgcolor)
        return rich

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        """The selected rows' text as shown (Markdown rendered), without gutters and trailing spaces."""
        width = self._width
        if not width or not self._items:
            return None
        selection = self._addressed(selection)
        first = selection.start.y // ROWS_PER_MESSAGE if selection.start is not None else self._items[0].id
        last = selection.end.y // ROWS_PER_MESSAGE if selection.end is not None else self._items[-1].id
        lines: list[str] = []
        for item in self._items:
            if not first <= item.id <= last:
                continue
            if shift := self._render_in_full(item):
                selection = self._shift_selection(selection, item, shift)
                self.screen.selections = {self: selection}  # the highlight follows the text too
            for row in range(item.height):
                span = selection.get_span(item.id * ROWS_PER_MESSAGE + row)
                if span is None:
                    continue
                text = self._compose_row(item, row, width + GUTTER_WIDTH).text
                start, end = span
                lines.append(text[max(start, GUTTER_WIDTH) : len(text) if end == -1 else end].rstrip())
        return "\n".join(lines), "\n"

    def _render_in_full(self, item: _Item) -> int:
        """Render an item whose rows are an estimate, or blank above a partial render, before its text is used.

        Return how far its last rows moved down (the blank rows above a partial render were an estimate); the view
        keeps showing the same text.
        """
        if not self._width or (item.width == self._width and not item.partial):
            return 0
        was_partial, old_rows = item.partial and item.width == self._width, len(item.body)
        anchor = self._anchor()
        self._render_item(self._reply_console(), item, self._width, full=True)
        shift = len(item.body) - old_rows if was_partial else 0
        if anchor is not None and anchor[0] is item:
            anchor = (item, max(0, anchor[1] + shift))
        elif anchor is None and self._reserved_height:
            self._reserved_height += shift  # following a stream: as many blank rows below it as before
        self._layout()
        if self._painting:  # a sync moves the view, which a paint must not do
            self.call_later(self._sync, anchor)
        else:
            self._sync(anchor)
        return shift

    @staticmethod
    def _shift_selection(selection: Selection, item: _Item, shift: int) -> Selection:
        """The selection with its ends in `item` moved `shift` rows down."""

        def moved(offset: Offset | None) -> Offset | None:
            if offset is None or offset.y // ROWS_PER_MESSAGE != item.id:
                return offset
            return Offset(offset.x, offset.y + shift)

        return Selection(moved(selection.start), moved(selection.end))

    def _select_message(self, item: _Item) -> None:
        """Select the text of one message's body (a double click), not Textual's select-all of the whole list."""
        self._render_in_full(item)
        start = Offset(0, item.id * ROWS_PER_MESSAGE + 1)
        end = Offset(-1, item.id * ROWS_PER_MESSAGE + max(1, len(item.body)))
        self.screen.selections = {self: Selection(start, end)}

    def _refresh_item(self, item: _Item) -> None:
        item.rows.clear()
        if self._layout_stale:
            self._layout()
        self.refresh_lines(item.top, item.height)

    # ----------------------------------------------------------------------------------------------------
    # Selection and actions

    def validate_selected_id(self, value: int | None) -> int | None:
        return value if value in self._by_id else None

    def watch_selected_id(self, old_value: int | None, new_value: int | None) -> None:
        self._selection_changed(old_value, new_value)
        if new_value is not None:
            with self._one_sync():
                self._scroll_into_view(self._by_id[new_value])

    def _selection_changed(self, old_value: int | None, new_value: int | None) -> None:
        if self._to_first and (not self._items or new_value != self._items[0].id):
            self._to_first = False  # the user moved on before the first message arrived
        self._code_cursor = None
        for message_id in (old_value, new_value):
            if message_id is not None and (item := self._by_id.get(message_id)) is not None:
                self._refresh_item(item)
        self._refresh_bindings_if_changed()

    def _scroll_into_view(self, item: _Item) -> None:
        """Scroll the least distance that shows the item (its top, when it is taller than the view)."""
        if not self._width or not self._is_shown():
            return
        if not item.rendered:
            # Its real height is needed for the target; the window around the target is rendered by the sync.
            self._render_item(self._reply_console(), item, self._width)
            self._layout()
            self._publish_size()
            self._sync()
        if self._layout_stale:
            self._layout()
        view_height = self.scrollable_content_region.height
        scroll_y = round(self.scroll_y)
        top, bottom = item.top, item.top + item.height - 1  # without the separator row
        if top < scroll_y or bottom - top > view_height:
            target = top
        elif bottom > scroll_y + view_height:
            target = bottom - view_height
        else:
            return
        self._set_scroll_y(target)
        self._follow = round(self.scroll_y) >= self.max_scroll_y
        self._sync()
        if round(self.scroll_y) == 0:
            self._request_earlier()

    def _target(self) -> _Item | None:
        """The message an action applies to: the selected one, else the last one."""
        if self.selected_id is not None:
            return self._by_id.get(self.selected_id)
        return self._items[-1] if self._items else None

    def _edit_target(self) -> _Item | None:
        """The prompt Edit applies to: the selected message if it is one, else (nothing selected) the last one."""
        if self.selected_id is not None:
            item = self._by_id.get(self.selected_id)
            return item if item is not None and item.is_user else None
        return next((item for item in reversed(self._items) if item.is_user), None)

    _CHECKED_ACTIONS: ClassVar[tuple[str, ...]] = ("clear_selection", "copy", "regenerate", "retry", "edit", "sibling")

    def _refresh_bindings_if_changed(self) -> None:
        """Ask for a bindings refresh only when `check_action`'s answers changed.

        Each refresh rebuilds the Footer: moving the selection between messages of the same kind must not.
        """
        state = tuple(self.check_action(action, ()) for action in self._CHECKED_ACTIONS)
        if state != self._bindings_state:
            self._bindings_state = state
            self.refresh_bindings()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        item = self._target()
        if action == "clear_selection":
            return self.selected_id is not None
        if action in ("copy", "copy_code"):
            return item is not None
        if action == "regenerate":
            return (
                item is not None
                and not item.is_user
                and item.entry.message.status in (Status.COMPLETE, Status.INTERRUPTED)
            )
        if action == "retry":
            return item is not None and not item.is_user and item.entry.message.status == Status.ERROR
        if action == "edit":
            return self._edit_target() is not None
        if action == "sibling":
            return item is not None and item.entry.sibling_count > 1
        return True

    def action_select_previous(self) -> None:
        self._to_first = False  # the user moves: a walk to the first message stops where it is
        with self._one_sync():
            if not self._items:
                return
            if self.selected_id is None:
                self.selected_id = self._items[-1].id
                return
            index = self._index(self._by_id[self.selected_id])
            if index > 0:
                self.selected_id = self._items[index - 1].id
            else:
                self._scroll_into_view(self._items[0])
                self._request_earlier()

    def action_select_next(self) -> None:
        with self._one_sync():
            if self.selected_id is None:
                return
            index = self._index(self._by_id[self.selected_id])
            if index + 1 < len(self._items):
                self.selected_id = self._items[index + 1].id

    def action_select_first(self) -> None:
        self._to_first = self._has_earlier
        self._show_first()

    def _show_first(self) -> None:
        """Select the first message loaded and show it at the top; if earlier ones exist and the user is on the
        way to the first of all, ask for them."""
        with self._one_sync():
            if self._items:
                self.selected_id = self._items[0].id
                self._set_scroll_y(0)
                self._follow = self.max_scroll_y == 0
                self._sync()
                if not self._has_earlier:
                    self._to_first = False
                self._request_earlier()

    def action_follow_end(self) -> None:
        with self._one_sync():
            self.selected_id = None
            self._follow = True
            self._sync()

    def action_clear_selection(self) -> None:
        self.selected_id = None
        if self.text_selection is not None:
            self.screen.clear_selection()

    def action_page_up(self) -> None:
        self.scroll_page_up(animate=False)

    def action_page_down(self) -> None:
        self.scroll_page_down(animate=False)

    def action_copy(self) -> None:
        if self.text_selection is not None and copy_selected_text(self.screen):
            return
        item = self._target()
        if item is None:
            return
        text = item.text
        self.app.copy_to_clipboard(text)
        self.notify(f"Copied message ({len(text):,} characters)")

    def action_copy_code(self) -> None:
        item = self._target()
        if item is None:
            return
        blocks = code_blocks(item.text) if not item.is_user else []
        if not blocks:
            self.notify("No code block in this message", severity="warning")
            return
        index = 0
        if self._code_cursor is not None and self._code_cursor[0] == item.id:
            index = (self._code_cursor[1] + 1) % len(blocks)
        self._code_cursor = (item.id, index)
        self.app.copy_to_clipboard(blocks[index])
        self.notify(f"Copied code block {index + 1}/{len(blocks)}")

    def action_regenerate(self) -> None:
        if (item := self._target()) is not None:
            self.post_message(self.RegenerateRequested(self, item.id))

    def action_retry(self) -> None:
        if (item := self._target()) is not None:
            self.post_message(self.RetryRequested(self, item.id))

    def action_edit(self) -> None:
        if (item := self._edit_target()) is not None:
            self.post_message(self.EditRequested(self, item.id))

    def action_sibling(self, direction: int) -> None:
        if (item := self._target()) is not None:
            self._request_sibling(item, direction)

    def _request_sibling(self, item: _Item, direction: int) -> None:
        index = item.entry.sibling_index + direction
        if 1 <= index <= item.entry.sibling_count:
            self.post_message(self.SiblingRequested(self, item.id, direction))

    def on_click(self, event: events.Click) -> None:
        offset = event.get_content_offset(self)
        if offset is None:
            return
        y = round(self.scroll_y) + offset.y
        item = self._item_at(y)
        if item is not None and event.chain > 1:
            event.prevent_default()  # Textual's double click selects all of the widget: every loaded message
            self._select_message(item)
        if item is not None and y == item.top and item.entry.sibling_count > 1:
            # "‹ 2/3 ›" in the header: a click on an arrow (or the space beside it) shows the other version.
            header = self._compose_row(item, 0, self.scrollable_content_region.width).text
            marks = header.rfind("‹"), header.rfind("›")
            for direction, x in zip((-1, 1), marks, strict=True):
                if x >= 0 and abs(offset.x - x) <= 1:
                    self._request_sibling(item, direction)
        if item is not None and item.id != self.selected_id:
            # Selected where it is: a click is on what the user is reading, which must not jump to the message's top.
            old_value = self.selected_id
            self.set_reactive(MessageList.selected_id, item.id)
            self._selection_changed(old_value, item.id)

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self._to_first = False  # at the top already, the scroll changes nothing that would stop a walk to the first
        if round(self.scroll_y) == 0:
            self._request_earlier()
