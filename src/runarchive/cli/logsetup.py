"""``-v`` / ``-q``: the library's log records on stderr, for the length of one command.

Imported once the arguments are parsed, so that ``--help`` does not load logging."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

_LOGGER = "runarchive"  # every logger of the library is below it (docs/observability.md)


class _StderrHandler(logging.Handler):
    """Writes to the ``sys.stderr`` of the moment (tests swap it)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            sys.stderr.write(self.format(record) + "\n")
        except Exception:
            self.handleError(record)


def start(verbose: int, quiet: bool) -> Callable[[], None]:
    """Log to stderr from WARNING (``verbose`` 0), INFO (1), DEBUG (2+), or ERROR
    (``quiet``); returns the function that undoes it."""
    if quiet:
        level = logging.ERROR
    else:
        level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logger = logging.getLogger(_LOGGER)
    handler = _StderrHandler(level)
    handler.setFormatter(logging.Formatter("runarchive: %(levelname)s %(name)s: %(message)s"))
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(level)

    def undo() -> None:
        logger.removeHandler(handler)
        logger.setLevel(before)

    return undo
