"""Helpers shared by the tests; ``child.py`` beside this file is the script the multi-process tests run."""

from __future__ import annotations

import fcntl
import hashlib
import io
import os
import pty
import socket
import sqlite3
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from rich.console import Console
from textual.app import App

from core.config import DEMO_PROFILE, Profile, Settings
from core.server import reply_text, reply_tokens, strip_directives

ROOT = Path(__file__).resolve().parents[2]
CHILD = Path(__file__).with_name("child.py")


OUR_ENV = ("CHAT_TUI_", "OPENAI_")
"""Prefixes of the environment variables chat-tui reads: tests never take them from the machine."""


def child_env() -> dict[str, str]:
    """The environment for a child process: this one's, without chat-tui's own variables."""
    return {k: v for k, v in os.environ.items() if not k.startswith(OUR_ENV)}


def reply_for(prompt: str, tokens: int = 120) -> str:
    """What the local server streams for a user message (directives and all) and a token count."""
    return reply_text(strip_directives(prompt), tokens)


def pieces_for(prompt: str, tokens: int = 120) -> list[str]:
    return reply_tokens(strip_directives(prompt), tokens)


def demo_variant(settings: Settings, name: str, **changes: Any) -> Settings:
    """``settings`` plus a profile ``name``: the demo profile (same server) with ``changes``."""
    profile = replace(settings.profiles[DEMO_PROFILE], name=name, **changes)
    return with_profiles(settings, profile)


def with_profiles(settings: Settings, *profiles: Profile) -> Settings:
    return replace(settings, profiles={**settings.profiles, **{p.name: p for p in profiles}})


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def query(path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read a database file with the plain sqlite3 module, read-only, as another program would."""
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=15)) as db:
        return db.execute(sql, params).fetchall()


def integrity(path: Path) -> str:
    return query(path, "PRAGMA integrity_check")[0][0]


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def app_in_terminal(
    tmp_path: Path, db: Path, size: tuple[int, int] = (80, 24)
) -> tuple[subprocess.Popen[bytes], int, int]:
    """`chat-tui --demo --db DB` as a real process in a new pseudo-terminal of ``size`` (columns, rows), its own
    session leader; returns the process, the terminal's controlling side and the terminal (both to close)."""
    env = child_env()
    env.update(TERM="xterm-256color", XDG_CONFIG_HOME=str(tmp_path), XDG_DATA_HOME=str(tmp_path))
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", size[1], size[0], 0, 0))
    process = subprocess.Popen(
        [sys.executable, "-m", "tui", "--demo", "--db", str(db)],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        cwd=ROOT,
        env=env,
        start_new_session=True,
    )
    return process, controller, terminal


@dataclass
class TerminalApp:
    """`app_in_terminal` running, its output read into ``seen`` by a thread."""

    process: subprocess.Popen[bytes]
    controller: int
    terminal: int
    seen: bytearray

    @property
    def output(self) -> str:
        return self.seen.decode(errors="replace")

    def wait_until(self, condition: Callable[[], object], timeout: float = 30) -> None:
        """Until ``condition()`` holds; fails if the app exits first or it takes over ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None and time.monotonic() < deadline, bytes(self.seen)
            time.sleep(0.01)


@contextmanager
def app_running_in_terminal(tmp_path: Path, db: Path, size: tuple[int, int] = (80, 24)) -> Iterator[TerminalApp]:
    """`app_in_terminal` with its output read meanwhile; at the end, killed if still running, the terminal closed."""
    process, controller, terminal = app_in_terminal(tmp_path, db, size)
    app = TerminalApp(process, controller, terminal, bytearray())
    reader = threading.Thread(target=drain, args=(controller, app.seen), daemon=True)
    reader.start()
    try:
        yield app
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(terminal)
        reader.join(5)
        os.close(controller)


def drain(fd: int, into: bytearray | None = None) -> None:
    """Read a terminal's output until it closes (so that the app's writes never block), keeping it ``into``."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except OSError:
            return
        if not chunk:
            return
        if into is not None:
            into.extend(chunk)


def screen_text(app: App[Any]) -> str:
    """What the terminal shows, as plain text (rows no repaint has touched since included)."""
    console = Console(width=app.size.width, height=app.size.height, file=io.StringIO(), record=True)
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text()
