"""runarchive's version: the one source (pyproject reads it statically; the package
face, ``runarchive --version``, export bundles and telemetry use it)."""

__version__ = "0.1.0"
