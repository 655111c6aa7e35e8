"""Choose what a session talks to: one of the configured profiles, or a model its server lists on /v1/models."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from rich.table import Table
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import OptionList, Static
from textual.widgets.option_list import Option

from core.config import DEMO_PROFILE, Profile
from core.engine import ChatEngine
from tui.screens.dialogs import key_hints

CURRENT_MARK = "●"


@dataclass(frozen=True)
class ModelChoice:
    """A profile, and optionally a model of its server to use instead of the profile's own."""

    profile: str
    model: str | None = None
    """None: the profile's own model; else a model listed by the profile's server (``/v1/models``)."""


def server_name(profile: Profile) -> str:
    """Where a profile's requests go, for people: its base_url, or OpenAI for OpenAI's own API."""
    return profile.base_url or "OpenAI"


class ModelPicker(ModalScreen[ModelChoice | None]):
    """The configured profiles, then the models the current profile's server lists (loaded after mount).

    Enter picks: a profile row gives ``ModelChoice(name)``, a server model ``ModelChoice(current.profile, model)``.
    Esc gives None.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "cancel", "Cancel", id="models.cancel"),
    ]

    def __init__(self, engine: ChatEngine, *, current: ModelChoice) -> None:
        super().__init__()
        self.engine = engine
        self.current = current
        """Marked in the list; its profile's server is asked for models."""
        self.server_models: list[str] | None = None
        """The models the server listed; None until they arrive."""
        self._choices: dict[str, ModelChoice] = {}
        """Option id → what choosing that row returns."""
        self._auto_highlight: str | None = None
        """The row the picker highlighted by itself, as long as the user has not moved."""

    @property
    def current_profile(self) -> Profile | None:
        return self.engine.settings.profiles.get(self.current.profile)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(Text("Choose a model"), classes="dialog-title")
            yield OptionList(id="models", markup=False)
            yield Static(classes="dialog-hint")

    def on_mount(self) -> None:
        self._fill()
        self.query_one(".dialog-hint", Static).update(key_hints(self, [("Enter", "Choose")]))
        if self.current_profile is not None:
            self._load_models(self.current_profile)

    @work(group="models", exclusive=True, exit_on_error=False)
    async def _load_models(self, profile: Profile) -> None:
        self.server_models = await self.engine.list_models(profile)  # never raises: [] when the server fails
        self._fill()

    def _fill(self) -> None:
        """(Re)build the rows, keeping the highlight on the row it was on (or on the current choice)."""
        options = self.query_one("#models", OptionList)
        before = options.highlighted_option.id if options.highlighted_option is not None else None
        self._choices.clear()
        rows: list[Option] = [Option(Text("Profiles", style="bold"), disabled=True)]
        marked = None
        for profile in self.engine.settings.profiles.values():
            if profile.name == DEMO_PROFILE and not self.engine.settings.demo:
                continue  # its server runs only with --demo: picked here, it would ask OpenAI for a model "demo"
            option_id = f"profile:{profile.name}"
            self._choices[option_id] = ModelChoice(profile.name)
            is_current = profile.name == self.current.profile and self.current.model is None
            marked = option_id if is_current else marked
            rows.append(Option(self._profile_row(profile, is_current), id=option_id))
        if (profile := self.current_profile) is not None:
            rows.append(Option(Text(f"Models on {server_name(profile)}", style="bold"), disabled=True))
            if self.server_models is None:
                rows.append(Option(Text("  Loading models…", style="dim italic"), disabled=True))
            elif not self.server_models:
                rows.append(Option(Text("  none listed", style="dim italic"), disabled=True))
            for model in self.server_models or ():
                option_id = f"model:{model}"
                self._choices[option_id] = ModelChoice(profile.name, model)
                is_current = model == self.current.model
                marked = option_id if is_current else marked
                rows.append(Option(self._model_row(model, is_current), id=option_id))
        options.set_options(rows)
        # Until the user moves, follow the current choice: its server model row may only appear now.
        user_moved = before is not None and before != self._auto_highlight
        target = before if user_moved else marked or f"profile:{self.current.profile}"
        self._auto_highlight = None if user_moved else target
        if target in self._choices:
            options.highlighted = options.get_option_index(target)
        else:
            options.action_first()

    @staticmethod
    def _profile_row(profile: Profile, is_current: bool) -> Table:
        row = Table.grid(expand=True, padding=(0, 1))
        row.add_column(width=1, no_wrap=True)
        row.add_column(no_wrap=True, overflow="ellipsis", ratio=1, style="bold")
        row.add_column(no_wrap=True, overflow="ellipsis", ratio=1)
        row.add_column(no_wrap=True, overflow="ellipsis", ratio=2, style="dim")
        row.add_row(CURRENT_MARK if is_current else "", Text(profile.name), Text(profile.model), server_name(profile))
        return row

    @staticmethod
    def _model_row(model: str, is_current: bool) -> Text:
        return Text.assemble(CURRENT_MARK if is_current else " ", " ", model, no_wrap=True, overflow="ellipsis")

    @on(OptionList.OptionSelected, "#models")
    def _selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if event.option.id in self._choices:
            self.dismiss(self._choices[event.option.id])

    def action_cancel(self) -> None:
        self.dismiss(None)
