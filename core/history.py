"""The chat-tui store as a LangChain ``BaseChatMessageHistory``, so other LangChain apps can keep history in it.

Async-native: ``aget_messages``, ``aadd_messages`` and ``aclear`` do the SQLite work on the event loop through
aiosqlite, with no thread hop. The sync methods refuse with a clear message, because the store's connection
belongs to an event loop. A session is named by an outside string key (or our own integer id); appends go
under the session's newest message, so two writers at once make branches and lose nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from core.models import Role, Status
from core.store import Store

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
            if message.type not in ("human", "ai"):
                raise ValueError(f"chat-tui stores human and ai messages, not {message.type!r}")
            rows.append((Role.USER if message.type == "human" else Role.ASSISTANT, message.text))
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
