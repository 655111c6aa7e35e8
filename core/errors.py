"""Every error chat-tui shows a person, in one small tree with wording a user understands.

ChatError
├── ConfigError                 bad or missing settings (e.g. no API key)
├── StoreError                  the database file
│   ├── DatabaseCorrupt         not SQLite, or damaged
│   ├── DatabaseTooNew          written by a newer chat-tui
│   └── NotFound                no such session or message
└── ProviderError               the model server
    ├── AuthenticationFailed    401/403
    ├── ModelNotFound           404
    ├── RateLimited             429 (retry_after when the server says)
    ├── ServerFailed            5xx
    ├── ConnectionFailed        cannot connect
    ├── TimedOut                no data within the timeout (also a stall mid-stream)
    └── StreamBroken            the stream was cut or malformed
"""

from __future__ import annotations


class ChatError(Exception):
    """Base of all chat-tui errors; ``str(error)`` is one sentence fit to show a user."""


class ConfigError(ChatError):
    pass


class StoreError(ChatError):
    pass


class DatabaseCorrupt(StoreError):
    pass


class DatabaseTooNew(StoreError):
    pass


class NotFound(StoreError):
    pass


class ProviderError(ChatError):
    """The model server failed the request. ``kind`` is a stable short name for scripts and tests."""

    kind = "provider"


class AuthenticationFailed(ProviderError):
    kind = "auth"


class ModelNotFound(ProviderError):
    kind = "model"


class RateLimited(ProviderError):
    kind = "rate_limit"

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ServerFailed(ProviderError):
    kind = "server"


class ConnectionFailed(ProviderError):
    kind = "connect"


class TimedOut(ProviderError):
    kind = "timeout"


class StreamBroken(ProviderError):
    kind = "stream"
