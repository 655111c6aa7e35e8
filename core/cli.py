"""The headless command line: ``chat-tui ask/list/show/export/search`` over the same engine and store.

Only argparse is imported at module level, so ``--help`` and ``--version`` answer at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from core.config import Settings
    from core.engine import ChatEngine
    from core.models import Message
    from core.store import Store

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
READ_ONLY_COMMANDS = frozenset({"list", "show", "export", "search"})
"""Commands that only read the history: they must not create a database where there is none."""
DEMO_TOKENS_PER_SECOND = 80.0
"""The demo server's pace: fast enough to feel alive, slow enough to see replies stream and to switch tabs."""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("chat-tui")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree that was never installed
        return "unknown"


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked: importing importlib.metadata costs ~15 ms of every start."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: object) -> None:
        super().__init__(option_strings, dest=dest, default=argparse.SUPPRESS, nargs=0, help="show the version")

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(f"chat-tui {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    # The global options live in a parent parser with SUPPRESS defaults, so they work before or after a command.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    common.add_argument("--db", metavar="PATH", help="history database file (env CHAT_TUI_DB)")
    common.add_argument("--profile", metavar="NAME", help="model profile from the config file (env CHAT_TUI_PROFILE)")
    common.add_argument(
        "--model", "-m", metavar="NAME", help="a profile name, or a model for the chosen profile (env CHAT_TUI_MODEL)"
    )
    common.add_argument("--base-url", metavar="URL", help="OpenAI-compatible server URL (env OPENAI_BASE_URL)")
    common.add_argument("--config", metavar="PATH", help="config file (env CHAT_TUI_CONFIG)")
    common.add_argument(
        "--demo", action="store_true", help="use the bundled local server and a demo database: no key, no network"
    )

    parser = argparse.ArgumentParser(
        prog="chat-tui",
        description="A terminal chat client for LLMs. Without a command, opens the app.",
        parents=[common],
    )
    parser.add_argument("--version", action=_VersionAction)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    ask = commands.add_parser("ask", parents=[common], help="send a prompt, stream the reply to stdout, save the turn")
    where = ask.add_mutually_exclusive_group()
    where.add_argument("--session", "-s", type=int, metavar="ID", help="continue this session")
    where.add_argument("-c", "--continue", dest="cont", action="store_true", help="continue the most recent session")
    ask.add_argument("text", metavar="TEXT", help="the prompt; '-' reads it from standard input")

    listing = commands.add_parser("list", parents=[common], help="list sessions, most recent first")
    listing.add_argument("--limit", type=int, default=50)
    listing.add_argument("--archived", action="store_true", help="list archived sessions instead")
    listing.add_argument("--json", action="store_true")

    show = commands.add_parser("show", parents=[common], help="print a session's latest branch")
    show.add_argument("session", type=int, metavar="ID")
    show.add_argument("--json", action="store_true")

    export = commands.add_parser("export", parents=[common], help="export a session's latest branch")
    export.add_argument("session", type=int, metavar="ID")
    export.add_argument("--format", "-f", choices=("md", "json"), default="md")
    export.add_argument("-o", "--output", metavar="FILE", help="write here instead of stdout")

    search = commands.add_parser("search", parents=[common], help="full-text search over all messages")
    search.add_argument("query", nargs="+")
    search.add_argument("--limit", type=int, default=20)
    search.add_argument("--json", action="store_true")
    return parser


def settings_from_args(args: argparse.Namespace) -> Settings:
    from core.config import load_settings

    return load_settings(
        db=getattr(args, "db", None),
        profile=getattr(args, "profile", None),
        model=getattr(args, "model", None),
        base_url=getattr(args, "base_url", None),
        config=getattr(args, "config", None),
        demo=getattr(args, "demo", False),
    )


@contextmanager
def demo_server(settings: Settings, *, tps: float = DEMO_TOKENS_PER_SECOND) -> Iterator[Settings]:
    """Start the bundled local server when in demo mode, and point the demo profile at it."""
    if not settings.demo:
        yield settings
        return
    from core.server import LocalServer, ServerOptions

    with LocalServer(ServerOptions(tps=tps, tokens=260, sample=True)) as server:
        yield settings.with_demo_server(server.url)


def run_command(args: argparse.Namespace, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run one headless command; returns the process exit code. Errors are one plain line on stderr."""
    import asyncio  # not at module level: the app's splash is drawn before asyncio's ~40 ms import

    from core.errors import ChatError, StoreError

    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        settings = settings_from_args(args)
        if args.command in READ_ONLY_COMMANDS and not settings.db_path.exists():
            # Opening the store creates the file and its folders: a mistyped --db would leave an empty database.
            raise StoreError(f"There is no database at {settings.db_path} (the first chat makes it).")
        with demo_server(settings) as settings:
            code = asyncio.run(_dispatch(args, settings, out, err))
        out.flush()  # here, not at exit, so that a reader gone away is caught below
        return code
    except ChatError as exc:
        print(f"chat-tui: {exc}", file=err)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("\nchat-tui: interrupted; the partial reply was saved.", file=err)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``| head -1``): stop without a word, as other Unix tools do. A reply still
        # streaming was saved as interrupted when the engine closed.
        return EXIT_FAILED


def _shown_on(out: TextIO) -> Callable[[str], str]:
    """How model text reaches ``out``: controls and escape sequences made inert on a terminal, as is elsewhere."""
    from core.text import inert

    return inert if out.isatty() else str


async def _dispatch(args: argparse.Namespace, settings: Settings, out: TextIO, err: TextIO) -> int:
    from core.engine import ChatEngine

    async with ChatEngine.open(settings) as engine:
        handler = {"ask": _ask, "list": _list, "show": _show, "export": _export, "search": _search}[args.command]
        return await handler(engine, args, out, err)


async def _ask(engine: ChatEngine, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from core.engine import ReplyDelta, ReplyFailed

    try:
        text = sys.stdin.read() if args.text == "-" else args.text
        text.encode("utf-8")  # undecodable bytes (from argv or a lenient stdin) arrive as lone surrogates
    except UnicodeError:
        print("chat-tui: the prompt is not valid UTF-8.", file=err)
        return EXIT_FAILED
    if not text.strip():
        print("chat-tui: the prompt is empty.", file=err)
        return EXIT_USAGE
    store = engine.store
    session = None
    if args.session is not None:
        session = await store.get_session(args.session)
    elif args.cont:
        session = await store.latest_session()
    # A missing key fails here, before a new session is made: a failed ask leaves no empty chat behind.
    profile = await engine.profile_for(session.id) if session is not None else engine.settings.profile()
    profile.resolve_key(engine.settings.environ)
    if session is None:
        session = await store.create_session()
    parent = await _continue_from(store, session.id)
    engine.preload()
    turn = await engine.send(session.id, text, parent_id=parent)
    show = _shown_on(out)
    async for event in turn:
        if isinstance(event, ReplyDelta):
            out.write(show(event.text))
            out.flush()
        elif isinstance(event, ReplyFailed):
            out.write("\n" if event.message.content else "")
            print(f"chat-tui: {event.error}", file=err)
            return EXIT_FAILED
    out.write("\n")
    return EXIT_OK


async def _continue_from(store: Store, session_id: int) -> int | None:
    """Where a new turn goes: after the session's newest message, unless that is a reply still streaming (another
    process's turn). Chained under it, the turn would be saved after a reply its request never included: it
    becomes a sibling of that turn instead, a branch, as concurrent turns always do."""
    from core.models import Status

    leaf = await store.latest_leaf(session_id)
    if leaf is None:
        return None
    newest = await store.get_message(leaf)
    if newest.status is not Status.STREAMING or newest.parent_id is None:
        return leaf
    return (await store.get_message(newest.parent_id)).parent_id


async def _branch(engine: ChatEngine, session_id: int) -> list[Message]:
    await engine.store.get_session(session_id)  # NotFound for a wrong id
    leaf = await engine.store.latest_leaf(session_id)
    return await engine.store.path(leaf) if leaf is not None else []


async def _list(engine: ChatEngine, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import json
    from dataclasses import asdict

    show = _shown_on(out)  # titles come from prompts and replies
    sessions = await engine.store.list_sessions(limit=args.limit, archived=args.archived)
    if args.json:
        out.write(show(json.dumps([asdict(s) for s in sessions], ensure_ascii=False, indent=2)) + "\n")
        return EXIT_OK
    for s in sessions:
        when = s.updated_at[:16].replace("T", " ")
        out.write(show(f"{s.id:>6}  {when}  {s.message_count:>4} msgs  {s.display_title}") + "\n")
    if not sessions:  # on stderr: a script reading the list still gets an empty one
        print("No archived conversations." if args.archived else "No conversations yet.", file=err)
    return EXIT_OK


async def _show(engine: ChatEngine, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from core.export import to_json, to_markdown

    session = await engine.store.get_session(args.session)
    messages = await _branch(engine, args.session)
    text = to_json(session, messages) if args.json else to_markdown(session, messages)
    out.write(_shown_on(out)(text) + ("\n" if args.json else ""))
    return EXIT_OK


async def _export(engine: ChatEngine, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from core.export import to_json, to_markdown

    session = await engine.store.get_session(args.session)
    messages = await _branch(engine, args.session)
    text = to_json(session, messages) + "\n" if args.format == "json" else to_markdown(session, messages)
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as fh:
                fh.write(text)
        except OSError as exc:
            print(f"chat-tui: Cannot write {args.output}: {exc.strerror}.", file=err)
            return EXIT_FAILED
        print(f"Exported session {session.id} to {args.output}", file=err)
    else:
        out.write(_shown_on(out)(text))
    return EXIT_OK


async def _search(engine: ChatEngine, args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    import json
    from dataclasses import asdict

    show = _shown_on(out)
    hits = await engine.store.search(" ".join(args.query), limit=args.limit)
    if args.json:
        out.write(show(json.dumps([asdict(h) for h in hits], ensure_ascii=False, indent=2)) + "\n")
        return EXIT_OK
    for h in hits:
        title = h.session_title or "New chat"
        out.write(show(f"{h.session_id:>6}:{h.message_id:<6} {title[:30]:<30}  {' '.join(h.snippet.split())}") + "\n")
    return EXIT_OK if hits else EXIT_FAILED
