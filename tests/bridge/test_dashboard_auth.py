"""The optional token of ``/dashboard/...`` and ``/metrics`` and the per-project snapshot cache (issue 10, item 2)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import pytest

import annotator_bridge.monitoring.status as status_mod
from al_loop.store import Store
from annotator_bridge.monitoring import SnapshotCache, StaticQueueProbe
from annotator_bridge.settings import Settings
from annotator_bridge.web import create_app
from annotator_bridge.web.context import get_status_cache, set_queue_probe
from annotator_bridge.web.monitor_auth import COOKIE_NAME, safe_next
from tests.bridge import test_monitoring
from tests.bridge.monitoring_data import build_live_project

live = test_monitoring.live  # fixture: a project with four real rounds (word-vote model) and labels

DASH = "dash-token-9f2c"
API = "api-token-71ab"


def _app(live: Any, tmp_path: Path, *, dashboard_token: str | None = DASH, api_token: str | None = API) -> Any:
    settings = Settings(home=tmp_path, database_url="sqlite://", broker_url="filesystem://",
                        artifacts_dir=tmp_path / "art", api_token=api_token, dashboard_token=dashboard_token)
    return create_app(settings, store=live.store)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# ------------------------------------------------------------------ open without a dashboard token
def test_without_a_dashboard_token_the_pages_stay_open(live: Any, tmp_path: Path) -> None:
    client = _app(live, tmp_path, dashboard_token=None).test_client()
    pid = live.project_id
    for url in ("/dashboard/", f"/dashboard/{pid}", f"/dashboard/{pid}/data.json", f"/dashboard/{pid}/fragment",
                "/metrics"):
        assert client.get(url).status_code == 200, url
    assert client.get("/dashboard/sign-in").status_code == 200
    assert client.post("/dashboard/sign-in", data={"token": "x"}).status_code == 303  # nothing to sign in to


# ------------------------------------------------------------------ with one
@pytest.fixture
def guarded(live: Any, tmp_path: Path) -> Any:
    return _app(live, tmp_path).test_client()


def test_every_page_and_metrics_need_the_token(live: Any, guarded: Any) -> None:
    pid = live.project_id
    rid = live.store.list_rounds(pid)[-1].id
    for url in (f"/dashboard/{pid}/data.json", f"/dashboard/{pid}/fragment",
                f"/dashboard/{pid}/rounds/{rid}/report.json"):
        resp = guarded.get(url)
        assert resp.status_code == 401 and resp.headers["WWW-Authenticate"].startswith("Bearer"), url
        assert resp.get_json()["error"]["type"] == "Unauthorized"
        assert b"reviews" not in resp.data and b"alice" not in resp.data
    for url in ("/dashboard/", f"/dashboard/{pid}", f"/dashboard/{pid}/rounds/{rid}"):
        resp = guarded.get(url)
        html = resp.get_data(as_text=True)
        assert resp.status_code == 401 and '<form method="post" action="/dashboard/sign-in">' in html, url
        assert "alice" not in html and "reviews" not in html
    metrics = guarded.get("/metrics")
    assert metrics.status_code == 401 and b"al_loop_" not in metrics.data
    assert guarded.get("/dashboard/static/dashboard.css").status_code == 200  # the sign-in page needs its CSS


@pytest.mark.parametrize("token", [DASH, API])
def test_a_bearer_token_opens_them(live: Any, guarded: Any, token: str) -> None:
    pid = live.project_id
    assert guarded.get(f"/dashboard/{pid}/data.json", headers=_bearer(token)).get_json()["summary"]["labelled"] == 26
    assert guarded.get(f"/dashboard/{pid}", headers=_bearer(token)).status_code == 200
    assert b"al_loop_rounds_started" in guarded.get("/metrics", headers=_bearer(token)).data


@pytest.mark.parametrize("headers", [_bearer("wrong"), _bearer(""), {"Authorization": DASH},
                                     {"Authorization": f"Basic {DASH}"}])
def test_wrong_or_malformed_credentials_are_refused(live: Any, guarded: Any, headers: dict[str, str]) -> None:
    assert guarded.get(f"/dashboard/{live.project_id}/data.json", headers=headers).status_code == 401
    assert guarded.get("/metrics", headers=headers).status_code == 401


def test_a_token_in_the_query_string_is_not_accepted(live: Any, guarded: Any) -> None:
    for param in ("token", "access_token"):
        assert guarded.get(f"/dashboard/{live.project_id}/data.json?{param}={DASH}").status_code == 401
        assert guarded.get(f"/metrics?{param}={DASH}").status_code == 401


def test_sign_in_sets_a_cookie_that_does_not_hold_the_token(live: Any, guarded: Any,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    pid = live.project_id
    with caplog.at_level(logging.DEBUG):
        wrong = guarded.post("/dashboard/sign-in", data={"token": "nope", "next": f"/dashboard/{pid}"})
        assert wrong.status_code == 401 and "Set-Cookie" not in wrong.headers
        assert b"That token is not accepted." in wrong.data
        resp = guarded.post("/dashboard/sign-in", data={"token": DASH, "next": f"/dashboard/{pid}"})
        assert resp.status_code == 303 and resp.headers["Location"].endswith(f"/dashboard/{pid}")
        cookie = resp.headers["Set-Cookie"]
        assert cookie.startswith(f"{COOKIE_NAME}=") and DASH not in cookie
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
        for url in (f"/dashboard/{pid}", f"/dashboard/{pid}/data.json", f"/dashboard/{pid}/fragment", "/metrics"):
            assert guarded.get(url).status_code == 200, url
        out = guarded.post("/dashboard/sign-out")
        assert out.status_code == 303 and f"{COOKIE_NAME}=;" in out.headers["Set-Cookie"]
        assert guarded.get(f"/dashboard/{pid}/data.json").status_code == 401
    assert DASH not in caplog.text and API not in caplog.text
    assert "sign-in refused" in caplog.text


def test_a_forged_cookie_is_refused(live: Any, guarded: Any) -> None:
    guarded.set_cookie(COOKIE_NAME, DASH)  # the raw token is not the cookie's value
    assert guarded.get(f"/dashboard/{live.project_id}/data.json").status_code == 401


@pytest.mark.parametrize(("target", "expected"), [
    ("/dashboard/3", "/dashboard/3"), ("/metrics", "/metrics"), ("https://evil.example/", "/dashboard/"),
    ("//evil.example/dashboard", "/dashboard/"), ("/api/projects", "/dashboard/"), (None, "/dashboard/"),
    ("/dashboard/\r\nSet-Cookie: x", "/dashboard/"),
])
def test_sign_in_only_returns_to_this_dashboard(target: str | None, expected: str) -> None:
    assert safe_next(target, "/dashboard/") == expected


# ------------------------------------------------------------------ the snapshot cache
def test_a_second_request_does_not_recompute_and_a_new_label_does(live: Any, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    real = status_mod.project_snapshot

    def counting(store: Store, project_id: int, *args: Any, **kwargs: Any) -> dict[str, Any]:
        calls.append(project_id)
        return real(store, project_id, *args, **kwargs)

    monkeypatch.setattr(status_mod, "project_snapshot", counting)
    client = _app(live, tmp_path, dashboard_token=None).test_client()
    store, pid = live.store, live.project_id
    url = f"/dashboard/{pid}/data.json"
    first = client.get(url).get_json()
    for _ in range(3):
        assert client.get(url).get_json()["summary"] == first["summary"]
    assert client.get(f"/dashboard/{pid}/fragment").status_code == 200
    assert client.get(f"/dashboard/{pid}").status_code == 200
    assert len(calls) == 1
    # a new label: recomputed, and the new count is there
    item = store.unlabelled_item_ids(pid)[0]
    store.record_label(pid, item, "ls:new", payload=live.gold[item], source="labelstudio", annotator="carol")
    assert client.get(url).get_json()["summary"]["labelled"] == first["summary"]["labelled"] + 1
    assert len(calls) == 2
    client.get(url)
    assert len(calls) == 2
    # a deleted label, a new round, a round's progress: each recomputes once
    store.delete_labels(pid, ["ls:new"])
    assert client.get(url).get_json()["summary"]["labelled"] == first["summary"]["labelled"]
    rnd = live.service.create_round(pid, trigger="api")
    assert client.get(url).get_json()["summary"]["active"] is True
    store.update_round(rnd.id, progress=0.5)
    assert client.get(url).get_json()["rounds"][-1]["progress"] == 0.5
    client.get(url)
    assert len(calls) == 5


def test_the_cache_expires_and_never_mixes_projects(live: Any, tmp_path: Path) -> None:
    now = [1000.0]
    cache = SnapshotCache(max_age=60, clock=lambda: now[0])
    store, pid = live.store, live.project_id
    other = build_live_project(store, tmp_path / "art2", name="other", rounds=1)
    a = cache.snapshot(store, pid)
    b = cache.snapshot(store, other.project_id)
    assert a["project"]["name"] == "reviews" and b["project"]["name"] == "other" and cache.computed == 2
    cache.snapshot(store, pid)
    assert cache.computed == 2
    now[0] += 61  # times relative to now (ages, hourly buckets) are never older than max_age
    cache.snapshot(store, pid)
    assert cache.computed == 3


def test_the_broker_probe_is_asked_once_per_ttl_and_a_slow_probe_costs_once(live: Any, tmp_path: Path) -> None:
    class SlowProbe(StaticQueueProbe):
        asked = 0

        def workers(self) -> list[dict[str, Any]]:
            SlowProbe.asked += 1
            time.sleep(0.4)  # what a Celery broadcast with a timeout costs
            return [{"name": "w1", "status": "online"}]

    app = _app(live, tmp_path, dashboard_token=None)
    set_queue_probe(app, SlowProbe(queues={"default": 3}))
    client = app.test_client()
    url = f"/dashboard/{live.project_id}/data.json"
    assert client.get(url).get_json()["liveness"]["queues"] == {"default": 3}
    t0 = time.perf_counter()
    for _ in range(5):
        assert client.get(url).get_json()["liveness"]["workers"][0]["name"] == "w1"
        client.get("/metrics")
    elapsed = (time.perf_counter() - t0) / 10
    assert SlowProbe.asked == 1
    assert elapsed < 0.2, f"a cached request took {elapsed * 1000:.0f} ms"
    print(f"\n[dashboard] cached data.json + /metrics: {elapsed * 1000:.1f} ms per request")
    assert get_status_cache(app).computed == 1


def test_a_failing_probe_is_remembered_too(live: Any) -> None:
    class Down(StaticQueueProbe):
        asked = 0

        def depth(self) -> dict[str, int]:
            Down.asked += 1
            raise ConnectionError("broker down")

    cache = SnapshotCache()
    probe = Down()
    for _ in range(3):
        assert "broker down" in cache.snapshot(live.store, live.project_id, probe)["liveness"]["error"]
    assert Down.asked == 1


def test_an_unknown_project_is_a_404_behind_the_token(guarded: Any) -> None:
    assert guarded.get("/dashboard/999/data.json", headers=_bearer(DASH)).status_code == 404
    assert guarded.get("/dashboard/999/data.json").status_code == 401
