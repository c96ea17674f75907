"""Leadership terms, and the ambient term every controller write is fenced by.

A :class:`Term` is one tenure of the controller's lease: who holds it, its
generation (it grows at every takeover) and until when, on this process's
monotonic clock, the holder may act. The controller puts its current term
into :data:`FENCE` before a pass; every step it spawns inherits it (asyncio
tasks and ``asyncio.to_thread`` copy the context), so a step always carries
the term it was decided under, however long it runs.

Two checks use it, and both are needed:

- the store's writes: the transaction that writes also checks, in the
  database, that this term's generation still holds the lease and has not
  expired, and is refused otherwise (:mod:`orchestrator.store.base`);
- the runtime's effects (create, start, kill, remove, builds): refused once
  the term has ended or outlived its deadline on the local clock
  (:mod:`orchestrator.controller.fenced`). That check can be overtaken by a
  stop between it and the call, so effects are made safe too: sandboxes are
  killed and removed by the id recorded at creation, never by name.

Writes made where no term is set (the CLI, intake, tests without a leader)
are not fenced: they record requests, never controller decisions.
"""

from __future__ import annotations

import time
from contextvars import ContextVar
from dataclasses import dataclass, field

from orchestrator.errors import NotLeader


@dataclass
class Term:
    """One tenure of a lease; ``valid_until`` moves on at each renewal."""

    lease: str
    holder: str
    generation: int
    valid_until: float  # time.monotonic()
    ended: bool = field(default=False)

    def alive(self) -> bool:
        return not self.ended and time.monotonic() < self.valid_until

    def check(self, what: str) -> None:
        if not self.alive():
            raise NotLeader(f"{what} refused: the lease of generation {self.generation} has lapsed")


FENCE: ContextVar[Term | None] = ContextVar("genesis_fence", default=None)


def check(what: str) -> None:
    """Refuse ``what`` when the ambient term (if any) can no longer act."""
    term = FENCE.get()
    if term is not None:
        term.check(what)
