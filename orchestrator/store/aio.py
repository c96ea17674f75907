"""The store as coroutines see it: every call on a worker thread.

The store is synchronous SQLAlchemy; called from the event loop, a slow or
unreachable database would freeze every step, the lease's renewal, NATS
heartbeats and /healthz at once. :class:`AsyncStore` is the one way async
code reaches the store: ``await store.get(id)`` runs ``Store.get`` on a
thread. A call that fails transiently is retried (the policy in
:data:`orchestrator.store.base.RETRY`) under tenacity's async retrying, so
its back-off sleeps never hold a thread either.
The ambient fencing term travels with the call (``asyncio.to_thread`` copies
the context).
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

from tenacity import AsyncRetrying

from orchestrator.errors import StoreError
from orchestrator.store.base import RETRY


class AsyncStore:
    """Awaitable twins of a :class:`orchestrator.store.repository.Store`'s methods."""

    def __init__(self, store) -> None:
        self.sync = store
        self._methods: dict[str, Callable] = {}

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        method = self._methods.get(name)
        if method is None:
            attribute = getattr(self.sync, name)
            if not callable(attribute):
                return attribute
            raw = getattr(getattr(type(self.sync), name, None), "__wrapped__", None)
            method = self._retrying(raw) if raw is not None else self._threaded(attribute)
            self._methods[name] = method
        return method

    def _threaded(self, bound: Callable) -> Callable:
        async def call(*args, **kwargs):
            return await asyncio.to_thread(bound, *args, **kwargs)
        return call

    def _retrying(self, raw: Callable) -> Callable:
        async def call(*args, **kwargs):
            try:  # the usual case first, without a retry state built for every call
                return await asyncio.to_thread(raw, self.sync, *args, **kwargs)
            except StoreError as exc:
                if not exc.transient:
                    raise
            # Lost the connection: the pool's pre-ping replaces it, so the first retry
            # comes at once and the policy's back-off spaces out the rest.
            async for attempt in AsyncRetrying(**RETRY):
                with attempt:
                    return await asyncio.to_thread(raw, self.sync, *args, **kwargs)
        return call

    async def call(self, func: Callable, *args, **kwargs) -> Any:
        """``func(store, *args)`` on a thread: a sync helper that takes the store."""
        return await asyncio.to_thread(func, self.sync, *args, **kwargs)


def as_async(store) -> AsyncStore:
    """``store`` as coroutines use it, whether given sync or already wrapped."""
    return store if isinstance(store, AsyncStore) else AsyncStore(store)
