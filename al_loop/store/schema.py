"""The database schema on open: Alembic migrations (``store/migrations``), shared by SQLite and PostgreSQL.

``prepare(engine)`` is what ``Store`` runs when it opens a database:

- an in-memory SQLite database (``sqlite://``: ``al-loop simulate``, tests) is new by definition: its
  tables come from ``create_all`` (no Alembic import; ``tests/core/test_migrations.py`` proves it gives the
  schema the migrations give);
- any other database is upgraded to the newest revision (``upgrade``): a new one gets every table, one
  written before the migrations (no ``alembic_version``) is adopted by the idempotent baseline revision
  with its rows, an older revision is upgraded; a database at a revision this code does not know (written
  by a newer al-loop) is refused with ``DatabaseVersionError`` and left alone.

Two processes opening one database at once (``al-loop serve`` and a worker) do not both migrate: on
PostgreSQL the upgrade holds a transaction-level advisory lock, on SQLite its write lock (``BEGIN
IMMEDIATE``); the second one then finds the database at head. On SQLite, foreign keys are off while a
migration runs (batch-mode ALTERs copy and drop tables; with them on, dropping ``projects`` would delete
every row that cascades from it) and ``PRAGMA foreign_key_check`` must be clean before the commit.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, inspect, text

from al_loop.errors import AlLoopError
from al_loop.store.tables import Base

log = logging.getLogger("al_loop.store")
MIGRATIONS = Path(__file__).with_name("migrations")
_PG_LOCK_KEY = 0x616C2D6C6F6F70  # "al-loop": the advisory lock of schema upgrades


class DatabaseVersionError(AlLoopError):
    """The database was written by a newer al-loop (a schema revision this code does not know)."""


def is_in_memory(url: str) -> bool:
    return url in ("sqlite://", "sqlite:///:memory:")


HEAD = "0003"
"""The newest revision in ``migrations/versions`` (a test checks it): a database already there is opened without
importing Alembic (~0.2 s of every process start)."""


def prepare(engine: Engine, url: str) -> None:
    """Make the database's schema the current one (see the module docstring)."""
    if is_in_memory(url):
        Base.metadata.create_all(engine)
        return
    if not _at_head(engine):
        upgrade(engine)


def _at_head(engine: Engine) -> bool:
    with engine.connect() as conn:
        if not inspect(conn).has_table("alembic_version"):
            return False
        return list(conn.execute(text("SELECT version_num FROM alembic_version")).scalars()) == [HEAD]


def _quiet_alembic() -> None:
    """Alembic logs INFO lines on import and on every open ("Context impl ..."); ``upgrade`` says what changed."""
    quiet = logging.getLogger("alembic")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.WARNING)


def _script() -> Any:
    _quiet_alembic()
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def head_revision() -> str:
    """The newest revision this code knows."""
    return str(_script().get_current_head())


def current_revision(engine: Engine) -> str | None:
    """The database's revision (None: no ``alembic_version``, a new or pre-migrations database)."""
    _quiet_alembic()
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> None:
    """Upgrade the database to ``revision`` under the lock; DatabaseVersionError for an unknown revision."""
    _quiet_alembic()
    from alembic import command
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.util.exc import CommandError

    script = _script()
    with _locked(engine) as conn:
        current = MigrationContext.configure(conn).get_current_heads()
        for rev in current:
            try:
                known = script.get_revision(rev) is not None
            except CommandError:
                known = False
            if not known:
                raise DatabaseVersionError(
                    f"the database is at schema revision {rev!r}, which this al-loop does not know (newest known: "
                    f"{script.get_current_head()!r}): it was written by a newer al-loop. Upgrade al-loop, or point "
                    "AL_LOOP_DATABASE_URL at another database; nothing was changed")
        if revision == "head" and set(current) == set(script.get_heads()):
            return
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
        log.info("database schema upgraded from revision %s to %s", ", ".join(current) or "none (new or from "
                 "before the migrations)", script.get_current_head() if revision == "head" else revision)


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in one transaction that no other process migrates in at the same time."""
    with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            with conn.begin():
                if engine.dialect.name == "postgresql":
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
                yield conn
            return
        raw = conn.connection.dbapi_connection
        assert raw is not None
        raw.execute("PRAGMA foreign_keys=OFF")  # outside a transaction, or SQLite ignores it
        try:
            with conn.begin():  # BEGIN IMMEDIATE (the store's engine): the write lock
                yield conn
                broken = conn.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                if broken:
                    raise DatabaseVersionError(f"a migration left {len(broken)} rows whose parent is missing "
                                               f"(first: {tuple(broken[0])}); nothing was changed")
        finally:
            raw.execute("PRAGMA foreign_keys=ON")


__all__ = ["HEAD", "MIGRATIONS", "DatabaseVersionError", "current_revision", "head_revision", "is_in_memory", "prepare",
           "upgrade"]
