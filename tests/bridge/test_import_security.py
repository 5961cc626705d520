"""Nobody in: server-file imports closed by default, no file content in errors or logs, secrets at start-up,
no secrets in access logs.

Real files, a real FIFO, real symlinks, /proc/self/environ and /dev/zero; the items API through the Flask
test client; start-up refusals and the access log through the real ``al-loop`` processes.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from al_loop.data.readers import read_examples
from al_loop.errors import ConfigError, DataFormatError
from al_loop.rounds import PredictService
from al_loop.types import TaskKind
from annotator_bridge.cli import build_parser
from annotator_bridge.client import wait_until
from annotator_bridge.commands import serve as serve_cmd
from annotator_bridge.settings import FILESYSTEM_BROKER
from annotator_bridge.stack.processes import SERVE_ARGS
from annotator_bridge.web import create_app
from annotator_bridge.web.accesslog import SecretQueryFilter, redact_secrets
from tests.bridge.conftest_services import TEST_API_TOKEN, ALProcess, al_loop_env, free_port, start_server
from tests.bridge.test_loop import cls_spec, make_env
from tests.core.fakes import FakeModel

REPO = Path(__file__).resolve().parents[2]
TOKEN = "import-security-token-1"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
MARKER = "s3cr3t-MARKER-9f2"


def _environ_entries() -> list[str]:
    """This process's /proc/self/environ entries that are long enough to recognise."""
    raw = Path("/proc/self/environ").read_bytes().decode(errors="replace")
    return [e for e in raw.split("\x00") if "=" in e and len(e.split("=", 1)[1]) >= 6]


def _web(tmp_path: Path, **env: str) -> SimpleNamespace:
    tmp_path.mkdir(parents=True, exist_ok=True)
    web = make_env(tmp_path, extra_env={"AL_LOOP_API_TOKEN": TOKEN, **env})
    app = create_app(web.settings, store=web.store, loop=web.loop, predictor=PredictService(web.store, FakeModel),
                     dispatcher=web.dispatcher)
    web.client = app.test_client()
    web.pid = web.loop.create_project(cls_spec()).id
    return web


def _import(web: SimpleNamespace, path: str, fmt: str | None = None) -> Any:
    body: dict[str, Any] = {"path": path}
    if fmt:
        body["format"] = fmt
    return web.client.post(f"/api/projects/{web.pid}/items", json=body, headers=AUTH)


def _refused(resp: Any, status: int = 400, type_: str | None = None) -> str:
    text = resp.get_data(as_text=True)
    assert resp.status_code == status, (resp.status_code, text)
    assert "Traceback" not in text
    error = resp.get_json()["error"]
    if type_ is not None:
        assert error["type"] == type_, error
    return str(error["message"])


def _jsonl(path: Path, n: int = 2, prefix: str = "f") -> Path:
    path.write_text("".join(json.dumps({"id": f"{prefix}{i}", "text": f"text {prefix} {i}"}) + "\n" for i in range(n)))
    return path


@pytest.fixture
def allowed(tmp_path: Path) -> Path:
    folder = tmp_path / "allowed"
    folder.mkdir()
    return folder


# ---------------------------------------------------------------------------- closed by default
def test_path_imports_are_closed_by_default(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    web = _web(tmp_path)
    message = _refused(_import(web, str(_jsonl(tmp_path / "items.jsonl"))), 400, "ConfigError")
    assert "AL_LOOP_IMPORT_DIRS" in message and "request body" in message
    resp = _import(web, "/proc/self/environ", "csv")
    _refused(resp, 400, "ConfigError")
    for entry in _environ_entries():
        assert entry not in resp.get_data(as_text=True) and entry not in caplog.text
    # the way for clients: items in the body
    body = [{"id": "b1", "text": "from the body"}]
    assert web.client.post(f"/api/projects/{web.pid}/items", json=body, headers=AUTH).status_code == 201


def test_pseudo_files_are_never_read_even_when_allowed(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    for dirs in ("/", "/proc", os.pathsep.join(["/dev", "/sys"])):
        web = _web(tmp_path / dirs.replace("/", "_").replace(os.pathsep, "-"), AL_LOOP_IMPORT_DIRS=dirs)
        for path, fmt in (("/proc/self/environ", "csv"), ("/dev/zero", "jsonl"), ("/dev/null", None),
                          ("/sys/kernel/mm/transparent_hugepage/enabled", "trec")):
            resp = _import(web, path, fmt)
            assert "outside the folders" in _refused(resp, 400, "ConfigError")
            for entry in _environ_entries():
                assert entry not in resp.get_data(as_text=True)
    for entry in _environ_entries():
        assert entry not in caplog.text


def test_symlinks_and_dotdot_out_of_the_folder_are_refused(tmp_path: Path, allowed: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    web = _web(tmp_path, AL_LOOP_IMPORT_DIRS=str(allowed))
    outside = _jsonl(tmp_path / "outside.jsonl", prefix="o")
    (allowed / "out.jsonl").symlink_to(outside)
    (allowed / "env.csv").symlink_to("/proc/self/environ")
    (allowed / "zero.jsonl").symlink_to("/dev/zero")
    for path in (allowed / "out.jsonl", allowed / "env.csv", allowed / "zero.jsonl", allowed / ".." / "outside.jsonl"):
        assert "AL_LOOP_IMPORT_DIRS" in _refused(_import(web, str(path)), 400, "ConfigError")
    monkeypatch.chdir(allowed)
    _refused(_import(web, "../outside.jsonl"), 400, "ConfigError")
    # a link inside the folder to a file inside it: the resolved target is what is read
    target = _jsonl(allowed / "real.jsonl", prefix="r")
    (allowed / "alias.jsonl").symlink_to(target)
    resp = _import(web, str(allowed / "alias.jsonl"))
    assert resp.status_code == 201 and resp.get_json()["added"] == 2
    assert {i.item_id for i in web.store.get_items(web.pid)} >= {"r0", "r1"}


def test_tilde_is_expanded_once_and_that_file_is_read(tmp_path: Path, allowed: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    web = _web(tmp_path, AL_LOOP_IMPORT_DIRS=str(allowed))
    monkeypatch.setenv("HOME", str(allowed))
    _jsonl(allowed / "t.jsonl", prefix="home")
    cwd = tmp_path / "cwd"
    (cwd / "~").mkdir(parents=True)
    _jsonl(cwd / "~" / "t.jsonl", prefix="decoy")  # what a reader opening the unexpanded path would read
    monkeypatch.chdir(cwd)
    resp = _import(web, "~/t.jsonl")
    assert resp.status_code == 201, resp.get_json()
    ids = {i.item_id for i in web.store.get_items(web.pid)}
    assert {"home0", "home1"} <= ids and not {"decoy0", "decoy1"} & ids


def test_fifo_is_refused_without_blocking(tmp_path: Path, allowed: Path) -> None:
    web = _web(tmp_path, AL_LOOP_IMPORT_DIRS=str(allowed))
    fifo = allowed / "pipe.jsonl"
    os.mkfifo(fifo)
    result: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: result.update(resp=_import(web, str(fifo))), daemon=True)
    thread.start()
    thread.join(15)
    if thread.is_alive():  # unblock the reader so the test run can go on, then fail
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
        os.close(fd)
        pytest.fail("importing a FIFO blocked the request")
    assert "not a regular file" in _refused(result["resp"], 400, "DataFormatError")


def test_directories_missing_files_and_nul_are_4xx(tmp_path: Path, allowed: Path) -> None:
    web = _web(tmp_path, AL_LOOP_IMPORT_DIRS=str(allowed))
    (allowed / "sub").mkdir()
    assert "directory" in _refused(_import(web, str(allowed / "sub")), 400, "DataFormatError")
    assert "not found" in _refused(_import(web, str(allowed / "nope.jsonl")), 400, "DataFormatError")
    assert "NUL" in _refused(_import(web, f"{allowed}/a\x00b.jsonl"), 400)
    closed = _web(tmp_path / "closed")
    assert "NUL" in _refused(_import(closed, "/etc/\x00passwd"), 400)
    with pytest.raises(ConfigError, match="NUL"):  # below the body checks, the path check refuses it too
        web.loop.import_items(web.pid, path=f"{allowed}/a\x00b.jsonl")


def test_size_cap(tmp_path: Path, allowed: Path) -> None:
    web = _web(tmp_path, AL_LOOP_IMPORT_DIRS=str(allowed), AL_LOOP_MAX_IMPORT_MB="1")
    line = json.dumps({"text": "x" * 1000}) + "\n"
    big = allowed / "big.jsonl"
    big.write_text(line * 1100)  # > 1 MiB
    assert "AL_LOOP_MAX_IMPORT_MB" in _refused(_import(web, str(big)), 400, "DataFormatError")
    small = _jsonl(allowed / "small.jsonl")
    assert _import(web, str(small)).status_code == 201
    with pytest.raises(DataFormatError, match="larger than the limit of 100 bytes"):
        read_examples(big, max_bytes=100)
    assert len(read_examples(small, max_bytes=small.stat().st_size)) == 2


def test_readers_open_only_regular_files(tmp_path: Path) -> None:
    fifo = tmp_path / "p.txt"
    os.mkfifo(fifo)
    for path in (fifo, Path("/dev/null"), Path("/dev/zero")):
        with pytest.raises(DataFormatError, match="not a regular file"):
            read_examples(path, format="jsonl")
    with pytest.raises(DataFormatError, match="empty"):  # procfs files have no size: never read
        read_examples("/proc/self/environ", format="csv")
    link = tmp_path / "link.jsonl"
    link.symlink_to(_jsonl(tmp_path / "t.jsonl"))
    assert len(read_examples(link)) == 2
    with pytest.raises(DataFormatError, match="symbolic link"):
        read_examples(link, follow_symlinks=False)


# ---------------------------------------------------------------------------- errors quote nothing
API_BAD_FILES = [
    ("header.csv", "csv", f"{MARKER},other\nx,y\n", 1, "DataFormatError"),
    ("dup.csv", "csv", f"text,{MARKER},{MARKER}\nx,y,z\n", 1, "DataFormatError"),
    ("dupid.jsonl", "jsonl", f'{{"id": "{MARKER}", "text": "a"}}\n{{"id": "{MARKER}", "text": "b"}}\n', 2,
     "DataFormatError"),
    ("idtype.jsonl", "jsonl", f'{{"id": ["{MARKER}"], "text": "a"}}\n', 1, "DataFormatError"),
    ("label.jsonl", "jsonl", f'{{"text": "fine", "label": "{MARKER}"}}\n', 1, "UnknownLabelError"),
    ("badjson.jsonl", "jsonl", f'{{"text": "ok"}}\n{{"text": "{MARKER}\n', 2, "DataFormatError"),
    ("trec.txt", "trec", f"{MARKER} what is this\n", 1, "DataFormatError"),
    ("sst.txt", "sst", f"{MARKER} a sentence\n", 1, "DataFormatError"),
    ("latin1.jsonl", "jsonl", f'{{"text": "ok"}}\n{MARKER}\xff'.encode("latin-1"), 2, "DataFormatError"),
    ("multi.csv", "csv", f"text,label\n{MARKER},pos||neg\n", 2, "DataFormatError"),
]


@pytest.mark.parametrize(("name", "fmt", "content", "line", "type_"), API_BAD_FILES, ids=[f[0] for f in API_BAD_FILES])
def test_import_errors_name_file_and_line_never_content(tmp_path: Path, allowed: Path, caplog: pytest.LogCaptureFixture,
                                                        name: str, fmt: str, content: str | bytes, line: int,
                                                        type_: str) -> None:
    caplog.set_level(logging.DEBUG)
    web = _web(tmp_path, AL_LOOP_IMPORT_DIRS=str(allowed))
    path = allowed / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    resp = _import(web, str(path), fmt)
    message = _refused(resp, 422 if type_ == "UnknownLabelError" else 400, type_)
    assert message.startswith(f"{path.resolve()}:{line}: "), message
    assert MARKER not in resp.get_data(as_text=True) and MARKER not in caplog.text


READER_BAD_FILES = [
    ("conll", f"EU B-ORG\n{MARKER} X-{MARKER}\n", 2, "column 2"),
    ("conll", f"EU B-ORG\n{MARKER} O extra\n", 2, "expected 2 columns"),
    ("bio", f"{MARKER}\tO\n\tO\n", 2, "column 1 is empty"),
    ("jsonl", f'{{"tokens": ["{MARKER}"], "tags": ["{MARKER}"]}}\n', 1, "token 0"),
    ("jsonl", f'{{"text": "{MARKER} x", "tokens": ["nope"]}}\n', 1, "token 0"),
    ("jsonl", f'{{"text": "{MARKER} x", "spans": [[0, 4, "{MARKER}"], [2, 6, "{MARKER}"]]}}\n', 1, "overlap"),
    ("jsonl", f'{{"text": "{MARKER}", "spans": [[0, 99, "{MARKER}"]]}}\n', 1, "span 0 ends after the text"),
    ("jsonl", f'{{"text": "{MARKER}", "spans": [[0, "{MARKER}", "X"]]}}\n', 1, "found int, str"),
    ("jsonl", f'{{"text": "{MARKER}", "label": [{{"{MARKER}": 1}}]}}\n', 1, "found dict"),
    ("jsonl", f'{{"text": "ok"}}\n{{"text": "x", "id": "{MARKER}"}} trailing {MARKER}\n', 2, "column"),
]


@pytest.mark.parametrize(("fmt", "content", "line", "expected"), READER_BAD_FILES)
def test_reader_errors_never_quote_the_file(tmp_path: Path, fmt: str, content: str, line: int, expected: str) -> None:
    path = tmp_path / "data.txt"
    path.write_text(content)
    with pytest.raises(DataFormatError) as info:
        read_examples(path, format=fmt, task=TaskKind.NER if fmt in ("conll", "bio") or "tokens" in content
                      or "spans" in content else None)
    assert MARKER not in str(info.value)
    assert info.value.line == line and info.value.path == str(path)
    assert expected in str(info.value)


# ---------------------------------------------------------------------------- secrets at start-up
def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "annotator_bridge.cli", *args], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("args", "override", "expected"), [
    (["serve", "--port", "1"], {"AL_LOOP_API_TOKEN": "change-me-al-loop-api-token"},
     "AL_LOOP_API_TOKEN is a placeholder"),
    (["serve", "--port", "1", "--server", "gunicorn"], {"AL_LOOP_API_TOKEN": ""}, "AL_LOOP_API_TOKEN is not set"),
    (["serve", "--port", "1"], {"LABEL_STUDIO_URL": "http://127.0.0.1:1", "LABEL_STUDIO_API_KEY": "change-me-ls"},
     "LABEL_STUDIO_API_KEY is a placeholder"),
    (["worker", "--queues", "default"], {"AL_LOOP_WEBHOOK_SECRET": ""}, "AL_LOOP_WEBHOOK_SECRET is not set"),
    (["worker", "--queues", "train"], {"AL_LOOP_WEBHOOK_SECRET": "CHANGE_ME"},
     "AL_LOOP_WEBHOOK_SECRET is a placeholder"),
])
def test_serve_and_worker_refuse_missing_or_placeholder_secrets(tmp_path: Path, args: list[str],
                                                                override: dict[str, str], expected: str) -> None:
    out = _cli(args, al_loop_env(tmp_path, FILESYSTEM_BROKER, **override))
    assert out.returncode == 2, (out.stdout[-2000:], out.stderr[-2000:])
    assert "refuses to start" in out.stderr and expected in out.stderr
    assert "Traceback" not in out.stderr
    for value in override.values():
        if value and "change" in value.lower():
            assert value not in out.stderr  # the secret itself is never printed


# ---------------------------------------------------------------------------- access logs
def test_redact_secrets() -> None:
    line = ('127.0.0.1 - - "GET /api/projects?token=abc&page=2&api_key=k1;secret=s2&x-Auth-Sig=z '
            'HTTP/1.1" 401 -')
    red = redact_secrets(line)
    assert "abc" not in red and "k1" not in red and "s2" not in red and "=z" not in red
    assert "token=***" in red and "page=2" in red and "api_key=***" in red
    assert redact_secrets("/x?%74oken=abc") == "/x?%74oken=***"
    assert redact_secrets("/x?token%3Dabc") == "/x?token%3D***"
    assert redact_secrets("/health") == "/health"
    # a gunicorn access record: a format with a dict of atoms
    record = logging.LogRecord("gunicorn.access", logging.INFO, __file__, 1, '%(h)s "%(r)s" %(s)s',
                               None, None)
    record.args = {"h": "127.0.0.1", "r": "GET /webhook?secret=hook-1 HTTP/1.1", "s": "401"}
    assert SecretQueryFilter().filter(record)
    assert record.getMessage() == '127.0.0.1 "GET /webhook?secret=*** HTTP/1.1" 401'


def test_serve_command_lines_of_the_local_stack_and_the_servers() -> None:
    parser = build_parser()
    stack = parser.parse_args(list(SERVE_ARGS))  # what `al-loop up` and the integration tests run
    assert stack.func is serve_cmd.run_serve and stack.server == serve_cmd.DEFAULT_SERVER == "werkzeug"
    gunicorn = parser.parse_args(["serve", "--server", "gunicorn"])
    assert (gunicorn.server, gunicorn.workers, gunicorn.threads) == ("gunicorn", 2, 8)


@pytest.mark.parametrize("workers", ["0", "-1", "two", "100000"])
def test_serve_refuses_bad_worker_counts(workers: str) -> None:
    out = subprocess.run([sys.executable, "-m", "annotator_bridge.cli", "serve", "--workers", workers],
                         capture_output=True, text=True, timeout=60, cwd=str(REPO))
    assert out.returncode == 2 and "--workers" in out.stderr and "Traceback" not in out.stderr


def _start_gunicorn(env: dict[str, str], log_path: Path) -> tuple[ALProcess, str]:
    port = free_port()
    server = ALProcess((*SERVE_ARGS, "--server", "gunicorn", "--host", "127.0.0.1", "--port", str(port)), env,
                       log_path).start()
    url = f"http://127.0.0.1:{port}"

    def up() -> bool:
        assert server.alive(), server.log()[-3000:]
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    wait_until(up, 60, 0.1, "al-loop serve --server gunicorn /health")
    return server, url


@pytest.mark.parametrize("server_kind", ["default", "gunicorn"])
def test_access_log_of_the_real_server_carries_no_query_secrets(tmp_path: Path, server_kind: str) -> None:
    """``al-loop serve`` as the local stack runs it (werkzeug) and as compose runs it (gunicorn): it answers,
    and its access log (request lines, bad request lines) never holds a secret query value."""
    secrets = [f"qsecret{i}x{MARKER}" for i in range(6)]
    env = al_loop_env(tmp_path / "home", FILESYSTEM_BROKER, AL_LOOP_IMPORT_DIRS="/",
                      **{MARKER.replace("-", "_"): MARKER})
    log_path = tmp_path / "serve.log"
    server, url = start_server(env, log_path) if server_kind == "default" else _start_gunicorn(env, log_path)
    try:
        def get(path: str, data: bytes | None = None, headers: dict[str, str] | None = None) -> int:
            req = urllib.request.Request(url + path, data=data, headers=headers or {})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    return int(resp.status)
            except urllib.error.HTTPError as exc:
                return int(exc.code)

        assert get(f"/api/projects?token={secrets[0]}") == 401
        assert get(f"/webhook?secret={secrets[1]}", b"{}", {"Content-Type": "application/json"}) == 401
        assert get(f"/health?api_key={secrets[2]}&page=2") == 200
        get(f"/dashboard/?access_token={secrets[3]}")
        assert get(f"/health?%74oken={secrets[4]}") == 200
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=10) as sock:
            sock.sendall(f"GET /health?token={secrets[5]} HTTP/1.1 junk\r\n\r\n".encode())
            sock.recv(4096)
        auth = {"Authorization": f"Bearer {TEST_API_TOKEN}", "Content-Type": "application/json"}
        spec = {"name": "sec", "task": "classification", "labels": ["a", "b"], "label_studio": False}
        assert get("/api/projects", json.dumps(spec).encode(), auth) == 201
        req = urllib.request.Request(url + "/api/projects/1/items", headers=auth,
                                     data=json.dumps({"path": "/proc/self/environ", "format": "csv"}).encode())
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=10)
        body = info.value.read().decode()
        assert info.value.code == 400 and "outside the folders" in body and MARKER not in body
    finally:
        server.stop()
    log = log_path.read_text(errors="replace")
    assert ("Booting worker" in log) == (server_kind == "gunicorn"), log[-3000:]  # gunicorn's worker start line
    assert "GET /health?api_key=***&page=2" in log and "token=***" in log and "secret=***" in log
    for secret in secrets:
        assert secret not in log
    assert MARKER not in log


def test_local_stack_opens_only_its_demo_folders(tmp_path: Path) -> None:
    from annotator_bridge.settings import StackEnvironment
    from annotator_bridge.stack.demo import DEMO_SAMPLE
    from annotator_bridge.stack.local import LocalStack, StackConfig

    extra = tmp_path / "mine"
    environment = StackEnvironment.from_env({"AL_LOOP_IMPORT_DIRS": str(extra)})
    stack = LocalStack(StackConfig(home=tmp_path / "home", environment=environment))
    assert stack._import_dirs(environment.overrides.get("AL_LOOP_IMPORT_DIRS")).split(os.pathsep) == [
        str(extra), str(DEMO_SAMPLE.resolve().parent)]
    no_demo = LocalStack(StackConfig(home=tmp_path / "home", demo=False, environment=StackEnvironment.from_env({})))
    assert no_demo._import_dirs(None) == ""
