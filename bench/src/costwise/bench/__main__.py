"""``costwise-bench <benchmark> [options]``: prints one JSON object per run."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import platform
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .ttft import Options


def _machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def _ttft_options(a: argparse.Namespace) -> Options:
    from .ttft import Options  # imported when used, as every benchmark's module is

    levels = tuple(int(x) for x in a.levels.split(","))
    return Options(
        levels,
        rounds=a.rounds,
        max_tokens=a.max_tokens,
        with_cache=a.with_cache,
        processes=a.processes,
        hops=a.hops,
        spread_s=a.spread,
        own_core=a.engine_core,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="costwise-bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    batching = sub.add_parser("batching", help="tokens/s at several in-flight levels, queue vs direct engine")
    batching.add_argument("--model", default="builtin:tiny-llama")
    batching.add_argument("--levels", default="1,4,16")
    batching.add_argument("--requests-per-slot", type=int, default=4)
    batching.add_argument("--max-tokens", type=int, default=128)
    batching.add_argument("--with-cache", action="store_true", help="queue path through the cache (default: router)")
    batching.add_argument("--repeats", type=int, default=3, help="alternating runs per level; medians are reported")
    batching.set_defaults(
        module="batching",
        call=lambda run, a: run(
            a.model, [int(x) for x in a.levels.split(",")], a.requests_per_slot, a.max_tokens, a.with_cache, a.repeats
        ),
    )
    logprob = sub.add_parser("logprob-cost", help="the worker process's CPU per token with and without logprobs")
    logprob.add_argument("--model", default="builtin:tiny-llama")
    logprob.add_argument("--streams", type=int, default=16, help="requests at once")
    logprob.add_argument("--max-tokens", type=int, default=256)
    logprob.add_argument("--rounds", type=int, default=6, help="batches each way, alternated; medians are reported")
    logprob.set_defaults(module="logprob_cost", call=lambda run, a: run(a.model, a.streams, a.max_tokens, a.rounds))
    overhead = sub.add_parser("overhead", help="latency and CPU costwise adds outside the engine; pass-through req/s")
    overhead.add_argument("--model", default="builtin:tiny-llama")
    overhead.add_argument("--requests", type=int, default=200, help="requests at one in flight (0: skip)")
    overhead.add_argument("--passthrough", type=int, default=5000, help="requests per pass-through round (0: skip)")
    overhead.add_argument("--rounds", type=int, default=3, help="pass-through rounds; the median is reported")
    overhead.add_argument("--routers", type=int, default=1, help="router processes in the pass-through run")
    overhead.set_defaults(
        module="overhead", call=lambda run, a: run(a.model, a.requests, a.passthrough, a.rounds, a.routers)
    )
    preemption = sub.add_parser("preemption", help="requeue latency and regenerated tokens after SIGTERM/SIGKILL")
    preemption.add_argument("--model", default="builtin:tiny-llama")
    preemption.add_argument("--trials", type=int, default=5)
    preemption.add_argument("--ack-wait", type=float, default=5.0)
    preemption.add_argument("--after-tokens", type=int, default=100)
    preemption.set_defaults(module="preemption", call=lambda run, a: run(a.model, a.trials, a.ack_wait, a.after_tokens))
    pairs = sub.add_parser("cache-pairs", help="semantic cache precision/recall on labelled question pairs")
    pairs.add_argument("--pairs", type=Path, required=True, help='JSON list of {"text_a","text_b","label"}')
    pairs.add_argument("--limit", type=int, default=None)
    pairs.add_argument(
        "--split",
        choices=["held_out", "all"],
        default="held_out",
        help="held_out (default): only pairs the shipped verifier never trained on (see verify.SPLIT_RULE)",
    )
    pairs.add_argument("--target-precision", type=float, default=None)
    pairs.add_argument("--embed-backend", default=None, help="torch, onnx or onnx-int8 (default: the service's)")
    pairs.add_argument("--json", action="store_true", help="print only the JSON object (the default output)")
    pairs.set_defaults(
        module="cache_pairs",
        call=lambda run, a: run(a.pairs, a.limit, a.split, a.target_precision, a.embed_backend),
    )
    traps = sub.add_parser("cache-traps", help="semantic cache on a trap set: per-category hits and served traps")
    traps.add_argument("--pairs", type=Path, required=True, help='JSONL of {"text_a","text_b","label","category"}')
    traps.add_argument("--limit", type=int, default=None)
    traps.add_argument("--compare", action="store_true", help="also run the verifier as shipped before issue 16")
    traps.add_argument("--target-precision", type=float, default=None)
    traps.add_argument("--embed-backend", default=None, help="torch, onnx or onnx-int8 (default: the service's)")
    traps.add_argument("--json", action="store_true", help="print only the JSON object (the default output)")
    traps.set_defaults(
        module="cache_traps",
        call=lambda run, a: run(a.pairs, a.limit, a.compare, a.target_precision, a.embed_backend),
    )
    lookup = sub.add_parser("cache-lookup", help="semantic lookups/s and latency at 10k and 100k entries")
    lookup.add_argument("--entries", default="10000,100000")
    lookup.add_argument("--queries", type=int, default=2000)
    lookup.add_argument("--concurrency", type=int, default=16)
    lookup.add_argument("--embed-backends", default="onnx-int8", help="comma list of torch, onnx, onnx-int8")
    lookup.add_argument("--embed-workers", default="2", help="comma list of embedding workers (model calls at once)")
    lookup.add_argument("--search-threads", default="1", help="comma list of Qdrant Edge search pool sizes")
    lookup.add_argument("--repeats", type=int, default=1, help="alternate every setting this many times (medians)")
    lookup.set_defaults(
        module="cache_lookup",
        call=lambda run, a: run(
            [int(x) for x in a.entries.split(",")],
            a.queries,
            a.concurrency,
            a.embed_backends.split(","),
            [int(x) for x in a.embed_workers.split(",")],
            [int(x) for x in a.search_threads.split(",")],
            a.repeats,
        ),
    )
    replay = sub.add_parser("cache-replay", help="hit rate and wrong hits replaying an FAQ query log (Zipf skew)")
    replay.add_argument("--queries", type=Path, required=True, help="CSV with a text and an intent-label column")
    replay.add_argument("--requests", type=int, default=5000)
    replay.add_argument("--zipf", type=float, default=1.1, help="popularity skew exponent s: P(rank r) ∝ r^-s")
    replay.add_argument("--seed", type=int, default=7)
    replay.add_argument("--text-col", default=None, help="default: text or utterance")
    replay.add_argument(
        "--label-col", default=None, help="default: a known log's answer key (banking77, Bitext), else category/intent"
    )
    replay.add_argument(
        "--intents",
        default="all",
        choices=["all", "dev", "held_out"],
        help="one half of the trap set's intent split (held_out: intents a verifier tuned on dev never saw)",
    )
    replay.set_defaults(
        module="cache_replay",
        call=lambda run, a: run(a.queries, a.requests, a.zipf, a.seed, a.text_col, a.label_col, a.intents),
    )
    importlib.import_module(".workload", __package__).add_parser(sub)  # its options live with it
    importlib.import_module(".replay", __package__).add_parser(sub)  # replay and recording-server
    router_eval = sub.add_parser("router-eval", help="learned router + cascade on labelled outcomes (held-out split)")
    router_eval.add_argument("--data", type=Path, required=True, help="a CSV file or a folder of them")
    router_eval.add_argument("--format", default="routellm", choices=["routellm"])
    router_eval.add_argument("--quality", type=float, default=0.95, help="share of the strong model's accuracy")
    router_eval.add_argument("--price-ratio", type=float, default=10.0, help="strong price / weak price")
    router_eval.add_argument("--seed", type=int, default=0, help="salt of the train/test hash split")
    router_eval.add_argument("--train-share", type=float, default=0.5)
    router_eval.add_argument("--weak", default=None, help="weak model column (default: the less accurate)")
    router_eval.add_argument("--strong", default=None, help="strong model column (default: the more accurate)")
    router_eval.add_argument("--save-router", type=Path, default=None, help="write the trained router artifact")
    router_eval.add_argument("--save-verifier", type=Path, default=None, help="write the trained response verifier")
    router_eval.add_argument("--json", action="store_true", help="print the JSON object (default: a table)")
    router_eval.set_defaults(
        module="router_eval",
        call=lambda run, a: run(
            a.data,
            a.format,
            a.quality,
            a.price_ratio,
            a.seed,
            a.train_share,
            a.weak,
            a.strong,
            a.save_router,
            a.save_verifier,
        ),
        table=True,
    )
    domain = sub.add_parser("router-domain", help="fit where the learned router and verifier know their prompts")
    domain.add_argument("--data", type=Path, required=True, help="a folder laid out like ../shared/data")
    domain.add_argument("--out", type=Path, default=None, help="write router_domain.npz and verifier_domain.npz here")
    domain.add_argument("--mmlu-sample", type=int, default=3000, help="MMLU training prompts to fit on (seeded)")
    domain.add_argument("--coverage", type=float, default=0.97, help="out-of-fold share of training prompts known")
    domain.add_argument("--check-sample", type=int, default=500, help="prompts per held-out/FAQ set checked")
    domain.set_defaults(
        module="router_domain", call=lambda run, a: run(a.data, a.out, a.mmlu_sample, a.coverage, a.check_sample)
    )
    cascade = sub.add_parser("router-cascade", help="the cascade's operating point for the shipped router (GSM8K)")
    cascade.add_argument("--data", type=Path, required=True, help="a folder laid out like ../shared/data")
    cascade.add_argument("--quality", type=float, default=0.95, help="share of the strong model's accuracy to keep")
    cascade.add_argument("--price-ratio", type=float, default=10.0, help="strong price / weak price")
    cascade.add_argument("--out", type=Path, default=None, help="write router.npz and verifier.npz here")
    cascade.set_defaults(module="router_cascade", call=lambda run, a: run(a.data, a.quality, a.price_ratio, a.out))
    ttft = sub.add_parser("ttft", help="time to first token and token gaps: gateway SSE vs the engine directly")
    ttft.add_argument("--model", default="builtin:tiny-llama")
    ttft.add_argument("--levels", default="1,16", help="streams at once")
    ttft.add_argument("--rounds", type=int, default=6, help="alternating rounds per path and level")
    ttft.add_argument("--max-tokens", type=int, default=64)
    ttft.add_argument("--with-cache", action="store_true", help="semantic lookup on the way (default: cache bypass)")
    ttft.add_argument(
        "--processes", action="store_true", help="gateway, cache and router in processes of their own (as deployed)"
    )
    ttft.add_argument(
        "--hops", action="store_true", help="trace the services: when each consumer took a request (adds overhead)"
    )
    ttft.add_argument(
        "--spread",
        type=float,
        default=0.0,
        metavar="S",
        help="chats start at random within S seconds and ask 3 questions each (default 0: every round a burst)",
    )
    ttft.add_argument(
        "--engine-core",
        action="store_true",
        help="the engine's model threads get a core of their own, as a GPU's compute is its own (CPU-only machines)",
    )
    ttft.set_defaults(
        module="ttft",
        call=lambda run, a: run(a.model, _ttft_options(a)),
    )
    affinity = sub.add_parser("affinity", help="prefix-cache reuse with worker-level affinity on vs off, 2 workers")
    affinity.add_argument("--model", default="builtin:tiny-llama", help="what both worker processes serve")
    affinity.add_argument("--prefixes", type=int, default=16, help="distinct long system prompts")
    affinity.add_argument("--per-prefix", type=int, default=4, help="questions asked under each")
    affinity.add_argument("--prefix-words", type=int, default=300, help="words per system prompt (~1,450 tokens)")
    affinity.add_argument("--concurrency", type=int, default=4)
    affinity.add_argument("--repeats", type=int, default=2, help="on/off alternations; medians are reported")
    affinity.set_defaults(
        module="affinity",
        call=lambda run, a: run(a.model, a.prefixes, a.per_prefix, a.prefix_words, a.concurrency, a.repeats),
    )
    wait = sub.add_parser("result-wait", help="one result's wait: an ordered consumer per wait vs the shared waiter")
    wait.add_argument("--waits", type=int, default=100, help="waits per way per round")
    wait.add_argument("--repeats", type=int, default=6, help="rounds, the two ways alternated")
    wait.set_defaults(module="result_wait", call=lambda run, a: run(a.waits, a.repeats))
    billing = sub.add_parser("billing", help="usage events/s into the ledger (SQLite vs PostgreSQL), report latency")
    billing.add_argument("--events", type=int, default=5000, help="usage events per round")
    billing.add_argument("--repeats", type=int, default=3, help="rounds per configuration; medians are reported")
    billing.add_argument("--json", action="store_true", help="print only the JSON object (the default output)")
    billing.set_defaults(module="billing", call=lambda run, a: run(a.events, a.repeats))
    failover = sub.add_parser("cluster-failover", help="SIGKILL stream leaders of a 3-node cluster under load")
    failover.add_argument("--requests", type=int, default=3000)
    failover.add_argument("--window", type=int, default=500, help="requests kept in flight")
    failover.set_defaults(module="cluster_failover", call=lambda run, a: run(a.requests, a.window))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if hasattr(args, "direct"):  # a server, not a benchmark: it runs until Ctrl-C and prints no JSON
        return int(args.direct(args))
    # Imported on demand: each benchmark pulls in different heavy parts (vLLM, torch, the embedding model).
    run = importlib.import_module(f".{args.module}", __package__).run
    out = asyncio.run(args.call(run, args))
    out["machine"] = _machine()
    out["command"] = "costwise-bench " + " ".join(sys.argv[1:] if argv is None else argv)
    if getattr(args, "table", False) and not args.json:
        print(importlib.import_module(f".{args.module}", __package__).render(out))
    else:
        print(json.dumps(out, indent=2))
    return int(out.get("exit_code", 0))  # a replay that lost or duplicated a request fails


if __name__ == "__main__":
    sys.exit(main())
