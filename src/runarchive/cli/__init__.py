"""The ``runarchive`` command line (entry point :func:`main`)."""

from runarchive.cli.main import main

__all__ = ["main"]
