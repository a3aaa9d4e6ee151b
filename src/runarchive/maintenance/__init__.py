"""Offline maintenance of a bucket: compaction, garbage collection, re-keying, retention."""
