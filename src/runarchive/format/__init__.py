"""The on-bucket format: persisted models, segment codec, JSON values, paged indexes."""
