"""Facts the docs state about the code, checked against the code: the Makefile targets
they name, the persisted models' fields in format.md's tables, and the §2.4 example."""

from __future__ import annotations

import importlib
import json
import re
import subprocess
from pathlib import Path

import pytest
from pydantic import BaseModel

from runarchive import Archive, Policy
from runarchive.cli.main import main
from runarchive.config import NOT_SETTINGS, ArchiveConfig
from runarchive.format.model import (
    CompactionRecord,
    DataKey,
    EpochStart,
    IndexPage,
    PageRef,
    RetiredObject,
    RunIndex,
    SealedValue,
    SegmentRef,
)

ROOT = Path(__file__).resolve().parents[2]
DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NEVER = {"flush_age": 3600.0, "flush_records": 10**9, "flush_bytes": 1 << 40}


def _code_text(text: str) -> list[str]:
    """The inline code spans and fenced code blocks of a markdown text."""
    blocks = re.findall(r"^ *```[^\n]*\n(.*?)^ *```", text, re.S | re.M)
    without_blocks = re.sub(r"^ *```[^\n]*\n.*?^ *```", "", text, flags=re.S | re.M)
    return blocks + re.findall(r"`([^`\n]+)`", without_blocks)


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text()
    return set(re.findall(r"^([A-Za-z0-9_-]+):", makefile, re.M))


def test_every_make_target_named_in_the_docs_exists() -> None:
    targets = _make_targets()
    named: dict[str, set[str]] = {}
    for path in DOC_FILES:
        for code in _code_text(path.read_text()):
            for target in re.findall(r"(?<![\w./-])make ([a-z][a-z0-9-]*)", code):
                named.setdefault(target, set()).add(path.name)
    assert {"demo", "test", "bench", "bench-adapters"} <= set(named), named
    missing = {t: sorted(files) for t, files in named.items() if t not in targets}
    assert missing == {}


def test_make_arguments_in_the_docs_are_passed_as_variables() -> None:
    # `make bench-peers --quick` would be make's own option, not the script's.
    bad = [
        (path.name, code)
        for path in DOC_FILES
        for code in _code_text(path.read_text())
        if re.search(r"(?<![\w./-])make [a-z][a-z0-9-]* --", code)
    ]
    assert bad == []


def _table_names(text: str) -> set[str]:
    """Every `name` in a markdown table row (a line starting with '|')."""
    rows = [line for line in text.splitlines() if line.lstrip().startswith("|")]
    return {name for row in rows for name in re.findall(r"`([A-Za-z_][A-Za-z0-9_]*)`", row)}


def test_every_field_of_the_persisted_models_is_named_in_a_format_table() -> None:
    documented = _table_names((ROOT / "docs" / "format.md").read_text())
    models: list[type[BaseModel]] = [
        RunIndex,
        SegmentRef,
        PageRef,
        IndexPage,
        EpochStart,
        RetiredObject,
        CompactionRecord,
        DataKey,
        SealedValue,
    ]
    missing = [
        f"{model.__name__}.{field}"
        for model in models
        for field in model.model_fields
        if field not in documented
    ]
    assert missing == []


def _section(text: str, start: str, end: str) -> str:
    return text[text.index(start) : text.index(end)]


def test_the_seq_rules_example_is_what_the_policy_writes(tmp_path: Path) -> None:
    """format.md §2.4's "real output" is reproduced by its own description."""
    section = _section((ROOT / "docs" / "format.md").read_text(), "### 2.4", "### 2.5")
    block = re.findall(r"```\n(\$ jq .*?)```", section, re.S)[0]
    command = re.match(r"\$ jq -c '(.*)' index.json\n", block)
    assert command is not None
    documented = [json.loads(line) for line in block.splitlines() if line.startswith("{")]
    present_line = re.search(r"# lines present: seqs (.*?) +\(", block)
    assert present_line is not None

    # The setting the text states: keep_last=1, at most 4 records per segment, seven
    # checkpoints named `same`, one event, then two more checkpoints (`plan`, `act`).
    root = tmp_path / "bucket"
    with Archive.open(
        root.as_uri(),
        cache_dir=tmp_path / "c",
        policy=Policy(keep_last=1),
        max_segment_records=4,
        **NEVER,
    ) as archive:
        run = archive.start_run(agent="doc")
        for i in range(7):
            run.checkpoint("same", {"i": i})
        run.event("tool", {})
        run.checkpoint("plan", {})
        run.checkpoint("act", {})
        archive.flush()
        run_id = run.run_id
    out = subprocess.run(
        ["jq", "-c", command.group(1), str(root / "runs" / run_id / "index.json")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    real = [json.loads(line) for line in out.splitlines()]

    def without_sha(refs: list[dict[str, object]]) -> list[dict[str, object]]:
        return [{**r, "key": str(r["key"]).rsplit("-", 1)[0]} for r in refs]

    assert without_sha(documented) == without_sha(real)
    for ref in documented:
        assert re.fullmatch(r"[0-9]{12}-[0-9]{12}-[0-9a-f]{16}\.jsonl\.zst", str(ref["key"]))
    seqs = _segment_seqs(root, run_id, [str(r["key"]) for r in real])
    shown = [
        [int(s) for s in part.replace(",", " ").split()]
        for part in present_line.group(1).split("|")
    ]
    assert shown == seqs


def _segment_seqs(root: Path, run_id: str, names: list[str]) -> list[list[int]]:
    """The record seqs of each segment, read with zstd."""
    result = []
    for name in names:
        body = subprocess.run(
            ["zstd", "-dc", str(root / "runs" / run_id / "seg" / name)],
            capture_output=True,
            check=True,
        ).stdout
        lines = [json.loads(line) for line in body.splitlines()]
        result.append([r["seq"] for r in lines if r["type"] != "segment"])
    return result


def _recipes() -> dict[str, str]:
    """Each Makefile target's recipe text."""
    recipes: dict[str, str] = {}
    target = ""
    for line in (ROOT / "Makefile").read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9_-]+):", line):
            target = match.group(1)
            recipes[target] = ""
        elif line.startswith("\t") and target:
            recipes[target] += line + "\n"
    return recipes


def test_a_script_named_beside_a_make_target_is_the_one_it_runs() -> None:
    # "`make bench` (`bench/bench_adapters.py`)" was wrong: that is `make bench-adapters`.
    recipes = _recipes()
    pairs = [
        (path.name, target, script)
        for path in DOC_FILES
        for target, script in re.findall(
            r"`make ([a-z][a-z0-9-]*)[^`]*`[ (]{1,3}`(?:\S*python )?(bench/[\w/]+\.py)",
            path.read_text(),
        )
    ]
    assert len(pairs) >= 3
    wrong = [p for p in pairs if p[2] not in recipes.get(p[1], "")]
    assert wrong == []


def test_every_repository_path_named_in_the_docs_exists() -> None:
    named = {
        (path.name, ref.rstrip(".,:;)"))
        for path in DOC_FILES
        for code in _code_text(path.read_text())
        for ref in re.findall(r"(?<![\w./-])((?:src|tests|bench|examples|infra)/[\w./*-]+)", code)
    }
    assert len(named) > 20
    missing = sorted(
        (doc, ref)
        for doc, ref in named
        if not any(ROOT.glob(ref.split("::")[0])) and not (ROOT / ref).exists()
    )
    assert missing == []


def test_every_test_named_with_its_file_exists() -> None:
    named = {
        (path.name, ref)
        for path in DOC_FILES
        for code in _code_text(path.read_text())
        for ref in re.findall(r"(tests/[\w/]+\.py)::(test_\w+)", code)
    }
    assert named
    missing = sorted(
        (doc, f"{file}::{test}")
        for doc, (file, test) in named
        if not (ROOT / file).exists()
        or not re.search(rf"^(?:async )?def {test}\(", (ROOT / file).read_text(), re.M)
    )
    assert missing == []


def _resolve(dotted: str) -> bool:
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj: object = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        try:
            for attr in parts[cut:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


def test_every_python_name_in_the_docs_resolves() -> None:
    # Module paths were rewritten when the source moved into subsystem packages.
    # Logger, span and instrument names (docs/observability.md) are not module paths
    # and kept their old spelling on purpose.
    pattern = r"(?<![\w.])(runarchive(?:\.[A-Za-z_]\w*)+)"
    observability = (ROOT / "docs" / "observability.md").read_text()
    telemetry_names = set(re.findall(pattern, observability))
    named = {
        (path.name, ref)
        for path in DOC_FILES
        if path.name != "observability.md"
        for code in _code_text(path.read_text())
        for ref in re.findall(pattern, code)
        if ref not in telemetry_names
    }
    assert len(named) > 10
    assert sorted((doc, ref) for doc, ref in named if not _resolve(ref)) == []


def test_the_real_index_example_has_the_fields_a_demo_run_writes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    section = _section((ROOT / "docs" / "format.md").read_text(), "## 4. Index format", "## 5.")
    example = json.loads(re.findall(r"```json\n(.*?)```", section, re.S)[-1])
    root = tmp_path / "archive"
    argv = ["--url", root.as_uri(), "demo", "--runs", "1", "--steps", "5"]
    assert main([*argv, "--cache-dir", str(tmp_path / "cache")]) == 0
    capsys.readouterr()
    [index_path] = root.glob("runs/*/index.json")
    real = json.loads(index_path.read_text())
    assert list(example) == list(real)
    assert list(example["segments"][0]) == list(real["segments"][0])
    assert list(example["policy"]) == list(real["policy"])
    assert (example["status"], example["error"]) == (real["status"], real["error"])


def test_every_logger_that_logs_is_in_the_observability_table() -> None:
    table = _table_names_dotted((ROOT / "docs" / "observability.md").read_text())
    loggers = set()
    for path in (ROOT / "src" / "runarchive").rglob("*.py"):
        text = path.read_text()
        if not re.search(r"\blog\.(debug|info|warning|error|exception)\(|log_run\(\s*log\b", text):
            continue
        if named := re.search(r'^log = logging\.getLogger\("([\w.]+)"\)', text, re.M):
            loggers.add(named.group(1))
        elif re.search(r"^log = logging\.getLogger\(__name__\)", text, re.M):
            module = path.relative_to(ROOT / "src").with_suffix("")
            loggers.add(".".join(module.parts))
    assert "runarchive.flush" in loggers
    assert sorted(loggers - table) == []


def _table_names_dotted(text: str) -> set[str]:
    rows = [line for line in text.splitlines() if line.lstrip().startswith("|")]
    names = {n for row in rows for n in re.findall(r"`(runarchive[\w.]*)`", row)}
    if "`runarchive.compat.*`" in text:  # one row for every adapter's logger
        names |= {f"runarchive.compat.{m}" for m in ("eventstore", "manager", "runstore")}
    return names


def test_every_source_file_named_by_its_short_name_exists() -> None:
    # "`format/jsonvalue.py`", "`stream.py`": a file of the repository ending so.
    # design.md's module table belongs to the module map (checked by its own test).
    files = [
        str(p.relative_to(ROOT))
        for top in ("src", "tests", "bench", "examples", "infra")
        for p in (ROOT / top).rglob("*.py")
    ]
    named = set()
    for path in DOC_FILES:
        text = path.read_text()
        if path.name == "design.md":
            text = re.sub(r"## Modules and dependencies.*?\n## ", "## ", text, flags=re.S)
            text = re.sub(r"## Module map.*?\n## ", "## ", text, flags=re.S)
        for code in _code_text(text):
            for ref in re.findall(r"(?<![\w./-])([\w/]+\.py)\b", code):
                if ref != "decrypt.py":  # the reader's own file (format.md §11.9)
                    named.add((path.name, ref))
    missing = sorted(
        (doc, ref)
        for doc, ref in named
        if not any(f == ref or f.endswith("/" + ref) for f in files)
    )
    assert missing == []


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def test_every_relative_link_and_anchor_resolves() -> None:
    broken = []
    for path in DOC_FILES:
        for target in re.findall(r"\]\(([^)\s]+)\)", path.read_text()):
            if re.match(r"[a-z]+:", target):  # http(s), mailto
                continue
            file, _, anchor = target.partition("#")
            dest = (path.parent / file).resolve() if file else path
            if not dest.exists():
                broken.append((path.name, target))
                continue
            if anchor and dest.suffix == ".md":
                headings = re.findall(r"^#+ (.+)$", dest.read_text(), re.M)
                if anchor not in {_slug(h) for h in headings}:
                    broken.append((path.name, target))
    assert broken == []


def test_every_environment_variable_named_in_the_docs_is_read() -> None:
    fields = set(ArchiveConfig.model_fields)
    policy_fields = set(Policy.model_fields)
    named = {
        (path.name, var)
        for path in DOC_FILES
        for var in re.findall(r"\bRUNARCHIVE_([A-Z0-9_]+)\b", path.read_text())
    }
    assert len(named) > 10

    def read(var: str) -> bool:
        setting, _, sub = var.lower().partition("__")
        if sub:
            return setting == "policy" and sub in policy_fields
        return setting in fields or f"RUNARCHIVE_{var}" in NOT_SETTINGS

    # config.md shows the error a misspelt variable gets: that one is meant not to exist.
    unknown = sorted((doc, v) for doc, v in named if not read(v) and v != "FLUSH_RECORDZ")
    assert unknown == []
