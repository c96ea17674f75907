"""Structured JSON logs, one event per line, configured by the CLI only.

Modules log with ``logging.getLogger(__name__)`` and pass experiment
context in ``extra``; every field given that way appears in the JSON line.
Fields whose names look secret are masked.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}
_SECRET = re.compile(r"pass|secret|token|credential|nkey", re.I)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {"ts": datetime.fromtimestamp(record.created, timezone.utc).isoformat(timespec="milliseconds"),
               "level": record.levelname.lower(), "logger": record.name, "event": record.getMessage()}
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = "***" if _SECRET.search(key) else value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def configure_logging(*, verbose: bool = False, quiet: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else (logging.ERROR if quiet else logging.INFO))
    logging.getLogger("alembic").setLevel(logging.DEBUG if verbose else logging.WARNING)
