"""Every key binding of the app in one table, with the keys the user remapped in the config file."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.text import Text
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


class HelpScreen(ModalScreen[None]):
    """Lists every binding: where it works, its keys (as remapped), what it does, and its id for remapping."""

    BINDINGS = [Binding("escape,f1,q", "dismiss", "Close", id="help.close")]

    def __init__(self, keymap: Mapping[str, str]) -> None:
        super().__init__()
        self.keymap = keymap

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static("Keys", classes="dialog-title")
            yield DataTable(id="help-table", cursor_type="row", zebra_stripes=True)
            yield Static(
                Text('Remap a key in config.toml under [keys] by its id, e.g. "app.new_tab" = "ctrl+n"  ·  Esc closes'),
                classes="dialog-hint",
            )

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("Where", "Keys", "Action", Text("Id (for [keys])"))
        table.add_row("Prompt", "enter", "Send", "")
        table.add_row("Prompt", "ctrl+j (shift/ctrl/alt+enter)", "New line", "")
        table.add_row("Chat tab", "shift+tab, tab", "Messages/prompt", "")
        for where, bindings in _binding_owners():
            for binding in bindings:
                if binding.id and binding.id.startswith("app.goto_tab_") and binding.id != "app.goto_tab_1":
                    continue  # one row stands for alt+1 … alt+9
                keys = display_keys(self.keymap.get(binding.id or "", binding.key))
                action = binding.description or binding.action
                if binding.id == "app.goto_tab_1":
                    keys, action = "alt+1 … alt+9", "Go to tab N"
                table.add_row(where, keys, action, binding.id or "")
        table.add_row("Anywhere", "ctrl+p", "Command palette", "")
        table.add_row("Anywhere", "ctrl+c", "Copy selected text", "")
        # The mouse, for those who look here first: none of it has a key to remap.
        table.add_row("Messages", "mouse drag", "Select text", "")
        table.add_row("Messages", "double click", "Select a message", "")
        table.add_row("Messages", "click ‹ or ›", "Other version", "")
        table.focus()
