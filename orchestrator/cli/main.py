"""``genesis``: the admin CLI. Parses arguments, builds the app from settings,
runs one verb, and turns any error into one clear line and exit code 1
(kubectl's convention)."""

from __future__ import annotations

import argparse
import sys

from orchestrator import __version__
from orchestrator.app import App
from orchestrator.cli import apply, db, delete, describe, get, images, logs, mcp, serve, tokens, top
from orchestrator.errors import GenesisError, NotFound
from orchestrator.settings import load_settings
from orchestrator.telemetry.logging import configure_logging

VERBS = (apply, get, describe, logs, delete, top, serve, db, images, tokens, mcp)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genesis", description="Genesis sandbox orchestrator")
    parser.add_argument("--config", help="configuration file (default: $GENESIS_CONFIG or ./genesis.yaml)")
    parser.add_argument("--version", action="version", version=f"genesis {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    sub = parser.add_subparsers(dest="verb", required=True, metavar="COMMAND")
    for verb in VERBS:
        verb.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(verbose=args.verbose, quiet=args.verb not in ("serve",))
    app = None
    try:
        app = App(load_settings(args.config))
        return int(args.run(app, args) or 0)
    except NotFound as exc:
        print(f"Error from server (NotFound): {exc}", file=sys.stderr)
    except GenesisError as exc:
        print(f"error: {exc} ({exc.code})", file=sys.stderr)
    except KeyboardInterrupt:
        return 130
    finally:
        if app is not None:
            app.close()
    return 1


if __name__ == "__main__":
    sys.exit(main())
