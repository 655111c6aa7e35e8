"""Fixtures shared by the core and tui tests: a local OpenAI-compatible server, settings pointing at it, an engine.

Everything is real: SQLite files in ``tmp_path``, HTTP to 127.0.0.1. Every aiosqlite connection is closed in the
fixture's teardown, because an open one keeps the interpreter from exiting.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from core.config import Settings, load_settings
from core.engine import ChatEngine
from core.server import LocalServer, ServerOptions
from core.store import Store
from tests.helpers import OUR_ENV


@pytest.fixture
def server() -> Iterator[LocalServer]:
    """A local server on a free port with default options (120-token replies, full speed); fresh per test."""
    with LocalServer(ServerOptions()) as local:
        yield local
    assert local.errors == [], "the local server hit an unexpected error"


@pytest.fixture
def settings(tmp_path: Path, server: LocalServer) -> Settings:
    """Demo settings: the database in ``tmp_path``, no config file, no environment, the demo profile on ``server``."""
    loaded = load_settings(db=tmp_path / "h.db", demo=True, config=tmp_path / "none.toml", environ={})
    return loaded.with_demo_server(server.url)


@pytest.fixture
async def engine(settings: Settings) -> AsyncIterator[ChatEngine]:
    async with ChatEngine.open(settings) as chat_engine:
        yield chat_engine


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    """A store on its own file (not the engine's)."""
    opened = await Store.open(tmp_path / "store.db")
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """No CHAT_TUI_* or OPENAI_* variables from the machine running the tests."""
    for name in list(os.environ):
        if name.startswith(OUR_ENV):
            monkeypatch.delenv(name)
