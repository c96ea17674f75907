"""Who is calling the API: bearer tokens from the tokens file, the web UI's
cookie sessions, per-token rate limits.

- The tokens file (``api.tokens_file``; a Kubernetes Secret mounted as a
  directory) is re-read when its modification time or size changes, checked
  at most once a second, so a rotated or revoked token takes effect without
  a restart. A file that no longer parses keeps the last good set and logs
  why (a half-written Secret must not lock every operator out).
- Without a tokens file the API binds only to loopback, and every caller is
  the local operator (a developer's machine).
- A browser cannot put a bearer token on an ``EventSource``: the UI trades a
  token for a session (an HttpOnly, SameSite=Strict cookie, held in this
  process's memory). A session remembers the token's digest and is checked
  against the current file on every request, so revoking the token ends its
  sessions too. Mutations through a session need the session's CSRF token
  in ``X-CSRF-Token``.
"""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import yaml
from pydantic import ValidationError

from orchestrator.domain.access import LOCAL_OPERATOR, Bucket, Principal, TokensFile, authenticate, digest
from orchestrator.errors import Forbidden, GenesisError, Unauthorized

log = logging.getLogger(__name__)

SESSION_COOKIE = "genesis_session"
CSRF_HEADER = "X-CSRF-Token"
LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def load_tokens(path: Path) -> TokensFile:
    """Parse a tokens file; GenesisError(bad_config) says what is wrong with it."""
    try:
        return TokensFile.model_validate(yaml.safe_load(path.read_text()) or {})
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise GenesisError(f"tokens file {path}: {exc}", code="bad_config") from exc


class Tokens:
    """The tokens file, re-read when it changes."""

    def __init__(self, path: Path | None, *, recheck_s: float = 1.0) -> None:
        self.path = path
        self._recheck_s = recheck_s
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] | None = None
        self._checked = 0.0
        self._tokens = load_tokens(path) if path is not None else TokensFile()
        if path is not None:
            self._stamp = self._stat()

    @property
    def required(self) -> bool:
        return self.path is not None

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def current(self) -> TokensFile:
        if self.path is None:
            return self._tokens
        now = time.monotonic()
        if now - self._checked >= self._recheck_s:
            with self._lock:
                self._checked = now
                stamp = self._stat()
                if stamp is not None and stamp != self._stamp:
                    try:
                        self._tokens = load_tokens(self.path)
                        log.info("tokens file reloaded", extra={"entries": len(self._tokens.tokens)})
                    except GenesisError as exc:
                        log.warning("tokens file not reloaded; keeping the last good one", extra={"error": str(exc)})
                    self._stamp = stamp
        return self._tokens

    def principal(self, token: str) -> Principal:
        found = authenticate(self.current(), token, now=datetime.now(timezone.utc))
        if found is None:
            raise Unauthorized("the token is unknown, revoked or expired")
        return found


@dataclass
class Session:
    token_sha256: str
    csrf: str
    expires: float


class Sessions:
    """Cookie sessions of the web UI, in this process's memory."""

    def __init__(self, tokens: Tokens, *, ttl_s: float) -> None:
        self._tokens = tokens
        self._ttl_s = ttl_s
        self._sessions: dict[str, Session] = {}

    def open(self, token: str) -> tuple[str, Session, Principal]:
        """Trade a bearer token for a session id (the cookie) and its CSRF token."""
        principal = self._tokens.principal(token) if self._tokens.required else LOCAL_OPERATOR
        now = time.monotonic()
        self._sessions = {k: s for k, s in self._sessions.items() if s.expires > now}
        sid = secrets.token_urlsafe(32)
        session = Session(token_sha256=digest(token), csrf=secrets.token_urlsafe(24), expires=now + self._ttl_s)
        self._sessions[sid] = session
        return sid, session, principal

    def close(self, sid: str) -> None:
        self._sessions.pop(sid, None)

    def principal(self, sid: str, *, unsafe: bool, csrf: str | None) -> tuple[Principal, Session]:
        session = self._sessions.get(sid)
        if session is None or session.expires <= time.monotonic():
            raise Unauthorized("the session is unknown or expired: sign in again")
        if unsafe and not (csrf and hmac.compare_digest(csrf, session.csrf)):
            raise Forbidden(f"a change through a session needs its CSRF token in {CSRF_HEADER}", code="csrf_failed")
        if not self._tokens.required:
            return LOCAL_OPERATOR, session
        for entry in self._tokens.current().tokens:  # the token must still be valid
            if hmac.compare_digest(entry.sha256, session.token_sha256):
                if entry.expires is None or entry.expires > datetime.now(timezone.utc):
                    return Principal(name=entry.name, role=entry.role, instances=entry.instances), session
        self.close(sid)
        raise Unauthorized("the session's token was revoked or expired: sign in again")


class RateLimits:
    """One token bucket per principal name."""

    def __init__(self, *, rate: float, burst: int) -> None:
        self._rate, self._burst = rate, burst
        self._buckets: dict[str, Bucket] = {}

    def check(self, principal: Principal) -> None:
        bucket = self._buckets.setdefault(principal.name, Bucket(rate=self._rate, burst=self._burst))
        wait = bucket.take(time.monotonic())
        if wait > 0:
            error = Forbidden(f"token {principal.name!r} sent more than {self._rate:g} requests a second",
                              code="rate_limited")
            error.retry_after = wait
            raise error


def check_bind(address: str, tokens: Tokens) -> None:
    """Refuse to serve a non-loopback address without tokens (GenesisError(bad_config))."""
    if address not in LOOPBACK and not tokens.required:
        raise GenesisError(f"api.address {address} is not loopback: set api.tokens_file (every caller needs a token)",
                           code="bad_config")
