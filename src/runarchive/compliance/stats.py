"""Storage and request figures of a run or a whole archive, with an estimated cost.

What ``runarchive stats`` and :meth:`Reader.stats` compute. Everything comes from
what the bucket already keeps: a run's figures from its index (1 GET), the
archive's from the manifest (a whole scan: 1 GET per manifest object). Counting the
archive's objects needs a LIST of ``runs/`` (1 LIST per 1,000 objects), so it is
opt-in (``objects=True``, ``--objects``).

Request rates of running runs are the model of ``docs/design.md`` ("Costs") at
this configuration's ``flush_age`` and ``lease_seconds``: an active run flushes at
most every ``flush_age`` seconds, 2 requests per flush (segment PUT + index PUT),
and every running run's lease is renewed every ``lease_seconds / 3`` by one
manifest PUT (shared by all the running runs of the writer process, so per run it
is an upper bound). Costs use the ``price_*`` settings (AWS S3 Standard us-east-1 list
prices by default): they are estimates, not a bill; the output states the prices.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from runarchive.format.model import RunIndex, utcnow

if TYPE_CHECKING:
    from runarchive.config import ArchiveConfig
    from runarchive.engine.manifest.core import Manifest
    from runarchive.engine.restore import ProgressCallback
    from runarchive.store import Store

GIB = 1024**3
HOURS_PER_MONTH = 730.0  # AWS bills a month as 730 hours
MANIFEST_REQUESTS_PER_RUN = 3  # listed: live PUT; finished: done PUT + live PUT


@dataclass(frozen=True)
class Prices:
    """The prices a cost estimate used (``price_*`` settings)."""

    storage_gb_month: float
    put_per_1000: float
    get_per_1000: float

    def line(self) -> str:
        return (
            f"${self.storage_gb_month:g}/GB-month, ${self.put_per_1000:g} per 1,000 PUT/LIST, "
            f"${self.get_per_1000:g} per 1,000 GET (settings price_*; GB = 2^30 bytes)"
        )


@dataclass(frozen=True)
class Rates:
    """Requests per hour of one running run at a configuration's flush/lease timing."""

    flush_age: float
    lease_seconds: float
    active_per_hour: float  # flushes (2 requests each) + lease renewals
    idle_per_hour: float  # lease renewals only

    @classmethod
    def of(cls, flush_age: float, lease_seconds: float) -> Rates:
        renewals = 3600.0 / (lease_seconds / 3.0)
        return cls(flush_age, lease_seconds, 2 * 3600.0 / flush_age + renewals, renewals)


@dataclass
class Stats:
    """Figures of one run (``run_id`` set) or of the whole archive (``run_id`` None)."""

    url: str
    run_id: str | None
    runs: int
    running: int
    records: int
    stored_bytes: int  # segment bytes (plus index bytes for a run; LIST sizes with objects)
    prices: Prices
    rates: Rates
    objects: int | None = None  # None: not counted (bucket stats without objects=True)
    raw_bytes: int | None = None
    checkpoints: int | None = None
    events: int | None = None
    segments: int | None = None
    flushes: int | None = None  # index writes, ≈ one per segment
    status: str | None = None
    hours: float | None = None  # run: created -> ended (or now)
    requests_made: int | None = None  # run: PUTs it cost so far (flushes + manifest)
    cost_requests_made: float | None = None
    stats_requests: dict[str, int] = field(default_factory=dict)  # what computing this cost

    @property
    def ratio(self) -> float | None:
        """Stored bytes / raw JSON bytes (None when the raw size is unknown)."""
        return self.stored_bytes / self.raw_bytes if self.raw_bytes else None

    @property
    def storage_month(self) -> float:
        """Storage cost of one month at the current size."""
        return self.stored_bytes / GIB * self.prices.storage_gb_month

    def month_requests(self, per_hour: float) -> float:
        """Cost of ``per_hour`` PUTs for each running run over a month."""
        return self.running * per_hour * HOURS_PER_MONTH * self.prices.put_per_1000 / 1000

    def as_dict(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["compression_ratio"] = self.ratio
        doc["cost"] = {
            "storage_month": self.storage_month,
            "requests_month_if_active": self.month_requests(self.rates.active_per_hour),
            "requests_month_if_idle": self.month_requests(self.rates.idle_per_hour),
            "requests_made": self.cost_requests_made,
            "hours_per_month": HOURS_PER_MONTH,
        }
        return doc


def _money(x: float) -> str:
    return f"${x:,.4f}" if x < 1 else f"${x:,.2f}"


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _base(cfg: ArchiveConfig) -> tuple[Prices, Rates]:
    prices = Prices(cfg.price_storage_gb_month, cfg.price_put_per_1000, cfg.price_get_per_1000)
    return prices, Rates.of(cfg.flush_age, cfg.lease_seconds)


def run_stats(config: ArchiveConfig, run_id: str, index: RunIndex, index_bytes: int) -> Stats:
    """Figures of one run from its index (already read: 1 GET) at ``config``'s prices
    and timing."""
    prices, rates = _base(config)
    segs = index.segments
    end: datetime = index.ended_at or (utcnow() if index.status == "running" else index.updated_at)
    hours = max((end - index.created_at).total_seconds(), 0.0) / 3600.0
    made = 2 * len(segs) + MANIFEST_REQUESTS_PER_RUN
    return Stats(
        url=config.resolved_url,
        run_id=run_id,
        runs=1,
        running=int(index.status == "running"),
        records=sum(s.records for s in segs),
        stored_bytes=index.stored_bytes + index_bytes,
        prices=prices,
        rates=rates,
        objects=len(segs) + len(index.retired) + 1,
        raw_bytes=index.raw_bytes,
        checkpoints=sum(s.checkpoints for s in segs),
        events=sum(s.events for s in segs),
        segments=len(segs),
        flushes=len(segs),
        status=index.status,
        hours=hours,
        requests_made=made,
        cost_requests_made=made * prices.put_per_1000 / 1000,
    )


def archive_stats(
    config: ArchiveConfig,
    manifest: Manifest,
    store: Store,
    *,
    objects: bool = False,
    progress: ProgressCallback | None = None,
) -> Stats:
    """Figures of the whole archive from ``manifest`` (a whole scan); with ``objects``,
    also count and size every object of ``store`` under ``runs/`` (1 LIST request per
    1,000 objects). ``progress`` is told ``(counted, 0)`` every 1,000 objects (the total
    is unknown until the listing ends), then ``(counted, counted)``."""
    prices, rates = _base(config)
    entries = manifest.entries(limit=None)
    stored = sum(e.stored_bytes for e in entries)
    count: int | None = None
    if objects:
        count, stored = 0, 0
        for meta in store.list("runs/"):
            count += 1
            stored += meta.size
            if progress is not None and count % 1000 == 0:
                progress(count, 0)
        if progress is not None:
            progress(count, count)
    return Stats(
        url=config.resolved_url,
        run_id=None,
        runs=len(entries),
        running=sum(e.status == "running" for e in entries),
        records=sum(e.records for e in entries),
        stored_bytes=stored,
        prices=prices,
        rates=rates,
        objects=count,
    )


def format_stats(s: Stats) -> str:
    """The text ``runarchive stats`` prints."""
    out = [f"archive   {s.url}"]
    if s.run_id is not None:
        out.append(f"run       {s.run_id} ({s.status}, {s.hours or 0:.2f} h)")
        out.append(
            f"records   {s.records} ({s.checkpoints} checkpoints, {s.events} events) in "
            f"{s.segments} segments; {s.flushes} flushes (index writes ≈ segments)"
        )
    else:
        out.append(f"runs      {s.runs} ({s.running} running), {s.records} records")
    objs = "not counted (--objects: 1 LIST per 1,000 objects)" if s.objects is None else s.objects
    out.append(f"objects   {objs}")
    stored = f"stored    {_size(s.stored_bytes)}"
    if s.raw_bytes:
        stored += f" ({_size(s.raw_bytes)} of JSON; stored/raw = {s.ratio:.3f})"
    out.append(stored)
    if s.requests_made is not None:
        out.append(
            f"requests  ≈ {s.requests_made} PUTs so far (2 per flush + "
            f"{MANIFEST_REQUESTS_PER_RUN} manifest) = {_money(s.cost_requests_made or 0)}"
        )
    r = s.rates
    out.append(
        f"rate      a running run: ≤ {r.active_per_hour:,.0f} requests/h while appending "
        f"(2 per flush every {r.flush_age:g} s + lease), {r.idle_per_hour:,.0f}/h idle "
        f"(lease renewal every {r.lease_seconds / 3:g} s)"
    )
    out.append(f"prices    {s.prices.line()}")
    out.append(f"cost      storage {_money(s.storage_month)} per month at this size")
    if s.running:
        out.append(
            f"          + {s.running} running run(s) for a month: "
            f"{_money(s.month_requests(r.active_per_hour))} if appending all the time, "
            f"{_money(s.month_requests(r.idle_per_hour))} if idle (requests)"
        )
    used = ", ".join(f"{k} {v}" for k, v in sorted(s.stats_requests.items()))
    out.append(f"(estimate at list prices, not a bill; this command made {used or '0'} requests)")
    return "\n".join(out)
