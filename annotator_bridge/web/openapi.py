"""The OpenAPI 3 description of the HTTP API: ``openapi.yaml`` beside this module, served at ``GET /api/openapi.json``.

The YAML file is the one source (packaged as package data); ``load_openapi`` reads it once.
The route needs no token (the description holds no secret) and lives on its own blueprint, so
the management API's bearer check does not apply to it. ``tests/bridge/test_openapi.py`` checks
that every route of the app is described (and nothing else), that the config bounds match
``al_loop.config``, and fuzzes every operation from this description (zero 5xx).
"""

from __future__ import annotations

import copy
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from flask import Blueprint, jsonify

OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")

bp = Blueprint("openapi", __name__)


@lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    with OPENAPI_FILE.open(encoding="utf-8") as fh:
        data = yaml.safe_load(fh)
    if not isinstance(data, dict) or not str(data.get("openapi", "")).startswith("3."):
        raise ValueError(f"{OPENAPI_FILE} is not an OpenAPI 3 document")
    return data


def load_openapi() -> dict[str, Any]:
    """The description as a dict (a copy: callers may change it)."""
    return copy.deepcopy(_load())


@bp.get("/api/openapi.json")
def openapi_json() -> Any:
    return jsonify(_load())


__all__ = ["OPENAPI_FILE", "bp", "load_openapi"]
