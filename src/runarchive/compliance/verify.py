"""Verify: read a run's objects back and check everything that can be checked.

A pure part (:func:`check_index`: what the index alone must satisfy) and an
executor (:func:`verify_runs`) that GETs the index and every segment, decodes and
hashes them, follows the hash chain, looks for objects the index does not list,
and compares the index with the manifest. Nothing is written.

Every finding is a :class:`Problem` naming the object. ``error`` problems mean the
history is not sound (corrupt, missing, out of chain, inconsistent); ``warning``
problems are states a crash or a flush in progress leaves behind (an orphan
segment of a running run, a manifest entry that lags its index) and that the next
flush or ``gc`` resolves.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from runarchive.crypto.keyring import Keyring
from runarchive.crypto.sealing import check_sealed, open_index, segment_raw, split_sealed
from runarchive.engine.manifest.core import RunEntry
from runarchive.engine.restore import ProgressArg, progress_for
from runarchive.errors import (
    CorruptObjectError,
    DecryptionError,
    FormatVersionError,
    KeyUnavailableError,
    ObjectNotFoundError,
)
from runarchive.format.codec import (
    index_key,
    parse_records,
    read_head,
    run_prefix,
    split_header,
)
from runarchive.format.indexpages import load_index
from runarchive.format.model import CHAIN_FROM_VERSION, Checkpoint, RunIndex
from runarchive.store import Store

Severity = Literal["error", "warning"]


@dataclass(frozen=True)
class Problem:
    """One finding: what is wrong, how bad, where."""

    kind: str  # corrupt, missing, out-of-chain, seq-gap, inconsistent, orphan, manifest...
    severity: Severity
    run_id: str
    key: str | None
    message: str

    def __str__(self) -> str:
        where = f" {self.key}" if self.key else ""
        return f"{self.severity.upper()} {self.kind} [{self.run_id}]{where}: {self.message}"


@dataclass
class VerifyReport:
    """What :func:`verify_runs` checked and found."""

    runs: int = 0
    segments: int = 0
    records: int = 0
    objects_read: int = 0
    bytes_read: int = 0
    seconds: float = 0.0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when no problem is an error (warnings allowed)."""
        return not any(p.severity == "error" for p in self.problems)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form (``runarchive verify --json``)."""
        out = asdict(self)
        out["ok"] = self.ok
        return out


def _p(kind: str, sev: Severity, run_id: str, key: str | None, msg: str) -> Problem:
    return Problem(kind, sev, run_id, key, msg)


def check_index(index: RunIndex) -> list[Problem]:
    """What the index alone must satisfy: contiguous seq ranges from 1, consistent
    counts, ``last_seq``, and (format 2) the chain links and head. Pure."""
    out: list[Problem] = []
    run, ikey = index.run_id, index_key(index.run_id)
    expected_first, prev_sha = 1, None
    links: set[str | None] = {None}  # what the next ref may name as prev_sha256
    for ref in index.segments:
        if ref.first_seq != expected_first:
            kind = "seq-gap" if ref.first_seq > expected_first else "seq-overlap"
            out.append(
                _p(
                    kind,
                    "error",
                    run,
                    ref.key,
                    f"starts at seq {ref.first_seq}, expected {expected_first}",
                )
            )
        span = ref.last_seq - ref.first_seq + 1
        if span < 1 or ref.records + ref.dropped != span:
            out.append(
                _p(
                    "inconsistent",
                    "error",
                    run,
                    ref.key,
                    f"records {ref.records} + dropped "
                    f"{ref.dropped} do not cover seqs {ref.first_seq}..{ref.last_seq}",
                )
            )
        if ref.records != ref.checkpoints + ref.events:
            out.append(
                _p(
                    "inconsistent",
                    "error",
                    run,
                    ref.key,
                    f"records {ref.records} != checkpoints {ref.checkpoints} + events {ref.events}",
                )
            )
        if ref.format >= CHAIN_FROM_VERSION and ref.prev_sha256 not in links:
            out.append(
                _p(
                    "out-of-chain",
                    "error",
                    run,
                    ref.key,
                    f"links to {_short(ref.prev_sha256)}, "
                    f"but the segment before it is {_short(prev_sha)}",
                )
            )
        expected_first, prev_sha = ref.last_seq + 1, ref.sha256
        # A merged segment (format 4) may be named by its own hash or by the hash of
        # the last segment it replaced, which the next segment was chained to.
        links = {ref.sha256, ref.link} if ref.link else {ref.sha256}
    last = index.segments[-1].last_seq if index.segments else 0
    if index.last_seq != last:
        out.append(
            _p(
                "inconsistent",
                "error",
                run,
                ikey,
                f"last_seq {index.last_seq} but the last segment ends at {last}",
            )
        )
    chained = index.format >= CHAIN_FROM_VERSION and any(
        s.format >= CHAIN_FROM_VERSION for s in index.segments
    )
    if chained and index.chain_head != prev_sha:
        out.append(
            _p(
                "out-of-chain",
                "error",
                run,
                ikey,
                f"chain_head is {_short(index.chain_head)}, the last segment is {_short(prev_sha)}",
            )
        )
    return out


def _merged_away(index: RunIndex, key: str) -> bool:
    """Whether ``key`` is a segment live compaction replaced: listed as retired, or
    its seq range (from its key) inside a merged segment of the index. Such objects
    wait for the writer or ``gc`` to delete them after the grace period."""
    if any(r.key == key for r in index.retired):
        return True
    m = _SEG_RANGE.search(key)
    if m is None:
        return False
    first, last = int(m.group(1)), int(m.group(2))
    return any(
        ref.level > 0 and ref.first_seq <= first and last <= ref.last_seq for ref in index.segments
    )


_SEG_RANGE = re.compile(r"/seg/([0-9]+)-([0-9]+)-[0-9a-f]{16}\.")


def _short(sha: str | None) -> str:
    return "none" if sha is None else sha[:16] + "..."


@dataclass
class _RunResult:
    problems: list[Problem] = field(default_factory=list)
    segments: int = 0
    records: int = 0
    objects: int = 0
    bytes: int = 0


class _Verifier:
    def __init__(
        self, store: Store, workers: int, keyring: Keyring | None, required: bool = False
    ) -> None:
        self.store, self.workers, self.keyring = store, workers, keyring
        self.required = required  # encryption_required: plaintext is an error

    def sealed_without_key(
        self, index: RunIndex, pos: int, body: bytes, res: _RunResult, exc: KeyUnavailableError
    ) -> _RunResult:
        """What can be checked of a sealed segment without its key: the stored SHA-256
        (the chain is of stored objects) and the plaintext header."""
        ref, run = index.segments[pos], index.run_id
        try:
            check_sealed(body, ref, run)
        except CorruptObjectError as bad:
            res.problems.append(_p("corrupt", "error", run, ref.key, bad.detail))
            return res
        res.problems.append(
            _p(
                "not-decrypted",
                "warning",
                run,
                ref.key,
                f"stored SHA-256 and chain checked; records not (key {exc.key_id} unavailable)",
            )
        )
        res.records = ref.records
        return res

    def sealed_fields(self, index: RunIndex) -> list[Problem]:
        """An encrypted index's sealed metadata/result/error open (AES-GCM tags hold);
        with encryption required, nothing is plaintext."""
        ikey = index_key(index.run_id)
        if self.required:
            plain = [
                _p("plaintext", "error", index.run_id, s.key, "not encrypted")
                for s in index.segments
                if s.dek is None
            ]
            if not index.keys:
                plain.insert(0, _p("plaintext", "error", index.run_id, ikey, "not encrypted"))
            if plain:
                return plain
        if not index.sealed:
            return []
        try:
            open_index(index, self.keyring, ikey)
        except DecryptionError as exc:
            return [_p("tampered", "error", index.run_id, ikey, exc.detail)]
        except KeyUnavailableError as exc:
            msg = f"sealed fields not opened (key {exc.key_id} unavailable)"
            return [_p("not-decrypted", "warning", index.run_id, ikey, msg)]
        except CorruptObjectError as exc:
            return [_p("corrupt", "error", index.run_id, ikey, exc.detail)]
        return []

    def segment(self, index: RunIndex, pos: int) -> _RunResult:
        ref, res, run = index.segments[pos], _RunResult(segments=1), index.run_id
        try:
            body = self.store.get(ref.key).body
        except ObjectNotFoundError:
            res.problems.append(
                _p("missing", "error", run, ref.key, "listed by the index, not in the bucket")
            )
            return res
        res.objects, res.bytes = 1, len(body)
        try:
            raw = segment_raw(body, ref, run, self.keyring, index.keys)
            header, rest = split_header(raw, ref.key, ref.format)
            records = parse_records(rest, ref.key, first_line=1 if header is None else 2)
        except DecryptionError as exc:
            res.problems.append(_p("tampered", "error", run, ref.key, exc.detail))
            return res
        except CorruptObjectError as exc:
            res.problems.append(_p("corrupt", "error", run, ref.key, exc.detail))
            return res
        except KeyUnavailableError as exc:
            return self.sealed_without_key(index, pos, body, res, exc)
        res.records = len(records)
        if len(body) != ref.stored_bytes:
            res.problems.append(
                _p(
                    "size",
                    "warning",
                    run,
                    ref.key,
                    f"{len(body)} bytes, the index says {ref.stored_bytes}",
                )
            )
        if header is not None:
            before = index.segments[pos - 1] if pos else None
            prev = before.sha256 if before else None
            links = {prev, before.link} if before is not None and before.link else {prev}
            want = {
                "run": run,
                "first_seq": ref.first_seq,
                "last_seq": ref.last_seq,
                "records": ref.records,
            }
            got = {k: header.get(k) for k in want}
            if got != want:
                res.problems.append(
                    _p(
                        "corrupt",
                        "error",
                        run,
                        ref.key,
                        f"header {got} does not match the index {want}",
                    )
                )
            if header.get("prev_sha256") not in links:
                res.problems.append(
                    _p(
                        "out-of-chain",
                        "error",
                        run,
                        ref.key,
                        "header links to "
                        f"{_short(_str(header.get('prev_sha256')))}, the "
                        f"previous segment is {_short(prev)}",
                    )
                )
        seqs = [r.seq for r in records]
        cps = sum(isinstance(r, Checkpoint) for r in records)
        if (
            len(records) != ref.records
            or cps != ref.checkpoints
            or seqs != sorted(set(seqs))
            or any(not ref.first_seq <= s <= ref.last_seq for s in seqs)
            or any(r.run != run for r in records)
        ):
            res.problems.append(
                _p(
                    "corrupt",
                    "error",
                    run,
                    ref.key,
                    f"{len(records)} records "
                    f"({cps} checkpoints), seqs {seqs[:1]}..{seqs[-1:]}: do not "
                    f"match the index ({ref.records} records, {ref.checkpoints} "
                    f"checkpoints, seqs {ref.first_seq}..{ref.last_seq}, "
                    "increasing, this run)",
                )
            )
        return res

    def orphan(self, index: RunIndex, key: str) -> Problem:
        # An object under seg/ the index does not list. One that extends the chain
        # past its head is a flush that did not reach the index: normal while the run
        # runs (a crash, or a flush in progress), an error once the index is final.
        run = index.run_id
        header: dict[str, object] | None
        try:
            body = self.store.get(key).body
            if key.endswith(".sealed"):
                # The link to the previous segment is inside the ciphertext: the seq
                # range (in the plaintext header) decides alone.
                header, _, _ = split_sealed(body, key)
                header["prev_sha256"] = index.chain_head
            else:
                # Only the header line is needed: an orphan has no ref to bound it.
                header, _ = split_header(read_head(body, key), key, CHAIN_FROM_VERSION)
        except (CorruptObjectError, ObjectNotFoundError):
            header = None
        last = index.segments[-1] if index.segments else None
        heads = {index.chain_head, last.link if last is not None else None} - {None}
        extends = (
            header is not None
            and (
                header.get("prev_sha256") in heads or header.get("prev_sha256") == index.chain_head
            )
            and isinstance(header.get("first_seq"), int)
            and header.get("first_seq") == index.last_seq + 1
        )
        if extends and index.status != "running":
            return _p(
                "truncated",
                "error",
                run,
                key,
                "continues the chain past the index's "
                f"head, but the run is {index.status}: the index lost its last segment",
            )
        what = (
            "continues the chain past the head (a flush that did not finish)"
            if extends
            else "not listed by the index (a retried or interrupted flush)"
        )
        return _p("orphan", "warning", run, key, f"{what}; `runarchive gc` removes it")

    def run(
        self, run_id: str, entry: RunEntry | None, listed: list[str] | None
    ) -> tuple[RunIndex | None, _RunResult]:
        res, ikey = _RunResult(), index_key(run_id)
        try:
            got = self.store.get(ikey)
        except ObjectNotFoundError:
            if entry is not None and entry.last_seq > 0:
                res.problems.append(
                    _p(
                        "missing",
                        "error",
                        run_id,
                        ikey,
                        f"the manifest lists the run up to seq {entry.last_seq}, its index is gone",
                    )
                )
            elif listed:
                res.problems.append(
                    _p(
                        "orphan",
                        "warning",
                        run_id,
                        ikey,
                        f"{len(listed)} objects and no index (a run whose first flush failed)",
                    )
                )
            return None, res
        res.objects, res.bytes = 1, len(got.body)
        try:
            index = load_index(self.store, got.body, ikey)
        except FormatVersionError as exc:
            res.problems.append(_p("format", "error", run_id, ikey, str(exc)))
            return None, res
        except CorruptObjectError as exc:
            # The object at fault: the head, or one of its pages (format 4).
            res.problems.append(_p("unreadable", "error", run_id, exc.key or ikey, exc.detail))
            return None, res
        res.problems.extend(check_index(index))
        res.problems.extend(self.sealed_fields(index))
        if entry is not None:
            res.problems.extend(_against_manifest(index, entry))
        if listed is not None:
            known = {s.key for s in index.segments} | {r.key for r in index.retired} | {ikey}
            res.problems.extend(
                self.orphan(index, k)
                for k in sorted(set(listed) - known)
                if not _merged_away(index, k)
            )
        return index, res


def _str(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _against_manifest(index: RunIndex, entry: RunEntry) -> list[Problem]:
    out, run, ikey = [], index.run_id, index_key(index.run_id)
    # Heads a compaction replaced stay valid: the manifest may not have caught up.
    chain = {s.sha256 for s in index.segments} | {c.old_chain_head for c in index.compactions}
    if entry.status != "running" and index.status == "running":
        out.append(
            _p(
                "manifest",
                "error",
                run,
                ikey,
                f"the manifest says {entry.status}, the "
                "index says running: the index was rolled back",
            )
        )
    elif entry.status != index.status:
        out.append(
            _p(
                "manifest",
                "warning",
                run,
                ikey,
                f"the manifest still says "
                f"{entry.status}, the index {index.status} (updated at the next flush)",
            )
        )
    if entry.last_seq > index.last_seq:
        out.append(
            _p(
                "manifest",
                "error",
                run,
                ikey,
                f"the manifest saw seq {entry.last_seq} "
                f"archived, the index only {index.last_seq}: the index was rolled back",
            )
        )
    head = getattr(entry, "chain_head", None)
    chain |= {s.link for s in index.segments if s.link}
    # A head live compaction merged away inside a window can no longer be named;
    # the seq range check above still catches a rollback.
    merged = any(
        s.level > 0 and s.first_seq <= entry.last_seq <= s.last_seq for s in index.segments
    )
    if isinstance(head, str) and head not in chain and not merged:
        out.append(
            _p(
                "out-of-chain",
                "error",
                run,
                ikey,
                f"the manifest recorded chain head "
                f"{_short(head)}, which is not in the index's chain",
            )
        )
    return out


def verify_runs(
    store: Store,
    run_ids: Iterable[str] | None,
    entries: dict[str, RunEntry],
    *,
    workers: int = 8,
    progress: ProgressArg = None,
    keyring: Keyring | None = None,
    encryption_required: bool = False,
) -> VerifyReport:
    """Verify the given runs (``None``: every run the bucket or the manifest knows).

    ``entries`` are the manifest's entries by run id. Cost: 1 LIST of the runs'
    keys (one per run when ids are given, one for the archive otherwise), 1 GET per
    index, 1 GET per segment (in parallel), 1 GET per orphan segment.
    """
    began = time.perf_counter()
    listed: dict[str, list[str]] = {}
    if run_ids is None:
        for meta in store.list("runs/"):
            parts = meta.key.split("/")
            if len(parts) >= 3:
                listed.setdefault(parts[1], []).append(meta.key)
        ids = sorted(set(listed) | set(entries))
    else:
        ids = list(dict.fromkeys(run_ids))
        for rid in ids:
            listed[rid] = [m.key for m in store.list(run_prefix(rid))]
    verifier, report = _Verifier(store, workers, keyring, encryption_required), VerifyReport()
    indexes: list[RunIndex] = []
    for rid in ids:
        segs = [k for k in listed.get(rid, []) if "/seg/" in k]
        index, res = verifier.run(rid, entries.get(rid), segs)
        _add(report, res)
        if index is not None:
            report.runs += 1
            indexes.append(index)
        elif res.problems:
            report.runs += 1
    jobs = [(ix, pos) for ix in indexes for pos in range(len(ix.segments))]
    bar = progress_for(len(jobs), "verifying", progress)

    def one(job: tuple[RunIndex, int]) -> _RunResult:
        out = verifier.segment(*job)
        bar.step()
        return out

    if jobs:
        with ThreadPoolExecutor(max_workers=min(workers, len(jobs))) as pool:
            for res in pool.map(one, jobs):
                _add(report, res)
    report.problems.sort(key=lambda p: (p.run_id, p.severity != "error", p.key or ""))
    report.seconds = time.perf_counter() - began
    return report


def _add(report: VerifyReport, res: _RunResult) -> None:
    report.problems.extend(res.problems)
    report.segments += res.segments
    report.records += res.records
    report.objects_read += res.objects
    report.bytes_read += res.bytes


__all__ = ["Problem", "VerifyReport", "check_index", "verify_runs"]
