"""The model side of a turn: a langchain-openai ``ChatOpenAI`` per profile, and its failures in plain words.

Imported without the OpenAI stack: ``openai`` and ``langchain_openai`` (~0.7 s) load when the first model is built.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING, Any

from core.config import Profile
from core.errors import (
    AuthenticationFailed,
    ChatError,
    ConnectionFailed,
    ModelNotFound,
    ProviderError,
    RateLimited,
    ServerFailed,
    StreamBroken,
    TimedOut,
)

if TYPE_CHECKING:
    import openai
    from langchain_core.language_models import BaseChatModel


def openai_chat_model(profile: Profile, api_key: str) -> BaseChatModel:
    import openai
    from langchain_openai import ChatOpenAI

    client = _dict_chunk_client()(
        base_url=profile.base_url,
        api_key=api_key,
        timeout=profile.timeout,
        max_retries=0,  # a retry would re-send the prompt behind the user's back; failures get a retry button
        # Its own connection pool, closed by ChatEngine.close(): langchain-openai's default pool is shared by the
        # whole process and bound to the first event loop that used it (a later loop gets RuntimeError).
        http_client=openai.DefaultAsyncHttpxClient(),
    )
    return ChatOpenAI(
        model=profile.model,
        base_url=profile.base_url,
        api_key=api_key,  # type: ignore[arg-type]
        temperature=profile.temperature,
        max_tokens=profile.max_tokens,  # type: ignore[call-arg]
        timeout=profile.timeout,
        max_retries=0,
        stream_usage=True,
        root_async_client=client,
        async_client=client.chat.completions,
        # Off: it wraps each chunk in asyncio.wait_for, which on Python 3.11 swallows a cancel that lands as a chunk
        # arrives (the reply then streams on to the end). `timeout` above already bounds each read.
        stream_chunk_timeout=None,
    )


async def close_chat_model(model: BaseChatModel) -> None:
    """Close the connection pool ``openai_chat_model`` gave the model (other models are left alone)."""
    client = getattr(model, "root_async_client", None)
    if client is not None and hasattr(client, "close"):
        await client.close()


@functools.cache
def _dict_chunk_client() -> type[openai.AsyncOpenAI]:
    import openai
    from openai.types.chat import ChatCompletionChunk

    class DictChunkClient(openai.AsyncOpenAI):
        """Streams chat chunks as the JSON objects they arrive as.

        langchain-openai turns each chunk openai builds back into a dict (``model_dump``) before reading it, and
        building it is most of a token's cost on the client: 150 of 250 µs here, per token, for every reply.
        langchain reads plain dicts as they are; everything else is parsed as usual.
        """

        def _process_response_data(self, *, data: object, cast_to: type[Any], response: Any) -> Any:
            if cast_to is ChatCompletionChunk and isinstance(data, dict):
                return data
            return super()._process_response_data(data=data, cast_to=cast_to, response=response)

    return DictChunkClient


def _causes(exc: BaseException) -> list[str]:
    """Class names along the cause chain. By name, because openai may wrap either httpx or its fork httpx2."""
    names: list[str] = []
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            break
        names += [cls.__name__ for cls in type(seen).__mro__]
        seen = seen.__cause__ or seen.__context__
    return names


def provider_error(exc: BaseException, profile: Profile) -> ChatError:
    """Turn whatever the OpenAI SDK or httpx raised into one of our errors, in words a user understands."""
    import openai

    where = profile.base_url or "api.openai.com"
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status in (401, 403):
            key = profile.api_key_env or "the api_key in your config"
            return AuthenticationFailed(f"The server at {where} rejected the API key ({status}). Check {key}.")
        if status == 404:
            return ModelNotFound(f"The server at {where} does not know the model '{profile.model}' (404).")
        if status == 429:
            retry_after = _retry_after(exc.response)
            when = f" Try again in {retry_after:g} s." if retry_after is not None else " Try again in a moment."
            return RateLimited(f"Rate limited by the server (429).{when}", retry_after)
        if status >= 500:
            return ServerFailed(f"The server at {where} failed ({status}). Try again in a moment.")
        return ProviderError(f"The server at {where} refused the request ({status}).")
    causes = _causes(exc)
    if "APITimeoutError" in causes or "TimeoutException" in causes:
        return TimedOut(f"No answer from {where} for {profile.timeout:g} s; the partial reply was kept.")
    if "RemoteProtocolError" in causes or "ReadError" in causes or "StreamError" in causes:
        return StreamBroken("The connection dropped mid-reply; the partial reply was kept.")
    if "APIConnectionError" in causes or "ConnectError" in causes:
        return ConnectionFailed(f"Cannot connect to {where}. Is the server running?")
    if isinstance(exc, json.JSONDecodeError | openai.APIResponseValidationError | ValueError):
        return StreamBroken("The server sent a malformed reply; the partial reply was kept.")
    return ProviderError(f"The request failed: {type(exc).__name__}.")


def _retry_after(response: Any) -> float | None:
    try:
        return float(response.headers["retry-after"])
    except (KeyError, ValueError, TypeError, AttributeError):
        return None
