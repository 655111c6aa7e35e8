"""Many streams at once, two sends on one branch point, two processes on one file, a process killed mid-reply."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

from core.engine import ChatEngine, ReplyDelta, ReplyFinished
from core.models import Role, Status
from core.server import LocalServer
from core.store import Store
from tests.helpers import CHILD, ROOT, integrity, pieces_for, query, reply_for


def child(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_fifty_sessions_stream_at_once_each_into_its_own_row(engine: ChatEngine, server: LocalServer) -> None:
    sessions = [await engine.store.create_session() for _ in range(50)]
    prompts = [f"session number {n} [[tps=200 tokens=40]]" for n in range(50)]

    async def one(session_id: int, prompt: str) -> tuple[str, ReplyFinished]:
        turn = await engine.send(session_id, prompt, parent_id=None)
        deltas, final = [], None
        async for event in turn:
            if isinstance(event, ReplyDelta):
                deltas.append(event.text)
            else:
                final = event
        assert isinstance(final, ReplyFinished), final
        return "".join(deltas), final

    results = await asyncio.gather(*(one(s.id, p) for s, p in zip(sessions, prompts, strict=True)))

    for session, prompt, (streamed, final) in zip(sessions, prompts, results, strict=True):
        expected = reply_for(prompt, 40)
        assert streamed == expected
        leaf = await engine.store.latest_leaf(session.id)
        user, reply = await engine.store.path(leaf)
        assert final.message == reply
        assert (user.role, user.content) == (Role.USER, prompt)
        assert (reply.status, reply.content, reply.completion_tokens) == (Status.COMPLETE, expected, 40)
    assert sorted(r.prompt for r in server.requests) == sorted(f"session number {n}" for n in range(50))
    assert all(len(r.messages) == 1 for r in server.requests)


async def test_two_sends_from_one_parent_become_two_whole_branches(engine: ChatEngine, server: LocalServer) -> None:
    session = await engine.store.create_session()
    root_turn = await engine.send(session.id, "where do we start [[tokens=10]]", parent_id=None)
    root = await root_turn.wait()

    # The second send starts while the first reply streams, so the newest leaf is then the left reply, not root.
    left = await engine.send(session.id, "go left [[tps=100 tokens=30]]", parent_id=root.id)
    left_events = aiter(left)
    while not isinstance(await anext(left_events), ReplyDelta):
        pass
    right = await engine.send(session.id, "go right [[tps=100 tokens=30]]", parent_id=root.id)
    left_reply, right_reply = await asyncio.gather(left.wait(), right.wait())
    await left_events.aclose()

    assert left.user is not None and right.user is not None
    assert left.user.parent_id == right.user.parent_id == root.id
    assert await engine.store.siblings(left.user.id) == sorted([left.user.id, right.user.id])
    for turn, reply, prompt in ((left, left_reply, "go left"), (right, right_reply, "go right")):
        assert reply.status is Status.COMPLETE
        assert reply.content == reply_for(prompt, 30)
        path = await engine.store.path(reply.id)
        assert [m.id for m in path] == [root_turn.reply.parent_id, root.id, turn.user.id, reply.id]
        request = next(r for r in server.requests if r.prompt == prompt)
        assert [m["content"] for m in request.messages] == [
            "where do we start [[tokens=10]]",
            reply_for("where do we start", 10),
            f"{prompt} [[tps=100 tokens=30]]",
        ]


def test_two_processes_write_a_hundred_turns_each_to_one_file(tmp_path: Path, server: LocalServer) -> None:
    db = tmp_path / "shared.db"
    children = [child("turns", str(db), server.url, "100", tag) for tag in ("alpha", "beta")]
    try:
        for process in children:  # both have imported everything and opened the file: start them together
            assert process.stdout is not None and process.stdout.readline() == "ready\n"
        for process in children:
            assert process.stdin is not None
            process.stdin.write("go\n")
            process.stdin.flush()
        results = [process.communicate(timeout=45) for process in children]
    finally:
        for process in children:
            process.kill()
            process.wait()

    for process, (out, err) in zip(children, results, strict=True):
        assert "database is locked" not in err
        assert process.returncode == 0, err
        assert out == "done\n"
    assert integrity(db) == "ok"
    for tag in ("alpha", "beta"):
        rows = query(
            db,
            "SELECT m.role, m.status, m.content FROM messages m JOIN sessions s ON s.id = m.session_id "
            "WHERE s.title = ? ORDER BY m.id",
            (f"process {tag}",),
        )
        assert len(rows) == 200
        for n in range(100):
            prompt = f"{tag} turn {n} [[tokens=5 tps=0]]"
            assert rows[2 * n] == ("user", "complete", prompt)
            assert rows[2 * n + 1] == ("assistant", "complete", reply_for(prompt, 5))
    assert len(server.requests) == 200


async def test_a_process_killed_mid_reply_leaves_an_interrupted_prefix(tmp_path: Path, server: LocalServer) -> None:
    db = tmp_path / "killed.db"
    prompt = "a long answer please [[tps=40 tokens=400]]"
    process = child("stream", str(db), server.url, prompt)
    try:
        assert process.stdout is not None
        reply_id = int((await asyncio.to_thread(process.stdout.readline)).split()[1])
        for _ in range(500):  # the first flush comes 0.5 s into the stream
            if query(db, "SELECT content FROM messages WHERE id = ?", (reply_id,))[0][0]:
                break
            await asyncio.sleep(0.02)
        await asyncio.sleep(1.0)
        last_seen = query(db, "SELECT content FROM messages WHERE id = ?", (reply_id,))[0][0]
        process.send_signal(signal.SIGKILL)
        killed_at = time.time()
        await asyncio.to_thread(process.wait)
    finally:
        process.kill()
        process.wait()
        process.stdout.close()
        process.stdin.close()
        process.stderr.close()
    assert process.returncode == -signal.SIGKILL

    async with await Store.open(db) as store:
        user, reply = await store.path(reply_id)
    assert (user.role, user.content, user.status) == (Role.USER, prompt, Status.COMPLETE)
    assert reply.status is Status.INTERRUPTED
    assert reply.content and reply.content.startswith(last_seen)
    pieces = pieces_for(prompt, 400)
    assert "".join(pieces).startswith(reply.content)
    saved = next(n for n in range(len(pieces) + 1) if "".join(pieces[:n]) == reply.content)
    streamed = min(400, 40 * (killed_at - server.requests[0].time))  # what the server had sent, at 40 tokens/s
    # Behind by one flush interval (0.5 s = 20 tokens) at most; 1 s of slack for a busy machine.
    assert streamed - saved <= 40 * 1.5, (streamed, saved)
    assert integrity(db) == "ok"
