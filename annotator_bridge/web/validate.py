"""Request bodies read under bounds: every view that takes a body reads it here.

``json_body`` decodes the body (at most ``AL_LOOP_MAX_REQUEST_MB``: 413 above, from Flask's
``MAX_CONTENT_LENGTH``) as strict UTF-8 JSON and walks it once, iteratively, before any view code
sees it. A 400 (werkzeug ``BadRequest``, a JSON error body) names the JSON path of the first value
that breaks a rule:

- nesting deeper than ``MAX_DEPTH`` (a body nested 1,000 deep never reaches a recursive function);
- ``NaN``, ``Infinity`` and numbers that overflow a double (``1e400``);
- integers outside 64 bits (``|n| >= 2**63``) and integers of more than 4,300 digits;
- strings (values and keys) that are not real Unicode (a lone surrogate such as ``\\ud800``, which
  no UTF-8 store can hold) or that hold NUL (PostgreSQL text and file paths cannot).

``check_numbers=False`` leaves numbers to the caller (the project spec: its config fields are
typed and bounded, with messages that name the field and its range).

``BoundedIntConverter`` is the Flask ``int`` converter of the app: ids in a URL beyond ``MAX_URL_ID``
(18 digits) do not match the route (404) instead of overflowing the database driver.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from flask import request
from werkzeug.exceptions import BadRequest
from werkzeug.routing import IntegerConverter

MAX_DEPTH = 64
MAX_INT = 2**63 - 1
MAX_URL_DIGITS = 18
MAX_URL_ID = 10**MAX_URL_DIGITS - 1  # < 2**63


class BoundedIntConverter(IntegerConverter):
    """``<int:...>`` of at most 18 digits (below 2**63): a longer id matches no route (404), never overflows.

    The bound is in the regex, not in a ``max``: werkzeug answers a converter's ValidationError with 405
    when another method's rule matched the same path.
    """

    regex = rf"\d{{1,{MAX_URL_DIGITS}}}"


def _number(text: str) -> float:
    return float(text)  # "1e400" -> inf: refused by the walk, with its path


def _constant(text: str) -> float:
    return float(text)  # NaN, Infinity, -Infinity: refused by the walk, with its path


def _path(parts: tuple[str | int, ...]) -> str:
    out = "body"
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else f".{p}"
    return out


def _bad_string(s: str) -> str | None:
    if "\x00" in s:
        return "holds a NUL character (\\u0000), which cannot be stored"
    if not s.isascii():
        try:
            s.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (a lone UTF-16 surrogate such as \\ud800)"
    return None


def _bad_leaf(value: Any, check_numbers: bool) -> str | None:
    if isinstance(value, str):
        return _bad_string(value)
    if not check_numbers or isinstance(value, bool):
        return None
    if isinstance(value, float) and not math.isfinite(value):
        return f"is {value!r}: NaN and Infinity are not JSON numbers; send a finite number"
    if isinstance(value, int) and not -MAX_INT - 1 <= value <= MAX_INT:
        return "is an integer outside 64 bits (|n| < 2**63)"
    return None


def check_tree(value: Any, *, check_numbers: bool = True, max_depth: int = MAX_DEPTH) -> None:
    """Raise BadRequest for the first value of a decoded JSON document that breaks the rules above."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ())]
    bad = _bad_leaf(value, check_numbers)
    if bad:
        raise BadRequest(f"{_path(())} {bad}")
    while stack:
        node, depth, path = stack.pop()
        if depth > max_depth:
            raise BadRequest(f"the request body is nested deeper than {max_depth} levels (at {_path(path)})")
        pairs: Any
        if isinstance(node, dict):
            for key in node:
                problem = _bad_string(key)
                if problem:
                    raise BadRequest(f"a key of {_path(path)} {problem}")
            pairs = node.items()
        elif isinstance(node, list):
            pairs = enumerate(node)
        else:
            continue
        for key, child in pairs:
            if isinstance(child, dict | list):
                stack.append((child, depth + 1, (*path, key)))
                continue
            problem = _bad_leaf(child, check_numbers)
            if problem:
                raise BadRequest(f"{_path((*path, key))} {problem}")


def parse_json(data: bytes, *, check_numbers: bool = True) -> Any:
    """Decode and check one JSON document (BadRequest when it is not strict UTF-8 JSON within the bounds)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise BadRequest(f"the request body is not UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, parse_float=_number, parse_constant=_constant)
    except RecursionError:
        raise BadRequest(f"the request body is nested deeper than {MAX_DEPTH} levels") from None
    except json.JSONDecodeError as exc:
        raise BadRequest(f"the request body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") \
            from None
    except ValueError as exc:  # an integer of more than 4,300 digits
        raise BadRequest(f"the request body holds a number that cannot be read: {str(exc)[:120]}") from None
    check_tree(value, check_numbers=check_numbers)
    return value


def json_body(*, required: bool = True, check_numbers: bool = True) -> Any:
    """The current request's JSON body, checked (``None`` when empty and not ``required``)."""
    data = request.get_data(cache=True)
    if not data.strip():
        if required:
            raise BadRequest("a JSON request body is required")
        return None
    return parse_json(data, check_numbers=check_numbers)


def json_object(what: str, *, required: bool = True, check_numbers: bool = True) -> Mapping[str, Any]:
    """The body as a JSON object (``{}`` when empty and not ``required``)."""
    body = json_body(required=required, check_numbers=check_numbers)
    if body is None:
        return {}
    if not isinstance(body, Mapping):
        raise BadRequest(f"{what} must be a JSON object, got {type(body).__name__}")
    return body


__all__ = ["MAX_DEPTH", "MAX_URL_ID", "BoundedIntConverter", "check_tree", "json_body",
           "json_object", "parse_json"]
