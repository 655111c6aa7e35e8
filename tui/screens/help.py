"""Every key binding of the app in one table, with the keys the user remapped in the config file."""

from __future__ import annotations

from collections.abc import Mapping

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from tui.widgets.prompt_input import NEWLINE_KEYS


def _binding_owners() -> list[tuple[str, list[Binding]]]:
    from tui.app import ChatApp
    from tui.widgets.chat_tab import ChatTab
    from tui.widgets.message_list import MessageList
    from tui.widgets.prompt_input import PromptInput

    def own(bindings: list[Binding | tuple[str, ...]]) -> list[Binding]:
        return [b for b in bindings if isinstance(b, Binding)]

    return [
        ("App", own(ChatApp.BINDINGS)),
        ("Chat tab", own(ChatTab.BINDINGS)),
        ("Messages", own(MessageList.BINDINGS)),
        ("Prompt", own(PromptInput.BINDINGS)),
    ]


class HelpScreen(ModalScreen[None]):
    """Lists every binding: where it works, its keys (as remapped), what it does, and its id for remapping."""

    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close", id="help.close")]

    def __init__(self, keymap: Mapping[str, str]) -> None:
        super().__init__()
        self.keymap = keymap

    def compose(self) -> ComposeResult:
        with Vertical(id="help-dialog"):
            yield Static("Keys", classes="dialog-title")
            yield DataTable(id="help-table", cursor_type="row", zebra_stripes=True)
            yield Static(
                'Remap any key in config.toml under [keys], e.g.  "app.new_tab" = "ctrl+n"   ·   Esc closes',
                classes="dialog-hint",
            )

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Where", "Keys", "Action", "Binding id")
        table.add_row("Prompt", "enter", "Send", "")
        table.add_row("Prompt", ", ".join(sorted(NEWLINE_KEYS)), "New line", "")
        for where, bindings in _binding_owners():
            for binding in bindings:
                keys = self.keymap.get(binding.id or "", binding.key)
                table.add_row(where, keys.replace(",", ", "), binding.description or binding.action, binding.id or "")
        table.add_row("Anywhere", "ctrl+p", "Command palette: every action by name", "")
        table.focus()
