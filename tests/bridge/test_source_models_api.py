"""``base_model`` naming another project's model version through the API: checked when the project is created
(4xx, never 5xx; nothing created in Label Studio), stored as ``project:<id>:<version>``, and a round of the new
project starts from the version's artifact."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from al_loop.data.schema import LabelSchema
from tests.bridge.test_loop import cls_spec
from tests.bridge.test_web import AUTH, assert_error, build

VERSION = "al-r001-abcd1234"


@pytest.fixture
def web(tmp_path: Path) -> SimpleNamespace:
    env = build(tmp_path)
    resp = env.client.post("/api/projects", json=cls_spec(name="source"), headers=AUTH)
    assert resp.status_code == 201, resp.get_json()
    env.source = resp.get_json()["project"]["id"]
    schema = LabelSchema.build("classification", ["pos", "neg"])
    artifact = tmp_path / "artifacts" / "source-v1"
    artifact.mkdir(parents=True)
    for name, path in ((VERSION, str(artifact)), ("al-r002-noartifact", "")):
        env.store.add_version(env.source, name=name, round_id=None, base_model="default", schema=schema,
                              metrics={}, train_report={}, artifact_path=path)
    env.artifact = str(artifact)
    return env


def _create(web: SimpleNamespace, **over: Any) -> Any:
    return web.client.post("/api/projects", json=cls_spec(**over), headers=AUTH)


def test_a_project_starts_from_another_projects_version(web: SimpleNamespace) -> None:
    resp = _create(web, name="target", labels=["pos", "neg", "neutral"],
                   base_model={"project": web.source, "version": VERSION})
    assert resp.status_code == 201, resp.get_json()
    assert resp.get_json()["project"]["base_model"] == f"project:{web.source}:{VERSION}"
    same = _create(web, name="target2", base_model=f"project:{web.source}:{VERSION}")  # the string form too
    assert same.status_code == 201, same.get_json()
    folder = _create(web, name="target3", base_model=web.artifact)  # the artifact folder itself
    assert folder.status_code == 400  # a fake artifact: no config.json, so it is no model folder


@pytest.mark.parametrize(("base_model", "task", "message"), [
    ({"project": 9999, "version": VERSION}, "classification", "project 9999 not found"),
    ({"project": 2**63 - 1, "version": VERSION}, "classification", "not found"),
    ({"project": "SOURCE", "version": "al-r009-nothere"}, "classification", "has no model version"),
    ({"project": "SOURCE", "version": "al-r002-noartifact"}, "classification", "has no artifact"),
    ({"project": "SOURCE", "version": VERSION}, "ner", "task kinds differ"),
    ({"project": "SOURCE"}, "classification", "'base_model'"),
    ({"project": -1, "version": VERSION}, "classification", "'base_model'"),
    ({"project": "SOURCE", "version": VERSION, "x": 1}, "classification", "'base_model'"),
    ("project:9999:al-r001-abcd1234", "classification", "project 9999 not found"),
])
def test_bad_source_versions_are_400_and_create_nothing(web: SimpleNamespace, base_model: Any, task: str,
                                                         message: str) -> None:
    if isinstance(base_model, dict) and base_model.get("project") == "SOURCE":
        base_model = {**base_model, "project": web.source}
    before = (len(web.store.list_projects()), len(web.gw.projects))
    labels = ["Disease"] if task == "ner" else ["pos", "neg"]
    err = assert_error(_create(web, name="target", task=task, labels=labels, base_model=base_model), 400,
                       "ConfigError")
    assert message in err["message"], err
    assert (len(web.store.list_projects()), len(web.gw.projects)) == before
