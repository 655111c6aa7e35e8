"""Markdown for replies, streamed: rendering text to Strips, and finding where a growing reply's blocks end.

No widget state here, so a thread may render; `MessageList` decides what to render and when.
"""

from __future__ import annotations

import functools
import io
import re
from typing import TYPE_CHECKING

from rich.console import Console
from rich.style import Style
from rich.text import Text
from rich.theme import Theme
from textual.strip import Strip

from core.text import inert

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from rich.markdown import Markdown

CODE_THEME = "monokai"
"""Pygments theme for fenced code on the app's dark themes."""
LIGHT_CODE_THEME = "friendly"
"""Pygments theme for fenced code on the app's light themes."""


class ReplyConsole(Console):
    """The console replies are rendered with, in the app theme's colours: `styles` replace Rich's styles of the same
    names (its inline code is cyan on black, a black bar on a light theme), and fenced code gets a Pygments theme
    made for the theme's background. Only renders; the app's console writes the result."""

    def __init__(self, styles: dict[str, Style] | None = None, *, dark: bool = True) -> None:
        super().__init__(
            theme=Theme(styles or {}),
            # A size of its own: without one, Rich asks the terminal and the environment for it whenever a render
            # takes the console's options (a sixth of a short render's time here). Each render sets its width.
            width=80,
            height=25,
            file=io.StringIO(),
            color_system="truecolor",
            force_terminal=True,
            legacy_windows=False,
            markup=False,
            highlight=False,
            emoji=False,
            safe_box=False,
            soft_wrap=False,
        )
        self.code_theme = CODE_THEME if dark else LIGHT_CODE_THEME


_FENCE = re.compile(r" {0,3}(`{3,}|~{3,})")
_LIST_ITEM = re.compile(r"(?:[-+*]|\d{1,9}[.)])(?:[ \t]|$)")


def inert_text(text: str) -> str:
    """Return `text` with every control character replaced by a visible symbol and tabs expanded.

    Model output is untrusted: an ESC in a reply must be shown, never sent to the terminal.
    """
    return inert(text.replace("\r\n", "\n")).expandtabs(4)


def _parser() -> MarkdownIt:
    """One shared MarkdownIt parser: building one costs more than parsing and rendering a paragraph."""
    global _PARSER
    if _PARSER is None:
        from markdown_it import MarkdownIt

        _PARSER = MarkdownIt().enable("strikethrough").enable("table")
    return _PARSER


_PARSER: MarkdownIt | None = None


@functools.cache
def _markdown_class() -> type[Markdown]:
    """Rich's Markdown with the shared parser, defined on first use: markdown_it and rich.markdown take ~50 ms to
    import, which the first frame of an empty tab need not wait for (the app preloads them after it)."""
    from rich.markdown import Markdown

    class SharedParserMarkdown(Markdown):
        """Mirrors `rich.markdown.Markdown.__init__` (rich 15) but for the parser; tests/test_message_list.py
        checks that both render the same lines."""

        def __init__(self, markup: str, code_theme: str = CODE_THEME) -> None:
            self.markup = markup
            self.parsed = _parser().parse(markup)
            self.code_theme = code_theme
            self.justify = None
            self.style = "none"
            self.hyperlinks = True
            self.inline_code_lexer = None
            self.inline_code_theme = code_theme

    return SharedParserMarkdown


# Languages models write most often. Pygments compiles a lexer's regular expressions on its first use, on the
# event loop in the middle of a stream: 43 ms for Python here, 20 for JavaScript.
PRELOADED_LEXERS = ("python", "bash", "json", "javascript", "typescript")


def preload_markdown() -> None:
    """Import the Markdown renderer and compile common lexers ahead of the first reply (the app calls this from
    a thread)."""
    from pygments.lexers import get_lexer_by_name

    _markdown_class()
    _parser()
    for name in PRELOADED_LEXERS:
        get_lexer_by_name(name)


def render_markdown(console: Console, text: str, width: int) -> list[Strip]:
    """Render Markdown to lines of exactly `width` cells (the one place replies are rendered)."""
    code_theme = console.code_theme if isinstance(console, ReplyConsole) else CODE_THEME
    markdown = _markdown_class()(inert_text(text), code_theme)
    lines = console.render_lines(markdown, console.options.update(width=width, height=None))
    return [Strip(line, width) for line in lines]


def render_plain(console: Console, text: str, width: int, style: str | Style = "") -> list[Strip]:
    """Render plain text wrapped to `width` cells: prompts are shown as typed, not as Markdown."""
    renderable = Text(inert_text(text), style=style, overflow="fold", end="")
    lines = console.render_lines(renderable, console.options.update(width=width, height=None))
    return [Strip(line, width) for line in lines]


def render_end(console: Console, text: str, width: int, rows: int) -> tuple[int, list[Strip]] | None:
    """Render `text` from the last block boundary that leaves at least `rows` rows: (boundary, lines), or None
    if it cannot be split. Pure, so a thread may run it."""
    scanner = BlockScanner()
    scanner.feed(text)
    start = end_start(scanner, text, width, rows)
    return None if start is None else (start, render_markdown(console, text[start:], width))


def end_start(scanner: BlockScanner, text: str, width: int, rows: int) -> int | None:
    """The last block boundary `scanner` found in `text` that leaves at least `rows` rows below it, if any."""
    for boundary in reversed(scanner.boundaries):
        if estimate_rows(text[boundary:], width) >= rows:
            return boundary
    return None


def estimate_rows(text: str, width: int) -> int:
    """Rows `text` takes wrapped to `width`, roughly (Markdown spacing is close to the source's)."""
    width = max(1, width)
    return sum(len(line) // width + 1 for line in text.split("\n"))


def code_blocks(markdown_text: str) -> list[str]:
    """The contents of the fenced and indented code blocks in `markdown_text`, in order."""
    tokens = _parser().parse(markdown_text)
    return [token.content for token in tokens if token.type in ("fence", "code_block")]


class BlockScanner:
    """Finds where the finished Markdown blocks of a growing text end.

    A boundary is the start of a line that follows a blank line outside a fenced code block, that is not
    indented (an indented line may continue a list item) and does not start a list item (a loose list stays
    one block). Everything before the latest boundary keeps its rendering when more text arrives, give or
    take link reference definitions, which the one-shot render that follows the stream settles.
    """

    __slots__ = ("position", "fence", "fence_start", "fence_body", "after_blank", "boundary", "boundaries")

    def __init__(self) -> None:
        self.position = 0
        """Start of the first line not scanned yet (only complete lines are scanned)."""
        self.fence: str | None = None
        """The marker (``` or ~~~, or longer) of the fenced code block still open, if any."""
        self.fence_start = 0
        """Offset of the open fence's opening line."""
        self.fence_body = 0
        """Offset of the open fence's first code line."""
        self.after_blank = False
        self.boundary = 0
        self.boundaries: list[int] = []
        """Every boundary found, in order."""

    def feed(self, text: str) -> int:
        """Scan the complete lines added since the last call; return the latest boundary offset."""
        position = self.position
        find = text.find
        while (end := find("\n", position)) >= 0:
            line = text[position:end]
            if self.fence is not None:
                match = _FENCE.match(line)
                if (
                    match
                    and match.group(1)[0] == self.fence[0]
                    and len(match.group(1)) >= len(self.fence)
                    and not line[match.end() :].strip()
                ):
                    self.fence = None
            elif not line.strip():
                self.after_blank = True
            else:
                if self.after_blank and self._starts_block(line):
                    self.boundary = position
                    self.boundaries.append(position)
                self.after_blank = False
                match = _FENCE.match(line)
                if match and (match.group(1)[0] == "~" or "`" not in line[match.end() :]):
                    self.fence = match.group(1)
                    self.fence_start, self.fence_body = position, end + 1
            position = end + 1
        self.position = position
        streaming_line = text[position : position + 12]
        if self.fence is None and self.after_blank and self._starts_block(streaming_line, complete=False):
            # The line being streamed already starts a new block: the one before it is finished now, not only
            # once this line ends (a paragraph is usually one long line, re-rendered whole in the tail till then).
            return position
        return self.boundary

    @staticmethod
    def _starts_block(line: str, *, complete: bool = True) -> bool:
        """Whether a line after a blank line starts a new block. Of a line still streaming only the start is known,
        and a run of digits may yet become a list item's number."""
        return bool(line) and line[0] not in " \t" and not _LIST_ITEM.match(line) and (complete or not line.isdigit())
