"""The multi-line prompt: Enter sends; shift/ctrl/alt+Enter or ctrl+J insert a newline; pastes never send."""

from __future__ import annotations

from dataclasses import dataclass

from textual import events
from textual.binding import Binding
from textual.geometry import Region
from textual.message import Message
from textual.strip import Strip
from textual.widgets import TextArea

# Terminals without the kitty keyboard protocol report shift/ctrl+Enter as plain Enter: ctrl+J is the fallback.
NEWLINE_KEYS = frozenset({"shift+enter", "ctrl+enter", "alt+enter", "ctrl+j"})


class PromptInput(TextArea):
    """Where the user types. Posts ``PromptInput.Submitted``; the text stays until the tab accepts it."""

    BINDINGS = [
        Binding("up", "history(-1)", "Previous prompt", show=False, id="prompt.history_previous"),
        Binding("down", "history(1)", "Next prompt", show=False, id="prompt.history_next"),
    ]

    @dataclass
    class Submitted(Message):
        prompt: PromptInput
        text: str
        """The prompt, stripped of surrounding blank lines."""
        typed: str
        """The box's text as it was on Enter: what ``accept`` takes out of it."""

        @property
        def control(self) -> PromptInput:
            return self.prompt

    def __init__(self, *, placeholder: str = "", id: str | None = None) -> None:
        super().__init__(
            id=id,
            soft_wrap=True,
            show_line_numbers=False,
            tab_behavior="focus",
            compact=True,
            placeholder=placeholder,
        )
        self._history: list[str] = []
        self._history_index = 0
        self._holds_text = False

    def _on_text_area_changed(self, event: TextArea.Changed) -> None:
        # Whether the box is empty decides what ctrl+w does (the app's check_action): the Footer must follow.
        if bool(self.text) != self._holds_text:
            self._holds_text = not self._holds_text
            self.refresh_bindings()

    def render_lines(self, crop: Region) -> list[Strip]:
        # A dialog paints the screen behind it from that screen's last layout, which can still hold a prompt whose
        # tab was just closed (a chat deleted from the browser). Textual 8 clears a removed widget's styles, and
        # TextArea needs them to render: a KeyError that ended the app. A removed prompt paints blank instead.
        if not self.is_attached:
            return [Strip.blank(crop.width)] * crop.height
        return super().render_lines(crop)

    def hold_cursor(self, held: bool) -> None:
        """Stop the cursor blinking, drawn (each blink is a frame), or let it blink again. TextArea keys its cached
        lines by the cursor only while it blinks visible: the cursor's line, cached in a blink's off phase, came
        back without the cursor once the blink stopped. (`_line_cache` is private; Textual is pinned.)"""
        self.cursor_blink = not held
        self._line_cache.clear()
        self.refresh()

    async def _on_key(self, event: events.Key) -> None:
        if event.key == "enter":
            event.stop()
            event.prevent_default()
            self.submit()
        elif event.key in NEWLINE_KEYS:
            event.stop()
            event.prevent_default()
            self.insert("\n")
        elif event.key.startswith("alt+") and event.key[-1].isdigit():
            # alt+1…9 go to a tab: TextArea would type the digit the key event carries as its character.
            event.prevent_default()  # TextArea's handler, not the bubbling to the app's binding
        else:
            await super()._on_key(event)

    def submit(self) -> None:
        text = self.text.strip("\n")
        if text.strip():
            self.post_message(self.Submitted(self, text, self.text))

    def accept(self, typed: str) -> None:
        """The tab took the prompt ``typed`` (the box's text on Enter): remember it for ↑ and take it out of the box.

        The tab accepts only once the prompt is saved, and keys typed meanwhile are already in the box: they stay.
        """
        if not self._history or self._history[-1] != typed:
            self._history.append(typed)
        self._history_index = len(self._history)
        if self.text == typed:
            self.clear()
        elif self.text.startswith(typed):
            self.load_text(self.text[len(typed) :])
            self.move_cursor(self.document.end)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # ↑/↓ walk the prompt history only from the first/last line, so they still move the cursor otherwise.
        if action == "history":
            row = self.cursor_location[0]
            return (parameters[0] == -1 and row == 0) or (parameters[0] == 1 and row == self.document.line_count - 1)
        return True

    def action_history(self, step: int) -> None:
        if not self._history:
            return
        self._history_index = max(0, min(len(self._history), self._history_index + step))
        self.load_text(self._history[self._history_index] if self._history_index < len(self._history) else "")
        self.move_cursor(self.document.end)
