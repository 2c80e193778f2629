"""What the replay served, judged against the workload: hit rates, wrong cache hits, the strong model's share,
quality (issue 13's definition), latency per source, and which cascade checks could run. Pure: no I/O."""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from costwise.catalog import Catalog
from costwise.contracts import Result

from ._drive import Observed, line_of
from ._lines import Line

__all__ = ["Judge", "cascade_checks", "latency", "served_tier"]

_CACHE = ("cache_exact", "cache_semantic")
QUALITY_GOAL = 0.95
"""Issue 13's bar: the stack's accuracy at least this share of the all-strong baseline's."""
_CHECKS = re.compile(r"checks: ([a-z_]+(?:\+[a-z_]+)*)")


def category(result: Result) -> str:
    """``cache``, ``escalated`` (the small answer was judged and the large tier answered), ``engine`` (a model
    answered on the first tier it was sent to), or ``error``."""
    if result.status != "ok":
        return "error"
    if result.source in _CACHE:
        return "cache"
    return "escalated" if any(a.outcome == "escalated" for a in result.route) else "engine"


def served_tier(result: Result, catalog: Catalog) -> str | None:
    """The tier whose model produced a model answer (its last attempt's)."""
    if result.route and result.route[-1].tier:
        return result.route[-1].tier
    try:
        return catalog.tier_of(result.pool or "").name
    except KeyError:
        return None


@dataclass
class Judge:
    """The accounting of one replay: ``by_number`` holds every good line of the file, ``digest`` its hash."""

    catalog: Catalog
    observed: Observed
    by_number: dict[int, Line]
    digest: str

    @property
    def strong(self) -> str:
        return self.catalog.tiers[-1].name

    def cached_line(self, result: Result) -> Line | None:
        """The line whose request produced the answer a cache hit served (this replay or an earlier one of the
        same file)."""
        number = line_of(result.cache.cached_request_id, self.digest) if result.cache else None
        return self.by_number.get(number) if number is not None else None

    def wrong_hit(self, item: Line, result: Result) -> bool | None:
        """A hit is wrong when the cached request's key differs from the query's; lines with neither key are
        judged by their exact text. ``None``: the cached request is no line of this file."""
        cached = self.cached_line(result)
        if cached is None:
            return None
        if item.key is None and cached.key is None:
            return item.text != cached.text
        return item.key != cached.key

    def tier_of(self, result: Result) -> str | None:
        """The tier whose answer ``result`` carries; for a hit, the tier that answered the cached request."""
        if result.source not in _CACHE:
            return served_tier(result, self.catalog)
        cached_id = result.cache.cached_request_id if result.cache else ""
        original = self.observed.results.get(cached_id)
        return served_tier(original, self.catalog) if original is not None else self._tier_of_model(result.model)

    def _tier_of_model(self, model: str | None) -> str | None:
        for backend in self.catalog.backends:
            if backend.model == model:
                return self.catalog.tier_of(backend.name).name
        return None

    def served_correct(self, item: Line, result: Result | None) -> bool | None:
        """Whether what was served is right (``correct`` of the tier that answered; a wrong hit, an error or no
        answer at all is not); ``None`` when the line cannot say."""
        correct = item.line.correct or {}
        if result is None or result.status != "ok":
            return False
        if result.source in _CACHE and self.wrong_hit(item, result):
            return False
        tier = self.tier_of(result)
        return correct.get(tier) if tier is not None else None

    def quality(self) -> dict[str, Any]:
        served, baseline = self._judged(self.observed.sent)
        served_acc = sum(served) / len(served) if served else None
        baseline_acc = sum(baseline) / len(baseline) if baseline else None
        ratio = served_acc / baseline_acc if served_acc is not None and baseline_acc else None
        return {
            "quality_ratio": _round(ratio),
            "quality": {
                "lines_judged": len(served),
                "served_accuracy": _round(served_acc),
                "baseline_accuracy": _round(baseline_acc),
                "baseline": f"every judged line answered by the {self.strong!r} tier",
            },
        }

    def _judged(self, sent: dict[str, Line]) -> tuple[list[bool], list[bool]]:
        """Over the lines of ``sent`` that carry the strong tier's ``correct``: was what the stack served right,
        and was the strong tier's answer right."""
        served, baseline = [], []
        for rid, item in sent.items():
            correct = item.line.correct
            if not correct or self.strong not in correct:
                continue
            ok = self.served_correct(item, self.observed.results.get(rid))
            if ok is not None:
                served.append(ok)
                baseline.append(correct[self.strong])
        return served, baseline

    def by_source(self) -> dict[str, Any]:
        """Per workload ``source`` (lines without one: ``-``): requests, cache hits, model answers that called the
        strong tier (straight or escalated) and the quality ratio over its judged lines: where the strong calls and
        the quality loss of a mix come from."""
        groups: dict[str, dict[str, Line]] = {}
        for rid, item in self.observed.sent.items():
            groups.setdefault(item.line.source or "-", {})[rid] = item
        out: dict[str, Any] = {}
        for source, sent in sorted(groups.items()):
            results = [r for rid in sent if (r := self.observed.results.get(rid)) is not None and r.status == "ok"]
            answered = [r for r in results if r.source not in _CACHE]
            strong = sum(any(a.tier == self.strong for a in r.route) for r in answered)
            served, baseline = self._judged(sent)
            ratio = sum(served) / sum(baseline) if baseline and sum(baseline) else None
            out[source] = {
                "requests": len(sent),
                "cache_hits": len(results) - len(answered),
                "strong_calls": strong,
                "strong_call_share": _round(strong / len(sent)),
                "quality_ratio": _round(ratio),
                "lines_judged": len(served),
            }
        return {"by_source": out}

    def by_router_split(self) -> dict[str, Any]:
        """The quality ratio apart for the judged lines whose prompt is in the shipped learned router's training
        split (``train_mask``: the RouteLLM prompts its heads were fit on, scored in-sample) and for the rest
        (``held_out``: prompts it never saw, as a user's own would be). A workload drawing both halves reports an
        average of the two; the held-out figure is the one that carries to new prompts."""
        from costwise.router.learned import train_mask  # the router's own split rule, not a copy of it

        judged = {rid: item for rid, item in self.observed.sent.items() if item.line.correct}
        rids = list(judged)
        mask = train_mask([judged[rid].messages[-1].content for rid in rids]) if rids else []
        out: dict[str, Any] = {}
        for name, keep in (("train", True), ("held_out", False)):
            sent = {rid: judged[rid] for rid, inside in zip(rids, mask, strict=True) if bool(inside) == keep}
            served, baseline = self._judged(sent)
            ratio = sum(served) / sum(baseline) if baseline and sum(baseline) else None
            out[name] = {"lines_judged": len(served), "quality_ratio": _round(ratio)}
        return {"quality_by_router_split": out}

    def cache(self) -> dict[str, Any]:
        results = self.observed.results
        sources = Counter(r.source for r in results.values() if r.status == "ok")
        verdicts = Counter(
            self.wrong_hit(self.observed.sent[rid], r) for rid, r in results.items() if r.source in _CACHE
        )
        answered = max(1, len(results))
        return {
            "cache_hit_rate": {
                "exact": _round(sources["cache_exact"] / answered),
                "semantic": _round(sources["cache_semantic"] / answered),
            },
            "cache_hits": {"exact": sources["cache_exact"], "semantic": sources["cache_semantic"]},
            "wrong_cache_hits": verdicts[True],
            "cache_hits_unjudged": verdicts[None],
        }

    def strong_calls_spent(self, goal: float = QUALITY_GOAL) -> dict[str, Any]:
        """How well the strong calls bought quality, over the judged lines a model answered: ``precision`` is the
        share of their strong calls that went to a line the cheapest tier gets wrong and the strong tier right
        (every other strong call buys nothing), and ``needed`` the fewest strong calls that reach ``goal`` on the
        judged lines had each gone to such a line (a router that knew every outcome; each judged line counted
        as its own call). The gap between the two is what routing can still win."""
        weak = self.catalog.tiers[0].name
        called = bought = 0
        for rid, item in self.observed.sent.items():
            correct, result = item.line.correct or {}, self.observed.results.get(rid)
            if weak not in correct or self.strong not in correct or result is None or result.source in _CACHE:
                continue
            if result.status == "ok" and any(a.tier == self.strong for a in result.route):
                called += 1
                bought += not correct[weak] and correct[self.strong]
        judged = [
            c for item in self.observed.sent.values() if weak in (c := item.line.correct or {}) and self.strong in c
        ]
        short = goal * sum(c[self.strong] for c in judged) - sum(c[weak] for c in judged)
        return {
            "strong_calls_spent": {
                "judged_calls": called,
                "bought_quality": bought,
                "precision": _round(bought / called) if called else None,
                "needed_for_goal": max(0, math.ceil(round(short, 9))),
                "goal": goal,
            }
        }

    def routing(self) -> dict[str, Any]:
        results = [r for r in self.observed.results.values() if r.status == "ok" and r.source not in _CACHE]
        strong = sum(any(a.tier == self.strong for a in r.route) for r in results)
        paths = Counter("→".join(a.tier or a.backend for a in r.route) for r in results)
        return {
            "strong_call_share": _round(strong / max(1, len(self.observed.results))),
            "strong_calls": strong,
            "routes": dict(paths.most_common()),
        }


def latency(observed: Observed) -> dict[str, dict[str, float | int]]:
    """p50/p99 (ms, from just before the publish to the result's arrival) per :func:`category`."""
    by: dict[str, list[float]] = {}
    for rid, result in observed.results.items():
        if rid in observed.latency_s:
            by.setdefault(category(result), []).append(observed.latency_s[rid] * 1000)
    out: dict[str, dict[str, float | int]] = {}
    for name in ("cache", "engine", "escalated", "error"):
        values = by.get(name, [])
        if values:
            p50, p99 = np.percentile(values, [50, 99])
            out[name] = {"n": len(values), "p50_ms": round(float(p50), 1), "p99_ms": round(float(p99), 1)}
    return out


def _checks(reason: str) -> tuple[str, ...]:
    """The checks the router says a verdict ran (``checks: rules+logprobs+verifier`` in the attempt's reason)."""
    found = _CHECKS.search(reason)
    return tuple(found.group(1).split("+")) if found else ("unrecorded",)


def cascade_checks(observed: Observed) -> dict[str, Any]:
    """Which of the router's checks judged the small tier's answers, as each verdict recorded them (recordings
    carry no token logprobs, so ``logprobs`` runs only on answers that had them; the verifier only on prompts it
    was trained for), and why answers were escalated."""
    judged = [a for r in observed.results.values() for a in r.route if a.stage == "cascade_small"]
    judged = [a for a in judged if a.outcome != "failed"]
    ran = Counter(check for a in judged for check in _checks(a.reason))
    reasons = Counter(a.reason.split(" ", 1)[0] for a in judged if a.outcome == "escalated")
    return {
        "small_answers_judged": len(judged),
        "ran": dict(sorted(ran.items())),
        "no_logprobs": len(judged) - ran["logprobs"],
        "escalated_by_reason": dict(reasons.most_common()),
    }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)
