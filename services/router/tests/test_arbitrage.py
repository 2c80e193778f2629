"""Backend choice rules, on the pure function (no server needed: its inputs are the catalog and a load reading)."""

from __future__ import annotations

from costwise.catalog import Catalog, Provider, Tier, WorkerPool
from costwise.contracts import ChatMessage, ErrorCode, InferenceRequest, SamplingParams
from costwise.router._arbitrage import Choice, Refusal, choose
from costwise.router._capacity import Load

NOW_MS = 1_000_000

CATALOG = Catalog(
    tiers=[Tier(name="small", backends=["spot", "on-demand", "api"])],
    backends=[
        WorkerPool(
            name="spot",
            model="m",
            spot=True,
            gpu_usd_per_hour=0.3,
            prefill_tokens_per_s=5000,
            decode_tokens_per_s=800,
            max_in_flight=4,
        ),
        WorkerPool(
            name="on-demand",
            model="m",
            gpu_usd_per_hour=0.9,
            prefill_tokens_per_s=5000,
            decode_tokens_per_s=800,
            max_in_flight=4,
        ),
        Provider(name="api", model="m", base_url="http://x", usd_per_m_input=5, usd_per_m_output=15, tokens_per_s=100),
    ],
    baseline="on-demand",
)
LIVE = Load(present=True, idle_pulls=1)


def _req(**kw: object) -> InferenceRequest:
    return InferenceRequest(
        request_id="r",
        tenant="t",
        messages=[ChatMessage(role="user", content="hi")],
        sampling=SamplingParams(max_tokens=64),
        **kw,  # type: ignore[arg-type]
    )


def _pick(
    req: InferenceRequest, loads: dict[str, Load] | None = None, down: set[str] = frozenset(), **kw: object
) -> Choice | Refusal:  # type: ignore[assignment]
    loads = loads or {}
    return choose(
        CATALOG.tiers[0],
        CATALOG.backend,
        req,
        load=lambda n: loads.get(n, LIVE),
        down=lambda n: n in down,
        now_ms=NOW_MS,
        **kw,  # type: ignore[arg-type]
    )


def _name(choice: Choice | Refusal) -> str:
    assert isinstance(choice, Choice), choice
    return choice.backend.name


def test_cheapest_live_backend_wins() -> None:
    assert _name(_pick(_req())) == "spot"


def test_saturated_spot_overflows_to_on_demand_then_provider() -> None:
    full = Load(present=True, backlog=4, in_flight=4)
    assert _name(_pick(_req(), {"spot": full})) == "on-demand"
    assert _name(_pick(_req(), {"spot": full, "on-demand": full})) == "api"


def test_down_backend_is_skipped_but_used_when_nothing_else_is_left() -> None:
    assert _name(_pick(_req(), down={"spot"})) == "on-demand"
    assert _name(_pick(_req(), down={"spot", "on-demand", "api"})) == "spot"


def test_batch_requests_wait_in_the_cheap_queue() -> None:
    full = Load(present=True, backlog=40, in_flight=4)
    assert _name(_pick(_req(priority="batch"), {"spot": full})) == "spot"


def test_batch_requests_leave_the_cheap_queue_when_its_wait_would_miss_their_deadline() -> None:
    # 64 tokens at 4/800 s per token ≈ 0.32 s per job; a backlog of 40 on 4 slots ≈ 3.5 s before it is done.
    full = Load(present=True, backlog=40, in_flight=4)
    roomy, tight = NOW_MS + 10_000, NOW_MS + 2_000
    assert _name(_pick(_req(priority="batch", deadline_ms=roomy), {"spot": full})) == "spot"
    assert _name(_pick(_req(priority="batch", deadline_ms=tight), {"spot": full})) == "on-demand"


def test_prefix_affinity_beats_price_while_the_preferred_backend_has_room() -> None:
    assert _name(_pick(_req(), prefer="on-demand")) == "on-demand"
    full = Load(present=True, backlog=4, in_flight=4)
    assert _name(_pick(_req(), {"on-demand": full}, prefer="on-demand")) == "spot"


def test_tried_backends_are_excluded_and_exhaustion_is_typed() -> None:
    assert _name(_pick(_req(), exclude={"spot"})) == "on-demand"
    refusal = _pick(_req(), exclude={"spot", "on-demand", "api"})
    assert isinstance(refusal, Refusal) and refusal.code == ErrorCode.NO_BACKEND_AVAILABLE


def test_deadline_too_close_for_any_backend_is_a_typed_refusal() -> None:
    refusal = _pick(_req(deadline_ms=NOW_MS + 10))
    assert isinstance(refusal, Refusal) and refusal.code == ErrorCode.DEADLINE_EXCEEDED
    assert "spot" in refusal.reason


def test_deadline_skips_a_backend_with_a_long_queue() -> None:
    # 64 tokens at 800/4 = 200 tokens/s per stream is 0.32 s; behind 40 queued jobs it is 3.5 s.
    busy = Load(present=True, backlog=40, in_flight=4)
    assert _name(_pick(_req(deadline_ms=NOW_MS + 2_000), {"spot": busy})) == "on-demand"


def test_cost_ceiling_filters_dear_backends_and_counts_what_was_spent() -> None:
    # 64 output tokens: ~$0.0000067 on spot, ~$0.00002 on demand.
    assert _name(_pick(_req(cost_ceiling_usd=1e-5))) == "spot"
    refusal = _pick(_req(cost_ceiling_usd=1e-5), exclude={"spot"})
    assert isinstance(refusal, Refusal) and refusal.code == ErrorCode.COST_CEILING_EXCEEDED
    refusal = _pick(_req(cost_ceiling_usd=1e-9))
    assert isinstance(refusal, Refusal) and refusal.code == ErrorCode.COST_CEILING_EXCEEDED
    refusal = _pick(_req(cost_ceiling_usd=0.01), spent_usd=0.01)
    assert isinstance(refusal, Refusal) and refusal.code == ErrorCode.COST_CEILING_EXCEEDED


def test_an_idle_pool_is_not_timed_as_if_its_batch_were_full() -> None:
    # 64 tokens at 800/s alone is 0.08 s; sharing a full batch of 4 it is 0.32 s.
    assert _name(_pick(_req(deadline_ms=NOW_MS + 200))) == "spot"
    full = Load(present=True, in_flight=4, idle_pulls=0)
    refusal = _pick(_req(deadline_ms=NOW_MS + 200), {"spot": full, "on-demand": full}, exclude={"api"})
    assert isinstance(refusal, Refusal) and refusal.code == ErrorCode.DEADLINE_EXCEEDED
