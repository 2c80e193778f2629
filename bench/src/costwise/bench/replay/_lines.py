"""The replay's workload: every line with its number, the bad ones reported, and when each is due."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import msgspec
import numpy as np
from msgspec import Meta

from costwise.bench.workload import WorkloadLine
from costwise.contracts import ChatMessage

__all__ = ["MAX_LINE_BYTES", "BadLine", "Line", "ReplayLine", "Workload", "load", "schedule"]

MAX_LINE_BYTES = 1 << 20
"""A workload line larger than this is reported and skipped (a request's messages are capped well below it)."""
DEFAULT_TENANT = "replay"


class ReplayLine(WorkloadLine):
    """A workload line as the replay reads it: :class:`WorkloadLine` plus the ``model`` it asks for."""

    model: Annotated[str, Meta(min_length=1, max_length=128)] | None = None
    """What the request names as its model (a tier, an alias or a concrete model); ``auto`` when absent."""


@dataclass(frozen=True)
class Line:
    """One good line and where it stands in the file (1-based, as an editor shows it)."""

    number: int
    line: ReplayLine

    @property
    def tenant(self) -> str:
        return self.line.tenant or DEFAULT_TENANT

    @property
    def messages(self) -> list[ChatMessage]:
        if self.line.messages is not None:
            return self.line.messages
        return [ChatMessage(role="user", content=self.line.prompt or "")]

    @property
    def key(self) -> str | None:
        """Two lines with equal keys may share one answer (``answer_key``, else ``label``)."""
        return self.line.answer_key if self.line.answer_key is not None else self.line.label

    @property
    def text(self) -> tuple[tuple[str, str], ...]:
        """The conversation as compared when neither line has a key."""
        return tuple((m.role, m.content) for m in self.messages)


@dataclass(frozen=True)
class BadLine:
    number: int
    reason: str


@dataclass(frozen=True)
class Workload:
    lines: list[Line]
    bad: list[BadLine]
    digest: str
    """A short hash of the file: request ids carry it, so a cache hit on an earlier replay of the same file
    still maps back to the line that produced the answer."""


def load(path: Path, *, limit: int | None = None) -> Workload:
    """Every decodable line (the first ``limit`` of them) and every line that is not, with its number."""
    decoder = msgspec.json.Decoder(ReplayLine)
    lines: list[Line] = []
    bad: list[BadLine] = []
    digest = hashlib.blake2b(digest_size=4)
    with path.open("rb") as fh:
        for number, raw in enumerate(fh, start=1):
            digest.update(raw)
            if limit is not None and len(lines) >= limit:
                continue  # the rest only feeds the digest
            if not raw.strip():
                continue
            if len(raw) > MAX_LINE_BYTES:
                bad.append(BadLine(number, f"line is {len(raw):,} bytes; the limit is {MAX_LINE_BYTES:,}"))
                continue
            try:
                lines.append(Line(number, decoder.decode(raw)))
            except msgspec.DecodeError as exc:  # ValidationError included (and __post_init__'s ValueError)
                bad.append(BadLine(number, str(exc)))
    return Workload(lines, bad, digest.hexdigest())


def schedule(lines: list[Line], *, speed: float | None, rate: float | None, seed: int) -> list[float]:
    """Seconds from the start at which each line is published: the file's ``arrival`` ÷ ``speed``, or a fresh
    Poisson process at ``rate`` (seeded). A line without ``arrival`` goes with the line before it."""
    if rate is not None:
        gaps = np.random.default_rng(seed).exponential(1.0 / rate, size=len(lines))
        return [float(t) for t in np.cumsum(gaps)]
    offsets, last = [], 0.0
    for item in lines:
        last = item.line.arrival if item.line.arrival is not None else last
        offsets.append(last / (speed or 1.0))
    return offsets
