"""The picture of the screen the app opens on, kept when it quits, for the next start's splash (tui/splash.py).

Textual's first frame comes 0.4-0.6 s after the start, so the splash draws what it can before Textual is imported.
The header alone was all it knew; a quit at rest keeps the whole screen instead (the tabs, the chat in view at its
end, the prompt with its unsent text, the status line), which is what the next start shows unless something it
depends on changed. The picture is kept with a key of everything the screen is made from: the configuration and
terminal (`start_context`), the terminal's size, and what the database holds for it (`PROBE`: the open tabs, their
chats, any message added anywhere, drafts and other app state, a reply still streaming). The splash draws the
picture only when the key computed from the database as it is now is the same; else the header alone.

Nothing here imports Textual at import time: the splash reads pictures before Textual is imported.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import sqlite3
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from textual.strip import Strip

    from core.config import Settings

PICTURE_STATE = "first_frame_picture"
"""The app-state key holding the picture and its key."""
COLOURS_STATE = "first_frame_colours"
"""The app-state key holding the colours of the splash without a picture (tui/splash.py)."""
OPEN_TABS_STATE = "open_tabs"
FORMAT = 1
"""Bumped when what a picture holds changes: an older one is then never drawn."""

PROBE = f"""
SELECT
    (SELECT user_version FROM pragma_user_version),
    EXISTS (SELECT 1 FROM messages WHERE status = 'streaming'),
    (SELECT json_group_object(name, seq) FROM (SELECT name, seq FROM sqlite_sequence ORDER BY name)),
    (SELECT json_group_object(key, value) FROM (
        SELECT key, value FROM app_state WHERE key NOT IN ('{PICTURE_STATE}', '{COLOURS_STATE}') ORDER BY key)),
    (SELECT json_group_array(chat) FROM (
        SELECT json_array(
            s.id, s.title, s.profile, s.model, s.system_prompt, s.archived, s.updated_at,
            (SELECT count(*) FROM messages AS m WHERE m.session_id = s.id),
            (SELECT max(m.id) FROM messages AS m WHERE m.session_id = s.id)) AS chat
        FROM json_each((SELECT value FROM app_state WHERE key = '{OPEN_TABS_STATE}'), '$.sessions') AS tab
        JOIN sessions AS s ON s.id = tab.value
        ORDER BY tab.key))
"""
"""One row of what the screen at a start is made from in the database. Ids are never reused (AUTOINCREMENT), so the
sequences change with any message or chat added anywhere; a deletion changes an open chat's row or count. A reply
streaming (second column) is a state no picture is kept for: its end would change the screen."""

Row = list[tuple[str, str]]
"""A screen row: (SGR parameters, text) spans from its left edge."""
_OURS = re.compile(r"(chat_tui|textual|rich|markdown_it_py|pygments)-", re.IGNORECASE)
_SGR = re.compile(r"[0-9;]{0,64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
"""A picture is read from the user's file: only text and colours from it reach the terminal, never a sequence."""


def start_context(settings: Settings, colour_system: str) -> str:
    """What the screen is made from besides the database: the installed versions, the settings (profiles, keys,
    theme, demo), whether each profile's API key is set (a missing one shows a banner), the configuration file's
    version, the colours."""
    try:
        stat = settings.config_path.stat()
        config: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        config = None
    keys_set = sorted(
        p.name for p in settings.profiles.values() if p.api_key_env and settings.environ.get(p.api_key_env)
    )
    return repr((FORMAT, _installed(), repr(settings), keys_set, config, colour_system, "NO_COLOR" in os.environ))


def _installed() -> list[str]:
    """The versions of chat-tui and of what draws it (Textual, Rich, markdown-it, Pygments), as their dist-info
    folders are named (an upgrade may change the look): a listing of each folder on the path, no import (~1 ms).
    An editable install keeps its version through edits: a change of what a picture holds bumps FORMAT."""
    found = []
    for folder in sys.path:
        with contextlib.suppress(OSError):
            found += [name for name in os.listdir(folder or ".") if name.endswith(".dist-info") and _OURS.match(name)]
    return sorted(found)


def picture_key(context: str, width: int, height: int, probe: Iterable[Any]) -> str:
    return hashlib.sha256(repr((context, width, height, tuple(probe))).encode()).hexdigest()


def picture_value(context: str, rows: list[Row], width: int, probe: tuple[Any, ...]) -> dict[str, Any] | None:
    """What is kept for a screen of ``rows`` with the database read as ``probe``; None while a reply streams."""
    if probe[1]:
        return None
    return {"key": picture_key(context, width, len(rows), probe), "rows": rows}


def rows_of(strips: list[Strip], colour_system: str) -> list[Row]:
    """A screen as Textual's compositor renders it, as spans of SGR parameters and text (links left out)."""
    from rich.color import ColorSystem
    from rich.console import COLOR_SYSTEMS
    from textual.strip import Strip

    system = COLOR_SYSTEMS.get(colour_system, ColorSystem.TRUECOLOR)
    return [
        [
            ("" if style is None else Strip.render_ansi(style, system), text)
            for text, style, _ in strip.simplify()
            if text
        ]
        for strip in strips
    ]


@contextlib.contextmanager
def read_only(db_path: Path) -> Iterator[sqlite3.Connection]:
    """The app's database for the splash: read-only, and never waiting on a lock (the splash cannot wait)."""
    connection = sqlite3.connect(f"{db_path.resolve().as_uri()}?mode=ro", uri=True, timeout=0)
    try:
        yield connection
    finally:
        connection.close()


def stored_picture(db_path: Path, context: str, width: int, height: int) -> str | None:
    """The escape sequences drawing the picture kept for this context and size, if what it shows is still what the
    database holds; else None (none kept, out of date, unreadable, locked, not one of ours)."""
    if not db_path.is_file():
        return None
    try:
        with read_only(db_path) as connection:
            connection.execute("BEGIN")  # one snapshot of the file for both reads
            row = connection.execute("SELECT value FROM app_state WHERE key = ?", (PICTURE_STATE,)).fetchone()
            if row is None:
                return None
            probe = connection.execute(PROBE).fetchone()
        value = json.loads(row[0])
    except (sqlite3.Error, ValueError, OSError):
        return None
    if not isinstance(value, dict) or probe[1] or value.get("key") != picture_key(context, width, height, probe):
        return None
    return _draw(value.get("rows"), height)


def _draw(rows: object, height: int) -> str | None:
    if not isinstance(rows, list) or len(rows) != height:
        return None
    out = []
    for y, row in enumerate(rows, 1):
        if not isinstance(row, list):
            return None
        out.append(f"\x1b[{y};1H")
        for span in row:
            if not (isinstance(span, list) and len(span) == 2 and all(isinstance(part, str) for part in span)):
                return None
            sgr, text = span
            if not _SGR.fullmatch(sgr) or _CONTROL.search(text):
                return None
            out.append(f"\x1b[0;{sgr}m{text}" if sgr else f"\x1b[0m{text}")
    return "".join(out) + "\x1b[0m"
