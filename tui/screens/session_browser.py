"""Find a past conversation: list sessions newest first a page at a time, search messages, rename, archive, delete."""

from __future__ import annotations

import asyncio
import re
import unicodedata
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual import on, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Input, OptionList, Static
from textual.widgets.option_list import Option
from textual.worker import Worker

from core.errors import ChatError
from core.models import Role, SearchHit, Session
from core.store import Store
from core.text import inert
from tui.screens.dialogs import Confirm, TextPrompt, key_hints

PAGE_SIZE = 50
"""Sessions fetched per page; the next page loads when the highlight nears the end of the list."""
PREFETCH_ROWS = 5
"""Load the next page when the highlight comes this close to the last row."""
SEARCH_LIMIT = 100
SEARCH_DELAY = 0.15
"""Seconds of quiet typing before a search runs."""
SNIPPET_LEAD = 24
"""Cells of a snippet kept before its first match: the match shows even in a row at 80 columns."""


def short_time(stamp: str) -> str:
    """A stored ISO 8601 UTC stamp as local time, e.g. ``2026-11-25 15:45``; the TZ variable decides the zone."""
    try:
        moment = datetime.fromisoformat(stamp)
    except ValueError:
        return stamp[:16]
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M")


def _fold(text: str) -> str:
    """Casefolded without accents, as the search index compares words (unicode61 remove_diacritics)."""
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    return "".join(c for c in decomposed if not unicodedata.combining(c))


_MARKED = re.compile(r"\[([^\[\]]+)\]")
_MARKDOWN = (
    (re.compile(r"```\w*"), ""),  # code fences
    (re.compile(r"(^|\s)#{1,6}(?=\s)"), r"\1"),  # heading marks
    (re.compile(r"(^|\s)>(?=\s)"), r"\1"),  # quote marks
    (re.compile(r"\*\*(?=\S)(.+?)(?<=\S)\*\*"), r"\1"),  # **strong**
    (re.compile(r"(?<![\w*])\*(?=[^\s*])(.+?)(?<=[^\s*\\])\*(?![\w*])"), r"\1"),  # *emphasis*, not 2*3*4
    (re.compile(r"`([^`]+)`"), r"\1"),  # `code`
    (re.compile(r"\\([\\`*_#|<>])"), r"\1"),  # escapes (not of brackets: they would read as match marks)
)


_TABLE_RULE = re.compile(r"[\s|:-]*-[\s|:-]*")  # | --- | :-: | (and a --- rule)
_CELL_BAR = re.compile(r"(?<!\\)\|")  # not an escaped \|, which the escapes rule shows as |


def _without_tables(snippet: str) -> str:
    """Markdown table rows as their cells' words, without the pipes and the separator row, as the reply renders.

    A row starts or ends with a pipe; the snippet may cut the first and last rows, next to its ``…``.
    """
    lines = []
    for line in snippet.splitlines():
        bare = line.strip().strip("…").strip()
        if _TABLE_RULE.fullmatch(bare):
            continue
        lines.append(_CELL_BAR.sub(" ", line) if bare.startswith("|") or bare.endswith("|") else line)
    return "\n".join(lines)


def _cut_lead(flat: str, first: int) -> str:
    """``flat`` from a ``…`` and at most SNIPPET_LEAD cells before index ``first``, starting at a word if it can."""
    start = max(first - SNIPPET_LEAD, 0)
    while cell_len(flat[start:first]) > SNIPPET_LEAD - 1:  # one cell for the ellipsis
        start += 1
    space = flat.find(" ", max(start - 1, 0), first - 1)
    if space != -1:  # start at a word, if that leaves some words before the match (CJK text has no spaces)
        start = space + 1
    return "…" + flat[start:]


def snippet_text(snippet: str, query: str, *, markdown: bool = False) -> Text:
    """A search snippet with the matched words highlighted and the ``[``/``]`` match marks removed.

    The text itself may contain brackets, so a bracketed run counts as a mark only when it starts like a
    word of the query; anything else is shown literally. With `markdown` (a reply), Markdown's marks are
    dropped, so the snippet reads as the rendered reply does. Text before the first match is cut to
    ``SNIPPET_LEAD`` cells (at a space if it can), so that the row, cut at its end, still shows the match.
    """
    words = [_fold(w) for w in re.findall(r"\w+", query)]

    def marks(flat: str) -> list[re.Match[str]]:
        return [m for m in _MARKED.finditer(flat) if any(_fold(m.group(1)).startswith(word) for word in words)]

    flat = " ".join((_without_tables(snippet) if markdown else snippet).split())
    if markdown:
        for pattern, replacement in _MARKDOWN:
            flat = pattern.sub(replacement, flat)
        flat = " ".join(flat.split())
    found = marks(flat)
    if found and cell_len(flat[: found[0].start()]) > SNIPPET_LEAD:
        flat = _cut_lead(flat, found[0].start())
        found = marks(flat)
    text = Text(no_wrap=True, overflow="ellipsis")
    position = 0
    for match in found:
        text.append(flat[position : match.start()])
        text.append(match.group(1), style="bold underline")
        position = match.end()
    text.append(flat[position:])
    return text


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


@dataclass(frozen=True)
class SessionChoice:
    """What the browser was closed with: a session, and the message to open it at when a search hit was chosen."""

    session_id: int
    message_id: int | None = None
    """A message of the session: the app opens the session on the branch that leads to this message."""


class SessionBrowser(ModalScreen[SessionChoice | None]):
    """Browse and search the history; dismissed with a SessionChoice, or None on Esc.

    Renaming and deleting happen here and are announced with ``SessionRenamed`` / ``SessionDeleted``, which bubble
    to the app so that it can relabel or close the tabs showing that session.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("down", "cursor('down')", "Down", show=False, id="sessions.down"),
        Binding("up", "cursor('up')", "Up", show=False, id="sessions.up"),
        Binding("pagedown", "cursor('page_down')", "Page down", show=False, id="sessions.page_down"),
        Binding("pageup", "cursor('page_up')", "Page up", show=False, id="sessions.page_up"),
        Binding("ctrl+r,f2", "rename", "Rename", id="sessions.rename"),
        # ctrl+a and ctrl+d are also Input keys (home, delete right): priority lets the screen have them.
        Binding("ctrl+a", "archive", "Archive", priority=True, id="sessions.archive"),
        Binding("ctrl+d", "delete", "Delete", priority=True, id="sessions.delete"),
        Binding("delete", "delete_key", "Delete", show=False, priority=True, id="sessions.delete_key"),
        Binding("ctrl+o", "toggle_archived", "Archived", id="sessions.toggle_archived"),
        Binding("escape", "close", "Close", id="sessions.close"),
    ]

    class SessionRenamed(Message):
        """A session was renamed here."""

        def __init__(self, session_id: int, title: str) -> None:
            super().__init__()
            self.session_id = session_id
            """The session renamed."""
            self.title = title
            """Its new title."""

    class SessionDeleted(Message):
        """A session and all its messages were deleted here."""

        def __init__(self, session_id: int) -> None:
            super().__init__()
            self.session_id = session_id
            """The session deleted; tabs showing it should close."""

    def __init__(
        self,
        store: Store,
        *,
        open_ids: Collection[int] = (),
        format_time: Callable[[str], str] = short_time,
    ) -> None:
        super().__init__()
        self.store = store
        self.open_ids = frozenset(open_ids)
        """Sessions open in a tab: marked with ● in the list."""
        self.format_time = format_time
        """Turns a stored timestamp into the short date shown on a row; injectable for deterministic snapshots."""
        self.show_archived = False
        """Listing archived sessions instead of the active ones (searches cover both)."""
        self._choices: list[SessionChoice] = []
        """One per row of the list, in the same order."""
        self._rows: list[tuple[SessionChoice, str]] = []
        """The rows listed, as text: a refresh that would list the same ones changes nothing."""
        self._query = ""
        self._generation = 0
        """Bumped on every new listing, so results of an outdated one are dropped."""
        self._more = False
        """The last page was full: there may be more sessions to load."""
        self._fetched = 0
        """Sessions read so far in list mode: the offset of the next page."""
        self._loading_more = False
        self._edit: Worker[None] | None = None
        """The running rename, archive or delete, if any."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(classes="dialog-title", id="browser-title")
            yield Input(placeholder="Search messages…", id="search")
            yield OptionList(id="results", markup=False)
            yield Static(id="empty")
            yield Static(classes="dialog-hint")

    def on_mount(self) -> None:
        results = self.query_one("#results", OptionList)
        results.can_focus = False  # typing always goes to the search box; arrows move the highlight from there
        self.query_one("#search", Input).focus()
        self.watch(results, "scroll_y", self._scrolled, init=False)
        self._refresh_header()
        self._reload()

    # -- listing and searching -----------------------------------------------------------------------------

    @property
    def results(self) -> OptionList:
        return self.query_one("#results", OptionList)

    @property
    def choices(self) -> Sequence[SessionChoice]:
        """What each row of the list stands for, top to bottom (sessions, or search hits)."""
        return tuple(self._choices)

    @property
    def highlighted_choice(self) -> SessionChoice | None:
        """The row under the highlight."""
        index = self.results.highlighted
        return self._choices[index] if index is not None and index < len(self._choices) else None

    def refresh_rows(self) -> None:
        """List again (another process wrote: new chats, counts, one deleted), the same row highlighted and the
        list where it was scrolled; nothing moves if nothing listed changed. Not while an edit of ours runs."""
        if self._edit is None or not self._edit.is_running:
            self._reload(keep=self.results.highlighted, keep_choice=self.highlighted_choice)

    def _reload(self, *, keep: int | None = None, delay: float = 0.0, keep_choice: SessionChoice | None = None) -> None:
        """List again for the current query and mode.

        ``keep``: a row index to highlight afterwards (after an edit, a refresh); the rows already loaded are
        listed again. ``keep_choice``: a refresh's row to highlight, wherever it is now. The old rows stay (and
        stay choosable) until the new ones arrive.
        """
        self._generation += 1
        self._loading_more = False
        limit = PAGE_SIZE if keep is None else max(len(self._choices), PAGE_SIZE)
        self._load(self._generation, self._query, self.show_archived, limit, keep, delay, keep_choice)

    @work(group="rows", exclusive=True, exit_on_error=False)
    async def _load(
        self,
        generation: int,
        query: str,
        archived: bool,
        limit: int,
        keep: int | None,
        delay: float,
        keep_choice: SessionChoice | None = None,
    ) -> None:
        if delay:
            await asyncio.sleep(delay)  # debounce: a newer keystroke cancels this worker (exclusive)
        try:
            if query.strip():
                hits = await self.store.search(query, limit=SEARCH_LIMIT)
                rows = [(SessionChoice(h.session_id, h.message_id), self._hit_row(h, query)) for h in hits]
                more = False
            else:
                sessions = await self.store.list_sessions(limit=limit, archived=archived)
                rows = [(SessionChoice(s.id), self._session_row(s)) for s in sessions]
                more = len(sessions) == limit
        except ChatError as error:
            if generation == self._generation:
                self._show([], error=str(error))
            return
        if generation == self._generation:
            self._more = more
            self._fetched = len(rows)
            if keep_choice is None:
                self._show(rows, keep=keep)
                return
            if [(choice, prompt.plain) for choice, prompt in rows] == self._rows:
                return  # a refresh that changes nothing listed: not even a repaint
            choices = [choice for choice, _ in rows]
            scrolled = self.results.scroll_y
            self._show(rows, keep=choices.index(keep_choice) if keep_choice in choices else keep)
            self.results.scroll_to(y=scrolled, animate=False, immediate=True)

    def _show(self, rows: list[tuple[SessionChoice, Text]], *, keep: int | None = None, error: str = "") -> None:
        self._choices = [choice for choice, _ in rows]
        self._rows = [(choice, prompt.plain) for choice, prompt in rows]
        results = self.results
        results.set_options(Option(prompt) for _, prompt in rows)
        if rows:
            results.highlighted = min(keep or 0, len(rows) - 1)
        if error:
            empty = error
        elif self._query.strip():
            empty = f"No matches for “{self._query.strip()}”"
        else:
            empty = "No archived conversations" if self.show_archived else "No conversations yet"
        self.query_one("#empty", Static).update(Text(empty))
        self.set_class(not rows, "-empty")
        self.set_class(self.show_archived, "-archived")
        self._refresh_header()

    def _load_more_if_near_end(self) -> None:
        results = self.results
        if not self._more or self._loading_more or self._query.strip():
            return
        near_highlight = results.highlighted is not None and results.highlighted >= len(self._choices) - PREFETCH_ROWS
        near_bottom = results.max_scroll_y > 0 and results.scroll_y >= results.max_scroll_y - PREFETCH_ROWS
        if near_highlight or near_bottom:
            self._loading_more = True
            self._load_page(self._generation, self._fetched, self.show_archived)

    @work(group="more", exit_on_error=False)
    async def _load_page(self, generation: int, offset: int, archived: bool) -> None:
        try:
            sessions = await self.store.list_sessions(limit=PAGE_SIZE, offset=offset, archived=archived)
        except ChatError as error:
            if generation == self._generation:
                self._loading_more = False
                self.notify(str(error), severity="error", markup=False)
            return
        if generation != self._generation:
            return
        known = {choice.session_id for choice in self._choices}
        # A session used meanwhile moves to the top and shifts the pages: skip the ones already listed.
        fresh = [s for s in sessions if s.id not in known]
        self._choices.extend(SessionChoice(s.id) for s in fresh)
        self.results.add_options(Option(self._session_row(s)) for s in fresh)
        self._more = len(sessions) == PAGE_SIZE
        self._fetched += len(sessions)
        self._loading_more = False
        self._load_more_if_near_end()

    def _mark(self, session_id: int) -> str:
        return "●" if session_id in self.open_ids else " "

    def _session_row(self, session: Session) -> Text:
        # Fixed-width columns first, the title last: rows line up at any width and the title takes the rest.
        return Text.assemble(
            self._mark(session.id),
            " ",
            (self.format_time(session.updated_at), "dim"),
            " ",
            (_plural(session.message_count, "msg").rjust(9), "dim"),
            "  ",
            _one_line(session.display_title),
        )

    def _hit_row(self, hit: SearchHit, query: str) -> Text:
        row = Text.assemble(
            self._mark(hit.session_id),
            " ",
            (_one_line(inert(hit.session_title or "New chat")), "bold"),
            ("  " + self.format_time(hit.created_at), "dim"),
            "\n    ",
            ("You: " if hit.role is Role.USER else "AI: ", "dim"),
        )
        row.append_text(snippet_text(hit.snippet, query, markdown=hit.role is Role.ASSISTANT))
        return row

    def _refresh_header(self) -> None:
        """Title and key hints for the current mode."""
        searching = bool(self._query.strip())
        title = "Search" if searching else "Archived conversations" if self.show_archived else "Conversations"
        self.query_one("#browser-title", Static).update(Text(title))
        describe = {"archive": "Unarchive", "toggle_archived": "Active"} if self.show_archived else {}
        self.query_one(".dialog-hint", Static).update(key_hints(self, [("Enter", "Open")], describe=describe))

    # -- events --------------------------------------------------------------------------------------------

    @on(Input.Changed, "#search")
    def _query_changed(self, event: Input.Changed) -> None:
        if event.value == self._query:
            return
        self._query = event.value
        self._reload(delay=SEARCH_DELAY if event.value.strip() else 0.0)

    @on(Input.Submitted, "#search")
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self._choose()

    @on(OptionList.OptionSelected, "#results")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self._choose()

    @on(OptionList.OptionHighlighted, "#results")
    def _highlighted(self, event: OptionList.OptionHighlighted) -> None:
        event.stop()
        self._load_more_if_near_end()

    def _scrolled(self, _scroll_y: float) -> None:
        self._load_more_if_near_end()

    def _choose(self) -> None:
        choice = self.highlighted_choice
        if choice is not None:
            self.dismiss(choice)

    # -- actions -------------------------------------------------------------------------------------------

    def action_cursor(self, direction: str) -> None:
        moves = {
            "up": self.results.action_cursor_up,
            "down": self.results.action_cursor_down,
            "page_up": self.results.action_page_up,
            "page_down": self.results.action_page_down,
        }
        moves[direction]()

    def action_close(self) -> None:
        self.dismiss(None)

    def action_toggle_archived(self) -> None:
        self.show_archived = not self.show_archived
        if self._query.strip():
            self.query_one("#search", Input).value = ""  # the Changed handler lists the other view
        else:
            self._reload()

    def _editable(self) -> SessionChoice | None:
        """The highlighted row, unless an edit is still running (a second ctrl+a would race the first)."""
        if self._edit is not None and not self._edit.is_finished:
            return None
        return self.highlighted_choice

    def action_rename(self) -> None:
        if (choice := self._editable()) is not None:
            self._edit = self._rename(choice.session_id)

    def action_archive(self) -> None:
        if (choice := self._editable()) is not None:
            self._edit = self._archive(choice.session_id)

    def action_delete(self) -> None:
        if (choice := self._editable()) is not None:
            self._edit = self._delete(choice.session_id)

    def action_delete_key(self) -> None:
        search = self.query_one("#search", Input)
        if search.cursor_position < len(search.value):
            raise SkipAction()  # there is text to delete: let the Input have the key
        self.action_delete()

    @work(group="edit", exit_on_error=False)
    async def _rename(self, session_id: int) -> None:
        try:
            session = await self.store.get_session(session_id)
            title = await self.app.push_screen_wait(
                TextPrompt("Rename conversation", session.title or "", placeholder="Title")
            )
            if title is None or not title.strip() or title.strip() == session.title:
                return
            title = title.strip()
            await self.store.update_session(session_id, title=title)
        except ChatError as error:
            self.notify(str(error), severity="error", markup=False)
        else:
            self.post_message(self.SessionRenamed(session_id, title))
        self._reload(keep=self.results.highlighted)

    @work(group="edit", exit_on_error=False)
    async def _archive(self, session_id: int) -> None:
        try:
            session = await self.store.get_session(session_id)
            await self.store.update_session(session_id, archived=not session.archived)
        except ChatError as error:
            self.notify(str(error), severity="error", markup=False)
        else:
            done = "Restored" if session.archived else "Archived"
            self.notify(f"{done} “{session.display_title}”", markup=False)
        self._reload(keep=self.results.highlighted)

    @work(group="edit", exit_on_error=False)
    async def _delete(self, session_id: int) -> None:
        try:
            session = await self.store.get_session(session_id)
            count = session.message_count
            question = (
                f"Delete “{session.display_title}” and its {_plural(count, 'message')}?"
                if count
                else f"Delete “{session.display_title}”?"
            )
            if not await self.app.push_screen_wait(Confirm(question)):
                return
            await self.store.delete_session(session_id)
        except ChatError as error:
            self.notify(str(error), severity="error", markup=False)
        else:
            self.post_message(self.SessionDeleted(session_id))
        self._reload(keep=self.results.highlighted)
