"""Inference throughput: naive pipeline vs fixed padding vs TextModel.predict (fp32, bf16).

Not a test. Compares, in one run and on the same weights (MiniLM with a fresh
2-class head), on N sentences of SST-2 (``stsa.binary.train``):

  (a) naive: one transformers ``pipeline`` call per text
  (b) batches padded to ``max_length`` (input order, batch ``--batch-size``)
  (c) ``TextModel.predict`` (length-sorted dynamic padding, fp32), probabilities only,
      and again with embeddings
  (d) the same with bf16 autocast, when the hardware has native bf16 (else skipped,
      unless ``--force-bf16``)

Prints sentences/s (median of ``--repeats`` timed runs after a warm-up) and the
speed-up over (a), plus the argmax agreement of each path with (a).

    .venv/bin/python benchmarks/bench_inference.py --n 512
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from al_loop.config import TrainingConfig  # noqa: E402
from al_loop.data.schema import LabelSchema  # noqa: E402
from al_loop.models import TextModel, cpu_supports_bf16  # noqa: E402
from al_loop.types import TaskKind  # noqa: E402


def load_sentences(path: Path, n: int) -> list[str]:
    out: list[str] = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if line:
                out.append(line.split(" ", 1)[1] if line[:2] in ("0 ", "1 ") else line)
            if len(out) >= n:
                break
    return out


def timed(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    """Median seconds over ``repeats`` runs, and the last result."""
    times = []
    result = np.zeros(0)
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    default_data = Path(os.environ.get("AL_LOOP_SHARED_DATA", REPO.parent / "shared" / "data"))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=512, help="sentences (default 512)")
    ap.add_argument("--data", type=Path, default=default_data / "sst2" / "stsa.binary.train")
    ap.add_argument("--model", default="default")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per path (median reported)")
    ap.add_argument("--naive-limit", type=int, default=0, help="time the naive path on only this many texts (0 = all)")
    ap.add_argument("--force-bf16", action="store_true", help="run (d) even without native bf16 (slow emulation)")
    args = ap.parse_args(argv)

    texts = load_sentences(args.data, args.n)
    n = len(texts)
    schema = LabelSchema.build(TaskKind.CLASSIFICATION, ["negative", "positive"])
    cfg = TrainingConfig(max_length=args.max_length, inference_batch_size=args.batch_size, precision="fp32")
    model = TextModel.create(schema, args.model, cfg)
    hf, tok, device = model.model, model.tokenizer, model.device
    print(
        f"{n} sentences from {args.data.name}; model {args.model}; device {device}; torch threads "
        f"{torch.get_num_threads()}; native bf16: {cpu_supports_bf16() if device.type == 'cpu' else 'cuda'}"
    )
    lengths = [len(ids) for ids in tok(texts, truncation=True, max_length=args.max_length)["input_ids"]]
    print(f"tokens per sentence: mean {np.mean(lengths):.1f}, max {max(lengths)}")

    from transformers import pipeline

    pipe = pipeline("text-classification", model=hf, tokenizer=tok, device=device, top_k=None)
    label_ids = {lb: i for i, lb in enumerate(schema.tags)}

    def naive(sub: list[str]) -> np.ndarray:
        out = np.zeros((len(sub), len(schema.tags)), dtype=np.float32)
        for i, text in enumerate(sub):
            result = pipe(text, truncation=True, max_length=args.max_length)
            if result and isinstance(result[0], list):  # some versions nest one list per input
                result = result[0]
            for item in result:
                out[i, label_ids[item["label"]]] = item["score"]
        return out

    def fixed() -> np.ndarray:
        parts = []
        with torch.inference_mode():
            for b in range(0, n, args.batch_size):
                enc = tok(
                    texts[b : b + args.batch_size],
                    padding="max_length",
                    truncation=True,
                    max_length=args.max_length,
                    return_tensors="pt",
                ).to(device)
                parts.append(torch.softmax(hf(**enc).logits.float(), dim=-1).cpu().numpy())
        return np.concatenate(parts)

    def sorted_dynamic(m: TextModel, emb: bool) -> Callable[[], np.ndarray]:
        def run() -> np.ndarray:
            out = m.predict(texts, embeddings=emb).probs
            assert out is not None
            return out

        return run

    naive_texts = texts[: args.naive_limit] if args.naive_limit else texts
    naive(texts[:8])  # warm-up
    fixed_warm = texts[:8]
    with torch.inference_mode():
        hf(**tok(fixed_warm, padding=True, return_tensors="pt").to(device))

    rows: list[tuple[str, float, np.ndarray | None, int]] = []
    t, ref = timed(lambda: naive(naive_texts), args.repeats)
    rows.append(("(a) pipeline, one call per text", t, ref, len(naive_texts)))
    t, res = timed(fixed, args.repeats)
    rows.append((f"(b) fixed padding to {args.max_length}, batch {args.batch_size}", t, res, n))
    t, res = timed(sorted_dynamic(model, False), args.repeats)
    rows.append(("(c) TextModel.predict fp32 (sorted dynamic)", t, res, n))
    t, res = timed(sorted_dynamic(model, True), args.repeats)
    rows.append(("(c') TextModel.predict fp32 + embeddings", t, res, n))
    bf16_ok = cpu_supports_bf16() if device.type == "cpu" else torch.cuda.is_bf16_supported()
    if bf16_ok or args.force_bf16:
        bf = TextModel(schema, args.model, cfg, hf, tok, device=device, autocast_dtype=torch.bfloat16, fresh_head=True)
        bf.predict(texts[:8])
        t, res = timed(sorted_dynamic(bf, False), args.repeats)
        rows.append(("(d) TextModel.predict bf16 autocast", t, res, n))
    else:
        rows.append(("(d) bf16: skipped (no native bf16 on this hardware)", float("nan"), None, 0))

    base_rate = rows[0][3] / rows[0][1]
    ref_arg = ref.argmax(axis=1)
    print(f"\n{'path':<52} {'sent/s':>8} {'speed-up':>9} {'argmax = (a)':>13}")
    for name, secs, res, count in rows:
        if res is None:
            print(f"{name:<52} {'-':>8} {'-':>9} {'-':>13}")
            continue
        rate = count / secs
        agree = float(np.mean(res[: len(ref_arg)].argmax(axis=1) == ref_arg))
        print(f"{name:<52} {rate:8.1f} {rate / base_rate:8.2f}x {agree:13.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
