"""The SQLite store on real files: schema and refusals, sessions, the message tree, search, export, recovery."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from core.errors import DatabaseCorrupt, DatabaseTooNew, NotFound, StoreError
from core.export import to_json, to_markdown
from core.models import Message, Role, Status
from core.store import APPLICATION_ID, MIGRATIONS, SCHEMA_VERSION, Store, _split_sql
from tests.helpers import integrity, query, sha256


def ticking_clock() -> Callable[[], str]:
    """Timestamps one second apart, so "newest first" does not depend on how fast the test runs."""
    start = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    ticks = itertools.count()
    return lambda: (start + timedelta(seconds=next(ticks))).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


async def chat(store: Store, session_id: int, *texts: str, parent_id: int | None = None) -> list[Message]:
    """Alternating user/assistant messages as one chain under ``parent_id``."""
    roles = itertools.cycle([Role.USER, Role.ASSISTANT])
    return await store.add_messages(session_id, parent_id, [(next(roles), text) for text in texts])


# -- the file ----------------------------------------------------------------------------------------------------


async def test_a_new_file_is_created_private_migrated_and_marked(tmp_path: Path) -> None:
    path = tmp_path / "not" / "yet" / "there.db"
    async with await Store.open(path) as store:
        await store.create_session("first")
        assert oct(path.stat().st_mode & 0o777) == oct(0o600)
        assert oct(Path(f"{path}-wal").stat().st_mode & 0o777) == oct(0o600)
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(path, "PRAGMA application_id") == [(APPLICATION_ID,)]
    assert query(path, "PRAGMA journal_mode") == [("wal",)]
    assert integrity(path) == "ok"


async def test_an_empty_file_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    async with await Store.open(path) as store:
        session = await store.create_session("in an empty file")
        assert (await store.get_session(session.id)).title == "in an empty file"
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(path, "PRAGMA application_id") == [(APPLICATION_ID,)]


async def test_reopening_keeps_everything_and_migrates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "again.db"
    async with await Store.open(path) as store:
        session = await store.create_session("kept")
        await chat(store, session.id, "question", "answer")
    async with await Store.open(path) as store:
        assert [s.title for s in await store.list_sessions()] == ["kept"]
        assert [m.content for m in await store.path(await store.latest_leaf(session.id))] == ["question", "answer"]
        assert store.write_transactions == 0


def a_version_1_file(path: Path) -> None:
    """A database as chat-tui's first schema made it: two chats, the newest one's ids the highest."""
    with closing(sqlite3.connect(path, isolation_level=None)) as db:
        for statement in _split_sql(MIGRATIONS[1]):
            db.execute(statement)
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute("PRAGMA user_version = 1")
        now = "2026-11-01T10:00:00.000000Z"
        for session_id, title in ((1, "older"), (2, "newest")):
            db.execute(
                "INSERT INTO sessions (id, title, created_at, updated_at) VALUES (?, ?, ?, ?)",
                (session_id, title, now, now),
            )
        rows = [(1, 1, None, "user", "how do lighthouses work"), (2, 1, 1, "assistant", "a lamp and a lens")]
        rows += [(3, 2, None, "user", "and foghorns"), (4, 2, 3, "assistant", "compressed air")]
        for message_id, session_id, parent_id, role, content in rows:
            db.execute(
                "INSERT INTO messages (id, session_id, parent_id, role, content, status, created_at, updated_at) "
                "VALUES (?, ?, ?, ?, ?, 'complete', ?, ?)",
                (message_id, session_id, parent_id, role, content, now, now),
            )


async def test_a_version_1_file_keeps_every_row_and_id_and_never_reuses_an_id_again(tmp_path: Path) -> None:
    path = tmp_path / "v1.db"
    a_version_1_file(path)
    async with await Store.open(path) as store:
        assert [(m.id, m.content) for m in await store.path(4)] == [(3, "and foghorns"), (4, "compressed air")]
        assert [hit.message_id for hit in await store.search("lighthouses")] == [1]
        await store.delete_session(2)  # the newest chat: before, its ids went to the next chat
        session = await store.create_session("next")
        added = await chat(store, session.id, "a new question", "a new answer")
        assert session.id == 3 and [m.id for m in added] == [5, 6]
        await store.delete_session(1)  # the cascade still works
        assert await store.search("lighthouses") == []
    assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]
    assert query(path, "PRAGMA foreign_key_check") == []
    assert integrity(path) == "ok"
    with closing(sqlite3.connect(path)) as db:  # raises if the full-text index and the messages disagree
        db.execute("INSERT INTO messages_fts (messages_fts) VALUES ('integrity-check')")


async def test_many_opens_of_one_new_file_at_the_same_moment_all_succeed(tmp_path: Path) -> None:
    for attempt in range(10):  # a race: several rounds, so that a lost one shows up
        path = tmp_path / f"race-{attempt}.db"
        results = await asyncio.gather(*(Store.open(path) for _ in range(6)), return_exceptions=True)
        stores = [r for r in results if isinstance(r, Store)]
        try:
            assert len(stores) == 6, [r for r in results if not isinstance(r, Store)]
            created = await asyncio.gather(*(s.create_session(f"from store {n}") for n, s in enumerate(stores)))
            for store in stores:
                assert {s.id for s in await store.list_sessions()} == {s.id for s in created}
        finally:
            for store in stores:
                await store.close()
        assert query(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)]


async def test_opening_a_new_file_that_another_connection_is_writing_waits_for_it(tmp_path: Path) -> None:
    path = tmp_path / "busy.db"
    with closing(sqlite3.connect(path, isolation_level=None)) as other:
        other.execute("BEGIN IMMEDIATE")  # what a second chat-tui does while it creates the schema

        async def finish_writing() -> None:
            await asyncio.sleep(0.3)
            other.execute("ROLLBACK")

        writing = asyncio.create_task(finish_writing())
        async with await Store.open(path) as store:
            await store.create_session("after the wait")
        await writing
    assert query(path, "SELECT title FROM sessions") == [("after the wait",)]


def test_two_processes_open_one_new_file_at_the_same_moment(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    script = (
        "import asyncio, sys\n"
        "from core.store import Store\n"
        "async def main():\n"
        "    sys.stdin.readline()\n"
        "    store = await Store.open(sys.argv[1])\n"
        "    try:\n"
        "        await store.create_session('made by a child')\n"
        "    finally:\n"
        "        await store.close()\n"
        "asyncio.run(main())\n"
    )
    children = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for process in children:  # both are started and have imported the store before either opens the file
        assert process.stdin is not None
        process.stdin.write("go\n")
        process.stdin.flush()
    results = [process.communicate(timeout=30) for process in children]
    assert [p.returncode for p in children] == [0, 0], results
    assert query(path, "SELECT title FROM sessions") == [("made by a child",)] * 2


# -- files that are not ours -------------------------------------------------------------------------------------


def _chat_tui_file(path: Path) -> None:
    async def fill() -> None:
        async with await Store.open(path) as store:
            for n in range(20):
                session = await store.create_session(f"session {n}")
                await chat(store, session.id, "words " * 100, "more words " * 100)

    asyncio.run(fill())


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"These are my notes, not a database.\n" * 20)


def _damaged(path: Path) -> None:
    _chat_tui_file(path)
    data = path.read_bytes()
    path.write_bytes(data[:100] + b"\xa5" * 3996 + data[4096:])  # the schema page, after the file header


def _truncated(path: Path) -> None:
    _chat_tui_file(path)
    path.write_bytes(path.read_bytes()[:4200])


def _garbage_after_header(path: Path) -> None:
    path.write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 32)


def _newer(path: Path) -> None:
    """A newer chat-tui's file, with a reply its crashed process left streaming: recovery must not touch it either."""
    _chat_tui_file(path)

    async def start_a_reply() -> int:
        async with await Store.open(path) as store:
            session = await store.create_session("cut short")
            _, reply = await store.start_turn(session.id, None, "a crashed process's", "demo")
            await store.flush_reply(reply.id, "half a rep")
            return reply.id

    reply_id = asyncio.run(start_a_reply())
    with closing(sqlite3.connect(path)) as db, db:
        db.execute("UPDATE messages SET writer = ? WHERE id = ?", (f"{socket.gethostname()}:{_dead_pid()}:1", reply_id))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
        assert db.execute("SELECT status FROM messages WHERE id = ?", (reply_id,)).fetchall() == [("streaming",)]


def _foreign(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY, total REAL)")
        db.execute("INSERT INTO invoices (total) VALUES (12.5)")
        db.commit()


REFUSED = [
    pytest.param(_not_sqlite, DatabaseCorrupt, "is not a SQLite database", id="not-sqlite"),
    pytest.param(_damaged, DatabaseCorrupt, "is damaged", id="damaged"),
    pytest.param(_truncated, DatabaseCorrupt, "is damaged", id="truncated"),
    pytest.param(_garbage_after_header, DatabaseCorrupt, "is damaged", id="garbage-after-header"),
    pytest.param(_newer, DatabaseTooNew, "written by a newer chat-tui", id="newer"),
    pytest.param(_foreign, DatabaseCorrupt, "of another program", id="foreign"),
]


@pytest.mark.parametrize(("make", "error", "words"), REFUSED)
async def test_a_file_that_is_not_ours_is_refused_and_left_untouched(
    tmp_path: Path, make: Callable[[Path], None], error: type[StoreError], words: str
) -> None:
    path = tmp_path / "theirs.db"
    await asyncio.to_thread(make, path)
    before = {p.name: sha256(p) for p in tmp_path.iterdir()}  # the file and its -wal and -shm, if any

    with pytest.raises(error) as refused:
        await (await Store.open(path)).close()  # closed if it wrongly opens: a stray connection would hang the exit

    assert type(refused.value) is error
    assert words in str(refused.value) and str(path) in str(refused.value)
    assert "\n" not in str(refused.value)
    assert {p.name: sha256(p) for p in tmp_path.iterdir()} == before  # nothing written, no -wal or -shm left
    if make is _not_sqlite:
        assert list(before) == ["theirs.db"]


# -- sessions ------------------------------------------------------------------------------------------------------


async def test_sessions_page_newest_first_and_a_turn_moves_one_to_the_top(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "pages.db", clock=ticking_clock()) as store:
        sessions = [await store.create_session(f"chat {n}") for n in range(7)]
        titles = [f"chat {n}" for n in reversed(range(7))]

        pages = [await store.list_sessions(limit=3, offset=offset) for offset in (0, 3, 6, 9)]
        assert [[s.title for s in page] for page in pages] == [titles[:3], titles[3:6], titles[6:], []]

        await store.start_turn(sessions[2].id, None, "bring me back up", "demo")
        assert [s.title for s in await store.list_sessions(limit=2)] == ["chat 2", "chat 6"]
        assert (await store.latest_session()).id == sessions[2].id
        assert (await store.list_sessions(limit=1))[0].message_count == 2


async def test_rename_archive_and_system_prompt(store: Store) -> None:
    session = await store.create_session("old name")
    other = await store.create_session("other")

    renamed = await store.update_session(session.id, title="new name", system_prompt="Be terse.", model="demo-fast")
    assert (renamed.title, renamed.system_prompt, renamed.model) == ("new name", "Be terse.", "demo-fast")
    assert (await store.get_session(session.id)).title == "new name"

    await store.update_session(session.id, archived=True)
    assert [s.id for s in await store.list_sessions()] == [other.id]
    assert [s.id for s in await store.list_sessions(archived=True)] == [session.id]
    await store.update_session(session.id, archived=False)
    assert {s.id for s in await store.list_sessions()} == {session.id, other.id}

    with pytest.raises(NotFound):
        await store.update_session(9999, title="nobody")


async def test_the_first_prompt_titles_an_untitled_session(store: Store) -> None:
    session = await store.create_session()
    await store.start_turn(
        session.id, None, "How do I   keep a SQLite file\nsafe from two writers at once, please?", None
    )
    title = (await store.get_session(session.id)).title
    assert title == "How do I keep a SQLite file safe from two write…"
    await store.start_turn(session.id, None, "a second prompt does not retitle it", None)
    assert (await store.get_session(session.id)).title == title


async def test_delete_cascades_to_messages_and_search_rows(store: Store) -> None:
    doomed = await store.create_session("doomed")
    kept = await store.create_session("kept")
    await chat(store, doomed.id, "xylophone question", "xylophone answer", "zeppelin")
    await chat(store, kept.id, "xylophone elsewhere")

    await store.delete_session(doomed.id)

    with pytest.raises(NotFound):
        await store.get_session(doomed.id)
    assert query(store.file, "SELECT count(*) FROM messages WHERE session_id = ?", (doomed.id,)) == [(0,)]
    assert query(store.file, "SELECT count(*) FROM messages_fts WHERE messages_fts MATCH 'zeppelin'") == [(0,)]
    assert [h.session_id for h in await store.search("xylophone")] == [kept.id]
    assert await store.search("zeppelin") == []
    with pytest.raises(NotFound):
        await store.delete_session(doomed.id)


async def test_clear_removes_the_messages_but_keeps_the_session(store: Store) -> None:
    session = await store.create_session("cleared")
    await chat(store, session.id, "gone soon", "also gone")
    await store.clear_session(session.id)
    assert await store.latest_leaf(session.id) is None
    assert (await store.get_session(session.id)).message_count == 0
    assert await store.search("gone") == []


# -- the message tree --------------------------------------------------------------------------------------------


async def test_path_pages_back_from_the_leaf(store: Store) -> None:
    session = await store.create_session()
    chain = await chat(store, session.id, *(f"message {n}" for n in range(10)))
    leaf = chain[-1]

    assert [m.content for m in await store.path(leaf.id)] == [f"message {n}" for n in range(10)]
    last = await store.path(leaf.id, limit=4)
    assert [m.content for m in last] == [f"message {n}" for n in range(6, 10)]
    earlier = await store.path(last[0].parent_id, limit=4)
    assert [m.content for m in earlier] == [f"message {n}" for n in range(2, 6)]
    first = await store.path(earlier[0].parent_id, limit=4)
    assert [m.content for m in first] == ["message 0", "message 1"]
    assert first[0].parent_id is None
    assert [m.role for m in last] == [Role.USER, Role.ASSISTANT] * 2


async def test_siblings_and_their_positions(store: Store) -> None:
    session = await store.create_session()
    other = await store.create_session()
    (question,) = await chat(store, session.id, "one question")
    replies = [await store.start_reply(session.id, question.id, "demo") for _ in range(3)]
    (second_root,) = await chat(store, session.id, "another root")
    (other_root,) = await chat(store, other.id, "a root in another session")

    assert await store.siblings(replies[1].id) == [r.id for r in replies]
    assert await store.siblings(question.id) == [question.id, second_root.id]  # roots: parent NULL, same session
    assert await store.siblings(other_root.id) == [other_root.id]
    counts = await store.sibling_counts([*(r.id for r in replies), question.id, other_root.id])
    assert counts == {
        replies[0].id: (1, 3),
        replies[1].id: (2, 3),
        replies[2].id: (3, 3),
        question.id: (1, 2),
        other_root.id: (1, 1),
    }
    assert await store.sibling_counts([]) == {}


async def test_newest_leaf_under_follows_the_newest_branch(store: Store) -> None:
    session = await store.create_session()
    root, first_reply = await chat(store, session.id, "root", "reply A")
    deep = await chat(store, session.id, "deeper", "deeper reply", parent_id=first_reply.id)
    second_reply = await store.start_reply(session.id, root.id, None)

    assert await store.newest_leaf_under(root.id) == second_reply.id
    assert await store.newest_leaf_under(first_reply.id) == deep[-1].id
    assert await store.newest_leaf_under(deep[-1].id) == deep[-1].id
    assert await store.latest_leaf(session.id) == second_reply.id


async def test_a_parent_from_another_session_is_refused_and_nothing_is_written(store: Store) -> None:
    mine = await store.create_session()
    theirs = await store.create_session()
    (their_message,) = await chat(store, theirs.id, "not yours")
    before = store.write_transactions

    with pytest.raises(NotFound):
        await store.start_turn(mine.id, their_message.id, "hello", None)
    with pytest.raises(NotFound):
        await store.start_turn(9999, None, "hello", None)

    assert store.write_transactions == before
    assert await store.latest_leaf(mine.id) is None


async def test_writes_from_many_tasks_at_once_all_land(store: Store) -> None:
    session = await store.create_session()
    (root,) = await chat(store, session.id, "root")
    added = await asyncio.gather(*(chat(store, session.id, f"q{n}", f"a{n}", parent_id=root.id) for n in range(40)))
    assert len({m.id for pair in added for m in pair}) == 80
    for n, (question, answer) in enumerate(added):
        assert [m.content for m in await store.path(answer.id)] == ["root", f"q{n}", f"a{n}"]
        assert answer.parent_id == question.id
    assert integrity(store.file) == "ok"


async def test_reads_see_the_writes_before_them_while_other_tasks_read(store: Store) -> None:
    session = await store.create_session()
    reading = True

    async def keep_reading() -> None:
        while reading:
            await store.list_sessions()
            await store.search("whatever")

    readers = [asyncio.create_task(keep_reading()) for _ in range(4)]
    try:
        for n in range(40):
            _, reply = await store.start_turn(session.id, None, f"question {n}", "demo")
            finished = await store.finish_reply(reply.id, f"answer {n}", Status.COMPLETE, completion_tokens=2)
            assert (finished.content, finished.status) == (f"answer {n}", Status.COMPLETE)
    finally:
        reading = False
        await asyncio.gather(*readers)


# -- streaming rows --------------------------------------------------------------------------------------------


async def test_flush_and_finish_a_reply(store: Store) -> None:
    session = await store.create_session()
    user, reply = await store.start_turn(session.id, None, "stream to me", "demo")
    assert (reply.status, reply.content, reply.parent_id, reply.model) == (Status.STREAMING, "", user.id, "demo")

    await store.flush_reply(reply.id, "partial")
    assert (await store.get_message(reply.id)).content == "partial"
    done = await store.finish_reply(reply.id, "partial and done", Status.COMPLETE, prompt_tokens=3, completion_tokens=4)
    assert (done.content, done.status, done.prompt_tokens, done.completion_tokens) == (
        "partial and done",
        Status.COMPLETE,
        3,
        4,
    )
    await store.flush_reply(reply.id, "a late flush")  # a no-op once finished
    assert (await store.get_message(reply.id)).content == "partial and done"


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


async def test_recovery_marks_dead_writers_interrupted_and_leaves_live_ones_alone(tmp_path: Path) -> None:
    path = tmp_path / "recover.db"
    async with await Store.open(path) as store:
        session = await store.create_session()
        _, live = await store.start_turn(session.id, None, "mine, still streaming", "demo")
        _, dead = await store.start_turn(session.id, None, "a crashed process's", "demo")
        _, remote = await store.start_turn(session.id, None, "another machine's", "demo")
        await store.flush_reply(dead.id, "half a rep")
        host = socket.gethostname()
        with closing(sqlite3.connect(path)) as db, db:
            db.execute("UPDATE messages SET writer = ? WHERE id = ?", (f"{host}:{_dead_pid()}:1", dead.id))
            db.execute("UPDATE messages SET writer = ? WHERE id = ?", (f"not-{host}:1:1", remote.id))
        assert query(path, "SELECT writer FROM messages WHERE id = ?", (live.id,)) == [(store.writer_token,)]

        assert await store.recover_interrupted() == 1
        assert (await store.get_message(live.id)).status is Status.STREAMING
        assert (await store.get_message(remote.id)).status is Status.STREAMING
        recovered = await store.get_message(dead.id)
        assert (recovered.status, recovered.content) == (Status.INTERRUPTED, "half a rep")

        async with await Store.open(path) as second:  # another opener in this live process leaves ours alone too
            assert (await second.get_message(live.id)).status is Status.STREAMING
        assert await store.recover_interrupted() == 0


# -- search ------------------------------------------------------------------------------------------------------


async def test_search_ranks_and_marks_matches(store: Store) -> None:
    weak = await store.create_session("weak")
    strong = await store.create_session("strong")
    await chat(store, weak.id, "a long note about many other things where asyncio shows up once among plenty of words")
    await chat(store, strong.id, "asyncio asyncio asyncio")

    hits = await store.search("asyncio")
    assert [h.session_title for h in hits] == ["strong", "weak"]
    assert hits[0].snippet == "[asyncio] [asyncio] [asyncio]"
    assert "[asyncio]" in hits[1].snippet and hits[1].role is Role.USER
    assert [h.session_title for h in await store.search("asyn")] == ["strong", "weak"]  # the last word is a prefix
    assert [h.session_title for h in await store.search("note asyncio")] == ["weak"]  # every word must match
    assert len(await store.search("asyncio", limit=1)) == 1
    assert [h.session_title for h in await store.search("asyncio", limit=1, offset=1)] == ["weak"]


@pytest.mark.parametrize(
    "text", ['"', "AND (", "(", 'foo"bar', "NEAR(", "*", "-x", "a OR", "col:val", "^x", "'", "   ", "", ") OR (x"]
)
async def test_search_takes_any_input_literally(store: Store, text: str) -> None:
    session = await store.create_session()
    await chat(store, session.id, "plain words only")
    assert await store.search(text) == []


async def test_search_finds_operator_words_as_words(store: Store) -> None:
    session = await store.create_session()
    await chat(store, session.id, 'this AND that (or "quoted" words)', "NEAR the end")
    assert [h.snippet for h in await store.search("AND (")] == ['this [AND] that (or "quoted" words)']
    assert [h.snippet for h in await store.search('"quoted"')] == ['this AND that (or "[quoted]" words)']
    assert [h.snippet for h in await store.search("NEAR")] == ["[NEAR] the end"]


# -- app state and export ------------------------------------------------------------------------------------------


async def test_app_state_round_trips_and_persists(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    async with await Store.open(path) as store:
        assert await store.get_state("tabs") is None
        assert await store.get_state("tabs", []) == []
        await store.set_state("tabs", [3, 1, 2])
        await store.set_state("tabs", {"open": [1, 2], "active": 2})
        await store.set_state("theme", "nord")
    async with await Store.open(path) as store:
        assert await store.get_state("tabs") == {"open": [1, 2], "active": 2}
        assert await store.get_state("theme") == "nord"
        await store.delete_state("theme")
        await store.delete_state("never set")
        assert await store.get_state("theme") is None


async def test_drafts_are_kept_per_session_and_blank_text_removes_them(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "drafts.db") as store:
        assert await store.get_draft(1) == ""
        await store.set_draft(1, "half a thought")
        await store.set_draft(None, "a new chat's words")
        assert (await store.get_draft(1), await store.get_draft(2), await store.get_draft(None)) == (
            "half a thought",
            "",
            "a new chat's words",
        )
        await store.set_draft(1, "  \n")
        assert await store.get_draft(1) == "" and await store.get_state("draft:1") is None


async def test_deleting_a_session_deletes_its_draft(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "drafts.db") as store:
        gone, kept = await store.create_session("Gone"), await store.create_session("Kept")
        await store.set_draft(gone.id, "never sent")
        await store.set_draft(kept.id, "still here")
        await store.delete_session(gone.id)
        assert (await store.get_draft(gone.id), await store.get_draft(kept.id)) == ("", "still here")


async def test_a_sessions_saved_branch_is_kept_per_session_and_goes_with_it(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "branches.db") as store:
        gone, kept = await store.create_session("Gone"), await store.create_session("Kept")
        assert await store.get_branch(gone.id) is None
        await store.set_branch(gone.id, 7)
        await store.set_branch(kept.id, 9)
        await store.delete_session(gone.id)
        assert (await store.get_branch(gone.id), await store.get_branch(kept.id)) == (None, 9)


async def test_export_a_branch_as_markdown_and_json(tmp_path: Path) -> None:
    async with await Store.open(tmp_path / "export.db", clock=ticking_clock()) as store:
        session = await store.create_session("Export me")
        user, reply = await store.start_turn(session.id, None, "First question?", "demo")
        await store.finish_reply(reply.id, "Answer **one**.\n", Status.COMPLETE, completion_tokens=3)
        _, cut = await store.start_turn(session.id, reply.id, "Second?", "demo")
        await store.finish_reply(cut.id, "Half an ans", Status.INTERRUPTED)
        _, failed = await store.start_turn(session.id, cut.id, "Third?", None)
        await store.finish_reply(failed.id, "Par", Status.ERROR, error="The server failed (500).")
        session = await store.get_session(session.id)
        messages = await store.path(failed.id)

    markdown = to_markdown(session, messages)
    assert markdown == (
        "# Export me\n\n"
        f"*Session {session.id}, started 2024-05-01T12:00:00.000000Z*\n\n"
        "## You\n\nFirst question?\n\n"
        "## Assistant (demo)\n\nAnswer **one**.\n\n"
        "## You\n\nSecond?\n\n"
        "## Assistant (demo)\n\nHalf an ans\n\n*(interrupted — partial reply)*\n\n"
        "## You\n\nThird?\n\n"
        "## Assistant\n\nPar\n\n> **Error:** The server failed (500).\n"
    )
    exported = json.loads(to_json(session, messages))
    assert exported["session"]["id"] == session.id and exported["session"]["title"] == "Export me"
    assert [(m["role"], m["content"], m["status"], m["error"]) for m in exported["messages"]] == [
        ("user", "First question?", "complete", None),
        ("assistant", "Answer **one**.\n", "complete", None),
        ("user", "Second?", "complete", None),
        ("assistant", "Half an ans", "interrupted", None),
        ("user", "Third?", "complete", None),
        ("assistant", "Par", "error", "The server failed (500)."),
    ]
    assert exported["messages"][1]["completion_tokens"] == 3
    assert [m["id"] for m in exported["messages"]] == [m.id for m in messages]


@pytest.mark.parametrize("yields", [0, 1, 2, 3, 5])
async def test_a_write_cancelled_at_any_point_leaves_no_transaction_open(tmp_path: Path, yields: int) -> None:
    # Esc, a closed tab or quitting can cancel a reply's periodic save while its BEGIN is on the connection's
    # thread; the next write must still work.
    store = await Store.open(tmp_path / "h.db")
    try:
        session = await store.create_session()
        _, reply = await store.start_turn(session.id, None, "hi", "demo")
        task = asyncio.create_task(store.flush_reply(reply.id, "partial"))
        for _ in range(yields):
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        finished = await store.finish_reply(reply.id, "partial", Status.INTERRUPTED)
        assert finished.status is Status.INTERRUPTED
        assert (await store.get_message(reply.id)).content == "partial"
    finally:
        await store.close()


async def test_only_a_session_without_messages_draft_title_or_key_is_deleted_as_unused(store: Store) -> None:
    bare = await store.create_session()
    named = await store.create_session("Trip plans")
    keyed = await store.session_for_key("customer-42")
    drafted = await store.create_session()
    await store.set_draft(drafted.id, "unsent")
    used = await store.create_session()
    await store.add_messages(used.id, None, [(Role.USER, "hi")])
    results = [await store.delete_session_if_unused(s.id) for s in (bare, named, keyed, drafted, used)]
    assert results == [True, False, False, False, False]


async def test_changed_elsewhere_counts_other_connections_commits_only(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    async with await Store.open(path) as store, await Store.open(path) as other:
        assert await store.changed_elsewhere()  # the first call: nothing seen yet
        assert not await store.changed_elsewhere()
        session = await store.create_session("mine")
        await chat(store, session.id, "q", "a")
        assert not await store.changed_elsewhere()  # its own writes
        await chat(other, session.id, "q2", "a2")
        assert await store.changed_elsewhere()
        assert not await store.changed_elsewhere()
        with closing(sqlite3.connect(path)) as plain:  # any writer, not only chat-tui's
            plain.execute("UPDATE sessions SET title = 'renamed'")
            plain.commit()
        assert await store.changed_elsewhere()


async def test_newest_leaf_under_a_gone_message_is_none_and_marks_are_per_session(store: Store) -> None:
    one, two, empty = [await store.create_session(name) for name in ("one", "two", "empty")]
    first = await chat(store, one.id, "q", "a")
    branch = await chat(store, one.id, "q2", "a2", parent_id=first[0].id)
    (only,) = await chat(store, two.id, "q")
    assert await store.newest_leaf_under(first[0].id) == branch[-1].id
    everything = {one.id: ("one", branch[-1].id), two.id: ("two", only.id), empty.id: ("empty", None)}
    assert await store.session_marks([one.id, two.id, empty.id, 999]) == everything
    await store.clear_session(one.id)
    assert await store.newest_leaf_under(first[0].id) is None
    assert await store.session_marks([one.id]) == {one.id: ("one", None)}
    assert await store.session_marks([]) == {}
