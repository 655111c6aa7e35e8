"""The local OpenAI-compatible server, driven over real HTTP by httpx and by the openai client."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from core.server import (
    DirectiveError,
    LocalServer,
    ServerOptions,
    parse_directives,
    reply_text,
    reply_tokens,
    strip_directives,
)

ROOT = Path(__file__).resolve().parent.parent
PIECE = re.compile(r"\n| *\S+")  # a newline, or one word with its leading space or indentation


@pytest.fixture
def server() -> Iterator[LocalServer]:
    with LocalServer() as local:
        yield local
    assert local.errors == []


@pytest.fixture
async def client(server: LocalServer) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=10) as oa:
        yield oa


def user(content: Any) -> list[Any]:
    return [{"role": "user", "content": content}]


async def collect(
    client: openai.AsyncOpenAI, content: Any, into: list[str] | None = None, **kwargs: Any
) -> tuple[list[str], list[Any]]:
    """Stream a reply; return its content pieces and every chunk. Pieces also go to `into` as they arrive."""
    pieces = into if into is not None else []
    chunks: list[Any] = []
    stream = await client.chat.completions.create(model="demo", messages=user(content), stream=True, **kwargs)
    async for chunk in stream:
        chunks.append(chunk)
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
    return pieces, chunks


# -- the reply -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", [0, 1, 2, 5, 14, 15, 16, 17, 18, 20, 21, 50, 120, 777, 3000])
@pytest.mark.parametrize("prompt", ["", "hi", "Explain *asyncio* [x] `now` " * 8])
def test_reply_has_exactly_tokens_word_sized_pieces(prompt: str, tokens: int) -> None:
    pieces = reply_tokens(prompt, tokens)

    assert len(pieces) == tokens
    assert "".join(pieces) == reply_text(prompt, tokens)
    assert all(PIECE.fullmatch(piece) for piece in pieces), [p for p in pieces if not PIECE.fullmatch(p)]


def test_reply_is_markdown_that_echoes_the_prompt() -> None:
    text = reply_text("How do I read a file in Python?")
    lines = text.split("\n")

    assert lines[0] == "You asked: *How do I read a file in Python?*"
    assert any(line.startswith("## ") for line in lines)
    assert any(line.startswith("- ") for line in lines)
    assert "```python" in lines and lines.count("```") == 1
    long = reply_text("How do I read a file in Python?", 1000).split("\n")
    assert any(line.startswith("1. ") for line in long)
    assert any(line.startswith("### ") for line in long)
    assert "| Name | Value |" in long


@pytest.mark.parametrize("tokens", range(20, 700, 23))
def test_reply_never_leaves_a_code_fence_open(tokens: int) -> None:
    text = reply_text(f"prompt {tokens}", tokens)
    lines = text.split("\n")
    assert lines.count("```python") == lines.count("```")
    assert text.endswith(".")  # a whole closing paragraph fills the reply up to `tokens`


def test_echo_is_short_and_escaped() -> None:
    first = reply_text("*bold* " + "word " * 40).split("\n")[0]
    assert first.startswith("You asked: *\\*bold\\* word")
    assert first.endswith("…*") and len(first) < 90


def test_reply_is_deterministic_across_processes() -> None:
    code = "from core.server import reply_text; print(reply_text('same prompt', 300), end='')"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env={**os.environ, "PYTHONHASHSEED": seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in ("1", "2")
    }
    assert outputs == {reply_text("same prompt", 300)}
    assert reply_text("same prompt") == reply_text("same prompt")
    assert reply_text("same prompt") != reply_text("same prompt!")


# -- directives ------------------------------------------------------------------------------------------------


def test_directives_are_parsed_and_stripped() -> None:
    text = "Tell me [[tokens=5 tps=2.5 status=none]] a joke\n[[cut_after=3]]"

    assert strip_directives(text) == "Tell me a joke"
    assert strip_directives("[[stall=1]]  plain") == "plain"
    assert parse_directives(text) == {"tokens": 5, "tps": 2.5, "status": None, "cut_after": 3}
    assert parse_directives("no directive") == {}


@pytest.mark.parametrize(
    "text", ["[[api_key=x]]", "[[tokens]]", "[[tokens=many]]", "[[tps=-1]]", "[[status=200]]", "[[stall=none]]"]
)
def test_bad_directives_are_refused(text: str) -> None:
    with pytest.raises(DirectiveError):
        parse_directives(text)


async def test_bad_directive_is_a_400(client: openai.AsyncOpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="tokenz"):
        await collect(client, "hi [[tokenz=3]]")


# -- streamed and plain replies ----------------------------------------------------------------------------------


async def test_stream_assembles_the_reply_and_ends_with_usage(client: openai.AsyncOpenAI) -> None:
    pieces, chunks = await collect(client, "Write a haiku [[tokens=60]]", stream_options={"include_usage": True})

    assert pieces == reply_tokens("Write a haiku", 60)
    assert chunks[0].choices[0].delta.role == "assistant" and chunks[0].choices[0].delta.content == ""
    assert [c.choices[0].finish_reason for c in chunks[1:-1]] == [None] * 60 + ["stop"]
    assert chunks[-2].choices[0].delta.content is None
    assert chunks[-1].choices == []
    usage = chunks[-1].usage
    assert (usage.prompt_tokens, usage.completion_tokens, usage.total_tokens) == (4, 60, 64)
    assert {c.id for c in chunks} == {chunks[0].id} and chunks[0].model == "demo"


def test_stream_wire_format(server: LocalServer) -> None:
    with httpx.Client(base_url=server.url) as http:
        body = {"model": "demo-fast", "messages": user("wire [[tokens=3]]"), "stream": True}
        response = http.post("/chat/completions", json=body)

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    assert response.headers["transfer-encoding"] == "chunked"
    events = response.text.split("\n\n")
    assert events[-1] == "" and events[-2] == "data: [DONE]"
    assert all(event.startswith("data: ") and "\n" not in event for event in events[:-1])
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert len(chunks) == 5  # role, 3 content pieces, finish; no usage chunk unless asked for
    for chunk in chunks:
        assert chunk["object"] == "chat.completion.chunk" and chunk["model"] == "demo-fast"
        assert isinstance(chunk["created"], int) and chunk["id"].startswith("chatcmpl-")
        (choice,) = chunk["choices"]
        assert choice.keys() >= {"index", "delta", "finish_reason", "logprobs"} and choice["logprobs"] is None
    assert chunks[-1]["choices"][0] == {"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}


async def test_non_streamed_reply(client: openai.AsyncOpenAI) -> None:
    completion = await client.chat.completions.create(model="demo", messages=user("plain please [[tokens=33]]"))

    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == reply_text("plain please", 33)
    assert completion.choices[0].finish_reason == "stop"
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (3, 33)


async def test_sample_answers_a_conversation_asked_again_with_another_reply(
    client: openai.AsyncOpenAI, server: LocalServer
) -> None:
    asked = [await client.chat.completions.create(model="demo", messages=user("again")) for _ in range(3)]
    assert {completion.choices[0].message.content for completion in asked} == {reply_text("again")}

    server.options.sample = True
    asked = [await client.chat.completions.create(model="demo", messages=user("again")) for _ in range(3)]
    other = await client.chat.completions.create(model="demo", messages=user("other"))
    replies = [completion.choices[0].message.content for completion in asked]
    # Counted from the first time sampling was on; another conversation has its own count.
    assert replies == [reply_text("again", variant=n) for n in range(3)] and len(set(replies)) == 3
    assert other.choices[0].message.content == reply_text("other")
    assert all(reply.startswith("You asked: *again*") for reply in replies)


async def test_content_parts_are_read_as_text(client: openai.AsyncOpenAI, server: LocalServer) -> None:
    parts = [{"type": "text", "text": "first part"}, {"type": "text", "text": "second [[tokens=9]]"}]
    pieces, _ = await collect(client, parts)

    assert server.requests[-1].prompt == "first part\nsecond"
    assert pieces == reply_tokens("first part\nsecond", 9)


async def test_options_are_defaults_that_can_change_between_requests(
    client: openai.AsyncOpenAI, server: LocalServer
) -> None:
    server.options.tokens = 7
    assert len((await collect(client, "a"))[0]) == 7
    server.options = ServerOptions(tokens=11)
    assert len((await collect(client, "a"))[0]) == 11
    assert len((await collect(client, "a [[tokens=2]]"))[0]) == 2


async def test_requests_are_recorded(client: openai.AsyncOpenAI, server: LocalServer) -> None:
    before = time.time()
    await collect(client, "record me [[tokens=3]]")
    messages = [{"role": "system", "content": "be brief"}, *user("and me")]
    await client.chat.completions.create(model="demo-long", messages=messages)

    first, second = server.requests
    assert (first.model, first.stream, first.prompt) == ("demo", True, "record me")
    assert first.messages == user("record me [[tokens=3]]") and first.overrides == {"tokens": 3}
    assert (second.model, second.stream, second.prompt, second.messages) == ("demo-long", False, "and me", messages)
    assert before <= first.time <= second.time <= time.time()


async def test_models_and_unknown_paths(client: openai.AsyncOpenAI, server: LocalServer) -> None:
    ids = [model.id async for model in client.models.list()]
    assert {"demo", "demo-fast", "demo-long"} <= set(ids)
    with pytest.raises(openai.NotFoundError):
        await client.models.retrieve("missing")

    with httpx.Client(base_url=server.url) as http:
        for response in (http.get("/nowhere"), http.post("/nowhere", json={})):
            assert response.status_code == 404
            assert response.json()["error"].keys() >= {"message", "type", "code"}


# -- faults ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_status_directive_raises_the_matching_error(
    client: openai.AsyncOpenAI, status: int, error: type[openai.APIStatusError]
) -> None:
    with pytest.raises(error) as caught:
        await collect(client, f"hi [[status={status} retry_after=2]]")

    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict) and caught.value.body.keys() >= {"message", "type", "code"}
    assert caught.value.response.headers.get("retry-after") == ("2" if status == 429 else None)


async def test_status_option_answers_every_request(client: openai.AsyncOpenAI, server: LocalServer) -> None:
    server.options.status = 500
    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            await client.chat.completions.create(model="demo", messages=user("hi"))
    server.options.status = None
    assert (await client.chat.completions.create(model="demo", messages=user("hi"))).choices


@pytest.mark.parametrize("model", ["missing", "missing-gpt-9"])
async def test_unknown_model_is_404_model_not_found(client: openai.AsyncOpenAI, model: str) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        await client.chat.completions.create(model=model, messages=user("hi"), stream=True)
    assert caught.value.code == "model_not_found"


async def test_api_key_is_checked() -> None:
    with LocalServer(ServerOptions(api_key="secret", tokens=4)) as local:
        async with openai.AsyncOpenAI(base_url=local.url, api_key="wrong", max_retries=0) as wrong:
            with pytest.raises(openai.AuthenticationError):
                await collect(wrong, "hi")
            with pytest.raises(openai.AuthenticationError):
                await wrong.models.list()
        async with openai.AsyncOpenAI(base_url=local.url, api_key="secret", max_retries=0) as right:
            assert len((await collect(right, "hi"))[0]) == 4
        with httpx.Client(base_url=local.url) as http:
            response = http.get("/models")
        assert response.status_code == 401 and "didn't provide" in response.json()["error"]["message"]
    assert local.errors == []


async def test_cut_stream_raises_connection_error(client: openai.AsyncOpenAI) -> None:
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError) as caught:
        await collect(client, "cut me [[tokens=30 cut_after=7]]", into=received)

    assert not isinstance(caught.value, openai.APITimeoutError)
    assert received == reply_tokens("cut me", 30)[:7]


def test_cut_stream_leaves_the_chunked_body_incomplete(server: LocalServer) -> None:
    body = {"model": "demo", "messages": user("cut [[cut_after=2]]"), "stream": True}
    with httpx.Client(base_url=server.url) as http, pytest.raises(httpx.RemoteProtocolError):
        http.post("/chat/completions", json=body)


async def test_malformed_chunk_raises_json_error(client: openai.AsyncOpenAI) -> None:
    received: list[str] = []
    # The openai client does not wrap this one: a bad data line surfaces as the json module's own error.
    with pytest.raises(json.JSONDecodeError):
        await collect(client, "garble [[tokens=30 malformed_after=4]]", into=received)

    assert received == reply_tokens("garble", 30)[:4]


def test_malformed_chunk_ends_the_body_cleanly_without_done(server: LocalServer) -> None:
    body = {"model": "demo", "messages": user("garble [[tokens=5 malformed_after=2]]"), "stream": True}
    with httpx.Client(base_url=server.url) as http:
        events = http.post("/chat/completions", json=body).text.split("\n\n")

    assert events[-2:] == ["data: {not json", ""]
    assert len(events) == 1 + 2 + 2  # role chunk, 2 content chunks, the bad line, and the final empty split


@pytest.mark.parametrize("after", [2, 99])  # 99: past the end, the whole reply and still no finish
def test_unfinished_stream_ends_cleanly_without_a_finish_reason(server: LocalServer, after: int) -> None:
    prompt = f"trail off [[tokens=5 unfinished_after={after}]]"
    body = {"model": "demo", "messages": user(prompt), "stream": True, "stream_options": {"include_usage": True}}
    with httpx.Client(base_url=server.url) as http:
        streamed = http.post("/chat/completions", json=body)
        plain = http.post("/chat/completions", json={"model": "demo", "messages": user(prompt)}).json()

    events = streamed.text.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    chunks = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    kept = reply_tokens("trail off", 5)[:after]
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * (1 + len(kept))  # and no usage chunk
    assert [c["choices"][0]["delta"]["content"] for c in chunks] == ["", *kept]
    assert plain["choices"][0]["finish_reason"] is None
    assert plain["choices"][0]["message"]["content"] == "".join(kept)


async def test_tps_paces_the_stream(client: openai.AsyncOpenAI) -> None:
    arrivals: list[float] = []
    start = time.monotonic()
    stream = await client.chat.completions.create(
        model="demo", messages=user("slowly [[tokens=10 tps=40]]"), stream=True
    )
    async for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            arrivals.append(time.monotonic())

    assert len(arrivals) == 10
    assert arrivals[-1] - start >= 0.8 * 10 / 40
    assert arrivals[-1] - arrivals[0] >= 0.8 * 9 / 40  # spread out, not sent in one burst
    assert arrivals[-1] - start < 5


async def test_stall_then_client_timeout(server: LocalServer) -> None:
    received: list[str] = []
    async with openai.AsyncOpenAI(base_url=server.url, api_key="x", max_retries=0, timeout=0.5) as impatient:
        start = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await collect(impatient, "wait [[tokens=20 stall=30 stall_after=3]]", into=received)

    assert received == reply_tokens("wait", 20)[:3]
    assert time.monotonic() - start < 5


def test_stop_is_prompt_while_a_request_stalls() -> None:
    threads_before = set(threading.enumerate())
    local = LocalServer(ServerOptions(stall=30)).start()
    body = {"model": "demo", "messages": user("hang"), "stream": True}
    with httpx.Client(base_url=local.url, timeout=10) as idle, httpx.Client(base_url=local.url, timeout=10) as http:
        assert idle.get("/models").is_success  # leaves a keep-alive connection open, its handler waiting
        with http.stream("POST", "/chat/completions", json=body) as response:
            lines = response.iter_lines()
            assert next(lines).startswith("data: ")  # the role chunk, sent before the stall

            start = time.monotonic()
            local.stop()
            assert time.monotonic() - start < 2
            with pytest.raises(httpx.RemoteProtocolError):
                list(lines)
    assert local.errors == []
    assert set(threading.enumerate()) <= threads_before  # the stalled handler ended too, not just its socket


def test_client_disconnect_is_silent(server: LocalServer, capfd: pytest.CaptureFixture[str]) -> None:
    body = {"model": "demo", "messages": user("leave early [[tokens=500 tps=200]]"), "stream": True}
    with httpx.Client(base_url=server.url) as http:
        with http.stream("POST", "/chat/completions", json=body) as response:
            next(response.iter_lines())
        time.sleep(0.3)  # the handler keeps writing into the closed connection meanwhile
        assert http.post("/chat/completions", json={"messages": user("still here [[tokens=3]]")}).is_success

    server.stop()
    assert server.errors == []
    assert capfd.readouterr().err == ""


def test_handler_bug_is_kept_not_printed(monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]) -> None:
    def broken(prompt: str, tokens: int = 120, variant: int = 0) -> list[str]:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr("core.server.reply_tokens", broken)
    with LocalServer() as local, httpx.Client(base_url=local.url) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/chat/completions", json={"messages": user("hi")})

    assert [type(error) for error in local.errors] == [ZeroDivisionError]
    assert capfd.readouterr().err == ""


async def test_many_concurrent_streams(client: openai.AsyncOpenAI, server: LocalServer) -> None:
    prompts = [f"prompt number {n} [[tokens=40 tps=200]]" for n in range(60)]
    start = time.monotonic()
    results = await asyncio.gather(*(collect(client, prompt) for prompt in prompts))

    assert [pieces for pieces, _ in results] == [reply_tokens(strip_directives(p), 40) for p in prompts]
    assert len(server.requests) == 60
    assert time.monotonic() - start < 60 * 40 / 200 / 2  # they overlapped instead of queueing one by one


# -- lifecycle and command line ----------------------------------------------------------------------------------


def test_lifecycle() -> None:
    local = LocalServer()
    with pytest.raises(RuntimeError):
        _ = local.url
    with local:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", local.url)
        with pytest.raises(RuntimeError):
            local.start()
    local.stop()  # a second stop is harmless
    with pytest.raises(RuntimeError):
        _ = local.url


def test_command_line_serves_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "core.server", "--port", "0", "--tokens", "7", "--api-key", "k"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+/v1", url)
        with httpx.Client(base_url=url, headers={"Authorization": "Bearer k"}) as http:
            response = http.post("/chat/completions", json={"model": "demo", "messages": user("cli")})
        assert response.json()["choices"][0]["message"]["content"] == reply_text("cli", 7)

        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=5)
        assert process.returncode == 0 and err == ""
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
