"""A local OpenAI-compatible HTTP server with deterministic Markdown replies and fault injection.

`chat-tui --demo`, the tests and the benchmarks talk to it over real HTTP on 127.0.0.1, so they exercise the
same client path (openai → httpx → sockets) as a real provider. Stdlib only: it must start fast and offline.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import hmac
import itertools
import json
import random
import re
import secrets
import signal
import socket
import string
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType, TracebackType
from typing import Any

__all__ = [
    "DirectiveError",
    "LocalServer",
    "MODEL_IDS",
    "RequestRecord",
    "ServerOptions",
    "main",
    "parse_directives",
    "reply_text",
    "reply_tokens",
    "strip_directives",
]

MODEL_IDS: tuple[str, ...] = ("demo", "demo-fast", "demo-long")
"""What `GET /v1/models` lists. Any other model name is accepted too, except "missing"/"missing-*"."""


@dataclass
class ServerOptions:
    """Defaults for every request; the last user message can override each field but api_key (see directives)."""

    tokens: int = 120
    """Number of content pieces (word-sized tokens) in a reply: exactly this many, see `reply_tokens`."""
    tps: float = 0.0
    """Tokens per second; 0 sends as fast as possible."""
    status: int | None = None
    """Answer every request with this HTTP error status (401, 404, 429, 500...) instead of a reply."""
    retry_after: float | None = None
    """Seconds sent in the Retry-After header of a 429."""
    stall: float = 0.0
    """Seconds to send nothing (interrupted by `LocalServer.stop`) ..."""
    stall_after: int = 0
    """... after this many content chunks (0 = right after the role chunk; past the end = before the finish)."""
    cut_after: int | None = None
    """Drop the TCP connection after this many content chunks: no terminating chunk, no finish, no [DONE]."""
    malformed_after: int | None = None
    """Send one non-JSON `data:` line after this many content chunks, then end the body without [DONE]."""
    unfinished_after: int | None = None
    """End the stream cleanly with [DONE] after this many content chunks, but with no chunk giving a finish_reason
    (as a proxy that drops the end of a reply does); a non-streamed reply has those chunks and no finish_reason."""
    api_key: str | None = None
    """When set, requests without `Authorization: Bearer <api_key>` get 401."""
    sample: bool = False
    """Answer a conversation asked again (same model and messages: a regenerate) with another reply, as a sampling
    model does; the demo's server sets it. Off, the same request always gets the same reply, as tests expect."""


@dataclass
class RequestRecord:
    """One chat-completions request as the server received it, so tests can assert what a client sent."""

    model: str
    messages: list[dict[str, Any]]
    stream: bool
    prompt: str
    """Text of the last user message with directives stripped: what the reply was computed from."""
    time: float
    """`time.time()` when the request arrived."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """The directives found in the last user message, parsed."""


# --------------------------------------------------------------------------------------------------------------
# Directives: `[[key=value key=value]]` in the last user message overrides options for that request only.

_DIRECTIVE_RE = re.compile(r"[ \t]*\[\[(.*?)\]\]", re.DOTALL)

_INT, _FLOAT = "int", "float"
# field name -> (type, may be None); api_key is deliberately absent: a request cannot choose its own key check.
_DIRECTIVE_FIELDS: dict[str, tuple[str, bool]] = {
    "tokens": (_INT, False),
    "tps": (_FLOAT, False),
    "status": (_INT, True),
    "retry_after": (_FLOAT, True),
    "stall": (_FLOAT, False),
    "stall_after": (_INT, False),
    "cut_after": (_INT, True),
    "malformed_after": (_INT, True),
    "unfinished_after": (_INT, True),
}


class DirectiveError(ValueError):
    """A `[[...]]` directive the server cannot apply; the request is answered with 400 and this message."""


def strip_directives(text: str) -> str:
    """Remove every `[[...]]` directive (with the spaces before it) and trim the result.

    The reply is computed from this text, so `reply_text(strip_directives(content))` is what a request streams.
    """
    return _DIRECTIVE_RE.sub("", text).strip()


def parse_directives(text: str) -> dict[str, Any]:
    """Parse all `[[key=value ...]]` directives in `text` into typed ServerOptions overrides.

    Raises DirectiveError on an unknown key or a bad value, so a typo in a test fails loudly instead of
    silently running with the defaults. `none` (or `null`) clears an optional field.
    """
    overrides: dict[str, Any] = {}
    for match in _DIRECTIVE_RE.finditer(text):
        for item in match.group(1).split():
            key, sep, raw = item.partition("=")
            if not sep or key not in _DIRECTIVE_FIELDS:
                known = ", ".join(_DIRECTIVE_FIELDS)
                raise DirectiveError(f"Unknown directive {item!r}; use key=value with key one of: {known}.")
            kind, nullable = _DIRECTIVE_FIELDS[key]
            if nullable and raw.lower() in ("none", "null"):
                overrides[key] = None
                continue
            try:
                value: float = int(raw) if kind == _INT else float(raw)
            except ValueError:
                raise DirectiveError(
                    f"Directive {key} wants {'an integer' if kind == _INT else 'a number'}, got {raw!r}."
                ) from None
            if value < 0 or (kind == _FLOAT and value != value):  # value != value: NaN
                raise DirectiveError(f"Directive {key} must not be negative, got {raw!r}.")
            if key == "status" and not 400 <= value <= 599:
                raise DirectiveError(f"Directive status must be an HTTP error status (400-599), got {raw!r}.")
            overrides[key] = value
    return overrides


# --------------------------------------------------------------------------------------------------------------
# The deterministic reply.

_WORDS = (
    "stream token session branch reply model render buffer latency terminal widget markdown history cursor "
    "prompt message window engine server client queue batch cache line block parser schema index thread "
    "signal timeout retry chunk delta usage journal commit layout viewport tab worker request response "
    "socket frame table column row record writer reader state event handler pipeline profile"
).split()
_GLUE = "the a of and to with in for each every when then only not is keeps sends holds reads writes".split()
_IDENTIFIERS = "items values rows chunks lines tokens names scores events parts".split()
_FUNCTIONS = "total_of count_words merge_rows render_block split_lines score_reply pick_model".split()
_CLASSES = "Buffer Session Counter Window Tracker Ledger".split()

_CODE_TEMPLATES = (
    "def $func($var: list[int]) -> int:\n"
    "    total = 0\n"
    "    for item in $var:\n"
    "        total += item * $n\n"
    "    return total",
    'async def $func($var: list[str]) -> str:\n    await asyncio.sleep($n / 1000)\n    return " ".join($var).upper()',
    "class $cls:\n"
    "    def __init__(self, size: int = $n) -> None:\n"
    "        self.size = size\n"
    "\n"
    "    def grow(self, by: int) -> int:\n"
    "        self.size += by\n"
    "        return self.size",
    "$var = [$n, $m, $k]\nprint(sorted($var, reverse=True))\nprint(sum($var) / len($var))",
)

_TAIL_MIN_WORDS = 4


def _seeded_random(prompt: str, variant: int) -> random.Random:
    # sha256, never hash(): str hashes change with PYTHONHASHSEED, and replies must match across processes.
    seed = f"{prompt}\0{variant}" if variant else prompt
    digest = hashlib.sha256(seed.encode("utf-8", "surrogatepass")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _styled_word(rng: random.Random) -> str:
    if rng.random() < 0.35:
        return rng.choice(_GLUE)
    word = rng.choice(_WORDS)
    roll = rng.random()
    if roll < 0.08:
        return f"`{word}`"
    if roll < 0.14:
        return f"**{word}**"
    return word


def _capitalized(word: str) -> str:
    start = len(word) - len(word.lstrip("`*"))
    return word[:start] + word[start : start + 1].upper() + word[start + 1 :]


def _prose(rng: random.Random, count: int) -> str:
    """Exactly `count` words in sentences of 5-12 words, the last one ending with a full stop."""
    words: list[str] = []
    while len(words) < count:
        sentence = [_styled_word(rng) for _ in range(min(rng.randint(5, 12), count - len(words)))]
        sentence[0] = _capitalized(sentence[0])
        sentence[-1] += "."
        words.extend(sentence)
    return " ".join(words)


def _title(rng: random.Random) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(2, 4))).capitalize()


def _paragraph(rng: random.Random) -> list[str]:
    return [_prose(rng, rng.randint(12, 26))]


def _bullets(rng: random.Random) -> list[str]:
    return [f"- {_prose(rng, rng.randint(3, 8))}" for _ in range(rng.randint(3, 5))]


def _numbered(rng: random.Random) -> list[str]:
    return [f"{n}. {_prose(rng, rng.randint(3, 7))}" for n in range(1, rng.randint(3, 4) + 1)]


def _code(rng: random.Random) -> list[str]:
    source = string.Template(rng.choice(_CODE_TEMPLATES)).substitute(
        func=rng.choice(_FUNCTIONS),
        var=rng.choice(_IDENTIFIERS),
        cls=rng.choice(_CLASSES),
        n=rng.randint(2, 99),
        m=rng.randint(2, 99),
        k=rng.randint(2, 99),
    )
    return ["```python", *source.split("\n"), "```"]


def _table(rng: random.Random) -> list[str]:
    rows = [f"| {rng.choice(_WORDS)} | {rng.randint(1, 999)} |" for _ in range(rng.randint(2, 4))]
    return ["| Name | Value |", "| --- | --- |", *rows]


def _subheading(rng: random.Random) -> list[str]:
    return [f"### {_title(rng)}", "", *_paragraph(rng)]


# The order the sections appear in; it cycles for long replies, so a default 120-token reply already has a
# heading, prose, a bulleted list and a fenced code block.
_SECTIONS: tuple[Callable[[random.Random], list[str]], ...] = (
    _paragraph,
    _bullets,
    _code,
    _paragraph,
    _numbered,
    _table,
    _subheading,
    _code,
    _bullets,
)


def _line_pieces(line: str) -> list[str]:
    """Split one line into tokens: its indentation plus first word, then each further word with its space."""
    body = line.lstrip(" ")
    if not body:
        return []
    first, *rest = body.split(" ")
    return [line[: len(line) - len(body)] + first, *(" " + word for word in rest)]


def _count_pieces(lines: list[str]) -> int:
    return sum(len(_line_pieces(line)) for line in lines) + len(lines) - 1


def _echo(prompt: str) -> str:
    """The prompt's first 60 characters, on one line, with Markdown punctuation escaped."""
    flat = " ".join(prompt.split())
    if not flat:
        return "*(an empty message)*"
    short = flat if len(flat) <= 60 else flat[:60].rstrip() + "…"
    return "*" + re.sub(r"([\\`*_\[\]<>#|])", r"\\\1", short) + "*"


@functools.lru_cache(maxsize=256)
def _reply_pieces(prompt: str, tokens: int, variant: int) -> tuple[str, ...]:
    if tokens <= 0:
        return ()
    rng = _seeded_random(prompt, variant)
    lines = [f"You asked: {_echo(prompt)}", "", f"## {_title(rng)}"]
    count = _count_pieces(lines)
    for make in itertools.cycle(_SECTIONS):
        block = make(rng)
        cost = 2 + _count_pieces(block)  # 2: the newline ending the last line, and the blank line
        if count + cost + 2 + _TAIL_MIN_WORDS > tokens:
            break
        lines += ["", *block]
        count += cost
    remaining = tokens - count
    if remaining >= 3:
        lines += ["", _prose(rng, remaining - 2)]
    elif remaining > 0:
        # Too few tokens left for a paragraph (only when the preamble nearly fills the reply): lengthen the heading.
        lines[-1] += "".join(" " + rng.choice(_WORDS) for _ in range(remaining))
    pieces = [piece for n, line in enumerate(lines) for piece in (["\n"] if n else []) + _line_pieces(line)]
    return tuple(pieces[:tokens])  # only shortens when the preamble alone is longer than `tokens`


def reply_tokens(prompt: str, tokens: int = 120, variant: int = 0) -> list[str]:
    """The reply to `prompt` split into the pieces the stream sends, one per content chunk.

    There are exactly `max(tokens, 0)` pieces. Each is a word with its leading space (or indentation), or a
    single "\\n", like a real tokenizer's output, so `"".join(...) == reply_text(prompt, tokens)`. The reply is
    well-formed Markdown unless `tokens` is smaller than its first lines (~15 pieces), where it is cut short.
    """
    return list(_reply_pieces(prompt, tokens, variant))


def reply_text(prompt: str, tokens: int = 120, variant: int = 0) -> str:
    """The deterministic Markdown reply to `prompt`: echo line, `##` heading, prose, lists, python code.

    Pure: seeded from the sha256 of the prompt, so every process and every run gives the same text, and a
    longer reply to the same prompt shares its opening sections. Another `variant` is another reply (the same
    echo line), as a sampling model gives when asked again.
    """
    return "".join(_reply_pieces(prompt, tokens, variant))


# --------------------------------------------------------------------------------------------------------------
# HTTP.

_ERRORS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "The request is invalid."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("invalid_request_error", "permission_denied", "You are not allowed to sample from this model."),
    404: ("invalid_request_error", "model_not_found", "The model does not exist or you do not have access to it."),
    429: ("requests", "rate_limit_exceeded", "Rate limit reached for requests. Please try again later."),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", None, "Bad gateway."),
    503: ("server_error", "overloaded", "The server is overloaded or not ready yet."),
}

_DISCONNECTS = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


class _StreamAborted(Exception):
    """The response ends without its normal ending: a `cut_after` fault, or the server stopping."""


def _text_of(content: Any) -> str:
    """Message content as text: a string, or the text parts of an OpenAI content-part list joined by newlines."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = (part.get("text") for part in content if isinstance(part, dict) and part.get("type") == "text")
        return "\n".join(text for text in texts if isinstance(text, str))
    return ""


def _chunk_frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(payload: dict[str, Any] | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, separators=(",", ":"))
    return _chunk_frame(f"data: {data}\n\n".encode())


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128
    local: LocalServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Silent by design (no stderr noise in tests); real bugs are kept in LocalServer.errors instead.
        error = sys.exc_info()[1]
        if error is not None and not isinstance(error, _DISCONNECTS):
            self.local.errors.append(error)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # every SSE event is a small write; Nagle would hold them back
    server: _HTTPServer

    # -- plumbing ------------------------------------------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.local._track(self.connection, add=True)
        if self.server.local._stopping.is_set():  # accepted just as stop() took its list of connections
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.local._track(self.connection, add=False)

    def log_message(self, format: str, *args: Any) -> None:
        """Silent: a test run must not print an access log."""

    def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _send_error(
        self, status: int, message: str | None = None, code: str | None = None, headers: dict[str, str] | None = None
    ) -> None:
        kind, default_code, default_message = _ERRORS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None, f"HTTP {status}.")
        )
        error = {"message": message or default_message, "type": kind, "param": None, "code": code or default_code}
        self._send_json(status, {"error": error}, headers)

    def _authorized(self) -> bool:
        api_key = self.server.local.options.api_key
        if api_key is None:
            return True
        given = self.headers.get("Authorization", "")
        if hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
            return True
        message = "Incorrect API key provided." if given else "You didn't provide an API key."
        self._send_error(401, message, "invalid_api_key")
        return False

    def _cut(self) -> None:
        """Drop the connection mid-body so the client sees an incomplete chunked response."""
        self.close_connection = True
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        raise _StreamAborted

    # -- routes --------------------------------------------------------------------------------------------

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0].rstrip("/")
        if not self._authorized():
            return
        if path == "/v1/models":
            self._send_json(200, {"object": "list", "data": [_model_object(name) for name in MODEL_IDS]})
        elif path.startswith("/v1/models/"):
            name = path.removeprefix("/v1/models/")
            if _is_missing(name):
                self._send_error(404, f"The model `{name}` does not exist or you do not have access to it.")
            else:
                self._send_json(200, _model_object(name))
        else:
            self._send_error(404, f"Invalid URL (GET {path})", "unknown_url")

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self.close_connection = True  # the body's end is unknown, so the connection cannot be reused
            self._send_error(400, "Invalid Content-Length header.")
            return
        raw = self.rfile.read(length)  # read it all before answering, so keep-alive stays in step
        path = self.path.split("?", 1)[0].rstrip("/")
        if not self._authorized():
            return
        if path != "/v1/chat/completions":
            self._send_error(404, f"Invalid URL (POST {path})", "unknown_url")
            return
        try:
            self._chat_completions(raw)
        except _StreamAborted:
            self.close_connection = True
        except _DISCONNECTS:
            self.close_connection = True  # the client left; nothing to answer and nothing to print

    def _chat_completions(self, raw: bytes) -> None:
        local = self.server.local
        try:
            body = json.loads(raw)
        except ValueError:
            self._send_error(400, "We could not parse the JSON body of your request.")
            return
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
            self._send_error(400, "'messages' must be a list of message objects.")
            return
        model = str(body.get("model") or MODEL_IDS[0])
        stream = bool(body.get("stream"))
        last_user = next((_text_of(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        prompt = strip_directives(last_user)
        try:
            overrides = parse_directives(last_user)
        except DirectiveError as error:
            local._record(RequestRecord(model, messages, stream, prompt, time.time()))
            self._send_error(400, str(error))
            return
        local._record(RequestRecord(model, messages, stream, prompt, time.time(), overrides))
        options = dataclasses.replace(local.options, **overrides)

        if options.status is not None:
            headers = {}
            if options.status == 429 and options.retry_after is not None:
                headers["Retry-After"] = f"{options.retry_after:g}"
            self._send_error(options.status, headers=headers)
            return
        if _is_missing(model):
            self._send_error(404, f"The model `{model}` does not exist or you do not have access to it.")
            return

        variant = local._times_asked(model, messages) if options.sample else 0
        pieces = reply_tokens(prompt, options.tokens, variant)
        prompt_tokens = sum(len(_text_of(m.get("content")).split()) for m in messages)
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(pieces),
            "total_tokens": prompt_tokens + len(pieces),
        }
        completion_id = f"chatcmpl-{secrets.token_hex(12)}"
        if stream:
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            self._stream(completion_id, model, pieces, options, usage if include_usage else None)
        else:
            self._complete(completion_id, model, pieces, options, usage)

    # -- replies -------------------------------------------------------------------------------------------

    def _complete(
        self, completion_id: str, model: str, pieces: list[str], options: ServerOptions, usage: dict[str, int]
    ) -> None:
        """A non-streamed reply: it takes as long as the stream would, and the faults map to the whole body."""
        stop = self.server.local._stopping
        if stop.wait(options.stall + (len(pieces) / options.tps if options.tps > 0 else 0)):
            self._cut()
        if options.cut_after is not None:
            self._cut()
        if options.malformed_after is not None:
            data = b"{not json"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        finish_reason: str | None = "stop"
        if options.unfinished_after is not None:
            pieces, finish_reason = pieces[: options.unfinished_after], None
        message = {"role": "assistant", "content": "".join(pieces), "refusal": None}
        self._send_json(
            200,
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model,
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
                "usage": usage,
            },
        )

    def _stream(
        self, completion_id: str, model: str, pieces: list[str], options: ServerOptions, usage: dict[str, int] | None
    ) -> None:
        stop = self.server.local._stopping
        created = int(time.time())

        def chunk(delta: dict[str, str], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            return _sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [choice],
                }
            )

        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()

        pending = bytearray(chunk({"role": "assistant", "content": ""}))
        paced = options.tps > 0
        interval = 1 / options.tps if paced else 0.0
        due = time.monotonic() + interval

        def flush() -> None:
            if pending:
                self.wfile.write(pending)
                pending.clear()
            if stop.is_set():
                self._cut()

        for sent in range(len(pieces) + 1):  # checks each fault point, including "after the last piece"
            if options.stall > 0 and sent == min(options.stall_after, len(pieces)):
                flush()
                if stop.wait(options.stall):
                    self._cut()
                due = time.monotonic() + interval
            if options.cut_after is not None and sent == min(options.cut_after, len(pieces)):
                flush()
                self._cut()
            if options.malformed_after is not None and sent == min(options.malformed_after, len(pieces)):
                pending += _sse("{not json")
                pending += b"0\r\n\r\n"
                flush()
                return
            if options.unfinished_after is not None and sent == min(options.unfinished_after, len(pieces)):
                pending += _sse("[DONE]") + b"0\r\n\r\n"
                flush()
                return
            if sent == len(pieces):
                break
            if paced:
                flush()
                if stop.wait(max(0.0, due - time.monotonic())):
                    self._cut()
                due += interval
            pending += chunk({"content": pieces[sent]})
            if paced or len(pending) >= 16384:
                flush()

        pending += chunk({}, "stop")
        if usage is not None:
            pending += _sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "system_fingerprint": None,
                    "choices": [],
                    "usage": usage,
                }
            )
        pending += _sse("[DONE]") + b"0\r\n\r\n"
        flush()


def _is_missing(model: str) -> bool:
    return model == "missing" or model.startswith("missing-")


def _model_object(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 1700000000, "owned_by": "chat-tui"}


# --------------------------------------------------------------------------------------------------------------
# Lifecycle.


class LocalServer:
    """The server on 127.0.0.1, run by a daemon thread; use as a context manager or start()/stop().

    `options` holds the defaults for every request; change its fields (or replace it) between requests.
    Each request works on its own copy, so a change never affects a stream already running.
    """

    def __init__(self, options: ServerOptions | None = None, *, port: int = 0) -> None:
        self.options: ServerOptions = options if options is not None else ServerOptions()
        self.requests: list[RequestRecord] = []
        """Every chat-completions request with a JSON body, in arrival order."""
        self.errors: list[BaseException] = []
        """Unexpected exceptions in handlers (bugs, not client disconnects): the server never prints them."""
        self._port = port
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._lock = threading.Lock()
        self._connections: dict[socket.socket, threading.Thread] = {}
        self._asked: Counter[str] = Counter()
        """Requests per conversation (sha256 of model and messages), for `ServerOptions.sample`."""

    @property
    def url(self) -> str:
        """The base_url an OpenAI client uses, e.g. "http://127.0.0.1:8000/v1"."""
        if self._httpd is None:
            raise RuntimeError("LocalServer is not running: call start() first.")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def start(self) -> LocalServer:
        """Bind a free port (or the one given) and serve from a daemon thread; returns self."""
        if self._httpd is not None:
            raise RuntimeError("LocalServer is already running.")
        self._stopping.clear()
        httpd = _HTTPServer(("127.0.0.1", self._port), _Handler)
        httpd.local = self
        self._httpd = httpd
        self._thread = threading.Thread(
            target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="chat-tui-server", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and end every open connection, stalled streams included; returns within about 1 s."""
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # stalls and paced waits return at once and cut their stream
        httpd.shutdown()
        httpd.server_close()
        with self._lock:
            open_connections = dict(self._connections)
        for connection in open_connections:
            try:  # wakes handlers blocked reading an idle keep-alive connection
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + 1.0
        for thread in [self._thread, *open_connections.values()]:
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))
        self._thread = None

    def __enter__(self) -> LocalServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self.requests.append(record)

    def _times_asked(self, model: str, messages: list[Any]) -> int:
        """How many times this conversation was asked before (0 the first time)."""
        key = hashlib.sha256(json.dumps([model, messages], sort_keys=True).encode()).hexdigest()
        with self._lock:
            self._asked[key] += 1
            return self._asked[key] - 1

    def _track(self, connection: socket.socket, *, add: bool) -> None:
        with self._lock:
            if add:
                self._connections[connection] = threading.current_thread()
            else:
                self._connections.pop(connection, None)


# --------------------------------------------------------------------------------------------------------------
# Command line.


def _optional(kind: Callable[[str], Any]) -> Callable[[str], Any]:
    return lambda raw: None if raw.lower() in ("none", "null") else kind(raw)


def _parse_args(argv: list[str] | None) -> tuple[int, ServerOptions]:
    parser = argparse.ArgumentParser(
        prog="python -m core.server",
        description="Serve deterministic OpenAI-compatible chat completions on 127.0.0.1 until Ctrl+C.",
    )
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: a free one)")
    parser.add_argument("--tokens", type=int, default=120, help="tokens per reply")
    parser.add_argument("--tps", type=float, default=0.0, help="tokens per second, 0 = as fast as possible")
    parser.add_argument("--status", type=_optional(int), help="answer every request with this HTTP status")
    parser.add_argument("--retry-after", type=_optional(float), help="Retry-After seconds sent with 429")
    parser.add_argument("--stall", type=float, default=0.0, help="seconds to stall ...")
    parser.add_argument("--stall-after", type=int, default=0, help="... after this many content chunks")
    parser.add_argument("--cut-after", type=_optional(int), help="drop the connection after N content chunks")
    parser.add_argument("--malformed-after", type=_optional(int), help="send a non-JSON line after N chunks")
    parser.add_argument("--unfinished-after", type=_optional(int), help="[DONE] after N chunks, no finish_reason")
    parser.add_argument("--api-key", help="require `Authorization: Bearer <key>`")
    parser.add_argument("--sample", action="store_true", help="answer a conversation asked again with another reply")
    args = parser.parse_args(argv)
    names = {f.name for f in dataclasses.fields(ServerOptions)}
    return args.port, ServerOptions(**{name: value for name, value in vars(args).items() if name in names})


def main(argv: list[str] | None = None) -> None:
    """Run the server in the foreground until Ctrl+C or SIGTERM, printing its base URL on the first line."""
    port, options = _parse_args(argv)
    done = threading.Event()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        done.set()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with LocalServer(options, port=port) as server:
            print(server.url, flush=True)
            while not done.wait(0.5):  # a timed wait lets Ctrl+C's KeyboardInterrupt through promptly
                pass
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    main()
