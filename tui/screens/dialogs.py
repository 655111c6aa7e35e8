"""Small modal dialogs the app and other screens reuse: ask for a line or a page of text, confirm an action."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.content import Content
from textual.screen import ModalScreen, Screen
from textual.widgets import Button, Input, Static, TextArea


def key_hints(
    screen: Screen[object], extra: Iterable[tuple[str, str]] = (), *, describe: Mapping[str, str] | None = None
) -> Text:
    """One line naming the keys of ``screen``'s own shown bindings, e.g. "Enter Open  ^r Rename" (first key only).

    Built from the active bindings, so keys remapped through the app's keymap are shown as remapped.
    ``extra`` lists (key, description) pairs that are not bindings of the screen (Enter in an Input);
    ``describe`` maps an action name to a description that replaces its binding's (a mode changed its meaning).
    """
    describe = describe or {}
    keys_by_action: dict[str, tuple[str, str]] = {}
    for active in screen.active_bindings.values():
        binding = active.binding
        if active.node is not screen or not binding.show:
            continue
        if binding.action not in keys_by_action:
            description = describe.get(binding.action, binding.description)
            keys_by_action[binding.action] = (screen.app.get_key_display(binding), description)
    # In the order the screen declares them (priority bindings come first in the active map).
    declared = [b.action if isinstance(b, Binding) else b[1] for b in screen.BINDINGS]
    ordered = sorted(keys_by_action.items(), key=lambda item: declared.index(item[0]) if item[0] in declared else 0)
    hints = Text(no_wrap=True, overflow="ellipsis")
    pairs = [*extra, *(pair for _, pair in ordered)]
    for index, (key, description) in enumerate(pairs):
        if index:
            hints.append("  ")
        hints.append(key, style="bold")
        hints.append(f" {description}")
    return hints


class TextPrompt(ModalScreen[str | None]):
    """Ask for text: one line (Enter accepts) or, with ``multiline``, a page (ctrl+s accepts). Esc gives None.

    The result is the text exactly as typed (callers strip or reject empty text as they see fit).
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("ctrl+s", "accept", "Save", id="prompt.accept"),
        Binding("escape", "cancel", "Cancel", id="prompt.cancel"),
    ]

    def __init__(
        self, title: str, value: str = "", *, multiline: bool = False, placeholder: str = "", accept_label: str = "Save"
    ) -> None:
        super().__init__()
        self.title_text = title
        """Shown above the field; plain text, never parsed as markup."""
        self.value = value
        """The text the field starts with."""
        self.multiline = multiline
        self.placeholder = placeholder
        self.accept_label = accept_label
        """What accepting does, on the button and in the key hints ("Send" for an edited message)."""

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.title_text), classes="dialog-title")
            if self.multiline:
                yield TextArea(self.value, id="prompt-text", placeholder=Content(self.placeholder))
                with Horizontal(classes="dialog-buttons"):
                    yield Button("Cancel", id="cancel")
                    yield Button(Content(self.accept_label), id="accept", variant="primary")
            else:
                yield Input(self.value, placeholder=self.placeholder, id="prompt-input")
            yield Static(classes="dialog-hint")

    def on_mount(self) -> None:
        self.set_class(self.multiline, "-multiline")
        field = self.query_one("#prompt-text", TextArea) if self.multiline else self.query_one("#prompt-input")
        field.focus()
        if self.multiline:
            # Start at the end: editing a message usually means adding to it.
            self.query_one(TextArea).move_cursor(self.query_one(TextArea).document.end)
        extra = [] if self.multiline else [("Enter", self.accept_label)]
        self.query_one(".dialog-hint", Static).update(key_hints(self, extra, describe={"accept": self.accept_label}))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # A single line is accepted with Enter; ctrl+s is only offered for the multi-line editor.
        return self.multiline if action == "accept" else True

    def action_accept(self) -> None:
        self.dismiss(self.query_one(TextArea).text)

    def action_cancel(self) -> None:
        self.dismiss(None)

    @on(Input.Submitted, "#prompt-input")
    def _accept_line(self, event: Input.Submitted) -> None:
        event.stop()
        self.dismiss(event.value)

    @on(Button.Pressed, "#accept")
    def _accept_pressed(self) -> None:
        self.action_accept()

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(None)


class Confirm(ModalScreen[bool]):
    """Ask a yes/no question: y (or Enter on the confirm button) gives True; n, Esc or Cancel gives False.

    With ``danger`` (the default) the confirm button is red and focus starts on Cancel, so a stray Enter is safe.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Yes", id="confirm.yes"),
        Binding("n,escape", "cancel", "No", id="confirm.no"),
    ]

    def __init__(self, question: str, *, confirm_label: str = "Delete", danger: bool = True) -> None:
        super().__init__()
        self.question = question
        """Plain text, never parsed as markup (it usually quotes a title the user typed)."""
        self.confirm_label = confirm_label
        self.danger = danger

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text(self.question), classes="dialog-question")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Cancel", id="cancel")
                yield Button(Content(self.confirm_label), id="confirm", variant="error" if self.danger else "primary")
            yield Static(classes="dialog-hint")

    def on_mount(self) -> None:
        self.query_one("#cancel" if self.danger else "#confirm", Button).focus()
        # The keys named as the buttons are: "y Delete  n Cancel", not "y Yes  n No" under [Cancel] [Delete].
        hints = key_hints(self, describe={"confirm": self.confirm_label, "cancel": "Cancel"})
        self.query_one(".dialog-hint", Static).update(hints)

    def action_confirm(self) -> None:
        self.dismiss(True)

    def action_cancel(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed, "#confirm")
    def _confirm_pressed(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def _cancel_pressed(self) -> None:
        self.dismiss(False)
