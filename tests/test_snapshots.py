"""Snapshot tests: what users see, pinned. Regenerate deliberately with --snapshot-update, then look at the SVGs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from core.server import LocalServer, ServerOptions
from tests.scenes import SCENES, build


@pytest.fixture(scope="module")
def scene_server() -> Iterator[LocalServer]:
    with LocalServer(ServerOptions(tokens=120)) as server:
        yield server


@pytest.mark.parametrize("name", list(SCENES))
def test_scene(name: str, snap_compare, scene_server: LocalServer, tmp_path: Path) -> None:
    scene = SCENES[name]
    app, run_before = build(scene, tmp_path, scene_server)
    assert snap_compare(app, terminal_size=scene.size, run_before=run_before)
