"""Checking and exporting history: verify, export bundles and their verification, statistics."""
