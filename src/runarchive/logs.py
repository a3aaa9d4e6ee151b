"""Logging conventions of runarchive (docs/observability.md).

Every module logs through ``logging.getLogger(__name__)`` (all under ``runarchive``)
and the library never prints. A record about a run names the run in its message
(``run <id>: ...``) and carries ``run_id`` and ``seq`` (the seq it is about, or
``None``) as record attributes, plus a few named fields (``records``,
``stored_bytes``, ``key``...): :func:`log_run` does both. Records never carry
state, event data, metadata, checkpoint names, object bodies or credentials.

:class:`JsonFormatter` turns records into one JSON object per line with those
attributes, for log shippers.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

# Attributes every LogRecord has: what is not among them came in through ``extra``.
_STANDARD = frozenset(vars(logging.LogRecord("", logging.INFO, "", 0, "", (), None))) | {
    "message",
    "asctime",
    "taskName",
}


def log_run(
    logger: logging.Logger,
    level: int,
    run_id: str,
    seq: int | None,
    msg: str,
    *args: object,
    exc_info: bool = False,
    **fields: Any,
) -> None:
    """Log ``"run <run_id>: " + msg % args`` with ``run_id``, ``seq`` and ``fields`` as
    record attributes (``exc_info``: with the exception being handled). Costs one level
    check when ``level`` is disabled."""
    if logger.isEnabledFor(level):
        logger.log(
            level,
            "run %s: " + msg,
            run_id,
            *args,
            exc_info=exc_info,
            extra={"run_id": run_id, "seq": seq, **fields},
            stacklevel=2,
        )


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``ts`` (UTC, ISO 8601), ``level``, ``logger``,
    ``message``, then every attribute given through ``extra`` (``run_id``, ``seq``...)
    and ``exc`` for a traceback. Usable for any logger, not only runarchive's."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)
