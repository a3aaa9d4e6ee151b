"""Cost of telemetry on the append path: ``run.checkpoint()`` / ``run.event()`` p50 with
telemetry off, with opentelemetry-api but no SDK, and with the SDK recording.

Run with ``make bench-telemetry`` or ``.venv/bin/python bench/bench_telemetry.py
[--quick] [--json [PATH]]`` (needs the dev extra: opentelemetry-api and -sdk).

It starts its own SeaweedFS (``tests/support/servers.py``) and opens one archive on it (the
background flusher runs throughout). Telemetry is per process, so before each append
the bench installs one mode's hooks (one assignment) and appends to the same run,
three times per step (once per mode, the order rotated), on the same
growing-transcript states as ``bench_core.py``: the modes share the cache file, its
WAL and the flusher, so only the hooks differ.

* ``off``: no telemetry (the no-op hooks);
* ``api``: ``opentelemetry-api`` on the global providers with no SDK configured (the
  API's no-op proxies: what installing ``runarchive[otel]`` costs an application that
  sets up nothing);
* ``sdk``: a ``MeterProvider`` with an in-memory reader and a ``TracerProvider``
  with a batch span processor, recording everything.

It also times the append hook alone (``telemetry.count_append``) in each mode.
"""

from __future__ import annotations

import sys
import time
import timeit
from pathlib import Path
from typing import Any

from bench_core import Stat, Transcript, open_archive
from common import run_bench, warm_bucket
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from support.servers import S3Server

from runarchive import telemetry

MODES = ("off", "api", "sdk")


def measure(server: S3Server, tmp: Path, quick: bool) -> tuple[str, dict[str, Any]]:
    warmup, samples = (30, 300) if quick else (50, 1000)
    bucket = server.make_bucket("bench-otel")
    warm_bucket(server, bucket)

    telemetry.reset()
    api = telemetry.activate()  # the global providers: no SDK set, so the API's no-ops
    assert api.active, "opentelemetry-api is not installed (make bench-telemetry sets it up)"
    tracer_provider = TracerProvider()
    spans = InMemorySpanExporter()
    tracer_provider.add_span_processor(BatchSpanProcessor(spans))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    sdk = telemetry.configure(tracer_provider, meter_provider)
    hooks = {"off": telemetry.NOOP, "api": api, "sdk": sdk}

    archive = open_archive(server, bucket, "bench", tmp / "cache")  # observed by "sdk"
    run = archive.start_run(agent="bench-telemetry")

    checkpoint: dict[str, list[float]] = {m: [] for m in MODES}
    event: dict[str, list[float]] = {m: [] for m in MODES}
    transcript = Transcript(seed=1)
    perf = time.perf_counter
    for i in range(warmup + samples):
        name, state = transcript.step(i)
        data = transcript.event_data(i)
        for k in range(len(MODES)):
            mode = MODES[(i + k) % len(MODES)]
            telemetry._install(hooks[mode])
            t0 = perf()
            run.checkpoint(name, state)
            t1 = perf()
            run.event("tool_call", data)
            t2 = perf()
            if i >= warmup:
                checkpoint[mode].append(t1 - t0)
                event[mode].append(t2 - t1)

    # The hook alone, per mode: ns per call.
    hook_ns = {}
    for mode in MODES:
        telemetry._install(hooks[mode])
        fn = telemetry.count_append
        n = 200_000
        hook_ns[mode] = min(timeit.repeat(lambda fn=fn: fn("checkpoint"), number=n, repeat=5))
        hook_ns[mode] = hook_ns[mode] / n * 1e9

    telemetry._install(sdk)
    run.complete()
    archive.close()
    telemetry.reset()
    tracer_provider.force_flush()
    flush_spans = sum(1 for s in spans.get_finished_spans() if s.name == "runarchive.flush")
    meter_provider.shutdown()
    tracer_provider.shutdown()

    cp = {m: Stat.of(checkpoint[m]) for m in MODES}
    ev = {m: Stat.of(event[m]) for m in MODES}
    lines = [
        f"append latency, {samples} steps after {warmup} warm-up (ms; growing transcript "
        f"checkpoints, small events; SeaweedFS, durability local, flusher live)",
        f"{'':18}{'p50':>9}{'p90':>9}{'p99':>9}{'ratio p50 vs off':>18}",
    ]
    for label, stats in (("checkpoint", cp), ("event", ev)):
        for mode in MODES:
            ratio = stats[mode].p50 / stats["off"].p50
            s = stats[mode]
            lines.append(
                f"{label + ' ' + mode:18}{s.p50:9.3f}{s.p90:9.3f}{s.p99:9.3f}{ratio:18.3f}"
            )
    lines.append("")
    lines.append(
        "append hook alone (telemetry.count_append), ns per call: "
        + ", ".join(f"{m} {hook_ns[m]:.0f}" for m in MODES)
    )
    lines.append(f"{flush_spans} runarchive.flush spans recorded (in whichever mode was on)")
    payload = {
        "warmup": warmup,
        "samples": samples,
        "checkpoint": {m: vars(cp[m]) for m in MODES},
        "event": {m: vars(ev[m]) for m in MODES},
        "checkpoint_p50_ratio": {m: cp[m].p50 / cp["off"].p50 for m in MODES},
        "event_p50_ratio": {m: ev[m].p50 / ev["off"].p50 for m in MODES},
        "hook_ns": hook_ns,
        "flush_spans": flush_spans,
    }
    return "\n".join(lines), payload


if __name__ == "__main__":
    sys.exit(run_bench(__doc__.splitlines()[0] if __doc__ else "", measure))
