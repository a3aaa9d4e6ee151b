"""A LangGraph checkpointer backed by a runarchive :class:`~runarchive.Archive`.

::

    from langgraph.graph import StateGraph
    from runarchive import Archive
    from runarchive.adapters.langgraph import ArchiveSaver

    with Archive.open("s3://my-bucket/agents") as archive:
        graph = builder.compile(checkpointer=ArchiveSaver(archive))
        graph.invoke(inputs, {"configurable": {"thread_id": "ticket-42"}})

Each LangGraph thread is one run (``lg-<thread_id>``); checkpoints are run
checkpoints, pending writes and deletions are events, so they go through the
archive's cache, policy, segments and manifest like any other record. The
layout, the costs and what ``prune`` keeps are in ``docs/langgraph.md``.

Needs the optional extra: ``pip install 'runarchive[langgraph]'``.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import hashlib
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any, cast

try:
    from langchain_core.runnables import RunnableConfig
    from langgraph.checkpoint.base import (
        WRITES_IDX_MAP,
        BaseCheckpointSaver,
        ChannelVersions,
        CheckpointMetadata,
        CheckpointTuple,
        get_checkpoint_id,
        get_checkpoint_metadata,
        writes_sort_key,
    )
    from langgraph.checkpoint.base import Checkpoint as LGCheckpoint
    from langgraph.checkpoint.serde.base import SerializerProtocol
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "runarchive.langgraph needs LangGraph's checkpoint package: "
        "pip install 'runarchive[langgraph]'"
    ) from exc

from runarchive.adapters._lgindex import (
    HASHED,
    KEEP_ALL,
    Entry,
    PendingWrite,
    ThreadIndex,
    checkpoint_name,
    dec,
    enc,
    json_safe,
)
from runarchive.adapters._lgmaint import ThreadMaintenance
from runarchive.engine.view import RunView
from runarchive.errors import (
    CorruptObjectError,
    FencedError,
    InvalidInputError,
    RunExistsError,
    RunNotFoundError,
    RunStateError,
    StateNotSerializableError,
)
from runarchive.format.jsonvalue import loads
from runarchive.format.lgshapes import STATE_FORMAT, THREAD_KEY, WRITES_KIND
from runarchive.format.model import Checkpoint, Event, validate_name, validate_run_id
from runarchive.policy import Policy

if TYPE_CHECKING:
    from runarchive.archive import Archive
    from runarchive.run import Run

__all__ = ["ArchiveSaver"]


def _configurable(config: RunnableConfig | None, what: str) -> dict[str, Any]:
    conf = (config or {}).get("configurable")
    if not isinstance(conf, dict) or conf.get("thread_id") in (None, ""):
        raise InvalidInputError(
            f"{what} needs config['configurable']['thread_id']: pass "
            "{'configurable': {'thread_id': ...}}"
        )
    return conf


class ArchiveSaver(ThreadMaintenance, BaseCheckpointSaver[int]):
    """A LangGraph ``BaseCheckpointSaver`` storing each thread as a run of ``archive``.

    ``put``/``put_writes`` return once the record is durable in the local cache
    (0 requests; the archive's background flusher ships segments: at defaults 2
    requests per 5 s of activity per thread). Reads come from an in-memory index
    and the local cache; a checkpoint the cache evicted costs 1 GET of its segment.

    Reads never take a thread over. A thread this host does not own (another host
    started it, or took it over since) is read from the bucket and revalidated at
    each read by a conditional GET of its index (1 request, no body when nothing
    changed). The first write (``put``/``put_writes``) to such a thread takes it over
    with ``archive.resume`` (its previous owner, if still alive, is fenced). A thread
    new to the bucket is claimed there (1 create-only PUT) before its first record is
    acknowledged: of two hosts creating it at once, the loser gets ``RunExistsError``
    and has recorded nothing. Unknown threads cost 1 GET each time they are asked
    for (``get_tuple`` then returns ``None``).

    ``policy`` is the compression policy of the runs this saver starts
    (default: keep every checkpoint, as LangGraph's history and time travel need);
    ``None`` uses the archive's configured policy. ``agent`` names the runs'
    agent in the manifest; ``run_prefix`` starts their run ids. Thread-safe.
    """

    def __init__(
        self,
        archive: Archive,
        *,
        agent: str = "langgraph",
        run_prefix: str = "lg-",
        policy: Policy | None = KEEP_ALL,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        validate_name(agent, "agent")
        if not run_prefix or len(run_prefix) > 32:
            raise InvalidInputError("run_prefix must be 1-32 characters of [A-Za-z0-9._-]")
        validate_run_id(run_prefix + "x")
        if policy is not None and not isinstance(policy, Policy):
            raise InvalidInputError(f"policy must be a Policy, not {type(policy).__name__}")
        self.archive = archive
        self.agent = agent
        self.run_prefix = run_prefix
        self.policy = policy
        self._threads: dict[str, ThreadIndex] = {}
        self._locks: dict[str, threading.RLock] = {}
        self._absent: set[str] = set()  # threads last looked up in vain
        self._lock = threading.Lock()
        self._owns_archive = False  # from_url opened it: close() closes it

    # -- an archive of its own: from_url, close, with / async with -------------------

    @classmethod
    def from_url(
        cls,
        url: str | None = None,
        *,
        agent: str = "langgraph",
        run_prefix: str = "lg-",
        policy: Policy | None = KEEP_ALL,
        serde: SerializerProtocol | None = None,
        **settings: Any,
    ) -> ArchiveSaver:
        """Open the archive at ``url`` and return a saver that owns it (as LangGraph's
        ``PostgresSaver.from_conn_string`` owns its connection): ``with
        ArchiveSaver.from_url(url) as saver:``, or ``async with``, or :meth:`close`,
        closes the archive, flushing pending records. ``settings`` go to
        :meth:`Archive.open <runarchive.Archive.open>`; ``agent``, ``run_prefix``,
        ``policy`` (the saver's runs') and ``serde`` are the constructor's. A saver on a
        caller's archive (``ArchiveSaver(archive)``) never closes it.
        """
        from runarchive.archive import Archive  # noqa: PLC0415 - facade, only for this

        archive = Archive.open(url, **settings)
        try:
            saver = cls(archive, agent=agent, run_prefix=run_prefix, policy=policy, serde=serde)
        except BaseException:
            archive.close()
            raise
        saver._owns_archive = True
        return saver

    def close(self) -> None:
        """Close the archive if :meth:`from_url` opened it (flushing what is pending);
        leave a caller's archive open. Safe to call twice."""
        if self._owns_archive:
            self.archive.close()

    def __enter__(self) -> ArchiveSaver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> ArchiveSaver:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await asyncio.to_thread(self.close)  # the final flush must not block the loop

    # -- threads <-> runs ----------------------------------------------------------

    def _dumps(self, value: Any, path: str) -> dict[str, str]:
        """``value`` through the saver's serializer, as stored; its failures (too deep,
        an unsupported type) become ``StateNotSerializableError`` naming ``path``."""
        try:
            return enc(self.serde.dumps_typed(value))
        except (TypeError, ValueError, RecursionError) as exc:
            raise StateNotSerializableError(
                path, f"LangGraph's serializer refused it ({type(exc).__name__}: {exc})"
            ) from None

    def run_id_for(self, thread_id: str) -> str:
        """The run id of a thread: ``<prefix><thread_id>`` if that is a valid run id,
        else ``<prefix>sha256-<hex of the thread_id>`` (no request)."""
        tid = str(thread_id)
        try:
            raw = tid.encode()
        except UnicodeEncodeError:
            raise InvalidInputError(
                f"thread_id {tid!r} is not valid text (a lone surrogate); use another id"
            ) from None
        candidate = self.run_prefix + tid
        if not tid.startswith(HASHED):  # keeps the two forms from ever colliding
            try:
                return validate_run_id(candidate)
            except InvalidInputError:
                pass
        return self.run_prefix + HASHED + hashlib.sha256(raw).hexdigest()

    def _thread_lock(self, tid: str) -> threading.RLock:
        with self._lock:
            lock = self._locks.get(tid)
            if lock is None:
                lock = self._locks[tid] = threading.RLock()
            return lock

    def _thread(
        self,
        thread_id: Any,
        *,
        create: bool,
        remote: bool = True,
        write: bool = False,
        fresh: bool = False,
    ) -> ThreadIndex | None:
        """The thread's index. Reads (``create=False``) never take a thread over: a
        thread this host owns is served from memory and the cache (0 requests); one it
        does not own is read from the bucket through a :class:`RunView`, revalidated
        by a conditional GET at each look. Writes (``create=True``) take the thread
        over (``archive.resume``) or claim a new one in the bucket first; ``write``
        takes an existing thread over without creating one. ``fresh`` (a checkpoint
        without a parent: the caller believes the thread is new) never takes over a
        thread this host does not own: it claims it, and ``RunExistsError`` says that
        another host has it."""
        write = write or create
        tid = str(thread_id)
        lock = self._thread_lock(tid)
        with lock:
            known = self._threads.get(tid)
            seen: int | None = None  # the epoch this host last read, if through a view
            if known is not None:
                if isinstance(view := known.run, RunView):
                    if not write:
                        return self._index(tid, view, lock) if view.refresh() else known
                    seen = view.epoch
                elif known.run.run_id not in self.archive.engine.fenced:
                    return known  # owned and written here: no request
                del self._threads[tid]  # fenced since, or a write to a read-only view
            run_id = self.run_id_for(tid)
            archive = self.archive
            handle: Run | RunView | None = None
            if archive.cache.run(run_id) is not None:
                try:
                    handle = archive.run(run_id)  # 1 conditional GET, once per process
                except FencedError:
                    # Another host owns it now. A copy with nothing of its own is stale;
                    # one holding records the bucket lacks stays for `status` / `fork`.
                    with contextlib.suppress(RunStateError):
                        archive.discard_local(run_id)
                    if write:
                        raise
            if handle is None and remote and not fresh and not (create and tid in self._absent):
                try:
                    # A write takes the thread over; a read only looks.
                    # (expected_epoch: not from a host that took it since this one read it)
                    handle = (
                        archive.resume(run_id, expected_epoch=seen)
                        if write
                        else RunView.load(archive, run_id)
                    )
                except RunNotFoundError:
                    handle = None
            if handle is None:
                if not create:
                    # Remembered so that the put that usually follows skips this GET
                    # (the claim refuses a thread another host created meanwhile).
                    if len(self._absent) > 10_000:
                        self._absent.clear()
                    self._absent.add(tid)
                    return None
                self._absent.discard(tid)
                handle = self._start(run_id, tid)
            thread = self._index(tid, handle, lock)
            return thread

    def _index(self, tid: str, handle: Run | RunView, lock: threading.RLock) -> ThreadIndex:
        owner = handle.metadata.get(THREAD_KEY)
        if owner != tid:
            raise InvalidInputError(
                f"run {handle.run_id!r} holds LangGraph thread {owner!r}, not {tid!r}; "
                "give this saver another run_prefix"
            )
        thread = ThreadIndex(tid, handle, lock)
        self._rebuild(thread)
        self._threads[tid] = thread
        return thread

    def _start(self, run_id: str, tid: str) -> Run:
        try:
            return self.archive.start_run(self.agent, run_id, {THREAD_KEY: tid}, policy=self.policy)
        except RunExistsError as exc:
            raise RunExistsError(
                f"LangGraph thread {tid!r} was created by another host after this host "
                f"found it absent ({exc}). Nothing was recorded: read the thread again "
                "(get_tuple) and continue from its state."
            ) from exc

    def _rebuild(self, thread: ThreadIndex) -> None:
        # Run.records() reads the cache, and the bucket for what the cache evicted.
        for rec in thread.run.records():
            thread.apply(rec, self.serde)

    def _cached_threads(self) -> builtins.list[ThreadIndex]:
        """Every thread of this saver's agent that this host's cache holds (no request)."""
        found = []
        for row in self.archive.cache.runs():
            if row.agent != self.agent or not row.run_id.startswith(self.run_prefix):
                continue
            tid = loads(row.metadata).get(THREAD_KEY)
            if isinstance(tid, str) and (t := self._thread(tid, create=False, remote=False)):
                found.append(t)
        return found

    # -- reads ---------------------------------------------------------------------

    def _tuple(self, t: ThreadIndex, ns: str, cid: str) -> CheckpointTuple | None:
        entry = t.checkpoints.get(ns, {}).get(cid)
        if entry is None:
            return None
        rec = t.run.get(entry.seq)  # cache, else 1 GET of its segment
        if not isinstance(rec, Checkpoint):
            raise RunStateError(
                f"checkpoint {cid!r} of thread {t.thread_id!r} is no longer held: the run's "
                "policy dropped it and the cache evicted it. Give LangGraph threads the "
                "default policy Policy(keep_all=True)."
            )
        where = f"run {t.run.run_id} seq {entry.seq}"
        checkpoint = self.serde.loads_typed(dec(rec.state["checkpoint"], where))
        metadata = self.serde.loads_typed(dec(rec.state["metadata"], where))
        conf = {"thread_id": t.thread_id, "checkpoint_ns": ns}
        parent = None
        if entry.parent:
            parent = cast(RunnableConfig, {"configurable": {**conf, "checkpoint_id": entry.parent}})
        return CheckpointTuple(
            config={"configurable": {**conf, "checkpoint_id": cid}},
            checkpoint=checkpoint,
            metadata=metadata,
            parent_config=parent,
            pending_writes=self._pending_writes(t, ns, cid),
        )

    def _pending_writes(self, t: ThreadIndex, ns: str, cid: str) -> builtins.list[PendingWrite]:
        refs = sorted(
            t.writes.get((ns, cid), {}).values(),
            key=lambda r: writes_sort_key(r.task_path, r.task_id, r.idx),
        )
        events: dict[int, Event] = {}
        out: builtins.list[PendingWrite] = []
        for ref in refs:
            if ref.seq not in events:
                rec = t.run.get(ref.seq)
                if not isinstance(rec, Event):
                    raise CorruptObjectError(f"run {t.run.run_id} seq {ref.seq}", "not an event")
                events[ref.seq] = rec
            item = events[ref.seq].data["writes"][ref.pos]
            value = self.serde.loads_typed(dec(item["value"], f"seq {ref.seq}"))
            out.append((ref.task_id, ref.channel, value))
        return out

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint ``config`` names (``checkpoint_id``), else the thread's newest
        in ``checkpoint_ns``, with its pending writes; ``None`` if there is none.

        Cost: 0 requests for a thread this host owns (1 GET per evicted record read
        back); 1 GET for an unknown thread; for a thread another host owns, 1
        conditional GET of its index (plus its segments the first time, and the new
        ones when it grew). Never takes the thread over.
        """
        conf = _configurable(config, "get_tuple")
        t = self._thread(conf["thread_id"], create=False)
        if t is None:
            return None
        ns = str(conf.get("checkpoint_ns", ""))
        with t.lock:
            cid = get_checkpoint_id(config)
            if cid is None:
                ids = t.checkpoints.get(ns)
                if not ids:
                    return None
                cid = max(ids)  # LangGraph ids (uuid6) sort by creation
            return self._tuple(t, ns, str(cid))

    def _select(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> builtins.list[tuple[ThreadIndex, str, str]]:
        if config is None:
            threads = self._cached_threads()
            ns_only: str | None = None
            only_id = None
        else:
            conf = _configurable(config, "list")
            t = self._thread(conf["thread_id"], create=False)
            threads = [t] if t is not None else []
            ns_only = conf.get("checkpoint_ns")
            only_id = get_checkpoint_id(config)
        before_id = get_checkpoint_id(before) if before else None
        picked: builtins.list[tuple[ThreadIndex, str, str]] = []
        for t in threads:
            with t.lock:
                rows = [
                    (cid, ns)
                    for ns, entries in t.checkpoints.items()
                    if ns_only is None or ns == ns_only
                    for cid, e in entries.items()
                    if (only_id is None or cid == only_id)
                    and (before_id is None or cid < before_id)
                    and (not filter or all(e.metadata.get(k) == v for k, v in filter.items()))
                ]
            picked.extend((t, ns, cid) for cid, ns in sorted(rows, reverse=True))
        return picked if limit is None else picked[: max(limit, 0)]

    def _load(self, t: ThreadIndex, ns: str, cid: str) -> CheckpointTuple | None:
        with t.lock:
            return self._tuple(t, ns, cid)

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints of ``config``'s thread, newest first (by checkpoint id), with
        their pending writes.

        ``checkpoint_ns`` in ``config`` restricts to one namespace (absent: all);
        ``filter`` keeps those whose metadata has every given key/value; ``before``
        keeps ids below its ``checkpoint_id``. Selection uses the in-memory index
        (no request); each returned tuple is read from the cache (1 GET if evicted).
        ``config=None`` lists the threads this host's cache holds, not the bucket's.
        """
        for t, ns, cid in self._select(config, filter, before, limit):
            if (tup := self._load(t, ns, cid)) is not None:
                yield tup

    # -- writes --------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: LGCheckpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Append the checkpoint to the thread's run; durable in the cache on return
        (0 requests; a new thread costs 1 GET to look it up + 1 create-only PUT to
        claim it). A value the serializer refuses raises ``StateNotSerializableError``
        naming it, and nothing is recorded."""
        conf = _configurable(config, "put")
        parent = conf.get("checkpoint_id")
        ns, cid = str(conf.get("checkpoint_ns", "")), str(checkpoint["id"])
        meta = cast(dict[str, Any], get_checkpoint_metadata(config, metadata))
        # Serialised before the thread is touched: a value LangGraph's serializer
        # refuses must leave nothing behind (no run created, nothing claimed).
        blob = self._dumps(checkpoint, "checkpoint")
        meta_blob = self._dumps(meta, "metadata")
        # Without a parent the caller starts the thread: it must not take over one
        # another host started meanwhile (its view said the thread was empty).
        t = self._thread(conf["thread_id"], create=True, fresh=parent is None)
        assert t is not None  # create=True
        state = {
            "format": STATE_FORMAT,
            "thread_id": t.thread_id,
            "checkpoint_ns": ns,
            "checkpoint_id": cid,
            "parent_checkpoint_id": parent,
            "new_versions": {str(k): v for k, v in new_versions.items()},
            "checkpoint": blob,
            "metadata": meta_blob,
        }
        summary = {"thread_id": t.thread_id, "checkpoint_ns": ns, "checkpoint_id": cid}
        with t.lock:
            rec = t.run.checkpoint(checkpoint_name(ns), state, {**summary, **json_safe(meta)})
            t.add_checkpoint(ns, cid, Entry(rec.seq, parent, meta))
        return {"configurable": {**summary}}

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Append a task's writes for the checkpoint ``config`` names, as one event
        (0 requests). A (task_id, index) already stored is not stored again; the
        special channels (errors, interrupts) replace their previous value."""
        conf = _configurable(config, "put_writes")
        cid = get_checkpoint_id(config)
        if cid is None:
            raise InvalidInputError("put_writes needs config['configurable']['checkpoint_id']")
        ns = str(conf.get("checkpoint_ns", ""))
        seen = self._thread(conf["thread_id"], create=False)
        if seen is not None and isinstance(seen.run, RunView):
            with seen.lock:
                known = cid in seen.checkpoints.get(ns, {})
            if not known:
                # Writes for a checkpoint the thread does not hold: its put failed
                # (another host created the thread), so this must not take it over.
                raise RunExistsError(
                    f"LangGraph thread {seen.thread_id!r} is owned by another host and has "
                    f"no checkpoint {cid!r}: these writes belong to a checkpoint this host "
                    "could not store. Nothing was recorded; read the thread again."
                )
        t = self._thread(conf["thread_id"], create=True)
        assert t is not None
        with t.lock:
            have = t.writes.get((ns, cid), {})
            items = []
            for pos, (channel, value) in enumerate(writes):
                idx = WRITES_IDX_MAP.get(channel, pos)
                if idx >= 0 and (task_id, idx) in have:
                    continue
                value_enc = self._dumps(value, f"writes[{pos}] ({channel!r})")
                items.append({"idx": idx, "channel": channel, "value": value_enc})
            if not items:
                return
            data = {
                "checkpoint_ns": ns,
                "checkpoint_id": cid,
                "task_id": task_id,
                "task_path": task_path,
                "writes": items,
            }
            ev = t.run.event(WRITES_KIND, data)
            t.add_writes(ns, cid, ev.seq, data)

    # -- async: the sync methods on a worker thread, off the event loop ----------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Async :meth:`get_tuple`."""
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        """Async :meth:`list`: selects on a worker thread, then reads one tuple at a time."""
        picked = await asyncio.to_thread(self._select, config, filter, before, limit)
        for t, ns, cid in picked:
            if (tup := await asyncio.to_thread(self._load, t, ns, cid)) is not None:
                yield tup

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: LGCheckpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Async :meth:`put`."""
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Async :meth:`put_writes`."""
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)
