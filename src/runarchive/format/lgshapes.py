"""The names in the records the LangGraph adapter writes (``docs/langgraph.md``).

Here, in the format layer, so that both the adapter (which writes them) and the
viewer (which shows a thread, and sits below the adapters) read the same constants.
"""

from __future__ import annotations

STATE_FORMAT = 1  # version of a checkpoint record's state shape (docs/langgraph.md)
WRITES_KIND = "lg.writes"  # event kind: a task's pending writes for one checkpoint
TOMBSTONE_KIND = "lg.tombstone"  # event kind: checkpoints pruned or deleted from view
THREAD_KEY = "langgraph_thread_id"  # run metadata key holding the real thread_id
