"""Persistence: SQLAlchemy tables, the repository over them, migrations glue."""
