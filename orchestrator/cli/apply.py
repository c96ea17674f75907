"""``genesis apply -f request.yaml|json|-``: submit experiments, through the
backend's intake (local: recorded as ``cli``; remote: the server records the
token's name)."""

from __future__ import annotations

import json
import sys

import yaml

from orchestrator.errors import GenesisError


def register(sub) -> None:
    p = sub.add_parser("apply", help="submit an experiment request (YAML or JSON)")
    p.add_argument("-f", "--filename", required=True, action="append", help="file, or - for stdin")
    p.add_argument("--traceparent", help="W3C traceparent to carry into the record")
    p.set_defaults(run=run)


def _read(path: str) -> bytes:
    try:
        return sys.stdin.buffer.read() if path == "-" else open(path, "rb").read()
    except OSError as exc:
        raise GenesisError(f"cannot read {path}: {exc.strerror}", code="bad_input") from exc


def _to_json(raw: bytes, path: str) -> bytes:
    """YAML files become JSON bodies; JSON is passed through untouched."""
    if path.endswith((".yaml", ".yml")):
        try:
            return json.dumps(yaml.safe_load(raw)).encode()
        except yaml.YAMLError as exc:
            raise GenesisError(f"{path} is not valid YAML: {exc}", code="bad_input") from exc
    return raw


async def run(backend, args) -> int:
    status = 0
    for path in args.filename:
        body = _to_json(_read(path), path)
        result = await backend.submit(body, traceparent=args.traceparent, actor="cli")
        if result.error is not None:
            print(f"error: experiment/{result.view.id} rejected: {result.error} ({result.error.code})",
                  file=sys.stderr)
            status = 1
        else:
            print(f"experiment/{result.view.id} {'created' if result.created else 'unchanged'}")
    return status
