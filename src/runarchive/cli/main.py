"""``runarchive`` command line: parse, set up logging, run one command, map what it
raised to an exit code (:mod:`runarchive.cli.exitcodes`).

Read-only commands (``runs``, ``show``, ``restore``, ``verify``, ``export``,
``stats``...) open a :class:`Reader`, which creates nothing: on a ``file://``
archive that does not exist they exit 2 and say how to create one.

``--json`` output is stable (documented in ``docs/cli.md``): ``show`` prints the
run index as stored (``docs/format.md``); ``restore`` prints
``{"index": <run index>, "records": [<record>, ...]}``.

Only a few modules of the standard library are imported here; a command's module (and with it boto3,
pydantic, zstandard...) is imported when that command runs, so ``--help`` is fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Callable, Sequence

from runarchive.cli import exitcodes
from runarchive.cli.parser import build_parser
from runarchive.errors import CorruptObjectError, RunArchiveError

__all__ = ["build_parser", "main"]


def _check_usage(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    if args.command == "demo" and (args.runs < 1 or args.steps < 1):
        parser.error("--runs and --steps must be at least 1")
    if args.command == "verify" and bool(args.runs) == bool(args.all):
        parser.error("verify: give run ids or --all (not both)")
    if args.command in ("compact", "rekey") and bool(args.run) == bool(args.all):
        parser.error(f"{args.command}: give a run id or --all (not both)")
    if args.quiet and args.verbose:
        parser.error("give -v or -q, not both")


def _command(spec: str) -> Callable[[argparse.Namespace], int]:
    module, name = spec.split(":")
    func: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), name)
    return func


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (:mod:`runarchive.cli.exitcodes`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)  # exits 2 on usage errors
        _check_usage(parser, args)
    except KeyboardInterrupt:
        return _interrupted()
    from runarchive.cli import logsetup  # noqa: PLC0415 - not for --help (start-up time)

    undo = logsetup.start(args.verbose, args.quiet)
    try:
        return _run(args)
    finally:
        undo()


def _run(args: argparse.Namespace) -> int:
    try:
        return int(_command(args.func)(args))
    except KeyboardInterrupt:
        return _interrupted()
    except CorruptObjectError as exc:  # a damaged or tampered object: damage found
        print(f"runarchive: error: {exc}", file=sys.stderr)
        return exitcodes.DAMAGE
    except RunArchiveError as exc:
        print(f"runarchive: error: {exc}", file=sys.stderr)
        return exitcodes.TROUBLE
    except BrokenPipeError:  # `runarchive restore X | head`
        return exitcodes.OK
    except OSError as exc:  # a disk or a path of ours, not the archive: could not do it
        print(f"runarchive: error: {exc}", file=sys.stderr)
        return exitcodes.TROUBLE
    except Exception:
        # A bug. Python's own exit status (1) would read as "damage found".
        import traceback  # noqa: PLC0415 - loaded by logging already; explicit here

        traceback.print_exc()
        print(
            "runarchive: unexpected error (a bug: please report it with the traceback above)",
            file=sys.stderr,
        )
        return exitcodes.TROUBLE


def _interrupted() -> int:
    print("runarchive: interrupted", file=sys.stderr)
    return exitcodes.INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
