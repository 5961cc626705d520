"""``al-loop simulate``: compare strategies offline; a labelled data set plays the annotator.

With ``--project ID`` the learning-curve points are also stored with that project of the
al-loop database (``--db`` or ``AL_LOOP_DATABASE_URL``), and its dashboard draws them beneath
the live curve.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from al_loop.config import LEARNERS, POOLINGS, TOKEN_HEADS, LoopConfig, TrainingConfig
from al_loop.errors import ConfigError
from al_loop.model_paths import parse_source_ref
from al_loop.store import Store
from al_loop.store.sources import check_source, resolve_base_model
from al_loop.types import TaskKind
from annotator_bridge.settings import Settings


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "simulate",
        help="run the active-learning loop offline with gold labels as the annotator",
        description="Run rounds with an oracle that answers from gold labels and write learning curves "
        "(results.json, results.csv, learning_curve.png) to --out.",
    )
    p.add_argument("--train", required=True, type=Path, help="labelled file used as the unlabelled pool + oracle")
    p.add_argument("--test", required=True, type=Path, help="labelled file to evaluate every round on")
    p.add_argument("--task", required=True, choices=[t.value for t in TaskKind])
    p.add_argument(
        "--strategy",
        action="append",
        dest="strategies",
        metavar="NAME",
        help="repeatable; e.g. random, least_confidence, margin, entropy, ranked_batch, "
        "information_density, mnlp, mean_entropy, max_entropy (default: random + least_confidence)",
    )
    p.add_argument("--seed-size", type=int, default=50, help="labels in the cold-start batch (round 0)")
    p.add_argument("--batch-size", type=int, default=50, help="labels per round")
    p.add_argument("--rounds", type=int, default=5, help="training rounds after the seed batch")
    p.add_argument("--repeats", type=int, default=3, help="repeats with different seeds")
    p.add_argument("--model", default="default",
                   help="'default' (bundled MiniLM), a Hugging Face name or folder, an al-loop model-version artifact "
                   "folder, or project:ID:VERSION (another project's version, read from --db / AL_LOOP_DATABASE_URL)")
    p.add_argument("--out", type=Path, default=Path("runs/simulation"))
    p.add_argument(
        "--format",
        default=None,
        help="format of --train (conll, bio, trec, sst, jsonl, csv) when it cannot be told from the file",
    )
    p.add_argument("--test-format", default=None, help="format of --test when it differs from --format")
    p.add_argument("--max-pool", type=int, default=0, help="subsample the pool to N items (0 = all)")
    p.add_argument("--max-test", type=int, default=0, help="subsample the test set to N items (0 = all)")
    p.add_argument(
        "--max-pool-scored",
        type=int,
        default=0,
        help="score a random subset of N unlabelled items per round (0 = the whole pool)",
    )
    p.add_argument("--cold-start", choices=["random", "diversity"], default="random")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--full-data", action="store_true", help="also train once on the whole pool (reference score)")
    p.add_argument("--max-length", type=int, default=128, help="model max length in subword tokens")
    p.add_argument(
        "--target-steps",
        type=int,
        default=TrainingConfig.target_steps,
        help="optimizer steps per round (epochs scale to reach it)",
    )
    p.add_argument("--max-epochs", type=int, default=TrainingConfig.max_epochs)
    p.add_argument("--warm-start", action=argparse.BooleanOptionalAction, default=None,
                   help="continue each fine-tuning round from the previous round's model (default: on, as in a "
                        "project; --no-warm-start fits every round from the base model)")
    p.add_argument("--warm-schedule", type=float, default=None, metavar="F",
                   help="with --warm-start: share of the planned epochs a warm-started round trains "
                        f"(default {TrainingConfig.warm_schedule})")
    p.add_argument("--warm-new-share", action=argparse.BooleanOptionalAction, default=None,
                   help="with --warm-start: train at least the new labels' share of the planned epochs")
    p.add_argument("--warm-refit", type=float, default=None, metavar="X",
                   help="with --warm-start: fit from the base model again once the labels reach X times those of "
                        "the last such fit (0 = never)")
    p.add_argument(
        "--learner",
        choices=list(LEARNERS),
        default=TrainingConfig.learner,
        help="auto (compare the head and fine-tuning on held-out labels each round), head or finetune",
    )
    p.add_argument(
        "--pooling",
        choices=list(POOLINGS),
        default=TrainingConfig.pooling,
        help="fine-tuned classifier head: mean (mean-pooled, starts from the head's regression) or cls (the model's)",
    )
    p.add_argument(
        "--token-head",
        choices=list(TOKEN_HEADS),
        default=TrainingConfig.token_head,
        help="fine-tuned NER head: probe (normalised, starts from the head's regression) or hf (the model's)",
    )
    p.add_argument(
        "--dedupe-threshold",
        type=float,
        default=LoopConfig.dedupe_threshold,
        help="cosine similarity at which a candidate counts as a near-duplicate of the batch (0 = off)",
    )
    p.add_argument("--precision", choices=["auto", "fp32", "bf16"], default=TrainingConfig.precision)
    p.add_argument("--stop-set-size", type=int, default=LoopConfig.stop_set_size, metavar="N",
                   help="items of the fixed stop set each round predicts for the stopping criteria (0 = off)")
    p.add_argument("--adapt-pool", action="store_true",
                   help="pool-adaptive pretraining: masked-LM training of the encoder on the pool's texts once, "
                        "before the seed round; every repeat starts from the adapted encoder (cached)")
    p.add_argument("--adapt-steps", type=int, default=None, metavar="N",
                   help="optimizer steps of --adapt-pool (default 300)")
    p.add_argument("--adapt-minutes", type=float, default=None, metavar="M",
                   help="wall-clock cap of --adapt-pool in minutes (default 10)")
    p.add_argument("--adapt-cache", type=Path, default=None, metavar="DIR",
                   help="cache folder of adapted encoders (default: OUT/adapted)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--project", type=int, default=None, metavar="ID",
                   help="store the curves with this al-loop project (its dashboard overlays them on the live curve)")
    p.add_argument("--db", default=None, metavar="URL",
                   help="database of --project (default: from AL_LOOP_DATABASE_URL / AL_LOOP_HOME)")
    p.set_defaults(func=run)


def _project_store(args: argparse.Namespace) -> Store | None:
    """The store that gets the curves (``--project``), checked before the simulation runs."""
    if args.project is None:
        return None
    store = Store(args.db or Settings.from_env().database_url)
    project = store.get_project(args.project)  # NotFoundError: exit code 2 before any training
    if project.task is not TaskKind(args.task):
        store.dispose()
        raise ConfigError(f"project {project.id} is a {project.task.value} project, the simulation is {args.task}")
    return store


def _source_model(args: argparse.Namespace, store: Store | None) -> str:
    """``--model`` as the simulation loads it: ``project:ID:VERSION`` becomes that version's artifact folder, read
    from the al-loop database (``--db`` or the settings; checked: the version has its artifact, same task kind)."""
    if parse_source_ref(args.model) is None:
        return str(args.model)
    own = store if store is not None else Store(args.db or Settings.from_env().database_url)
    try:
        check_source(own, args.model, args.task)
        return resolve_base_model(own, args.model)
    finally:
        if own is not store:
            own.dispose()


def _adapt_budget(args: argparse.Namespace) -> Any:
    """The ``AdaptBudget`` of ``--adapt-pool`` (None without it); the steps and minutes options need it."""
    steps, minutes = getattr(args, "adapt_steps", None), getattr(args, "adapt_minutes", None)
    if not getattr(args, "adapt_pool", False):
        if steps is not None or minutes is not None:
            raise ConfigError("--adapt-steps and --adapt-minutes need --adapt-pool")
        return None
    from al_loop.models.adapt import AdaptBudget

    fields: dict[str, Any] = {"max_length": args.max_length, "seed": args.seed}
    if steps is not None:
        fields["max_steps"] = steps
    if minutes is not None:
        fields["max_seconds"] = minutes * 60.0
    return AdaptBudget(**fields)


def run(args: argparse.Namespace) -> int:
    store = _project_store(args)
    try:
        return _run(args, store)
    finally:
        if store is not None:
            store.dispose()


def _run(args: argparse.Namespace, store: Store | None) -> int:
    from al_loop.simulate import SimulationSpec, run_simulation, write_outputs


    training = TrainingConfig(
        max_length=args.max_length,
        target_steps=args.target_steps,
        max_epochs=args.max_epochs,
        **({"warm_start": args.warm_start} if args.warm_start is not None else {}),
        **({"warm_schedule": args.warm_schedule} if args.warm_schedule is not None else {}),
        **({"warm_refit": args.warm_refit} if args.warm_refit is not None else {}),
        **({"warm_new_share": args.warm_new_share} if args.warm_new_share is not None else {}),
        learner=args.learner,
        pooling=args.pooling,
        token_head=args.token_head,
        precision=args.precision,
        seed=args.seed,
    )
    spec = SimulationSpec(
        train=args.train,
        test=args.test,
        task=TaskKind(args.task),
        strategies=tuple(args.strategies or ("random", "least_confidence")),
        seed_size=args.seed_size,
        batch_size=args.batch_size,
        rounds=args.rounds,
        repeats=args.repeats,
        model=_source_model(args, store),
        out=args.out,
        format=args.format,
        test_format=args.test_format,
        max_pool=args.max_pool,
        max_test=args.max_test,
        max_pool_scored=args.max_pool_scored,
        cold_start=args.cold_start,
        dedupe_threshold=args.dedupe_threshold,
        stop_set_size=args.stop_set_size,
        seed=args.seed,
        full_data=args.full_data,
        training=training,
        adapt=_adapt_budget(args),
        adapt_cache=args.adapt_cache,
    )
    result = run_simulation(spec, progress=not args.no_progress)
    paths = write_outputs(result, args.out, spec.task)
    print(
        json.dumps(
            {k: {f: x for f, x in v.items() if f != "stopping"} for k, v in result.summary.items()
             if not k.startswith("_")}
            | {"full_data_score": result.full_data_score},
            indent=1,
            default=str,
        )[:4000]
    )
    if result.adaptation is not None:
        a = result.adaptation
        print(f"pool-adaptive pretraining: {a['steps']} steps on {a['texts']} texts in {a['seconds']:.0f} s, "
              f"MLM loss {a['loss_first']:.3f} -> {a['loss_last']:.3f}{' (cached)' if a['cached'] else ''}: "
              f"{a['folder']}")
    stops = stopping_table(result.summary)
    if stops:
        print(stops)
    for kind, path in paths.items():
        print(f"wrote {kind}: {path}")
    if store is not None:
        name = f"{Path(args.train).name}: {', '.join(spec.strategies)}"
        sim_id = store.add_simulation(args.project, name, result.points)
        print(f"stored simulation {sim_id} with project {args.project} (dashboard learning curve)")
    return 0


def stopping_table(summary: dict[str, Any]) -> str:
    """Where each stopping criterion would have stopped each strategy (``summary[strategy]["stopping"]``):
    labels and score at the first round it held (mean over the repeats where it fired), against the final
    round's score; empty when the run measured no stopping criteria."""
    rows = []
    for strategy, entry in summary.items():
        if strategy.startswith("_") or not isinstance(entry, dict) or not isinstance(entry.get("stopping"), dict):
            continue
        for name, c in entry["stopping"].items():
            fired = f"{c['fired']}/{c['repeats']}"
            labels = f"{c['labels']:.0f}" if c.get("labels") is not None else "never"
            at = f"{c['score']:.4f}" if c.get("score") is not None else "-"
            final = f"{c['final_score']:.4f}" if c.get("final_score") is not None else "-"
            final_labels = f"{c['final_labels']:.0f}" if c.get("final_labels") is not None else "-"
            rows.append([strategy, name, fired, labels, at, final_labels, final])
    if not rows:
        return ""
    head = ["strategy", "criterion", "fired", "labels at stop", "score there", "final labels", "final score"]
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["stopping criteria (mean over the repeats where each fired):"]
    for n, r in enumerate([head, *rows]):
        lines.append("  " + "  ".join(str(c).ljust(widths[i]) for i, c in enumerate(r)).rstrip())
        if n == 0:
            lines.append("  " + "  ".join("-" * w for w in widths))
    return "\n".join(lines)
