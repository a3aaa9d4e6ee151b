"""What runarchive accepts as checkpoint state, event data and metadata.

Accepted, stored as JSON: ``dict`` with ``str`` keys, ``list`` and ``tuple``
(stored as lists), ``str``, ``int`` within 64 bits, finite ``float``, ``bool``,
``None``, and subclasses of these (``StrEnum``/``IntEnum`` are stored as their
values). Converted: pydantic models (``model_dump(mode="json")``) and dataclass
instances (field by field, recursively checked).

Refused with :class:`~runarchive.errors.StateNotSerializableError`, before
anything is written: ``bytes``, ``set``, NaN and ±Infinity, non-``str`` dict
keys, integers beyond 64 bits, cycles, strings (values or keys) holding a lone
surrogate (``"\\ud800"``: not encodable as UTF-8), values nested deeper than
:data:`MAX_DEPTH` (128) levels of dicts and lists, and every other type
(``datetime``, ``Decimal``, ``UUID``...: convert them yourself, so that what you
read back is exactly what you wrote).

Why 128 levels: orjson writes at most 254 levels and pydantic's JSON parser, which
reads the run index holding a run's metadata and result, at most 200; records, the
index and export bundles wrap a value in a few levels of their own. 128 keeps every
accepted value readable everywhere, with room to spare, and is far beyond real agent
state. Past it the walk stops at once, so even a 10,000-deep value costs 128 steps.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from typing import Any

import orjson
from pydantic import BaseModel

from runarchive.errors import StateNotSerializableError

JsonValue = Any  # a value that passed check_json_value

_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # orjson's range: int64 and uint64

MAX_DEPTH = 128
"""The deepest nesting of dicts/lists (tuples, dataclasses, models) accepted: see above."""

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_DEPTH_PROBLEM = (
    f"nested deeper than {MAX_DEPTH} levels of dicts and lists (runarchive's limit, "
    "runarchive.format.jsonvalue.MAX_DEPTH); flatten it or store the deep part as a JSON string"
)
_SURROGATE_PROBLEM = (
    "the string holds a lone surrogate ({char!r} at index {at}), which is not valid "
    "Unicode and cannot be encoded as UTF-8; decode the bytes it came from with "
    "errors='replace', or drop the character"
)


def _surrogate(value: str, what: str = "") -> _Bad:
    m = _SURROGATE.search(value)
    assert m is not None
    return _Bad(what + _SURROGATE_PROBLEM.format(char=m.group(), at=m.start()))


def _describe(value: object) -> str:
    return f"{type(value).__module__}.{type(value).__qualname__}".removeprefix("builtins.")


class _Bad(Exception):
    """Raised deep in the walk; each level adds its step, so paths cost nothing on success."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        self.steps: list[str] = []


def _walk(value: Any, active: set[int]) -> Any:
    """Return ``value`` as plain JSON data (the same object if nothing had to change)."""
    t = type(value)
    if t is str:
        # isascii() is O(1) in CPython: only non-ASCII text is scanned, once.
        if not value.isascii() and _SURROGATE.search(value) is not None:
            raise _surrogate(value)
        return value
    if t is bool or value is None:
        return value
    if t is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise _Bad("integer outside the 64-bit range")
        return value
    if t is float:
        if not math.isfinite(value):
            raise _Bad(f"{value!r} is not valid JSON")
        return value
    if t is dict or t is list or t is tuple:
        ident = id(value)
        if ident in active:
            raise _Bad("cycle: the value contains itself")
        if len(active) >= MAX_DEPTH:  # ``active`` holds the containers around this one
            raise _Bad(_DEPTH_PROBLEM)
        active.add(ident)
        try:
            return _walk_dict(value, active) if t is dict else _walk_list(value, active)
        finally:
            active.discard(ident)
    return _convert(value, active)


def _walk_dict(value: dict[Any, Any], active: set[int]) -> dict[str, Any]:
    out: dict[str, Any] | None = None
    for k, v in value.items():
        if type(k) is not str:
            if not isinstance(k, str):
                raise _Bad(f"dict key {k!r} is a {_describe(k)}; keys must be str")
            out = out if out is not None else dict(value)
            del out[k]
            k = str.__str__(k)  # noqa: PLW2901 - a str subclass key becomes its plain value
        if not k.isascii() and _SURROGATE.search(k) is not None:
            raise _surrogate(k, f"dict key {k!r}: ")
        try:
            new = _walk(v, active)
        except _Bad as bad:
            bad.steps.append(f"[{json.dumps(k, ensure_ascii=False)}]")
            raise
        if new is not v or out is not None:
            if out is None:
                out = dict(value)
            out[k] = new
    return value if out is None else out


def _walk_list(value: list[Any] | tuple[Any, ...], active: set[int]) -> list[Any]:
    out: list[Any] | None = None
    for i, v in enumerate(value):
        try:
            new = _walk(v, active)
        except _Bad as bad:
            bad.steps.append(f"[{i}]")
            raise
        if new is not v and out is None:
            out = list(value)
        if out is not None:
            out[i] = new
    if out is None:
        return value if type(value) is list else list(value)
    return out


def _convert(value: Any, active: set[int]) -> Any:
    if isinstance(value, BaseModel):
        try:
            dumped = value.model_dump(mode="json")
        except Exception as exc:  # pydantic's message names the field
            raise _Bad(f"pydantic model failed to dump: {exc}") from exc
        return _walk(dumped, active)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        ident = id(value)
        if ident in active:
            raise _Bad("cycle: the value contains itself")
        if len(active) >= MAX_DEPTH:
            raise _Bad(_DEPTH_PROBLEM)
        active.add(ident)
        try:
            out = {}
            for f in dataclasses.fields(value):
                try:
                    out[f.name] = _walk(getattr(value, f.name), active)
                except _Bad as bad:
                    bad.steps.append(f".{f.name}")
                    raise
            return out
        finally:
            active.discard(ident)
    if isinstance(value, str):
        return _walk(str.__str__(value), active)  # a StrEnum member becomes its plain value
    if isinstance(value, int):
        return _walk(int(value), active)
    if isinstance(value, float):
        return _walk(float(value), active)
    if isinstance(value, dict):
        return _walk(dict(value), active)
    if isinstance(value, list | tuple):
        return _walk(list(value), active)
    if isinstance(value, bytes | bytearray | memoryview):
        raise _Bad("bytes are not JSON; encode them (e.g. base64) into a str first")
    if isinstance(value, set | frozenset):
        raise _Bad("sets are not JSON; store a sorted list instead")
    raise _Bad(f"a {_describe(value)} is not JSON-serialisable")


def check_json_value(value: Any, root: str = "state") -> JsonValue:
    """Return ``value`` as plain JSON data, or raise ``StateNotSerializableError``.

    ``root`` names the argument in error paths (``state["messages"][3]["blob"]``).
    Cost: one pass over the value; the value is copied only where a conversion happened.
    """
    try:
        return _walk(value, set())
    except _Bad as bad:
        path = root + "".join(reversed(bad.steps))
        raise StateNotSerializableError(path, bad.problem) from None


def dumps(value: Any) -> bytes:
    """Compact JSON bytes of an already checked value."""
    return orjson.dumps(value)


def loads(data: bytes | str) -> Any:
    """Parse JSON bytes (one record line or an index)."""
    return orjson.loads(data)
