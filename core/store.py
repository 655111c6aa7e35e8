"""Every read and write of the SQLite history, through aiosqlite.

Rules that keep concurrent tabs and processes from losing anything:
- every write is an insert of its own row or an update of one stream's own row, never a rewrite of a history;
- one write connection per process, each whole write transaction under one asyncio lock and ``BEGIN IMMEDIATE``,
  with no network await inside; reads go through a second connection and only ever see committed rows;
- WAL and ``busy_timeout`` so that several processes share a file without "database is locked".
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import sqlite3
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiosqlite

from core.errors import DatabaseCorrupt, DatabaseTooNew, NotFound, StoreError
from core.models import Message, Role, SearchHit, Session, Status

SCHEMA_VERSION = 2
APPLICATION_ID = 0x43485454  # "CHTT": marks a file as ours, so we never migrate somebody else's database
SQLITE_HEADER = b"SQLite format 3\x00"
BUSY_TIMEOUT_MS = 15_000
_MAX_DEPTH = 1 << 30

# Forward-only: MIGRATIONS[n] takes a database from version n-1 to n.
MIGRATIONS: dict[int, str] = {
    1: """
    CREATE TABLE sessions (
        id            INTEGER PRIMARY KEY,
        title         TEXT,
        profile       TEXT,
        model         TEXT,
        system_prompt TEXT,
        archived      INTEGER NOT NULL DEFAULT 0,
        key           TEXT UNIQUE,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    );
    CREATE INDEX sessions_recent ON sessions (archived, updated_at DESC, id DESC);
    CREATE TABLE messages (
        id                INTEGER PRIMARY KEY,
        session_id        INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        parent_id         INTEGER REFERENCES messages (id) ON DELETE CASCADE,
        role              TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content           TEXT NOT NULL DEFAULT '',
        status            TEXT NOT NULL CHECK (status IN ('complete', 'streaming', 'interrupted', 'error')),
        model             TEXT,
        prompt_tokens     INTEGER,
        completion_tokens INTEGER,
        error             TEXT,
        writer            TEXT,
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL
    );
    CREATE INDEX messages_session ON messages (session_id, id);
    CREATE INDEX messages_parent ON messages (parent_id);
    CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';
    CREATE VIRTUAL TABLE messages_fts USING fts5 (
        content, content = 'messages', content_rowid = 'id', tokenize = 'unicode61 remove_diacritics 2'
    );
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
        INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
    END;
    CREATE TABLE app_state (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    );
    """,
    # Ids are never reused (AUTOINCREMENT). Without it, deleting the newest chat gave its ids to the next one, and a
    # reply still streaming into the deleted chat (another process's, or a LangChain history cleared meanwhile)
    # saved its text into the new chat's row of the same id. SQLite cannot add AUTOINCREMENT to a table: the two
    # tables are rebuilt with the same rows and ids (foreign keys are off meanwhile, see `_check_and_migrate`).
    2: """
    CREATE TABLE sessions_v2 (
        id            INTEGER PRIMARY KEY AUTOINCREMENT,
        title         TEXT,
        profile       TEXT,
        model         TEXT,
        system_prompt TEXT,
        archived      INTEGER NOT NULL DEFAULT 0,
        key           TEXT UNIQUE,
        created_at    TEXT NOT NULL,
        updated_at    TEXT NOT NULL
    );
    INSERT INTO sessions_v2 (id, title, profile, model, system_prompt, archived, key, created_at, updated_at)
        SELECT id, title, profile, model, system_prompt, archived, key, created_at, updated_at FROM sessions;
    CREATE TABLE messages_v2 (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        session_id        INTEGER NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        parent_id         INTEGER REFERENCES messages (id) ON DELETE CASCADE,
        role              TEXT NOT NULL CHECK (role IN ('user', 'assistant')),
        content           TEXT NOT NULL DEFAULT '',
        status            TEXT NOT NULL CHECK (status IN ('complete', 'streaming', 'interrupted', 'error')),
        model             TEXT,
        prompt_tokens     INTEGER,
        completion_tokens INTEGER,
        error             TEXT,
        writer            TEXT,
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL
    );
    INSERT INTO messages_v2 (
        id, session_id, parent_id, role, content, status, model, prompt_tokens, completion_tokens, error, writer,
        created_at, updated_at
    ) SELECT
        id, session_id, parent_id, role, content, status, model, prompt_tokens, completion_tokens, error, writer,
        created_at, updated_at
    FROM messages;
    DROP TABLE messages;
    DROP TABLE sessions;
    ALTER TABLE sessions_v2 RENAME TO sessions;
    ALTER TABLE messages_v2 RENAME TO messages;
    CREATE INDEX sessions_recent ON sessions (archived, updated_at DESC, id DESC);
    CREATE INDEX messages_session ON messages (session_id, id);
    CREATE INDEX messages_parent ON messages (parent_id);
    CREATE INDEX messages_streaming ON messages (status) WHERE status = 'streaming';
    CREATE TRIGGER messages_fts_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
    END;
    CREATE TRIGGER messages_fts_delete AFTER DELETE ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
    END;
    CREATE TRIGGER messages_fts_update AFTER UPDATE OF content ON messages BEGIN
        INSERT INTO messages_fts (messages_fts, rowid, content) VALUES ('delete', old.id, old.content);
        INSERT INTO messages_fts (rowid, content) VALUES (new.id, new.content);
    END;
    """,
}

_MESSAGE_COLUMNS = (
    "m.id, m.session_id, m.parent_id, m.role, m.content, m.status, m.model, "
    "m.prompt_tokens, m.completion_tokens, m.error, m.created_at, m.updated_at"
)
_SESSION_COLUMNS = (
    "s.id, s.title, s.profile, s.model, s.system_prompt, s.archived, s.created_at, s.updated_at, "
    "(SELECT count(*) FROM messages WHERE session_id = s.id)"
)
_UNSET: Any = object()


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _process_stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (state first, start time at 19); None without /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def _process_start_ticks(pid: int) -> str:
    """The kernel's start time of a process, so a reused pid is not mistaken for the original writer."""
    fields = _process_stat(pid)
    return fields[19] if fields else ""


def writer_token() -> str:
    """Identifies this process in the ``writer`` column of the rows it streams."""
    pid = os.getpid()
    return f"{socket.gethostname()}:{pid}:{_process_start_ticks(pid)}"


def writer_alive(token: str | None) -> bool:
    """Whether the process that wrote ``token`` may still be streaming. Another host's writer counts as alive."""
    if not token:
        return False
    host, _, rest = token.partition(":")
    pid_text, _, ticks = rest.partition(":")
    if host != socket.gethostname():
        return True
    try:
        pid = int(pid_text)
        os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    fields = _process_stat(pid)
    if fields is None:
        return True  # no /proc to ask: the pid exists, so assume it is the writer
    if fields[0] in ("Z", "X"):
        return False  # killed but not yet reaped by its parent: it will never write again
    return not ticks or fields[19] == ticks


def _message(row: Iterable[Any]) -> Message:
    (id_, session_id, parent_id, role, content, status, model, ptok, ctok, error, created, updated) = row
    return Message(
        id=id_,
        session_id=session_id,
        parent_id=parent_id,
        role=Role(role),
        content=content,
        status=Status(status),
        model=model,
        prompt_tokens=ptok,
        completion_tokens=ctok,
        error=error,
        created_at=created,
        updated_at=updated,
    )


def _session(row: Iterable[Any]) -> Session:
    id_, title, profile, model, system_prompt, archived, created, updated, count = row
    return Session(
        id=id_,
        title=title,
        profile=profile,
        model=model,
        system_prompt=system_prompt,
        archived=bool(archived),
        created_at=created,
        updated_at=updated,
        message_count=count,
    )


def fts_query(text: str) -> str:
    """Turn what a person types into a safe FTS5 query: every word must match, the last one as a prefix."""
    words = [w.replace('"', '""') for w in text.split()]
    if not words:
        return ""
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def title_from_prompt(text: str, width: int = 48) -> str:
    line = " ".join(text.split())
    return line if len(line) <= width else line[: width - 1].rstrip() + "…"


def _translate(exc: sqlite3.Error, path: Path) -> StoreError:
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text):
        return DatabaseCorrupt(f"The database {path} is damaged or is not a chat-tui database ({text}).")
    return StoreError(f"Database error in {path}: {text}")


class Store:
    """The history database. Open with ``await Store.open(path)`` (or ``async with``) and close it."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        *,
        clock: Callable[[], str],
    ) -> None:
        self.file = path
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        self._clock = clock
        self.writer_token = writer_token()
        self.write_transactions = 0
        """How many write transactions this process committed: the benchmark counts them per reply."""
        self._data_version: int | None = None

    # -- lifecycle ---------------------------------------------------------------------------------------

    @classmethod
    async def open(cls, path: str | os.PathLike[str], *, clock: Callable[[], str] = utc_now) -> Store:
        path = Path(path).expanduser()
        try:
            _create_private_file(path)
        except OSError as exc:  # a parent that is a file, a directory we may not write, /proc
            raise StoreError(f"Cannot create the database {path}: {exc.strerror} ({exc.filename}).") from exc
        writer = await _connect(path)
        reader: aiosqlite.Connection | None = None
        try:
            await _check_and_migrate(writer, path)
            reader = await _connect(path)
            store = cls(path, writer, reader, clock=clock)
            await store.recover_interrupted()
            return store
        except BaseException:
            await writer.close()
            if reader is not None:
                await reader.close()
            raise

    async def close(self) -> None:
        async with self._write_lock:
            try:
                await self._reader.close()
            finally:
                await self._writer.close()

    async def __aenter__(self) -> Store:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- plumbing ----------------------------------------------------------------------------------------

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One whole write transaction; tasks queue on the lock instead of interleaving BEGIN/COMMIT."""
        async with self._write_lock:
            db = self._writer
            try:
                await db.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as exc:
                raise _translate(exc, self.file) from exc
            except asyncio.CancelledError:
                # The BEGIN still runs on the connection's thread: end that transaction before the next writer.
                await _rollback(db)
                raise
            try:
                yield db
            except sqlite3.Error as exc:  # a statement failed (disk full, I/O error): in words, like the rest
                await _rollback(db)
                raise _translate(exc, self.file) from exc
            except BaseException:
                await _rollback(db)
                raise
            try:
                await db.execute("COMMIT")
            except sqlite3.Error as exc:
                raise _translate(exc, self.file) from exc
            self.write_transactions += 1

    async def _fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        try:
            # Execute and fetch in one call on the connection's thread: a query left half-read while another task
            # starts one would keep the read transaction open, and later reads would see an old snapshot.
            return list(await self._reader.execute_fetchall(sql, tuple(params)))
        except sqlite3.Error as exc:
            raise _translate(exc, self.file) from exc

    async def _fetchone(self, sql: str, params: Iterable[Any] = ()) -> tuple[Any, ...] | None:
        rows = await self._fetchall(sql, params)
        return rows[0] if rows else None

    async def data_version(self) -> int:
        """A number that differs from an earlier one once another process (the CLI, a second window, a LangChain
        app) committed to the database. Reads no table: SQLite counts the commits other connections make, and this
        store's writer connection is asked, so that its own commits do not count (the reader makes none)."""
        try:
            rows = await self._writer.execute_fetchall("PRAGMA data_version")
        except sqlite3.Error as exc:
            raise _translate(exc, self.file) from exc
        return int(next(iter(rows))[0])

    async def changed_elsewhere(self) -> bool:
        """Whether another process committed to the database since the last call; the first call says True."""
        version = await self.data_version()
        changed, self._data_version = version != self._data_version, version
        return changed

    # -- sessions ----------------------------------------------------------------------------------------

    async def create_session(
        self, title: str | None = None, *, profile: str | None = None, system_prompt: str | None = None
    ) -> Session:
        now = self._clock()
        async with self._transaction() as db:
            cursor = await db.execute(
                "INSERT INTO sessions (title, profile, system_prompt, created_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                (title, profile, system_prompt, now, now),
            )
            session_id = cursor.lastrowid
        assert session_id is not None
        return Session(session_id, title, profile, None, system_prompt, False, now, now, 0)

    async def session_for_key(self, key: str) -> Session:
        """The session an outside caller (a LangChain app) names with its own string id, made on first use."""
        now = self._clock()
        async with self._transaction() as db:
            await db.execute(
                "INSERT OR IGNORE INTO sessions (title, key, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (key, key, now, now),
            )
        row = await self._fetchone(f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE s.key = ?", (key,))
        assert row is not None
        return _session(row)

    async def get_session(self, session_id: int) -> Session:
        row = await self._fetchone(f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE s.id = ?", (session_id,))
        if row is None:
            raise NotFound(f"There is no session {session_id}.")
        return _session(row)

    async def list_sessions(self, *, limit: int = 50, offset: int = 0, archived: bool = False) -> list[Session]:
        """A page of sessions, most recently used first, without loading their messages."""
        rows = await self._fetchall(
            f"SELECT {_SESSION_COLUMNS} FROM sessions s WHERE s.archived = ? "
            "ORDER BY s.updated_at DESC, s.id DESC LIMIT ? OFFSET ?",
            (int(archived), limit, offset),
        )
        return [_session(r) for r in rows]

    async def latest_session(self) -> Session | None:
        sessions = await self.list_sessions(limit=1)
        return sessions[0] if sessions else None

    async def update_session(
        self,
        session_id: int,
        *,
        title: str | None = _UNSET,
        profile: str | None = _UNSET,
        model: str | None = _UNSET,
        system_prompt: str | None = _UNSET,
        archived: bool = _UNSET,
    ) -> Session:
        fields = (("title", title), ("profile", profile), ("model", model), ("system_prompt", system_prompt))
        changes = {k: v for k, v in fields if v is not _UNSET}
        if archived is not _UNSET:
            changes["archived"] = int(archived)
        if changes:
            assignments = ", ".join(f"{k} = ?" for k in changes)
            async with self._transaction() as db:
                cursor = await db.execute(
                    f"UPDATE sessions SET {assignments} WHERE id = ?", (*changes.values(), session_id)
                )
                if cursor.rowcount == 0:
                    raise NotFound(f"There is no session {session_id}.")
        return await self.get_session(session_id)

    async def delete_session(self, session_id: int) -> None:
        """Delete a session, (by cascade) all its messages, its unsent text and its saved branch."""
        async with self._transaction() as db:
            cursor = await db.execute("DELETE FROM sessions WHERE id = ?", (session_id,))
            if cursor.rowcount == 0:
                raise NotFound(f"There is no session {session_id}.")
            await db.execute(
                "DELETE FROM app_state WHERE key IN (?, ?)", (_draft_key(session_id), _branch_key(session_id))
            )

    async def delete_session_if_unused(self, session_id: int) -> bool:
        """Delete a session made for a setting and then left: no message, no unsent text, no title, no LangChain
        key. True if deleted. One statement, so a message committed by then keeps it; callers make sure no other
        writer holds the session (the app: only a session its own tab made)."""
        async with self._transaction() as db:
            cursor = await db.execute(
                "DELETE FROM sessions WHERE id = ? AND title IS NULL AND key IS NULL "
                "AND NOT EXISTS (SELECT 1 FROM messages WHERE session_id = ?) "
                "AND NOT EXISTS (SELECT 1 FROM app_state WHERE key = ?)",
                (session_id, session_id, _draft_key(session_id)),
            )
            return cursor.rowcount > 0

    async def clear_session(self, session_id: int) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))

    # -- messages: writes --------------------------------------------------------------------------------

    async def _check_parent(self, db: aiosqlite.Connection, session_id: int, parent_id: int | None) -> None:
        if parent_id is None:
            async with db.execute("SELECT 1 FROM sessions WHERE id = ?", (session_id,)) as cursor:
                found = await cursor.fetchone()
            if found is None:
                raise NotFound(f"There is no session {session_id}.")
            return
        async with db.execute("SELECT session_id FROM messages WHERE id = ?", (parent_id,)) as cursor:
            row = await cursor.fetchone()
        if row is None or row[0] != session_id:
            raise NotFound(f"Message {parent_id} is not in session {session_id}.")

    async def _insert(
        self,
        db: aiosqlite.Connection,
        session_id: int,
        parent_id: int | None,
        role: Role,
        content: str,
        status: Status,
        model: str | None,
        now: str,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
    ) -> Message:
        writer = self.writer_token if status is Status.STREAMING else None
        cursor = await db.execute(
            "INSERT INTO messages (session_id, parent_id, role, content, status, model, prompt_tokens, "
            "completion_tokens, writer, created_at, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (session_id, parent_id, role, content, status, model, prompt_tokens, completion_tokens, writer, now, now),
        )
        assert cursor.lastrowid is not None
        return Message(
            cursor.lastrowid, session_id, parent_id, role, content, status, model,
            prompt_tokens, completion_tokens, None, now, now,
        )  # fmt: skip

    async def _touch_session(self, db: aiosqlite.Connection, session_id: int, now: str, title_hint: str) -> None:
        await db.execute(
            "UPDATE sessions SET updated_at = ?, title = coalesce(title, ?) WHERE id = ?",
            (now, title_from_prompt(title_hint) if title_hint else None, session_id),
        )

    async def start_turn(
        self, session_id: int, parent_id: int | None, text: str, model: str | None
    ) -> tuple[Message, Message]:
        """Commit the user's message and an empty streaming reply under it, in one transaction."""
        now = self._clock()
        async with self._transaction() as db:
            await self._check_parent(db, session_id, parent_id)
            user = await self._insert(db, session_id, parent_id, Role.USER, text, Status.COMPLETE, None, now)
            reply = await self._insert(db, session_id, user.id, Role.ASSISTANT, "", Status.STREAMING, model, now)
            await self._touch_session(db, session_id, now, text)
        return user, reply

    async def start_reply(self, session_id: int, parent_id: int, model: str | None) -> Message:
        """Commit an empty streaming reply under an existing user message (regenerate, retry)."""
        now = self._clock()
        async with self._transaction() as db:
            await self._check_parent(db, session_id, parent_id)
            reply = await self._insert(db, session_id, parent_id, Role.ASSISTANT, "", Status.STREAMING, model, now)
            await self._touch_session(db, session_id, now, "")
        return reply

    async def add_messages(
        self, session_id: int, parent_id: int | None, messages: Iterable[tuple[Role, str]]
    ) -> list[Message]:
        """Append finished messages as a chain under ``parent_id`` (LangChain histories, imports)."""
        now = self._clock()
        added: list[Message] = []
        async with self._transaction() as db:
            await self._check_parent(db, session_id, parent_id)
            for role, content in messages:
                message = await self._insert(db, session_id, parent_id, role, content, Status.COMPLETE, None, now)
                added.append(message)
                parent_id = message.id
            first_user = next((m.content for m in added if m.role is Role.USER), "")
            await self._touch_session(db, session_id, now, first_user)
        return added

    async def flush_reply(self, message_id: int, content: str) -> None:
        """Save the text streamed so far; a no-op once the reply is finished."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE messages SET content = ?, updated_at = ? WHERE id = ? AND status = 'streaming'",
                (content, self._clock(), message_id),
            )

    async def finish_reply(
        self,
        message_id: int,
        content: str,
        status: Status,
        *,
        prompt_tokens: int | None = None,
        completion_tokens: int | None = None,
        error: str | None = None,
    ) -> Message:
        async with self._transaction() as db:
            await db.execute(
                "UPDATE messages SET content = ?, status = ?, prompt_tokens = ?, completion_tokens = ?, "
                "error = ?, writer = NULL, updated_at = ? WHERE id = ?",
                (content, status, prompt_tokens, completion_tokens, error, self._clock(), message_id),
            )
        return await self.get_message(message_id)

    async def recover_interrupted(self) -> int:
        """Mark streaming rows whose writer process is gone as interrupted; leave live writers alone."""
        rows = await self._fetchall("SELECT id, writer FROM messages WHERE status = 'streaming'")
        orphans = [(row[0],) for row in rows if not writer_alive(row[1])]
        if orphans:
            now = self._clock()
            async with self._transaction() as db:
                await db.executemany(
                    "UPDATE messages SET status = 'interrupted', writer = NULL, updated_at = ? "
                    "WHERE id = ? AND status = 'streaming'",
                    [(now, message_id) for (message_id,) in orphans],
                )
        return len(orphans)

    # -- messages: reads ---------------------------------------------------------------------------------

    async def get_message(self, message_id: int) -> Message:
        row = await self._fetchone(f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.id = ?", (message_id,))
        if row is None:
            raise NotFound(f"There is no message {message_id}.")
        return _message(row)

    async def path(self, leaf_id: int, *, limit: int | None = None) -> list[Message]:
        """The messages from the root to ``leaf_id``, oldest first; only the last ``limit`` when given.

        For earlier ones, call again with the first returned message's ``parent_id`` as the leaf.
        """
        rows = await self._fetchall(
            "WITH RECURSIVE up (id, parent_id, depth) AS ("
            "  SELECT id, parent_id, 0 FROM messages WHERE id = ?"
            "  UNION ALL"
            "  SELECT m.id, m.parent_id, up.depth + 1 FROM messages m JOIN up ON m.id = up.parent_id"
            "  WHERE up.depth + 1 < ?"
            f") SELECT {_MESSAGE_COLUMNS} FROM up JOIN messages m ON m.id = up.id ORDER BY up.depth DESC",
            (leaf_id, limit if limit is not None else _MAX_DEPTH),
        )
        return [_message(r) for r in rows]

    async def latest_leaf(self, session_id: int) -> int | None:
        """The newest message of a session; it is always a leaf, since children are inserted after parents."""
        row = await self._fetchone("SELECT max(id) FROM messages WHERE session_id = ?", (session_id,))
        return row[0] if row else None

    async def newest_leaf_under(self, message_id: int) -> int | None:
        """The newest message of the branches through ``message_id`` (itself if it has no children); None if it
        is gone (deleted, its session cleared)."""
        row = await self._fetchone(
            "WITH RECURSIVE down (id) AS ("
            "  SELECT id FROM messages WHERE id = ?"
            "  UNION ALL SELECT m.id FROM messages m JOIN down ON m.parent_id = down.id"
            ") SELECT max(id) FROM down",
            (message_id,),
        )
        return row[0] if row else None

    async def session_marks(self, session_ids: Iterable[int]) -> dict[int, tuple[str | None, int | None]]:
        """Each session's title and newest message id (None: none yet), in one query: what tells that a chat
        changed. Sessions that do not exist (deleted) are left out."""
        ids = list(session_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self._fetchall(
            "SELECT s.id, s.title, (SELECT max(m.id) FROM messages m WHERE m.session_id = s.id) "
            f"FROM sessions s WHERE s.id IN ({marks})",
            ids,
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def siblings(self, message_id: int) -> list[int]:
        """Ids of the messages sharing this one's parent and role (itself included), oldest first."""
        rows = await self._fetchall(
            "SELECT s.id FROM messages m JOIN messages s ON s.session_id = m.session_id AND s.role = m.role "
            "AND s.parent_id IS m.parent_id WHERE m.id = ? ORDER BY s.id",
            (message_id,),
        )
        return [r[0] for r in rows]

    async def sibling_counts(self, message_ids: Iterable[int]) -> dict[int, tuple[int, int]]:
        """For each message, (1-based position, count) among its siblings, in one query."""
        ids = list(message_ids)
        if not ids:
            return {}
        marks = ",".join("?" * len(ids))
        rows = await self._fetchall(
            "SELECT m.id, "
            "  (SELECT count(*) FROM messages s WHERE s.session_id = m.session_id AND s.role = m.role "
            "     AND s.parent_id IS m.parent_id AND s.id <= m.id), "
            "  (SELECT count(*) FROM messages s WHERE s.session_id = m.session_id AND s.role = m.role "
            "     AND s.parent_id IS m.parent_id) "
            f"FROM messages m WHERE m.id IN ({marks})",
            ids,
        )
        return {r[0]: (r[1], r[2]) for r in rows}

    async def search(self, text: str, *, limit: int = 20, offset: int = 0) -> list[SearchHit]:
        """Full-text search over message content, best match first, with a snippet around the match."""
        query = fts_query(text)
        if not query:
            return []
        rows = await self._fetchall(
            "SELECT m.session_id, m.id, s.title, m.role, "
            "  snippet(messages_fts, 0, '[', ']', '…', 12), m.created_at "
            "FROM messages_fts JOIN messages m ON m.id = messages_fts.rowid "
            "JOIN sessions s ON s.id = m.session_id "
            "WHERE messages_fts MATCH ? ORDER BY rank LIMIT ? OFFSET ?",
            (query, limit, offset),
        )
        return [SearchHit(r[0], r[1], r[2], Role(r[3]), r[4], r[5]) for r in rows]

    # -- small app state (open tabs, theme) ---------------------------------------------------------------

    async def get_state(self, key: str, default: Any = None) -> Any:
        row = await self._fetchone("SELECT value FROM app_state WHERE key = ?", (key,))
        return json.loads(row[0]) if row else default

    async def set_state(self, key: str, value: Any) -> None:
        async with self._transaction() as db:
            await db.execute(_SET_STATE, (key, json.dumps(value)))

    async def set_state_unless_changed_since(
        self, key: str, make: Callable[[tuple[Any, ...]], Any], probe: str, *, since: int
    ) -> bool:
        """Set ``key`` to ``make(row)``, ``row`` being the first row the query ``probe`` reads, all in one write
        transaction; unless another process committed since `data_version` said ``since``, or ``make`` gives
        None. For a state derived from what this process read meanwhile (the app's picture of its screen): another
        process's commit may have changed what that shows. Says whether it was set."""
        async with self._transaction() as db:
            if await self.data_version() != since:
                return False
            rows = list(await db.execute_fetchall(probe))
            value = make(tuple(rows[0])) if rows else None
            if value is None:
                return False
            await db.execute(_SET_STATE, (key, json.dumps(value)))
        return True

    async def delete_state(self, key: str) -> None:
        async with self._transaction() as db:
            await db.execute("DELETE FROM app_state WHERE key = ?", (key,))

    async def get_draft(self, session_id: int | None) -> str:
        """The unsent text kept for a session ('' if none); None stands for a chat not saved yet (one slot)."""
        draft = await self.get_state(_draft_key(session_id))
        return draft if isinstance(draft, str) else ""

    async def set_draft(self, session_id: int | None, text: str) -> None:
        """Keep ``text`` as the session's unsent text; blank text removes it."""
        if text.strip():
            await self.set_state(_draft_key(session_id), text)
        else:
            await self.delete_state(_draft_key(session_id))

    async def get_branch(self, session_id: int) -> int | None:
        """The last message of the branch a session was shown on last (an app's choice), if one was saved."""
        leaf = await self.get_state(_branch_key(session_id))
        return leaf if isinstance(leaf, int) else None

    async def set_branch(self, session_id: int, leaf_id: int) -> None:
        await self.set_state(_branch_key(session_id), leaf_id)


def _branch_key(session_id: int) -> str:
    return f"branch:{session_id}"


_SET_STATE = "INSERT INTO app_state (key, value) VALUES (?, ?) ON CONFLICT (key) DO UPDATE SET value = excluded.value"


def _draft_key(session_id: int | None) -> str:
    return f"draft:{session_id if session_id is not None else 'new'}"


async def _rollback(db: aiosqlite.Connection) -> None:
    """Undo the open transaction, even if cancelled meanwhile (a tab closed mid-save): the connection's thread runs
    statements in the order they were sent, so this lands after whatever the cancelled writer had sent."""
    with contextlib.suppress(sqlite3.Error):  # no transaction open: nothing to undo
        await asyncio.shield(db.execute("ROLLBACK"))


def _create_private_file(path: Path) -> None:
    """Create the database file readable by its owner only, before SQLite creates it world-readable."""
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass  # another process made it a moment ago


async def _connect(path: Path) -> aiosqlite.Connection:
    db = aiosqlite.connect(path, isolation_level=None)
    try:
        await db
    except sqlite3.Error as exc:
        # The failed connection's thread still has to report its stop to this event loop: wait for it, or it
        # finds the loop closed and dumps "Event loop is closed" after our one-line message.
        await asyncio.to_thread(db._thread.join)
        raise StoreError(f"Cannot open the database {path}: {exc}") from exc
    try:
        await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    except BaseException:
        await db.close()
        raise
    return db


async def _check_and_migrate(db: aiosqlite.Connection, path: Path) -> None:
    """Refuse foreign, damaged or newer files before anything writes to them; then migrate forward."""
    try:
        with path.open("rb") as fh:
            header = fh.read(len(SQLITE_HEADER))
    except OSError as exc:
        raise StoreError(f"Cannot read the database {path}: {exc.strerror}.") from exc
    if header and header != SQLITE_HEADER:
        raise DatabaseCorrupt(f"{path} is not a SQLite database; chat-tui left it untouched.")
    try:
        # One read transaction, so a file another process is migrating right now is seen before or after.
        await db.execute("BEGIN")
        try:
            version = await _pragma(db, "user_version")
            app_id = await _pragma(db, "application_id")
            async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cursor:
                tables = {r[0] for r in await cursor.fetchall()}
        finally:
            await db.execute("COMMIT")
        # Whose file it is comes first: many programs number their schema in user_version too. Ours sets the
        # application id in the same transaction as the version, so a versioned file without it is not ours.
        if app_id not in (0, APPLICATION_ID) or (app_id == 0 and (tables or version)):
            raise DatabaseCorrupt(f"{path} is a SQLite database of another program; chat-tui left it untouched.")
        if version > SCHEMA_VERSION:
            raise DatabaseTooNew(
                f"{path} was written by a newer chat-tui (schema {version}; this one knows {SCHEMA_VERSION}). "
                "Upgrade chat-tui to open it; the file was left untouched."
            )
        await _enable_wal(db)
        await db.execute("PRAGMA synchronous = NORMAL")
        if version < SCHEMA_VERSION:
            # Off while tables are rebuilt: dropping the old sessions table would otherwise cascade into the new
            # messages table (SQLite ignores the pragma inside a transaction, so it is set here).
            await db.execute("PRAGMA foreign_keys = OFF")
            await _migrate(db)
        await db.execute("PRAGMA foreign_keys = ON")
    except sqlite3.Error as exc:
        raise _translate(exc, path) from exc


async def _enable_wal(db: aiosqlite.Connection) -> None:
    """Switch a new file to WAL. Openers racing for that switch get "database is locked" at once, without
    busy_timeout (SQLite refuses to wait where waiting could deadlock): retry them for as long as it would wait."""
    for _ in range(BUSY_TIMEOUT_MS // 10):
        try:
            await db.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
        await asyncio.sleep(0.01)
    await db.execute("PRAGMA journal_mode = WAL")


async def _migrate(db: aiosqlite.Connection) -> None:
    # BEGIN IMMEDIATE, then re-read the version: two processes opening a new file at once migrate it once.
    await db.execute("BEGIN IMMEDIATE")
    try:
        version = await _pragma(db, "user_version")
        for target in range(version + 1, SCHEMA_VERSION + 1):
            for statement in _split_sql(MIGRATIONS[target]):
                await db.execute(statement)
            await db.execute(f"PRAGMA user_version = {target}")
        await db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        await db.execute("COMMIT")
    except BaseException:
        await db.execute("ROLLBACK")
        raise


def _split_sql(script: str) -> list[str]:
    """Split a migration script into statements (triggers contain semicolons, so use SQLite's own test)."""
    statements, current = [], ""
    for line in script.strip().splitlines(keepends=True):
        current += line
        if sqlite3.complete_statement(current):
            statements.append(current.strip())
            current = ""
    return statements


async def _pragma(db: aiosqlite.Connection, name: str) -> int:
    async with db.execute(f"PRAGMA {name}") as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])
