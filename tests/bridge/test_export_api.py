"""The export download route (GET /api/projects/<id>/versions/<name>/export and .../export) and `al-loop export`.

Fast tests use hand-made artifact folders (tests/core/test_export.py): the bearer token, 404s for unknown or
out-of-range projects and versions, 409 / 422 refusals as JSON errors, a streamed zip holding the folder the
command line writes, no torch in the web process, and the command's exit codes. The slow test exports a real
MiniLM version through the route and loads the download with ``transformers.pipeline`` offline.
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import textwrap
import zipfile
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest

from al_loop.config import TrainingConfig
from al_loop.rounds.export import plan_export, write_export
from annotator_bridge import cli
from tests.bridge.test_web import AUTH, TOKEN, assert_error, build
from tests.core.test_export import CLS, CLS_TEXTS, FAST, add_version, check_classification, fake_artifact

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def web(tmp_path: Path) -> SimpleNamespace:
    env = build(tmp_path)
    env.project = env.store.create_project("topics", CLS, training=TrainingConfig(pooling="cls"))
    env.good = add_version(env.store, env.project, fake_artifact(tmp_path / "good", CLS, weights_mb=3),
                           promote=False)
    # a head-learner version whose base model (its encoder) is gone: cannot be exported
    env.bad = add_version(env.store, env.project, fake_artifact(tmp_path / "bad", CLS, "head",
                                                                base_model=str(tmp_path / "gone")))
    return env


def routes(web: SimpleNamespace) -> list[str]:
    pid = web.project.id
    return [f"/api/projects/{pid}/versions/{web.good.name}/export", f"/api/projects/{pid}/export"]


def test_the_routes_need_the_bearer_token(web: SimpleNamespace) -> None:
    for path in routes(web):
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {TOKEN}"}):
            resp = web.client.get(path, headers=headers)
            assert_error(resp, 401, "Unauthorized")
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")


def test_unknown_and_out_of_range_projects_and_versions_are_404(web: SimpleNamespace) -> None:
    pid = web.project.id
    for path in (f"/api/projects/{pid + 1}/export", f"/api/projects/{pid + 1}/versions/{web.good.name}/export",
                 f"/api/projects/{pid}/versions/al-r999-00000000/export", f"/api/projects/{pid}/versions/%00/export",
                 f"/api/projects/{pid}/versions/{'x' * 201}/export",
                 f"/api/projects/{pid}/versions/{'x' * 5000}/export",
                 *(f"/api/projects/{big}/export" for big in (2**63, 2**70, 10**40)),
                 *(f"/api/projects/{big}/versions/{web.good.name}/export" for big in (2**63, 10**40))):
        assert_error(web.client.get(path, headers=AUTH), 404)
    other = web.store.create_project("empty", CLS)
    body = assert_error(web.client.get(f"/api/projects/{other.id}/export", headers=AUTH), 404)
    assert "no promoted model version" in body["message"]


def test_refusals_are_json_errors_naming_the_exportable_versions(web: SimpleNamespace) -> None:
    body = assert_error(web.client.get(f"/api/projects/{web.project.id}/export", headers=AUTH), 422,
                        "NotExportableError")  # the promoted version's base model is gone
    message = body["message"]
    assert "head learner" in message and "no longer available" in message
    assert f"exportable versions of project {web.project.id}: {web.good.name}" in message
    gone = add_version(web.store, web.project, None, promote=False)
    path = f"/api/projects/{web.project.id}/versions/{gone.name}/export"
    assert "no artifact on this server" in assert_error(web.client.get(path, headers=AUTH), 409)["message"]


def test_the_download_is_a_streamed_zip_of_the_folder_the_command_writes(web: SimpleNamespace,
                                                                          tmp_path: Path) -> None:
    resp = web.client.get(routes(web)[0], headers=AUTH)
    assert resp.status_code == 200 and resp.mimetype == "application/zip"
    assert resp.is_streamed
    top = f"project-{web.project.id}-{web.good.name}"
    assert resp.headers["Content-Disposition"] == f'attachment; filename="{top}.zip"'
    assert resp.headers["X-Model-Version"] == web.good.name
    folder = write_export(plan_export(web.store, web.project.id, web.good.name), tmp_path / "cli")
    with zipfile.ZipFile(io.BytesIO(resp.get_data())) as zf:
        assert sorted(zf.namelist()) == sorted(f"{top}/{p.name}" for p in folder.iterdir())
        for name in zf.namelist():
            data = zf.read(name)
            if name.endswith("README.md"):  # the export time differs by seconds
                assert data.decode().split("| exported |")[0] == (folder / "README.md").read_text().split(
                    "| exported |")[0]
            else:
                assert data == (folder / name.split("/", 1)[1]).read_bytes(), name


def test_al_loops_own_head_downloads_as_custom_code(web: SimpleNamespace, tmp_path: Path) -> None:
    lpft = add_version(web.store, web.project, fake_artifact(tmp_path / "lpft", CLS, "pooled", weights_mb=2),
                       promote=False)
    resp = web.client.get(f"/api/projects/{web.project.id}/versions/{lpft.name}/export", headers=AUTH)
    assert resp.status_code == 200 and resp.is_streamed
    folder = write_export(plan_export(web.store, web.project.id, lpft.name), tmp_path / "cli")
    assert (folder / "modeling_al_loop.py").is_file()
    with zipfile.ZipFile(io.BytesIO(resp.get_data())) as zf:
        top = f"project-{web.project.id}-{lpft.name}"
        assert sorted(zf.namelist()) == sorted(f"{top}/{p.name}" for p in folder.iterdir())
        for name in zf.namelist():
            if not name.endswith("README.md"):
                assert zf.read(name) == (folder / name.split("/", 1)[1]).read_bytes(), name


def test_the_export_route_never_imports_torch(tmp_path: Path) -> None:
    script = textwrap.dedent(f"""
        import json, sys
        from pathlib import Path
        from al_loop.config import TrainingConfig
        from annotator_bridge.dispatch import InlineDispatcher
        from annotator_bridge.settings import Settings
        from annotator_bridge.web import create_app
        from tests.core.test_export import CLS, add_version, fake_artifact

        settings = Settings.from_env({{"AL_LOOP_HOME": {str(tmp_path / "home")!r}, "AL_LOOP_API_TOKEN": "t",
                                       "AL_LOOP_WEBHOOK_SECRET": "s"}})
        app = create_app(settings, dispatcher=InlineDispatcher())
        store = app.extensions["al_loop"].store
        project = store.create_project("p", CLS, training=TrainingConfig(pooling="cls"))
        add_version(store, project, fake_artifact(Path({str(tmp_path / "art")!r}), CLS))
        resp = app.test_client().get(f"/api/projects/{{project.id}}/export", headers={{"Authorization": "Bearer t"}})
        print(json.dumps({{"code": resp.status_code, "bytes": len(resp.get_data()), "torch": "torch" in sys.modules,
                          "transformers": "transformers" in sys.modules}}))
    """)
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["code"] == 200 and result["bytes"] > 1000
    assert result["torch"] is False and result["transformers"] is False


# ---------------------------------------------------------------------------- the command line
def test_the_command_writes_refuses_and_exits_with_its_codes(web: SimpleNamespace, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    db = ["--db", web.store.url]
    pid = str(web.project.id)
    out = tmp_path / "model"
    assert cli.main(["export", "--project", pid, "--version", web.good.name, "--out", str(out), *db]) == 0
    printed = capsys.readouterr().out
    assert f"exported model version {web.good.name} of project {pid} to {out}" in printed
    assert "transformers.pipeline('text-classification'" in printed
    assert (out / "README.md").is_file() and (out / "model.safetensors").is_file()
    assert "trust_remote_code" not in printed  # a stock folder
    # a non-empty folder needs --force
    assert cli.main(["export", "--project", pid, "--version", web.good.name, "--out", str(out), *db]) == 1
    assert "not empty" in capsys.readouterr().err
    (out / "extra.txt").write_text("old")
    assert cli.main(["export", "-p", pid, "--version", web.good.name, "-o", str(out), "--force", *db]) == 0
    assert not (out / "extra.txt").exists()
    capsys.readouterr()
    # the promoted version (the default) is a head learner's whose base model is gone: exit 1, nothing written
    assert cli.main(["export", "--project", pid, "--out", str(tmp_path / "refused"), *db]) == 1
    err = capsys.readouterr().err
    assert "export refused" in err and "no longer available" in err and web.good.name in err
    assert not (tmp_path / "refused").exists()
    lpft = add_version(web.store, web.project, fake_artifact(tmp_path / "lpft", CLS, "pooled"), promote=False)
    assert cli.main(["export", "-p", pid, "--version", lpft.name, "-o", str(tmp_path / "lpft-out"), *db]) == 0
    printed = capsys.readouterr().out
    assert "trust_remote_code=True)" in printed and "no stock transformers head L2-normalises" in printed
    # unknown project or version: exit 2
    assert cli.main(["export", "--project", "999", "--out", str(tmp_path / "x"), *db]) == 2
    assert cli.main(["export", "--project", pid, "--version", "nope", "--out", str(tmp_path / "x"), *db]) == 2
    assert "no model version 'nope'" in capsys.readouterr().err


# ---------------------------------------------------------------------------- a real model (slow)
@pytest.mark.slow
def test_the_download_of_a_real_version_loads_offline_and_predicts_what_al_loop_predicts(
        tmp_path: Path) -> None:
    from al_loop.models.model import TextModel

    env = build(tmp_path)
    project = env.store.create_project("real", CLS, training=replace(FAST, pooling="cls"))
    art = TextModel.create(CLS, "default", replace(FAST, pooling="cls")).save(tmp_path / "art")
    version = add_version(env.store, project, art)
    resp = env.client.get(f"/api/projects/{project.id}/versions/{version.name}/export", headers=AUTH)
    assert resp.status_code == 200
    with zipfile.ZipFile(io.BytesIO(resp.get_data())) as zf:
        zf.extractall(tmp_path / "download")
    folder = tmp_path / "download" / f"project-{project.id}-{version.name}"
    check_classification(folder, art, CLS_TEXTS, tmp_path / "hf-home")
