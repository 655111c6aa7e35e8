"""Engine benchmark: prints figures, asserts nothing. Run: python benchmarks/bench_core.py

(a) loading the last 200 messages of a 10,000-message session;
(b) 8 sessions streaming 2,000-token replies at the local server's full speed: aggregate tokens/s and the
    worst event-loop stall a 10 ms ticker saw;
(c) database write transactions per streamed reply, against the budget of 2 + 2 per second of streaming.
The server runs in its own process (``python -m core.server``) so its CPU is not charged to the engine.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from core.config import load_settings
from core.engine import ChatEngine, ReplyDelta
from core.models import Role
from core.store import Store


def start_server(*args: str) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "core.server", "--port", "0", *args], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    url = proc.stdout.readline().strip()
    return proc, url


async def bench_load(tmp: Path, runs: int) -> None:
    store = await Store.open(tmp / "load.db")
    try:
        session = await store.create_session("long")
        parent = None
        batch = [
            (Role.USER if i % 2 == 0 else Role.ASSISTANT, f"message {i} " + "lorem ipsum " * 20) for i in range(500)
        ]
        for _ in range(20):  # 10,000 messages in one chain
            added = await store.add_messages(session.id, parent, batch)
            parent = added[-1].id
        leaf = await store.latest_leaf(session.id)
        assert leaf is not None
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            messages = await store.path(leaf, limit=200)
            await store.sibling_counts(m.id for m in messages)
            times.append(time.perf_counter() - start)
        assert len(messages) == 200
        print(
            f"(a) last 200 of 10,000 messages (path + sibling counts): median {statistics.median(times) * 1000:.1f} ms,"
            f" max {max(times) * 1000:.1f} ms over {runs} runs (floor: <= 20 ms)"
        )
    finally:
        await store.close()


async def ticker(stalls: list[float], stop: asyncio.Event) -> None:
    period = 0.01
    last = time.perf_counter()
    while not stop.is_set():
        await asyncio.sleep(period)
        now = time.perf_counter()
        stalls.append(now - last - period)
        last = now


async def bench_stream(tmp: Path, url: str, sessions: int, tokens: int) -> tuple[float, float, float]:
    settings = load_settings(
        db=tmp / f"stream-{time.monotonic_ns()}.db", demo=True, config=tmp / "none.toml", environ={}
    ).with_demo_server(url)
    async with ChatEngine.open(settings) as engine:
        ChatEngine.preload()
        # Warm the connection pool and imports so the figures are about streaming.
        warm = await engine.store.create_session()
        await (await engine.send(warm.id, "warm up [[tokens=5]]", parent_id=None)).wait()
        ids = [(await engine.store.create_session()).id for _ in range(sessions)]
        stalls: list[float] = []
        stop = asyncio.Event()
        tick = asyncio.create_task(ticker(stalls, stop))
        before = engine.store.write_transactions
        counted = 0

        async def one(i: int, session_id: int) -> float:
            nonlocal counted
            turn = await engine.send(session_id, f"benchmark prompt {i} [[tokens={tokens}]]", parent_id=None)
            start = time.perf_counter()
            async for event in turn:
                if isinstance(event, ReplyDelta):
                    counted += 1
            return time.perf_counter() - start

        start = time.perf_counter()
        durations = await asyncio.gather(*(one(i, s) for i, s in enumerate(ids)))
        wall = time.perf_counter() - start
        stop.set()
        await tick
        writes = engine.store.write_transactions - before
    per_reply = writes / sessions
    budget = 2 + 2 * statistics.mean(durations)
    print(
        f"(b) {sessions} sessions x {tokens} tokens at full speed: {counted / wall:,.0f} tokens/s aggregate, "
        f"{wall:.2f} s wall; worst event-loop stall {max(stalls) * 1000:.1f} ms (floor: <= 50 ms)"
    )
    print(
        f"(c) write transactions per reply: {per_reply:.1f} over {statistics.mean(durations):.2f} s of streaming "
        f"(budget 2 + 2/s = {budget:.1f})"
    )
    return counted / wall, max(stalls), per_reply


async def bench_paced(tmp: Path, url: str) -> None:
    settings = load_settings(db=tmp / "paced.db", demo=True, config=tmp / "none.toml", environ={}).with_demo_server(url)
    async with ChatEngine.open(settings) as engine:
        session = await engine.store.create_session()
        before = engine.store.write_transactions
        start = time.perf_counter()
        await (await engine.send(session.id, "paced [[tokens=400 tps=100]]", parent_id=None)).wait()
        seconds = time.perf_counter() - start
        writes = engine.store.write_transactions - before
    print(
        f"(c) a reply streamed over {seconds:.1f} s at 100 tokens/s: {writes} write transactions "
        f"(budget 2 + 2/s = {2 + 2 * seconds:.1f})"
    )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--sessions", type=int, default=8)
    parser.add_argument("--tokens", type=int, default=2000)
    args, _ = parser.parse_known_args()
    proc, url = start_server()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            await bench_load(Path(tmp), 20)
            results = [await bench_stream(Path(tmp), url, args.sessions, args.tokens) for _ in range(args.runs)]
            rates, stalls, writes = zip(*results, strict=True)
            print(
                f"(b) median of {args.runs}: {statistics.median(rates):,.0f} tokens/s, "
                f"worst stall median {statistics.median(stalls) * 1000:.1f} ms, max {max(stalls) * 1000:.1f} ms; "
                f"(c) writes per reply median {statistics.median(writes):.1f}"
            )
            await bench_paced(Path(tmp), url)
    finally:
        proc.terminate()
        proc.wait()


if __name__ == "__main__":
    asyncio.run(main())
