"""The OpenAPI description (annotator_bridge/web/openapi.yaml, GET /api/openapi.json) and a fuzz of every route.

The description must cover exactly the app's routes and agree with the config bounds of
``al_loop.config``. The fuzz (schemathesis, in-process against the Flask app, a bounded
number of examples per operation, derandomized) sends schema-valid and schema-violating requests
to every operation of a seeded app (a project with items, two finished rounds, a promoted
version) and asserts that none gets a 5xx, and that every 4xx of the API and the ML backend is
the JSON error body.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from al_loop.config import LOOP_BOUNDS, TRAINING_BOUNDS, Bound
from al_loop.errors import AlLoopError
from annotator_bridge.web.openapi import OPENAPI_FILE, load_openapi
from tests.bridge.test_hostile_input import QueueOnly
from tests.bridge.test_loop import cls_spec
from tests.bridge.test_web import AUTH, HOOK, build, train_two_rounds

METHODS = {"GET", "POST", "PUT", "PATCH", "DELETE"}


def app_routes(app: Any) -> set[tuple[str, str]]:
    out = set()
    for rule in app.url_map.iter_rules():
        path = re.sub(r"<(?:[a-z]+:)?([a-z_]+)>", r"{\1}", rule.rule)
        out.update((method, path) for method in (rule.methods or set()) & METHODS)
    return out


def described_routes(doc: dict[str, Any]) -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in doc["paths"].items() for method in item
            if method.upper() in METHODS}


def test_every_route_is_described_and_nothing_else(tmp_path: Path) -> None:
    web = build(tmp_path)
    assert described_routes(load_openapi()) == app_routes(web.app)


def test_the_description_is_served_without_a_token(tmp_path: Path) -> None:
    web = build(tmp_path)
    resp = web.client.get("/api/openapi.json")
    assert resp.status_code == 200 and resp.mimetype == "application/json"
    doc = resp.get_json()
    assert doc == json.loads(json.dumps(load_openapi())) and doc["openapi"].startswith("3.0")
    assert OPENAPI_FILE.name == "openapi.yaml" and OPENAPI_FILE.is_file()
    assert web.client.get("/api/projects").status_code == 401  # the rest of /api still needs the token


def _check_bound(prop: dict[str, Any], bound: Bound, name: str) -> None:
    kind = {"int": "integer", "float": "number", "bool": "boolean", "str": "string"}[bound.kind]
    assert prop["type"] == kind, name
    if bound.kind in ("int", "float"):
        assert (prop.get("minimum"), prop.get("maximum")) == (bound.lo, bound.hi), name
        assert bool(prop.get("exclusiveMinimum")) == bound.lo_open, name
        assert bool(prop.get("exclusiveMaximum")) == bound.hi_open, name
        assert bool(prop.get("nullable")) == bound.optional, name


def test_config_schemas_agree_with_the_config_bounds() -> None:
    schemas = load_openapi()["components"]["schemas"]
    for schema_name, bounds in (("LoopSettings", LOOP_BOUNDS), ("TrainingSettings", TRAINING_BOUNDS)):
        props = schemas[schema_name]["properties"]
        assert set(props) == set(bounds), schema_name
        for name, bound in bounds.items():
            _check_bound(props[name], bound, f"{schema_name}.{name}")
    spec = schemas["ProjectSpec"]["properties"]
    for name in ("batch_size", "seed_size", "retrain_every", "max_pool_scored", "seed", "dedupe_threshold"):
        _check_bound(spec[name], LOOP_BOUNDS[name], f"ProjectSpec.{name}")


# ---------------------------------------------------------------------------- fuzz
def bounded(doc: dict[str, Any], items: int = 3, chars: int = 40, props: int = 4) -> dict[str, Any]:
    """The fuzzer's copy of the description: small arrays, strings and free-form objects (generation cost), ids
    in URLs and Label Studio payloads near the seeded ones (so requests reach real projects, rounds, versions
    and tasks), and specs that can succeed ("default" model, real strategies). The published file is unchanged."""
    doc = copy.deepcopy(doc)

    def visit(node: Any) -> None:
        if isinstance(node, dict):
            if node.get("type") == "array":
                node["maxItems"] = min(node.get("maxItems", items), items)
            if node.get("type") == "string" and "enum" not in node and "pattern" not in node:
                node["maxLength"] = min(node.get("maxLength", chars), chars)
            if node.get("type") == "object" and "properties" not in node:
                node["maxProperties"] = props
            if node.get("type") == "integer" and node.get("maximum") == 2147483647:
                node["maximum"] = 30  # Label Studio ids: the seeded project is 1, its tasks 1..20
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    components = doc["components"]
    visit(components)
    for param in components["parameters"].values():
        param["schema"]["maximum"] = 3  # project 1, rounds 0-1, versions 1-2 exist
    strategies = {"type": "string", "enum": ["random", "least_confidence", "margin", "entropy", "mnlp"]}
    spec = components["schemas"]["ProjectSpec"]["properties"]
    spec["base_model"] = {"type": "string", "enum": ["default"]}
    spec["strategy"] = components["schemas"]["LoopSettings"]["properties"]["strategy"] = strategies
    return doc


@pytest.fixture
def seeded(tmp_path: Path) -> SimpleNamespace:
    web = build(tmp_path)
    resp = web.client.post("/api/projects", json=cls_spec(), headers=AUTH)
    assert resp.status_code == 201, resp.get_json()
    web.pid = resp.get_json()["project"]["id"]
    web.ls_id = resp.get_json()["project"]["integration"]["ls_project_id"]
    from tests.bridge.test_loop import cls_items

    items = [{"id": e.item_id, "text": e.text} for e in cls_items(20)]
    assert web.client.post(f"/api/projects/{web.pid}/items", json=items, headers=AUTH).status_code == 201
    train_two_rounds(web)
    queue = QueueOnly()  # from here on work is queued, as behind a real broker
    web.loop.dispatcher = queue
    web.app.extensions["al_loop"].dispatcher = queue
    web.queue = queue
    return web


POSITIVE_EXAMPLES = 40  # per operation; about 25 s for all of them on 2 shared cores
NEGATIVE_EXAMPLES = 25
JSON_ERRORS = ("/api/", "/setup", "/predict", "/webhook", "/health", "/ml/")


def fuzz_operation(op: Any, mode: Any, examples: int, failures: list[str]) -> int:
    """Send ``examples`` generated requests of ``mode`` to ``op``; record every 5xx and non-JSON API error."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis.errors import Unsatisfiable

    calls = [0]

    @given(case=op.as_strategy(generation_mode=mode))
    @settings(max_examples=examples, deadline=None, derandomize=True, database=None,
              suppress_health_check=list(HealthCheck), phases=[Phase.explicit, Phase.generate])
    def run(case: Any) -> None:
        calls[0] += 1
        resp = case.call(headers={**AUTH, **HOOK})
        text = resp.text
        where = f"{op.label} {mode.value}: {case.method} {case.formatted_path} body={str(case.body)[:300]}"
        if resp.status_code >= 500:
            failures.append(f"{resp.status_code} {where} -> {text[:300]}")
        elif resp.status_code >= 400 and case.formatted_path.startswith(JSON_ERRORS):
            body = resp.json()
            if set(body) != {"error"} or set(body["error"]) != {"type", "message"}:
                failures.append(f"{resp.status_code} not a JSON error: {where} -> {text[:300]}")
        if "Traceback" in text:
            failures.append(f"traceback: {where}")

    try:
        run()
    except Unsatisfiable:
        if mode.value == "positive":
            raise
        # nothing of this operation can violate its schema (e.g. a free-form string path parameter)
    return calls[0]


@pytest.mark.slow
def test_fuzz_every_route_from_the_openapi_description(seeded: SimpleNamespace) -> None:
    import schemathesis  # a dev dependency (bin/install --test): a missing one fails the test, never skips it
    from schemathesis.generation import GenerationMode

    schema = schemathesis.openapi.from_dict(bounded(load_openapi()))
    schema.app = seeded.app
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == len(described_routes(load_openapi()))
    failures: list[str] = []
    calls = 0
    for op in operations:
        has_input = (op.body is not None and len(op.body) > 0) or any(True for _ in op.iter_parameters())
        calls += fuzz_operation(op, GenerationMode.POSITIVE, POSITIVE_EXAMPLES, failures)
        if has_input:
            calls += fuzz_operation(op, GenerationMode.NEGATIVE, NEGATIVE_EXAMPLES, failures)
    assert failures == [], "\n".join(failures[:20])
    assert calls >= 2 * len(operations)
    # what the server accepted and queued, the worker side can handle: no exception escapes handle_event
    events = [args for name, args in seeded.queue.calls if name == "ingest_event"]
    assert events
    for project_id, payload in events:
        try:
            seeded.loop.handle_event(project_id, payload)
        except AlLoopError:
            pass  # a typed, reported refusal (e.g. Label Studio's side unknown)
        except Exception as exc:
            failures.append(f"worker: {type(exc).__name__}: {exc} for {str(payload)[:300]}")
    assert failures == [], "\n".join(failures[:20])
