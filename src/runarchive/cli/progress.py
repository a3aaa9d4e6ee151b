"""Progress bars of the long commands, drawn on stderr when it is a terminal.

The library only calls ``progress(done, total)``; this module decides whether and how
to draw. A ``total`` of 0 means "not known yet" (a listing): a count is shown.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

_WIDTH = 30
_EVERY = 0.1  # seconds between redraws: a fast loop must not flood the terminal


class Bar:
    """A one-line bar: call it with ``(done, total)``; :meth:`close` ends the line.

    With ``stream=None`` it draws nothing (stderr is not a terminal, or
    ``--no-progress``); it still records the last counts, which tests read.
    """

    def __init__(self, label: str, stream: TextIO | None) -> None:
        self.label, self.stream = label, stream
        self.done, self.total = 0, 0
        self._drawn = 0.0
        self._open = False  # a line is drawn and not yet ended

    def __call__(self, done: int, total: int) -> None:
        if self._open and (done < self.done or total < self.total):
            self._end()  # a new phase (e.g. export's upload after its reads): a new line
        self.done, self.total = done, total
        if self.stream is None:
            return
        now = time.monotonic()
        finished = total > 0 and done >= total
        if self._open and not finished and now - self._drawn < _EVERY:
            return  # the first and the last of a phase are always drawn
        self._drawn = now
        if total > 0:
            filled = _WIDTH * min(done, total) // total
            text = f"{self.label} [{'#' * filled}{'.' * (_WIDTH - filled)}] {done}/{total}"
        else:
            text = f"{self.label} {done} ..."
        self.stream.write(f"\r{text}\x1b[K")  # \x1b[K: clear what a longer line left
        self.stream.flush()
        self._open = True
        if finished:
            self._end()

    def _end(self) -> None:
        if self._open and self.stream is not None:
            self.stream.write("\n")
            self.stream.flush()
        self._open = False

    def close(self) -> None:
        """End the line (after an error, or a phase that stopped short of its total)."""
        self._end()


def bar(label: str, enabled: bool) -> Bar:
    """A bar on stderr if ``enabled`` (no ``--no-progress``) and stderr is a terminal."""
    stream = sys.stderr if enabled and sys.stderr.isatty() else None
    return Bar(label, stream)
