"""The ``runarchive`` argument parser: global options (before or after the command),
help with defaults and examples. Imports the standard library only, so that
``runarchive --help`` starts fast; each command names the function that runs it as
``"module:function"``, imported when it runs."""

from __future__ import annotations

import argparse
from datetime import datetime

from runarchive._version import __version__
from runarchive.cli import exitcodes

STATUSES = ["running", "completed", "failed"]


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the examples' line breaks; appends a default that says something (not
    ``None`` or ``False``) to the help of an option."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" not in text
            and "default:" not in text
            and default not in (None, False, argparse.SUPPRESS)
            and (action.option_strings or action.nargs in ("?", "*"))
            and not isinstance(action, argparse._VersionAction)
        ):
            text += " (default: %(default)s)"
        return text


def _parse_time(text: str) -> datetime:
    try:
        ts = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO 8601 time: {text!r}") from None
    if ts.tzinfo is None:
        raise argparse.ArgumentTypeError(f"give a timezone, e.g. {text}Z")
    return ts


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """The options every command takes. On the sub-parsers their default is SUPPRESS,
    so an option given before the command is not reset by the command's parser."""

    def default(value: object) -> object:
        return value if top else argparse.SUPPRESS

    group = parser.add_argument_group("global options (before or after the command)")
    group.add_argument(
        "--url",
        default=default(None),
        help="archive URL (default: $RUNARCHIVE_URL, else the embedded ./.runarchive/archive)",
    )
    group.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="log to stderr: -v INFO, -vv DEBUG (default: warnings only)",
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=default(False),
        help="log errors only",
    )
    group.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        default=default(True),
        help="no progress bar (one is drawn on stderr only when it is a terminal)",
    )


class _Commands:
    """Adds sub-commands with the shared options, formatter and an Examples section."""

    def __init__(self, parser: argparse.ArgumentParser) -> None:
        self.sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(self, name: str, func: str, help: str, examples: list[str]) -> argparse.ArgumentParser:
        cmd: argparse.ArgumentParser = self.sub.add_parser(
            name,
            help=help,
            description=help[0].upper() + help[1:] + ".",
            epilog="Examples:\n" + "\n".join(f"  {e}" for e in examples),
            formatter_class=_Formatter,
        )
        _global_options(cmd, top=False)
        cmd.set_defaults(func=func)
        return cmd


def _run_arg(cmd: argparse.ArgumentParser, nargs: str | None = None, *, help: str) -> None:
    cmd.add_argument("run", metavar="RUN", nargs=nargs, help=help)


def _cache_dir(cmd: argparse.ArgumentParser, default: str) -> None:
    cmd.add_argument("--cache-dir", metavar="DIR", help=f"cache directory (default: {default})")


_HOST_CACHE = "$RUNARCHIVE_CACHE_DIR, else ./.runarchive/cache"
_TEMP_CACHE = "a temporary one"
_MAIN = "runarchive.cli.commands:"
_AUDIT = "runarchive.cli.audit:"
_MAINT = "runarchive.cli.maintain:"
_RECOVERY = "runarchive.cli.recovery:"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for docs and tests)."""
    parser = argparse.ArgumentParser(
        prog="runarchive",
        description="Archival checkpointer for long-running AI agents.",
        formatter_class=_Formatter,
        epilog="Exit codes:\n"
        + "\n".join(f"  {code:<4} {text}" for code, text in exitcodes.TABLE)
        + "\n\nExamples:\n  runarchive demo\n  runarchive --url s3://bucket/agents runs"
        "\n  runarchive verify --all --url s3://bucket/agents -v\n"
        "\n`runarchive COMMAND --help` describes a command.",
    )
    parser.add_argument("--version", action="version", version=_version())
    _global_options(parser, top=True)
    c = _Commands(parser)

    cmd = c.add(
        "demo",
        "runarchive.cli.demo:cmd_demo",
        "run a small simulated agent and report what was stored",
        ["runarchive demo", "runarchive demo --runs 1 --steps 50 --url file:///tmp/arch"],
    )
    _cache_dir(cmd, "./.runarchive/cache")
    cmd.add_argument("--runs", type=int, default=4, help="simulated runs (the last one fails)")
    cmd.add_argument("--steps", type=int, default=300, help="steps (checkpoint + event) per run")
    cmd.add_argument("--seed", type=int, default=7, help="random seed of the transcripts")

    cmd = c.add(
        "show",
        _MAIN + "cmd_show",
        "print a run's metadata and segments",
        ["runarchive show RUN", "runarchive show RUN --json | jq .segments"],
    )
    _run_arg(cmd, help="the run id")
    cmd.add_argument("--json", action="store_true", help="print the run index as stored, JSON")

    cmd = c.add(
        "restore",
        _MAIN + "cmd_restore",
        "restore a run from the bucket and print it",
        [
            "runarchive restore RUN",
            "runarchive restore RUN --seq 100 --json > run.json",
            "runarchive restore RUN --at 2026-11-25T10:00:00Z",
        ],
    )
    _run_arg(cmd, help="the run id")
    cmd.add_argument("--json", action="store_true", help="print index and records as JSON")
    cmd.add_argument("--seq", type=int, help="restore up to this seq (default: every record)")
    cmd.add_argument(
        "--at", type=_parse_time, help="restore up to this time, ISO 8601 with a timezone"
    )

    cmd = c.add(
        "runs",
        _MAIN + "cmd_runs",
        "list runs from the manifest (never lists the bucket)",
        [
            "runarchive runs --status running",
            "runarchive runs --agent planner --since 2026-11-01T00:00:00Z --json",
            "runarchive runs --page TOKEN",
        ],
    )
    cmd.add_argument("--status", choices=STATUSES, help="only runs in this status")
    cmd.add_argument("--agent", help="only runs of this agent")
    cmd.add_argument("--since", type=_parse_time, help="created at or after (ISO 8601)")
    cmd.add_argument("--until", type=_parse_time, help="created at or before (ISO 8601)")
    cmd.add_argument(
        "--limit", type=int, default=1000, help="runs per page (0: every run, one whole scan)"
    )
    cmd.add_argument("--page", help="the page token the previous page printed (on stderr)")
    cmd.add_argument("--json", action="store_true", help="print the manifest entries as JSON")

    cmd = c.add(
        "ui",
        "runarchive.cli.ui:cmd_ui",
        "serve a read-only web page of the archive's runs on 127.0.0.1 (docs/viewer.md)",
        ["runarchive ui", "runarchive ui --url s3://bucket/agents --port 9000"],
    )
    cmd.add_argument("--port", type=int, default=8765, help="port on 127.0.0.1 (0: any free port)")

    cmd = c.add(
        "interrupted",
        _MAIN + "cmd_interrupted",
        "list running runs whose owner stopped renewing its lease",
        ["runarchive interrupted", "runarchive interrupted --stale-after 600 --json"],
    )
    cmd.add_argument(
        "--stale-after", type=float, default=0.0, help="seconds past the end of the lease"
    )
    cmd.add_argument("--json", action="store_true", help="print the manifest entries as JSON")

    cmd = c.add(
        "resume",
        _MAIN + "cmd_resume",
        "take over an interrupted run on this host",
        ["runarchive resume RUN --cache-dir /srv/agent/cache"],
    )
    _run_arg(cmd, help="the run id (see `runarchive interrupted`)")
    _cache_dir(cmd, _HOST_CACHE)

    cmd = c.add(
        "export",
        _AUDIT + "cmd_export",
        "write a self-contained, checkable bundle of runs (docs/export.md)",
        [
            "runarchive export RUN1 RUN2 --out audit.tar",
            "runarchive export --agent planner --status completed --out s3://audit/q1",
        ],
    )
    cmd.add_argument("run_ids", nargs="*", metavar="RUN", help="run ids (or use a filter)")
    cmd.add_argument("--agent", help="runs of this agent (from the manifest)")
    cmd.add_argument("--since", type=_parse_time, help="created at or after (ISO 8601)")
    cmd.add_argument("--until", type=_parse_time, help="created at or before (ISO 8601)")
    cmd.add_argument("--status", choices=STATUSES, help="runs in this status")
    cmd.add_argument(
        "--out", required=True, help="a new FILE.tar, a new directory, or an s3:// / file:// URL"
    )
    cmd.add_argument(
        "--decrypt", action="store_true", help="decrypt encrypted runs into the bundle (needs keys)"
    )
    cmd.add_argument("--json", action="store_true", help="print the result as JSON")

    cmd = c.add(
        "verify-export",
        _AUDIT + "cmd_verify_export",
        f"check an export bundle; exit 0 if sound, {exitcodes.DAMAGE} if damaged",
        ["runarchive verify-export audit.tar", "runarchive verify-export s3://audit/q1 --json"],
    )
    cmd.add_argument("bundle", metavar="PATH", help="a bundle .tar, directory or URL")
    cmd.add_argument("--json", action="store_true", help="print the problems as JSON")

    cmd = c.add(
        "verify",
        _AUDIT + "cmd_verify",
        "read back runs and check checksums, chain, seqs; "
        f"exit 0 if sound, {exitcodes.DAMAGE} if damaged",
        ["runarchive verify RUN", "runarchive verify --all --json > report.json"],
    )
    cmd.add_argument("runs", nargs="*", metavar="RUN", help="run ids (or --all)")
    cmd.add_argument("--all", action="store_true", help="every run of the archive")
    cmd.add_argument("--json", action="store_true", help="print the report as JSON")
    cmd.add_argument(
        "--cache-dir",
        metavar="DIR",
        help=f"a cache that may hold what the bucket lacks (default: {_HOST_CACHE}); "
        "verify then says when `runarchive repair` can restore it",
    )

    cmd = c.add(
        "repair",
        _RECOVERY + "cmd_repair",
        "re-upload what the bucket lost of a run from this host's cache (index, segments)",
        ["runarchive repair RUN --cache-dir /srv/agent/cache   # with the agent stopped"],
    )
    _run_arg(cmd, help="the run id")
    _cache_dir(cmd, _HOST_CACHE)

    cmd = c.add(
        "fork",
        _RECOVERY + "cmd_fork",
        "archive the records a fenced host holds of a run as a new, linked run",
        ["runarchive fork RUN --to RUN-rescued --cache-dir /srv/agent/cache"],
    )
    _run_arg(cmd, help="the run another host took over")
    cmd.add_argument("--to", metavar="NEW_ID", help="the new run's id (default: generated)")
    _cache_dir(cmd, _HOST_CACHE)

    cmd = c.add(
        "compact",
        _MAINT + "cmd_compact",
        "re-apply the policy over ended runs and merge their segments",
        ["runarchive compact RUN --dry-run", "runarchive compact --all --json"],
    )
    _run_arg(cmd, nargs="?", help="the run id (or --all)")
    cmd.add_argument("--all", action="store_true", help="every completed or failed run")
    cmd.add_argument("--dry-run", action="store_true", help="print the plan, write nothing")
    cmd.add_argument(
        "--reencrypt", action="store_true", help="re-encrypt under a new data key (after rekey)"
    )
    cmd.add_argument("--json", action="store_true", help="print one object per run as JSON")
    _cache_dir(cmd, _TEMP_CACHE)

    cmd = c.add(
        "gc",
        _MAINT + "cmd_gc",
        "delete retired and orphan objects older than the grace",
        ["runarchive gc --dry-run", "runarchive gc --grace 86400 --json"],
    )
    cmd.add_argument("--dry-run", action="store_true", help="print what would go, delete nothing")
    cmd.add_argument(
        "--grace", type=float, help="seconds (default: the gc_grace_seconds setting, 3600)"
    )
    cmd.add_argument("--json", action="store_true", help="print what was deleted as JSON")
    _cache_dir(cmd, _TEMP_CACHE)

    cmd = c.add(
        "status",
        _MAIN + "cmd_status",
        "this host's unflushed backlog per run (read-only, beside a live agent)",
        ["runarchive status", "runarchive status --cache-dir /srv/agent/cache --json"],
    )
    _cache_dir(cmd, _HOST_CACHE)
    cmd.add_argument("--json", action="store_true", help="print the status as JSON")

    cmd = c.add(
        "rekey",
        _MAINT + "cmd_rekey",
        "re-wrap runs' data keys with the current key (bodies stay as they are)",
        [
            "RUNARCHIVE_ENCRYPTION=local RUNARCHIVE_ENCRYPTION_KEY_FILE=keys.json \\\n"
            "    runarchive rekey --all"
        ],
    )
    _run_arg(cmd, nargs="?", help="the run id (or --all)")
    cmd.add_argument("--all", action="store_true", help="every run of the archive")
    cmd.add_argument("--json", action="store_true", help="print one object per run as JSON")
    _cache_dir(cmd, _TEMP_CACHE)

    cmd = c.add(
        "keygen",
        _MAINT + "cmd_keygen",
        "make a local encryption key (docs/encryption.md)",
        ["runarchive keygen", "runarchive keygen --file keys.json --id k2"],
    )
    cmd.add_argument("--file", help="add it to this key file and make it current")
    cmd.add_argument("--id", help="key id (default: k1 printed, or k<n>-<random> in a file)")

    cmd = c.add(
        "stats",
        _MAIN + "cmd_stats",
        "a run's or the archive's storage, requests and cost",
        ["runarchive stats RUN", "runarchive stats --objects --json"],
    )
    _run_arg(cmd, nargs="?", help="one run (default: the whole archive)")
    cmd.add_argument("--objects", action="store_true", help="count objects (1 LIST per 1,000)")
    cmd.add_argument("--json", action="store_true", help="print the figures as JSON")

    for name, text in (
        ("hold", "put a legal hold on every segment of a run (S3 Object Lock)"),
        ("release", "lift the legal hold from every segment of a run"),
    ):
        cmd = c.add(name, _MAINT + "cmd_hold", text, [f"runarchive {name} RUN"])
        _run_arg(cmd, help="the run id")
        _cache_dir(cmd, _TEMP_CACHE)
    return parser


def _version() -> str:
    return f"runarchive {__version__}"
