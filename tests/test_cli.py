"""The headless command line: run in-process through ``run_command``, and as a real process for Ctrl+C and imports."""

from __future__ import annotations

import io
import json
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

import pytest

from core.cli import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK, build_parser, run_command
from core.server import LocalServer, ServerOptions
from core.store import APPLICATION_ID, SCHEMA_VERSION
from tests.helpers import ROOT, child_env, pieces_for, query, reply_for, sha256

Cli = Callable[..., tuple[int, str, str]]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
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
    return lambda command, *rest: run(command, *common, *rest)


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
    assert cli("show", "999") == (EXIT_FAILED, "", "chat-tui: There is no session 999.\n")

    code, out, err = cli("ask", "this will fail [[status=500]]")
    assert code == EXIT_FAILED and out == ""
    assert err.startswith("chat-tui: The server at ") and err.endswith("failed (500). Try again in a moment.\n")
    assert err.count("\n") == 1
    assert messages(db)[-1][3:] == ("assistant", "", "error")

    code, out, err = cli("ask", "cut short [[cut_after=3]]")
    assert code == EXIT_FAILED
    assert out == "".join(pieces_for("cut short", 20)[:3]) + "\n"
    assert err == "chat-tui: The connection dropped mid-reply; the partial reply was kept.\n"


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


@pytest.mark.parametrize(
    ("make", "words"),
    [(_not_sqlite, "is not a SQLite database"), (_newer, "newer chat-tui"), (_foreign, "of another program")],
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
        text=True,
    )
    try:
        assert process.stdout is not None
        head = process.stdout.read(40)  # the reply has begun streaming to stdout
        process.send_signal(signal.SIGINT)
        rest, err = process.communicate(timeout=20)
    finally:
        process.kill()
        process.wait()

    assert process.returncode == EXIT_INTERRUPTED, err
    assert err.strip().endswith("chat-tui: interrupted; the partial reply was saved.")
    assert "Traceback" not in err
    (_, _, _, _, content, status) = messages(db)[-1]
    assert status == "interrupted"
    assert content.startswith(head + rest) and len(head) == 40
    assert reply_for(prompt, 400).startswith(content) and content != reply_for(prompt, 400)


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
