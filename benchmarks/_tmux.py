"""Benchmark helpers: a private tmux server driven through one control-mode client, and /proc readings.

`Tmux` starts its own tmux server (its own socket in a temp dir, so a user's tmux is never touched) with one
detached session of a fixed size, and keeps one `tmux -C` control-mode client attached to it. Commands
(`capture-pane`, `send-keys`, `respawn-pane`) go through that client: no process is spawned per poll, so a poll
costs well under a millisecond. The client also receives an `%output` notification each time tmux reads output
from the pane; `wait_for` captures the pane after each such notification (and every `poll` seconds besides) and
dates a change by the last `%output` received before the capture that first showed it.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CLK_TCK = os.sysconf("SC_CLK_TCK")


class TmuxError(RuntimeError):
    pass


class WaitTimeout(TimeoutError):
    def __init__(self, what: str, screen: str) -> None:
        super().__init__(f"timed out waiting for {what}")
        self.screen = screen


@dataclass
class _Reply:
    lines: list[str]
    ok: bool
    outputs_before: int
    """How many %output notifications had arrived before the reply's %begin."""
    last_output_before: float
    """monotonic() of the last %output received before the reply's %begin (0.0: none yet)."""


class Tmux:
    """One tmux server, one session of `width` x `height`, one pane that runs the program under test."""

    def __init__(
        self,
        workdir: Path,
        *,
        width: int = 160,
        height: int = 48,
        env: dict[str, str] | None = None,
        nice: int = 0,
    ) -> None:
        self.socket = str(workdir / "tmux.sock")
        self.width, self.height = width, height
        self.env = env if env is not None else dict(os.environ)
        self.session = "bench"
        self._base = ["tmux", "-u", "-S", self.socket]
        self._nice = ["nice", "-n", str(nice)] if nice else []
        self._proc: subprocess.Popen[bytes] | None = None
        self._cmd_lock = threading.Lock()
        self._cond = threading.Condition()
        self._replies: deque[_Reply] = deque()
        self._block: list[str] | None = None
        self._block_outputs = 0
        self._block_last_output = 0.0
        self.outputs = 0
        self.last_output = 0.0
        self.output_times: deque[float] = deque(maxlen=200_000)
        self.closed = False
        self.exit_reason = ""
        self.pane = ""

    # -- lifecycle -----------------------------------------------------------------------------------------

    def start(self) -> Tmux:
        def run(*args: str, prefix: tuple[str, ...] = ()) -> None:
            subprocess.run([*prefix, *self._base, *args], env=self.env, check=True, capture_output=True)

        run(
            "-f",
            "/dev/null",
            "new-session",
            "-d",
            "-s",
            self.session,
            "-x",
            str(self.width),
            "-y",
            str(self.height),
            "sleep 1000000",
            prefix=tuple(self._nice),
        )  # the server inherits the nice level
        for option in (
            ("status", "off"),
            ("remain-on-exit", "on"),
            ("default-terminal", "xterm-256color"),
            ("history-limit", "0"),
            ("escape-time", "0"),
            ("window-size", "manual"),
        ):
            run("set-option", "-g", *option)
        run("resize-window", "-t", self.session, "-x", str(self.width), "-y", str(self.height))
        self._proc = subprocess.Popen(
            [*self._base, "-C", "attach-session", "-t", self.session],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=self.env,
        )
        threading.Thread(target=self._read, name="tmux-control-reader", daemon=True).start()
        self.pane = self.cmd("display-message -p -t bench '#{pane_id}'")[0].strip()
        self.server_pid = int(self.cmd("display-message -p '#{pid}'")[0])
        self.client_pid = self._proc.pid
        size = self.cmd("display-message -p -t bench '#{pane_width}x#{pane_height}'")[0].strip()
        if size != f"{self.width}x{self.height}":
            raise TmuxError(f"pane is {size}, wanted {self.width}x{self.height}")
        return self

    def close(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None:
            try:
                if proc.stdin:
                    proc.stdin.close()
            except OSError:
                pass
        subprocess.run([*self._base, "kill-server"], env=self.env, capture_output=True)
        if proc is not None:
            try:
                proc.wait(3)
            except subprocess.TimeoutExpired:
                proc.kill()

    def __enter__(self) -> Tmux:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control-mode protocol -------------------------------------------------------------------------------

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for raw in self._proc.stdout:
            now = time.monotonic()
            if self._block is not None:
                if raw.startswith((b"%end ", b"%error ")):
                    flags = raw.split()[-1]
                    if flags == b"1":  # a reply to one of our commands (0: the attach's own block)
                        reply = _Reply(
                            self._block, raw.startswith(b"%end "), self._block_outputs, self._block_last_output
                        )
                        with self._cond:
                            self._replies.append(reply)
                            self._cond.notify_all()
                    self._block = None
                else:
                    self._block.append(raw.decode("utf-8", "replace").rstrip("\n"))
                continue
            if raw.startswith(b"%output "):
                with self._cond:
                    self.outputs += 1
                    self.last_output = now
                    self.output_times.append(now)
                    self._cond.notify_all()
            elif raw.startswith(b"%begin "):
                self._block = []
                self._block_outputs = self.outputs
                self._block_last_output = self.last_output
            elif raw.startswith(b"%exit"):
                self.exit_reason = raw.decode("utf-8", "replace").strip()
                break
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def _command(self, line: str, timeout: float = 10.0) -> _Reply:
        with self._cmd_lock:
            if self._proc is None or self._proc.stdin is None or self.closed:
                raise TmuxError("tmux control client is not running")
            self._proc.stdin.write(line.encode() + b"\n")
            self._proc.stdin.flush()
            deadline = time.monotonic() + timeout
            with self._cond:
                while not self._replies:
                    if self.closed:
                        raise TmuxError(f"tmux control client exited ({self.exit_reason or 'no %exit line'})")
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise TmuxError(f"no reply from tmux to {line!r}")
                    self._cond.wait(left)
                reply = self._replies.popleft()
        if not reply.ok:
            raise TmuxError(f"tmux {line!r}: {' '.join(reply.lines)}")
        return reply

    def cmd(self, line: str) -> list[str]:
        return self._command(line).lines

    # -- the pane ------------------------------------------------------------------------------------------

    def respawn(self, command: str, cwd: Path) -> tuple[float, int]:
        """Run `command` in the pane (killing what ran there); return (monotonic start time, pane pid)."""
        quoted = "'" + command.replace("'", "'\\''") + "'"  # tmux parses single quotes like sh
        line = f"respawn-pane -k -t {self.pane} -c {shlex.quote(str(cwd))} {quoted}"
        start = time.monotonic()
        self.cmd(line)
        pid = int(self.cmd(f"display-message -p -t {self.pane} '#{{pane_pid}}'")[0])
        return start, pid

    def blank(self) -> None:
        """Replace whatever runs in the pane with an idle process and a clean screen."""
        self.cmd(f"respawn-pane -k -t {self.pane} 'sleep 1000000'")
        self.cmd(f"clear-history -t {self.pane}")

    def pane_dead(self) -> bool:
        return self.cmd(f"display-message -p -t {self.pane} '#{{pane_dead}}'")[0].strip() == "1"

    def capture(self) -> str:
        return "\n".join(self._command(f"capture-pane -p -t {self.pane}").lines)

    def _capture_dated(self) -> tuple[str, float, int, float]:
        issued = time.monotonic()
        reply = self._command(f"capture-pane -p -t {self.pane}")
        return "\n".join(reply.lines), issued, reply.outputs_before, reply.last_output_before

    def send_keys(self, *keys: str, literal: bool = False) -> float:
        """Send keys (tmux key names, or text with literal=True); returns monotonic() just before sending."""
        args = " ".join(shlex.quote(k) if not literal else "'" + k.replace("'", "'\\''") + "'" for k in keys)
        line = f"send-keys -t {self.pane} {'-l ' if literal else ''}{args}"
        start = time.monotonic()
        self.cmd(line)
        return start

    def paste(self, text: str) -> float:
        """Paste `text` into the pane (bracketed when the program asked for it); returns the send time."""
        quoted = "'" + text.replace("'", "'\\''") + "'"
        self.cmd(f"set-buffer -b bench -- {quoted}")
        start = time.monotonic()
        self.cmd(f"paste-buffer -p -d -b bench -t {self.pane}")
        return start

    def wait_for(
        self,
        predicate: Callable[[str], bool],
        *,
        timeout: float,
        what: str = "the screen",
        poll: float = 0.005,
        since: float | None = None,
    ) -> tuple[float, str]:
        """Capture the pane until `predicate(screen)`; return (when the change reached tmux, that screen)."""
        when, screens = self.wait_all({what: predicate}, timeout=timeout, poll=poll, since=since, screens=True)
        return when[what], screens[what]

    def wait_all(
        self,
        predicates: dict[str, Callable[[str], bool]],
        *,
        timeout: float,
        poll: float = 0.005,
        since: float | None = None,
        screens: bool = False,
    ) -> Any:
        """Capture the pane until every predicate has held once; return {name: when it first held}.

        A change is dated by the last %output tmux sent before the capture that first showed it (the output
        that made it); when no output arrived since the previous capture (or, for the first capture, since
        `since`), by the capture's issue time. With screens=True, also return {name: the screen that showed it}.
        """
        deadline = time.monotonic() + timeout
        previous_outputs = -1
        when: dict[str, float] = {}
        shown: dict[str, str] = {}
        screen = ""
        while True:
            screen, issued, outputs_before, last_output_before = self._capture_dated()
            for name, predicate in predicates.items():
                if name in when or not predicate(screen):
                    continue
                if previous_outputs >= 0 and outputs_before > previous_outputs:
                    when[name] = last_output_before
                elif previous_outputs < 0 and since is not None and last_output_before >= since:
                    when[name] = last_output_before
                else:
                    when[name] = issued
                shown[name] = screen
            if len(when) == len(predicates):
                return (when, shown) if screens else when
            previous_outputs = outputs_before
            now = time.monotonic()
            if now >= deadline:
                missing = ", ".join(name for name in predicates if name not in when)
                raise WaitTimeout(missing, screen)
            with self._cond:
                if self.outputs == outputs_before and not self.closed:
                    self._cond.wait(min(poll, deadline - now))


# -- /proc ---------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads, dead ones included), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", "rb") as fh:
        data = fh.read()
    fields = data[data.rindex(b")") + 2 :].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().split(b") ")[1][:1] != b"Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):  # reading a process that has just been reaped
        return False


def end_process(pid: int, grace: float = 3.0) -> None:
    """SIGTERM then SIGKILL one process we started, by its id."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive(pid):
            return
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and alive(pid):
            time.sleep(0.02)


class CpuSampler:
    """Samples a process's CPU time every `interval` s in a thread, to read the CPU used between two instants."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid = pid
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.samples.append((time.monotonic(), cpu_seconds(self.pid)))
            except (FileNotFoundError, ProcessLookupError):
                return
            self._stop.wait(self.interval)

    def start(self) -> CpuSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(1)

    def at(self, t: float) -> float:
        """CPU seconds at monotonic time `t` (the last sample at or before it)."""
        best = self.samples[0][1]
        for when, cpu in self.samples:
            if when > t:
                break
            best = cpu
        return best


def _machine_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat") as fh:
        values = [int(v) for v in fh.readline().split()[1:]]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return sum(values[:8]) - idle, sum(values[:8])


class LoadMonitor:
    """How busy the machine is with other people's work: all CPUs' busy time less our processes' CPU time.

    Samples /proc/stat and the CPU time of the registered pids (the app, the server, tmux, this process)
    every `interval` s; `others(t0, t1)` is the mean number of cores the rest of the machine kept busy.
    """

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.pids: set[int] = {os.getpid()}
        self._last: dict[int, float] = {}
        self.series: list[tuple[float, float, float]] = []
        """(time, cores busy in all, cores busy with our processes) per interval, stamped at its end."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-monitor", daemon=True)

    def add(self, pid: int) -> None:
        self.pids.add(pid)

    def _ours(self) -> float:
        total = 0.0
        for pid in list(self.pids):
            try:
                now = cpu_seconds(pid)
            except (FileNotFoundError, ProcessLookupError, ValueError):
                self.pids.discard(pid)
                self._last.pop(pid, None)
                continue
            total += now - self._last.get(pid, 0.0)  # a pid seen for the first time: all its CPU so far
            self._last[pid] = now
        return total

    def _run(self) -> None:
        busy0, total0 = _machine_jiffies()
        self._ours()
        t0 = time.monotonic()
        while not self._stop.wait(self.interval):
            busy1, total1 = _machine_jiffies()
            ours = self._ours()
            t1 = time.monotonic()
            cores = os.cpu_count() or 1
            if total1 > total0:
                busy_cores = (busy1 - busy0) / (total1 - total0) * cores
                self.series.append((t1, busy_cores, ours / (t1 - t0)))
            busy0, total0, t0 = busy1, total1, t1

    def start(self) -> LoadMonitor:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(2)

    def others(self, t0: float, t1: float) -> float | None:
        """Mean cores busy with processes other than ours between t0 and t1."""
        picked = [max(0.0, busy - ours) for when, busy, ours in self.series if t0 < when <= t1]
        return sum(picked) / len(picked) if picked else None
