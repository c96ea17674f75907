"""``genesis tokens create|list|revoke``: the API's bearer tokens.

``create`` prints a new token once (only its SHA-256 is kept) and adds its
entry to the tokens file (``--file``, default ``api.tokens_file``), replaced
atomically, so a running ``genesis serve`` picks it up within a second.
With ``--print-entry`` it only prints the YAML entry, for a Kubernetes
Secret's ``tokens.yaml``.
"""

from __future__ import annotations

import os
import sys
import tempfile
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml

from orchestrator.api.auth import load_tokens
from orchestrator.cli import printers
from orchestrator.domain.access import Role, TokenEntry, TokensFile, digest, new_token, parse_duration
from orchestrator.errors import GenesisError, NotFound


def register(sub) -> None:
    p = sub.add_parser("tokens", help="create, list or revoke API tokens")
    verbs = p.add_subparsers(dest="tokens_verb", required=True, metavar="VERB")
    create = verbs.add_parser("create", help="make a token and add it to the tokens file")
    create.add_argument("name", help="who holds it (shows in the audit trail)")
    create.add_argument("--role", required=True, choices=[r.value for r in Role])
    create.add_argument("--instance", action="append", default=[], help="an agent's instance id (repeatable)")
    create.add_argument("--ttl", help="lifetime, e.g. 30d or 12h (default: no expiry)")
    create.add_argument("--print-entry", action="store_true", help="print the YAML entry instead of writing the file")
    for verb in (create, verbs.add_parser("list", help="names, roles, expiry"),
                 revoke := verbs.add_parser("revoke", help="remove a token by name")):
        verb.add_argument("--file", type=Path, help="tokens file (default: api.tokens_file)")
        verb.set_defaults(run=run, local_only=True)
    revoke.add_argument("name")


def _path(app, args) -> Path:
    path = args.file or app.settings.api.tokens_file
    if path is None:
        raise GenesisError("no tokens file: pass --file or set api.tokens_file", code="bad_input")
    return path


def _read(path: Path) -> TokensFile:
    return load_tokens(path) if path.exists() else TokensFile()


def _write(path: Path, tokens: TokensFile) -> None:
    """Replace the file atomically (readers see the old or the new one), owner-only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    data = {"tokens": [t.model_dump(mode="json", exclude_none=True, exclude_defaults=True) for t in tokens.tokens]}
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tokens-")
    with os.fdopen(fd, "w") as out:
        yaml.safe_dump(data, out, sort_keys=False)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def run(app, args) -> int:
    if args.tokens_verb == "create":
        token = new_token()
        expires = (datetime.now(timezone.utc) + timedelta(seconds=parse_duration(args.ttl))) if args.ttl else None
        entry = TokenEntry(name=args.name, role=Role(args.role), sha256=digest(token), expires=expires,
                           instances=tuple(args.instance))
        TokensFile(tokens=[entry])  # an agent without instances is refused here
        if args.print_entry:
            print(yaml.safe_dump([entry.model_dump(mode="json", exclude_none=True)], sort_keys=False), end="")
        else:
            path = _path(app, args)
            current = _read(path)
            if any(t.name == args.name for t in current.tokens):
                raise GenesisError(f"a token named {args.name!r} exists: revoke it first", code="conflict")
            _write(path, TokensFile(tokens=[*current.tokens, entry]))
            print(f"token/{args.name} created in {path}", file=sys.stderr)
        print(token)
        return 0
    path = _path(app, args)
    current = _read(path)
    if args.tokens_verb == "revoke":
        kept = [t for t in current.tokens if t.name != args.name]
        if len(kept) == len(current.tokens):
            raise NotFound(f'token "{args.name}" not found in {path}')
        _write(path, TokensFile(tokens=kept))
        print(f"token/{args.name} revoked")
        return 0
    rows = [[t.name, t.role.value, ",".join(t.instances) or "-", t.expires.isoformat() if t.expires else "never"]
            for t in current.tokens]
    print(printers.table(rows, ["NAME", "ROLE", "INSTANCES", "EXPIRES"]) if rows else "No resources found.")
    return 0
