"""The store as a LangChain chat history, driven by RunnableWithMessageHistory and ChatOpenAI over real HTTP."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import openai
import pytest
from langchain_core._api import LangChainDeprecationWarning
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_openai import ChatOpenAI

from core.history import SQLiteChatMessageHistory
from core.models import Status
from core.server import LocalServer, reply_text
from core.store import Store


@pytest.fixture
async def llm(server: LocalServer) -> AsyncIterator[ChatOpenAI]:
    # Our own connection pool, closed here: langchain-openai's shared default pool outlives the test's event loop.
    async with openai.DefaultAsyncHttpxClient() as http:
        yield ChatOpenAI(
            model="demo", base_url=server.url, api_key="x", max_retries=0, timeout=10, http_async_client=http
        )


async def test_twenty_sessions_at_once_each_keep_their_own_turns(
    store: Store, server: LocalServer, llm: ChatOpenAI
) -> None:
    server.options.tokens = 12
    prompt = ChatPromptTemplate.from_messages(
        [("system", "You remember."), MessagesPlaceholder("history"), ("human", "{question}")]
    )

    def history_for(session_id: str) -> SQLiteChatMessageHistory:
        return SQLiteChatMessageHistory(store, session_id)

    # Deprecated in langchain-core 1.x (removal in 2.0) but still the documented way; this is the only warning.
    with pytest.warns(LangChainDeprecationWarning, match="RunnableWithMessageHistory is deprecated"):
        chain = RunnableWithMessageHistory(
            prompt | llm, history_for, input_messages_key="question", history_messages_key="history"
        )

    async def two_turns(session_id: str) -> list[str]:
        config = {"configurable": {"session_id": session_id}}
        first = await chain.ainvoke({"question": f"{session_id} asks first"}, config=config)
        second = await chain.ainvoke({"question": f"{session_id} asks again"}, config=config)
        return [first.content, second.content]

    ids = [f"user-{n:02}" for n in range(20)]
    answers = await asyncio.gather(*(two_turns(session_id) for session_id in ids))

    for session_id, answer in zip(ids, answers, strict=True):
        first, second = reply_text(f"{session_id} asks first", 12), reply_text(f"{session_id} asks again", 12)
        assert answer == [first, second]
        assert await history_for(session_id).aget_messages() == [
            HumanMessage(f"{session_id} asks first"),
            AIMessage(first),
            HumanMessage(f"{session_id} asks again"),
            AIMessage(second),
        ]
        request = next(r for r in server.requests if r.prompt == f"{session_id} asks again")
        assert [(m["role"], m["content"]) for m in request.messages] == [
            ("system", "You remember."),
            ("user", f"{session_id} asks first"),
            ("assistant", first),
            ("user", f"{session_id} asks again"),
        ]
    assert sorted(s.title for s in await store.list_sessions(limit=100)) == ids


async def test_a_history_by_session_id_appends_under_the_newest_message(store: Store) -> None:
    session = await store.create_session("mine")
    history = SQLiteChatMessageHistory(store, session.id)
    await history.aadd_messages([HumanMessage("one"), AIMessage("two")])
    await history.aadd_messages([HumanMessage("three")])

    assert [m.content for m in await history.aget_messages()] == ["one", "two", "three"]
    leaf = await store.latest_leaf(session.id)
    assert [m.content for m in await store.path(leaf)] == ["one", "two", "three"]
    assert [s.id for s in await store.list_sessions()] == [session.id]  # no extra session for an integer id

    await history.aclear()
    assert await history.aget_messages() == []
    assert (await store.get_session(session.id)).title == "mine"


async def test_failed_replies_are_left_out_of_the_history(store: Store) -> None:
    history = SQLiteChatMessageHistory(store, "with a failure")
    await history.aadd_messages([HumanMessage("first"), AIMessage("answer")])
    session_id = (await store.session_for_key("with a failure")).id
    _, failed = await store.start_turn(session_id, await store.latest_leaf(session_id), "second", "demo")
    await store.finish_reply(failed.id, "half", Status.ERROR, error="The server failed (500).")

    assert await history.aget_messages() == [HumanMessage("first"), AIMessage("answer"), HumanMessage("second")]


async def test_a_turn_sent_with_a_system_message_is_kept(
    store: Store, server: LocalServer, llm: ChatOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    # Messages in, a message out: the history is saved with the system message, from a callback that only logs
    # errors. Refusing the system message lost the question and the answer, and the model had answered.
    server.options.tokens = 8
    with pytest.warns(LangChainDeprecationWarning, match="RunnableWithMessageHistory is deprecated"):
        chain = RunnableWithMessageHistory(llm, lambda session_id: SQLiteChatMessageHistory(store, session_id))
    config = {"configurable": {"session_id": "with a system prompt"}}

    with caplog.at_level(logging.WARNING, logger="core.history"):
        first = await chain.ainvoke([SystemMessage("Be brief."), HumanMessage("what is WAL?")], config=config)
        async for _ in chain.astream([HumanMessage("and FTS?")], config=config):  # the reply comes in chunks
            pass

    assert first.content == reply_text("what is WAL?", 8)
    assert await SQLiteChatMessageHistory(store, "with a system prompt").aget_messages() == [
        HumanMessage("what is WAL?"),
        AIMessage(reply_text("what is WAL?", 8)),
        HumanMessage("and FTS?"),
        AIMessage(reply_text("and FTS?", 8)),
    ]
    assert [r.getMessage() for r in caplog.records] == [
        "chat-tui history keeps human and ai messages; skipped a system message"
    ]


async def test_the_history_skips_what_it_cannot_keep_and_refuses_sync_use(store: Store) -> None:
    history = SQLiteChatMessageHistory(store, "strict")
    await history.aadd_messages([SystemMessage("not a turn")])
    assert await history.aget_messages() == []
    await history.aadd_messages(
        [HumanMessage("weather?"), ToolMessage("sunny", tool_call_id="call-1"), AIMessage("It is sunny.")]
    )
    assert await history.aget_messages() == [HumanMessage("weather?"), AIMessage("It is sunny.")]
    await history.aclear()
    with pytest.raises(NotImplementedError, match="async-only"):
        _ = history.messages
    with pytest.raises(NotImplementedError, match="async-only"):
        history.add_messages([HumanMessage("sync")])
    with pytest.raises(NotImplementedError, match="async-only"):
        history.clear()
    assert await history.aget_messages() == []
