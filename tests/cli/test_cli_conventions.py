"""What every command shares: global options anywhere, --version, help with defaults and
examples, -v/-q logging, Ctrl-C, the exit codes, progress, and a start-up that imports
no subsystem it does not use."""

from __future__ import annotations

import argparse
import io
import json
import logging
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from support.cli import invoke

import runarchive
from runarchive import Archive, Reader, __version__
from runarchive.cli import commands, exitcodes
from runarchive.cli.main import main
from runarchive.cli.parser import build_parser
from runarchive.cli.progress import Bar
from runarchive.crypto.providers import new_local_key

CLI_MD = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


@pytest.fixture
def archive_url(tmp_path: Path) -> str:
    """Two ended runs of several segments each, on a file:// archive."""
    url = (tmp_path / "bucket").as_uri()
    with Archive.open(url, cache_dir=tmp_path / "c", flush_records=10) as archive:
        for run_id in ("a", "b"):
            with archive.start_run(agent="cli", run_id=run_id) as run:
                for i in range(40):
                    run.checkpoint(("x", "y")[i % 2], {"i": i})
    return url


def subcommands() -> dict[str, argparse.ArgumentParser]:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


# -- options, help, version ---------------------------------------------------------


def test_global_options_work_before_and_after_the_command(archive_url: str) -> None:
    before = invoke(["--url", archive_url, "-q", "--no-progress", "runs", "--json"])
    after = invoke(["runs", "--json", "--url", archive_url, "-q", "--no-progress"])
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert sorted(e["run_id"] for e in json.loads(before.stdout)) == ["a", "b"]
    assert json.loads(before.stdout) == json.loads(after.stdout)
    # An option given before the command is not reset by the command's own parser.
    args = build_parser().parse_args(["--url", "file:///x", "-vv", "--no-progress", "runs"])
    assert (args.url, args.verbose, args.progress) == ("file:///x", 2, False)
    args = build_parser().parse_args(["runs", "--url", "file:///y", "-v"])
    assert (args.url, args.verbose, args.progress) == ("file:///y", 1, True)


def test_version() -> None:
    done = invoke(["--version"])
    assert done.returncode == 0
    assert done.stdout.strip() == f"runarchive {__version__}"


def test_every_argument_has_help_and_every_command_examples() -> None:
    commands_ = subcommands()
    assert len(commands_) >= 19
    for name, parser in commands_.items():
        assert parser.epilog is not None, name
        assert parser.epilog.startswith("Examples:\n  "), name
        assert f"runarchive {name}" in parser.epilog, name
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            assert action.help, f"{name} {action.dest}"
        text = parser.format_help()
        assert "Examples:" in text, name
        assert "global options (before or after the command)" in text, name


def test_help_shows_defaults_and_exit_codes() -> None:
    top = invoke(["--help"])
    assert top.returncode == 0
    for code, meaning in exitcodes.TABLE:
        assert re.search(rf"^\s+{code}\s+{re.escape(meaning)}$", top.stdout, re.M), code
    runs = invoke(["runs", "--help"]).stdout
    assert "(default: 1000)" in " ".join(runs.split())
    demo = " ".join(invoke(["demo", "--help"]).stdout.split())
    assert "(default: 300)" in demo
    assert "(default: 4)" in demo
    assert "Examples:" in demo


def test_the_exit_codes_are_documented() -> None:
    text = CLI_MD.read_text()
    for code, _ in exitcodes.TABLE:
        assert re.search(rf"^\| \*\*{code}\*\* \|", text, re.M), code


# -- logging, Ctrl-C, unexpected errors -----------------------------------------------


def _logs_each_level(args: argparse.Namespace) -> int:
    log = logging.getLogger("runarchive.clitest")
    log.debug("a debug line")
    log.info("an info line")
    log.warning("a warning line")
    log.error("an error line")
    return 0


@pytest.mark.parametrize(
    ("flags", "shown"),
    [
        ([], {"warning", "error"}),
        (["-v"], {"info", "warning", "error"}),
        (["-vv"], {"debug", "info", "warning", "error"}),
        (["-q"], {"error"}),
    ],
)
def test_v_and_q_set_the_log_level_on_stderr(
    monkeypatch: pytest.MonkeyPatch, flags: list[str], shown: set[str]
) -> None:
    monkeypatch.setattr(commands, "cmd_runs", _logs_each_level)
    done = invoke(["runs", *flags])
    assert done.returncode == 0
    assert done.stdout == ""
    got = set(re.findall(r"runarchive: \w+ runarchive.clitest: an? (\w+) line", done.stderr))
    assert got == shown
    assert logging.getLogger("runarchive").handlers == []  # main() leaves nothing behind


def test_ctrl_c_exits_130_with_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    def interrupted(args: argparse.Namespace) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(commands, "cmd_runs", interrupted)
    done = invoke(["runs"])
    assert done.returncode == exitcodes.INTERRUPTED == 130
    assert done.stderr == "runarchive: interrupted\n"


def test_a_bug_is_not_reported_as_damage(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise ZeroDivisionError("oops")

    monkeypatch.setattr(commands, "cmd_runs", broken)
    done = invoke(["runs"])
    assert done.returncode == exitcodes.TROUBLE
    assert "ZeroDivisionError: oops" in done.stderr  # the traceback, for the report
    assert "a bug" in done.stderr


# -- exit codes: damage found vs could not check --------------------------------------


def test_damage_found_exits_1(archive_url: str, tmp_path: Path) -> None:
    assert (
        invoke(["--url", archive_url, "export", "a", "--out", str(tmp_path / "e")]).returncode == 0
    )
    assert invoke(["verify-export", str(tmp_path / "e")]).returncode == exitcodes.OK
    records = tmp_path / "e" / "runs" / "a" / "records.jsonl"
    records.write_text(records.read_text().replace('"i":1', '"i":7', 1))
    done = invoke(["verify-export", str(tmp_path / "e")])
    assert done.returncode == exitcodes.DAMAGE == 1
    assert "runs/a/records.jsonl" in done.stdout


def test_nothing_to_check_exits_3(tmp_path: Path) -> None:
    url = (tmp_path / "empty").as_uri()
    Archive.open(url, cache_dir=tmp_path / "c").close()
    assert invoke(["--url", url, "verify", "--all"]).returncode == exitcodes.NOTHING_CHECKED == 3


def test_a_missing_archive_exits_2(tmp_path: Path) -> None:
    done = invoke(["--url", (tmp_path / "none").as_uri(), "verify", "--all"])
    assert done.returncode == exitcodes.TROUBLE == 2
    assert done.stderr.startswith("runarchive: error: no archive at ")


def test_an_unreachable_bucket_exits_2(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        "RUNARCHIVE_ENDPOINT_URL": "http://127.0.0.1:1",  # nothing listens on port 1
        "RUNARCHIVE_MAX_ATTEMPTS": "1",
    }.items():
        monkeypatch.setenv(name, value)
    done = invoke(["--url", "s3://bucket/p", "verify", "--all"])
    assert done.returncode == exitcodes.TROUBLE
    assert "cannot reach" in done.stderr
    assert "sound" not in done.stdout + done.stderr


def test_a_missing_key_exits_2(tmp_path: Path) -> None:
    url = (tmp_path / "enc").as_uri()
    keys = f"k1={new_local_key()}"
    with (
        Archive.open(
            url, cache_dir=tmp_path / "c", encryption="local", encryption_keys=keys
        ) as archive,
        archive.start_run(agent="x", run_id="r") as run,
    ):
        run.checkpoint("c", {"secret": 1})
    done = invoke(["--url", url, "restore", "r"])  # no key in the environment
    assert done.returncode == exitcodes.TROUBLE
    assert "local:k1" in done.stderr


# -- progress -------------------------------------------------------------------------


class Calls:
    """A progress callback that records what it was told."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int]] = []

    def __call__(self, done: int, total: int) -> None:
        self.calls.append((done, total))

    def check(self, total: int | None = None) -> None:
        assert self.calls, "never called"
        dones = [d for d, _ in self.calls]
        assert dones == sorted(dones)
        assert dones[0] >= 1
        last_done, last_total = self.calls[-1]
        assert last_done == last_total
        if total is not None:
            assert last_total == total


def test_the_long_library_calls_report_progress_up_to_the_total(
    archive_url: str, tmp_path: Path
) -> None:
    with Reader.open(archive_url) as reader:
        segments = len(reader.index("a").segments)
        assert segments > 1
        for call, total in (
            (lambda p: reader.restore("a", progress=p), segments),
            (lambda p: reader.verify(None, progress=p), None),
            (lambda p: reader.export(["a"], dest=tmp_path / "x.tar", progress=p), None),
            (lambda p: reader.stats(objects=True, progress=p), None),
        ):
            calls = Calls()
            call(calls)
            calls.check(total)
    with Archive.open(archive_url, cache_dir=tmp_path / "m") as archive:
        one = Calls()
        archive.compact("a", progress=one)
        one.check(segments)  # segments read of the one run
        every = Calls()
        archive.compact(None, dry_run=True, progress=every)
        every.check(2)  # runs
        gc = Calls()
        report = archive.gc(grace=0, progress=gc)
        assert report.deleted
        gc.check(2 + len(report.deleted))  # the indexes read, then the objects deleted


def test_rekey_reports_progress_per_run(tmp_path: Path) -> None:
    url = (tmp_path / "enc").as_uri()
    old, new = f"k1={new_local_key()}", f"k2={new_local_key()}"
    settings: dict[str, Any] = {"encryption": "local", "cache_dir": tmp_path / "c"}
    with Archive.open(url, encryption_keys=old, **settings) as archive:
        for run_id in ("a", "b", "c"):
            archive.start_run(agent="x", run_id=run_id).complete()
    with Archive.open(url, encryption_keys=f"{new},{old}", **settings) as archive:
        calls = Calls()
        archive.rekey(progress=calls)
    assert calls.calls == [(1, 3), (2, 3), (3, 3)]


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


LONG_COMMANDS = [
    (["verify", "--all"], "verifying"),
    (["verify", "a"], "verifying"),
    (["restore", "a"], "restoring a"),
    (["export", "a", "b", "--out", "OUT"], "exporting"),
    (["compact", "a"], "reading a"),
    (["compact", "--all", "--dry-run"], "compacting runs"),
    (["gc", "--dry-run"], "gc"),
    (["stats", "--objects"], "listing objects"),
]


@pytest.mark.parametrize(
    ("args", "label"), LONG_COMMANDS, ids=[" ".join(a) for a, _ in LONG_COMMANDS]
)
def test_progress_is_drawn_on_a_terminal_only(
    archive_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: list[str],
    label: str,
) -> None:
    argv = ["--url", archive_url, *(str(tmp_path / a) if a == "OUT" else a for a in args)]
    tty = Tty()
    with monkeypatch.context() as patched:
        patched.setattr(sys, "stderr", tty)
        assert main([*argv, "--no-progress"]) == 0
    assert tty.getvalue() == ""
    if "--out" in args:
        argv[-1] += "-2"
    piped = invoke(argv)  # stderr is not a terminal
    assert piped.returncode == 0, piped.stderr
    assert piped.stderr == ""
    if "--out" in args:
        argv[-1] += "-3"
    with monkeypatch.context() as patched:
        patched.setattr(sys, "stderr", tty)
        assert main(argv) == 0
    capsys.readouterr()
    drawn = tty.getvalue()
    assert drawn.startswith(f"\r{label} ")
    assert re.search(r"(\] (\d+)/\2|\d+ \.\.\.)\x1b\[K\n$", drawn), drawn  # ends at the total
    assert "\n" not in drawn[:-1] or "--out" in args  # one line, export: one per phase


def test_a_bar_redraws_a_new_phase_on_a_new_line() -> None:
    tty = Tty()
    bar = Bar("export", tty)
    bar(1, 2)
    bar(2, 2)
    bar(1, 3)  # the next phase (export's upload): drawn, however soon it comes
    bar.close()
    drawn = tty.getvalue()
    assert drawn.count("\n") == 2
    assert drawn.endswith("] 1/3\x1b[K\n")
    assert bar.done == 1
    assert bar.total == 3
    silent = Bar("x", None)
    silent(1, 1)
    silent.close()
    assert (silent.done, silent.total) == (1, 1)


# -- start-up -------------------------------------------------------------------------

HEAVY = ("boto3", "botocore", "pydantic", "zstandard", "cryptography", "orjson", "sqlite3")


@pytest.mark.parametrize(
    "code",
    [
        "import runarchive",
        "from runarchive.cli import main; main(['--help'])",
        "from runarchive.cli import main; main(['verify', '--help'])",
        "from runarchive.cli import main; main(['--version'])",
    ],
)
def test_start_up_imports_no_subsystem(code: str) -> None:
    """``runarchive --help`` was slow because it imported boto3, pydantic and every
    subsystem; they load when a command runs."""
    probe = (
        "import json, sys\n"
        f"try:\n    {code}\nexcept SystemExit:\n    pass\n"
        "print('LOADED', json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    loaded = set(json.loads(done.stdout.split("LOADED ", 1)[1]))
    assert {m.split(".")[0] for m in loaded}.isdisjoint(HEAVY), loaded
    assert not {"runarchive.archive", "runarchive.reader", "runarchive.store"} & loaded


@pytest.mark.parametrize(
    "argv",
    [["runs", "--json"], ["stats"], ["verify", "--all"]],
    ids=" ".join,
)
def test_a_command_on_a_file_archive_does_not_import_boto3(tmp_path: Path, argv: list[str]) -> None:
    """boto3 (~0.25 s to import) is for s3:// archives and KMS keys only: a reading
    command on a ``file://`` archive runs without it."""
    url = (tmp_path / "arch").as_uri()
    with Archive.open(url, cache_dir=tmp_path / "c") as archive:
        archive.start_run(agent="a", run_id="r1").complete()
    probe = (
        "import json, sys\n"
        "from runarchive.cli import main\n"
        f"code = main({[*argv, '--url', url]!r})\n"
        "print('LOADED', code, json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    code, modules = done.stdout.split("LOADED ", 1)[1].split(" ", 1)
    loaded = {m.split(".")[0] for m in json.loads(modules)}
    assert code == "0", done.stdout + done.stderr
    assert "runarchive" in loaded  # the probe ran the command
    assert not {"boto3", "botocore", "s3transfer"} & loaded


def test_the_lazy_package_still_exports_every_name() -> None:
    assert set(runarchive.__all__) <= set(dir(runarchive))
    for name in runarchive.__all__:
        assert getattr(runarchive, name) is not None, name
    assert runarchive.Archive is Archive
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        _ = runarchive.Nope  # type: ignore[attr-defined]
