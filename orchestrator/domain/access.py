"""Who may do what through the HTTP API: tokens, roles, rate limits.

Pure decisions; :mod:`orchestrator.api.tokens` reads the file and the clock.

- A bearer token is a random string; only its SHA-256 is stored (it has 256
  bits of entropy, so a fast hash is as safe as a slow one and costs nothing
  per request). The tokens file lists each with a name (the audit trail's
  actor), a role, an optional expiry and, for agents, their instances.
- Roles nest: ``viewer`` reads everything; ``agent`` submits and reads only
  the experiments of its own instances; ``operator`` does everything,
  cancelling included.
- Each token gets a token bucket: ``rate`` requests a second, bursts of
  ``burst``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timezone
from enum import Enum

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.errors import Forbidden, GenesisError

TOKEN_PREFIX = "gns_"


class Role(str, Enum):
    VIEWER = "viewer"
    AGENT = "agent"
    OPERATOR = "operator"


class Action(str, Enum):
    READ = "read"  # list, get, logs, watch, audit
    SUBMIT = "submit"
    CANCEL = "cancel"


ALLOWED: dict[Role, frozenset[Action]] = {
    Role.VIEWER: frozenset({Action.READ}),
    Role.AGENT: frozenset({Action.READ, Action.SUBMIT}),
    Role.OPERATOR: frozenset(Action),
}


class TokenEntry(BaseModel):
    """One line of the tokens file."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,62}$")
    role: Role
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    expires: datetime | None = None
    instances: tuple[str, ...] = ()

    @field_validator("expires")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


class TokensFile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tokens: list[TokenEntry] = []

    @field_validator("tokens")
    @classmethod
    def _unique(cls, tokens: list[TokenEntry]) -> list[TokenEntry]:
        names = [t.name for t in tokens]
        if len(names) != len(set(names)):
            raise ValueError("token names must be unique (the audit trail names the token)")
        for token in tokens:
            if token.role is Role.AGENT and not token.instances:
                raise ValueError(f"agent token {token.name!r} lists no instances")
        return tokens


@dataclass(frozen=True)
class Principal:
    """Who is calling: a token's name, role and (agents) instances."""

    name: str
    role: Role
    instances: tuple[str, ...] = ()

    def may(self, action: Action) -> bool:
        return action in ALLOWED[self.role]

    def require(self, action: Action) -> None:
        if not self.may(action):
            raise Forbidden(f"{self.role.value} token {self.name!r} may not {action.value}")

    def sees(self, instance_id: str) -> bool:
        """Agents see only their own instances' experiments; other roles see all."""
        return self.role is not Role.AGENT or instance_id in self.instances

    @property
    def actor(self) -> str:
        """The audit trail's name for this caller."""
        return f"api:{self.name}"


LOCAL_OPERATOR = Principal(name="local", role=Role.OPERATOR)  # loopback without a tokens file


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def authenticate(tokens: TokensFile, presented: str, *, now: datetime) -> Principal | None:
    """The principal ``presented`` is the token of, or None (unknown or expired)."""
    wanted = digest(presented)
    for entry in tokens.tokens:
        if hmac.compare_digest(entry.sha256, wanted):
            if entry.expires is not None and entry.expires <= now:
                return None
            return Principal(name=entry.name, role=entry.role, instances=entry.instances)
    return None


@dataclass
class Bucket:
    """A token bucket: ``take`` spends one token, refilled at ``rate`` a second up to ``burst``."""

    rate: float
    burst: int
    tokens: float = field(default=-1.0)
    stamp: float = 0.0

    def take(self, now: float) -> float:
        """0.0 when the request may go; else the seconds until it could (Retry-After)."""
        if self.tokens < 0:
            self.tokens, self.stamp = float(self.burst), now
        self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``15m``, ``90s`` to seconds (a token's lifetime)."""
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if len(text) < 2 or text[-1] not in units or not text[:-1].isdigit():
        raise GenesisError(f"duration {text!r}: use a number and s, m, h or d (e.g. 30d)", code="bad_input")
    return int(text[:-1]) * units[text[-1]]
