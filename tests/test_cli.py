"""The headless command line: run in-process through ``run_command``, and as a real process for Ctrl+C and imports."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from core.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, build_parser, run_command
from core.server import LocalServer, ServerOptions
from core.store import APPLICATION_ID, SCHEMA_VERSION, Store
from tests.helpers import CHILD, ROOT, child_env, pieces_for, query, reply_for, sha256

Cli = Callable[..., tuple[int, str, str]]


class Terminal(io.StringIO):
    """Standard output as a terminal, where model text must never reach the screen as escape sequences."""

    def isatty(self) -> bool:
        return True


def run(*argv: str, out: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = out or io.StringIO(), io.StringIO()
    code = run_command(build_parser().parse_args(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "cli.db"


@pytest.fixture
def cli(tmp_path: Path, db: Path, server: LocalServer, clean_env: None) -> Cli:
    """``cli("ask", "hi")``: the command with --db, --config and --base-url pointing into the test."""
    server.options.tokens = 20
    common = ["--db", str(db), "--config", str(tmp_path / "none.toml"), "--base-url", server.url, "-m", "demo-fast"]
    return lambda command, *rest, **kwargs: run(command, *common, *rest, **kwargs)


def messages(db: Path) -> list[tuple[int, int, int | None, str, str, str]]:
    return query(db, "SELECT id, session_id, parent_id, role, content, status FROM messages ORDER BY id")


def test_ask_streams_the_reply_and_saves_the_turn(cli: Cli, db: Path) -> None:
    code, out, err = cli("ask", "What is WAL?")
    assert (code, out, err) == (EXIT_OK, reply_for("What is WAL?", 20) + "\n", "")
    assert messages(db) == [
        (1, 1, None, "user", "What is WAL?", "complete"),
        (2, 1, 1, "assistant", reply_for("What is WAL?", 20), "complete"),
    ]
    assert query(db, "SELECT title FROM sessions") == [("What is WAL?",)]
    assert query(db, "SELECT model FROM messages WHERE role = 'assistant'") == [("demo-fast",)]


def test_continue_and_session_pick_the_parent(cli: Cli, db: Path) -> None:
    assert cli("ask", "first")[0] == EXIT_OK
    assert cli("ask", "-c", "second")[0] == EXIT_OK
    assert cli("ask", "elsewhere")[0] == EXIT_OK
    assert cli("ask", "--session", "1", "third")[0] == EXIT_OK

    rows = {content: (session, parent) for _, session, parent, role, content, _ in messages(db) if role == "user"}
    replies = {parent: id_ for id_, _, parent, role, _, _ in messages(db) if role == "assistant"}
    first_id = next(id_ for id_, *_, content, _ in messages(db) if content == "first")
    second_id = next(id_ for id_, *_, content, _ in messages(db) if content == "second")
    assert rows["second"] == (1, replies[first_id])
    assert rows["elsewhere"] == (2, None)
    assert rows["third"] == (1, replies[second_id])


def test_continue_goes_to_the_most_recent_session(cli: Cli, db: Path) -> None:
    cli("ask", "in one")
    cli("ask", "in two")
    assert cli("ask", "-c", "back to two")[0] == EXIT_OK
    assert [r[1] for r in messages(db) if r[4] == "back to two"] == [2]


def test_ask_dash_reads_standard_input(cli: Cli, db: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a prompt\nover two lines\n"))
    code, out, _ = cli("ask", "-")
    assert code == EXIT_OK
    assert out == reply_for("a prompt\nover two lines\n", 20) + "\n"
    assert messages(db)[0][4] == "a prompt\nover two lines\n"


def test_an_empty_list_says_so_on_stderr(cli: Cli, db: Path) -> None:
    asyncio.run(_make_empty(db))
    assert cli("list") == (EXIT_OK, "", "No conversations yet.\n")
    assert cli("list", "--json") == (EXIT_OK, "[]\n", "")


async def _make_empty(db: Path) -> None:
    async with await Store.open(db):
        pass


@pytest.mark.parametrize(
    "command",
    [["list"], ["list", "--json"], ["show", "1"], ["export", "1"], ["export", "1", "-o", "out.md"], ["search", "x"]],
)
def test_a_read_only_command_on_a_missing_database_creates_nothing(
    tmp_path: Path, clean_env: None, command: list[str]
) -> None:
    # A mistyped --db used to get an empty database, and its folders, made there, and "No conversations yet."
    db = tmp_path / "no" / "such" / "x.db"
    work = tmp_path / "work"
    work.mkdir()
    command = [str(work / a) if a == "out.md" else a for a in command]
    code, out, err = run(*command, "--db", str(db), "--config", str(tmp_path / "none.toml"))
    assert (code, out) == (EXIT_FAILED, "")
    assert err == f"chat-tui: There is no database at {db} (the first chat makes it).\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"] and list(work.iterdir()) == []


def test_list_show_export_and_search(cli: Cli, tmp_path: Path) -> None:
    cli("ask", "tell me about lighthouses")
    cli("ask", "and about harbours")

    code, out, _ = cli("list")
    assert code == EXIT_OK
    lines = out.splitlines()
    assert len(lines) == 2
    assert lines[0].split()[0] == "2" and lines[0].endswith("2 msgs  and about harbours")
    assert lines[1].split()[0] == "1" and lines[1].endswith("2 msgs  tell me about lighthouses")

    code, out, _ = cli("list", "--json")
    assert code == EXIT_OK
    listed = json.loads(out)
    assert [(s["id"], s["title"], s["message_count"]) for s in listed] == [
        (2, "and about harbours", 2),
        (1, "tell me about lighthouses", 2),
    ]

    code, out, _ = cli("show", "1")
    assert code == EXIT_OK
    assert out.startswith("# tell me about lighthouses\n")
    assert "## You\n\ntell me about lighthouses\n\n## Assistant (demo-fast)\n\n" in out
    assert reply_for("tell me about lighthouses", 20).rstrip() in out
    code, out, _ = cli("show", "1", "--json")
    assert [m["role"] for m in json.loads(out)["messages"]] == ["user", "assistant"]

    md, js = tmp_path / "out.md", tmp_path / "out.json"
    code, out, err = cli("export", "2", "--format", "md", "-o", str(md))
    assert (code, out, err) == (EXIT_OK, "", f"Exported session 2 to {md}\n")
    assert md.read_text().startswith("# and about harbours\n") and "## You\n\nand about harbours" in md.read_text()
    code, _, _ = cli("export", "2", "-f", "json", "-o", str(js))
    exported = json.loads(js.read_text())
    assert exported["session"]["id"] == 2
    assert [m["content"] for m in exported["messages"]] == ["and about harbours", reply_for("and about harbours", 20)]
    code, out, _ = cli("export", "1")
    assert code == EXIT_OK and out.startswith("# tell me about lighthouses\n")

    code, out, _ = cli("search", "lighthouse", "--json")
    assert code == EXIT_OK
    hits = json.loads(out)
    # the user's message and the reply, which echoes it; nothing from session 2
    assert sorted((h["session_id"], h["role"]) for h in hits) == [(1, "assistant"), (1, "user")]
    assert all("[lighthouses]" in h["snippet"] for h in hits)


def test_a_failure_is_one_line_on_stderr(cli: Cli, db: Path) -> None:
    code, out, err = cli("ask", "this will fail [[status=500]]")
    assert code == EXIT_FAILED and out == ""
    assert err.startswith("chat-tui: The server at ") and err.endswith("failed (500). Try again in a moment.\n")
    assert err.count("\n") == 1
    assert messages(db)[-1][3:] == ("assistant", "", "error")

    assert cli("show", "999") == (EXIT_FAILED, "", "chat-tui: There is no session 999.\n")

    code, out, err = cli("ask", "cut short [[cut_after=3]]")
    assert code == EXIT_FAILED
    assert out == "".join(pieces_for("cut short", 20)[:3]) + "\n"
    assert err == "chat-tui: The connection dropped mid-reply; the partial reply was kept.\n"


ESCAPES = "\x1b]0;PWNED\x07\x1b[2J\x9b31m"
"""A window title, a screen clear and a C1 CSI (which JSON leaves as it is): none may reach a terminal."""


@pytest.mark.parametrize(
    "command",
    [["list"], ["list", "--json"], ["search", "sure"], ["search", "sure", "--json"], ["export", "1"], ["show", "1"]],
)
def test_model_text_reaches_a_terminal_inert(cli: Cli, command: list[str]) -> None:
    assert cli("ask", f"sure {ESCAPES} red")[0] == EXIT_OK  # the title, the prompt and the echoed reply
    code, out, _ = cli(*command, out=Terminal())
    assert code == EXIT_OK and "sure" in out
    assert not {"\x1b", "\x07", "\x9b"} & set(out)

    if command != ["list"]:  # the table shows display titles, inert everywhere
        code, piped, _ = cli(*command)  # a pipe or a file gets the text as it is
        assert code == EXIT_OK and "\x9b" in piped


@pytest.mark.parametrize("source", ["argv", "lenient stdin", "strict stdin"])
def test_a_prompt_that_is_not_utf8_fails_in_one_line(
    cli: Cli, db: Path, monkeypatch: pytest.MonkeyPatch, source: str
) -> None:
    # Python hands undecodable bytes over as lone surrogates (argv, a surrogateescape stdin), or fails the read.
    if source == "lenient stdin":
        monkeypatch.setattr("sys.stdin", io.StringIO("caf\udce9"))
    elif source == "strict stdin":
        monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"caf\xe9"), encoding="utf-8"))
    code, out, err = cli("ask", "caf\udce9" if source == "argv" else "-")
    assert (code, out, err) == (EXIT_FAILED, "", "chat-tui: the prompt is not valid UTF-8.\n")
    assert query(db, "SELECT count(*) FROM sessions") == [(0,)]


@pytest.mark.parametrize("where", ["missing/out.md", "."])
def test_an_export_that_cannot_be_written_fails_in_one_line(cli: Cli, tmp_path: Path, where: str) -> None:
    cli("ask", "hello")
    target = tmp_path / where
    code, out, err = cli("export", "1", "-o", str(target))
    assert (code, out) == (EXIT_FAILED, "")
    assert err.startswith(f"chat-tui: Cannot write {target}: ") and err.count("\n") == 1


def test_a_failed_ask_leaves_no_empty_session(tmp_path: Path, db: Path, clean_env: None) -> None:
    # The default profile talks to api.openai.com and there is no key: nothing is sent, and nothing is saved.
    code, out, err = run("ask", "--db", str(db), "--config", str(tmp_path / "none.toml"), "hello")
    assert (code, out) == (EXIT_FAILED, "")
    assert err.startswith("chat-tui: No API key for profile 'default'") and err.count("\n") == 1
    assert query(db, "SELECT count(*) FROM sessions") == [(0,)]


@pytest.mark.parametrize("pick", [["-c"], ["--session", "1"]])
def test_a_turn_beside_a_reply_still_streaming_becomes_a_branch(
    cli: Cli, db: Path, server: LocalServer, pick: list[str]
) -> None:
    assert cli("ask", "first")[0] == EXIT_OK

    async def another_process_starts_a_turn() -> int:
        # Its reply stays 'streaming' with this (live) process as its writer, like another chat-tui's mid-stream.
        async with await Store.open(db) as store:
            user, _ = await store.start_turn(1, 2, "theirs", "demo-fast")
        return user.id

    theirs = asyncio.run(another_process_starts_a_turn())
    assert cli("ask", *pick, "mine")[0] == EXIT_OK

    parents = {content: parent for _, _, parent, _, content, _ in messages(db)}
    assert parents["mine"] == parents["theirs"] == 2  # siblings under the first reply
    assert [(m["role"], m["content"]) for m in server.requests[-1].messages] == [
        ("user", "first"),
        ("assistant", reply_for("first", 20)),
        ("user", "mine"),
    ]
    assert query(db, "SELECT status FROM messages WHERE parent_id = ?", (theirs,)) == [("streaming",)]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args(["--version"])
    assert done.value.code == 0
    assert capsys.readouterr().out == "chat-tui 0.1.0\n"


# -- files that are not ours ---------------------------------------------------------------------------------------


def _not_sqlite(path: Path) -> None:
    path.write_text("shopping list: eggs, milk\n")


def _newer(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE sessions (id INTEGER PRIMARY KEY)")
        db.execute(f"PRAGMA application_id = {APPLICATION_ID}")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 5}")
        db.commit()


def _foreign(path: Path) -> None:
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE photos (id INTEGER PRIMARY KEY, name TEXT)")
        db.commit()


def _foreign_versioned(path: Path) -> None:
    # Many programs (Firefox among them) number their schema in user_version: that alone does not make it ours.
    with closing(sqlite3.connect(path)) as db:
        db.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 72}")
        db.commit()


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_not_sqlite, "is not a SQLite database"),
        (_newer, "newer chat-tui"),
        (_foreign, "of another program"),
        (_foreign_versioned, "of another program"),
    ],
)
@pytest.mark.parametrize("command", [["list"], ["ask", "hello"]])
def test_a_file_that_is_not_ours_fails_in_one_line(
    cli: Cli, db: Path, server: LocalServer, make: Callable[[Path], None], words: str, command: list[str]
) -> None:
    make(db)
    before = sha256(db)
    code, out, err = cli(*command)
    assert (code, out) == (EXIT_FAILED, "")
    assert err.startswith(f"chat-tui: {db}") and words in err
    assert err.count("\n") == 1 and err.endswith("\n")
    assert sha256(db) == before
    assert server.requests == []


def _under_a_file(tmp_path: Path) -> Path:
    (tmp_path / "notes.txt").write_text("not a directory\n")
    return tmp_path / "notes.txt" / "history.db"


def _a_directory(tmp_path: Path) -> Path:
    (tmp_path / "folder").mkdir()
    return tmp_path / "folder"


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (_under_a_file, "Cannot create the database"),
        (lambda _: Path("/proc/chat-tui-test.db"), "Cannot create the database"),
        (_a_directory, "Cannot open the database"),
    ],
)
def test_a_db_path_that_cannot_hold_a_database_fails_in_one_line(
    tmp_path: Path, make: Callable[[Path], Path], words: str
) -> None:
    # In a process of its own, several times: a failed connection's thread used to outlive the event loop and
    # dump "Event loop is closed" after the message, now and then.
    if not Path("/proc/self").exists():
        pytest.skip("needs Linux's /proc")
    db = make(tmp_path)
    done = _run_python(
        "-c",
        "import sys\nfrom core.cli import build_parser, run_command\n"
        "codes = {run_command(build_parser().parse_args(sys.argv[1:])) for _ in range(5)}\n"
        "sys.exit(codes.pop() if len(codes) == 1 else 99)",
        "ask",
        "hello",
        "--db",
        str(db),
        "--config",
        str(tmp_path / "none.toml"),
    )
    assert done.returncode == EXIT_FAILED
    assert done.stdout == ""
    lines = done.stderr.splitlines()
    assert len(lines) == 5 and len(set(lines)) == 1, done.stderr
    assert lines[0].startswith(f"chat-tui: {words} {db}: ")


# -- the API key ---------------------------------------------------------------------------------------------------

SECRET = "sk-chattui-cli-4e8b2a6c0d1f3957"


def test_the_key_is_in_no_output_file_or_export(
    tmp_path: Path, clean_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHAT_TUI_TEST_KEY", SECRET)
    with (
        LocalServer(ServerOptions(api_key="not-the-key", tokens=10)) as wrong,
        LocalServer(ServerOptions(api_key=SECRET, tokens=10)) as right,
    ):
        config = tmp_path / "config.toml"
        config.write_text(
            "".join(
                f'[profiles.{name}]\nmodel = "demo"\nbase_url = "{url}"\napi_key_env = "CHAT_TUI_TEST_KEY"\n'
                for name, url in (("wrong", wrong.url), ("right", right.url))
            )
        )
        db = tmp_path / "keys.db"
        common = ["--db", str(db), "--config", str(config)]
        outputs = [run("ask", *common, "--profile", "wrong", "let me in")]
        outputs.append(run("ask", *common, "--profile", "right", "hello"))
        for session in ("1", "2"):
            outputs.append(run("export", *common, session, "-f", "md", "-o", str(tmp_path / f"{session}.md")))
            outputs.append(run("export", *common, session, "-f", "json", "-o", str(tmp_path / f"{session}.json")))
            outputs.append(run("show", *common, session, "--json"))
        outputs.append(run("list", *common, "--json"))

    (code, out, err), (ok, answer, _) = outputs[:2]
    assert code == EXIT_FAILED and "rejected the API key (401). Check CHAT_TUI_TEST_KEY." in err
    assert ok == EXIT_OK and answer == reply_for("hello", 10) + "\n"
    assert [o[0] for o in outputs] == [EXIT_FAILED] + [EXIT_OK] * 8
    for _, out, err in outputs:
        assert SECRET not in out and SECRET not in err
    files = [p for p in tmp_path.iterdir() if p.name != "config.toml"]
    assert {"keys.db", "1.md", "1.json", "2.md", "2.json"} <= {p.name for p in files}
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path.name


# -- real processes ------------------------------------------------------------------------------------------------


def test_ctrl_c_during_ask_saves_the_partial_reply_and_exits_130(tmp_path: Path, db: Path, server: LocalServer) -> None:
    prompt = "a slow story [[tps=40 tokens=400]]"
    # The real entry point, with Python's own Ctrl+C handler even if this test runs where SIGINT is ignored.
    launcher = (
        "import signal; signal.signal(signal.SIGINT, signal.default_int_handler)\nfrom tui.__main__ import main\nmain()"
    )
    command = ["ask", "--db", str(db), "--config", str(tmp_path / "none.toml"), "--base-url", server.url, prompt]
    process = subprocess.Popen(
        [sys.executable, "-c", launcher, *command],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        bufsize=0,  # unbuffered bytes: communicate() reads the pipe itself, past anything a buffer had taken
    )
    try:
        assert process.stdout is not None
        head = b""
        while len(head) < 40:  # the reply has begun streaming to stdout
            chunk = process.stdout.read(40 - len(head))
            assert chunk, "ask ended before 40 bytes of its reply"
            head += chunk
        process.send_signal(signal.SIGINT)
        rest_bytes, err_bytes = process.communicate(timeout=20)
    finally:
        process.kill()
        process.wait()
    shown, err = (head + rest_bytes).decode(), err_bytes.decode()

    assert process.returncode == EXIT_INTERRUPTED, err
    assert err.strip().endswith("chat-tui: interrupted; the partial reply was saved.")
    assert "Traceback" not in err
    (_, _, _, _, content, status) = messages(db)[-1]
    assert status == "interrupted"
    assert content.startswith(shown) and len(shown) >= 40
    assert reply_for(prompt, 400).startswith(content) and content != reply_for(prompt, 400)


def test_a_reader_gone_away_ends_ask_quietly_and_the_reply_is_saved(
    tmp_path: Path, db: Path, server: LocalServer
) -> None:
    # ``chat-tui ask ... | head -1``: the pipe closes while the reply streams.
    prompt = "hi [[tokens=300 tps=100]]"
    command = ["ask", "--db", str(db), "--config", str(tmp_path / "none.toml"), "--base-url", server.url, prompt]
    process = subprocess.Popen(
        [sys.executable, "-m", "tui", *command],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None and process.stderr is not None
        head = process.stdout.read(10)
        process.stdout.close()
        err = process.stderr.read()
        process.wait(timeout=20)
    finally:
        process.kill()
        process.wait()
        process.stderr.close()

    assert head and (process.returncode, err) == (EXIT_FAILED, "")
    assert [row[5] for row in messages(db)] == ["complete", "interrupted"]


def test_a_writer_killed_but_not_yet_reaped_counts_as_gone(cli: Cli, db: Path, server: LocalServer) -> None:
    # A zombie: killed, but its parent (a supervisor, a shell, here this test) has not waited for it yet.
    if not Path("/proc/self/stat").exists():
        pytest.skip("needs Linux's /proc")
    prompt = "a long answer please [[tps=40 tokens=400]]"
    process = subprocess.Popen(
        [sys.executable, str(CHILD), "stream", str(db), server.url, prompt],
        cwd=ROOT,
        env=child_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        reply_id = int(process.stdout.readline().split()[1])
        os.kill(process.pid, signal.SIGKILL)  # not process.kill(): that may reap it
        stat = Path(f"/proc/{process.pid}/stat")
        deadline = time.monotonic() + 10
        while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
            assert time.monotonic() < deadline, "the child did not die"
            time.sleep(0.01)
        assert cli("list")[0] == EXIT_OK  # opening the database ends replies whose writer is gone
        status = query(db, "SELECT status FROM messages WHERE id = ?", (reply_id,))
    finally:
        process.kill()
        process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert status == [("interrupted",)]


def _run_python(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, env=child_env(), capture_output=True, text=True, timeout=30
    )


def test_core_never_imports_textual() -> None:
    done = _run_python(
        "-c",
        "import core.cli, core.engine, core.store, core.history, core.config, core.server, core.export, sys\n"
        "assert 'textual' not in sys.modules, 'core imported textual'",
    )
    assert done.returncode == 0, done.stderr


def test_the_parser_imports_neither_textual_nor_the_model_client() -> None:
    done = _run_python(
        "-c",
        "import sys\nfrom core.cli import build_parser\nbuild_parser()\n"
        "heavy = sorted(m for m in ('langchain_openai', 'openai', 'textual', 'aiosqlite') if m in sys.modules)\n"
        "assert not heavy, heavy",
    )
    assert done.returncode == 0, done.stderr


def test_the_app_module_leaves_heavy_imports_for_after_the_first_frame() -> None:
    # The model client (openai, langchain) and the Markdown renderer are imported by a thread once the app shows.
    done = _run_python(
        "-c",
        "import tui.app, sys\n"
        "late = ('openai', 'langchain_openai', 'langchain_core', 'markdown_it', 'rich.markdown',\n"
        "        'importlib.metadata')\n"
        "print(sorted(name for name in late if name in sys.modules))",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_preload_compiles_the_common_lexers_off_the_event_loop() -> None:
    # Pygments compiles a lexer on its first use: without the preload, the first Python block of a stream
    # would stall the event loop ~40 ms.
    done = _run_python(
        "-c",
        "from pygments.lexer import RegexLexer\n"
        "from pygments.lexers import find_lexer_class_by_name\n"
        "from tui.widgets.markdown_render import PRELOADED_LEXERS, preload_markdown\n"
        "classes = [find_lexer_class_by_name(name) for name in PRELOADED_LEXERS]\n"
        "classes = [c for c in classes if issubclass(c, RegexLexer)]  # the JSON lexer is hand-written\n"
        "before = [c.__name__ for c in classes if '_tokens' in c.__dict__]\n"
        "preload_markdown()\n"
        "after = [c.__name__ for c in classes if '_tokens' not in c.__dict__]\n"
        "print(before, after, 'python' in PRELOADED_LEXERS)",
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] [] True"


@pytest.mark.parametrize("flag", ["--help", "--version"])
def test_help_and_version_answer_without_heavy_imports(flag: str) -> None:
    done = _run_python("-X", "importtime", "-m", "tui", flag)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: chat-tui" if flag == "--help" else "chat-tui ")
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines() if line.startswith("import time")}
    assert "core.cli" in imported
    heavy = {name for name in imported if name.split(".")[0] in ("textual", "langchain_openai", "openai")}
    assert not heavy
