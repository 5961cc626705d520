from __future__ import annotations

from itertools import islice, pairwise
from pathlib import Path

import numpy as np
import pytest

from al_loop.config import TrainingConfig
from al_loop.data.align import word_tags_to_spans, words_of
from al_loop.data.schema import LabelSchema
from al_loop.errors import EmptyInputError
from al_loop.training.trainer import linear_warmup_schedule, plan_epochs, split_train_val
from al_loop.types import Example, ItemId, TaskKind

# ---------------------------------------------------------------- tiny local readers (test data only)


def read_trec(path: Path, limit: int | None = None, skip: int = 0) -> list[Example]:
    out = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for i, line in enumerate(islice(fh, skip, None if limit is None else skip + limit)):
            label, text = line.rstrip("\n").split(" ", 1)
            out.append(Example(ItemId(f"trec:{skip + i}"), text, labels=(label.split(":")[0],)))
    return out


def read_conll_tsv(path: Path, limit: int, skip: int = 0) -> list[Example]:
    sentences: list[list[tuple[str, str]]] = [[]]
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line.strip():
                if sentences[-1]:
                    if len(sentences) >= skip + limit:
                        break
                    sentences.append([])
                continue
            tok, tag = line.split("\t")
            sentences[-1].append((tok, tag))
    out = []
    for i, sent in enumerate(s for s in sentences[skip : skip + limit] if s):
        text = " ".join(t for t, _ in sent)
        words = words_of(text)
        # this data is pre-tokenised; words_of may split a token further: tag its pieces B then I
        tags: list[str] = []
        for tok, tag in sent:
            n = len(words_of(tok))
            tags += [tag] + [("I" + tag[1:]) if tag != "O" else "O"] * (n - 1)
        out.append(Example(ItemId(f"ncbi:{skip + i}"), text, spans=tuple(word_tags_to_spans(words, tags))))
    return out


# ---------------------------------------------------------------- schedule helpers (fast)


def test_plan_epochs_clamps() -> None:
    cfg = TrainingConfig(target_steps=150, min_epochs=3, max_epochs=20)
    assert plan_epochs(1, cfg) == 20
    assert plan_epochs(10, cfg) == 15
    assert plan_epochs(100, cfg) == 3


def test_split_train_val_is_seeded_and_sized() -> None:
    cfg = TrainingConfig(val_fraction=0.15, min_val_size=20, seed=5)
    train, val = split_train_val(200, cfg)
    assert len(val) == 30 and len(train) == 170 and not set(train) & set(val)
    assert (train, val) == split_train_val(200, cfg)
    assert split_train_val(100, cfg)[1].__len__() == 20  # min_val_size
    assert split_train_val(59, cfg) == (list(range(59)), [])  # < 3 * min_val_size: no validation
    assert split_train_val(200, TrainingConfig(val_fraction=0.0))[1] == []


def test_warmup_then_linear_decay() -> None:
    import torch

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = linear_warmup_schedule(opt, warmup_steps=2, total_steps=10)
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] < lrs[1] < lrs[2] == 1.0
    assert all(a > b for a, b in pairwise(lrs[2:]))
    assert lrs[-1] > 0


# ---------------------------------------------------------------- real fine-tuning (slow)

FAST = TrainingConfig(
    max_length=64, window_stride=16, batch_size=16, target_steps=48, min_epochs=3, max_epochs=6,
    head_learning_rate=2e-3, learning_rate=1e-4, patience=2, inference_batch_size=64,
)  # fmt: skip


@pytest.fixture(scope="module")
def trec(shared_data: Path) -> tuple[list[Example], list[Example]]:
    path = shared_data / "trec" / "TREC.train"
    return read_trec(path, limit=150), read_trec(path, limit=100, skip=3000)


@pytest.fixture(scope="module")
def ncbi(shared_data: Path) -> tuple[list[Example], list[Example]]:
    folder = shared_data / "ncbi_disease"
    return read_conll_tsv(folder / "train.tsv", 150), read_conll_tsv(folder / "devel.tsv", 100)


@pytest.fixture(scope="module")
def trained_ner(ncbi: tuple[list[Example], list[Example]]) -> tuple[object, object]:
    from al_loop.models import TextModel

    train, _ = ncbi
    model = TextModel.create(LabelSchema.from_examples(TaskKind.NER, train), config=FAST)
    report = model.fit(train)
    return model, report


@pytest.mark.slow
def test_short_fit_beats_untrained_on_trec(trec: tuple[list[Example], list[Example]]) -> None:
    from al_loop.models import TextModel

    train, held_out = trec
    schema = LabelSchema.from_examples(TaskKind.CLASSIFICATION, train + held_out)
    model = TextModel.create(schema, config=FAST)
    before = model.evaluate(held_out)["score"]
    seen: list[float] = []
    report = model.fit([*train, Example(ItemId("u"), "unlabelled text")], progress=seen.append)
    after = model.evaluate(held_out)
    assert after["score"] > before + 0.1, (before, after["score"], report)
    assert after["score"] > 0.4
    assert report.n_train == 150 and report.n_val == 0  # no validation split by default: every label trains
    assert report.val_score is None and report.best_epoch == report.epochs == report.planned_epochs  # no early stop
    assert seen == sorted(seen) and seen[-1] == 1.0
    assert set(after["per_label"]) == set(schema.labels)


@pytest.mark.slow
def test_short_ner_fit_finds_diseases(trained_ner: tuple[object, object], ncbi: tuple[list[Example], list[Example]]):
    model, report = trained_ner
    _, dev = ncbi
    metrics = model.evaluate(dev)  # type: ignore[attr-defined]
    assert metrics["score"] > 0.0, (metrics, report)
    assert "Disease" in metrics["per_label"]


@pytest.mark.slow
def test_long_ner_text_gets_every_word_and_spans_near_the_end(
    trained_ner: tuple[object, object], ncbi: tuple[list[Example], list[Example]]
) -> None:
    model, _ = trained_ner
    train, _ = ncbi
    with_entities = [ex for ex in train if ex.spans]
    parts: list[str] = []
    while sum(len(words_of(p)) for p in parts) < 2000:
        parts += [ex.text for ex in with_entities]
    text = " ".join(parts)
    words = words_of(text)
    assert len(words) >= 2000
    out = model.predict([text])  # type: ignore[attr-defined]
    assert out.words[0] == words and out.token_probs[0].shape == (len(words), 3)
    near_end = [s for s in out.predicted[0] if s.start > 0.9 * len(text)]
    assert near_end, "no entity found in the last 10% of a long text"
    # the last sentence gets the same spans in context as alone
    last = parts[-1]
    offset = len(text) - len(last)
    alone = {(s.start + offset, s.end + offset, s.label) for s in model.predict([last]).predicted[0]}  # type: ignore[attr-defined]
    in_context = {(s.start, s.end, s.label) for s in out.predicted[0] if s.start >= offset}
    assert len(alone & in_context) >= max(1, len(alone) // 2)


@pytest.mark.slow
def test_same_inputs_give_identical_models(trec: tuple[list[Example], list[Example]]) -> None:
    from al_loop.models import TextModel

    train, held_out = trec
    tiny = train[:24]
    schema = LabelSchema.from_examples(TaskKind.CLASSIFICATION, train + held_out)
    cfg = TrainingConfig(max_length=32, window_stride=8, batch_size=8, min_epochs=1, max_epochs=1, target_steps=1)
    probs = []
    for _ in range(2):
        model = TextModel.create(schema, config=cfg)
        report = model.fit(tiny)
        assert report.epochs == 1 and report.steps == 3 and report.val_score is None
        probs.append(model.predict([ex.text for ex in held_out[:10]]).probs)
    np.testing.assert_array_equal(probs[0], probs[1])


@pytest.mark.slow
def test_fit_without_labels_raises() -> None:
    from al_loop.models import TextModel

    model = TextModel.create(LabelSchema.build(TaskKind.CLASSIFICATION, ["a", "b"]), config=FAST)
    with pytest.raises(EmptyInputError):
        model.fit([Example(ItemId("x"), "no label")])


@pytest.mark.slow
def test_a_warm_started_fit_runs_the_warm_schedule(trec: tuple[list[Example], list[Example]], tmp_path: Path) -> None:
    """A model made from a previous version's weights trains ``warm_schedule`` of the planned epochs (at least one);
    a fresh model the whole plan."""
    from al_loop.models import TextModel

    train, held_out = trec
    tiny = train[:24]
    schema = LabelSchema.from_examples(TaskKind.CLASSIFICATION, train + held_out)
    cfg = TrainingConfig(max_length=32, window_stride=8, batch_size=8, min_epochs=3, max_epochs=3, target_steps=1,
                         warm_schedule=0.34, learner="finetune")
    first = TextModel.create(schema, config=cfg)
    assert not first.warm_started
    assert first.fit(tiny).epochs == 3
    first.save(tmp_path / "v1")
    warm = TextModel.create(schema, config=cfg, init_from=tmp_path / "v1")
    assert warm.warm_started
    report = warm.fit(train[:32])
    assert (report.epochs, report.planned_epochs, report.steps) == (1, 1, 4)
    assert plan_epochs(4, cfg) == 3  # what a fresh model would have run
