"""``genesis mcp``: Genesis as an MCP server on stdio, for an AI assistant
that starts it as a subprocess (Claude Desktop, Cursor, ...; docs/mcp.md).

With ``--server URL`` (or ``$GENESIS_SERVER``) it calls a Genesis server's
HTTP API with the bearer token in ``--token-file`` or ``$GENESIS_TOKEN``,
and the server holds each call to the token's role. Without, it reads and
writes this configuration's database as the local operator (the controller
of ``genesis serve`` runs what it submits). stdout carries the protocol
only; logs go to stderr. The streamable HTTP form is served by
``genesis serve`` itself, at ``/mcp/`` on the API's port.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from orchestrator.domain.access import Principal, Role
from orchestrator.errors import GenesisError

# Against a server, the server decides what the token may do: the local side lets every call through.
REMOTE = Principal(name="remote", role=Role.OPERATOR)


def register(sub) -> None:
    p = sub.add_parser("mcp", help="serve MCP on stdio (tools and resources for AI assistants)")
    p.add_argument("--server", default=os.environ.get("GENESIS_SERVER") or None,
                   help="a Genesis server's API URL, e.g. http://127.0.0.1:8080 (default: $GENESIS_SERVER; "
                        "none: this configuration's database)")
    p.add_argument("--token-file", type=Path, help="file holding the bearer token (default: $GENESIS_TOKEN)")
    p.set_defaults(run=run)


def token_of(args) -> str | None:
    if args.token_file is not None:
        try:
            return args.token_file.read_text().strip() or None
        except OSError as exc:
            raise GenesisError(f"cannot read the token file {args.token_file}: {exc}", code="bad_input") from exc
    return os.environ.get("GENESIS_TOKEN") or None


async def _serve(app, args) -> None:
    from orchestrator.mcp.server import build
    if args.server:
        from orchestrator.backends.remote import RemoteBackend
        async with RemoteBackend(args.server, token=token_of(args)) as backend:
            await build(backend, principal=REMOTE).run_stdio_async()
    else:
        from orchestrator.backends.local import LocalBackend
        await build(LocalBackend(app)).run_stdio_async()


def run(app, args) -> int:
    asyncio.run(_serve(app, args))
    return 0
