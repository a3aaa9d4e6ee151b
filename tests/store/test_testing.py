"""``runarchive.testing`` catches broken stores, names the broken rule, and runs without
pytest (plain unittest)."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from runarchive.errors import PreconditionFailedError
from runarchive.store import IfMatch, MemoryStore, PutMode, Store
from runarchive.store.base import ObjectMeta
from runarchive.testing import StoreContract

SRC = Path(__file__).resolve().parents[2] / "src"


class IgnoresCreate(MemoryStore):
    """Writes a create-only put over an existing object."""

    def put(
        self, key: str, body: bytes, *, mode: PutMode = "overwrite", immutable: bool = False
    ) -> str:
        return super().put(key, body, mode="overwrite" if mode == "create" else mode)


class IgnoresIfMatch(MemoryStore):
    def put(
        self, key: str, body: bytes, *, mode: PutMode = "overwrite", immutable: bool = False
    ) -> str:
        return super().put(key, body, mode="overwrite" if isinstance(mode, IfMatch) else mode)


class ListsUnsorted(MemoryStore):
    def list(self, prefix: str = "") -> Iterator[ObjectMeta]:
        return iter(sorted(super().list(prefix), key=lambda m: m.key, reverse=True))


class CheckThenWrite(MemoryStore):
    """Checks a create-only precondition, then writes without holding a lock: every racer
    passes the check before any writes (a barrier makes that certain, not likely)."""

    def __init__(self, racers: int) -> None:
        super().__init__()
        self._all_checked = threading.Barrier(racers)

    def put(
        self, key: str, body: bytes, *, mode: PutMode = "overwrite", immutable: bool = False
    ) -> str:
        if mode == "create" and key.startswith("race/"):
            if self.head(key) is not None:
                raise PreconditionFailedError(f"{key!r} exists", key=key)
            self._all_checked.wait()
            return super().put(key, body)
        return super().put(key, body, mode=mode, immutable=immutable)


class AcceptsAnyKey(MemoryStore):
    def put(
        self, key: str, body: bytes, *, mode: PutMode = "overwrite", immutable: bool = False
    ) -> str:
        if key == "sp ace":
            return '"x"'
        return super().put(key, body, mode=mode, immutable=immutable)


def _contract_for(factory: Callable[[], Store]) -> StoreContract:
    class Case(StoreContract):
        def make_store(self) -> Store:
            return factory()

    return Case()


@pytest.mark.parametrize(
    ("store", "test", "rule"),
    [
        (IgnoresCreate, "test_create_only_refuses_existing", "create-only put of an existing"),
        (IgnoresCreate, "test_probe_accepts_a_store_that_enforces_conditions", None),
        (IgnoresIfMatch, "test_if_match_compare_and_swap", "If-Match with a stale ETag"),
        (ListsUnsorted, "test_list_sorted_by_key_with_prefix", "in key order"),
        (AcceptsAnyKey, "test_invalid_keys_refused", "invalid key 'sp ace'"),
    ],
)
def test_a_broken_store_fails_the_contract_naming_the_rule(
    store: type[MemoryStore], test: str, rule: str | None
) -> None:
    case = _contract_for(store)
    with pytest.raises(Exception) as failed:  # noqa: PT011 - the rule is checked below
        getattr(case, test)()
    if rule is not None:
        assert isinstance(failed.value, AssertionError)
        assert rule in str(failed.value)
    getattr(_contract_for(MemoryStore), test)()  # the same test passes on the reference


def test_a_store_whose_conditional_writes_race_fails_the_racing_test() -> None:
    case = _contract_for(lambda: CheckThenWrite(StoreContract.racers))
    with pytest.raises(AssertionError, match="exactly one wins"):
        case.test_racing_creates_have_exactly_one_winner()


def test_a_subclass_must_say_how_to_make_its_store() -> None:
    with pytest.raises(NotImplementedError, match="define make_store"):
        StoreContract().test_overwrite()


def test_the_contract_is_a_plain_unittest_suite_without_pytest(tmp_path: Path) -> None:
    """pytest is not imported (it is blocked); unittest runs and counts every test."""
    script = tmp_path / "check.py"
    script.write_text(
        "import sys, unittest\n"
        "sys.modules['pytest'] = sys.modules['_pytest'] = None  # import fails\n"
        "import runarchive.testing\n"
        "from runarchive.store import MemoryStore\n"
        "class TestMemory(runarchive.testing.StoreContract, unittest.TestCase):\n"
        "    def make_store(self):\n"
        "        return MemoryStore()\n"
        "result = unittest.main(exit=False, verbosity=0).result\n"
        "print('ran', result.testsRun, 'failed', len(result.failures) + len(result.errors))\n"
    )
    done = subprocess.run(
        [sys.executable, str(script)],
        env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    wanted = len([n for n in dir(StoreContract) if n.startswith("test_")])
    assert f"ran {wanted} failed 0" in done.stdout
