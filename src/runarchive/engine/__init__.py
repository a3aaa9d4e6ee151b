"""The write and read paths: the flush protocol and its flusher thread, healing and
ownership, live compaction, restore and streaming, takeover, the manifest."""
