"""Blocking SDK calls on threads, with their errors made Genesis's own.

Both the docker and the kubernetes SDKs block. Every runtime method runs
its SDK call on a thread (:func:`translated`), and log streams are pumped
from a thread into the event loop (:func:`stream_in_thread`); each runtime
supplies only how its SDK's exceptions map to :mod:`orchestrator.errors`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from functools import wraps
from typing import AsyncIterator, Callable, Iterable

from orchestrator.errors import GenesisError, RuntimeFailure

# Maps an SDK exception to a GenesisError, or None for "not ours: re-raise".
Translator = Callable[[Exception], GenesisError | None]


def translated(translate: Translator):
    """Decorator: run the blocking method in a thread and translate its errors."""

    def decorate(func):
        @wraps(func)
        async def wrapper(self, *args, **kwargs):
            try:
                return await asyncio.to_thread(func, self, *args, **kwargs)
            except GenesisError:
                raise
            except Exception as exc:
                mapped = translate(exc)
                if mapped is None:
                    raise
                raise mapped from exc

        return wrapper

    return decorate


async def stream_in_thread(produce: Callable[[], Iterable[bytes]], translate: Translator, *,
                           what: str) -> AsyncIterator[str]:
    """Text chunks of a blocking byte stream, read on a thread as they come."""
    queue: asyncio.Queue = asyncio.Queue()
    loop = asyncio.get_running_loop()
    done = object()

    stopped = threading.Event()  # the consumer went away: stop reading (a log flood stays out of memory)

    def pump() -> None:
        stream = None
        try:
            stream = produce()
            for chunk in stream:
                if stopped.is_set():
                    break
                loop.call_soon_threadsafe(queue.put_nowait, chunk.decode("utf-8", "replace"))
        except Exception as exc:  # translated here, raised on the loop side
            mapped = translate(exc) or RuntimeFailure(f"{what}: {exc}")
            loop.call_soon_threadsafe(queue.put_nowait, mapped)
        finally:
            close = getattr(stream, "close", None)
            if stopped.is_set() and close is not None:
                with contextlib.suppress(Exception):
                    close()
            if not loop.is_closed():
                loop.call_soon_threadsafe(queue.put_nowait, done)

    task = asyncio.create_task(asyncio.to_thread(pump))
    try:
        while (item := await queue.get()) is not done:
            if isinstance(item, Exception):
                raise item
            yield item
    finally:
        stopped.set()
        if task.done():
            await task
