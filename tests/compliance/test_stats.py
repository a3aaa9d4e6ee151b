"""`runarchive stats` / Reader.stats: figures match the indexes; the requests it claims."""

from __future__ import annotations

import json

import pytest
from support.backends import Backend

from runarchive import Reader
from runarchive.cli.main import main
from runarchive.compliance.stats import GIB, HOURS_PER_MONTH


def _fill(backend: Backend) -> tuple[list[str], str]:
    """Two finished runs and one left running; returns (finished ids, running id)."""
    archive = backend.open()
    ids = []
    for n in range(2):
        with archive.start_run(agent=f"a{n}") as run:
            messages: list[str] = []
            for i in range(60):
                messages.append(f"message {i} of run {n}: " + "word " * 40)
                run.checkpoint(("plan", "act")[i % 2], {"messages": messages})
                run.event("tool", {"i": i})
            ids.append(run.run_id)
    running = archive.start_run(agent="live")
    running.checkpoint("start", {"x": 1})
    archive.flush()
    return ids, running.run_id


def test_run_and_archive_figures_match_the_indexes(shared_backend: Backend) -> None:
    ids, live = _fill(shared_backend)
    with Reader.open(shared_backend.url, **shared_backend.settings) as reader:
        indexes = {r: reader.index(r) for r in [*ids, live]}
        reader.store.reset()
        one = reader.stats(ids[0])
        assert dict(reader.store.counts) == {"get": 1}  # the index, as documented
        assert one.stats_requests == {"get": 1}
        idx = indexes[ids[0]]
        assert one.records == sum(s.records for s in idx.segments)
        assert one.checkpoints == sum(s.checkpoints for s in idx.segments)
        assert one.events == 60
        assert one.segments == one.flushes == len(idx.segments)
        assert one.raw_bytes == idx.raw_bytes
        assert one.objects == len(idx.segments) + 1
        assert one.stored_bytes > idx.stored_bytes  # + the index object itself
        assert one.ratio is not None
        assert 0 < one.ratio < 1
        assert one.status == "completed"
        assert one.running == 0
        assert one.requests_made == 2 * len(idx.segments) + 3

        reader.store.reset()
        whole = reader.stats()
        # The manifest only: LISTs of writers, days, the day, format 1 shards; 2 objects.
        assert dict(reader.store.counts) == {"list": 4, "get": 2}
        assert whole.runs == 3
        assert whole.running == 1
        assert whole.records == sum(sum(s.records for s in i.segments) for i in indexes.values())
        assert whole.stored_bytes == sum(i.stored_bytes for i in indexes.values())
        assert whole.objects is None

        reader.store.reset()
        listed = reader.stats(objects=True)
        assert dict(reader.store.counts) == {"list": 4 + 1, "get": 2}  # + 1 LIST of runs/
        assert listed.objects == sum(len(i.segments) + 1 for i in indexes.values())
        assert listed.stored_bytes > whole.stored_bytes  # indexes included

        # the cost is the figures times the prices, and says which prices
        assert whole.storage_month == pytest.approx(whole.stored_bytes / GIB * 0.023)
        rate = whole.rates.active_per_hour
        assert rate == pytest.approx(2 * 3600 / 5 + 180)
        assert whole.month_requests(rate) == pytest.approx(rate * HOURS_PER_MONTH * 0.005 / 1000)


def test_prices_are_settings(tmp_path: pytest.TempPathFactory, shared_backend: Backend) -> None:
    _fill(shared_backend)
    with Reader.open(
        shared_backend.url, price_storage_gb_month=1.0, **shared_backend.settings
    ) as reader:
        s = reader.stats()
    assert s.prices.storage_gb_month == 1.0
    assert s.storage_month == pytest.approx(s.stored_bytes / GIB)
    assert s.as_dict()["prices"]["storage_gb_month"] == 1.0


def test_cli_stats_text_and_json(
    shared_backend: Backend, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    ids, live = _fill(shared_backend)
    for key, value in shared_backend.settings.items():
        monkeypatch.setenv(f"RUNARCHIVE_{key.upper()}", str(value))
    assert main(["--url", shared_backend.url, "stats", ids[1]]) == 0
    out = capsys.readouterr().out
    assert ids[1] in out
    assert "$0.023/GB-month" in out
    assert "60 events" in out
    assert main(["--url", shared_backend.url, "stats", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["runs"] == 3
    assert doc["running"] == 1
    assert doc["prices"] == {
        "storage_gb_month": 0.023,
        "put_per_1000": 0.005,
        "get_per_1000": 0.0004,
    }
    assert doc["cost"]["requests_month_if_idle"] == pytest.approx(180 * 730 * 0.005 / 1000)
    assert main(["--url", shared_backend.url, "stats", live, "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["status"] == "running"
    assert main(["--url", shared_backend.url, "stats", "no-such-run"]) == 2
    assert "no run 'no-such-run'" in capsys.readouterr().err
