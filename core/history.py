"""The chat-tui store as a LangChain ``BaseChatMessageHistory``, so other LangChain apps can keep history in it.

Async-native: ``aget_messages``, ``aadd_messages`` and ``aclear`` do the SQLite work on the event loop through
aiosqlite, with no thread hop. The sync methods refuse with a clear message, because the store's connection
belongs to an event loop. A session is named by an outside string key (or our own integer id); appends go
under the session's newest message, so two writers at once make branches and lose nothing. Only human and AI
messages are kept: a turn's system and tool messages are skipped with a warning.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from core.models import Role, Status
from core.store import Store

log = logging.getLogger(__name__)

_SYNC_REFUSAL = "SQLiteChatMessageHistory is async-only: use ainvoke/astream (or the a* methods)."


class SQLiteChatMessageHistory(BaseChatMessageHistory):
    """History of one session. ``session`` is a string key (made on first use) or a chat-tui session id."""

    def __init__(self, store: Store, session: str | int) -> None:
        super().__init__()
        self.store = store
        self.session = session
        self._session_id: int | None = session if isinstance(session, int) else None

    async def _resolve(self) -> int:
        if self._session_id is None:
            self._session_id = (await self.store.session_for_key(str(self.session))).id
        return self._session_id

    async def aget_messages(self) -> list[BaseMessage]:
        session_id = await self._resolve()
        leaf = await self.store.latest_leaf(session_id)
        if leaf is None:
            return []
        out: list[BaseMessage] = []
        for message in await self.store.path(leaf):
            if message.role is Role.USER:
                out.append(HumanMessage(message.content))
            elif message.status is not Status.ERROR:
                out.append(AIMessage(message.content))
        return out

    async def aadd_messages(self, messages: Sequence[BaseMessage]) -> None:
        session_id = await self._resolve()
        rows: list[tuple[Role, str]] = []
        for message in messages:
            # isinstance, not ``type``: a streamed reply comes as an AIMessageChunk, whose type is "AIMessageChunk".
            if isinstance(message, HumanMessage | AIMessage):
                rows.append((Role.USER if isinstance(message, HumanMessage) else Role.ASSISTANT, message.text))
            else:
                # Skipped, not refused: RunnableWithMessageHistory saves a turn's input and reply in one call from a
                # callback that only logs errors, so refusing a system message there would lose the whole turn.
                log.warning("chat-tui history keeps human and ai messages; skipped a %s message", message.type)
        if not rows:
            return
        await self.store.add_messages(session_id, await self.store.latest_leaf(session_id), rows)

    async def aclear(self) -> None:
        await self.store.clear_session(await self._resolve())

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        raise NotImplementedError(_SYNC_REFUSAL)

    def add_messages(self, messages: Sequence[BaseMessage]) -> None:
        raise NotImplementedError(_SYNC_REFUSAL)

    def clear(self) -> None:
        raise NotImplementedError(_SYNC_REFUSAL)
