"""The dashboard in a real headless browser (Debian's chromium driven by Playwright).

A real server (the app factory behind werkzeug, on a free loopback port) holds real rounds:
a live project on TREC questions whose rounds ran through the real RoundService (word-vote
model, real metrics), labelled by three annotators, plus a short real simulation on the same
data for the learning-curve overlay. The tests check the page against the store, act through
the authenticated buttons, and watch a round update live. Screenshots go to
``test-artifacts/``; ``docs/dashboard.png`` (the README's picture) is written when missing or
when ``AL_LOOP_UPDATE_DOCS_SCREENSHOT=1``.

Chromium: ``/usr/bin/chromium`` (override with ``AL_LOOP_CHROMIUM``); Playwright's own browser
download is not needed.
"""

from __future__ import annotations

import os
import shutil
import threading
from collections import defaultdict
from datetime import timedelta
from pathlib import Path

import pytest

import al_loop.rounds  # noqa: F401  (import the rounds package before the store)
from al_loop.data.readers import read_examples
from al_loop.store import Store
from annotator_bridge.dispatch import InlineDispatcher, ThreadDispatcher
from annotator_bridge.loop import LoopService
from annotator_bridge.monitoring import StaticQueueProbe
from annotator_bridge.settings import Settings
from annotator_bridge.web import create_app
from annotator_bridge.web.context import set_queue_probe
from tests.bridge.monitoring_data import attach_simulation, build_live_project

pytestmark = pytest.mark.integration

playwright_api = pytest.importorskip("playwright.sync_api")
expect = playwright_api.expect  # polls in the test process: the page's CSP forbids evaluating strings

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts"
DOCS_SHOT = REPO / "docs" / "dashboard.png"
CHROMIUM = os.environ.get("AL_LOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TOKEN = "dashboard-test-token"
TREC_LABELS = ("ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM")


# ---------------------------------------------------------------------------- server
class Served:
    def __init__(self, tmp: Path, shared_data: Path) -> None:
        trec = shared_data / "trec"
        train = read_examples(trec / "TREC.train", task="classification")
        test = read_examples(trec / "TREC.test", task="classification")
        pool = train[::18][:300]
        test = test[::3][:150]
        self.store = Store(f"sqlite:///{tmp / 'al-loop.db'}")
        self.live = build_live_project(
            self.store, tmp / "artifacts", name="trec-questions", pool=pool, test=test, labels=TREC_LABELS,
            rounds=5, batch_size=20, seed_size=20, annotators=("alice", "bob", "chen"),
            label_time=self.store.clock() - timedelta(hours=3), label_step=timedelta(minutes=2),
        )
        self.pid = self.live.project_id
        self.simulation = attach_simulation(
            self.store, self.pid, trec / "TREC.train", trec / "TREC.test", max_pool=300, max_test=150,
            seed_size=20, batch_size=20, rounds=4, repeats=2, name="trec random vs least_confidence",
        )
        settings = Settings(home=tmp, database_url=self.store.url, broker_url="filesystem://",
                            artifacts_dir=tmp / "artifacts", api_token=TOKEN)
        inline = InlineDispatcher()
        loop = LoopService(self.store, None, self.live.service, inline, settings)
        self.dispatcher = ThreadDispatcher(inline)
        loop.dispatcher = self.dispatcher
        self.app = create_app(settings, store=self.store, loop=loop)
        self.app.config.update(AL_LOOP_DASHBOARD_POLL_ACTIVE_MS=400, AL_LOOP_DASHBOARD_POLL_IDLE_MS=800)
        set_queue_probe(self.app, StaticQueueProbe(
            {"default": 0, "train": 0},
            [{"name": "celery@train-1", "status": "online", "queues": ["train"], "active": 0, "heartbeat_age_s": 1.4},
             {"name": "celery@default-1", "status": "online", "queues": ["default"], "active": 0,
              "heartbeat_age_s": 0.8}]))
        from werkzeug.serving import make_server

        self.server = make_server("127.0.0.1", 0, self.app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="dashboard-test-server", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.thread.join(timeout=10)
        self.store.dispose()


@pytest.fixture(scope="module")
def served(tmp_path_factory, shared_data):
    s = Served(tmp_path_factory.mktemp("dashboard"), shared_data)
    yield s
    s.close()


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no chromium at {CHROMIUM} (set AL_LOOP_CHROMIUM)")
    with playwright_api.sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


class Console:
    """Console errors, uncaught page errors and failed requests of one page."""

    def __init__(self, page) -> None:
        self.errors: list[str] = []
        page.on("console", lambda m: self.errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        # a poll still in flight when the page navigates away is aborted by the browser: not an error
        page.on("requestfailed", lambda r: self.errors.append(f"requestfailed: {r.url} {r.failure}")
                if "ERR_ABORTED" not in str(r.failure) else None)
        page.on("dialog", lambda d: d.accept())


@pytest.fixture
def page(browser):
    ARTIFACTS.mkdir(exist_ok=True)
    context = browser.new_context(viewport={"width": 1440, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(15000)
    pg.console = Console(pg)
    yield pg
    context.close()


def _shot(page, name: str) -> Path:
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path


def _floats(values: list[str | None]) -> list[float]:
    return [float(v) for v in values if v is not None]


# ----------------------------------------------------------------------------- tests
def test_page_shows_the_rounds_and_learning_curve_of_the_store(served, page) -> None:
    store, pid = served.store, served.pid
    page.goto(f"{served.url}/dashboard/")
    page.locator(f'#projects tr[data-project-id="{pid}"] a').click()
    page.wait_for_selector("#rounds")
    assert page.title().startswith("trec-questions")

    rounds = store.list_rounds(pid)
    rows = page.locator("#rounds tbody tr")
    assert rows.count() == len(rounds) == 5
    for rnd in rounds:
        row = page.locator(f'#rounds tr[data-round-index="{rnd.index}"]')
        assert row.locator(".badge").first.inner_text() == "succeeded"
        assert row.locator("td.labels").inner_text() == f"{rnd.n_labels:,}"
        assert row.locator("td.tokens").inner_text() == f"{rnd.n_tokens:,}"
        assert row.locator("td.version").inner_text() == rnd.version_tag
        score = rnd.metrics.get("score")
        assert row.locator("td.score").inner_text() == (f"{score:.3f}" if score is not None else "—")
    # newest round first
    assert rows.first.get_attribute("data-round-index") == str(rounds[-1].index)

    # learning curve: one point per trained round at (labels, score)
    live_pts = page.locator('svg.curve circle.pt[data-series="live"]')
    xs = _floats([live_pts.nth(i).get_attribute("data-x") for i in range(live_pts.count())])
    ys = _floats([live_pts.nth(i).get_attribute("data-y") for i in range(live_pts.count())])
    trained = [r for r in rounds if r.metrics.get("score") is not None]
    assert xs == [float(r.n_labels) for r in trained]
    assert ys == pytest.approx([r.metrics["score"] for r in trained], abs=1e-5)
    # the simulation overlay: mean over repeats per round, per strategy
    by: dict[tuple[str, int], list[dict]] = defaultdict(list)
    for p in served.simulation["points"]:
        by[(p["strategy"], p["round"])].append(p)
    for strategy in ("random", "least_confidence"):
        pts = page.locator(f'svg.curve circle.pt[data-series="sim:{strategy}"]')
        got = list(zip(_floats([pts.nth(i).get_attribute("data-x") for i in range(pts.count())]),
                       _floats([pts.nth(i).get_attribute("data-y") for i in range(pts.count())])))
        want = [(sum(p["labels"] for p in v) / len(v), sum(p["score"] for p in v) / len(v))
                for (s, _), v in sorted(by.items()) if s == strategy]
        assert len(got) == len(want) == 4
        for (gx, gy), (wx, wy) in zip(got, want):
            assert gx == pytest.approx(wx) and gy == pytest.approx(wy, abs=1e-5)
    assert page.locator("svg.curve .band").count() == 2

    # the other panels are there and consistent with the store
    assert page.locator("#promoted-name").inner_text() == store.promoted_version(pid).name
    assert page.locator("#per-label-table tbody tr").count() == len(TREC_LABELS)
    assert page.locator("#annotators tbody tr").count() == 3
    assert page.locator("#batch-table tbody tr").count() == 20
    assert page.locator("#versions-table tbody tr").count() == len(store.list_versions(pid))
    assert page.locator('#workers tbody tr').count() == 2
    _shot(page, "dashboard.png")
    top = ARTIFACTS / "dashboard-top.png"  # the first screen: key figures, rounds, learning curve
    page.screenshot(path=str(top), clip={"x": 0, "y": 0, "width": 1440, "height": 1060})
    if not DOCS_SHOT.exists() or os.environ.get("AL_LOOP_UPDATE_DOCS_SCREENSHOT") == "1":
        DOCS_SHOT.parent.mkdir(exist_ok=True)
        shutil.copyfile(top, DOCS_SHOT)

    # the round report page
    last = rounds[-1]
    page.locator(f'#rounds tr[data-round-index="{last.index}"] a', has_text="report").click()
    page.wait_for_selector("#report-metrics")
    assert page.locator("#report-score").inner_text().startswith(f"{last.metrics['score']:.3f}")
    cells = page.locator("svg.heatmap g.cell")
    assert cells.count() == len(TREC_LABELS) ** 2
    assert sum(float(cells.nth(i).get_attribute("data-value")) for i in range(cells.count())) == 150
    assert page.locator("#report-per-label-table tbody tr").count() == len(TREC_LABELS)
    assert page.locator("#report-uncertain tbody tr").count() == 10
    _shot(page, "dashboard-round-report.png")
    assert page.console.errors == []


def test_promote_and_rollback_buttons_change_the_promoted_version(served, page) -> None:
    store, pid = served.store, served.pid
    versions = store.list_versions(pid)
    newest, oldest = versions[-1], versions[0]
    assert store.promoted_version(pid).id == newest.id
    page.goto(f"{served.url}/dashboard/{pid}")
    row = page.locator(f'#versions-table tr[data-version-id="{oldest.id}"]')

    # without a token nothing is sent
    row.locator('button[data-action="promote"]').click()
    assert "Enter the API token" in page.locator("#action-message").inner_text()
    assert store.promoted_version(pid).id == newest.id

    page.fill("#api-token", TOKEN)
    page.locator("#token-form button[type=submit]").click()
    assert page.locator("#token-state").inner_text() == "token set for this tab"
    row.locator('button[data-action="promote"]').click()
    expect(page.locator("#promoted-name")).to_have_text(oldest.name)
    assert store.promoted_version(pid).id == oldest.id
    assert f"Promoted {oldest.name}" in page.locator("#action-message").inner_text()
    assert page.locator(f'#versions-table tr[data-version-id="{oldest.id}"] td.status').inner_text() == "promoted"
    assert page.locator(f'#versions-table tr[data-version-id="{newest.id}"] td.status').inner_text() == "archived"
    _shot(page, "dashboard-promoted.png")

    page.locator('button[data-action="rollback"]').click()
    expect(page.locator("#promoted-name")).to_have_text(newest.name)
    assert store.promoted_version(pid).id == newest.id
    # the token survives a reload (sessionStorage of this tab)
    page.reload()
    assert page.locator("#token-state").inner_text() == "token set for this tab"
    assert page.console.errors == []


def test_a_wrong_token_is_reported(served, page) -> None:
    store, pid = served.store, served.pid
    before = store.promoted_version(pid).id
    page.goto(f"{served.url}/dashboard/{pid}")
    page.fill("#api-token", "wrong-token")
    page.locator("#token-form button[type=submit]").click()
    page.locator('#versions-table button[data-action="promote"]').first.click()
    expect(page.locator("#action-message")).to_contain_text("refused the token")
    assert store.promoted_version(pid).id == before
    # the only console error is the browser's own note about the 401 response
    assert all("401" in e for e in page.console.errors), page.console.errors


def test_the_page_updates_live_while_a_round_runs(served, page) -> None:
    store, pid, service = served.store, served.pid, served.live.service
    page.goto(f"{served.url}/dashboard/{pid}")
    n_points = page.locator('svg.curve circle.pt[data-series="live"]').count()
    # a worker picks up a new round and reports progress
    rnd = service.create_round(pid, trigger="webhook")
    page.wait_for_selector(f'#rounds tr[data-round-index="{rnd.index}"] .badge.pending')
    store.claim_round(rnd.id, service.owner, timedelta(minutes=10))
    store.update_round(rnd.id, phase="train", progress=0.42, n_labels=80, n_tokens=700)
    row = page.locator(f'#rounds tr[data-round-index="{rnd.index}"]')
    page.wait_for_selector(f'#rounds tr[data-round-index="{rnd.index}"] .badge.running')
    assert "train" in row.locator("td.status").inner_text() and "42%" in row.locator("td.status").inner_text()
    assert "phase train" in page.locator("#active-round").inner_text()
    _shot(page, "dashboard-running.png")
    # the worker finishes the round: a new row result and a new point on the curve, without reloading
    done = service.run_round(rnd.id).round
    assert done.status == "succeeded", done.error
    page.wait_for_selector(f'#rounds tr[data-round-index="{rnd.index}"] .badge.succeeded')
    assert row.locator("td.score").inner_text() == f"{done.metrics['score']:.3f}"
    assert page.locator('svg.curve circle.pt[data-series="live"]').count() == n_points + 1
    assert page.locator("#active-round").count() == 0
    assert page.console.errors == []


def test_start_round_button_runs_a_round(served, page) -> None:
    store, pid = served.store, served.pid
    n = len(store.list_rounds(pid))
    # label the batch in Label Studio so the next round has something new
    last = store.last_succeeded_round(pid)
    for s in store.get_scores(last.id, selected_only=True)[:5]:
        store.record_label(pid, s.item_id, f"ls:new-{s.item_id}", payload=served.live.gold[s.item_id],
                           source="labelstudio", annotator="dana")
    page.goto(f"{served.url}/dashboard/{pid}")
    page.fill("#api-token", TOKEN)
    page.locator("#token-form button[type=submit]").click()
    page.locator('button[data-action="start-round"]').click()
    page.wait_for_selector(f'#rounds tr[data-round-index="{n}"] .badge.succeeded', timeout=60000)
    served.dispatcher.join()
    rounds = store.list_rounds(pid)
    assert len(rounds) == n + 1 and rounds[-1].trigger == "api" and rounds[-1].status == "succeeded"
    assert "queued" in page.locator("#action-message").inner_text()
    assert page.console.errors == []
