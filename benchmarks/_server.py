"""Benchmark helper: the local server of `python -m core.server`, plus one JSON line per request on stdout.

Same options as `python -m core.server` (it uses its argument parser and its `LocalServer` unchanged); the first
line printed is the base URL. Then, for each chat-completions request:

    {"event": "start", "t": <monotonic>, "prompt": <last user message as sent, directives included>}
    {"event": "end", "t": <monotonic>, "prompt": ..., "ok": <false if the client went away>}

"end" is stamped after the last byte of the response was written to the socket: the server's last byte.
`time.monotonic()` is CLOCK_MONOTONIC, the same clock in every process on the machine.
"""

from __future__ import annotations

import json
import signal
import sys
import threading
import time
from typing import Any

from core import server as core_server

_lock = threading.Lock()


def _emit(**fields: Any) -> None:
    line = json.dumps(fields) + "\n"
    with _lock:
        sys.stdout.write(line)
        sys.stdout.flush()


def _prompt_of(raw: bytes) -> str:
    try:
        body = json.loads(raw)
        messages = body.get("messages") or []
        return next((core_server._text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
    except Exception:  # noqa: BLE001 - a malformed body is the server's business, not ours
        return ""


_original = core_server._Handler._chat_completions


def _chat_completions(self: Any, raw: bytes) -> None:
    prompt = _prompt_of(raw)
    _emit(event="start", t=time.monotonic(), prompt=prompt)
    ok = False
    try:
        _original(self, raw)
        ok = True
    finally:
        _emit(event="end", t=time.monotonic(), prompt=prompt, ok=ok)


core_server._Handler._chat_completions = _chat_completions  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> None:
    port, options = core_server._parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda signum, frame: done.set())
    try:
        with core_server.LocalServer(options, port=port) as server:
            print(server.url, flush=True)
            while not done.wait(0.5):
                pass
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
