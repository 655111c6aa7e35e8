"""A second chat-tui process for the multi-process tests: ``python child.py MODE DB URL ...``.

turns DB URL N TAG   print "ready", wait for a line on stdin, then run N turns in a new session (5-token
                     replies at full speed); exit 1 if any turn did not complete. Each turn is a new root of
                     the session, so requests stay one message long and the test measures the store, not the
                     client's per-message cost.
stream DB URL PROMPT send one prompt, print "started <reply id>", then read the reply's events until killed.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from core.config import Settings, load_settings
from core.engine import ChatEngine
from core.models import Status


def _settings(db: str, url: str) -> Settings:
    config = Path(db).with_name("no-config.toml")
    return load_settings(db=db, demo=True, config=config, environ={}).with_demo_server(url)


async def turns(db: str, url: str, count: int, tag: str) -> int:
    async with ChatEngine.open(_settings(db, url)) as engine:
        ChatEngine.preload()
        session = await engine.store.create_session(f"process {tag}")
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        failed = 0
        for n in range(count):
            turn = await engine.send(session.id, f"{tag} turn {n} [[tokens=5 tps=0]]", parent_id=None)
            reply = await turn.wait()
            if reply.status is not Status.COMPLETE:
                print(f"turn {n}: {reply.status} {reply.error}", file=sys.stderr)
                failed += 1
        print("done", flush=True)
        return 1 if failed else 0


async def stream(db: str, url: str, prompt: str) -> int:
    async with ChatEngine.open(_settings(db, url)) as engine:
        session = await engine.store.create_session()
        turn = await engine.send(session.id, prompt, parent_id=None)
        print(f"started {turn.reply.id}", flush=True)
        async for _event in turn:
            pass
        return 0


def main(argv: list[str]) -> int:
    mode, db, url, *rest = argv
    if mode == "turns":
        return asyncio.run(turns(db, url, int(rest[0]), rest[1]))
    if mode == "stream":
        return asyncio.run(stream(db, url, rest[0]))
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
