"""Plain data the store hands out: sessions, messages, search hits. No behaviour, no SQLite types."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from core.text import inert


class Role(StrEnum):
    USER = "user"
    ASSISTANT = "assistant"


class Status(StrEnum):
    """Where a message row stands. Only assistant rows are ever anything but COMPLETE."""

    COMPLETE = "complete"
    STREAMING = "streaming"
    INTERRUPTED = "interrupted"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class Session:
    id: int
    title: str | None
    profile: str | None
    """Name of the model profile the session uses; None means the default profile."""
    model: str | None
    """A model of that profile's server chosen for this session (from /v1/models); None: the profile's own."""
    system_prompt: str | None
    archived: bool
    created_at: str
    updated_at: str
    """ISO 8601 UTC; bumped by every turn, so "newest first" means most recently used."""
    message_count: int = 0

    @property
    def display_title(self) -> str:
        """The title to show: a prompt's first words may hold escape sequences, shown inert (core.text)."""
        return inert(self.title) if self.title else "New chat"


@dataclass(frozen=True, slots=True)
class Message:
    id: int
    session_id: int
    parent_id: int | None
    role: Role
    content: str
    status: Status
    model: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    error: str | None
    """A user-facing sentence explaining why the reply failed (status ERROR)."""
    created_at: str
    updated_at: str


@dataclass(frozen=True, slots=True)
class SearchHit:
    session_id: int
    message_id: int
    session_title: str | None
    role: Role
    snippet: str
    """Text around the match; the matched terms are wrapped in ``[`` and ``]``."""
    created_at: str
