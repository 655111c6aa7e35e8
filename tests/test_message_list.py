"""MessageList: the conversation view's rendering, streaming, scrolling and keys, through Textual's pilot."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import pytest
from rich.console import Console
from rich.markdown import Markdown
from textual.app import App, ComposeResult
from textual.containers import Vertical
from textual.geometry import Region
from textual.pilot import Pilot

from core.models import Message, Role, Status
from tests.helpers import screen_text
from tui.widgets import markdown_render
from tui.widgets import message_list as message_list_module
from tui.widgets.message_list import ChatEntry, MessageList

STYLES = Path(__file__).parent.parent / "tui" / "styles" / "message_list.tcss"

REPLY = """# Streaming check

A first paragraph with **bold**, *emphasis*, `inline code`, a [link](https://example.com)
and [the docs][docs]. It wraps over more than one line when the terminal is narrow enough, which it is here.

- a bullet
- another bullet
  continued on an indented line

1. first
2. second

```python
def handler(event):
    total = 0
    for value in event.values:
        total += value

    return total
```

> A quote that closes the reply.

| col | other |
| --- | ----- |
| 1   | 2     |

The end.

[docs]: https://example.com/docs
"""


def make_message(
    message_id: int,
    role: str,
    content: str = "",
    status: Status = Status.COMPLETE,
    *,
    model: str | None = None,
    error: str | None = None,
) -> Message:
    return Message(
        id=message_id,
        session_id=1,
        parent_id=message_id - 1 if message_id > 1 else None,
        role=Role(role),
        content=content,
        status=status,
        model=model,
        prompt_tokens=None,
        completion_tokens=None,
        error=error,
        created_at="2025-01-01T00:00:00Z",
        updated_at="2025-01-01T00:00:00Z",
    )


def conversation(count: int, first_id: int = 1) -> list[ChatEntry]:
    """Alternating user and assistant messages of a few lines each."""
    entries = []
    for message_id in range(first_id, first_id + count):
        role = "user" if message_id % 2 else "assistant"
        lines = "\n".join(f"line {n} of message {message_id}" for n in range(3))
        content = f"Message {message_id}\n\n{lines}"
        entries.append(ChatEntry(make_message(message_id, role, content)))
    return entries


class ListApp(App[None]):
    CSS_PATH = STYLES

    def __init__(self) -> None:
        super().__init__()
        self.copied: list[str] = []
        self.posted: list[object] = []

    def compose(self) -> ComposeResult:
        with Vertical(id="pane"):
            yield MessageList()

    def copy_to_clipboard(self, text: str) -> None:
        self.copied.append(text)

    def on_message_list_regenerate_requested(self, message: MessageList.RegenerateRequested) -> None:
        self.posted.append(message)

    def on_message_list_retry_requested(self, message: MessageList.RetryRequested) -> None:
        self.posted.append(message)

    def on_message_list_edit_requested(self, message: MessageList.EditRequested) -> None:
        self.posted.append(message)

    def on_message_list_sibling_requested(self, message: MessageList.SiblingRequested) -> None:
        self.posted.append(message)

    def on_message_list_load_earlier_requested(self, message: MessageList.LoadEarlierRequested) -> None:
        self.posted.append(message)


def visible_lines(message_list: MessageList) -> list[str]:
    """The text of every row the widget shows now."""
    return [message_list.render_line(y).text for y in range(message_list.scrollable_content_region.height)]


def content_lines(message_list: MessageList) -> list[str]:
    """The visible rows without the blank rows below the last message (the view must hold them all)."""
    lines = [line.rstrip() for line in visible_lines(message_list)]
    while lines and not lines[-1]:
        lines.pop()
    return lines


async def settle(pilot) -> None:
    """Let flush timers, after-refresh callbacks and repaints run."""
    await pilot.pause(0.15)
    await pilot.pause()


async def with_streaming_reply(pilot: Pilot[None]) -> MessageList:
    """The list showing six messages and an empty streaming reply (id 7), settled."""
    view = pilot.app.query_one(MessageList)
    view.set_entries(conversation(6) + [ChatEntry(make_message(7, "assistant", "", Status.STREAMING))])
    await settle(pilot)
    return view


@pytest.fixture
def count_renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Record every Markdown render the widget makes (itself, or through the module's render_end)."""
    calls: list[str] = []
    render = markdown_render.render_markdown

    def counting(console: Console, text: str, width: int):
        calls.append(text)
        return render(console, text, width)

    monkeypatch.setattr(message_list_module, "render_markdown", counting)
    monkeypatch.setattr(markdown_render, "render_markdown", counting)
    return calls


async def test_streamed_reply_ends_identical_to_one_shot_render() -> None:
    streamed_app, one_shot_app = ListApp(), ListApp()
    user = ChatEntry(make_message(1, "user", "Show me"))
    async with streamed_app.run_test(size=(100, 120)) as pilot:
        view = streamed_app.query_one(MessageList)
        view.set_entries([user, ChatEntry(make_message(2, "assistant", "", Status.STREAMING, model="m"))])
        for start in range(0, len(REPLY), 3):
            view.append_text(2, REPLY[start : start + 3])
            if start % 60 == 0:
                await pilot.pause(0.02)  # let the tail be re-rendered mid-block, mid-fence, mid-list
        await settle(pilot)
        streaming = content_lines(view)
        assert any("▍" in line for line in streaming)
        # The reference's definition comes blocks later: only a one-shot render resolves it.
        assert any("[the docs][docs]" in line for line in streaming)
        view.update_entry(ChatEntry(make_message(2, "assistant", REPLY, model="m")))
        await settle(pilot)
        streamed = content_lines(view)
    async with one_shot_app.run_test(size=(100, 120)) as pilot:
        view = one_shot_app.query_one(MessageList)
        view.set_entries([user, ChatEntry(make_message(2, "assistant", REPLY, model="m"))])
        await settle(pilot)
        one_shot = content_lines(view)
    assert len(one_shot) > 30
    assert not any("[docs]" in line for line in one_shot)
    assert streamed == one_shot
    assert not any("▍" in line for line in streamed)


async def test_a_long_reply_ending_in_view_gets_its_one_shot_render_from_a_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    reply = "\n\n".join(f"Paragraph {n}: " + "some words " * 20 for n in range(20)) + "\n\n" + REPLY
    renders: list[tuple[bool, int]] = []  # (on the event loop's thread, length)
    render = markdown_render.render_markdown

    def recording(console: Console, text: str, width: int):
        renders.append((threading.current_thread() is threading.main_thread(), len(text)))
        return render(console, text, width)

    monkeypatch.setattr(message_list_module, "render_markdown", recording)
    app = ListApp()
    async with app.run_test(size=(100, 40)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries([ChatEntry(make_message(1, "assistant", "", Status.STREAMING))])
        for start in range(0, len(reply), 200):
            view.append_text(1, reply[start : start + 200])
            await pilot.pause(0.02)
        await settle(pilot)
        renders.clear()
        view.update_entry(ChatEntry(make_message(1, "assistant", reply)))
        # At once: the end as streamed, no streaming mark, and no whole-text render on the event loop.
        shown = "\n".join(visible_lines(view))
        assert "The end." in shown and "▍" not in shown
        assert all(length < len(reply) for on_loop, length in renders if on_loop)
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert (False, len(reply)) in renders
        body = [strip.text for strip in view._by_id[1].body]
        width = view._by_id[1].width
        assert body == [strip.text for strip in render(app.console, reply, width)]
        assert not any("[docs]" in line for line in body)  # the reference resolved, as only a one-shot render can


@pytest.mark.parametrize(
    ("text", "boundary"),
    [
        ("A paragraph.\n\nThe next one, still stream", 14),  # a line being streamed starts a block
        ("A paragraph.\n\n- an item being stream", 0),  # a list item may continue the list
        ("A paragraph.\n\n12", 0),  # may still become "12. an item"
        ("A paragraph.\n\n  indented, may continue", 0),
        ("A paragraph.\n\n-", 0),
        ("A paragraph.\n\nThe next one.\n", 14),  # complete lines, as before
        ("```\ncode\n\nmore code", 0),  # inside a fence: no blocks
    ],
)
def test_block_scanner_finds_a_boundary_on_the_line_being_streamed(text: str, boundary: int) -> None:
    assert markdown_render.BlockScanner().feed(text) == boundary


async def test_a_finished_paragraph_is_rendered_once_when_the_next_one_starts(count_renders: list[str]) -> None:
    """Replies put a paragraph on one line: the one before it stays out of the live tail's re-renders."""
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries([ChatEntry(make_message(1, "assistant", "", Status.STREAMING))])
        await settle(pilot)
        view.append_text(1, "The first paragraph.\n\nThe second")
        await settle(pilot)
        for words in [" paragraph", " grows", " word", " by word."]:
            view.append_text(1, words)
            await settle(pilot)
        assert sum("first paragraph" in text for text in count_renders) == 1
        assert "The second paragraph grows word by word." in "\n".join(visible_lines(view))


def test_markdown_with_shared_parser_renders_like_rich() -> None:
    console = Console(width=90, color_system="truecolor", force_terminal=True)
    options = console.options.update(width=90, height=None)
    ours = markdown_render.render_markdown(console, REPLY, 90)
    theirs = console.render_lines(Markdown(REPLY, code_theme=markdown_render.CODE_THEME), options)
    assert [strip.text for strip in ours] == ["".join(segment.text for segment in line) for line in theirs]


def test_open_code_fence_rendered_in_pieces_matches_one_shot() -> None:
    console = Console(width=90, color_system="truecolor", force_terminal=True)
    code = "Intro.\n\n```python\n" + "\n".join(
        "" if n % 7 == 3 else f"value_{n} = compute(value, factor={n})  # step {n}" for n in range(30)
    )
    view = MessageList()
    item = message_list_module._Item(ChatEntry(make_message(2, "assistant", "", Status.STREAMING)))
    pieces_checked = 0
    for start in range(0, len(code), 5):
        item.append(code[start : start + 5])
        body, _ = view._render_streaming(console, item, 86)
        if item.code_lines:
            text = item.text
            closed = text + ("" if text.endswith("\n") else "\n") + "```\n"
            assert body == markdown_render.render_markdown(console, closed, 86)
            pieces_checked += 1
    assert pieces_checked > 50


async def test_control_and_escape_sequences_are_shown_inert() -> None:
    hostile = "before \x1b[2J\x1b]52;c;AAAA\x07 \x9b31m \x7f \x00 after &#x1b; &#27;"
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(
            [
                ChatEntry(make_message(1, "user", hostile)),
                ChatEntry(make_message(2, "assistant", hostile, model="\x1b[31mred")),
                ChatEntry(make_message(3, "assistant", "", Status.STREAMING)),
                ChatEntry(make_message(4, "assistant", "x", Status.ERROR, error="bad \x1b[5m error")),
            ]
        )
        view.append_text(3, hostile)
        await settle(pilot)
        text = "\n".join(visible_lines(view))
    assert text.count("before") == 3
    assert "␛[2J" in text and "␇" in text and "bad ␛[5m error" in text
    for control in ("\x1b", "\x07", "\x9b", "\x7f", "\x00"):
        assert control not in text


async def test_follows_the_end_while_streaming_unless_scrolled_up() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = await with_streaming_reply(pilot)
        for n in range(60):
            view.append_text(7, f"streamed line {n}\n\n")
            if n % 10 == 9:
                await settle(pilot)
                assert f"streamed line {n}" in "\n".join(visible_lines(view))
        assert view.max_scroll_y > 0

        view.scroll_to(y=0, animate=False)
        await settle(pilot)
        top_before = visible_lines(view)
        for n in range(60, 90):
            view.append_text(7, f"streamed line {n}\n\n")
        await settle(pilot)
        assert view.scroll_y == 0
        assert visible_lines(view) == top_before

        view.scroll_end(animate=False)
        await settle(pilot)
        view.append_text(7, "the very last line\n")
        await settle(pilot)
        assert "the very last line" in "\n".join(visible_lines(view))


async def test_a_finished_reply_rests_with_its_last_line_at_the_bottom() -> None:
    """While streaming, rows are kept free below the tail; once the reply is done they are given back."""
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = await with_streaming_reply(pilot)
        text = "".join(f"streamed line {n}\n\n" for n in range(40))
        view.append_text(7, text)
        await settle(pilot)
        assert visible_lines(view)[-1].strip() == "", "a stream keeps blank rows below its tail"

        view.update_entry(ChatEntry(make_message(7, "assistant", text + "the end")))
        await settle(pilot)
        lines = visible_lines(view)
        assert "the end" in lines[-2] and not lines[-1].strip(), "the last line, then the gap after a message"
        assert view.scroll_y == view.max_scroll_y


async def test_hidden_widget_only_stores_text_and_catches_up_when_shown(count_renders: list[str]) -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(conversation(2) + [ChatEntry(make_message(3, "assistant", "", Status.STREAMING))])
        await settle(pilot)
        app.query_one("#pane").display = False
        await settle(pilot)
        count_renders.clear()
        scheduled: list[str] = []

        def observe(name: str) -> None:
            original = getattr(view, name)

            def observed(*args, **kwargs):
                scheduled.append(name)
                return original(*args, **kwargs)

            setattr(view, name, observed)

        for name in ("refresh", "set_timer", "call_later", "call_after_refresh"):
            observe(name)
        for n in range(200):
            view.append_text(3, f"word{n} ")
        view.append_text(3, "\n\nfinal words here")
        for name in ("refresh", "set_timer", "call_later", "call_after_refresh"):
            delattr(view, name)
        assert scheduled == []
        await settle(pilot)
        assert count_renders == []

        app.query_one("#pane").display = True
        await settle(pilot)
        assert count_renders, "showing the widget renders the text that arrived while hidden"
        assert len(count_renders) <= 4
        assert "final words here" in "\n".join(visible_lines(view))


async def test_prepend_keeps_the_viewport_content_in_place() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(conversation(20, first_id=41), has_earlier=True)
        await settle(pilot)
        view.scroll_to(y=view.max_scroll_y // 2, animate=False)
        await settle(pilot)
        before = visible_lines(view)
        view.prepend_entries(conversation(40, first_id=1), has_earlier=False)
        await settle(pilot)
        assert visible_lines(view) == before
        assert view.entries[0].message.id == 1


async def test_load_earlier_requested_once_per_load_at_the_top() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(conversation(20, first_id=41), has_earlier=True)
        await settle(pilot)
        assert app.posted == []
        view.scroll_to(y=0, animate=False)
        await settle(pilot)
        view.scroll_to(y=10, animate=False)
        await settle(pilot)
        view.scroll_to(y=0, animate=False)
        await settle(pilot)
        requests = [m for m in app.posted if isinstance(m, MessageList.LoadEarlierRequested)]
        assert len(requests) == 1 and requests[0].message_id == 41

        view.prepend_entries(conversation(20, first_id=21), has_earlier=True)
        view.scroll_to(y=0, animate=False)
        await settle(pilot)
        requests = [m for m in app.posted if isinstance(m, MessageList.LoadEarlierRequested)]
        assert [m.message_id for m in requests] == [41, 21]

        view.prepend_entries(conversation(20, first_id=1), has_earlier=False)
        view.scroll_to(y=0, animate=False)
        await settle(pilot)
        assert len([m for m in app.posted if isinstance(m, MessageList.LoadEarlierRequested)]) == 2


async def test_keyboard_selection_and_copy() -> None:
    reply = "Two blocks:\n\n```python\nfirst = 1\n```\n\nand\n\n```sh\nsecond --flag\n```\n"
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(
            [ChatEntry(make_message(1, "user", "Question?")), ChatEntry(make_message(2, "assistant", reply))]
        )
        view.focus()
        await settle(pilot)
        await pilot.press("up")
        assert view.selected_id == 2
        await pilot.press("y")
        assert app.copied == [reply]
        await pilot.press("Y", "Y", "Y")
        assert app.copied[1:] == ["first = 1\n", "second --flag\n", "first = 1\n"]
        await pilot.press("up")
        assert view.selected_id == 1
        await pilot.press("y")
        assert app.copied[-1] == "Question?"
        await pilot.press("down")
        assert view.selected_id == 2
        await pilot.press("escape")
        assert view.selected_id is None


async def test_click_selects_a_message() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(conversation(2))
        await settle(pilot)
        rows = visible_lines(view)
        row = next(y for y, line in enumerate(rows) if "Message 2" in line)
        await pilot.click(MessageList, offset=(5, row))
        assert view.selected_id == 2


async def test_a_click_selects_a_long_message_without_scrolling_to_its_top() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        long_reply = "\n\n".join(f"paragraph {n}" for n in range(60))
        view.set_entries(conversation(2) + [ChatEntry(make_message(3, "assistant", long_reply))])
        await settle(pilot)
        view.scroll_to(y=view.max_scroll_y - 20, animate=False)
        await settle(pilot)
        before, rows = view.scroll_y, visible_lines(view)
        row = next(y for y, line in enumerate(rows) if "paragraph" in line)
        await pilot.click(MessageList, offset=(5, row))
        await settle(pilot)
        assert view.selected_id == 3
        assert view.scroll_y == before
        assert [line.strip() for line in visible_lines(view)] == [line.strip() for line in rows]


async def drag(pilot: Pilot[None], start: tuple[int, int], end: tuple[int, int]) -> None:
    """Press the mouse at `start`, move to `end`, release there. Offsets count the list's padding (one column,
    before the gutter), as the mouse's do."""
    await pilot.mouse_down(MessageList, offset=start)
    await pilot.hover(MessageList, offset=end)
    await pilot.mouse_up(MessageList, offset=end)
    await settle(pilot)


async def test_dragging_selects_the_text_as_shown_and_y_copies_it() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(conversation(3))
        await settle(pilot)
        rows = visible_lines(view)
        # Message 2 is a reply: its three lines are one Markdown paragraph, one row.
        first = next(y for y, line in enumerate(rows) if "line 1 of message 2" in line)
        last = next(y for y, line in enumerate(rows) if "Message 3" in line)
        start = rows[first].index("line 1")
        await drag(pilot, (1 + start, first), (10, last))

        # The text as shown, without gutters or padding, across two messages (the blank row between them too).
        expected = "line 1 of message 2 line 2 of message 2\n\nYou\nMessage"
        assert app.screen.get_selected_text() == expected
        selection = view._selection_style().bgcolor
        painted = view.render_lines(Region(0, 0, view.size.width, len(rows)))
        highlighted = [y for y, strip in enumerate(painted) if any(s.style.bgcolor == selection for s in strip)]
        assert highlighted == list(range(first, last + 1))
        # The gutter (after the padding column) is never highlighted, even on a row selected from its start.
        gutter = painted[last].crop(1, 2)._segments[0]
        assert gutter.text == "▌" and gutter.style.bgcolor != selection

        view.focus()
        await pilot.press("y")  # the selection, not the whole message
        assert app.copied == [expected]
        await pilot.press("escape")
        assert app.screen.get_selected_text() is None
        await pilot.press("y")
        assert app.copied[-1].startswith("Message 3")

        # Another conversation (or branch) in the list: a selection of the former one's rows is dropped.
        await drag(pilot, (1 + start, first), (10, last))
        assert app.screen.get_selected_text() == expected
        view.set_entries(conversation(3, first_id=10))
        await settle(pilot)
        assert app.screen.get_selected_text() is None


async def test_a_drag_to_the_left_edge_selects_up_to_that_row() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(conversation(3))
        view.scroll_to(y=3, animate=False)  # rows are addressed by message, not by their place in the view
        await settle(pilot)
        rows = visible_lines(view)
        first = next(y for y, line in enumerate(rows) if "Message 2" in line)
        last = next(y for y, line in enumerate(rows) if "Message 3" in line)
        # Upwards, ending on the padding left of the gutter: Textual reports a view row there, not an address.
        await drag(pilot, (1 + rows[last].index("3") + 1, last), (0, first))
        body = "line 0 of message 2 line 1 of message 2 line 2 of message 2"
        assert app.screen.get_selected_text() == f"Message 2\n\n{body}\n\nYou\nMessage 3"


async def test_a_double_click_selects_one_message_not_the_whole_list() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(conversation(3))
        await settle(pilot)
        row = next(y for y, line in enumerate(visible_lines(view)) if "line 1 of message 2" in line)
        await pilot.click(MessageList, offset=(8, row), times=2)
        await settle(pilot)
        body = "line 0 of message 2 line 1 of message 2 line 2 of message 2"
        assert app.screen.get_selected_text() == f"Message 2\n\n{body}"


async def test_sibling_position_in_header_and_sibling_keys() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        hello = make_message(2, "assistant", "Hello", model="gpt-x")
        reply = ChatEntry(hello, sibling_index=2, sibling_count=3)
        view.set_entries([ChatEntry(make_message(1, "user", "Hi")), reply])
        view.focus()
        await settle(pilot)
        header = next(line for line in visible_lines(view) if "Assistant" in line)
        assert "gpt-x" in header and "‹ 2/3 ›" in header
        assert not any("‹" in line for line in visible_lines(view) if "You" in line)
        await pilot.press("left", "right_square_bracket")
        siblings = [m for m in app.posted if isinstance(m, MessageList.SiblingRequested)]
        assert [(m.message_id, m.direction) for m in siblings] == [(2, -1), (2, 1)]

        # The arrows take a click too (offsets count the list's padding column); the text between them does not.
        # It is the clicked message's version that changes, whichever message was selected.
        view.selected_id = 1
        row = visible_lines(view).index(header)
        for x in (header.index("‹"), header.index("/"), header.index("›")):
            await pilot.click(MessageList, offset=(1 + x, row))
        await settle(pilot)
        siblings = [m for m in app.posted if isinstance(m, MessageList.SiblingRequested)]
        assert [(m.message_id, m.direction) for m in siblings[2:]] == [(2, -1), (2, 1)]


async def test_error_message_shows_its_text_and_r_retries() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(
            [
                ChatEntry(make_message(1, "user", "Hi")),
                ChatEntry(make_message(2, "assistant", "Partial", Status.ERROR, error="The server is down.")),
            ]
        )
        view.focus()
        await settle(pilot)
        text = "\n".join(visible_lines(view))
        assert "Partial" in text
        assert "The server is down." in text and "ctrl+r to retry" in text
        await pilot.press("r")
        assert [type(m) for m in app.posted] == [MessageList.RetryRequested]
        assert app.posted[0].message_id == 2


async def test_only_the_last_replys_mark_names_the_retry_key() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        failed = ChatEntry(make_message(2, "assistant", "", Status.ERROR, error="The server is down."))
        view.set_entries([ChatEntry(make_message(1, "user", "Hi")), failed])
        await settle(pilot)
        assert any("⚠ The server is down. — ctrl+r to retry" in line for line in visible_lines(view))
        view.append_entry(ChatEntry(make_message(3, "user", "Again")))  # the key retries the last reply only
        await settle(pilot)
        lines = [line.rstrip() for line in visible_lines(view)]
        assert "▌ ⚠ The server is down." in lines and not any("to retry" in line for line in lines)


async def test_regenerate_edit_and_interrupted_mark() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(
            [
                ChatEntry(make_message(1, "user", "Hi")),
                ChatEntry(make_message(2, "assistant", "Half a repl", Status.INTERRUPTED)),
            ]
        )
        view.focus()
        await settle(pilot)
        assert any("⏸ interrupted, partial reply kept — ctrl+r to retry" in line for line in visible_lines(view))
        view.append_entry(ChatEntry(make_message(3, "user", "Again")))
        view.append_entry(ChatEntry(make_message(4, "assistant", "", Status.INTERRUPTED)))
        await settle(pilot)
        assert any("⏸ interrupted before the first word" in line for line in visible_lines(view))
        view.set_entries(view.entries[:2])
        await settle(pilot)
        await pilot.press("e")  # nothing selected: the last prompt
        await pilot.press("r")  # nothing selected: the last message, a reply
        await pilot.press("up", "e")  # the reply selected: not a prompt, nothing to edit
        await pilot.press("up", "r", "e")  # the prompt selected: nothing to regenerate
        assert [(type(m), m.message_id) for m in app.posted] == [
            (MessageList.EditRequested, 1),
            (MessageList.RegenerateRequested, 2),
            (MessageList.EditRequested, 1),
        ]


async def test_resize_rewraps_messages() -> None:
    long_text = " ".join(f"word{n}" for n in range(120))
    app = ListApp()
    async with app.run_test(size=(100, 40)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(
            [
                ChatEntry(make_message(1, "user", long_text)),
                ChatEntry(make_message(2, "assistant", long_text)),
            ]
        )
        await settle(pilot)
        wide = content_lines(view)
        await pilot.resize_terminal(60, 40)
        await settle(pilot)
        narrow = content_lines(view)
        width = view.scrollable_content_region.width
    assert width < 60
    assert len(narrow) > len(wide)
    assert all(len(line) <= width for line in narrow)
    assert "word119" in "\n".join(narrow)


BIG_REPLY = "\n\n".join([*(f"Paragraph {n}: " + "some words " * 20 for n in range(80)), "The last paragraph."])


async def stream_while_hidden(app: ListApp, pilot: Pilot[None], reply: str) -> MessageList:
    """Two messages shown, then a reply streamed in whole while the list's pane is hidden."""
    view = app.query_one(MessageList)
    view.set_entries(conversation(2) + [ChatEntry(make_message(3, "assistant", "", Status.STREAMING))])
    await settle(pilot)
    app.query_one("#pane").display = False
    await settle(pilot)
    view.append_text(3, reply)
    return view


async def shown_from_its_end(app: ListApp, pilot: Pilot[None], reply: str) -> MessageList:
    """A reply streamed in whole while hidden, still streaming, then shown: rendered from its end (id 3)."""
    view = await stream_while_hidden(app, pilot, reply)
    app.query_one("#pane").display = True
    await settle(pilot)
    assert view._by_id[3].partial
    return view


async def test_big_hidden_reply_shows_its_end_then_renders_in_full() -> None:
    reply = BIG_REPLY
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = await stream_while_hidden(app, pilot, reply)
        app.query_one("#pane").display = True
        await settle(pilot)
        assert "The last paragraph." in "\n".join(visible_lines(view))
        view.update_entry(ChatEntry(make_message(3, "assistant", reply)))
        await settle(pilot)
        view.scroll_to(y=0, animate=False)
        await settle(pilot)
        top = "\n".join(visible_lines(view))
        assert "Message 1" in top
        assert not any(item.partial for item in view._items)


async def test_a_double_click_on_a_reply_shown_from_its_end_selects_all_of_it() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        # Long words wrap early, so the paragraphs take more rows than the blank rows standing for them.
        reply = "\n\n".join([*(f"Part {n} " + "supercalifragilistic " * 40 for n in range(30)), "The last paragraph."])
        view = await stream_while_hidden(app, pilot, reply)
        view.update_entry(ChatEntry(make_message(3, "assistant", reply)))
        app.query_one("#pane").display = True
        await settle(pilot)
        assert view._by_id[3].partial  # blank rows stand for the paragraphs above the screenful shown
        row = next(y for y, line in enumerate(visible_lines(view)) if "The last paragraph." in line)
        await pilot.click(MessageList, offset=(8, row), times=2)
        await settle(pilot)
        selected = app.screen.get_selected_text()
        assert selected is not None
        assert selected.lstrip().startswith("Part 0") and selected.endswith("The last paragraph.")


async def test_entry_reports_streamed_text() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)):
        view = app.query_one(MessageList)
        view.set_entries([ChatEntry(make_message(1, "assistant", "", Status.STREAMING))])
        view.append_text(1, "Hello")
        view.append_text(1, " world")
        entry = view.entry(1)
        assert entry is not None and entry.message.content == "Hello world"
        assert view.entry(99) is None


async def test_a_reply_finished_while_hidden_is_rendered_ahead_and_paints_up_to_date(count_renders: list[str]) -> None:
    reply = BIG_REPLY
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = await stream_while_hidden(app, pilot, reply)
        count_renders.clear()
        view.update_entry(ChatEntry(make_message(3, "assistant", reply)))
        await app.workers.wait_for_complete()
        await settle(pilot)
        # The reply finished while hidden: a thread rendered the end its first frame shows, once.
        assert len(count_renders) == 1 and len(count_renders[0]) < len(reply) // 2
        count_renders.clear()
        frames: list[str] = []
        refresh = app.screen._compositor_refresh

        def observed_refresh() -> None:
            refresh()
            if view.region.height:
                frames.append("\n".join(visible_lines(view)))

        app.screen._compositor_refresh = observed_refresh
        app.query_one("#pane").display = True
        await settle(pilot)
        del app.screen._compositor_refresh
        assert frames, "the widget was painted"
        assert all("The last paragraph." in frame for frame in frames), "no stale frame before the reply's end"
        # Showing it renders nothing more; the rest waits until the view gets there.
        assert count_renders == []
        view.scroll_to(y=0, animate=False)
        await settle(pilot)
        assert len(count_renders) == 1
        assert not any(item.partial for item in view._items)
        assert "Message 1" in "\n".join(visible_lines(view))


async def test_a_big_reply_shown_from_its_end_streams_on_from_there(count_renders: list[str]) -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = await shown_from_its_end(app, pilot, BIG_REPLY)
        count_renders.clear()
        for n in range(4):
            view.append_text(3, f"\n\nMore words {n}: " + "and more " * 10)
            await settle(pilot)
        # Each flush renders the blocks that came since, never the reply's start again.
        assert count_renders and all("Paragraph 0:" not in text and len(text) < 2000 for text in count_renders)
        assert "More words 3" in "\n".join(visible_lines(view))
        assert view._by_id[3].partial
        count_renders.clear()
        view.update_entry(ChatEntry(make_message(3, "assistant", view._by_id[3].text)))
        await settle(pilot)
        # Finished at the end of the view: its end is rendered again, the rest when the view gets there.
        assert count_renders and all("Paragraph 0:" not in text for text in count_renders)
        assert "More words 3" in "\n".join(visible_lines(view))
        view.scroll_to(y=0, animate=False)
        await settle(pilot)
        assert not view._by_id[3].partial
        assert "Message 1" in "\n".join(visible_lines(view))


async def test_scrolling_up_a_reply_streaming_from_its_end_renders_it_whole_and_it_streams_on(
    count_renders: list[str],
) -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = await shown_from_its_end(app, pilot, BIG_REPLY)
        view.scroll_to(y=0, animate=False)
        await settle(pilot)
        assert not view._by_id[3].partial
        assert "Message 1" in "\n".join(visible_lines(view))
        count_renders.clear()
        view.append_text(3, "\n\nA new paragraph.")
        await settle(pilot)
        assert count_renders and all("Paragraph 0:" not in text for text in count_renders)
        view.action_follow_end()
        await settle(pilot)
        lines = "\n".join(visible_lines(view))
        assert "The last paragraph." in lines and "A new paragraph." in lines


LONG_REPLY = "\n\n".join(f"Paragraph {n}: " + "some words " * 20 for n in range(20)) + "\n\n" + REPLY
"""Over SETTLE_CHARS: finishing in view, it gets its one-shot render from a thread."""


@pytest.fixture
def held_renders(monkeypatch: pytest.MonkeyPatch) -> tuple[threading.Event, list[tuple[bool, int]]]:
    """Renders made by threads wait until the event is set; every render is recorded as (on the event loop, length)."""
    gate = threading.Event()
    renders: list[tuple[bool, int]] = []
    render = markdown_render.render_markdown

    def held(console: Console, text: str, width: int):
        on_loop = threading.current_thread() is threading.main_thread()
        if not on_loop:
            gate.wait(10)
        renders.append((on_loop, len(text)))
        return render(console, text, width)

    monkeypatch.setattr(message_list_module, "render_markdown", held)
    return gate, renders


async def stream_in_view(pilot: Pilot[None], text: str) -> MessageList:
    """A reply (id 7, after six messages) streamed in whole while shown, still streaming."""
    view = await with_streaming_reply(pilot)
    for start in range(0, len(text), 250):
        view.append_text(7, text[start : start + 250])
        await pilot.pause(0.04)  # well under PARTIAL_CHARS a flush: rendered as it comes, not from its end
    await settle(pilot)
    assert not view._by_id[7].partial
    return view


def one_shot_rows(view: MessageList, message_id: int, text: str) -> bool:
    item = view._by_id[message_id]
    return [strip.text for strip in item.body] == [
        strip.text for strip in markdown_render.render_markdown(view._reply_console(), text, item.width)
    ]


async def test_a_long_reply_finished_in_view_rests_with_its_last_line_at_the_bottom() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = await stream_in_view(pilot, LONG_REPLY)
        assert not visible_lines(view)[-1].strip()  # rows kept free below the stream
        view.update_entry(ChatEntry(make_message(7, "assistant", LONG_REPLY)))
        await app.workers.wait_for_complete()
        await settle(pilot)
        lines = [line.rstrip() for line in visible_lines(view)]
        assert lines[-2:] == ["▌ The end.", ""], "the last line, then the gap after a message"


async def test_a_reply_corrected_before_its_one_shot_render_came_shows_the_correction(
    held_renders: tuple[threading.Event, list[tuple[bool, int]]],
) -> None:
    gate, renders = held_renders
    app = ListApp()
    async with app.run_test(size=(100, 40)) as pilot:
        view = await stream_in_view(pilot, LONG_REPLY)
        view.update_entry(ChatEntry(make_message(7, "assistant", LONG_REPLY)))
        await settle(pilot)
        fixed = LONG_REPLY.replace("The end.", "The END.")  # as long: only the text tells the renders apart
        view.update_entry(ChatEntry(make_message(7, "assistant", fixed), sibling_index=1, sibling_count=2))
        await settle(pilot)
        gate.set()
        await app.workers.wait_for_complete()
        await settle(pilot)
        assert one_shot_rows(view, 7, fixed)
        assert not [length for on_loop, length in renders if on_loop and length > len(fixed) // 2], "a thread's"


async def test_a_theme_change_while_a_reply_settles_renders_it_once(
    held_renders: tuple[threading.Event, list[tuple[bool, int]]],
) -> None:
    gate, renders = held_renders
    app = ListApp()
    async with app.run_test(size=(100, 40)) as pilot:
        app.theme = "textual-dark"
        view = await stream_in_view(pilot, LONG_REPLY)
        view.update_entry(ChatEntry(make_message(7, "assistant", LONG_REPLY)))
        await settle(pilot)
        assert view._by_id[7].settling
        renders.clear()
        app.theme = "textual-light"
        await settle(pilot)
        gate.set()
        await app.workers.wait_for_complete()
        await settle(pilot)
        on_loop = [length for on_loop, length in renders if on_loop and length > len(LONG_REPLY) * 0.8]
        assert len(on_loop) == 1, "rendered whole once, on the loop: the thread's render has the old colours"
        assert one_shot_rows(view, 7, LONG_REPLY)


LONG_WORDS_REPLY = "\n\n".join(
    [*(f"Part {n} " + "supercalifragilistic " * 40 for n in range(30)), "The last paragraph."]
)
"""Long words wrap early: its paragraphs take more rows than the blank rows standing for them in a partial render."""


@pytest.mark.parametrize("finished", [False, True])
async def test_text_dragged_over_in_a_reply_shown_from_its_end_is_copied_as_shown(finished: bool) -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = await stream_while_hidden(app, pilot, LONG_WORDS_REPLY)
        if finished:
            view.update_entry(ChatEntry(make_message(3, "assistant", LONG_WORDS_REPLY)))
        app.query_one("#pane").display = True
        await settle(pilot)
        assert view._by_id[3].partial
        y = next(y for y, line in enumerate(visible_lines(view)) if "The last paragraph." in line)
        await drag(pilot, (2, y), (30, y))
        assert app.screen.get_selected_text() == "The last paragraph."
        assert "The last paragraph." in visible_lines(view)[y]  # the view did not move


async def test_a_reply_shown_from_its_end_finishing_while_scrolled_up_keeps_the_view() -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = await shown_from_its_end(app, pilot, LONG_WORDS_REPLY)
        item = view._by_id[3]
        view.scroll_to(y=item.top + item.placeholder + 8, animate=False)  # up, but short of the blank rows
        await settle(pilot)
        assert item.partial
        before = visible_lines(view)
        view.update_entry(ChatEntry(make_message(3, "assistant", item.text)))
        await settle(pilot)
        assert not item.partial
        assert visible_lines(view) == before


def code_colours(view: MessageList, text: str) -> tuple[object, object]:
    """(background of the inline code `text`, background of the fenced block's first line) as rendered now."""
    body = view._by_id[1].body
    inline = next(seg.style.bgcolor for strip in body for seg in strip if seg.text == text and seg.style)
    fence = next(strip for strip in body if "def handler" in strip.text)
    return inline, next(seg.style.bgcolor for seg in fence if seg.text.strip() and seg.style)


async def test_replies_take_the_themes_colours_and_change_with_it(count_renders: list[str]) -> None:
    app = ListApp()
    async with app.run_test(size=(100, 60)) as pilot:
        app.theme = "textual-dark"
        view = app.query_one(MessageList)
        view.set_entries([ChatEntry(make_message(1, "assistant", REPLY))])
        await settle(pilot)
        dark = code_colours(view, "inline code")
        assert dark[0] is not None and dark[0].triplet is not None  # the theme's colour, not the terminal's black
        count_renders.clear()
        view.add_class("-any")  # a style update that changes no colour of the replies
        await settle(pilot)
        assert count_renders == [], "a style update that changes no colour of the replies renders nothing"
        app.theme = "textual-light"
        await settle(pilot)
        light = code_colours(view, "inline code")
        assert count_renders, "a new theme renders the replies again"
        assert light[0] != dark[0] and light[1] != dark[1]
        assert sum(light[1].triplet) > sum(dark[1].triplet)  # a light background for code on a light theme
        app.theme = "ansi-dark"  # the terminal's own colours: a tint would be a solid bar
        await settle(pilot)
        inline = code_colours(view, "inline code")[0]
        assert inline is None or inline.is_default


async def test_moving_the_selection_refreshes_bindings_only_when_they_change(monkeypatch: pytest.MonkeyPatch) -> None:
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries([ChatEntry(make_message(n, "assistant", f"Reply {n}")) for n in range(1, 6)])
        view.focus()
        await settle(pilot)
        calls: list[None] = []
        monkeypatch.setattr(view, "refresh_bindings", lambda: calls.append(None))
        await pilot.press("up")  # a selection appears: escape now applies
        assert len(calls) == 1
        await pilot.press("up", "up", "down")
        assert len(calls) == 1


@pytest.mark.parametrize("how", ["branch switched", "reply replaced by a shorter error", "all removed"])
async def test_rows_a_shorter_conversation_leaves_are_repainted_blank(how: str) -> None:
    # A retry that failed at once replaced a long interrupted reply by a one-line error: the old reply's
    # rows below the new end stayed on screen, because only rows up to the new end were repainted.
    app = ListApp()
    long_reply = "\n\n".join(f"Paragraph {n} of the first reply." for n in range(12))
    async with app.run_test(size=(100, 40)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(
            [ChatEntry(make_message(1, "user", "Hi")), ChatEntry(make_message(2, "assistant", long_reply))]
        )
        await settle(pilot)
        assert "Paragraph 11 of the first reply." in screen_text(app)
        error = make_message(3, "assistant", "", Status.ERROR, error="Cannot connect.")
        if how == "branch switched":
            view.set_entries([ChatEntry(make_message(1, "user", "Hi")), ChatEntry(error, 2, 2)])
        elif how == "all removed":
            view.set_entries([])
        else:
            view.update_entry(ChatEntry(replace(error, id=2)))
        await settle(pilot)
        shown = screen_text(app)
        assert ("Cannot connect." in shown) is (how != "all removed")
        assert "Paragraph" not in shown


async def test_a_removed_list_paints_blank_rows() -> None:
    """A dialog may paint the screen behind it from a layout that still holds a list whose tab was just closed."""
    app = ListApp()
    async with app.run_test(size=(100, 30)) as pilot:
        view = app.query_one(MessageList)
        view.set_entries(conversation(4))
        await settle(pilot)
        await view.remove()
        view.notify_style_update()  # the styles it renders with are gone with it
        assert view.render_line(0).text.strip() == ""
        # Painted through render_lines too, which looks up the text selection: there is no screen to hold one.
        assert [strip.text.strip() for strip in view.render_lines(Region(0, 0, 100, 2))] == ["", ""]
