"""The engine over real HTTP: turns, branches, what is sent, cancellation, every fault, keys that never leak."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import aclosing, closing
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from core import store as store_module
from core.config import Profile, Settings
from core.engine import ChatEngine, ReplyDelta, ReplyFailed, ReplyFinished, ReplyUsage, Turn
from core.errors import (
    AuthenticationFailed,
    ConfigError,
    ConnectionFailed,
    ModelNotFound,
    RateLimited,
    ServerFailed,
    StoreError,
    StreamBroken,
    TimedOut,
)
from core.export import to_json, to_markdown
from core.models import Message, Status
from core.provider import openai_chat_model
from core.server import LocalServer, ServerOptions
from tests.helpers import closed_port, demo_variant, pieces_for, query, reply_for, with_profiles


async def run_turn(turn: Turn) -> tuple[str, ReplyFinished | ReplyFailed]:
    """Consume a turn's events: the streamed text and the final event."""
    deltas: list[str] = []
    async for event in turn:
        if isinstance(event, ReplyDelta):
            deltas.append(event.text)
        elif isinstance(event, ReplyFinished | ReplyFailed):
            return "".join(deltas), event
    raise AssertionError("the events ended without ReplyFinished or ReplyFailed")


async def complete_turn(engine: ChatEngine, session_id: int, text: str, parent_id: int | None) -> Message:
    turn = await engine.send(session_id, text, parent_id=parent_id)
    reply = await turn.wait()
    assert reply.status is Status.COMPLETE, reply.error
    return reply


async def wait_for_requests(server: LocalServer, count: int) -> None:
    for _ in range(1000):
        if len(server.requests) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"the server got {len(server.requests)} requests, expected {count}")


def sent(server: LocalServer, index: int = -1) -> list[tuple[str, str]]:
    """(role, content) of each message of a request as the server received it."""
    return [(m["role"], m["content"]) for m in server.requests[index].messages]


# -- a turn ----------------------------------------------------------------------------------------------------


async def test_a_turn_streams_the_reply_and_saves_it_complete(engine: ChatEngine) -> None:
    session = await engine.store.create_session()
    prompt = "Tell me about SQLite [[tokens=40]]"

    turn = await engine.send(session.id, prompt, parent_id=None)
    assert turn.user is not None and turn.user.content == prompt
    assert turn.reply.status is Status.STREAMING and turn.reply.parent_id == turn.user.id
    events = [event async for event in turn]

    assert "".join(e.text for e in events if isinstance(e, ReplyDelta)) == reply_for(prompt, 40)
    assert [e for e in events if isinstance(e, ReplyUsage)][-1].completion_tokens == 40
    final = events[-1]
    assert isinstance(final, ReplyFinished)
    saved = await engine.store.get_message(turn.reply.id)
    assert saved == final.message
    assert (saved.content, saved.status, saved.completion_tokens, saved.model) == (
        reply_for(prompt, 40),
        Status.COMPLETE,
        40,
        "demo",
    )
    assert (await engine.store.get_session(session.id)).title == prompt


async def test_the_request_holds_exactly_the_branch_and_the_system_prompt(
    engine: ChatEngine, server: LocalServer
) -> None:
    session = await engine.store.create_session(system_prompt="Answer like a pirate.")
    first = await complete_turn(engine, session.id, "first [[tokens=8]]", None)
    second = await complete_turn(engine, session.id, "second [[tokens=8]]", first.id)
    second_user = await engine.store.get_message(second.parent_id)

    edited = await engine.edit(second_user.id, "second, edited [[tokens=8]]")
    await edited.wait()
    assert sent(server) == [
        ("system", "Answer like a pirate."),
        ("user", "first [[tokens=8]]"),
        ("assistant", reply_for("first", 8)),
        ("user", "second, edited [[tokens=8]]"),
    ]

    await complete_turn(engine, session.id, "third [[tokens=8]]", second.id)  # on the original branch
    assert sent(server) == [
        ("system", "Answer like a pirate."),
        ("user", "first [[tokens=8]]"),
        ("assistant", reply_for("first", 8)),
        ("user", "second [[tokens=8]]"),
        ("assistant", reply_for("second", 8)),
        ("user", "third [[tokens=8]]"),
    ]


async def test_a_failed_reply_is_left_out_of_the_next_request(engine: ChatEngine, server: LocalServer) -> None:
    session = await engine.store.create_session()
    prompt = "break off [[cut_after=5]]"
    failed = await (await engine.send(session.id, prompt, parent_id=None)).wait()
    assert failed.status is Status.ERROR and failed.content == "".join(pieces_for(prompt)[:5])

    await complete_turn(engine, session.id, "try again [[tokens=8]]", failed.id)
    # The partial text of a reply that failed is not the model's answer: the next request skips it.
    assert sent(server) == [("user", prompt), ("user", "try again [[tokens=8]]")]


async def test_a_session_without_system_prompt_sends_none(engine: ChatEngine, server: LocalServer) -> None:
    session = await engine.store.create_session()
    await complete_turn(engine, session.id, "plain [[tokens=8]]", None)
    assert sent(server) == [("user", "plain [[tokens=8]]")]


async def test_regenerate_makes_a_sibling_reply(engine: ChatEngine, server: LocalServer) -> None:
    session = await engine.store.create_session()
    first = await complete_turn(engine, session.id, "again and again [[tokens=12]]", None)

    turn = await engine.regenerate(first.id)
    assert turn.user is None
    second = await turn.wait()

    assert second.id != first.id and second.parent_id == first.parent_id
    assert second.status is Status.COMPLETE and second.content == reply_for("again and again", 12)
    assert await engine.store.siblings(second.id) == [first.id, second.id]
    assert (await engine.store.get_message(first.id)).content == first.content  # the old reply stays
    assert sent(server) == sent(server, 0) == [("user", "again and again [[tokens=12]]")]


async def test_edit_makes_a_sibling_user_message_and_its_reply(engine: ChatEngine) -> None:
    session = await engine.store.create_session()
    first = await complete_turn(engine, session.id, "original [[tokens=6]]", None)
    reply = await complete_turn(engine, session.id, "follow-up [[tokens=6]]", first.id)
    follow_up = await engine.store.get_message(reply.parent_id)

    turn = await engine.edit(follow_up.id, "follow-up, reworded [[tokens=6]]")
    edited_reply = await turn.wait()

    assert turn.user is not None and turn.user.parent_id == first.id
    assert await engine.store.siblings(turn.user.id) == [follow_up.id, turn.user.id]
    assert edited_reply.content == reply_for("follow-up, reworded", 6)
    path = await engine.store.path(edited_reply.id)
    assert [m.content for m in path] == [
        "original [[tokens=6]]",
        reply_for("original", 6),
        "follow-up, reworded [[tokens=6]]",
        reply_for("follow-up, reworded", 6),
    ]
    with pytest.raises(ValueError):
        await engine.edit(reply.id, "replies cannot be edited")


async def test_a_missing_key_fails_before_anything_is_saved(
    tmp_path: Path, settings: Settings, server: LocalServer
) -> None:
    remote = Profile(
        name="remote",
        model="gpt-4o-mini",
        base_url="https://api.example.invalid/v1",
        api_key_env="CHAT_TUI_TEST_NO_KEY",
    )
    async with ChatEngine.open(with_profiles(settings, remote)) as engine:
        session = await engine.store.create_session(profile="remote")
        with pytest.raises(ConfigError, match="CHAT_TUI_TEST_NO_KEY"):
            await engine.send(session.id, "hello?", parent_id=None)
        demo_session = await engine.store.create_session()
        with pytest.raises(ConfigError, match="CHAT_TUI_TEST_NO_KEY"):
            await engine.send(demo_session.id, "hello?", parent_id=None, profile="remote")
    assert query(settings.db_path, "SELECT count(*) FROM messages") == [(0,)]
    assert server.requests == []


async def test_the_user_message_and_the_empty_reply_are_committed_before_the_request(
    engine: ChatEngine, server: LocalServer
) -> None:
    session = await engine.store.create_session()
    prompt = "keep me even if the server hangs [[stall=10]]"
    turn = await engine.send(session.id, prompt, parent_id=None)
    await wait_for_requests(server, 1)

    assert turn.user is not None
    # Another program's view of the file while the request is in flight: both rows are already there.
    rows = query(
        engine.settings.db_path,
        "SELECT id, parent_id, role, status, content FROM messages WHERE session_id = ? ORDER BY id",
        (session.id,),
    )
    assert rows == [
        (turn.user.id, None, "user", "complete", prompt),
        (turn.reply.id, turn.user.id, "assistant", "streaming", ""),
    ]
    turn.cancel()
    assert (await turn.wait()).status is Status.INTERRUPTED


async def test_flushes_are_bounded_and_visible_while_streaming(engine: ChatEngine) -> None:
    session = await engine.store.create_session()
    first = await complete_turn(engine, session.id, "warm up", None)  # the model client is built: streams at once
    before = engine.store.write_transactions
    started = time.monotonic()
    turn = await engine.send(session.id, "a two-second reply [[tps=50 tokens=100]]", parent_id=first.id)

    midway = turn.reply
    while not midway.content and not turn.done:  # the first flush is due 0.5 s in, the reply ends 2 s in
        await asyncio.sleep(0.05)
        midway = await engine.store.get_message(turn.reply.id)  # through the reader connection: committed rows only
    reply = await turn.wait()
    elapsed = time.monotonic() - started

    assert midway.status is Status.STREAMING and midway.content
    assert reply.content.startswith(midway.content) and reply.content != midway.content
    writes = engine.store.write_transactions - before
    # start_turn + finish_reply, and at most one flush per FLUSH_INTERVAL (0.5 s) of streaming, never per token.
    assert 3 <= writes <= 2 + 2 * elapsed, (writes, elapsed)


@contextlib.contextmanager
def another_program_writing(path: Path) -> Iterator[None]:
    """Hold the database's write lock from another connection, as a sqlite3 shell in a transaction would."""
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")
        try:
            yield
        finally:
            other.execute("ROLLBACK")


@pytest.fixture
async def impatient_engine(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[ChatEngine]:
    """An engine whose writes give up on a locked database after 0.2 s instead of 15."""
    monkeypatch.setattr(store_module, "BUSY_TIMEOUT_MS", 200)
    async with ChatEngine.open(settings) as chat_engine:
        yield chat_engine


async def test_saves_refused_mid_stream_do_not_stop_the_reply(impatient_engine: ChatEngine) -> None:
    engine = impatient_engine
    session = await engine.store.create_session()
    first = await complete_turn(engine, session.id, "warm up", None)  # the model client is built: streams at once
    turn = await engine.send(session.id, "a two-second reply [[tps=50 tokens=100]]", parent_id=first.id)
    consuming = asyncio.ensure_future(run_turn(turn))
    await asyncio.sleep(0.3)
    before = engine.store.write_transactions
    with another_program_writing(engine.settings.db_path):
        await asyncio.sleep(1.2)  # two flushes refused meanwhile
    assert engine.store.write_transactions == before
    text, final = await asyncio.wait_for(consuming, timeout=10)
    assert isinstance(final, ReplyFinished)
    assert final.message.status is Status.COMPLETE and final.message.content == text
    assert (await engine.store.get_message(turn.reply.id)).content == text


async def test_a_final_save_refused_still_ends_the_reply_and_says_so(impatient_engine: ChatEngine) -> None:
    engine = impatient_engine
    session = await engine.store.create_session()
    turn = await engine.send(session.id, "a short reply [[tps=100 tokens=30]]", parent_id=None)
    with another_program_writing(engine.settings.db_path):
        text, final = await asyncio.wait_for(run_turn(turn), timeout=10)
    assert isinstance(final, ReplyFailed) and isinstance(final.error, StoreError)
    assert "could not be saved" in str(final.error) and "locked" in str(final.error)
    assert final.message.content == text and final.message.status is Status.ERROR
    assert (await turn.wait()) == final.message


async def test_a_paced_reply_is_read_in_batches_not_a_wake_up_per_token(engine: ChatEngine) -> None:
    session = await engine.store.create_session()
    prompt = "one token every 10 ms [[tps=100 tokens=80]]"
    turn = await engine.send(session.id, prompt, parent_id=None)
    arrivals: list[float] = []
    text = []
    async for event in turn:
        if isinstance(event, ReplyDelta):
            arrivals.append(time.monotonic())
            text.append(event.text)

    assert "".join(text) == reply_for(prompt, 80)
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    # Token by token, every gap would be ~10 ms; read in batches, most tokens come together with the one before.
    together = sum(gap < 0.003 for gap in gaps)
    assert together >= len(gaps) // 2, gaps


async def test_closing_the_engine_closes_its_connection_pools(settings: Settings) -> None:
    async with ChatEngine.open(settings) as engine:
        session = await engine.store.create_session()
        await (await engine.send(session.id, "hi [[tokens=3]]", parent_id=None)).wait()
        model = engine.chat_model(await engine.profile_for(session.id))
        assert not model.root_async_client.is_closed()  # type: ignore[attr-defined]
    assert model.root_async_client.is_closed()  # type: ignore[attr-defined]


async def test_the_first_turn_builds_its_model_off_the_event_loop(settings: Settings) -> None:
    # Building the client imports langchain-openai the first time (~1 s): the loop must keep turning meanwhile.
    def slow_factory(profile: Profile, key: str) -> Any:
        time.sleep(0.5)
        return openai_chat_model(profile, key)

    async with ChatEngine.open(settings, model_factory=slow_factory) as engine:
        session = await engine.store.create_session()
        ticks: list[float] = []

        async def tick() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.01)

        ticker = asyncio.create_task(tick())
        try:
            reply = await (await engine.send(session.id, "hi [[tokens=5]]", parent_id=None)).wait()
        finally:
            ticker.cancel()
    assert reply.status is Status.COMPLETE
    assert max(b - a for a, b in zip(ticks, ticks[1:], strict=False)) < 0.3


def test_two_builders_of_one_model_at_once_end_up_sharing_it(settings: Settings) -> None:
    # The app builds the default model in a thread while a first send may build it too: one must win, or the
    # other's connection pool is never closed.
    built: list[object] = []
    both_building = threading.Barrier(2)

    def factory(profile: Profile, key: str) -> Any:
        model = object()
        built.append(model)
        both_building.wait(5)
        return model

    engine = ChatEngine(settings, store=None, model_factory=factory)  # type: ignore[arg-type]
    profile = settings.profile()
    with ThreadPoolExecutor(2) as pool:
        first, second = pool.map(lambda _: engine.chat_model(profile), range(2))
    assert len(built) == 2
    assert first is second is engine.chat_model(profile)


# -- cancelling ------------------------------------------------------------------------------------------------


async def test_cancel_mid_stream_keeps_the_partial_reply(engine: ChatEngine, server: LocalServer) -> None:
    session = await engine.store.create_session()
    prompt = "stop me halfway [[tps=50 tokens=400]]"
    turn = await engine.send(session.id, prompt, parent_id=None)

    received: list[str] = []
    final: ReplyFinished | ReplyFailed | None = None
    async with aclosing(turn.events()) as events:
        async for event in events:
            if isinstance(event, ReplyDelta):
                received.append(event.text)
                if len(received) == 5:
                    turn.cancel()
            elif isinstance(event, ReplyFinished | ReplyFailed):
                final = event

    assert isinstance(final, ReplyFinished)
    partial = await engine.store.get_message(turn.reply.id)
    assert final.message == partial == await turn.wait()
    assert partial.status is Status.INTERRUPTED and partial.error is None
    assert partial.content == "".join(received)
    assert len(received) >= 5 and reply_for(prompt, 400).startswith(partial.content)
    assert len(received) < 400

    after = await complete_turn(engine, session.id, "and now? [[tokens=8]]", partial.id)
    assert after.content == reply_for("and now?", 8)
    assert sent(server)[-2:] == [("assistant", partial.content), ("user", "and now? [[tokens=8]]")]


async def test_cancel_while_the_server_stalls_before_the_first_chunk(engine: ChatEngine, server: LocalServer) -> None:
    session = await engine.store.create_session()
    turn = await engine.send(session.id, "nothing yet [[stall=10]]", parent_id=None)
    await wait_for_requests(server, 1)

    started = time.perf_counter()
    turn.cancel()
    reply = await turn.wait()
    elapsed = time.perf_counter() - started

    # The requirement is 100 ms; 0.5 s still fails a cancel that waits for the 10 s stall or for a read timeout,
    # without failing on a loaded 2-core CI machine.
    assert elapsed < 0.5, elapsed
    assert reply.status is Status.INTERRUPTED and reply.content == ""
    assert (await engine.store.get_message(reply.id)).status is Status.INTERRUPTED

    after = await complete_turn(engine, session.id, "second try [[tokens=8]]", reply.id)
    assert after.content == reply_for("second try", 8)


async def test_a_cancel_is_never_lost_wherever_it_lands(engine: ChatEngine, server: LocalServer) -> None:
    session = await engine.store.create_session()
    for n in range(30):  # cancels at slightly different moments around the first chunks
        turn = await engine.send(session.id, f"attempt {n} [[tps=50 tokens=100]]", parent_id=None)
        while len(server.requests) <= n:
            await asyncio.sleep(0.001 * (n % 10))
        turn.cancel()
        reply = await turn.wait()
        assert reply.status is Status.INTERRUPTED, f"cancel {n} was lost: the reply streamed on to {reply.status}"


async def test_a_cancel_before_the_reply_even_started_is_saved_as_interrupted(engine: ChatEngine) -> None:
    session = await engine.store.create_session()
    turn = await engine.send(session.id, "never mind", parent_id=None)
    turn.cancel()  # in the same step as the send: the reply's task has not run yet
    text, final = await asyncio.wait_for(run_turn(turn), timeout=10)
    assert text == "" and isinstance(final, ReplyFinished)
    assert final.message.status is Status.INTERRUPTED
    assert (await engine.store.get_message(turn.reply.id)).status is Status.INTERRUPTED
    assert turn.result == final.message


async def test_a_send_cancelled_right_after_its_first_write_leaves_no_reply_streaming(
    engine: ChatEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tab closed right after Enter cancels the send. Landing just after the first write committed, that cancel
    left the reply row streaming for good (nothing owned it yet); now the reply ends interrupted."""
    session = await engine.store.create_session()
    await complete_turn(engine, session.id, "warm up", None)
    committed = asyncio.Event()
    start_turn = engine.store.start_turn

    async def observed_start_turn(*args: Any, **kwargs: Any) -> tuple[Message, Message]:
        rows = await start_turn(*args, **kwargs)
        committed.set()
        return rows

    monkeypatch.setattr(engine.store, "start_turn", observed_start_turn)
    for attempt in range(5):
        committed.clear()
        sending = asyncio.ensure_future(engine.send(session.id, f"closed at once {attempt} [[tps=20]]", parent_id=None))
        await committed.wait()
        for _ in range(attempt):  # a few turns of the event loop later each time
            await asyncio.sleep(0)
        if sending.done():  # the send returned first: the tab has the turn, and cancels it on closing
            sending.result().cancel()
        sending.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sending
    for _ in range(500):
        if not engine._turns and not engine._pending:
            break
        await asyncio.sleep(0.01)
    rows = query(engine.settings.db_path, "SELECT status FROM messages WHERE role = 'assistant' AND id > 2")
    assert [status for (status,) in rows] == ["interrupted"] * 5


async def test_text_received_before_the_server_pauses_is_saved_during_the_pause(
    engine: ChatEngine, server: LocalServer
) -> None:
    """A crash loses at most FLUSH_INTERVAL of a reply, also when the server pauses (a reasoning model)."""
    session = await engine.store.create_session()
    await complete_turn(engine, session.id, "warm up", None)
    turn = await engine.send(session.id, "then think [[tokens=60 tps=0 stall=30 stall_after=20]]", parent_id=None)
    received: list[str] = []

    async def consume() -> None:
        async for event in turn:
            if isinstance(event, ReplyDelta):
                received.append(event.text)

    consuming = asyncio.ensure_future(consume())
    for _ in range(500):
        if len(received) >= 20:
            break
        await asyncio.sleep(0.01)
    assert len(received) == 20
    await asyncio.sleep(1.2)  # the server is pausing: no chunk arrives to trigger a save
    saved = await engine.store.get_message(turn.reply.id)
    assert saved.status is Status.STREAMING and saved.content == "".join(received)
    turn.cancel()
    await consuming


async def test_cancelling_again_while_the_partial_reply_is_saved_changes_nothing(
    engine: ChatEngine, server: LocalServer
) -> None:
    session = await engine.store.create_session()
    prompt = "Esc, Esc, Esc [[tps=50 tokens=400]]"
    turn = await engine.send(session.id, prompt, parent_id=None)
    await wait_for_requests(server, 1)
    await asyncio.sleep(0.3)

    while not turn.done:  # a cancel on every pass of the loop, so some land while the row is being written
        turn.cancel()
        await asyncio.sleep(0)

    reply = await turn.wait()
    _, end = await asyncio.wait_for(run_turn(turn), timeout=5)
    assert isinstance(end, ReplyFinished) and end.message == reply
    assert reply.status is Status.INTERRUPTED and reply_for(prompt, 400).startswith(reply.content)
    assert await engine.store.get_message(reply.id) == reply


async def test_leaving_the_event_loop_early_cancels_the_reply(engine: ChatEngine) -> None:
    session = await engine.store.create_session()
    prompt = "I will not listen [[tps=50 tokens=400]]"
    turn = await engine.send(session.id, prompt, parent_id=None)

    async for event in turn:
        if isinstance(event, ReplyDelta):
            break
    reply = await asyncio.wait_for(turn.wait(), timeout=5)  # the full reply would take 8 s

    assert reply.status is Status.INTERRUPTED
    assert reply_for(prompt, 400).startswith(reply.content) and len(reply.content) < len(reply_for(prompt, 400))


async def test_closing_the_engine_saves_live_replies_as_interrupted(settings: Settings, server: LocalServer) -> None:
    async with ChatEngine.open(settings) as engine:
        session = await engine.store.create_session()
        turn = await engine.send(session.id, "still talking [[tps=50 tokens=400]]", parent_id=None)
        await wait_for_requests(server, 1)
    assert query(settings.db_path, "SELECT status FROM messages WHERE id = ?", (turn.reply.id,)) == [("interrupted",)]


# -- faults ----------------------------------------------------------------------------------------------------

FAULTS = [
    pytest.param("[[status=401]]", "demo", AuthenticationFailed, "rejected the API key (401)", 0, id="401"),
    pytest.param("[[status=404]]", "demo", ModelNotFound, "does not know the model 'demo' (404)", 0, id="404"),
    pytest.param("", "missing", ModelNotFound, "does not know the model 'missing' (404)", 0, id="404-model"),
    pytest.param("[[status=429 retry_after=3]]", "demo", RateLimited, "(429). Try again in 3 s", 0, id="429"),
    pytest.param("[[status=500]]", "demo", ServerFailed, "failed (500)", 0, id="500"),
    pytest.param("[[cut_after=5]]", "demo", StreamBroken, "connection dropped mid-reply", 5, id="cut"),
    pytest.param("[[malformed_after=5]]", "demo", StreamBroken, "malformed reply", 5, id="malformed"),
    pytest.param("[[unfinished_after=5]]", "demo", StreamBroken, "before the server finished it", 5, id="no-finish"),
    pytest.param("[[stall=5 stall_after=5]]", "demo", TimedOut, "No answer from", 5, id="stall"),
]


@pytest.mark.parametrize(("directive", "model", "error_class", "words", "kept"), FAULTS)
async def test_each_fault_is_saved_as_an_error_while_a_healthy_session_streams_on(
    settings: Settings,
    server: LocalServer,
    directive: str,
    model: str,
    error_class: type[Exception],
    words: str,
    kept: int,
) -> None:
    faulty = demo_variant(settings, "faulty", model=model, timeout=1.0)
    async with ChatEngine.open(faulty) as engine:
        healthy_session = await engine.store.create_session()
        faulty_session = await engine.store.create_session(profile="faulty")
        healthy_prompt = "healthy [[tps=200 tokens=60]]"
        prompt = f"unlucky {directive}"

        healthy = await engine.send(healthy_session.id, healthy_prompt, parent_id=None)
        turn = await engine.send(faulty_session.id, prompt, parent_id=None)
        (healthy_text, healthy_end), (text, end) = await asyncio.gather(run_turn(healthy), run_turn(turn))

        assert isinstance(end, ReplyFailed)
        assert type(end.error) is error_class
        assert words in str(end.error)
        saved = await engine.store.get_message(turn.reply.id)
        assert saved == end.message
        assert saved.status is Status.ERROR and saved.error == str(end.error)
        assert saved.content == text == "".join(pieces_for(prompt)[:kept])
        if isinstance(end.error, RateLimited):
            assert end.error.retry_after == 3.0

        assert isinstance(healthy_end, ReplyFinished)
        assert healthy_end.message.status is Status.COMPLETE
        assert healthy_text == healthy_end.message.content == reply_for(healthy_prompt, 60)
        assert (await engine.store.get_message(healthy.reply.id)).content == reply_for(healthy_prompt, 60)
    # One request each: a client retrying behind the user's back would send the prompt again.
    assert sorted(r.prompt for r in server.requests) == ["healthy", "unlucky"]


async def test_a_server_that_is_not_there_is_a_connection_failure(settings: Settings) -> None:
    port = closed_port()
    async with ChatEngine.open(demo_variant(settings, "nowhere", base_url=f"http://127.0.0.1:{port}/v1")) as engine:
        session = await engine.store.create_session()
        turn = await engine.send(session.id, "anyone?", parent_id=None, profile="nowhere")
        _, end = await run_turn(turn)
    assert isinstance(end, ReplyFailed) and type(end.error) is ConnectionFailed
    assert str(end.error) == f"Cannot connect to http://127.0.0.1:{port}/v1. Is the server running?"
    assert (end.message.status, end.message.content, end.message.error) == (Status.ERROR, "", str(end.error))


# -- the API key -------------------------------------------------------------------------------------------------

SECRET = "sk-chattui-test-0c7e1f9a4b2d8e6f3a5c"


async def test_the_api_key_appears_in_no_file_export_or_error(
    tmp_path: Path, settings: Settings, capfd: pytest.CaptureFixture[str]
) -> None:
    with (
        LocalServer(ServerOptions(api_key="a-different-key", tokens=20)) as wrong,
        LocalServer(ServerOptions(api_key=SECRET, tokens=20)) as right,
    ):
        profiles = [
            Profile(name=name, model="demo", base_url=url, api_key_env="CHAT_TUI_TEST_KEY", timeout=10)
            for name, url in (("wrong", wrong.url), ("right", right.url))
        ]
        keyed = replace(with_profiles(settings, *profiles), environ={"CHAT_TUI_TEST_KEY": SECRET})
        texts: list[str] = [repr(keyed), str(keyed), *map(repr, profiles)]
        async with ChatEngine.open(keyed) as engine:
            rejected_session = await engine.store.create_session(profile="wrong")
            _, rejected = await run_turn(await engine.send(rejected_session.id, "let me in", parent_id=None))
            accepted_session = await engine.store.create_session(profile="right")
            _, accepted = await run_turn(await engine.send(accepted_session.id, "hello", parent_id=None))

            assert isinstance(rejected, ReplyFailed) and isinstance(rejected.error, AuthenticationFailed)
            assert "CHAT_TUI_TEST_KEY" in str(rejected.error)
            assert isinstance(accepted, ReplyFinished) and accepted.message.content == reply_for("hello", 20)
            texts += [str(rejected.error), repr(rejected.error), repr(rejected.message), repr(accepted.message)]
            for session in (rejected_session, accepted_session):
                messages = await engine.store.path(await engine.store.latest_leaf(session.id))
                texts += [to_markdown(session, messages), to_json(session, messages)]
            files_while_open = {p.name: p.read_bytes() for p in tmp_path.glob("h.db*")}

    assert "h.db-wal" in files_while_open
    files_after = {p.name: p.read_bytes() for p in tmp_path.glob("h.db*")}
    out, err = capfd.readouterr()
    texts += [out, err]
    for name, data in {**files_while_open, **files_after}.items():
        assert SECRET.encode() not in data, name
    for text in texts:
        assert SECRET not in text
    assert query(settings.db_path, "SELECT count(*) FROM messages") == [(4,)]
