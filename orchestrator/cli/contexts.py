"""Which Genesis server the CLI talks to, if any: kubeconfig-like contexts.

The contexts file (``~/.genesis/config``; ``GENESIS_CONTEXTS`` or
``--contexts-file`` name another) is YAML::

    current-context: prod
    contexts:
    - name: prod
      server: https://genesis.example.com
      token-file: prod.token          # or token: <bearer token>
      certificate-authority: ca.pem   # optional; relative paths are the file's
      insecure-skip-tls-verify: false

:func:`resolve` is pure: from the flags, the environment and the parsed file
it decides the server, the token and how to verify TLS, or that there is no
server (local mode). Reading the token file, and reading and writing the
contexts file (owner-only), are the edges' (:func:`load`, :func:`save`,
:func:`read_token`). A context's token is sent only to its own server: a
``--server`` or ``GENESIS_SERVER`` naming another one gets ``--token`` or
``GENESIS_TOKEN`` only.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from orchestrator.errors import GenesisError

DEFAULT_FILE = Path("~/.genesis/config")


@dataclass(frozen=True)
class Target:
    """A server to talk to; ``source`` says where it came from (for messages)."""

    server: str
    source: str
    token: str | None = None
    token_file: str | None = None
    verify: bool | str = True


def contexts_path(flag: str | None, env: Mapping[str, str]) -> Path:
    """``--contexts-file``, else ``GENESIS_CONTEXTS``, else ``~/.genesis/config``."""
    return Path(flag or env.get("GENESIS_CONTEXTS") or DEFAULT_FILE).expanduser()


def find(doc: Mapping, name: str) -> dict | None:
    return next((c for c in doc.get("contexts") or [] if c.get("name") == name), None)


def resolve(*, server: str | None, token: str | None, context: str | None, env: Mapping[str, str],
            doc: Mapping, base: Path = Path(".")) -> Target | None:
    """The server the flags (``--server``, ``--token``, ``--context``), the environment
    (``GENESIS_SERVER``, ``GENESIS_TOKEN``) and the contexts file ``doc`` (found in
    directory ``base``) point at, or None for local mode.

    Precedence: ``--context NAME`` picks that context, its fields overridden by the
    flags; otherwise ``--server``, then ``GENESIS_SERVER``, then the current context.
    ``--token``, then ``GENESIS_TOKEN``, beat the context's ``token`` and ``token-file``.
    """
    token = token or env.get("GENESIS_TOKEN") or None
    if context is not None:
        chosen = find(doc, context)
        if chosen is None:
            raise GenesisError(f'context "{context}" not found in the contexts file', code="bad_input")
        source = f'context "{context}"'
    elif server or env.get("GENESIS_SERVER"):
        source = "--server" if server else "GENESIS_SERVER"
        server = server or env["GENESIS_SERVER"]
        current = find(doc, doc.get("current-context") or "") or {}
        # The current context's credentials go along only to the server they belong to.
        chosen = current if _same(current.get("server"), server) else {}
    elif doc.get("current-context"):
        name = doc["current-context"]
        chosen = find(doc, name)
        if chosen is None:
            raise GenesisError(f'current-context "{name}" is not a context in the contexts file', code="bad_config")
        source = f'context "{name}"'
    else:
        return None
    server = server or chosen.get("server")
    if not server:
        raise GenesisError(f"{source} names no server", code="bad_config")
    token_file = None if token else chosen.get("token-file")
    ca = chosen.get("certificate-authority")
    verify: bool | str = (False if chosen.get("insecure-skip-tls-verify")
                          else str(base / Path(ca).expanduser()) if ca else True)
    return Target(server=server.rstrip("/"), source=source, token=token or chosen.get("token") or None,
                  token_file=str(base / Path(token_file).expanduser()) if token_file else None, verify=verify)


def _same(a: str | None, b: str) -> bool:
    return a is not None and a.rstrip("/") == b.rstrip("/")


def set_context(doc: Mapping, name: str, *, server: str | None = None, token: str | None = None,
                token_file: str | None = None, current: bool = False) -> dict:
    """``doc`` with context ``name`` added or updated (a token replaces a token file and
    the other way round), and made current if asked."""
    contexts = [dict(c) for c in doc.get("contexts") or []]
    entry = next((c for c in contexts if c.get("name") == name), None)
    if entry is None:
        if not server:
            raise GenesisError(f'context "{name}" is new: it needs --server', code="bad_input")
        entry = {"name": name}
        contexts.append(entry)
    if server:
        entry["server"] = server.rstrip("/")
    if token is not None:
        entry.pop("token-file", None)
        entry["token"] = token
    if token_file is not None:
        entry.pop("token", None)
        entry["token-file"] = token_file
    out = {**doc, "contexts": contexts}
    if current:
        out["current-context"] = name
    return out


# -- the edges: files ----------------------------------------------------------------


def load(path: Path) -> dict:
    """The contexts file, or an empty one where there is none."""
    try:
        doc = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        return {}
    except (OSError, yaml.YAMLError) as exc:
        raise GenesisError(f"cannot read the contexts file {path}: {exc}", code="bad_config") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("contexts") or [], list):
        raise GenesisError(f"the contexts file {path} is not a mapping with a list of contexts", code="bad_config")
    return doc


def save(path: Path, doc: Mapping) -> None:
    """Replace the file atomically, owner-only: it may hold tokens."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".contexts-")
    try:
        with os.fdopen(fd, "w") as out:
            yaml.safe_dump(dict(doc), out, sort_keys=False)
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_token(target: Target) -> str | None:
    """The bearer token: given, or read from the context's token file."""
    if target.token or not target.token_file:
        return target.token
    try:
        return Path(target.token_file).read_text().strip() or None
    except OSError as exc:
        raise GenesisError(f"cannot read the token file {target.token_file}: {exc.strerror}",
                           code="bad_config") from exc
