"""``genesis mcp``: Genesis as an MCP server on stdio, for an AI assistant
that starts it as a subprocess (Claude Desktop, Cursor, ...; docs/mcp.md).

Against a server (``--server URL``, ``$GENESIS_SERVER`` or the current
context, with the token of ``--token``, ``$GENESIS_TOKEN`` or the context)
it calls the server's HTTP API, and the server holds each call to the
token's role. Without one, it reads and writes this configuration's
database as the local operator (the controller of ``genesis serve`` runs
what it submits). stdout carries the protocol only; logs go to stderr. The
streamable HTTP form is served by ``genesis serve`` itself, at ``/mcp/`` on
the API's port.
"""

from __future__ import annotations

from orchestrator.domain.access import LOCAL_OPERATOR, Principal, Role

# Against a server, the server decides what the token may do: the local side lets every call through.
REMOTE = Principal(name="remote", role=Role.OPERATOR)


def register(sub) -> None:
    p = sub.add_parser("mcp", help="serve MCP on stdio (tools and resources for AI assistants)")
    p.set_defaults(run=run)


async def run(backend, args) -> int:
    from orchestrator.backends.remote import RemoteBackend
    from orchestrator.mcp.server import build
    principal = REMOTE if isinstance(backend, RemoteBackend) else LOCAL_OPERATOR
    await build(backend, principal=principal).run_stdio_async()
    return 0
