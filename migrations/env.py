"""Alembic environment: runs migrations on the connection Genesis hands in,
or on ``$GENESIS_DATABASE_URL`` when called through the alembic CLI."""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine

config = context.config


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = os.environ.get("GENESIS_DATABASE_URL", "sqlite:///.genesis/genesis.db")
    engine = create_engine(url)
    with engine.connect() as conn:
        context.configure(connection=conn, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
