"""Large imports in the core: the streaming reader equals the whole-file reader, holds one batch at a time,
batched storing equals ``add_items``, and the import job's counts, progress and mid-file errors."""

from __future__ import annotations

import json
import random
import tracemalloc
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from al_loop.data import stream
from al_loop.data.readers import read_examples
from al_loop.data.schema import LabelSchema
from al_loop.data.stream import StreamProgress, iter_example_batches
from al_loop.errors import DataFormatError, EmptyInputError, InvalidTransitionError
from al_loop.states import ImportStatus, check_import_transition
from al_loop.store import Store
from al_loop.store.imports import create_import, get_import, update_import
from al_loop.store.schema import HEAD, current_revision, upgrade
from al_loop.types import Example, ItemId, TaskKind
from annotator_bridge.loop.imports import run_import

CLS = "classification"
FILES: dict[str, tuple[str, str, str]] = {  # name -> (content, task, format or "")
    "q.txt": ("DESC:manner How do I ?\r\nHUM:ind Who was he ?\r\n\r\nLOC:city Where is it ?\rNUM:date When ?\n", CLS,
              "trec"),
    "s.txt": ("\ufeff1 a fine film\n0 dull\n\n1 great fun\n0 meh  \n", CLS, "sst"),
    "a.jsonl": ('{"id": "x1", "text": "one", "label": "a", "extra": 3}\n\n{"text": "two"}\n{"id": 7, "text": "three",'
                ' "label": ["a", "b"]}\n{"text": "four", "label": "b"}\n', CLS, ""),
    "n.jsonl": ('{"text": "Jo lives in Rome", "spans": [{"start": 0, "end": 2, "label": "PER"}]}\n'
                '{"tokens": ["Ann", "met", "Bo"], "tags": ["B-PER", "O", "I-PER"]}\n{"text": "nothing"}\n', "ner", ""),
    "arr.json": ('[{"text": "one", "label": "a"}, {"text": "two"}, {"text": "three", "label": "b"}]', CLS, ""),
    "c.csv": ('id,text,label,note\r\nr1,"a, quoted\r\nmulti-line text",a,x\r\n,plain,b|a,\r\n\r\nr3,"say ""hi""",,'
              'z\r\n', CLS, ""),
    "nc.csv": ('text,spans\nJo runs,"[[0, 2, ""PER""]]"\nno one,\n', "ner", ""),
    "t.conll": ("-DOCSTART- -X- O O\n\nEU NNP B-NP B-ORG\nrejects VBZ B-VP O\n\nPeter NNP B-NP B-PER\n", "ner",
                "conll"),
    "t.bio": ("John\tB-PER\nruns\tO\n\nMary\tI-PER\n", "ner", ""),
}


def _write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_bytes(content.encode("utf-8"))
    else:
        path.write_bytes(content)
    return path


def _streamed(path: Path, task: str, fmt: str | None, batch_size: int) -> list[Example]:
    batches = list(iter_example_batches(path, task=task, format=fmt, batch_size=batch_size))
    assert all(0 < len(b) <= batch_size for b in batches)
    return [ex for b in batches for ex in b]


@pytest.mark.parametrize("name", sorted(FILES))
@pytest.mark.parametrize("batch_size", [1, 2, 1000])
def test_streaming_equals_the_whole_file_reader_on_every_format(tmp_path: Path, name: str, batch_size: int,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    content, task, fmt = FILES[name]
    path = _write(tmp_path, name, content)
    whole = read_examples(path, task=task, format=fmt or None)
    assert _streamed(path, task, fmt or None, batch_size) == whole
    monkeypatch.setattr(stream, "_CHUNK", 3)  # line breaks (\r\n too) and the BOM split across reads
    assert _streamed(path, task, fmt or None, batch_size) == whole


def test_streaming_equals_the_whole_file_reader_on_real_data(shared_data: Path) -> None:
    data = shared_data
    files = [data / "trec" / "TREC.test", data / "sst2" / "stsa.binary.dev", data / "conll2003" / "valid.txt"]
    for f in files:  # every file must be there: a missing one fails, it is not passed over
        task = "ner" if "conll" in str(f) else CLS
        progress = StreamProgress()
        batches = list(iter_example_batches(f, task=task, batch_size=97, progress=progress))
        assert [e for b in batches for e in b] == read_examples(f, task=task)
        assert progress.bytes_read == progress.bytes_total == f.stat().st_size
        assert progress.rows_read == sum(len(b) for b in batches)


@pytest.mark.parametrize(("name", "content", "task", "fmt"), [
    ("bad.txt", "DESC:m ok\nHUM:ind fine\nnot a label line\n", CLS, "trec"),
    ("bad.jsonl", '{"text": "a"}\n{"text": "b"}\n{"text": "c"\n', CLS, None),
    ("dup.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": "y"}\n{"id": "a", "text": "z"}\n', CLS, None),
    ("dup.csv", "id,text\na,x\nb,y\na,z\n", CLS, None),
    ("utf.txt", b"1 fine\n0 caf\xe9 bad\n".decode("latin-1"), CLS, "sst"),
    ("empty.jsonl", "\n\n  \n", CLS, None),
    ("cls_only.jsonl", '{"text": "a", "label": "x"}\n', "ner", None),
    ("spans.csv", 'text,spans\nab,"[[0, 9, ""X""]]"\n', "ner", None),
])
def test_errors_are_the_whole_file_readers(tmp_path: Path, name: str, content: str, task: str,
                                           fmt: str | None) -> None:
    path = _write(tmp_path, name, content.encode("latin-1") if name == "utf.txt" else content)
    with pytest.raises((DataFormatError, EmptyInputError)) as whole:
        read_examples(path, task=task, format=fmt)
    with pytest.raises(type(whole.value)) as streamed:
        _streamed(path, task, fmt, 1)
    assert str(streamed.value) == str(whole.value)


def test_a_duplicate_id_in_a_later_batch_is_the_same_error_and_earlier_batches_were_handed_out(tmp_path: Path) -> None:
    lines = [json.dumps({"id": f"i{i}", "text": f"text {i}"}) for i in range(10)] + ['{"id": "i3", "text": "again"}']
    path = _write(tmp_path, "d.jsonl", "\n".join(lines) + "\n")
    got: list[list[Example]] = []
    with pytest.raises(DataFormatError, match=r"d.jsonl:11: duplicate item id \(first seen at line 4\)"):
        for batch in iter_example_batches(path, task=CLS, batch_size=4):
            got.append(batch)
    assert [len(b) for b in got] == [4, 4]  # the third batch (lines 9-11) holds the error


def test_the_reader_holds_one_batch_not_the_file(tmp_path: Path) -> None:
    """Lazy: a batch is handed out after reading about one batch of the file; memory: tracing the allocations,
    streaming a 20,000-line file peaks far below reading it whole (the item ids seen are all it keeps)."""
    n, k = 20_000, 500
    path = _write(tmp_path, "big.jsonl", "".join(json.dumps({"text": f"sentence number {i} " + "w" * 40,
                                                             "source": "x" * 30}) + "\n" for i in range(n)))
    line_bytes = path.stat().st_size // n
    progress = StreamProgress()
    batches = iter_example_batches(path, task=CLS, batch_size=k, progress=progress)
    first = next(batches)
    assert len(first) == k and progress.rows_read == k
    assert progress.bytes_read <= (k + 1) * line_bytes  # the file is read one chunk ahead at most, not to the end
    batches.close()

    def peak(fn: Callable[[], object]) -> int:
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    def drain() -> None:
        for _ in iter_example_batches(path, task=CLS, batch_size=k):
            pass

    streamed = peak(drain)
    whole = peak(lambda: read_examples(path, task=CLS))
    assert streamed < whole / 4, (streamed, whole)


# ------------------------------------------------------------------ the store


def _project(store: Store, name: str = "p") -> int:
    return store.create_project(name, LabelSchema(TaskKind.CLASSIFICATION, ("a", "b"))).id


def test_batches_across_boundaries_equal_one_add_items(database_url: str) -> None:
    rng = random.Random(3)
    examples = [Example(ItemId(f"i{rng.randint(0, 60)}"), f"text  {rng.randint(0, 50)}",
                        labels=(rng.choice("ab"),) if rng.random() < 0.3 else None) for _ in range(120)]
    store = Store(database_url)
    one, batched = _project(store, "one"), _project(store, "batched")
    reference = store.add_items(one, examples)
    added = existing = 0
    dupes: list[str] = []
    for i in range(0, len(examples), 7):
        r = store.add_item_batch(batched, examples[i:i + 7])
        added, existing, dupes = added + r.added, existing + r.existing, dupes + r.duplicate_texts
    assert (added, existing, dupes) == (reference.added, reference.existing, reference.duplicate_texts)
    assert [(i.item_id, i.text, i.gold) for i in store.get_items(batched)] == \
        [(i.item_id, i.text, i.gold) for i in store.get_items(one)]


def _pool_file(tmp_path: Path, n: int, bad_line: int | None = None, name: str = "pool.jsonl") -> Path:
    lines = []
    for i in range(n):
        if bad_line is not None and i + 1 == bad_line:
            lines.append('{"id": "broken", "text": ')
        else:
            lines.append(json.dumps({"id": f"t{i}", "text": f"short text {i % (n - 100)}",
                                     **({"label": "a"} if i % 10 == 0 else {})}))
    return _write(tmp_path, name, "\n".join(lines) + "\n")


def test_a_50k_line_import_job_counts_and_progress(tmp_path: Path) -> None:
    path = _pool_file(tmp_path, 50_000)  # the last 100 texts repeat the first 100: duplicates in a later batch
    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    pid = _project(store)
    store.add_items(pid, [Example(ItemId("t5"), "already here")])
    job = create_import(store, pid, str(path), format=None, split="pool", options={"record_labels": True},
                        bytes_total=path.stat().st_size)
    assert job.status is ImportStatus.PENDING and job.progress == 0.0
    seen: list[tuple[str, int, int, int]] = []
    final = run_import(store, job.id, path, max_bytes=None, batch_size=8_000,
                       on_batch=lambda j: seen.append((j.status.value, j.rows_read, j.added, j.bytes_read)))
    assert final.status is ImportStatus.SUCCEEDED and final.error is None
    # t5 is there with another text, so the file's t5 is "existing" and its text comes back once as new (t49905)
    assert (final.rows_read, final.existing, final.duplicates) == (50_000, 1, 99)
    assert final.added == 50_000 - 1 - 99 == store.count_items(pid) - 1
    assert final.labels_recorded == 5_000 - 10  # every tenth has a label, but not the 10 of the repeated texts
    assert final.bytes_read == final.bytes_total == path.stat().st_size and final.progress == 1.0
    running = [s for s in seen if s[0] == "running"]
    assert [r[1] for r in running] == [8_000 * i for i in range(1, 7)] + [50_000]
    assert [r[3] for r in running] == sorted(r[3] for r in running) and running[0][3] < final.bytes_total / 5
    assert seen[-1][0] == "succeeded" and get_import(store, pid, job.id) == final


def test_an_error_mid_file_keeps_the_batches_before_it_and_a_rerun_adds_the_rest(tmp_path: Path,
                                                                                 database_url: str) -> None:
    store = Store(database_url)
    pid = _project(store)
    broken = _pool_file(tmp_path, 25_000, bad_line=21_234)
    job = create_import(store, pid, str(broken), format=None, split="pool")
    failed = run_import(store, job.id, broken, max_bytes=None, batch_size=10_000)
    assert failed.status is ImportStatus.FAILED and failed.finished_at is not None
    assert failed.error is not None and f"{broken}:21234" in failed.error and "bad JSON" in failed.error
    assert "broken" not in failed.error.replace(str(broken), "")  # the line's content is never quoted
    assert failed.added == 20_000 == store.count_items(pid) and failed.rows_read == 20_000
    fixed = _pool_file(tmp_path, 25_000, name="fixed.jsonl")
    again = run_import(store, create_import(store, pid, str(fixed), format=None, split="pool").id, fixed,
                       max_bytes=None, batch_size=10_000)
    assert again.status is ImportStatus.SUCCEEDED
    assert (again.existing, again.added) == (20_000, 25_000 - 20_000 - 100)
    with pytest.raises(InvalidTransitionError):
        update_import(store, job.id, status=ImportStatus.RUNNING)  # a failed import stays failed


def test_import_transitions() -> None:
    assert check_import_transition("pending", "running") is ImportStatus.RUNNING
    assert check_import_transition("pending", "failed") is ImportStatus.FAILED
    for final in ("succeeded", "failed"):
        for nxt in ImportStatus:
            with pytest.raises(InvalidTransitionError):
                check_import_transition(final, nxt)
    with pytest.raises(InvalidTransitionError):
        check_import_transition("pending", "succeeded")


def test_migration_0002_adds_imports_to_a_0001_database_with_its_rows(database_url: str) -> None:
    engine = create_engine(database_url)
    upgrade(engine, "0001")
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO projects (name, task, labels, multi_label, base_model, loop_config, "
                          "training_config, created_at) VALUES ('old', 'classification', '[\"a\"]', false, 'default', "
                          "'{}', '{}', '2026-01-01 00:00:00')"))
        conn.execute(text("INSERT INTO items (project_id, item_id, text, text_hash, split, n_words, ext_task_id, "
                          "created_at) VALUES (1, 'x', 'kept', 'h', 'pool', 1, NULL, '2026-01-01 00:00:00')"))
    assert current_revision(engine) == "0001" and not inspect(engine).has_table("imports")
    engine.dispose()
    store = Store(database_url)
    assert current_revision(store.engine) == HEAD  # 0002 and every later revision
    assert [i.text for i in store.get_items(1)] == ["kept"]
    assert "ix_items_hash" in {ix["name"] for ix in inspect(store.engine).get_indexes("items")}
    job = create_import(store, 1, "/data/x.jsonl", format="jsonl", split="pool", bytes_total=2**40)
    assert get_import(store, 1, job.id).bytes_total == 2**40  # BIGINT: files over 2 GiB
    store.dispose()


def test_an_import_job_refuses_what_its_columns_cannot_hold(tmp_path: Path) -> None:
    from al_loop.store.limits import ValueOutOfBoundsError

    store = Store(f"sqlite:///{tmp_path / 'db.sqlite'}")
    pid = _project(store)
    with pytest.raises(ValueOutOfBoundsError, match="import format"):
        create_import(store, pid, "/x.jsonl", format="f" * 21, split="pool")
    with pytest.raises(ValueError, match="split"):
        create_import(store, pid, "/x.jsonl", format=None, split="train")
