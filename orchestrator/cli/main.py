"""``genesis``: the admin CLI. Parses arguments, picks the backend, runs one
verb, and turns any error into one clear line and exit code 1 (kubectl's
convention).

With a server configured (``--server``/``GENESIS_SERVER``, or a context of
the contexts file, :mod:`orchestrator.cli.contexts`) the verbs talk to it
over the HTTP API (:class:`~orchestrator.backends.remote.RemoteBackend`);
otherwise to this machine's database and runtime
(:class:`~orchestrator.backends.local.LocalBackend`). A verb is one coroutine
over either, so both print the same. ``serve``, ``db``, ``images build`` and
``tokens`` act on Genesis's own database, runtime and files: they run only
where Genesis runs, never through a server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys

from orchestrator import __version__
from orchestrator.cli import apply, config, contexts, db, delete, describe, get, images, logs, mcp, serve, tokens, top
from orchestrator.errors import GenesisError, NotFound
from orchestrator.settings import load_settings
from orchestrator.telemetry.logging import configure_logging

VERBS = (apply, get, describe, logs, delete, top, serve, db, images, tokens, config, mcp)
# Where to: accepted before or after the verb (`genesis --server URL get exp`, `genesis mcp --server URL`).
TARGET_FLAGS = (
    (("--server",), "a Genesis server's URL (default: $GENESIS_SERVER, else the current context)"),
    (("--token",), "bearer token for the server (default: $GENESIS_TOKEN, else the context's)"),
    (("--context",), "a context of the contexts file"),
    (("--contexts-file",), "contexts file (default: $GENESIS_CONTEXTS or ~/.genesis/config)"),
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genesis", description="Genesis sandbox orchestrator")
    parser.add_argument("--config", help="configuration file (default: $GENESIS_CONFIG or ./genesis.yaml)")
    for flags, text in TARGET_FLAGS:
        parser.add_argument(*flags, help=text)
    parser.add_argument("--version", action="version", version=f"genesis {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for verb in VERBS:
        verb.register(sub)
    for verb_parser in _leaves(sub):
        for flags, text in TARGET_FLAGS:  # SUPPRESS: given only after the verb, they override
            verb_parser.add_argument(*flags, help=text, default=argparse.SUPPRESS)
    return parser


def _leaves(sub) -> list[argparse.ArgumentParser]:
    """Every verb's parser, nested ones (``images build``) included."""
    found = []
    for parser in dict.fromkeys(sub.choices.values()):
        if parser.get_default("standalone"):
            continue  # `config set-context --server URL` names what it writes, not where to go
        nested = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        found += [leaf for action in nested for leaf in _leaves(action)] or [parser]
    return found


def target_of(args) -> contexts.Target | None:
    """The server the flags, the environment and the contexts file name, or None (local)."""
    path = contexts.contexts_path(args.contexts_file, os.environ)
    return contexts.resolve(server=args.server, token=args.token, context=args.context, env=os.environ,
                            doc=contexts.load(path), base=path.parent)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose, quiet=args.verb not in ("serve",))
    try:
        if getattr(args, "standalone", False):
            return int(args.run(args) or 0)
        target = target_of(args)
        if getattr(args, "local_only", False):
            if target is not None:
                raise GenesisError(f"`genesis {args.verb}` runs where Genesis runs, on its own database and "
                                   f"runtime, not through a server ({target.server}, from {target.source}): run it "
                                   f"there, without --server, GENESIS_SERVER or a current context", code="local_only")
            return _local_only(args)
        if getattr(args, "watch", False) or getattr(args, "follow", False):
            _end_at_interrupt()
        return asyncio.run(_run(args, target))
    except NotFound as exc:
        print(f"Error from server (NotFound): {exc}", file=sys.stderr)
    except GenesisError as exc:
        print(f"error: {exc} ({exc.code})", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    return 1


def _end_at_interrupt() -> None:
    """A verb that streams until stopped (a watch, a followed log) ends at Ctrl-C at once,
    with 130, as kubectl's do. It holds nothing to put back (what it printed is flushed line
    by line), and a cancelled HTTP stream's clean-up was seen spinning inside the HTTP
    library under load instead of ending."""
    signal.signal(signal.SIGINT, lambda *_: os._exit(130))


async def _run(args, target: contexts.Target | None) -> int:
    """The verb over the remote backend, or the local one; closed when it ends."""
    if target is not None:
        from orchestrator.backends.remote import RemoteBackend
        async with RemoteBackend(target.server, token=contexts.read_token(target), verify=target.verify) as backend:
            return int(await args.run(backend, args) or 0)
    from orchestrator.app import App
    from orchestrator.backends.local import LocalBackend
    app = App(load_settings(args.config))
    try:
        return int(await args.run(LocalBackend(app), args) or 0)
    finally:
        app.close()


def _local_only(args) -> int:
    from orchestrator.app import App
    app = App(load_settings(args.config))
    try:
        return int(args.run(app, args) or 0)
    finally:
        app.close()


if __name__ == "__main__":
    sys.exit(main())
