"""Plain-data state: objects of named classes to JSON and back, and nothing else.

Detector monitors are made of numbers, strings, lists and a few classes of our own. Writing
them as JSON instead of a pickle means reading one back can only ever build those classes and
set their attributes: no constructor, ``__setstate__`` or ``__reduce__`` runs, and a class not
named by the caller is refused. (The values are still sealed: :mod:`streams.core.state`.)

Each JSON object is a one-key wrapper, so nothing is ambiguous: ``{"d": {...}}`` a dict with
string keys, ``{"i": [[k, v], ...]}`` any other dict, ``{"t": [...]}`` a tuple,
``{"dt": "..."}`` a datetime (ISO 8601), ``{"b": "0110"}`` a list of booleans (a detector's
window of outcomes: one character each), ``{"c": name, "a": {...}}`` an object and its
attributes; other lists, strings, numbers (inf and nan included), booleans and null are
themselves.

>>> from dataclasses import dataclass
>>> @dataclass
... class Point:
...     x: float
...     tags: tuple[str, ...]
>>> data = dumps({"p": Point(1.5, ("a",)), (1, 2): [None, float("inf")]}, {"Point": Point})
>>> data
b'{"i":[["p",{"c":"Point","a":{"x":1.5,"tags":{"t":["a"]}}}],[{"t":[1,2]},[null,Infinity]]]}'
>>> loads(data, {"Point": Point})
{'p': Point(x=1.5, tags=('a',)), (1, 2): [None, inf]}
>>> loads(b'{"c":"os.system","a":{}}', {"Point": Point})
Traceback (most recent call last):
...
streams.core.plainstate.PlainStateError: state names class 'os.system', which is not one of ['Point']
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

__all__ = ["PlainStateError", "dumps", "loads"]

MAX_DEPTH = 32
_PLAIN = frozenset({bool, int, float, str, type(None)})
_BITS = bytes.maketrans(b"\x00\x01", b"01")


class PlainStateError(ValueError):
    """State that is not plain data of the named classes."""


def dumps(obj: Any, classes: Mapping[str, type]) -> bytes:
    """``obj`` as compact JSON; objects must be of ``classes`` (name -> class)."""
    by_type = {cls: name for name, cls in classes.items()}
    return json.dumps(_encode(obj, by_type, 0), separators=(",", ":")).encode()


def loads(data: bytes, classes: Mapping[str, type]) -> Any:
    """The value :func:`dumps` wrote; :class:`PlainStateError` for anything else."""
    try:
        raw = json.loads(data)
    except (ValueError, RecursionError) as exc:
        raise PlainStateError(f"state is not JSON: {exc}") from None
    return _decode(raw, classes, 0)


def _encode(obj: Any, by_type: Mapping[type, str], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise PlainStateError(f"state nests deeper than {MAX_DEPTH}")
    if obj is None or isinstance(obj, bool | int | float | str):
        return obj
    if isinstance(obj, list):
        kinds = set(map(type, obj))
        if kinds == {bool}:  # windows of outcomes: one character each
            return {"b": bytes(obj).translate(_BITS).decode("ascii")}
        if _PLAIN.issuperset(kinds):  # counts, rates, texts
            return obj
        return [_encode(v, by_type, depth + 1) for v in obj]
    if isinstance(obj, tuple):
        return {"t": [_encode(v, by_type, depth + 1) for v in obj]}
    if isinstance(obj, datetime):
        return {"dt": obj.isoformat()}
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj):
            return {"d": _encode_values(obj, by_type, depth)}
        return {"i": [[_encode(k, by_type, depth + 1), _encode(v, by_type, depth + 1)]
                      for k, v in obj.items()]}
    name = by_type.get(type(obj))
    if name is None:
        raise PlainStateError(f"{type(obj).__qualname__} is not plain data or a named class")
    return {"c": name, "a": _encode_values(_attributes(obj), by_type, depth)}


def _encode_values(values: dict[str, Any], by_type: Mapping[type, str], depth: int) -> dict[str, Any]:
    # Most values are plain: no call for them (this runs for every key a batch touches).
    return {k: v if type(v) in _PLAIN else _encode(v, by_type, depth + 1) for k, v in values.items()}


def _attributes(obj: Any) -> dict[str, Any]:
    if dataclasses.is_dataclass(obj) and not hasattr(obj, "__dict__"):  # slots
        return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}
    return dict(vars(obj))


def _decode(raw: Any, classes: Mapping[str, type], depth: int) -> Any:
    if depth > MAX_DEPTH:
        raise PlainStateError(f"state nests deeper than {MAX_DEPTH}")
    if raw is None or isinstance(raw, bool | int | float | str):
        return raw
    if isinstance(raw, list):
        if _PLAIN.issuperset(map(type, raw)):
            return raw
        return [_decode(v, classes, depth + 1) for v in raw]
    if not isinstance(raw, dict) or not raw:
        raise PlainStateError(f"unexpected {type(raw).__name__} in state")
    tag = next(iter(raw))
    if tag == "c" and raw.keys() == {"c", "a"}:
        return _object(raw["c"], raw["a"], classes, depth)
    if len(raw) != 1:
        raise PlainStateError(f"unexpected object with keys {sorted(raw)[:5]} in state")
    value = raw[tag]
    if tag == "d" and isinstance(value, dict):
        return _decode_values(value, classes, depth)
    if tag == "i" and isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        return {_hashable(_decode(k, classes, depth + 1)): _decode(v, classes, depth + 1) for k, v in value}
    if tag == "b" and isinstance(value, str) and set(value) <= {"0", "1"}:
        return list(map("1".__eq__, value))
    if tag == "t" and isinstance(value, list):
        return tuple(_decode(v, classes, depth + 1) for v in value)
    if tag == "dt" and isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError as exc:
            raise PlainStateError(f"bad datetime in state: {exc}") from None
    raise PlainStateError(f"unexpected {tag!r} in state")


def _object(name: Any, attributes: Any, classes: Mapping[str, type], depth: int) -> Any:
    cls = classes.get(name) if isinstance(name, str) else None
    if cls is None:
        raise PlainStateError(f"state names class {name!r}, which is not one of {sorted(classes)}")
    if not isinstance(attributes, dict) or not all(
            isinstance(k, str) and k.isidentifier() and not k.startswith("__") for k in attributes):
        raise PlainStateError(f"bad attributes for {name} in state")
    obj = object.__new__(cls)  # no constructor, no __setstate__: only attributes are set
    for key, value in _decode_values(attributes, classes, depth).items():
        object.__setattr__(obj, key, value)
    return obj


def _decode_values(values: dict[str, Any], classes: Mapping[str, type], depth: int) -> dict[str, Any]:
    return {k: v if type(v) in _PLAIN else _decode(v, classes, depth + 1) for k, v in values.items()}


def _hashable(key: Any) -> Any:
    try:
        hash(key)
    except TypeError:
        raise PlainStateError("a dict key in state is not hashable") from None
    return key
