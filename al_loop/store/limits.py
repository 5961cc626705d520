"""The bounds of stored values, read from the tables (the one source), checked before a write.

SQLite stores a 5,000-character item id in a ``VARCHAR(200)`` column and a 2**40 task id in an
``INTEGER`` one; PostgreSQL refuses both, and text holding NUL characters, with a database error. The
store checks what callers give it first and raises ``ValueOutOfBoundsError`` (an ``AlLoopError``:
a 400 at the API, a message on the command line), the same on both databases. The edges check the same
bounds earlier with messages that name the request's field (``annotator_bridge/loop/spec.py``,
``loop/projects.py``, ``labelstudio/convert.py``); these constants are the ones to compare against.
Free-form fields that only describe something (an annotator, a refused version's item id, a
simulation's name) are cut to fit instead (``fit``).
"""

from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy import Column, String

from al_loop.errors import AlLoopError
from al_loop.store.tables import ItemRow, LabelRow, ProjectRow, SimulationRow

INT32_MAX = 2**31 - 1  # INTEGER columns (PostgreSQL: 32-bit); Label Studio's ids fit


_LENGTHS: dict[int, int] = {}  # id(column) -> length: resolving a mapped attribute's column costs ~30 us a call


def column_length(column: Any) -> int:
    """The declared length of a ``String(n)`` column (a mapped attribute or a Column)."""
    known = _LENGTHS.get(id(column))
    if known is not None:
        return known
    col: Column[Any] = getattr(column, "expression", column)
    if not isinstance(col.type, String) or col.type.length is None:
        raise TypeError(f"{col} has no length")
    _LENGTHS[id(column)] = int(col.type.length)
    return int(col.type.length)


MAX_ITEM_ID = column_length(ItemRow.item_id)
MAX_PROJECT_NAME = column_length(ProjectRow.name)
MAX_BASE_MODEL = column_length(ProjectRow.base_model)
MAX_ANNOTATION_KEY = column_length(LabelRow.annotation_key)
MAX_SIMULATION_NAME = column_length(SimulationRow.name)


class ValueOutOfBoundsError(AlLoopError):
    """A value longer or larger than its database column holds (or text with a NUL character)."""


def check_string(what: str, value: str | None, column: Any) -> None:
    """ValueOutOfBoundsError when ``value`` is longer than ``column`` or holds NUL."""
    if value is None:
        return
    limit = column_length(column)
    if len(value) > limit:
        raise ValueOutOfBoundsError(f"{what} is {len(value)} characters long; at most {limit} are allowed")
    if "\x00" in value:
        raise ValueOutOfBoundsError(f"{what} contains a NUL character")


def check_text(what: str, value: str | None) -> None:
    """Unbounded text: no NUL (PostgreSQL refuses it in text columns)."""
    if value is not None and "\x00" in value:
        raise ValueOutOfBoundsError(f"{what} contains a NUL character")


def check_int(what: str, value: int | None) -> None:
    if value is not None and not -INT32_MAX - 1 <= int(value) <= INT32_MAX:
        raise ValueOutOfBoundsError(f"{what} {value} is out of range (at most {INT32_MAX})")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def json_dumps(value: Any) -> str:
    """The JSON columns' serializer: standard JSON, NaN and Infinity stored as null on both databases
    (PostgreSQL's json type refuses those tokens; a round's metrics may hold a NaN)."""
    try:
        return json.dumps(value, allow_nan=False)
    except ValueError:
        return json.dumps(_finite(value), allow_nan=False)


def fit(value: str | None, column: Any) -> str | None:
    """A descriptive value cut to its column's length, NUL characters dropped."""
    if value is None:
        return None
    return value.replace("\x00", "")[: column_length(column)]


__all__ = ["INT32_MAX", "MAX_ANNOTATION_KEY", "MAX_BASE_MODEL", "MAX_ITEM_ID", "MAX_PROJECT_NAME",
           "MAX_SIMULATION_NAME", "ValueOutOfBoundsError", "check_int", "check_string", "check_text",
           "column_length", "fit", "json_dumps"]
