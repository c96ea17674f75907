"""AsyncStore: a store method on a worker thread, retried only when it failed transiently."""

import asyncio

import pytest

from orchestrator.errors import StoreError
from orchestrator.store.aio import AsyncStore
from orchestrator.store.base import transient


class Flaky:
    """A store whose ``read`` fails ``failures`` times with ``error`` before answering."""

    def __init__(self, failures: int, error: StoreError) -> None:
        self.failures, self.error, self.calls = failures, error, 0

    @transient
    def read(self, value):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return value * 2


def test_a_call_that_succeeds_runs_once():
    store = Flaky(0, StoreError("unused", transient=True))
    assert asyncio.run(AsyncStore(store).read(21)) == 42
    assert store.calls == 1


def test_a_transient_failure_is_retried_until_it_answers():
    store = Flaky(2, StoreError("database unavailable", transient=True))
    assert asyncio.run(AsyncStore(store).read(21)) == 42
    assert store.calls == 3


def test_a_lasting_failure_is_not_retried():
    store = Flaky(5, StoreError("database: constraint"))
    with pytest.raises(StoreError, match="constraint"):
        asyncio.run(AsyncStore(store).read(21))
    assert store.calls == 1
