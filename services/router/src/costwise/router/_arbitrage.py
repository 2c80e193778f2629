"""Provider arbitrage: the cheapest backend of a tier that can still meet the request's deadline and ceiling.

Pure functions of the catalog, the request and the last capacity reading, so every rule is unit-testable.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from decimal import Decimal

from costwise.catalog import Backend, Tier, WorkerPool, estimate_usage
from costwise.contracts import ErrorCode, InferenceRequest, Usage
from costwise.messaging import Refusal

from ._capacity import Load

__all__ = ["Choice", "choose"]


@dataclass(frozen=True, slots=True)
class Choice:
    backend: Backend
    estimated_cost_usd: Decimal
    """The request's worst case on this backend: what ranking compares and the budget admission reserves."""
    estimated_s: float


def _slots(backend: Backend) -> int:
    return backend.max_in_flight if isinstance(backend, WorkerPool) else backend.concurrency


def estimated_seconds(backend: Backend, usage: Usage, load: Load) -> float:
    """Queue wait plus generation time, from the backend's measured speed, its occupancy and its backlog."""
    if isinstance(backend, WorkerPool):
        # decode_tokens_per_s is a full batch's: a new stream shares it with the ones already running. Assuming
        # a full batch always (a max_in_flight-th each) made an idle pool look 16x slower than it is, so a 30 s
        # deadline refused a 256-token answer that takes a few seconds.
        sharing = min(backend.max_in_flight, load.in_flight + 1)
        one_job = usage.prompt_tokens / backend.prefill_tokens_per_s + usage.completion_tokens * (
            sharing / backend.decode_tokens_per_s
        )
    else:
        one_job = usage.completion_tokens / backend.tokens_per_s
    return one_job * (1 + load.backlog / _slots(backend))


def choose(
    tier: Tier,
    backends: Callable[[str], Backend],
    req: InferenceRequest,
    *,
    load: Callable[[str], Load],
    down: Callable[[str], bool],
    now_ms: int,
    spent_usd: float = 0.0,
    exclude: Collection[str] = (),
    prefer: str | None = None,
) -> Choice | Refusal:
    """The backend to send ``req`` to, or why none will do.

    Order: live before down, unsaturated before saturated (overflow), the backend that last served this
    prefix first (its prefix cache is warm), then price. Batch requests wait for cheap capacity, so they
    ignore saturation: their queue is the waiting room.
    """
    usage = estimate_usage(req)
    budget = None if req.cost_ceiling_usd is None else req.cost_ceiling_usd - spent_usd
    left_s = None if req.deadline_ms is None else (req.deadline_ms - now_ms) / 1000
    ranked, too_slow, too_dear = [], [], []
    for name in tier.backends:
        if name in exclude:
            continue
        backend, state = backends(name), load(name)
        choice = Choice(backend, backend.price.cost(usage), estimated_seconds(backend, usage, state))
        if budget is not None and choice.estimated_cost_usd > budget:
            too_dear.append(f"{name} ~${choice.estimated_cost_usd:.6f}")
            continue
        if left_s is not None and choice.estimated_s > left_s:
            too_slow.append(f"{name} ~{choice.estimated_s:.1f}s")
            continue
        saturated = state.backlog >= _slots(backend) and req.priority != "batch"
        ranked.append(((down(name), saturated, name != prefer, choice.estimated_cost_usd), choice))
    if ranked:
        return min(ranked, key=lambda pair: pair[0])[1]
    return _refusal(tier, req, left_s, budget, too_slow, too_dear)


def _refusal(
    tier: Tier, req: InferenceRequest, left_s: float | None, budget: float | None, slow: list[str], dear: list[str]
) -> Refusal:
    if slow:
        return Refusal(
            ErrorCode.DEADLINE_EXCEEDED,
            f"no backend of tier {tier.name!r} can answer in the {max(left_s or 0, 0):.1f}s left: {', '.join(slow)}",
        )
    if dear:
        return Refusal(
            ErrorCode.COST_CEILING_EXCEEDED,
            f"every backend of tier {tier.name!r} would exceed the ${budget:.6f} left under the cost ceiling: "
            + ", ".join(dear),
        )
    return Refusal(ErrorCode.NO_BACKEND_AVAILABLE, f"every backend of tier {tier.name!r} has been tried")
