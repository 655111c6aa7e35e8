"""End-to-end benchmark of the chat-tui app in a real terminal: prints figures, asserts nothing.

Run:  /work/venv/bin/python benchmarks/bench_tui.py [--runs 5] [--only NAME[,NAME...]] [-v] [--nice N] [--keep]
NAME: startup, full, paced, tabs8, long (default: all; about 8 minutes with --runs 5, most of it waiting on
paced streams: a 2,000-token reply at 200 tokens/s, eight tabs reaching 2,000 tokens at 100 tokens/s, and
100 page loads to the top of a 10,000-message session).

How it drives the app
  * tmux, detached, a private server (own socket in a temp dir), one 160x48 pane, TERM=xterm-256color,
    status line off. The app is the real entry point, `python -m tui` (tui/__main__.py), started in that
    pane with `--db` in a temp dir and `--base-url <local server> --model demo` (or `--demo` for start-up),
    with XDG_CONFIG_HOME/XDG_DATA_HOME in the temp dir so no user config or history is read.
  * The screen is read with `capture-pane -p` through one tmux control-mode client (benchmarks/_tmux.py): a
    poll costs well under a millisecond and spawns no process. The control client is told about every read
    tmux makes of the app's output (%output); the pane is captured after each such notification and at
    least every 5 ms (2 ms for key latency), and a change is dated by the last %output tmux reported before
    the capture that first showed it. Times are time.monotonic() (CLOCK_MONOTONIC, shared by all processes).
  * The server is core.server's LocalServer in its own process (benchmarks/_server.py: `python -m
    core.server` plus one JSON line per request with the monotonic time of its first and last byte).
    Prompts carry directives such as [[tokens=2000 tps=200]]; replies are deterministic, so the last line
    of a reply is known in advance: `reply_text(strip_directives(prompt), tokens)`.
  * Prompts are put in the prompt box with a bracketed paste (tmux paste-buffer -p), then Enter is sent.
  * "Fully rendered" = the reply's last line (Markdown markup removed, whitespace and the gutter/scrollbar
    block characters normalised, so a wrapped line still matches) is on screen and the status line no
    longer says "streaming…".
  * CPU = utime + stime of the app process from /proc/PID/stat (all threads; 10 ms ticks);
    RSS = VmRSS from /proc/PID/status, in MiB. "Settled" = the app used < 4% of a core over 0.5 s.
  * Before the scenarios, one unreported warm-up: `--demo`, then a 40-token reply, so that byte-code is
    compiled (into a cache in the temp dir, PYTHONPYCACHEPREFIX: nothing is written to the work tree) and
    files are in the page cache, as for an installed app that has run before.
  * Each scenario is wrapped so that a failure (a timeout, an app crash) is printed with the screen at that
    moment and the next scenario still runs; the tmux server, the app and the server are ended in `finally`.

Figures (floors from the issue; peers for scale: elia starts in 0.55 s, oterm 4.5 s; one 2,000-token reply
costs elia 19 CPU-s, oterm 7):
  startup  `chat-tui --demo`, a new db each run (a first start: migrations included):
           start.header_s   respawn of the pane -> "chat-tui" (the Header) on screen          floor 0.35 s
                            (the splash, tui/splash.py, drawn before Textual is imported: the header on
                            the theme's colours; Textual's first frame then paints over it)
           start.first_frame_s  -> anything on screen
           start.prompt_s   -> the prompt's placeholder on screen: Textual's first frame, the app usable (info)
           start.textual_baseline_s  the same for benchmarks/_baseline_app.py, a Textual app of a Header,
                            a TextArea and a Footer only: what Textual itself needs here        (info)
           rss.start_mib    VmRSS at first frame + 2 s (the model client preloads after the first frame)
                                                                                              floor 120 MiB
  full     one 2,000-token Markdown reply at full server speed ([[tokens=2000 tps=0]]), the first reply of a
           freshly started app; the prompt is pasted, the app settles, then Enter:
           full.render_after_last_byte_s  fully rendered - the server's last byte (the "end" line of
                                           benchmarks/_server.py, stamped after the last write)  floor 1 s
           full.render_after_db_complete_s  fully rendered - the reply row turning `complete` in the db
                                           (sqlite3 read-only polling every 5 ms)               (info)
           full.cpu_s        app CPU from just before Enter to fully rendered                floor 1.5 CPU-s
           full.cpu_incl_start_s  app CPU from its start to fully rendered                   (info)
           full.wall_s       Enter -> fully rendered                                          (info)
           idle.cpu_share    app CPU share over 1 s, settled, prompt focused (cursor blink) (info)
  paced    the same length at 200 tokens/s, then a hidden tab:
           paced200.cpu_share  app CPU / wall time between the server's first and last byte  floor 0.15
           paced200.cpu_share_enter_to_render  the same from Enter to fully rendered          (info)
           hidden100.cpu_share  a [[tokens=2000 tps=100]] reply sent in tab 1, ctrl+t opens tab 2 (tab 1
                              hidden); after the new tab shows and 0.7 s more, CPU share over 4 s while only
                              the hidden tab streams (checked: its stream has not ended)       floor 0.05
  tabs8    8 tabs, each streaming at 100 tokens/s (tab 2: 2,000 tokens, the others 3,000); tab 8 active:
           tabs8.key_p95_ms / tabs8.key_max_ms  40 keypresses ~100 ms apart: send-keys of a character into
                              the prompt -> the prompt's text (a unique growing string) shows it (polled
                              every 2 ms)                                       floors 50 ms / 150 ms
           rss.8tabs_mib      VmRSS once every tab's reply is at >= 2,000 tokens              floor 200 MiB
           then ctrl+pagedown from tab 8 to tab 1, 2, ..., 7 in turn, 0.3 s apart:
           tabs8.switch_done_ms  -> tab 2's reply (2,000 tokens, completed while hidden) fully rendered
                                                                                                floor 100 ms
           tabs8.switch_streaming_ms  -> tab 1, 3..7's reply (2,000-2,700 tokens, still streaming while hidden)
                              shows text at or past a line read from its db row just before the switch (the
                              row is flushed every 0.5 s, so it is a lower bound of what the tab holds): one
                              of the row's last 10 lines; positions are found by matching screen rows against
                              the known reply text (ReplyTracker)                                floor 100 ms
  load.*   mean number of cores that processes other than the benchmark's own (app, server, tmux, this
           script) kept busy during the scenario: other work on the machine skews latencies     (info)
  long     a db with one 10,000-message session (alternating user/assistant Markdown, 20 add_messages
           batches of 500) restored as the open tab via app_state "open_tabs":
           long.open_s          a first start (no picture of the screen kept yet): respawn -> the last
                              message's text on screen (Textual's first frame)                 floor 0.3 s
           long.open_after_first_frame_s  first frame (the splash) -> the last message's text on screen (info)
           then ctrl+q (at rest: the picture of the screen is kept, tui/picture.py) and a start again:
           long.open_again_s    respawn -> the last message's text on screen (the splash draws the picture)
                                                                                                floor 0.3 s
           long.usable_s        respawn -> keys sent right after it show in the prompt (the splash holds
                              them, Textual reads them once it runs)                           (info)
           long.open_in_app_ms  then the same session opened in the running app: ctrl+w closes its tab, ctrl+o
                              opens the session browser, Down selects it, Enter -> the last message's text on
                              screen (the browser closed, a tab built, the last page read and rendered)
                                                                                                floor 300 ms
           long.pageup_p95_ms / long.pageup_max_ms  shift+tab focuses the message list, then 30 PageUps
                              ~50 ms apart from the bottom (crossing earlier-page loads); each: send-keys ->
                              the message rows change (a press that changes nothing within 150 ms is sent
                              again; the latency counts from the first send)                   floor 100 ms
           long.home_p95_ms / long.home_max_ms  then Home (one press goes to the first message, bringing in
                              the earlier ones 1,000 at a time, each time showing the first loaded) pressed
                              again until "Question 00000" shows; each: send-keys -> a lower "Question N" on
                              screen (re-sent as above; 30 ms between presses)                  floor 100 ms
           long.to_top_s        the whole Home walk, first press -> the first message on screen  (info)
           rss.long_mib         VmRSS at the end of the walk (all 10,000 messages loaded)       (info)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _tmux import CpuSampler, LoadMonitor, Tmux, WaitTimeout, alive, cpu_seconds, end_process, rss_mib  # noqa: E402

from core.server import reply_text, strip_directives  # noqa: E402

HERE = Path(__file__).resolve().parent
PYTHON = sys.executable
WIDTH, HEIGHT = 160, 48
HEADER = "chat-tui"
PLACEHOLDER = "Message… (Enter to send"
EMPTY_HINT = "Ask anything. Enter sends"
STREAMING = "streaming…"
SCENARIOS = ("startup", "full", "paced", "tabs8", "long")

# name -> (floor, unit); None: reported for information.
FLOORS: dict[str, tuple[float | None, str]] = {
    "start.header_s": (0.35, "s"),
    "start.prompt_s": (None, "s"),
    "start.first_frame_s": (None, "s"),
    "start.textual_baseline_s": (None, "s"),
    "rss.start_mib": (120, "MiB"),
    "full.render_after_last_byte_s": (1.0, "s"),
    "full.render_after_db_complete_s": (None, "s"),
    "full.cpu_s": (1.5, "CPU-s"),
    "full.cpu_incl_start_s": (None, "CPU-s"),
    "full.wall_s": (None, "s"),
    "idle.cpu_share": (None, "core"),
    "paced200.cpu_share": (0.15, "core"),
    "paced200.cpu_share_enter_to_render": (None, "core"),
    "hidden100.cpu_share": (0.05, "core"),
    "tabs8.key_p95_ms": (50, "ms"),
    "tabs8.key_max_ms": (150, "ms"),
    "tabs8.key_median_ms": (None, "ms"),
    "rss.8tabs_mib": (200, "MiB"),
    "tabs8.switch_done_ms": (100, "ms"),
    "tabs8.switch_streaming_ms": (100, "ms"),
    "long.open_s": (0.3, "s"),
    "long.open_after_first_frame_s": (None, "s"),
    "long.open_again_s": (0.3, "s"),
    "long.usable_s": (None, "s"),
    "long.open_in_app_ms": (300, "ms"),
    "long.pageup_p95_ms": (100, "ms"),
    "long.pageup_max_ms": (100, "ms"),
    "long.home_p95_ms": (100, "ms"),
    "long.home_max_ms": (100, "ms"),
    "long.to_top_s": (None, "s"),
    "rss.long_mib": (None, "MiB"),
    **{f"load.{name}": (None, "cores") for name in ("startup", "full", "paced", "tabs8", "long")},
}

VERBOSE = False
NICE = ""
"""`nice -n N ` before the app's command line with --nice."""
MONITOR: LoadMonitor | None = None


def log(*parts: object) -> None:
    print(*parts, file=sys.stderr, flush=True)


def debug(*parts: object) -> None:
    if VERBOSE:
        log("   ", *parts)


# --------------------------------------------------------------------------------------------------------------
# Screen text


_BLOCKS = re.compile(r"[\u2580-\u259f]")  # ▌ gutter, ▍ streaming mark, scrollbar pieces
_SPACES = re.compile(r"\s+")


def normalise(screen: str) -> str:
    """The screen as one line of words: block characters (gutter, scrollbar) dropped, whitespace collapsed."""
    return _SPACES.sub(" ", _BLOCKS.sub(" ", screen))


def plain_line(line: str) -> str:
    """A Markdown prose or list line as Rich shows it: no list marker, no ** or ` markup."""
    line = re.sub(r"^\s*(?:[-+*]|\d{1,9}[.)])\s+", "", line)
    return _SPACES.sub(" ", line.replace("**", "").replace("`", "")).strip()


def signature_of(line: str, words: int = 9) -> str:
    return " ".join(plain_line(line).split()[-words:])


def last_line_signature(text: str) -> str:
    """What the last line of a finished reply looks like on screen (its last words)."""
    return signature_of(text.rstrip().split("\n")[-1])


def plain_text(markdown: str) -> str:
    """Markdown as its words show on screen, in order, as one line (markup and table pipes dropped)."""
    lines = []
    for line in markdown.split("\n"):
        stripped = line.strip()
        if stripped.startswith(("```", "~~~")) or (stripped and set(stripped) <= set("|-: ")):
            continue
        if stripped.startswith("|"):
            stripped = " ".join(cell.strip() for cell in stripped.strip("|").split("|"))
        lines.append(plain_line(stripped.lstrip("#")))
    return _SPACES.sub(" ", " ".join(lines)).strip()


_ROW_PREFIX = re.compile(r"^(?:•|\d{1,3})\s+")


class ReplyTracker:
    """Where in a known reply the screen is, by the screen rows that occur exactly once in the reply's text.

    Screen rows are cut at spaces, so each row of a reply (gutter, bullet and number dropped, whitespace
    collapsed) is a substring of `plain_text(reply)`; template code lines repeat and are ignored.
    """

    def __init__(self, full_markdown: str) -> None:
        self.plain = plain_text(full_markdown)

    def position_of(self, fragment: str) -> int | None:
        """Offset of `fragment` in the reply's plain text when it occurs there exactly once."""
        first = self.plain.find(fragment)
        if first < 0 or self.plain.find(fragment, first + 1) >= 0:
            return None
        return first

    def rows(self, screen: str) -> list[tuple[int, str]]:
        """(offset, text) of the message-list rows that occur once in the reply."""
        found = []
        for row in screen.split("\n")[3:-6]:
            fragment = _ROW_PREFIX.sub("", normalise(row).strip())
            if len(fragment.split()) >= 3 and (position := self.position_of(fragment)) is not None:
                found.append((position, fragment))
        return found

    def screen_end(self, screen: str) -> int:
        """Offset of the end of the furthest unique row on screen (-1: none)."""
        return max((position + len(text) for position, text in self.rows(screen)), default=-1)

    def target(self, partial_markdown: str) -> int | None:
        """Offset of a line near the end of a partial reply's complete lines (the newest line that can be told
        apart: one of its last 10 non-blank lines with at least 4 words that occurs once), else None."""
        lines = [line for line in partial_markdown[: partial_markdown.rfind("\n") + 1].split("\n") if line.strip()]
        for line in reversed(lines[-10:]):
            words = plain_text(line)
            if len(words.split()) >= 4 and (position := self.position_of(words)) is not None:
                return position
        return None

    def reached(self, target: int) -> Callable[[str], bool]:
        """A predicate: the screen shows a row of the reply that contains or follows offset `target`."""
        return lambda screen: self.screen_end(screen) > target


def prompt_box(screen: str) -> str:
    """The bottom of the screen: the prompt box, the status line and the footer."""
    return "\n".join(screen.split("\n")[-6:])


def message_rows(screen: str) -> str:
    """The rows of the message list, without the scrollbar column."""
    lines = screen.split("\n")
    return "\n".join(line[: WIDTH - 2] for line in lines[3:-6])


# --------------------------------------------------------------------------------------------------------------
# Processes


class Server:
    """benchmarks/_server.py in its own process; collects its start/end lines."""

    def __init__(self, workdir: Path, nice: int = 0) -> None:
        self.proc = subprocess.Popen(
            [*(["nice", "-n", str(nice)] if nice else []), PYTHON, str(HERE / "_server.py"), "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=open(workdir / "server.err", "w"),  # noqa: SIM115
            text=True,
            cwd=workdir,
        )
        assert self.proc.stdout is not None
        self.url = self.proc.stdout.readline().strip()
        if not self.url.startswith("http"):
            raise RuntimeError(f"server did not start: {self.url!r}")
        self.events: list[dict[str, object]] = []
        self._cond = threading.Condition()
        threading.Thread(target=self._read, name="server-reader", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            with self._cond:
                self.events.append(event)
                self._cond.notify_all()

    def find(self, kind: str, prompt: str) -> dict[str, object] | None:
        with self._cond:
            return next((e for e in reversed(self.events) if e["event"] == kind and e["prompt"] == prompt), None)

    def wait(self, kind: str, prompt: str, timeout: float) -> float:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                event = next((e for e in reversed(self.events) if e["event"] == kind and e["prompt"] == prompt), None)
                if event is not None:
                    return float(event["t"])  # type: ignore[arg-type]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"server: no {kind} for {prompt!r}")
                self._cond.wait(left)

    def close(self) -> None:
        end_process(self.proc.pid)
        self.proc.wait(5)


def base_env(workdir: Path) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CHAT_TUI_", "OPENAI_", "TEXTUAL", "TMUX", "NO_COLOR", "COLUMNS", "LINES"))
    }
    env.update(
        TERM="xterm-256color",
        LANG="C.UTF-8",
        LC_ALL="C.UTF-8",
        XDG_CONFIG_HOME=str(workdir / "config"),
        XDG_DATA_HOME=str(workdir / "data"),
        # Byte-code as an installed app has it: compiled on the first (warm-up) run, kept out of the work tree.
        PYTHONPYCACHEPREFIX=str(workdir / "pycache"),
    )
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


@dataclass
class RunningApp:
    tmux: Tmux
    pid: int
    start: float
    db: Path

    def quit(self) -> None:
        try:
            if alive(self.pid):
                self.tmux.send_keys("C-q")
                deadline = time.monotonic() + 5
                while time.monotonic() < deadline and alive(self.pid):
                    time.sleep(0.02)
        finally:
            end_process(self.pid)
            self.tmux.blank()


def launch(tmux: Tmux, workdir: Path, *args: str, db: Path | None = None) -> RunningApp:
    workdir.mkdir(parents=True, exist_ok=True)
    db = db or workdir / "chat.sqlite3"
    command = " ".join([f"exec {NICE}{PYTHON} -m tui --db {db}", *args])
    start, pid = tmux.respawn(command, cwd=workdir)
    if MONITOR is not None:
        MONITOR.add(pid)
    return RunningApp(tmux, pid, start, db)


def wait_idle(
    pid: int, *, not_before: float = 0.0, window: float = 0.5, share: float = 0.04, timeout: float = 8.0
) -> None:
    """Wait until the process used less than `share` of a core over `window` seconds (and `not_before`)."""
    deadline = time.monotonic() + timeout
    samples: list[tuple[float, float]] = []
    while True:
        now = time.monotonic()
        samples.append((now, cpu_seconds(pid)))
        old = [s for s in samples if s[0] <= now - window]
        if now >= not_before and old:
            t0, c0 = old[-1]
            if (samples[-1][1] - c0) / (now - t0) < share:
                return
        if now >= deadline:
            debug(f"wait_idle: not idle after {timeout} s")
            return
        time.sleep(0.05)


def screen_has(*texts: str) -> Callable[[str], bool]:
    return lambda screen: all(t in screen for t in texts)


def reply_done(signature: str) -> Callable[[str], bool]:
    return lambda screen: signature in normalise(screen) and STREAMING not in screen


def type_prompt(tmux: Tmux, text: str, timeout: float = 10.0) -> None:
    """Put `text` in the prompt (a bracketed paste: one event, where typing would be one per character)."""
    tmux.paste(text)
    tmux.wait_for(lambda s: text in prompt_box(s), timeout=timeout, what=f"prompt {text!r} pasted")


def read_only(db: Path) -> closing[sqlite3.Connection]:
    """The app's database, read-only, as another process reads it."""
    return closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=2))


def db_state(db: Path, key: str) -> str | None:
    """An app-state value."""
    with read_only(db) as connection:
        row = connection.execute("SELECT value FROM app_state WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def db_reply(db: Path, prompt: str) -> tuple[str, str] | None:
    """(status, content) of the newest reply to `prompt`."""
    with read_only(db) as connection:
        row = connection.execute(
            "SELECT a.status, a.content FROM messages a JOIN messages u ON a.parent_id = u.id "
            "WHERE u.content = ? AND a.role = 'assistant' ORDER BY a.id DESC LIMIT 1",
            (prompt,),
        ).fetchone()
    return (row[0], row[1]) if row else None


class DbWatcher:
    """Polls the db read-only every `interval` s; records when the reply to `prompt` is first `complete`."""

    def __init__(self, db: Path, prompt: str, interval: float = 0.005) -> None:
        self.db, self.prompt, self.interval = db, prompt, interval
        self.complete_at: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        with read_only(self.db) as connection:
            while not self._stop.is_set():
                try:
                    row = connection.execute(
                        "SELECT a.status FROM messages a JOIN messages u ON a.parent_id = u.id "
                        "WHERE u.content = ? AND a.role = 'assistant' ORDER BY a.id DESC LIMIT 1",
                        (self.prompt,),
                    ).fetchone()
                except sqlite3.Error:
                    row = None
                if row and row[0] == "complete":
                    self.complete_at = time.monotonic()
                    return
                self._stop.wait(self.interval)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)


# --------------------------------------------------------------------------------------------------------------
# Results


@dataclass
class Results:
    values: dict[str, list[float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)
        debug(f"{name} = {value:.4g}")

    def note(self, text: str) -> None:
        self.notes.append(text)
        log(f"  note: {text}")


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = max(0, min(len(ordered) - 1, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


# --------------------------------------------------------------------------------------------------------------
# Scenarios


@dataclass
class Context:
    tmux: Tmux
    server: Server
    tmp: Path
    runs: int
    results: Results
    monitor: LoadMonitor


def scenario_startup(ctx: Context) -> None:
    for run in range(ctx.runs):
        # Textual alone: a Header, a TextArea and a Footer, started the same way.
        workdir = ctx.tmp / f"baseline-{run}"
        workdir.mkdir()
        start, pid = ctx.tmux.respawn(f"exec {NICE}{PYTHON} {HERE / '_baseline_app.py'}", cwd=workdir)
        try:
            seen, _ = ctx.tmux.wait_for(screen_has(PLACEHOLDER), timeout=20, what="the baseline app", since=start)
            ctx.results.add("start.textual_baseline_s", seen - start)
        finally:
            # Quit as a user does (ctrl+q): killing the app outright crashed tmux 3.3a's server now and then.
            RunningApp(ctx.tmux, pid, start, workdir).quit()

        app = launch(ctx.tmux, ctx.tmp / f"startup-{run}", "--demo", db=ctx.tmp / f"startup-{run}" / "demo.sqlite3")
        try:
            times = ctx.tmux.wait_all(
                {"frame": lambda s: bool(s.strip()), "header": screen_has(HEADER), "prompt": screen_has(PLACEHOLDER)},
                timeout=20,
                since=app.start,
            )
            time.sleep(max(0.0, times["header"] + 2.0 - time.monotonic()))
            rss = rss_mib(app.pid)
        finally:
            app.quit()
        ctx.results.add("start.header_s", times["header"] - app.start)
        ctx.results.add("start.prompt_s", times["prompt"] - app.start)
        ctx.results.add("start.first_frame_s", times["frame"] - app.start)
        ctx.results.add("rss.start_mib", rss)


def warm_up(ctx: Context) -> None:
    """One unreported start and send, so that byte-code is compiled into the cache and files are in the page cache,
    as for an installed app: `--demo` (the start-up path, the bundled server) and one short reply (the model
    client's modules, imported on the first send)."""
    app = launch(ctx.tmux, ctx.tmp / "warm-up", "--demo", db=ctx.tmp / "warm-up" / "demo.sqlite3")
    try:
        seen, _ = ctx.tmux.wait_for(screen_has(PLACEHOLDER), timeout=30, what="the warm-up's first frame")
        debug(f"warm-up: first frame after {seen - app.start:.3f} s")
        wait_idle(app.pid, not_before=seen + 1.0, timeout=15)
        prompt = "Warm-up [[tokens=40 tps=0]]"
        type_prompt(ctx.tmux, prompt)
        ctx.tmux.send_keys("Enter")
        signature = last_line_signature(reply_text(strip_directives(prompt), 40))
        ctx.tmux.wait_for(reply_done(signature), timeout=30, what="the warm-up reply")
    finally:
        app.quit()


def _ready(ctx: Context, app: RunningApp) -> float:
    """Wait for the prompt, then for the app to settle (the model client preloads after the first frame)."""
    seen, _ = ctx.tmux.wait_for(screen_has(PLACEHOLDER), timeout=20, what="first frame", since=app.start)
    wait_idle(app.pid, not_before=seen + 1.0, timeout=10)
    return seen


def scenario_full(ctx: Context) -> None:
    prompt = "Benchmark one reply at full speed [[tokens=2000 tps=0]]"
    signature = last_line_signature(reply_text(strip_directives(prompt), 2000))
    for run in range(ctx.runs):
        app = launch(ctx.tmux, ctx.tmp / f"full-{run}", "--base-url", ctx.server.url, "--model", "demo")
        watcher = None
        try:
            _ready(ctx, app)
            c0, t0 = cpu_seconds(app.pid), time.monotonic()
            time.sleep(1.0)
            ctx.results.add("idle.cpu_share", (cpu_seconds(app.pid) - c0) / (time.monotonic() - t0))
            type_prompt(ctx.tmux, prompt)
            wait_idle(app.pid, timeout=5)
            watcher = DbWatcher(app.db, prompt)
            cpu_before = cpu_seconds(app.pid)
            sent = ctx.tmux.send_keys("Enter")
            done, _ = ctx.tmux.wait_for(
                reply_done(signature), timeout=60, what="the full-speed reply", poll=0.005, since=sent
            )
            cpu_after = cpu_seconds(app.pid)
            last_byte = ctx.server.wait("end", prompt, timeout=5)
            ctx.results.add("full.render_after_last_byte_s", done - last_byte)
            if watcher.complete_at is not None:
                ctx.results.add("full.render_after_db_complete_s", done - watcher.complete_at)
            ctx.results.add("full.cpu_s", cpu_after - cpu_before)
            ctx.results.add("full.cpu_incl_start_s", cpu_after)
            ctx.results.add("full.wall_s", done - sent)
        finally:
            if watcher is not None:
                watcher.stop()
            app.quit()


def scenario_paced(ctx: Context) -> None:
    for run in range(ctx.runs):
        prompt = f"Benchmark one reply at 200 tokens per second, run {run} [[tokens=2000 tps=200]]"
        hidden_prompt = f"Benchmark a hidden tab at 100 tokens per second, run {run} [[tokens=2000 tps=100]]"
        signature = last_line_signature(reply_text(strip_directives(prompt), 2000))
        app = launch(ctx.tmux, ctx.tmp / f"paced-{run}", "--base-url", ctx.server.url, "--model", "demo")
        sampler = None
        try:
            _ready(ctx, app)
            type_prompt(ctx.tmux, prompt)
            wait_idle(app.pid, timeout=5)
            sampler = CpuSampler(app.pid).start()
            cpu_before = cpu_seconds(app.pid)
            sent = ctx.tmux.send_keys("Enter")
            done, _ = ctx.tmux.wait_for(
                reply_done(signature), timeout=60, what="the 200 tokens/s reply", poll=0.005, since=sent
            )
            cpu_after = cpu_seconds(app.pid)
            first_byte = ctx.server.wait("start", prompt, timeout=5)
            last_byte = ctx.server.wait("end", prompt, timeout=5)
            time.sleep(0.05)
            sampler.stop()
            share = (sampler.at(last_byte) - sampler.at(first_byte)) / (last_byte - first_byte)
            ctx.results.add("paced200.cpu_share", share)
            ctx.results.add("paced200.cpu_share_enter_to_render", (cpu_after - cpu_before) / (done - sent))

            # A hidden tab streaming at 100 tokens/s.
            wait_idle(app.pid, timeout=5)
            type_prompt(ctx.tmux, hidden_prompt)
            ctx.tmux.send_keys("Enter")
            ctx.tmux.wait_for(screen_has(STREAMING), timeout=10, what="the hidden tab's stream to start")
            ctx.server.wait("start", hidden_prompt, timeout=10)
            ctx.tmux.send_keys("C-t")
            ctx.tmux.wait_for(lambda s: EMPTY_HINT in s and STREAMING not in s, timeout=10, what="the new tab")
            time.sleep(0.7)
            c0, t0 = cpu_seconds(app.pid), time.monotonic()
            time.sleep(4.0)
            c1, t1 = cpu_seconds(app.pid), time.monotonic()
            end = ctx.server.find("end", hidden_prompt)
            if end is not None and float(end["t"]) < t1:  # type: ignore[arg-type]
                ctx.results.note(f"paced run {run}: the hidden stream ended inside the window; share not counted")
            else:
                ctx.results.add("hidden100.cpu_share", (c1 - c0) / (t1 - t0))
        finally:
            if sampler is not None:
                sampler.stop()
            app.quit()


def scenario_tabs8(ctx: Context) -> None:
    for run in range(ctx.runs):
        prompts = [f"Tab {i} of eight, run {run} [[tokens={2000 if i == 2 else 3000} tps=100]]" for i in range(1, 9)]
        app = launch(ctx.tmux, ctx.tmp / f"tabs8-{run}", "--base-url", ctx.server.url, "--model", "demo")
        try:
            _ready(ctx, app)
            for i, prompt in enumerate(prompts):
                steps = [time.monotonic()]
                if i:
                    sent = ctx.tmux.send_keys("C-t")
                    ctx.tmux.wait_for(
                        lambda s: EMPTY_HINT in s and STREAMING not in s, timeout=10, what="a new tab", since=sent
                    )
                steps.append(time.monotonic())
                type_prompt(ctx.tmux, prompt)
                steps.append(time.monotonic())
                sent = ctx.tmux.send_keys("Enter")
                ctx.tmux.wait_for(
                    lambda s, p=prompt: p not in prompt_box(s), timeout=10, what=f"tab {i + 1} sent", since=sent
                )
                ctx.server.wait("start", prompt, timeout=10)
                steps.append(time.monotonic())
                debug(
                    f"tab {i + 1} streaming after {steps[-1] - app.start:.1f} s (new tab, paste, send:",
                    " ".join(f"{b - a:.2f}" for a, b in zip(steps, steps[1:], strict=False)) + ")",
                )
            time.sleep(1.0)

            # Keypress latency in the active tab (8) while all 8 stream.
            typed = "ZQ"
            ctx.tmux.send_keys(typed, literal=True)
            ctx.tmux.wait_for(screen_has(typed), timeout=5, what="the typing prefix")
            latencies = []
            next_at = time.monotonic() + 0.1
            for char in "abcdefghijklmnopqrstuvwxyz0123456789ABCD":
                time.sleep(max(0.0, next_at - time.monotonic()))
                typed += char
                sent = ctx.tmux.send_keys(char, literal=True)
                next_at = sent + 0.1
                try:
                    seen, _ = ctx.tmux.wait_for(
                        lambda s, t=typed: t in prompt_box(s), timeout=3, poll=0.002, what=f"key {char!r}", since=sent
                    )
                except WaitTimeout:
                    ctx.results.note(f"tabs8 run {run}: key {char!r} not shown within 3 s")
                    latencies.append(3.0)
                    continue
                latencies.append(seen - sent)
            debug("key latencies ms:", " ".join(f"{x * 1000:.0f}" for x in latencies))
            ctx.results.add("tabs8.key_median_ms", statistics.median(latencies) * 1000)
            ctx.results.add("tabs8.key_p95_ms", percentile(latencies, 95) * 1000)
            ctx.results.add("tabs8.key_max_ms", max(latencies) * 1000)
            ended = [(n, e) for n, p in enumerate(prompts, 1) if (e := ctx.server.find("end", p)) is not None]
            if ended:
                ctx.results.note(f"tabs8 run {run}: streams ended before the typing did: {ended}")

            # RSS once every reply has at least 2,000 tokens; tab 2's is then complete while hidden.
            starts = [ctx.server.wait("start", p, timeout=5) for p in prompts]
            ctx.server.wait("end", prompts[1], timeout=60)
            deadline = time.monotonic() + 10
            while (row := db_reply(app.db, prompts[1])) is None or row[0] != "complete":
                if time.monotonic() > deadline:
                    raise TimeoutError("tab 2's reply never turned complete in the db")
                time.sleep(0.02)
            time.sleep(max(0.0, max(starts) + 20.3 - time.monotonic()))
            ctx.results.add("rss.8tabs_mib", rss_mib(app.pid))

            # ctrl+pagedown from tab 8 to tab 1, 2, ... 7 in turn. Tab 2's
            # 2,000-token reply completed while hidden; the others are still streaming, at >= 2,000 tokens.
            for i in range(1, 8):
                prompt = prompts[i - 1]
                time.sleep(0.3)
                tracker = ReplyTracker(reply_text(strip_directives(prompt), 2000 if i == 2 else 3000))
                target = None
                if i == 2:
                    predicate = reply_done(last_line_signature(reply_text(strip_directives(prompt), 2000)))
                    usable = not predicate(ctx.tmux.capture())
                else:
                    row = db_reply(app.db, prompt)
                    target = tracker.target(row[1]) if row and row[0] == "streaming" else None
                    usable = target is not None and tracker.screen_end(ctx.tmux.capture()) <= target
                    predicate = tracker.reached(target or 0)
                sent = ctx.tmux.send_keys("C-NPage")
                if not usable:
                    ctx.results.note(f"tabs8 run {run}: tab {i} had finished or had no usable line; not timed")
                    time.sleep(0.5)
                    continue
                try:
                    seen, _ = ctx.tmux.wait_for(predicate, timeout=5, poll=0.002, what=f"tab {i}'s text", since=sent)
                except WaitTimeout as timeout:
                    what = "fully rendered reply" if i == 2 else "text as of the switch"
                    ctx.results.note(f"tabs8 run {run}: tab {i}'s {what} not shown within 5 s (screen: -v)")
                    debug(f"screen end {tracker.screen_end(timeout.screen)}; screen:\n" + timeout.screen)
                    continue
                name = "tabs8.switch_done_ms" if i == 2 else "tabs8.switch_streaming_ms"
                ctx.results.add(name, (seen - sent) * 1000)
        finally:
            app.quit()


LONG_MESSAGES = 10_000


def _long_message(i: int) -> str:
    if i % 2 == 0:
        return f"Question {i:05d}: how does the **cache** keep `row {i}` in step with the viewport?"
    return (
        f"Answer {i:05d} starts here, with *emphasis* and `inline code`.\n\n"
        f"- the first point about the widget\n- the second point, with **bold** words\n\n"
        f"Closing words of answer {i:05d}."
    )


async def _build_long_db(path: Path) -> None:
    from core.models import Role
    from core.store import Store

    store = await Store.open(path)
    try:
        session = await store.create_session("A session of 10,000 messages")
        parent = None
        for start in range(0, LONG_MESSAGES, 500):
            batch = [(Role.USER if i % 2 == 0 else Role.ASSISTANT, _long_message(i)) for i in range(start, start + 500)]
            parent = (await store.add_messages(session.id, parent, batch))[-1].id
        await store.set_state("open_tabs", {"sessions": [session.id], "active": 0})
    finally:
        await store.close()


TYPED_AT_START = "zq9"
_QUESTION = re.compile(r"Question (\d{5}):")


def _lowest_question(screen: str) -> int | None:
    numbers = [int(n) for n in _QUESTION.findall(screen)]
    return min(numbers) if numbers else None


def _below(lowest: int | None) -> Callable[[str], bool]:
    """A predicate: a lower "Question N" than `lowest` is on screen."""

    def predicate(screen: str) -> bool:
        now = _lowest_question(screen)
        return now is not None and (lowest is None or now < lowest)

    return predicate


def scenario_long(ctx: Context) -> None:
    base = ctx.tmp / "long-base.sqlite3"
    started = time.monotonic()
    asyncio.run(_build_long_db(base))
    debug(f"built the 10,000-message db in {time.monotonic() - started:.1f} s")
    last_text = f"Closing words of answer {LONG_MESSAGES - 1:05d}."
    for run in range(ctx.runs):
        workdir = ctx.tmp / f"long-{run}"
        workdir.mkdir()
        db = workdir / "chat.sqlite3"
        shutil.copy(base, db)
        args = ("--base-url", ctx.server.url, "--model", "demo")
        app = launch(ctx.tmux, workdir, *args, db=db)
        try:
            times = ctx.tmux.wait_all(
                {"frame": lambda s: bool(s.strip()), "last": screen_has(last_text)}, timeout=30, since=app.start
            )
            ctx.results.add("long.open_s", times["last"] - app.start)
            ctx.results.add("long.open_after_first_frame_s", times["last"] - times["frame"])
            wait_idle(app.pid, not_before=times["last"] + 1.0, timeout=10)
        finally:
            app.quit()  # at rest: the picture of the screen is kept for the next start
        if not db_state(db, "first_frame_picture"):
            ctx.results.note(f"long run {run}: no picture was kept at the quit (the second start draws the header)")

        app = launch(ctx.tmux, workdir, *args, db=db)
        try:
            ctx.tmux.send_keys(TYPED_AT_START, literal=True)  # held by the splash until Textual reads it
            times = ctx.tmux.wait_all(
                {"last": screen_has(last_text), "typed": lambda s: TYPED_AT_START in prompt_box(s)},
                timeout=30,
                since=app.start,
            )
            ctx.results.add("long.open_again_s", times["last"] - app.start)
            ctx.results.add("long.usable_s", times["typed"] - app.start)
            wait_idle(app.pid, not_before=times["typed"] + 1.0, timeout=10)
            ctx.tmux.send_keys(*["BSpace"] * len(TYPED_AT_START))
            ctx.tmux.wait_for(lambda s: TYPED_AT_START not in prompt_box(s), timeout=5, what="the typed keys erased")

            # The same session opened in the running app: close its tab, then choose it in the session browser.
            ctx.tmux.send_keys("C-w")
            ctx.tmux.wait_for(lambda s: last_text not in s, timeout=5, what="the long session's tab closed")
            ctx.tmux.send_keys("C-o")
            ctx.tmux.wait_for(screen_has(f"{LONG_MESSAGES} msgs"), timeout=5, what="the session browser")
            ctx.tmux.send_keys("Down")
            time.sleep(0.3)
            wait_idle(app.pid, timeout=5)
            chosen = ctx.tmux.send_keys("Enter")
            seen, _ = ctx.tmux.wait_for(screen_has(last_text), timeout=10, what="the reopened session", since=chosen)
            ctx.results.add("long.open_in_app_ms", (seen - chosen) * 1000)
            wait_idle(app.pid, not_before=seen + 0.5, timeout=10)

            # Focus the message list (shift+tab from the prompt), then PageUp from the bottom.
            ctx.tmux.send_keys("BTab")
            ctx.tmux.wait_for(screen_has("y Copy"), timeout=5, what="the message list focused (footer)")
            time.sleep(0.2)
            latencies = _press_until(
                ctx, "PPage", 30, lambda before: lambda s: message_rows(s) != before, rows=True, gap=0.05
            )
            ctx.results.add("long.pageup_p95_ms", percentile(latencies, 95) * 1000)
            ctx.results.add("long.pageup_max_ms", max(latencies) * 1000)

            # Home until the first message shows.
            walk_start = time.monotonic()
            latencies = []
            for _ in range(LONG_MESSAGES // 50):
                lowest = _lowest_question(ctx.tmux.capture())
                if lowest == 0:
                    break
                time.sleep(0.03)
                latencies += _press_until(ctx, "Home", 1, lambda _before, low=lowest: _below(low))
            else:
                ctx.results.note(f"long run {run}: the first message never showed")
            ctx.results.add("long.to_top_s", time.monotonic() - walk_start)
            debug(f"{len(latencies)} Home presses, ms:", " ".join(f"{x * 1000:.0f}" for x in latencies))
            ctx.results.add("long.home_p95_ms", percentile(latencies, 95) * 1000)
            ctx.results.add("long.home_max_ms", max(latencies) * 1000)
            ctx.results.add("rss.long_mib", rss_mib(app.pid))
        finally:
            app.quit()


def _press_until(
    ctx: Context,
    key: str,
    presses: int,
    make_predicate: Callable[[str], Callable[[str], bool]],
    *,
    rows: bool = False,
    gap: float = 0.0,
    resend_after: float = 0.15,
    timeout: float = 10.0,
) -> list[float]:
    """Press `key` `presses` times; each time wait until the predicate built from the screen before holds.

    A press that changes nothing within `resend_after` s is sent again (the app may have been busy loading);
    the latency is counted from the first send.
    """
    latencies = []
    for _ in range(presses):
        screen = ctx.tmux.capture()
        predicate = make_predicate(message_rows(screen) if rows else screen)
        first = ctx.tmux.send_keys(key)
        give_up = first + timeout
        while True:
            try:
                seen, _ = ctx.tmux.wait_for(predicate, timeout=resend_after, poll=0.002, what=key, since=first)
                break
            except WaitTimeout:
                if time.monotonic() > give_up:
                    raise
                debug(f"{key}: nothing changed in {resend_after} s, pressed again")
                ctx.tmux.send_keys(key)
        latencies.append(seen - first)
        if gap:
            time.sleep(gap)
    return latencies


# --------------------------------------------------------------------------------------------------------------


def print_table(results: Results) -> None:
    rows = [("figure", "floor", "median", "min / max", "n", "")]
    for name, (floor, unit) in FLOORS.items():
        values = results.values.get(name)
        if not values:
            continue
        median = statistics.median(values)
        fmt = (lambda v: f"{v:.0f}") if unit in ("ms", "MiB") else (lambda v: f"{v:.3f}")
        floor_text = f"<= {fmt(floor)} {unit}" if floor is not None else f"(info) {unit}"
        verdict = "" if floor is None else ("ok" if median <= floor else "MISSED")
        rows.append(
            (name, floor_text, fmt(median), f"{fmt(min(values))} / {fmt(max(values))}", str(len(values)), verdict)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    print()
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * width for width in widths))
    for note in results.notes:
        print(f"note: {note}")


def main(argv: list[str] | None = None) -> int:
    global VERBOSE, MONITOR, NICE
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="runs per timed figure (default 5)")
    parser.add_argument("--only", help=f"comma-separated scenarios: {', '.join(SCENARIOS)}")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each value as it is measured")
    parser.add_argument("--keep", action="store_true", help="keep the temp dir (dbs, logs)")
    parser.add_argument(
        "--nice",
        type=int,
        default=0,
        help="run the app, the server and tmux at this nice level (e.g. -10 as root, on a machine others load)",
    )
    args = parser.parse_args(argv)
    VERBOSE = args.verbose
    NICE = f"nice -n {args.nice} " if args.nice else ""
    chosen = SCENARIOS if not args.only else tuple(s.strip() for s in args.only.split(","))
    unknown = set(chosen) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    if shutil.which("tmux") is None:
        parser.error("tmux is not installed")

    tmp = Path(tempfile.mkdtemp(prefix="bench-tui-"))
    results = Results()
    server = tmux = None
    began = time.monotonic()
    MONITOR = monitor = LoadMonitor().start()
    try:
        server = Server(tmp, nice=args.nice)
        tmux = Tmux(tmp, width=WIDTH, height=HEIGHT, env=base_env(tmp), nice=args.nice).start()
        for pid in (server.proc.pid, tmux.server_pid, tmux.client_pid):
            monitor.add(pid)
        ctx = Context(tmux, server, tmp, args.runs, results, monitor)
        warm_up(ctx)
        for name in chosen:
            log(f"[{time.monotonic() - began:5.1f} s] {name} ...")
            scenario_start = time.monotonic()
            try:
                globals()[f"scenario_{name}"](ctx)
                others = monitor.others(scenario_start, time.monotonic())
                if others is not None:
                    results.add(f"load.{name}", others)
            except Exception as error:  # noqa: BLE001 - report and go on with the next scenario
                screen = getattr(error, "screen", None) or (tmux.capture() if tmux else "")
                results.note(f"{name}: {type(error).__name__}: {error}")
                log(traceback.format_exc())
                log("screen at the failure:\n" + screen)
                tmux.blank()
    finally:
        monitor.stop()
        if tmux is not None:
            tmux.close()
        if server is not None:
            server.close()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"\nchat-tui end-to-end benchmark: tmux {WIDTH}x{HEIGHT}, {args.runs} runs, "
        f"{time.monotonic() - began:.0f} s in all, nice {args.nice}, {os.cpu_count()} cores"
    )
    print_table(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
