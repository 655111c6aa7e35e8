"""Every key binding of the app in one table, with the keys the user remapped in the config file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.keys import key_to_character
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static, TextArea


def _binding_owners() -> list[tuple[str, list[Binding]]]:
    from tui.app import ChatApp
    from tui.screens.dialogs import Confirm, TextPrompt
    from tui.screens.model_picker import ModelPicker
    from tui.screens.session_browser import SessionBrowser
    from tui.widgets.chat_tab import ChatTab
    from tui.widgets.message_list import MessageList
    from tui.widgets.prompt_input import PromptInput

    def own(bindings: Iterable[object]) -> list[Binding]:
        return [b for b in bindings if isinstance(b, Binding)]

    return [
        ("App", own(ChatApp.BINDINGS)),
        ("Chat tab", own(ChatTab.BINDINGS)),
        ("Prompt", own(PromptInput.BINDINGS)),
        ("Messages", own(MessageList.BINDINGS)),
        ("Chats", own(SessionBrowser.BINDINGS)),
        ("Models", own(ModelPicker.BINDINGS)),
        ("Dialogs", own(TextPrompt.BINDINGS) + own(Confirm.BINDINGS)),
    ]


def binding_ids() -> set[str]:
    """Every id the ``[keys]`` table of the config file may remap."""
    return {binding.id for _where, bindings in _binding_owners() for binding in bindings if binding.id}


def prompt_clashes(keymap: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """(binding id, key, the prompt's action) for each remapped key of an app or chat tab binding that the prompt
    binds itself: the focused prompt takes such a key first (ctrl+x is its cut), unless the binding has priority."""
    from tui.app import ChatApp
    from tui.widgets.chat_tab import ChatTab
    from tui.widgets.prompt_input import PromptInput

    prompt = {
        key.strip(): binding.action
        for binding in [*TextArea.BINDINGS, *PromptInput.BINDINGS]
        if isinstance(binding, Binding)
        for key in binding.key.split(",")
    }
    reachable = {b.id for b in [*ChatApp.BINDINGS, *ChatTab.BINDINGS] if isinstance(b, Binding) and not b.priority}
    return [
        (binding_id, key.strip(), prompt[key.strip()].replace("_", " "))
        for binding_id, keys in keymap.items()
        if binding_id in reachable
        for key in keys.split(",")
        if key.strip() in prompt
    ]


def display_keys(keys: str) -> str:
    """A binding's keys as a reader knows them: "left_square_bracket" is shown as "[", modifiers and named keys
    such as "pageup" as they are."""
    shown = []
    for key in keys.split(","):
        modifiers, _, name = key.strip().rpartition("+")
        character = key_to_character(name) if len(name) > 1 else None
        if character is not None and character.isprintable() and not character.isspace():
            name = character
        shown.append(f"{modifiers}+{name}" if modifiers else name)
    return ", ".join(shown)


HEADERS = ("Where", "Keys", "Action", "Id (for [keys])")
WRAPPING = (1, 2)
"""The columns (Keys, Action) that wrap when the table is too narrow; Where and Id always show whole."""


class KeyTable(DataTable[Text]):
    """The help table: one line a row when every column fits, else Keys and Action wrap so that the Id stays whole."""

    def __init__(self, rows: Sequence[tuple[str, str, str, str]], *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.entries = [tuple(Text(cell) for cell in row) for row in rows]
        self._widths: tuple[int, ...] | None = None

    def column_widths(self, width: int) -> tuple[int, ...]:
        """Content width of each column within ``width`` cells; () when every column fits on one line."""
        cells = [HEADERS, *((cell.plain for cell in entry) for entry in self.entries)]
        columns = list(zip(*cells, strict=True))
        natural = [max(map(cell_len, column)) for column in columns]
        room = width - 2 * self.cell_padding * len(HEADERS)
        if sum(natural) <= room:
            return ()
        # Wrapping columns give up width in proportion to what they can spare: down to their longest word,
        # below which the table scrolls sideways.
        spare = {i: natural[i] - max(cell_len(word) for cell in columns[i] for word in cell.split()) for i in WRAPPING}
        loss = min(sum(natural) - room, sum(spare.values()))
        share = {i: loss * spare[i] // (sum(spare.values()) or 1) for i in WRAPPING}
        share[WRAPPING[0]] += loss - sum(share.values())  # the rounding remainder
        return tuple(size - share.get(i, 0) for i, size in enumerate(natural))

    def on_resize(self, event: events.Resize) -> None:
        # The vertical scrollbar's room is always kept, so that its coming and going does not refit the table.
        self.fit(event.size.width - self.styles.scrollbar_size_vertical)

    def fit(self, width: int) -> None:
        """Lay the table out for ``width`` cells (rebuilt only when the column widths change)."""
        widths = self.column_widths(width)
        if widths == self._widths:
            return
        self._widths = widths
        row = self.cursor_row
        self.clear(columns=True)
        for index, header in enumerate(HEADERS):
            self.add_column(Text(header), width=widths[index] if widths else None)
        for entry in self.entries:
            self.add_row(*entry, height=None if widths else 1)
        self.move_cursor(row=row, animate=False)


class HelpScreen(ModalScreen[None]):
    """Lists every binding: where it works, its keys (as remapped), what it does, and its id for remapping."""

    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close", id="help.close")]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (100, "-wide")]
    """Below 100 columns the dialog takes the whole width, so the table wraps less."""

    def __init__(self, keymap: Mapping[str, str]) -> None:
        super().__init__()
        self.keymap = keymap

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Keys", classes="dialog-title")
            yield KeyTable(self.rows(), id="help-table")
            yield Static(
                Text('Remap a key in config.toml under [keys] by its id, e.g. "app.new_tab" = "ctrl+n"  ·  Esc closes'),
                classes="dialog-hint",
            )

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(where, keys, action, id) of every row, top to bottom."""
        rows = [
            ("Prompt", "enter", "Send", ""),
            ("Prompt", "ctrl+j, shift/ctrl/alt + enter", "New line", ""),
            ("Chat tab", "shift+tab, tab", "Messages/prompt", ""),
        ]
        for where, bindings in _binding_owners():
            for binding in bindings:
                if binding.id and binding.id.startswith("app.goto_tab_") and binding.id != "app.goto_tab_1":
                    continue  # one row stands for alt+1 … alt+9
                keys = display_keys(self.keymap.get(binding.id or "", binding.key))
                action = binding.description or binding.action
                if binding.id == "app.goto_tab_1":
                    keys, action = "alt+1 … alt+9", "Go to tab N"
                rows.append((where, keys, action, binding.id or ""))
        rows += [
            ("Anywhere", "ctrl+p", "Command palette", ""),
            ("Anywhere", "ctrl+c", "Copy selected text", ""),
            # The mouse, for those who look here first: none of it has a key to remap.
            ("Messages", "mouse drag", "Select text", ""),
            ("Messages", "double click", "Select a message", ""),
            ("Messages", "click ‹ or ›", "Other version", ""),
        ]
        return rows

    def on_mount(self) -> None:
        self.query_one(KeyTable).focus()
