"""An input record's bytes to its schema's model, or one clear reason why not (the reason is
what goes to the dead-letter topic). Decoding never raises.

Two ways to the same answer:

* :func:`parse`, the reference: UTF-8, Python's ``json`` (``NaN`` and ``Infinity`` refused,
  nesting bounded, an escaped lone surrogate refused: no encoder downstream takes it), then
  pydantic's validation; every reason a record can be refused for is worded here;
* :func:`decode`, what the worker runs: pydantic's own JSON parser and validator in one pass
  (about half the time per record; decoding was a tenth of a click worker's event loop),
  taken only where :func:`parse` would give the same record: no extra fields (their nesting
  is bounded by the reference), no ``NaN``/``Infinity`` token (which pydantic's parser
  accepts), no surrogate escape, and success. Anything else goes the reference way, which
  says why.
  ``tests/unit/test_decoder_properties.py`` holds the two to the same results.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

__all__ = ["MAX_JSON_DEPTH", "DecodeError", "decode", "parse"]

# A JSON value nested deeper than this is rejected before it reaches a model.
MAX_JSON_DEPTH = 32


@dataclass(frozen=True, slots=True)
class DecodeError:
    """Why a record could not be decoded; the text becomes ``DeadLetter.error``."""

    reason: str


def decode(model: type[BaseModel], raw: bytes | None, *, max_bytes: int) -> BaseModel | DecodeError:
    """``raw`` as a ``model``, or the reason it is not one (the same answer as :func:`parse`)."""
    if raw is not None and len(raw) <= max_bytes and b"NaN" not in raw and b"Infinity" not in raw \
            and not _surrogate_escapes(raw):
        try:
            record = model.model_validate_json(raw)
        except Exception:  # the reference way finds and words the reason
            record = None
        if record is not None and not record.__pydantic_extra__:
            return record
    return parse(model, raw, max_bytes=max_bytes)


def parse(model: type[BaseModel], raw: bytes | None, *, max_bytes: int) -> BaseModel | DecodeError:
    """The reference decoder: ``json``, then ``model``'s validation, each refusal worded."""
    if raw is None:
        return DecodeError("empty record (null value)")
    if len(raw) > max_bytes:
        return DecodeError(f"record is {len(raw)} bytes, over the input limit of {max_bytes} bytes "
                           "(STREAMSENSE_MAX_INPUT_BYTES)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return DecodeError(f"value is not valid UTF-8 (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})")
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        return DecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    except ValueError as exc:
        return DecodeError(f"invalid JSON: {exc}")
    if not isinstance(value, dict):
        return DecodeError(f"expected a JSON object, got {type(value).__name__}")
    if _surrogate_escapes(raw) and (lone := _lone_surrogate(value)) is not None:
        return DecodeError(f"not valid Unicode: an escape of a lone surrogate ({lone}) in a string")
    if _depth(value) > MAX_JSON_DEPTH:
        return DecodeError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return model.model_validate(value)
    except ValidationError as exc:
        return DecodeError(_explain(exc))
    except Exception as exc:  # a validator bug must not take the worker down: the record is bad
        return DecodeError(f"record could not be validated: {type(exc).__name__}: {exc}"[:500])


def _surrogate_escapes(raw: bytes) -> bool:
    # Only a \uD800-\uDFFF escape makes a surrogate (UTF-8 cannot hold one); a pair of them is
    # one character (an emoji from an ASCII-only encoder), one alone is not Unicode and fails
    # every encoder downstream: Triton's request, the outputs' JSON.
    return b"\\ud" in raw or b"\\uD" in raw


def _lone_surrogate(value: Any) -> str | None:
    """The first lone surrogate in the strings of a decoded JSON value (escaped), or None."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
        return None
    except UnicodeEncodeError as exc:
        return f"\\u{ord(exc.object[exc.start]):04x}"


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not valid JSON")


def _depth(value: Any, limit: int = MAX_JSON_DEPTH + 1) -> int:
    """Nesting depth of a decoded JSON value, counted up to ``limit``."""
    depth, level = 0, [value]
    while level and depth < limit:
        depth += 1
        level = [child for v in level if isinstance(v, dict | list)
                 for child in (v.values() if isinstance(v, dict) else v)]
        level = [v for v in level if isinstance(v, dict | list)]
    return depth


def _explain(exc: ValidationError) -> str:
    """pydantic's errors as one line: ``'field: what is wrong'`` joined by ``'; '``."""
    parts = []
    for err in exc.errors(include_url=False):
        loc = ".".join(str(p) for p in err["loc"]) or "record"
        kind = err["type"]
        if kind == "missing":
            msg = "field required"
        elif kind == "literal_error":
            allowed = err.get("ctx", {}).get("expected", "")
            msg = f"must be one of {allowed.replace(' or ', ', ')} (got {err['input']!r})"
        elif kind in ("string_type", "int_type", "float_type"):
            msg = f"{err['msg'].lower()} (got {type(err['input']).__name__})"
        else:
            msg = err["msg"].removeprefix("Value error, ")
        parts.append(f"{loc}: {msg}")
    return "; ".join(parts)
