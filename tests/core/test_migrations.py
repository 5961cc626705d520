"""The Alembic migrations on SQLite and PostgreSQL: from scratch, from the previous release, from older
databases, a newer database refused, concurrent opens, and ``create_all`` (in-memory) = the migrations."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

from al_loop.data.schema import LabelSchema
from al_loop.store import Store
from al_loop.store.schema import HEAD, DatabaseVersionError, current_revision, head_revision
from al_loop.store.tables import Base
from al_loop.types import Example, ItemId

LEGACY = Path(__file__).with_name("legacy")


def _diff(engine: Engine) -> list[Any]:
    """What ``alembic revision --autogenerate`` would write: the database against the models."""
    with engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        return list(compare_metadata(ctx, Base.metadata))


def _describe(engine: Engine) -> dict[str, Any]:
    """Every table's columns (name, type, nullable), primary key, foreign keys, unique constraints, indexes."""
    insp = inspect(engine)
    out: dict[str, Any] = {}
    for t in sorted(insp.get_table_names()):
        if t == "alembic_version":
            continue
        out[t] = {
            "columns": [(c["name"], str(c["type"]), c["nullable"]) for c in insp.get_columns(t)],
            "pk": insp.get_pk_constraint(t)["constrained_columns"],
            "fks": sorted((tuple(f["constrained_columns"]), f["referred_table"], tuple(f["referred_columns"]),
                           (f.get("options") or {}).get("ondelete")) for f in insp.get_foreign_keys(t)),
            "unique": sorted(tuple(u["column_names"]) for u in insp.get_unique_constraints(t)),
            "indexes": sorted((i["name"], tuple(i["column_names"]), bool(i["unique"])) for i in insp.get_indexes(t)
                              if not i["name"].startswith("sqlite_autoindex")),
        }
    return out


def _legacy(url: str) -> None:
    """A database as al-loop wrote it at commit a2b6118 (the previous release): its DDL, no alembic_version."""
    engine = create_engine(url)
    ddl = (LEGACY / f"a2b6118-{engine.dialect.name}.sql").read_text()
    with engine.begin() as conn:
        for stmt in ddl.split(";"):
            body = "\n".join(ln for ln in stmt.splitlines() if not ln.startswith("--")).strip()
            if body:
                conn.exec_driver_sql(body)
    engine.dispose()


def _rows(url: str, sql: str) -> list[tuple[Any, ...]]:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql))]
    finally:
        engine.dispose()


def _exec(url: str, *statements: tuple[str, dict[str, Any]]) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for sql, params in statements:
            conn.execute(text(sql), params)
    engine.dispose()


def test_the_head_the_store_knows_is_the_newest_migration() -> None:
    assert head_revision() == HEAD


def test_from_scratch_the_schema_is_the_models(database_url: str) -> None:
    store = Store(database_url)
    assert current_revision(store.engine) == head_revision()
    assert _diff(store.engine) == []
    store.dispose()


def test_create_all_in_memory_gives_the_schema_the_migrations_give(database_url: str) -> None:
    """In-memory SQLite (``simulate``) skips Alembic; the tables must be the same as a migrated database's."""
    memory = Store("sqlite://")
    assert _diff(memory.engine) == []
    migrated = Store(database_url)
    if migrated.engine.dialect.name == "sqlite":
        assert _describe(memory.engine) == _describe(migrated.engine)
    else:  # the same models in another dialect: compare against create_all on a fresh PostgreSQL database
        admin = create_engine(database_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
        blank = database_url + "_create_all"
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{blank.rsplit("/", 1)[1]}"')
        created = create_engine(blank)
        try:
            Base.metadata.create_all(created)
            assert _describe(created) == _describe(migrated.engine)
        finally:
            created.dispose()
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE "{blank.rsplit("/", 1)[1]}"')
            admin.dispose()
    migrated.dispose()


def test_the_previous_release_is_upgraded_in_place_with_its_rows(database_url: str) -> None:
    _legacy(database_url)
    _exec(database_url,
          ("INSERT INTO projects (name, task, labels, multi_label, base_model, loop_config, training_config, "
           "created_at) VALUES ('old', 'classification', :labels, false, 'default', '{}', '{}', '2026-01-01 00:00:00')",
           {"labels": json.dumps(["neg", "pos"])}),
          ("INSERT INTO items (project_id, item_id, text, text_hash, split, n_words, created_at) "
           "VALUES (1, 'a', 'hello there', 'h', 'pool', 2, '2026-01-01 00:00:00')", {}),
          ("INSERT INTO labels (project_id, item_id, annotation_key, source, payload, updated_at, version_at, "
           "received_at, skipped, deleted) VALUES (1, 'a', 'ls:1', 'ls', :p, '2026-01-01 00:00:00', "
           "'2026-01-01 00:00:00', '2026-01-01 00:00:00', false, false)", {"p": json.dumps({"labels": ["pos"]})}))
    assert current_revision(create_engine(database_url)) is None
    store = Store(database_url)
    assert current_revision(store.engine) == head_revision()
    assert _diff(store.engine) == []
    project = store.list_projects()[0]
    assert (project.id, project.name, project.labels) == (1, "old", ("neg", "pos"))
    assert [e.labels for e in store.labelled_examples(1)] == [("pos",)]
    store.add_items(1, [Example(ItemId("b"), "a new text")])  # ids keep counting after the old rows
    assert [i.item_id for i in store.get_items(1)] == ["a", "b"]
    store.dispose()
    assert Store(database_url).list_projects()[0].name == "old"  # a second open is a no-op


def test_older_databases_move_the_integration_bag_and_gain_version_at(database_url: str) -> None:
    """The upgrades ``store/migrate.py`` ran on open before Alembic live in the baseline revision now."""
    _legacy(database_url)
    bag = {"ls_project_id": 4, "ls_attached": True, "ml_backend": {"status": "connected", "url": "u", "id": 2},
           "rejected": [{"annotation_id": 9, "updated_at": "t", "type": "E", "error": "bad"}]}
    _exec(database_url,
          ("ALTER TABLE projects ADD COLUMN integration JSON", {}),
          ("ALTER TABLE labels DROP COLUMN version_at", {}),
          ("INSERT INTO projects (name, task, labels, multi_label, base_model, loop_config, training_config, "
           "integration, created_at) VALUES ('old', 'classification', '[\"a\", \"b\"]', false, 'default', '{}', "
           "'{}', :bag, '2026-01-01 00:00:00')", {"bag": json.dumps(bag)}),
          ("INSERT INTO items (project_id, item_id, text, text_hash, split, n_words, created_at) "
           "VALUES (1, 'x', 'hello', 'h', 'pool', 1, '2026-01-01 00:00:00')", {}),
          ("INSERT INTO labels (project_id, item_id, annotation_key, source, payload, updated_at, received_at, "
           "skipped, deleted) VALUES (1, 'x', 'ls:1', 'ls', '{\"labels\": [\"a\"]}', '2026-01-02 00:00:00', "
           "'2026-01-02 00:00:00', false, false)", {}))
    store = Store(database_url)
    assert _diff(store.engine) == []
    link = store.get_link(1)
    assert link is not None and link.ls_project_id == 4 and link.attached
    assert link.ml_backend == {"status": "connected", "url": "u", "id": 2}
    assert store.count_rejected(1) == 1
    # the projects table was rebuilt on SQLite (batch mode): its items and labels did not cascade away
    assert store.count_items(1) == 1
    assert [r.version_at for r in store.label_records(1)] == [store.label_records(1)[0].updated_at]
    store.create_project("new", LabelSchema.build("classification", ["a", "b"]))  # the old column is gone


def test_a_database_from_a_newer_al_loop_is_refused_untouched(database_url: str) -> None:
    Store(database_url).dispose()
    _exec(database_url, ("UPDATE alembic_version SET version_num = 'f00dcafe'", {}))
    with pytest.raises(DatabaseVersionError, match="newer al-loop"):
        Store(database_url)
    assert _rows(database_url, "SELECT version_num FROM alembic_version") == [("f00dcafe",)]


def test_processes_opening_a_new_database_at_once_migrate_it_once(new_database_url: Callable[[], str]) -> None:
    url = new_database_url()
    start = threading.Barrier(4)
    errors: list[BaseException] = []

    def open_store() -> None:
        start.wait()
        try:
            Store(url).dispose()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert _rows(url, "SELECT version_num FROM alembic_version") == [(head_revision(),)]


def test_plain_postgresql_urls_use_psycopg_and_a_missing_driver_is_a_config_error(postgres_server: Any) -> None:
    from al_loop.errors import ConfigError

    url = postgres_server.new_database()
    store = Store(url.replace("postgresql+psycopg://", "postgresql://"))
    assert store.engine.dialect.driver == "psycopg" and current_revision(store.engine) == head_revision()
    store.dispose()
    with pytest.raises(ConfigError, match="not installed"):
        Store(url.replace("postgresql+psycopg://", "postgresql+pg8000://"))


def test_the_developer_alembic_commands_work_on_the_packaged_environment(tmp_path: Path) -> None:
    """``alembic -c al_loop/store/migrations/alembic.ini -x url=... upgrade head``, then ``check`` (the docs)."""
    import subprocess
    import sys

    ini = Path(__file__).resolve().parents[2] / "al_loop" / "store" / "migrations" / "alembic.ini"
    url = f"sqlite:///{tmp_path / 'scratch.db'}"
    for args in (["upgrade", "head"], ["check"]):
        res = subprocess.run([sys.executable, "-m", "alembic", "-c", str(ini), "-x", f"url={url}", *args],
                             capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
    assert "No new upgrade operations detected" in res.stdout + res.stderr
    assert current_revision(create_engine(url)) == head_revision()
