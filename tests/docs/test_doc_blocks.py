"""Every code block of README.md and docs/*.md runs in a test.

* ``json`` blocks are parsed (a document, several, or a fragment such as
  ``"keys": [...]``);
* ``python`` blocks are executed in a temp directory, their ``s3://bucket/prefix`` URLs
  pointing at ``file://`` directories, with a few names a snippet takes from its
  reader's program given (:func:`_given`);
* shell blocks (``sh``, ``console``) are run with bash in the directory of a
  ``file://`` archive with one ended run (``$RUN``, the id the docs show),
  ``RUNARCHIVE_URL`` pointing at it and this venv's ``runarchive`` on ``PATH``; in a
  transcript (lines starting with ``$ ``) only those lines run;
* every ``runarchive`` command line of a shell block, run or not, must name a
  subcommand and options the parser has (placeholders such as ``RUN`` are fine).

Untagged blocks are text (diagrams, key templates, regexes, program output) and are
counted, not run. A block that cannot run here (it needs AWS, a server, an encrypted
run...) is preceded by ``<!-- no-test: reason -->``; test_skipped_blocks_say_why
reports how many are skipped and why (``pytest -s``). A python block preceded by
``<!-- test: continues -->`` runs after the file's previous python block. Each test id
names the file and the block's line, and a failing python block's traceback the line.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import re
import shlex
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from langgraph.graph import END, START, StateGraph

from runarchive import Archive
from runarchive.cli.main import build_parser

ROOT = Path(__file__).resolve().parents[2]
# Every markdown file a user reads.
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHELL = {"sh", "bash", "console", "shell"}
TEXT = ""  # an untagged block is text: a diagram, a key template, output, a regex
NO_TEST = re.compile(r"<!--\s*no-test:\s*(.+?)\s*-->")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    lang: str
    body: str
    skip: str | None  # the no-test reason

    @property
    def id(self) -> str:
        return f"{self.path.name}:{self.line}"


def _blocks() -> list[Block]:
    found: list[Block] = []
    for path in DOC_FILES:
        lines = path.read_text().splitlines()
        i = 0
        while i < len(lines):
            fence = re.match(r"^( *)```(\S*)\s*$", lines[i])
            if not fence:
                i += 1
                continue
            end = i + 1
            while not re.match(r"^ *```\s*$", lines[end]):
                end += 1
            indent = len(fence.group(1))
            body = "\n".join(line[indent:] for line in lines[i + 1 : end]) + "\n"
            # A marker is the line before the fence, or among the comments right above it.
            skip = None
            j = i - 1
            while j >= 0 and lines[j].strip().startswith("<!--"):
                if m := NO_TEST.search(lines[j]):
                    skip = m.group(1)
                j -= 1
            found.append(Block(path, i + 1, fence.group(2), body, skip))
            i = end + 1
    return found


BLOCKS = _blocks()


def _of(*langs: str, run: bool = True) -> list[Any]:
    chosen = [b for b in BLOCKS if b.lang in langs and (not run or b.skip is None)]
    return [pytest.param(b, id=b.id) for b in chosen]


# -- json --------------------------------------------------------------------------


def _parse_json_texts(text: str) -> list[Any]:
    decoder, docs, pos = json.JSONDecoder(), [], 0
    while pos < len(text):
        while pos < len(text) and text[pos].isspace():
            pos += 1
        if pos == len(text):
            break
        doc, pos = decoder.raw_decode(text, pos)
        docs.append(doc)
    return docs


@pytest.mark.parametrize("block", _of("json"))
def test_json_blocks_parse(block: Block) -> None:
    try:
        docs = _parse_json_texts(block.body)
    except json.JSONDecodeError:
        docs = [json.loads("{" + block.body.strip().rstrip(",") + "}")]  # a fragment
    assert docs, f"{block.id}: empty json block"


# -- python ------------------------------------------------------------------------


def _file_urls(text: str, buckets: Path) -> str:
    """``s3://bucket/prefix`` -> a ``file://`` directory under ``buckets``."""

    def to_file(match: re.Match[str]) -> str:
        return (buckets / match.group(1)).as_uri()

    return re.sub(r"s3://([A-Za-z0-9._/-]+[A-Za-z0-9_-])", to_file, text)


class _Vault:
    """A secret store for encryption.md's custom key provider."""

    def __init__(self) -> None:
        self.keys = {"agents-2026": os.urandom(32)}

    def read_key(self, name: str) -> bytes:
        return self.keys[name]


@dataclass
class _Record:
    """The caller's own event / state class of docs/adapters.md (``to_dict``/``from_dict``)."""

    body: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return self.body

    def __getattr__(self, name: str) -> Any:
        try:
            return self.body[name]
        except KeyError:
            raise AttributeError(name) from None

    @classmethod
    def from_dict(cls, body: dict[str, Any]) -> _Record:
        return cls(body)


DOC_RUN_ID = "20261125T050246272964Z-e0292a7d"  # the run id the docs' examples use


def _builder() -> Any:
    """An uncompiled LangGraph graph: the one of examples/langgraph_resume.py."""
    spec = importlib.util.spec_from_file_location(
        "langgraph_resume", ROOT / "examples" / "langgraph_resume.py"
    )
    assert spec is not None
    assert spec.loader is not None
    example = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = example  # its TypedDict's annotations are resolved by name
    spec.loader.exec_module(example)
    graph = StateGraph(example.Report)
    for name, fn in example.NODES.items():
        graph.add_node(name, fn)
    for a, b in itertools.pairwise([START, *example.NODES, END]):
        graph.add_edge(a, b)
    return graph


def _given(tmp_path: Path, url: str, code: str) -> dict[str, Any]:
    """Names snippets take from the program around them, defined as a reader would.

    ``archive`` is open on the snippet's default bucket, which holds one ended run,
    ``run_id`` (the id the docs' examples show)."""
    with (
        Archive.open(url, cache_dir=tmp_path / "given-cache") as archive,
        archive.start_run(agent="planner", run_id=DOC_RUN_ID) as run,
    ):
        run.checkpoint("plan", {"step": 1})
    return {
        "archive": Archive.open(url, cache_dir=tmp_path / "given-archive"),
        "run_id": DOC_RUN_ID,
        "session_id": "session-1",
        "my_vault": _Vault(),
        "PAEvent": _Record,
        "RunState": _Record,
        "event": _Record({"run_id": "r1", "seq": 1, "kind": "tool_call", "data": {}}),
        "state": _Record({"step": 1}),
        "messages": [{"role": "user", "content": "Plan the task."}],
        "iteration": 1,
        "active_phase": "plan",
        "resume": lambda *args: None,
        **({"builder": _builder()} if "builder" in code else {}),
        "inputs": {"topic": "quarterly costs", "log": [], "words": 0},
    }


@pytest.mark.parametrize("block", _of("python"))
def test_python_blocks_run(block: Block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buckets = tmp_path / "buckets"
    default = buckets / "my-bucket" / "agents"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("RUNARCHIVE_CACHE_DIR", str(tmp_path / "cache"))
    code = _file_urls(block.body, buckets).replace('"/tmp/', f'"{tmp_path}/')
    given = _given(tmp_path, default.as_uri(), code)
    namespace: dict[str, Any] = {"__name__": "__doc_block__", **given}
    # A block continues the file's previous python block when it says so.
    previous = [
        b for b in BLOCKS if b.path == block.path and b.lang == "python" and b.line < block.line
    ]
    if "<!-- test: continues -->" in _line_before(block) and previous:
        exec(_compiled(previous[-1], _file_urls(previous[-1].body, buckets)), namespace)
    saved = _logging_state()
    try:
        exec(_compiled(block, code), namespace)
    finally:
        _restore_logging(saved)
        for value in [given["archive"], *namespace.values()]:
            if isinstance(value, Archive) and not value.closed:
                value.close()
        monkeypatch.chdir(ROOT)


def _compiled(block: Block, code: str) -> Any:
    """``code`` compiled so that a traceback names the markdown file and its line."""
    return compile("\n" * block.line + code, str(block.path), "exec")


def _logging_state() -> dict[str, tuple[int, list[logging.Handler], bool]]:
    """Snapshot of the loggers a block may configure (observability.md's do)."""
    names = ["", *logging.root.manager.loggerDict]
    return {
        n: (lg.level, list(lg.handlers), lg.propagate)
        for n in names
        if isinstance(lg := logging.getLogger(n), logging.Logger)
    }


def _restore_logging(saved: dict[str, tuple[int, list[logging.Handler], bool]]) -> None:
    for name, (level, handlers, propagate) in saved.items():
        logger = logging.getLogger(name)
        logger.setLevel(level)
        logger.handlers[:] = handlers
        logger.propagate = propagate


def _line_before(block: Block) -> str:
    lines = block.path.read_text().splitlines()
    return lines[block.line - 2] if block.line >= 2 else ""


# -- shell -------------------------------------------------------------------------


def _commands(block: Block) -> str:
    """The script of a shell block: its ``$ `` lines in a transcript, else every line."""
    lines = block.body.splitlines()
    prompted = [line[2:] for line in lines if line.startswith("$ ")]
    return "\n".join(prompted) + "\n" if prompted else block.body


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """A directory with a file:// archive (one ended run) and an environment for it."""
    home = tmp_path_factory.mktemp("shell")
    archive_dir = home / "archive"
    with (
        Archive.open(archive_dir.as_uri(), cache_dir=home / "cache") as archive,
        archive.start_run(agent="doc", metadata={"ticket": "OPS-12"}, run_id=DOC_RUN_ID) as run,
    ):
        for i in range(3):
            run.checkpoint("plan", {"i": i})
            run.event("tool", {"i": i})
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin:/usr/local/bin",
        "HOME": str(home),
        "RUNARCHIVE_URL": archive_dir.as_uri(),
        "RUNARCHIVE_CACHE_DIR": str(home / "cache"),
        "RUN": run.run_id,
        "ROOT": str(archive_dir),
        "PYTHONPATH": os.environ.get("PYTHONPATH", ""),
    }
    return env


@pytest.mark.parametrize("block", _of(*SHELL))
def test_shell_blocks_run(block: Block, sandbox: dict[str, str], tmp_path: Path) -> None:
    env = sandbox
    script = _commands(block).replace("/srv/archive", env["ROOT"])
    # Never let a doc block change this machine's packages.
    assert not re.search(r"\b(pip|apt-get|apt|brew) install\b", script), (
        f"{block.id}: mark it no-test"
    )
    out = subprocess.run(
        ["bash", "-eo", "pipefail", "-c", script],
        cwd=env["ROOT"],
        env={**env, "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, f"{block.id} failed:\n{script}\n{out.stdout}\n{out.stderr}"


def _subcommands() -> dict[str, set[str]]:
    parser = build_parser()
    top = {o for a in parser._actions for o in a.option_strings}
    sub = next(a for a in parser._actions if a.dest == "command")
    assert sub.choices is not None
    return {
        name: top | {o for a in p._actions for o in a.option_strings}
        for name, p in dict(sub.choices).items()
    }


def _runarchive_lines(block: Block) -> list[list[str]]:
    """The argv (after ``runarchive``) of each runarchive command in a shell block."""
    found = []
    for raw in block.body.splitlines():
        line = raw.removeprefix("$ ").split("#")[0].strip()
        line = re.sub(r"^(?:[A-Z_]+=\S+\s+)+", "", line)  # VAR=value prefixes
        if not line.startswith("runarchive ") or "|" in line.split("runarchive", 1)[0]:
            continue
        words = re.sub(r"\[|\]|\||/ release|\.\.\.", " ", line).split()[1:]
        found.append(words)
    return found


@pytest.mark.parametrize(
    "block", [p for p in _of(*SHELL, run=False) if _runarchive_lines(p.values[0])]
)
def test_runarchive_commands_in_shell_blocks_exist(block: Block) -> None:
    commands = _subcommands()
    for line in _runarchive_lines(block):
        argv = line[2:] if line[:1] == ["--url"] else line
        names = [w for w in argv if not w.startswith("-")]
        if not names:  # `runarchive --help`, `runarchive --version`
            continue
        command = names[0]
        assert command in commands, f"{block.id}: no subcommand {command!r} ({shlex.join(argv)})"
        options = [w.split("=")[0] for w in argv if w.startswith("--")]
        unknown = [o for o in options if o not in commands[command]]
        assert unknown == [], f"{block.id}: {command} has no option {unknown}"


def test_skipped_blocks_say_why() -> None:
    skipped = [b for b in BLOCKS if b.skip]
    reasons = Counter(b.skip for b in skipped)
    print(f"\n{len(BLOCKS)} blocks, {len(skipped)} not run:")
    for reason, count in reasons.most_common():
        print(f"  {count:3}  {reason}")
    assert all(len(b.skip or "") >= 10 for b in skipped), "say why a block is not run"
    langs = {b.lang for b in BLOCKS}
    assert langs <= SHELL | {"json", "python", TEXT}, f"blocks of no known kind: {langs}"
    text = [b for b in BLOCKS if b.lang == TEXT]
    print(f"  {len(text):3}  untagged: text, not code")
    # Named test files in the reasons exist.
    for b in skipped:
        for ref in re.findall(r"tests/[\w/]+\.py", b.skip or ""):
            assert (ROOT / ref).exists(), f"{b.id}: {ref} does not exist"
