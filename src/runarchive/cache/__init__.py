"""The local write-through cache: SQLite schema, WAL upkeep, health, status."""
