"""The manifest: per-process live objects, done partitions, paged listing."""
