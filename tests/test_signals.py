"""The app as a real process in a pseudo-terminal: closing the terminal (SIGHUP) or `kill` (SIGTERM) mid-reply."""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import app_in_terminal, drain, query


@pytest.mark.parametrize("signum", [signal.SIGHUP, signal.SIGTERM], ids=["SIGHUP", "SIGTERM"])
def test_a_signal_mid_reply_exits_cleanly_and_keeps_the_partial_reply(tmp_path: Path, signum: int) -> None:
    db = tmp_path / "chat.sqlite3"
    process, master, slave = app_in_terminal(tmp_path, db)
    os.set_blocking(master, True)
    os.close(slave)
    threading.Thread(target=drain, args=(master,), daemon=True).start()
    try:

        def rows(sql: str) -> list[tuple[Any, ...]]:
            try:
                return query(db, sql) if db.exists() else []
            except sqlite3.OperationalError:  # created, not migrated yet
                return []

        def reply() -> tuple[str, int] | None:
            found = rows("SELECT status, length(content) FROM messages WHERE role = 'assistant'")
            return found[0] if found else None

        deadline = time.monotonic() + 30
        sent = 0.0
        # Type the prompt once the app has opened its database (the first frame comes before that), and again
        # if a slow machine had no prompt ready to take it.
        while (row := reply()) is None or row[1] == 0:
            assert time.monotonic() < deadline, "no reply was flushed"
            ready = rows("SELECT name FROM sqlite_master WHERE name = 'messages'")
            if ready and row is None and time.monotonic() - sent > 3:
                time.sleep(0.3)
                os.write(master, b"Keep talking [[tokens=3000 tps=60]]\r")
                sent = time.monotonic()
            time.sleep(0.05)
        assert row[0] == "streaming"
        time.sleep(0.4)
        if signum == signal.SIGHUP:
            os.close(master)  # the terminal window is gone: nothing reads the app's output any more
            master = -1
        process.send_signal(signum)
        # Gone, not hanging on a dead terminal: 0 after a clean exit (SIGTERM), 129 after a hang-up.
        assert process.wait(15) == (0 if signum == signal.SIGTERM else 128 + signal.SIGHUP)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        if master >= 0:
            os.close(master)

    status, length = reply() or ("", 0)
    # Saved by the app on its way out: a killed process would leave the row 'streaming' at its last flush.
    assert status == "interrupted" and length > 0
