"""What state is accepted, converted and refused, and the path named in errors."""

from __future__ import annotations

import dataclasses
import enum
import math
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel

from runarchive.errors import InvalidInputError, StateNotSerializableError
from runarchive.format.jsonvalue import check_json_value, dumps, loads


class Color(enum.StrEnum):
    RED = "red"


class Level(enum.IntEnum):
    HIGH = 3


class Msg(BaseModel):
    role: str
    content: str
    when: datetime


@dataclasses.dataclass
class Step:
    name: str
    tags: list[str]


def test_plain_json_passes_through_unchanged() -> None:
    state = {
        "messages": [{"role": "user", "content": "hi", "n": 1, "x": 0.5}],
        "ok": True,
        "z": None,
    }
    assert check_json_value(state) is state  # no copy when nothing needs converting


def test_tuples_enums_models_and_dataclasses_are_converted() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    out = check_json_value(
        {
            "t": (1, 2),
            "c": Color.RED,
            "l": Level.HIGH,
            "m": Msg(role="u", content="c", when=when),
            "s": Step("a", ["b"]),
            Color.RED: 1,
        }
    )
    assert out == {
        "t": [1, 2],
        "c": "red",
        "l": 3,
        "m": {"role": "u", "content": "c", "when": "2026-01-02T03:04:05Z"},
        "s": {"name": "a", "tags": ["b"]},
        "red": 1,
    }
    assert type(out["c"]) is str
    assert loads(dumps(out)) == out


@pytest.mark.parametrize(
    ("state", "path", "problem"),
    [
        ({"messages": [0, 1, 2, {"blob": b"x"}]}, 'state["messages"][3]["blob"]', "bytes"),
        ({"s": {1, 2}}, 'state["s"]', "sets"),
        ({"f": math.nan}, 'state["f"]', "nan"),
        ({"f": [math.inf]}, 'state["f"][0]', "inf"),
        ({"d": {1: "x"}}, 'state["d"]', "keys must be str"),
        ({"big": 2**70}, 'state["big"]', "64-bit"),
        ({"when": datetime(2026, 1, 1, tzinfo=UTC)}, 'state["when"]', "datetime"),
        ({"d": Decimal("1.5")}, 'state["d"]', "Decimal"),
        ({"step": Step("a", [{"x": object()}])}, 'state["step"].tags[0]["x"]', "object"),
        (object(), "state", "object"),
    ],
)
def test_refused_values_name_their_path(state: Any, path: str, problem: str) -> None:
    with pytest.raises(StateNotSerializableError) as info:
        check_json_value(state)
    assert info.value.path == path
    assert problem in info.value.problem
    assert path in str(info.value)
    assert isinstance(info.value, TypeError)  # a TypeError subclass, as users expect
    assert isinstance(info.value, InvalidInputError)


def test_cycles_are_refused() -> None:
    loop: dict[str, Any] = {"a": []}
    loop["a"].append(loop)
    with pytest.raises(StateNotSerializableError) as info:
        check_json_value(loop)
    assert info.value.path == 'state["a"][0]'
    assert "cycle" in info.value.problem


def test_shared_non_cyclic_references_are_fine() -> None:
    shared = {"k": 1}
    assert check_json_value({"a": shared, "b": [shared, shared]}) == {
        "a": shared,
        "b": [shared, shared],
    }


def test_root_name_is_used() -> None:
    with pytest.raises(StateNotSerializableError) as info:
        check_json_value({"x": b""}, "metadata")
    assert info.value.path == 'metadata["x"]'
