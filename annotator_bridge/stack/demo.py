"""The demo project of the local stack, made through al-loop's HTTP API once the services are up.

The NCBI-disease sample shipped in ``annotator_bridge/demo`` (NER): creating the project
creates the Label Studio project and connects the ML backend; round 0 (cold start) then
pushes predictions. Idempotent: a second start finds the project by name and reuses it.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .processes import StackError, wait_until

DEMO_DIR = Path(__file__).resolve().parents[1] / "demo"
DEMO_SAMPLE = DEMO_DIR / "ncbi_disease_sample.tsv"
DEMO_TEST_SAMPLE = DEMO_DIR / "ncbi_disease_test_sample.tsv"
DEMO_PROJECT_NAME = "NCBI-disease demo"

DEMO_SPEC: dict[str, Any] = {
    "name": DEMO_PROJECT_NAME,
    "task": "ner",
    "labels": ["Disease"],
    "label_studio": {"title": DEMO_PROJECT_NAME,
                     "description": "NCBI-disease sample (CC BY 4.0, see annotator_bridge/demo/ATTRIBUTION.md): "
                                    "label Disease mentions; al-loop retrains every 20 labels."},
    # sized for a CPU laptop: a round trains on the labels so far in well under a minute
    "loop": {"strategy": "least_confidence", "seed_size": 20, "batch_size": 20, "retrain_every": 20},
    "training": {"max_length": 128, "batch_size": 16, "min_epochs": 2, "max_epochs": 10, "target_steps": 60},
}


class StackApi:
    """al-loop's management API at ``api_url``, with its bearer ``token`` (errors: ``StackError``)."""

    def __init__(self, api_url: str, token: str) -> None:
        self.api_url, self.token = api_url, token

    def __call__(self, method: str, path: str, body: Any = None, timeout: float = 120.0) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(f"{self.api_url}{path}", data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                raw = resp.read()
        except urllib.error.HTTPError as exc:
            detail = exc.read().decode(errors="replace")[:1000]
            raise StackError(f"al-loop API {method} {path} failed: HTTP {exc.code} {detail}") from exc
        return json.loads(raw) if raw else None


def ensure_demo(api: StackApi, demo_file: Path, demo_test_file: Path | None, round0: bool, *,
                say: Callable[[str], None], check: Callable[[], None]) -> dict[str, Any]:
    """Create (or find) the demo NER project and, with ``round0``, wait for round-0 predictions in Label Studio.

    ``check`` raises when a service of the stack died meanwhile. Returns the project's id, name, Label
    Studio project id, model version and item counts.
    """
    found = [p for p in api("GET", "/api/projects")["projects"] if p["name"] == DEMO_PROJECT_NAME]
    if found:
        project = found[0]
        say(f"demo: reusing project {project['id']} ({DEMO_PROJECT_NAME})")
    else:
        say(f"demo: creating project {DEMO_PROJECT_NAME!r} from {demo_file.name} ...")
        project = api("POST", "/api/projects", DEMO_SPEC)["project"]
        if demo_test_file is not None and demo_test_file.exists():
            api("POST", f"/api/projects/{project['id']}/items",
                {"path": str(demo_test_file), "format": "bio", "split": "test"}, timeout=600)
        api("POST", f"/api/projects/{project['id']}/items",
            {"path": str(demo_file), "format": "bio", "start_round": round0}, timeout=600)
    pid = int(project["id"])
    status = api("GET", f"/api/projects/{pid}/status")
    if round0 and status.get("last_round") is None:
        api("POST", f"/api/projects/{pid}/rounds")

    def pushed() -> bool:
        last = api("GET", f"/api/projects/{pid}/status").get("last_round") or {}
        if last.get("status") in ("failed", "cancelled"):
            raise StackError(f"demo round {last.get('index')} {last.get('status')}: {last.get('error')}")
        return last.get("push_status") in ("done", "superseded")

    if round0:
        wait_until(pushed, 300, "round-0 predictions to reach Label Studio", check, 0.5)
    status = api("GET", f"/api/projects/{pid}/status")
    ls = status.get("label_studio") or {}
    demo = {"id": pid, "name": DEMO_PROJECT_NAME, "ls_project_id": ls.get("project_id"),
            "model_version": ls.get("model_version"), "items": status.get("items")}
    say(f"demo: project {pid} = Label Studio project {ls.get('project_id')}, "
        f"{(status.get('items') or {}).get('pool')} tasks, model version {ls.get('model_version')}")
    return demo
