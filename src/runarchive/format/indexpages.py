"""The paged run index (format 4): a small head that names immutable pages of refs.

A run index used to list every segment, so each flush rewrote an object that grew
with the run's history. Format 4 keeps the mutable object small: the head
``runs/<id>/index.json`` (the only object a writer compare-and-swaps, which is where
fencing lives) holds the run's fields, its newest refs (``segments``) and a list of
``pages``; each page ``runs/<id>/pages/<first>-<last>-<sha16>.json.zst`` is an
immutable, create-only object holding a run of consecutive older refs.

In memory nothing changes for the rest of the code: :func:`load_index` returns a
``RunIndex`` with every ref in ``segments`` (pages fetched, checked and spliced in),
and :func:`save_index` splits such an index back into pages and a head. Which refs go
into pages is decided by :func:`split_refs` (pure): refs of level >= ``HEAD_LEVELS``
(live compaction's older, rarely changing levels) in pages of at most ``PAGE_REFS``;
levels below stay in the head. A flush therefore writes its segment and a head of
bounded size; a page is written only when a merge reaches the paged levels.

Pages are content-addressed, so a page that did not change is never written again,
and one a process has read or written is cached in memory (it can never change).
"""

from __future__ import annotations

import hashlib
import itertools
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence

import orjson
from pydantic import ValidationError

from runarchive.errors import (
    CorruptObjectError,
    InvalidInputError,
    NamedObjectMissingError,
    ObjectNotFoundError,
    PreconditionFailedError,
    StoreUnavailableError,
)
from runarchive.format.codec import check_ref, compress, decompress_bounded, index_key
from runarchive.format.model import (
    PAGED_FORMAT,
    IndexPage,
    PageRef,
    RunIndex,
    SegmentRef,
    parse_index,
    validate_run_id,
)
from runarchive.store import PutMode, Store

HEAD_LEVELS = 1  # refs of level 0 stay in the head
PAGE_REFS = 256  # at most this many refs per page
MAX_PAGE_BYTES = 64 * 1024 * 1024  # decompression ceiling for one page (~100k refs)

_cache_lock = threading.Lock()
_cache: OrderedDict[str, tuple[SegmentRef, ...]] = OrderedDict()
_CACHE_PAGES = 4096


_PAGE_FILE = re.compile(r"[0-9]{12,}-[0-9]{12,}-[0-9a-f]{16}\.json\.zst")


def check_page_ref(page: PageRef, run_id: str) -> str:
    """The page's file name, once its key is checked to be a page of ``run_id`` (a
    key from the bucket is never trusted to build a path or read another run)."""
    prefix = f"runs/{run_id}/pages/"
    name = page.key.removeprefix(prefix)
    if not page.key.startswith(prefix) or not _PAGE_FILE.fullmatch(name):
        raise CorruptObjectError(page.key, f"is not a page key of run {run_id!r}")
    if not 1 <= page.first_seq <= page.last_seq or page.segments < 1:
        raise CorruptObjectError(page.key, "its page ref has an impossible range or count")
    return name


def page_key(run_id: str, first_seq: int, last_seq: int, sha256: str) -> str:
    """``runs/<run_id>/pages/<first:012d>-<last:012d>-<sha16>.json.zst``."""
    return f"runs/{run_id}/pages/{first_seq:012d}-{last_seq:012d}-{sha256[:16]}.json.zst"


def needs_paged_format(index: RunIndex) -> bool:
    """Whether ``index`` holds anything only a format-4 reader understands."""
    return bool(index.pages) or any(r.link is not None for r in index.segments)


def split_refs(refs: Sequence[SegmentRef]) -> tuple[list[list[SegmentRef]], list[SegmentRef]]:
    """Cut a run's refs into pages and the head's tail. Pure and deterministic.

    The leading refs of level >= ``HEAD_LEVELS`` go to pages: a new page starts at
    each change of level and after ``PAGE_REFS`` refs, so a merge into one level
    rewrites only that level's last page. The first ref of a lower level, and
    everything after it, stays in the head.
    """
    cut = 0
    while cut < len(refs) and refs[cut].level >= HEAD_LEVELS:
        cut += 1
    # A ref lists every checkpoint it holds (``ckpts``): 256 refs of a keep_all run of
    # small checkpoints can exceed what a reader decompresses (MAX_PAGE_BYTES). Pages
    # are cut at a quarter of it too, by a deterministic estimate of their JSON size.
    budget = MAX_PAGE_BYTES // 4
    pages: list[list[SegmentRef]] = []
    size = 0
    for ref in refs[:cut]:
        ref_size = _json_size(ref)
        if (
            not pages
            or pages[-1][-1].level != ref.level
            or len(pages[-1]) >= PAGE_REFS
            or size + ref_size > budget
        ):
            pages.append([])
            size = 0
        pages[-1].append(ref)
        size += ref_size
    return pages, list(refs[cut:])


def _json_size(ref: SegmentRef) -> int:
    """An upper estimate of a ref's size in a page's JSON (cheap, deterministic)."""
    return 1024 + sum(32 + 4 * len(name) for _, name in ref.ckpts or ())


def encode_page(run_id: str, refs: Sequence[SegmentRef]) -> tuple[PageRef, bytes]:
    """A page object's ref and compressed body."""
    raw = IndexPage(run_id=run_id, segments=tuple(refs)).model_dump_json().encode()
    sha = hashlib.sha256(raw).hexdigest()
    body = compress(raw)
    ref = PageRef(
        key=page_key(run_id, refs[0].first_seq, refs[-1].last_seq, sha),
        first_seq=refs[0].first_seq,
        last_seq=refs[-1].last_seq,
        segments=len(refs),
        sha256=sha,
        stored_bytes=len(body),
    )
    return ref, body


def _remember(key: str, refs: tuple[SegmentRef, ...]) -> None:
    with _cache_lock:
        _cache[key] = refs
        _cache.move_to_end(key)
        while len(_cache) > _CACHE_PAGES:
            _cache.popitem(last=False)


def _cached(key: str) -> tuple[SegmentRef, ...] | None:
    with _cache_lock:
        got = _cache.get(key)
        if got is not None:
            _cache.move_to_end(key)
        return got


def decode_page(body: bytes, page: PageRef, run_id: str) -> tuple[SegmentRef, ...]:
    """The refs of a page object, checked against the head's ``PageRef``."""
    raw = decompress_bounded(body, page.key, MAX_PAGE_BYTES, "an index page")
    if hashlib.sha256(raw).hexdigest() != page.sha256:
        raise CorruptObjectError(page.key, "its SHA-256 differs from the run index's page ref")
    try:
        parsed = IndexPage.model_validate(orjson.loads(raw))
    except (orjson.JSONDecodeError, ValidationError) as exc:
        raise CorruptObjectError(page.key, f"not a valid index page ({exc})") from exc
    refs = parsed.segments
    if (
        parsed.run_id != run_id
        or len(refs) != page.segments
        or not refs
        or refs[0].first_seq != page.first_seq
        or refs[-1].last_seq != page.last_seq
    ):
        raise CorruptObjectError(page.key, "its refs do not match the run index's page ref")
    return refs


def read_page(store: Store, page: PageRef, run_id: str) -> tuple[SegmentRef, ...]:
    """A page's refs: from memory if this process met it before, else 1 GET."""
    check_page_ref(page, run_id)
    got = _cached(page.key)
    if got is not None:
        return got
    try:
        body = store.get(page.key).body
    except ObjectNotFoundError as exc:
        raise NamedObjectMissingError(
            page.key, "the run index names this page and it is missing from the bucket"
        ) from exc
    refs = decode_page(body, page, run_id)
    _remember(page.key, refs)
    return refs


_SHA256 = re.compile(r"[0-9a-f]{64}")


def check_page_refs(head: RunIndex, key: str | None = None) -> None:
    """What a head says of its pages, checked before any page is fetched: the run id
    is one, each page is under ``runs/<run_id>/pages/`` with the key its ref implies
    (a hostile head must not make a reader GET another run's objects, or climb out
    with ``..``), and the pages cover consecutive seq ranges. Pure; raises
    ``CorruptObjectError`` naming the head or the page."""
    ikey = key or index_key(head.run_id)
    try:
        validate_run_id(head.run_id)
    except InvalidInputError as exc:
        raise CorruptObjectError(ikey, f"{exc}; the index was altered") from None
    expected = 1  # a run's first ref starts at seq 1: its oldest page too
    for page in head.pages:
        if (
            not _SHA256.fullmatch(page.sha256)
            or not 1 <= page.first_seq <= page.last_seq
            or page.key != page_key(head.run_id, page.first_seq, page.last_seq, page.sha256)
            or page.segments < 1
        ):
            raise CorruptObjectError(
                page.key,
                f"the index of run {head.run_id!r} names it as a page, but it is not the "
                "page its ref describes (runs/<run_id>/pages/<first>-<last>-<sha16>"
                ".json.zst): the index was altered",
            )
        if page.first_seq != expected:
            raise CorruptObjectError(
                page.key,
                f"the index's pages are not consecutive from seq 1: this one starts at "
                f"seq {page.first_seq}, where seq {expected} was due",
            )
        expected = page.last_seq + 1


def _check_spliced(head: RunIndex, page: PageRef, refs: Sequence[SegmentRef]) -> None:
    """A page's refs (from the bucket or memory) against its ref: this run's segments,
    consecutive, the range and count the head gives."""
    if (
        len(refs) != page.segments
        or refs[0].first_seq != page.first_seq
        or refs[-1].last_seq != page.last_seq
    ):
        raise CorruptObjectError(page.key, "its refs do not match the run index's page ref")
    for ref, nxt in itertools.pairwise(refs):
        if nxt.first_seq != ref.last_seq + 1:
            raise CorruptObjectError(
                page.key,
                f"its refs are not consecutive: {nxt.key!r} starts at seq {nxt.first_seq}, "
                f"after a ref ending at {ref.last_seq}",
            )
    for ref in refs:
        check_ref(ref, head.run_id)


def expand(store: Store, head: RunIndex, key: str | None = None) -> RunIndex:
    """The full in-memory index of a head: its pages' refs spliced before its own
    (1 GET per page this process has not met; none for an index without pages).
    Raises ``CorruptObjectError`` for pages that are not this run's consecutive refs
    (:func:`check_page_refs`; nothing outside the run is read)."""
    if not head.pages:
        return head
    check_page_refs(head, key)
    refs: list[SegmentRef] = []
    for page in head.pages:
        got = read_page(store, page, head.run_id)
        _check_spliced(head, page, got)
        refs.extend(got)
    if head.segments and head.segments[0].first_seq != refs[-1].last_seq + 1:
        raise CorruptObjectError(
            key or index_key(head.run_id),
            f"its first segment starts at seq {head.segments[0].first_seq}; its last "
            f"page ends at {refs[-1].last_seq}",
        )
    refs.extend(head.segments)
    return head.model_copy(update={"segments": tuple(refs), "pages": ()})


def load_index(store: Store, body: bytes, key: str) -> RunIndex:
    """Decode the index object stored at ``key`` and expand its pages (after checking
    that it is the index of the run ``key`` names: no page of another run is read)."""
    head = parse_index(body, key)
    if head.pages and key != index_key(head.run_id):
        raise CorruptObjectError(
            key,
            f"it names run {head.run_id[:200]!r}: it is another run's index, or was altered",
        )
    return expand(store, head, key)


Page = tuple[PageRef, bytes, tuple[SegmentRef, ...]]


def to_head(index: RunIndex) -> tuple[RunIndex, list[Page]]:
    """The head to store for a full in-memory index, and the page objects it names
    (every one: the caller skips those already stored). Pure."""
    groups, tail = split_refs(index.segments)
    pages = [(*encode_page(index.run_id, g), tuple(g)) for g in groups]
    head = index.model_copy(
        update={"segments": tuple(tail), "pages": tuple(p for p, _, _ in pages)}
    )
    if needs_paged_format(head) or needs_paged_format(index):
        head = head.model_copy(update={"format": max(head.format, PAGED_FORMAT)})
    return head, pages


def put_pages(store: Store, pages: Iterable[Page], known: Iterable[str] = ()) -> int:
    """Write the pages not in ``known`` (keys the current head names) create-only;
    return how many were PUT.

    A 412 (a page of the same key exists: an earlier attempt wrote it) counts only
    after a GET shows the same content, as for segments (format.md §5.1).
    """
    skip = set(known)
    written = 0
    for page, body, refs in pages:
        if page.key in skip:
            continue
        try:
            store.put(page.key, body, mode="create", immutable=True)
            written += 1
        except PreconditionFailedError:
            try:
                there = store.get(page.key).body
            except ObjectNotFoundError:
                # A 412 for an object that is not there (a lying gateway): once more.
                store.put(page.key, body, mode="create", immutable=True)
                written += 1
            else:
                decode_page(there, page, refs[0].key.split("/", 2)[1])
                _remember(page.key, refs)
                continue
        # A PUT answered 200 and never stored must not leave a head naming a missing
        # page: the refs it holds would be in no object once the writer is gone (its
        # copy of the index is a head too). 1 HEAD per page written, as for merges.
        if store.head(page.key) is None:
            raise StoreUnavailableError(
                f"the index page {page.key!r} was answered as stored and is not in "
                f"{store.description}; the index naming it is not written",
                key=page.key,
            )
        _remember(page.key, refs)
    return written


def save_index(
    store: Store, index: RunIndex, mode: PutMode, known: Iterable[str] = ()
) -> tuple[str, str]:
    """Store a full in-memory index as pages and a head (the head PUT with ``mode``);
    ``known`` are the page keys of the head it replaces (not written again).

    Returns the head's ETag and JSON (what the writer's cache keeps). Raises what
    ``store.put`` raises for the head (``PreconditionFailedError`` when the head
    changed): pages written before it are then unreferenced, and ``gc`` deletes them
    after the grace period like any orphan.
    """
    head, pages = to_head(index)
    put_pages(store, pages, known)
    body = head.model_dump_json()
    etag = store.put(index_key(index.run_id), body.encode(), mode=mode)
    return etag, body


def head_json(index: RunIndex) -> str:
    """The head's JSON for a full in-memory index (what :func:`save_index` PUTs)."""
    return to_head(index)[0].model_dump_json()
