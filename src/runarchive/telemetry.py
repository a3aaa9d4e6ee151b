"""Optional OpenTelemetry spans and metrics (extra ``runarchive[otel]``; docs/observability.md).

Only ``opentelemetry-api`` is used: the application chooses the SDK, exporters and
providers. Nothing here imports opentelemetry until an archive or reader is opened
with the ``telemetry`` setting on (the default) *and* the package is installed
(``importlib.util.find_spec``, checked once). Until then, and for good without the
package, every hook is a no-op: :data:`hooks` is :data:`NOOP` (its counters are one
shared object whose ``add`` does nothing, its spans one shared context manager), and
:data:`count_append` — the only hook on the append path — is an empty function.

Once on, telemetry is per process: the spans and counters below report for every
archive of the process; an archive opened with ``telemetry=False`` does not turn it
on, does not report its requests and is not counted in the backlog gauges.

Instruments (tracer and meter name ``runarchive``):

* spans ``runarchive.flush``, ``runarchive.restore``, ``runarchive.manifest.update``,
  ``runarchive.compact``;
* counters ``runarchive.appends`` (``type``; an observable counter fed by in-memory
  counts, so that an append pays a lock and an integer increment, not the SDK's
  ``add``), ``runarchive.flushed_bytes``, ``runarchive.requests`` (``kind``),
  ``runarchive.retries`` (``source``), ``runarchive.conflicts`` (``object``);
* observable gauges ``runarchive.backlog.records``, ``runarchive.backlog.bytes``,
  ``runarchive.backlog.age``, read from memory only (no I/O in their callbacks).

This module imports nothing from runarchive but its version: the store package and every other
module may use it.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import threading
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, Protocol, TypeVar, cast

from runarchive._version import __version__

NAME = "runarchive"
AttrValue = str | int | float | bool
Attrs = Mapping[str, AttrValue]
F = TypeVar("F", bound=Callable[..., Any])

SPANS = (
    "runarchive.flush",
    "runarchive.restore",
    "runarchive.manifest.update",
    "runarchive.compact",
)


class BacklogSource(Protocol):
    """What the backlog gauges read (the flusher of an open archive)."""

    def backlog(self) -> tuple[int, int | None, float | None] | None:
        """(pending records, unflushed bytes or None, age in s of the oldest or None),
        from memory only; ``None`` once closed."""


class Counter(Protocol):
    """The part of an OpenTelemetry counter runarchive uses."""

    def add(self, amount: int | float, attributes: Attrs | None = None) -> None:
        """Add ``amount`` with these attributes."""


class _NoopCounter:
    __slots__ = ()

    def add(self, amount: int | float, attributes: Attrs | None = None) -> None:
        return None


class _NoopSpan:
    """A reusable context manager standing for a span when telemetry is off."""

    __slots__ = ()

    def __enter__(self) -> _NoopSpan:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def set_attribute(self, key: str, value: AttrValue) -> None:
        return None

    def set_attributes(self, attributes: Attrs) -> None:
        return None


NOOP_COUNTER: Counter = _NoopCounter()
NOOP_SPAN = _NoopSpan()


class Hooks:
    """The instruments runarchive reports to. This base class is the no-op set."""

    active = False
    flushed_bytes: Counter = NOOP_COUNTER
    requests: Counter = NOOP_COUNTER
    retried: Counter = NOOP_COUNTER
    conflicts: Counter = NOOP_COUNTER

    def span(
        self, name: str, attributes: Attrs | None = None
    ) -> contextlib.AbstractContextManager[Any]:
        """A span named ``name`` around a block (current while it runs)."""
        return NOOP_SPAN

    def annotate(self, **attributes: AttrValue) -> None:
        """Set attributes on the innermost runarchive span of this thread, if any."""

    def watch_backlog(self, source: BacklogSource) -> None:
        """Include ``source`` in the backlog gauges while it lives."""

    # -- the store observer (runarchive.store.StoreObserver) ---------------------

    def request(self, op: str) -> None:
        """Count one request of kind ``op``."""

    def retries(self, count: int, source: str) -> None:
        """Count ``count`` retries from ``source``."""

    def conflict(self, key: str) -> None:
        """Count a failed conditional write of ``key``."""


NOOP = Hooks()

# The hooks in force. Modules read ``telemetry.hooks`` at each use (never import the
# name), so activation reaches them.
hooks: Hooks = NOOP


def _noop_count_append(rtype: str) -> None:
    return None


# The append path's only hook: ``telemetry.count_append(rtype)`` — one attribute
# lookup and a call to this empty function while telemetry is off.
count_append: Callable[[str], None] = _noop_count_append


def object_kind(key: str) -> str:
    """What a store key holds, for the ``object`` attribute of ``runarchive.conflicts``."""
    if key.startswith("manifest/"):
        return "manifest"
    if "/seg/" in key:
        return "segment"
    if key.endswith("/index.json"):
        return "index"
    return "other"


_current: ContextVar[Any] = ContextVar("runarchive_span", default=None)


class _Live(Hooks):
    """Instruments from opentelemetry-api (global providers unless given)."""

    active = True

    def __init__(self, tracer_provider: Any = None, meter_provider: Any = None) -> None:
        from opentelemetry import metrics, trace  # noqa: PLC0415 - optional, lazy by design

        version = _version()
        if tracer_provider is None:
            self._tracer = trace.get_tracer(NAME, version)
        else:
            self._tracer = tracer_provider.get_tracer(NAME, version)
        meter = (
            metrics.get_meter(NAME, version)
            if meter_provider is None
            else meter_provider.get_meter(NAME, version)
        )
        self.flushed_bytes = meter.create_counter(
            "runarchive.flushed_bytes",
            unit="By",
            description="stored (compressed) bytes of segments made visible by a flush",
        )
        self.requests = meter.create_counter(
            "runarchive.requests", unit="{request}", description="store requests, by kind"
        )
        self.retried = meter.create_counter(
            "runarchive.retries",
            unit="{retry}",
            description="attempts made again: botocore retries, GET bodies read again, "
            "manifest and run index compare-and-swap retries",
        )
        self.conflicts = meter.create_counter(
            "runarchive.conflicts",
            unit="{conflict}",
            description="conditional writes refused (412/409), by object",
        )
        self._sources: weakref.WeakSet[Any] = weakref.WeakSet()
        self._sources_lock = threading.Lock()
        observation = metrics.Observation
        for name, unit, pick, description in (
            ("runarchive.backlog.records", "{record}", 0, "records not in the bucket yet"),
            ("runarchive.backlog.bytes", "By", 1, "record JSON bytes not in the bucket yet"),
            ("runarchive.backlog.age", "s", 2, "age of the oldest record not in the bucket"),
        ):
            meter.create_observable_gauge(
                name,
                callbacks=[functools.partial(self._observe, pick, observation)],
                unit=unit,
                description=description,
            )
        # Appends are counted in memory and observed at collection: the SDK's add()
        # costs ≈ 4 µs a call, this ≈ 0.15 µs (bench/bench_telemetry.py).
        appended: dict[str, int] = {}
        appended_lock = threading.Lock()

        def count(rtype: str) -> None:
            with appended_lock:
                appended[rtype] = appended.get(rtype, 0) + 1

        def observe_appends(_options: Any) -> Iterable[Any]:
            with appended_lock:
                totals = list(appended.items())
            return [observation(n, {"type": rtype}) for rtype, n in totals]

        self.count_append = count
        meter.create_observable_counter(
            "runarchive.appends",
            callbacks=[observe_appends],
            unit="{record}",
            description="checkpoints and events appended (acknowledged)",
        )

    # -- spans -------------------------------------------------------------------

    @contextlib.contextmanager
    def _span(self, name: str, attributes: Attrs | None) -> Iterator[Any]:
        with self._tracer.start_as_current_span(name, attributes=attributes) as span:
            token = _current.set(span)
            try:
                yield span
            finally:
                _current.reset(token)

    def span(
        self, name: str, attributes: Attrs | None = None
    ) -> contextlib.AbstractContextManager[Any]:
        return self._span(name, attributes)

    def annotate(self, **attributes: AttrValue) -> None:
        span = _current.get()
        if span is not None:
            span.set_attributes(attributes)

    # -- gauges ------------------------------------------------------------------

    def watch_backlog(self, source: BacklogSource) -> None:
        with self._sources_lock:
            self._sources.add(source)

    def _observe(self, pick: int, observation: Any, _options: Any) -> Iterable[Any]:
        with self._sources_lock:
            sources = list(self._sources)
        values: list[int | float] = []
        for source in sources:
            got = source.backlog()
            if got is not None and got[pick] is not None:
                values.append(got[pick])
        if not values:
            return []
        return [observation(max(values) if pick == 2 else sum(values))]

    # -- store observer ------------------------------------------------------------

    def request(self, op: str) -> None:
        self.requests.add(1, {"kind": op})

    def retries(self, count: int, source: str) -> None:
        self.retried.add(count, {"source": source})

    def conflict(self, key: str) -> None:
        self.conflicts.add(1, {"object": object_kind(key)})


def _version() -> str:
    return __version__


_lock = threading.Lock()
_on_globals: list[_Live] = []  # the hooks on the global providers, built once


@functools.cache
def available() -> bool:
    """Whether opentelemetry-api can be imported (looked up once, not imported)."""
    try:
        return importlib.util.find_spec("opentelemetry") is not None
    except (ImportError, ValueError):
        return False


def _install(new: Hooks) -> Hooks:
    # Module globals on purpose: callers read ``telemetry.hooks`` at each use, which
    # is the cheapest check there is on the paths that run with telemetry off.
    global hooks, count_append  # noqa: PLW0603
    hooks = new
    count_append = new.count_append if isinstance(new, _Live) else _noop_count_append
    return new


def activate(enabled: bool = True) -> Hooks:
    """Turn telemetry on for the process on the global providers, if ``enabled`` and
    opentelemetry-api is installed; return the hooks in force. Archives and readers
    call it at open with their ``telemetry`` setting; it never turns telemetry off."""
    if not enabled or hooks.active or not available():
        return hooks
    with _lock:
        if hooks.active:
            return hooks
        if not _on_globals:
            try:
                _on_globals.append(_Live())
            except ImportError:  # found but broken: stay off rather than fail the open
                return hooks
        return _install(_on_globals[0])


def configure(tracer_provider: Any = None, meter_provider: Any = None) -> Hooks:
    """Report to these providers instead of the global ones (``None``: the global one).

    For applications that keep their providers to themselves, and for tests. Raises
    ``ImportError`` if opentelemetry-api is not installed. Archives opened later with
    ``telemetry=False`` still do not report their requests or backlog.
    """
    with _lock:
        return _install(_Live(tracer_provider, meter_provider))


def reset() -> None:
    """Back to the no-op hooks (the next archive opened with telemetry on turns it on
    again, on the global providers)."""
    with _lock:
        _install(NOOP)


def attach(enabled: bool, store: Any) -> None:
    """At the open of an archive or reader: :func:`activate` if ``enabled``, and if
    telemetry is then on, make ``store`` (a ``runarchive.store.Store``) report its
    requests, retries and conflicts."""
    if enabled and activate().active:
        store.set_observer(hooks)


def traced(
    name: str,
    before: Callable[..., Mapping[str, AttrValue]],
    after: Callable[[Any], Mapping[str, AttrValue]] | None = None,
) -> Callable[[F], F]:
    """Decorate a function with a span named ``name`` while telemetry is on.

    ``before`` gets the function's arguments and returns the span's first attributes;
    ``after`` gets its result and returns more. While telemetry is off the function is
    called directly (one check).
    """

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            current = hooks
            if not current.active:
                return fn(*args, **kwargs)
            with current.span(name, before(*args, **kwargs)):
                result = fn(*args, **kwargs)
                if after is not None:
                    current.annotate(**after(result))
                return result

        return cast(F, wrapper)

    return decorate


def watch(source: BacklogSource, enabled: bool) -> None:
    """Include ``source`` in the backlog gauges if ``enabled`` and telemetry is on."""
    if enabled:
        hooks.watch_backlog(source)
