from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.postgres_server import PostgresServer

REPO = Path(__file__).resolve().parents[1]


def _shared_data() -> Path:
    env = os.environ.get("AL_LOOP_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = _shared_data()
    if not path.is_dir():
        pytest.fail(f"shared data folder not found at {path}; set AL_LOOP_SHARED_DATA")
    return path


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the session (Debian's package, a free loopback port, a temp folder)."""
    server = PostgresServer().start()
    try:
        yield server
    finally:
        server.stop()


DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(params=DATABASES)
def new_database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Callable[[], str]]:
    """Makes fresh, empty databases of one kind per parameter: SQLite files in the test's temp folder, or
    new databases on the session's PostgreSQL server (dropped after the test: ~8 MB each). A test using it
    runs once per kind."""
    if request.param == "sqlite":
        names = iter(range(1_000_000))
        yield lambda: f"sqlite:///{tmp_path / f'db{next(names)}.sqlite'}"
        return
    server: PostgresServer = request.getfixturevalue("postgres_server")
    made: list[str] = []

    def make() -> str:
        made.append(server.new_database())
        return made[-1]

    yield make
    for url in made:
        server.drop_database(url)


@pytest.fixture
def database_url(new_database_url: Callable[[], str]) -> str:
    """A fresh, empty database URL, SQLite and PostgreSQL (the test runs once per kind)."""
    return new_database_url()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except Exception:  # torch missing or broken: gpu tests cannot run
        has_cuda = False
    if not has_cuda:
        skip = pytest.mark.skip(reason="no CUDA device on this machine")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
