"""Turns: send a prompt, stream the reply, cancel, regenerate, edit — and never lose a word of it.

A turn, step by step (see DESIGN.md): one transaction commits the user's message and an empty ``streaming``
reply; only then is the request sent. The reply streams in a task the engine owns, so it survives whatever the
consumer does; its text is flushed at most every ``FLUSH_INTERVAL`` seconds and once at the end, as
``complete``, ``interrupted`` or ``error``. Each turn captures its session and message ids when it starts.
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import aclosing, asynccontextmanager, suppress
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from core.config import Profile, Settings
from core.errors import ChatError, StoreError, StreamBroken
from core.models import Message, Role, Status
from core.provider import close_chat_model, openai_chat_model, provider_error
from core.store import Store

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel
    from langchain_core.messages import BaseMessage

FLUSH_INTERVAL = 0.5
"""Seconds between saves of a streaming reply: a crash loses at most this much of it."""
BATCH_WINDOW = 0.1
"""Once a reply has caught up with the server, it is read at most once per this many seconds (see _ReadPacer)."""
CAUGHT_UP = 0.002
"""A chunk that took longer than this to come had to be waited for: the socket was drained."""
YIELD_EVERY = 0.002
"""Seconds a reply may hold the event loop while it parses chunks that are already read."""


@dataclass(frozen=True, slots=True)
class ReplyDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ReplyUsage:
    prompt_tokens: int | None
    completion_tokens: int | None


@dataclass(frozen=True, slots=True)
class ReplyFinished:
    """The reply ended ``complete`` or ``interrupted`` (cancelled); ``message`` is the saved row."""

    message: Message


@dataclass(frozen=True, slots=True)
class ReplyFailed:
    """The reply ended in ``error``: ``message`` is the saved row (partial text kept), ``error`` says why."""

    message: Message
    error: ChatError


ReplyEvent = ReplyDelta | ReplyUsage | ReplyFinished | ReplyFailed
ModelFactory = Callable[[Profile, str], "BaseChatModel"]
"""Builds the chat model for a profile and its API key (tests may inject another)."""


class Turn:
    """One reply being streamed into its own message row. Iterate it for events; ``cancel()`` to stop it."""

    def __init__(
        self,
        engine: ChatEngine,
        user: Message | None,
        reply: Message,
        profile: Profile,
        request: list[BaseMessage],
    ) -> None:
        self.session_id = reply.session_id
        self.user = user
        """The user message this turn added (None when regenerating an existing one)."""
        self.reply = reply
        """The reply row as committed before the request: empty, ``streaming``."""
        self.profile = profile
        self._engine = engine
        self._events: asyncio.Queue[ReplyEvent] = asyncio.Queue()
        self._started = False
        self._cancel_at_start = False
        self._task = asyncio.create_task(self._run(request), name=f"chat-tui reply {reply.id}")

    @property
    def done(self) -> bool:
        return self._task.done()

    @property
    def result(self) -> Message | None:
        """The reply's row as last saved (or as it ended, if that save failed), once the turn is done."""
        return self._task.result() if self._task.done() else None

    def cancel(self) -> None:
        """Stop the reply: it is saved as ``interrupted`` with its partial text. Safe to call at any time."""
        if self._started:
            self._task.cancel()
        else:
            # A task cancelled before its first step runs none of its code: no saved end, no final event.
            self._cancel_at_start = True

    async def wait(self) -> Message:
        """Wait for the end of the reply and return its saved row."""
        return await asyncio.shield(self._task)

    async def events(self) -> AsyncIterator[ReplyEvent]:
        """Deltas and usage as they come, ending with one ReplyFinished or ReplyFailed.

        Leaving the loop early (break, or the consumer being cancelled) cancels the reply.
        """
        try:
            while True:
                event = await self._events.get()
                yield event
                if isinstance(event, ReplyFinished | ReplyFailed):
                    return
        finally:
            if not self._task.done():
                self.cancel()

    def __aiter__(self) -> AsyncIterator[ReplyEvent]:
        return self.events()

    async def _run(self, request: list[BaseMessage]) -> Message:
        parts: list[str] = []
        usage = ReplyUsage(None, None)
        self._started = True
        saver: asyncio.Task[None] | None = None
        try:
            if self._cancel_at_start:
                raise asyncio.CancelledError
            model = await self._engine.model_for(self.profile)
            saver = asyncio.create_task(self._save_periodically(parts), name=f"chat-tui saves {self.reply.id}")
            finished = False
            pacer = _ReadPacer()
            async with aclosing(model.astream(request)) as stream:
                async for chunk in stream:
                    arrived = time.monotonic()
                    text = _chunk_text(chunk.content)
                    if text:
                        parts.append(text)
                        self._events.put_nowait(ReplyDelta(text))
                    if chunk.usage_metadata:
                        usage = ReplyUsage(
                            chunk.usage_metadata.get("input_tokens"), chunk.usage_metadata.get("output_tokens")
                        )
                        self._events.put_nowait(usage)
                    if chunk.response_metadata.get("finish_reason"):
                        finished = True
                    await pacer.after_chunk(arrived, batching=bool(parts) and not finished)
            if not finished:
                raise StreamBroken("The reply ended before the server finished it; the partial reply was kept.")
            return await self._end("".join(parts), Status.COMPLETE, usage, saver=saver)
        except asyncio.CancelledError:
            return await self._end("".join(parts), Status.INTERRUPTED, usage, saver=saver)
        except Exception as exc:  # noqa: BLE001 - every failure becomes a saved error row and one event
            error = exc if isinstance(exc, ChatError) else provider_error(exc, self.profile)
            return await self._end("".join(parts), Status.ERROR, usage, error, saver=saver)

    async def _save_periodically(self, parts: list[str]) -> None:
        """Save the text streamed so far every FLUSH_INTERVAL while there is new text: on a clock, not when a chunk
        comes, so that text received before the server pauses (a reasoning model, a slow server) is saved too."""
        saved = 0
        while True:
            await asyncio.sleep(FLUSH_INTERVAL)
            if len(parts) != saved:
                count = len(parts)
                # A save the database refuses (locked by another program past the busy timeout, disk full) does not
                # stop the reply: the next interval tries again, and the end says so.
                with suppress(StoreError):
                    await self._engine.store.flush_reply(self.reply.id, "".join(parts[:count]))
                    saved = count

    async def _end(
        self,
        text: str,
        status: Status,
        usage: ReplyUsage,
        error: ChatError | None = None,
        *,
        saver: asyncio.Task[None] | None = None,
    ) -> Message:
        """Save the reply's last state and announce it with the one final event.

        Saved even if cancelled meanwhile (tab closed, Esc pressed twice, app quit): a cancel escaping from here
        would leave no final event, a ``wait()`` that raises and a stale row. If the database refuses the save,
        the final event still comes, as a failure that says so, with the text as it streamed.
        """
        if saver is not None:
            # No periodic save may land after the last one (a cancelled one is rolled back).
            saver.cancel()
            while not saver.done():
                with suppress(asyncio.CancelledError):
                    await asyncio.wait([saver])
        finish = self._engine.store.finish_reply(
            self.reply.id, text, status, error=str(error) if error else None, **_usage_kwargs(usage)
        )
        saving = self._engine.track(finish)
        while not saving.done():
            try:
                await asyncio.shield(saving)
            except asyncio.CancelledError:
                continue
            except Exception:  # noqa: BLE001 - read from the future below
                break
        if (failure := saving.exception()) is not None:
            error = StoreError(f"The reply could not be saved ({failure}); it is shown here but not kept.")
            message = replace(self.reply, content=text, status=Status.ERROR, error=str(error), **_usage_kwargs(usage))
        else:
            message = saving.result()
        self._events.put_nowait(ReplyFinished(message) if error is None else ReplyFailed(message, error))
        return message


class _ReadPacer:
    """When a streaming reply gives the event loop a turn, between one chunk and the next."""

    __slots__ = ("pulled", "yielded", "window_end")

    def __init__(self) -> None:
        self.pulled = self.yielded = time.monotonic()
        """When the last chunk was asked for, and when the loop last had a turn."""
        self.window_end = 0.0

    async def after_chunk(self, arrived: float, *, batching: bool) -> None:
        if batching and arrived - self.pulled > CAUGHT_UP:
            # Caught up with the server: let its next tokens gather in the socket, so that one wake-up and one
            # read carry a batch of them instead of one each (most of a paced token's cost).
            if self.window_end > arrived:
                await asyncio.sleep(self.window_end - arrived)
            self.window_end = time.monotonic() + BATCH_WINDOW
            self.yielded = time.monotonic()
        elif time.monotonic() - self.yielded > YIELD_EVERY:
            # A read can bring hundreds of chunks, which the client parses without giving the loop a turn:
            # 40-100 ms with eight replies at full speed. Let the others run every few ms.
            await asyncio.sleep(0)
            self.yielded = time.monotonic()
        self.pulled = time.monotonic()


def _usage_kwargs(usage: ReplyUsage) -> dict[str, int | None]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens}


def _chunk_text(content: str | list[Any]) -> str:
    if isinstance(content, str):
        return content
    return "".join(p if isinstance(p, str) else str(p.get("text", "")) for p in content)


def _to_langchain(
    history: Sequence[Message], system_prompt: str | None, prompt: str | None = None
) -> list[BaseMessage]:
    """The conversation as the model sees it (failed and unfinished replies left out), then ``prompt``."""
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage

    out: list[BaseMessage] = [SystemMessage(system_prompt)] if system_prompt else []
    for message in history:
        if message.role is Role.USER:
            out.append(HumanMessage(message.content))
        elif message.status in (Status.COMPLETE, Status.INTERRUPTED) and message.content:
            out.append(AIMessage(message.content))
    if prompt is not None:
        out.append(HumanMessage(prompt))
    return out


class ChatEngine:
    """The headless chat engine: owns the store and the model clients. Open with ``async with ChatEngine.open(...)``."""

    def __init__(self, settings: Settings, store: Store, *, model_factory: ModelFactory = openai_chat_model) -> None:
        self.settings = settings
        self.store = store
        self._model_factory = model_factory
        self._models: dict[Profile, BaseChatModel] = {}
        self._turns: set[Turn] = set()
        self._pending: set[asyncio.Future[Any]] = set()

    @classmethod
    @asynccontextmanager
    async def open(
        cls, settings: Settings, *, model_factory: ModelFactory = openai_chat_model
    ) -> AsyncIterator[ChatEngine]:
        store = await Store.open(settings.db_path)
        engine = cls(settings, store, model_factory=model_factory)
        try:
            yield engine
        finally:
            await engine.close()

    async def close(self) -> None:
        """Cancel live replies (saved as interrupted), wait for their last writes, close the database."""
        try:
            turns = list(self._turns)
            for turn in turns:
                turn.cancel()
            # shield: cancelling whoever closes us must not cut the last writes short.
            await asyncio.shield(asyncio.gather(*(t._task for t in turns), *self._pending, return_exceptions=True))
            for model in self._models.values():
                await close_chat_model(model)
        finally:
            await self.store.close()

    # -- plumbing the turns use ------------------------------------------------------------------------------

    def chat_model(self, profile: Profile) -> BaseChatModel:
        """The model for a profile, built once. Safe from a thread: the app builds the default one ahead of use."""
        model = self._models.get(profile)
        if model is None:
            key = profile.resolve_key(self.settings.environ)
            built = self._model_factory(profile, key.reveal())
            # Two builders racing (the app's preload thread and a first send) keep the first one stored: the
            # other was never used, so it holds no connection. Overwriting instead lost a model that close()
            # then never closed, and its pooled connection surfaced as an unclosed socket.
            model = self._models.setdefault(profile, built)
        return model

    async def model_for(self, profile: Profile) -> BaseChatModel:
        """``chat_model`` for the event loop: the first build (imports included, ~1 s) runs in a thread."""
        model = self._models.get(profile)
        return model if model is not None else await asyncio.to_thread(self.chat_model, profile)

    async def settled(self) -> None:
        """Wait for the writes tracked so far (the app's last ones at a quit: drafts, the open tabs)."""
        await asyncio.gather(*self._pending, return_exceptions=True)

    def track(self, coro: Any) -> asyncio.Future[Any]:
        """Run a write that must finish even if its caller is cancelled; close() waits for it."""
        future = asyncio.ensure_future(coro)
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        return future

    @staticmethod
    def preload() -> None:
        """Import the model client (~0.7 s), then freeze what exists; the app calls this after its first frame.

        Python's full collections walk every live object: mid-stream they stalled the event loop 60-150 ms here.
        Freezing what exists once the imports are done takes those objects out of every later collection (and
        `chat-tui` makes full collections rare from its first line, see tui/__main__.py).
        """
        import langchain_openai  # noqa: F401

        gc.freeze()

    # -- turns ---------------------------------------------------------------------------------------------------

    async def _request(
        self, session_id: int, parent_id: int | None, profile: Profile, prompt: str | None = None
    ) -> list[BaseMessage]:
        """What the model is sent: the system prompt, the branch up to ``parent_id``, then ``prompt`` if given."""
        session = await self.store.get_session(session_id)
        history = await self.store.path(parent_id) if parent_id is not None else []
        return _to_langchain(history, session.system_prompt or profile.system_prompt, prompt)

    async def _start(
        self,
        commit: Coroutine[Any, Any, tuple[Message | None, Message]],
        profile: Profile,
        request: list[BaseMessage],
    ) -> Turn:
        """Commit a turn's rows and hand its reply row to a Turn at once, whatever happens to the caller.

        Between the commit and the Turn, nothing may be awaited: a caller cancelled there (a tab closed right after
        Enter) left a ``streaming`` row that no one would ever finish. So both run in a task of their own; a caller
        cancelled meanwhile gets the reply stopped, and saved as interrupted, once it has started.
        """

        async def start() -> Turn:
            user, reply = await commit
            turn = Turn(self, user, reply, profile, request)
            self._turns.add(turn)
            turn._task.add_done_callback(lambda _: self._turns.discard(turn))
            return turn

        def stop_unwanted(task: asyncio.Future[Turn]) -> None:
            if not task.cancelled() and task.exception() is None:
                task.result().cancel()

        starting = self.track(start())
        try:
            return await asyncio.shield(starting)
        except asyncio.CancelledError:
            starting.add_done_callback(stop_unwanted)
            raise

    async def profile_for(self, session_id: int, name: str | None = None) -> Profile:
        """The profile a session sends with: ``name`` if given, else the session's own (with its model choice)."""
        if name is not None:
            return self.settings.profile(name)
        session = await self.store.get_session(session_id)
        profile = self.settings.profile(session.profile if session.profile in self.settings.profiles else None)
        return replace(profile, model=session.model) if session.model else profile

    async def send(self, session_id: int, text: str, *, parent_id: int | None, profile: str | None = None) -> Turn:
        """Add ``text`` as a user message under ``parent_id`` (None: a new root) and stream the reply."""
        chosen = await self.profile_for(session_id, profile)
        chosen.resolve_key(self.settings.environ)  # a missing key fails here, before anything is saved
        request = await self._request(session_id, parent_id, chosen, text)
        return await self._start(self.store.start_turn(session_id, parent_id, text, chosen.model), chosen, request)

    async def regenerate(self, message_id: int, *, profile: str | None = None) -> Turn:
        """A new reply beside an existing one (or to a user message): a sibling, the old one stays."""
        message = await self.store.get_message(message_id)
        user_id = message.id if message.role is Role.USER else message.parent_id
        assert user_id is not None, "an assistant message always has a parent"
        chosen = await self.profile_for(message.session_id, profile)
        chosen.resolve_key(self.settings.environ)
        request = await self._request(message.session_id, user_id, chosen)

        async def commit() -> tuple[Message | None, Message]:
            return None, await self.store.start_reply(message.session_id, user_id, chosen.model)

        return await self._start(commit(), chosen, request)

    async def edit(self, message_id: int, text: str, *, profile: str | None = None) -> Turn:
        """Send ``text`` in place of an earlier user message: a new sibling user message and its reply."""
        message = await self.store.get_message(message_id)
        if message.role is not Role.USER:
            raise ValueError("only user messages can be edited")
        return await self.send(message.session_id, text, parent_id=message.parent_id, profile=profile)

    async def list_models(self, profile: Profile) -> list[str]:
        """The server's ``/v1/models``, for the model picker; an empty list when it has none or fails."""
        import httpx

        base = (profile.base_url or "https://api.openai.com/v1").rstrip("/")
        try:
            key = profile.resolve_key(self.settings.environ).reveal()
            async with httpx.AsyncClient(timeout=min(profile.timeout, 5.0)) as client:
                response = await client.get(f"{base}/models", headers={"Authorization": f"Bearer {key}"})
                response.raise_for_status()
                return sorted(str(m["id"]) for m in response.json().get("data", []))
        except (ChatError, httpx.HTTPError, ValueError, KeyError, TypeError):
            return []
