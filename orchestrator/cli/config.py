"""``genesis config set-context|use-context|get-contexts``: the contexts file
(:mod:`orchestrator.cli.contexts`), as ``kubectl config`` edits a kubeconfig.

Touches only that file: it needs neither a server nor Genesis's database.
Tokens are written to it (owner-only) but never printed.
"""

from __future__ import annotations

import os

from orchestrator.cli import contexts, printers
from orchestrator.errors import GenesisError


def register(sub) -> None:
    p = sub.add_parser("config", help="contexts: which Genesis server the CLI talks to")
    verbs = p.add_subparsers(dest="config_verb", required=True, metavar="VERB")
    put = verbs.add_parser("set-context", help="add or change a context")
    put.add_argument("name")
    put.add_argument("--server", help="the server's URL, e.g. https://genesis.example.com")
    secret = put.add_mutually_exclusive_group()
    secret.add_argument("--token", help="a bearer token (stored in the file)")
    secret.add_argument("--token-file", help="a file holding the bearer token (read on each call)")
    put.add_argument("--current", action="store_true", help="make it the current context")
    use = verbs.add_parser("use-context", help="make a context the current one")
    use.add_argument("name")
    verbs.add_parser("get-contexts", help="list the contexts (tokens are never shown)")
    p.set_defaults(run=run, standalone=True)


def run(args) -> int:
    path = contexts.contexts_path(args.contexts_file, os.environ)
    doc = contexts.load(path)
    if args.config_verb == "set-context":
        token_file = os.path.abspath(args.token_file) if args.token_file else None
        contexts.save(path, contexts.set_context(doc, args.name, server=args.server, token=args.token,
                                                 token_file=token_file, current=args.current))
        print(f'context "{args.name}" set in {path}' + (" (current)" if args.current else ""))
    elif args.config_verb == "use-context":
        if contexts.find(doc, args.name) is None:
            raise GenesisError(f'context "{args.name}" not found in {path}', code="not_found")
        contexts.save(path, {**doc, "current-context": args.name})
        print(f'switched to context "{args.name}"')
    else:
        print(render(doc))
    return 0


def render(doc: dict) -> str:
    """The contexts as a table; how each authenticates, never its token."""
    rows = [["*" if c.get("name") == doc.get("current-context") else "", c.get("name", ""), c.get("server", ""),
             "token" if c.get("token") else f"token-file {c['token-file']}" if c.get("token-file") else "none"]
            for c in doc.get("contexts") or []]
    return printers.table(rows, ["CURRENT", "NAME", "SERVER", "AUTH"]) if rows else "No contexts found."
