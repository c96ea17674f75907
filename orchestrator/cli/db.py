"""``genesis db upgrade``: apply the schema migrations."""

from __future__ import annotations

from orchestrator.store import db as store_db


def register(sub) -> None:
    p = sub.add_parser("db", help="database administration")
    p.add_argument("action", choices=["upgrade", "current"])
    p.set_defaults(run=run, local_only=True)


def run(app, args) -> int:
    engine = store_db.make_engine(app.settings.db_url)
    try:
        if args.action == "upgrade":
            print(f"database at revision {store_db.upgrade(engine)} (head {store_db.head_revision()})")
        else:
            print(store_db.current_revision(engine) or "base")
    finally:
        engine.dispose()
    return 0
