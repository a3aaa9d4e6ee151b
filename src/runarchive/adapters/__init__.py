"""Adapters to other checkpointer APIs: LangGraph and the replaced checkpointers (compat)."""
