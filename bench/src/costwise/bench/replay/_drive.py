"""Publishing a workload through the queue at its arrival times, like any client, and collecting what comes back:
every result (subscribed before the first publish) and when it came."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from nats.aio.client import Client as Nats
from nats.aio.msg import Msg
from nats.js.api import DeliverPolicy
from tqdm import tqdm

from costwise.client import Client
from costwise.contracts import (
    DecodeError,
    InferenceRequest,
    Result,
    SamplingParams,
    decode,
    now_ms,
    subjects,
)

from ._lines import BadLine, Line

__all__ = ["Observed", "drive", "line_of", "request_id"]


def request_id(digest: str, run: str, number: int) -> str:
    """``rp-<file digest>-<run>-<line number>``: unique per run (the queue deduplicates ids for ten minutes)."""
    return f"rp-{digest}-{run}-{number}"


def line_of(rid: str, digest: str) -> int | None:
    """The line number a request id of a replay of the same file names (any run); ``None`` for any other id."""
    parts = rid.split("-")
    if len(parts) != 4 or parts[0] != "rp" or parts[1] != digest or not parts[3].isdigit():
        return None
    return int(parts[3])


@dataclass
class Observed:
    """What one replay saw, keyed by request id."""

    sent: dict[str, Line] = field(default_factory=dict)
    results: dict[str, Result] = field(default_factory=dict)
    latency_s: dict[str, float] = field(default_factory=dict)
    refused: list[BadLine] = field(default_factory=list)
    """Lines the contract refused at publish (too long, …): reported with their numbers, never sent."""
    stored: dict[str, int] = field(default_factory=dict)
    """Results the results stream holds per request id (two: a duplicate)."""
    publish_lag_s: list[float] = field(default_factory=list)
    started_ms: int = 0


def _request(item: Line, rid: str) -> InferenceRequest:
    line = item.line
    sampling: dict[str, Any] = {"max_tokens": line.max_tokens, "temperature": line.temperature}
    sampling |= {"top_p": line.top_p, "seed": line.seed}
    return InferenceRequest(
        request_id=rid,
        tenant=item.tenant,
        messages=item.messages,
        model=line.model or "auto",
        sampling=SamplingParams(**{k: v for k, v in sampling.items() if v is not None}),
        created_ms=now_ms(),
    )


class _Collector:
    """Results of this replay's requests, as they land."""

    def __init__(self, observed: Observed, bar: tqdm[Any]) -> None:
        self.observed, self.bar = observed, bar
        self.sent_at: dict[str, float] = {}
        self.landed = asyncio.Event()
        self.subs: list[Any] = []

    async def open(self, nc: Nats) -> None:
        js = nc.jetstream()
        # The stream's stored results only (a deduplicated republish never shows here), from now on.
        results = subjects.RESULTS.subjects[0]
        self.subs.append(
            await js.subscribe(results, ordered_consumer=True, deliver_policy=DeliverPolicy.NEW, cb=self.on_result)
        )

    async def on_result(self, msg: Msg) -> None:
        rid = msg.subject.rsplit(".", 1)[-1]
        if rid not in self.sent_at or rid in self.observed.results:
            return
        with contextlib.suppress(DecodeError):
            self.observed.results[rid] = decode(msg.data, Result)
            self.observed.latency_s[rid] = time.monotonic() - self.sent_at[rid]
            self.bar.update()
            self.landed.set()

    async def wait(self, timeout: float) -> None:
        """Until every sent request has its result, or ``timeout`` seconds have passed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while len(self.observed.results) < len(self.observed.sent):
            self.landed.clear()
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.landed.wait(), left)

    async def close(self) -> None:
        for sub in self.subs:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()


async def drive(
    nc: Nats, lines: list[Line], offsets: list[float], ids: list[str], *, timeout: float, progress: bool
) -> Observed:
    """Publish ``lines`` at ``offsets`` (seconds from now), then wait up to ``timeout`` seconds after the last
    publish for their results."""
    observed = Observed(started_ms=now_ms())
    with tqdm(total=len(lines), desc="replay", unit="req", file=sys.stderr, disable=not progress) as bar:
        collector = _Collector(observed, bar)
        await collector.open(nc)
        try:
            await _publish(Client(nc), lines, offsets, ids, collector)
            await collector.wait(timeout)
        finally:
            await collector.close()
    observed.stored = await _stored(nc, observed)
    await _stored_but_unseen(nc, observed)
    return observed


async def _publish(client: Client, lines: list[Line], offsets: list[float], ids: list[str], into: _Collector) -> None:
    loop = asyncio.get_running_loop()
    start = loop.time()
    for item, due, rid in zip(lines, offsets, ids, strict=True):
        delay = start + due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        into.observed.publish_lag_s.append(max(0.0, -delay))
        try:
            request = _request(item, rid)
            into.sent_at[rid] = time.monotonic()
            await client.publish(request)  # checked against the contract first: ValueError if it breaks it
        except ValueError as exc:
            into.sent_at.pop(rid, None)
            into.observed.refused.append(BadLine(item.number, str(exc)))
            into.bar.update()
            continue
        into.observed.sent[rid] = item


async def _stored(nc: Nats, observed: Observed) -> dict[str, int]:
    """How many results the stream holds for each request (the authority on duplicates), per tenant."""
    js, counts = nc.jetstream(), {}
    for tenant in sorted({item.tenant for item in observed.sent.values()}):
        info = await js.stream_info(subjects.RESULTS.name, subjects_filter=subjects.tenant_results(tenant))
        for subject, n in (info.state.subjects or {}).items():
            rid = subject.rsplit(".", 1)[-1]
            if rid in observed.sent:
                counts[rid] = n
    return counts


async def _stored_but_unseen(nc: Nats, observed: Observed) -> None:
    """A result the stream holds that the subscription did not hand over (a reconnect in between) still counts."""
    client = Client(nc)
    for rid in [r for r in observed.stored if r not in observed.results]:
        found = await client.stored_result(observed.sent[rid].tenant, rid)
        if found is not None:
            observed.results[rid] = found


def duplicates(observed: Observed) -> int:
    return sum(n - 1 for n in observed.stored.values() if n > 1)


def lost(observed: Observed) -> int:
    """Sent requests with no result by the end of the wait."""
    return sum(1 for rid in observed.sent if rid not in observed.results)


def error_codes(observed: Observed) -> dict[str, int]:
    codes = Counter(str(r.error.code) for r in observed.results.values() if r.error is not None)
    return dict(sorted(codes.items()))


def error_samples(observed: Observed, per_code: int = 3) -> dict[str, list[dict[str, str]]]:
    """The first error results of each code, with their messages: what a count alone cannot explain."""
    samples: dict[str, list[dict[str, str]]] = {}
    for rid, result in sorted(observed.results.items()):
        if result.error is not None and len(found := samples.setdefault(str(result.error.code), [])) < per_code:
            found.append({"request_id": rid, "message": result.error.message[:500]})
    return samples
