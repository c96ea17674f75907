"""The API's shared watch: one poll fans out to every watcher, each change once."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone

from orchestrator.api.watch import Watchers

from test_printers import view


def test_changes_fan_out_once_each_and_not_the_look_back_before_the_first_watcher():
    now = datetime.now(timezone.utc)
    old = view(id="old", created_at=now - timedelta(seconds=5), updated_at=now - timedelta(seconds=5))
    store = {"views": [old]}
    polls = []

    async def changed_since(since):
        polls.append(since)
        return list(store["views"])

    async def scenario():
        watchers = Watchers(changed_since, interval_s=0.01)
        first, second = watchers.subscribe(), watchers.subscribe()
        stamp = datetime.now(timezone.utc)
        new = view(id="new", created_at=stamp, updated_at=stamp)
        store["views"] = [old, new]
        got = [await asyncio.wait_for(q.get(), 2) for q in (first, second)]
        moved = view(id="new", created_at=stamp, updated_at=stamp + timedelta(seconds=1))
        store["views"] = [old, moved]
        again = [await asyncio.wait_for(q.get(), 2) for q in (first, second)]
        await asyncio.sleep(0.05)  # more polls: nothing more to say
        left = (first.qsize(), second.qsize())
        watchers.unsubscribe(first)
        watchers.unsubscribe(second)
        await watchers.close()
        return got, again, left

    got, again, left = asyncio.run(scenario())
    assert [(kind, v.id) for kind, v in got] == [("ADDED", "new"), ("ADDED", "new")]  # "old" predates them
    assert [(kind, v.id) for kind, v in again] == [("MODIFIED", "new"), ("MODIFIED", "new")]
    assert left == (0, 0) and len(polls) >= 3
