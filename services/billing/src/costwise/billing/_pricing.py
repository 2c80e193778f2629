"""The cost model: every usage event and result becomes a ledger line with its counterfactual prices.

Each line carries, besides what it cost, what the same tokens would have cost one lever at a time:
on demand (no spot), unquantized, on the tier's reference backend, on the baseline backend. Attribution
is then sums and differences of stored integers, so it never depends on today's catalog.
"""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal

import msgspec

from costwise.catalog import Backend, Catalog, Price, WorkerPool
from costwise.contracts import CacheHit, ErrorCode, Result, Usage, UsageEvent

from ._ledger import Line

__all__ = ["NANO", "Pricer", "Unbillable", "nusd"]

NANO = Decimal(1_000_000_000)
_SECONDS_PER_HOUR = Decimal(3600)
_CACHE_SOURCES = ("cache_exact", "cache_semantic")
_NAME_CHARS, _MODEL_CHARS = 64, 256  # the ledger's column sizes (PostgreSQL enforces them)


def _text(value: str | None, limit: int) -> str:
    """Free text from an event, made storable: PostgreSQL rejects NUL and enforces column sizes, and one
    row it refuses would fail its whole batch forever."""
    return (value or "").replace("\x00", "")[:limit]


def nusd(amount: Decimal) -> int:
    """Dollars as integer nano-dollars (banker's rounding, once per line)."""
    return int((amount * NANO).to_integral_value(rounding=ROUND_HALF_EVEN))


class Unbillable(Exception):
    """An event billing cannot put in the ledger; it is dead-lettered with ``code`` and ``reason``."""

    def __init__(self, code: ErrorCode, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def _basis(backend: Backend, price: Price) -> str:
    kind = "spot" if backend.spot else "on demand"
    return f"{backend.name} ({kind}): ${price.usd_per_m_input:.6g}/M in, ${price.usd_per_m_output:.6g}/M out"


class Pricer:
    """Prices events from the catalog (the only price source); a cache hit at the CPU time it measured (or,
    when it carries no measurement, at the configured cost of a hit)."""

    def __init__(
        self,
        catalog: Catalog,
        *,
        exact_hit_usd: Decimal,
        semantic_hit_usd: Decimal,
        tenants: frozenset[str],
        cpu_usd_per_hour: Decimal = Decimal("0.05"),
        semantic_lookup_usd: Decimal = Decimal("0.000000044"),
    ) -> None:
        self.catalog = catalog
        self.hit_usd = {"cache_exact": exact_hit_usd, "cache_semantic": semantic_hit_usd}
        self.lookup_usd = semantic_lookup_usd
        self.tenants = tenants
        self.cpu_usd_per_hour = cpu_usd_per_hour

    def _check_tenant(self, tenant: str) -> None:
        if self.tenants and tenant not in self.tenants:
            raise Unbillable(ErrorCode.UNKNOWN_TENANT, f"tenant {tenant!r} is not one billing accepts")

    def _backend(self, name: str) -> Backend:
        try:
            return self.catalog.backend(name)
        except KeyError:
            known = ", ".join(b.name for b in self.catalog.backends)
            raise Unbillable(
                ErrorCode.UNKNOWN_POOL, f"backend {name!r} is not in the catalog (known: {known})"
            ) from None

    def _tier_reference(self, backend: Backend) -> Backend:
        """The backend a tier is measured by: its first self-hosted pool (else its first backend)."""
        try:
            tier = self.catalog.tier_of(backend.name)
        except KeyError:
            raise Unbillable(ErrorCode.UNPRICED, f"backend {backend.name!r} is in no tier: no price basis") from None
        members = [self.catalog.backend(name) for name in tier.backends]
        return next((b for b in members if isinstance(b, WorkerPool)), members[0])

    def usage(self, event: UsageEvent) -> list[Line]:
        """The ledger lines of one usage event: its attempt, and what re-prefilling after a resume cost (or the
        cache's line: a semantic lookup that served nothing, a hit reported wrong)."""
        if event.kind != "job":
            return [self.cache_event(event)]
        line = self.attempt(event)
        if not event.recomputed_prompt_tokens:
            return [line]
        backend = self.catalog.backend(event.pool)  # attempt() checked it
        refill = Usage(prompt_tokens=event.recomputed_prompt_tokens)
        amount = nusd(backend.price.cost(refill))
        recompute = msgspec.structs.replace(
            line,
            key="|".join(("p", *line.key.split("|")[1:])),
            kind="recompute",
            tokens_in=refill.prompt_tokens,
            tokens_out=0,
            tokens_cached=0,
            engine_us=0,
            basis=f"re-prefill after resume: {line.basis}",
            amount_nusd=amount,
            on_demand_nusd=amount,
            unquantized_nusd=amount,
            tier_nusd=amount,
            baseline_nusd=0,  # the baseline never resumes
        )
        return [line, recompute]

    def attempt(self, event: UsageEvent) -> Line:
        """The ledger line of one job attempt."""
        self._check_tenant(event.tenant)
        backend = self._backend(event.pool)
        reference = self._tier_reference(backend)
        try:
            price, usage = backend.price, event.usage
            costs = (price, backend.on_demand_price, backend.unquantized_price, reference.unquantized_price)
            actual, on_demand, unquantized, tier = (nusd(p.cost(usage)) for p in costs)
        except (ValueError, ArithmeticError) as exc:
            raise Unbillable(ErrorCode.UNPRICED, f"backend {backend.name!r} has no usable price: {exc}") from None
        return Line(
            key="|".join(("a", event.tenant, event.request_id, event.job_id, event.stage, str(event.attempt))),
            kind="attempt",
            tenant=event.tenant,
            request_id=event.request_id,
            job_id=event.job_id,
            attempt=event.attempt,
            stage=event.stage,
            backend=backend.name,
            model=_text(event.model, _MODEL_CHARS),
            source="provider" if not isinstance(backend, WorkerPool) else "engine",
            status="ok",
            spot=event.spot,
            tokens_in=usage.prompt_tokens,
            tokens_out=usage.completion_tokens,
            tokens_cached=usage.cached_prompt_tokens,
            engine_us=round(max(event.engine_s, 0.0) * 1e6),
            basis=_basis(backend, price),
            amount_nusd=actual,
            on_demand_nusd=on_demand,
            unquantized_nusd=unquantized,
            tier_nusd=tier,
            baseline_nusd=self._baseline(usage),
            ts_ms=event.ts_ms,
            api_key_id=event.api_key_id,
        )

    def cache_event(self, event: UsageEvent) -> Line:
        """A semantic lookup that served nothing (``overhead``: its measured seconds at the CPU's $/h, or the
        configured cost of a lookup) or a hit reported wrong (``wrong_hit``: no amount, the report counts it)."""
        self._check_tenant(event.tenant)
        wrong = event.kind == "cache_wrong_hit"
        amount, basis = (0, "cache hit reported wrong") if wrong else self._lookup(event.engine_s)
        return Line(
            key="|".join(("w" if wrong else "o", event.tenant, event.request_id)),
            kind="wrong_hit" if wrong else "overhead",
            tenant=event.tenant,
            request_id=event.request_id,
            job_id=event.job_id,
            backend=_text(event.pool, _NAME_CHARS),
            model=_text(event.model, _MODEL_CHARS),
            source="" if wrong else "cache_semantic",
            status="ok",
            engine_us=round(max(event.engine_s, 0.0) * 1e6),
            basis=basis,
            amount_nusd=amount,
            on_demand_nusd=amount,
            unquantized_nusd=amount,
            tier_nusd=amount,
            ts_ms=event.ts_ms,
            api_key_id=event.api_key_id,
        )

    def _lookup(self, seconds: float) -> tuple[int, str]:
        if seconds <= 0:
            return nusd(self.lookup_usd), "semantic cache lookup that served nothing (configured cost)"
        measured = Decimal(repr(seconds))
        amount = nusd(measured * self.cpu_usd_per_hour / _SECONDS_PER_HOUR)
        return amount, f"semantic cache lookup that served nothing: {measured:.6f} CPU-s at ${self.cpu_usd_per_hour}/h"

    def _baseline(self, usage: Usage) -> int:
        return nusd(self.catalog.baseline_price.cost(usage))

    def result(self, result: Result, *, now_ms: int) -> Line:
        """The ledger line of a request's final result: its tokens' baseline, and a cache hit's own cost."""
        self._check_tenant(result.tenant)
        hit = result.cache if result.source in _CACHE_SOURCES else None
        tokens = result.usage if hit is None else hit.saved
        amount, basis = (0, "") if hit is None else self._hit(result.source, hit)
        return Line(
            key="|".join(("r", result.tenant, result.request_id)),
            kind="result",
            tenant=result.tenant,
            request_id=result.request_id,
            job_id="" if hit is None else hit.cached_request_id,
            backend=_text(result.pool, _NAME_CHARS),
            model=_text(result.model, _MODEL_CHARS),
            source=result.source,
            status=result.status,
            tokens_in=tokens.prompt_tokens,
            tokens_out=tokens.completion_tokens,
            tokens_cached=tokens.cached_prompt_tokens,
            engine_us=0 if hit is None else round(hit.compute_s * 1e6),
            basis=f"baseline {self.catalog.baseline}{basis}",
            amount_nusd=amount,
            on_demand_nusd=amount,
            unquantized_nusd=amount,
            tier_nusd=amount,
            baseline_nusd=self._baseline(tokens),
            ts_ms=result.completed_ms or now_ms,
            api_key_id=result.api_key_id,
        )

    def _hit(self, source: str, hit: CacheHit) -> tuple[int, str]:
        """A cache hit's cost: its measured seconds at the CPU's $/h; the configured cost if it measured none."""
        if hit.compute_s <= 0:
            return nusd(self.hit_usd[source]), f" + {source} hit (configured cost)"
        seconds = Decimal(repr(hit.compute_s))
        amount = nusd(seconds * self.cpu_usd_per_hour / _SECONDS_PER_HOUR)
        return amount, f" + {source} hit: {seconds:.6f} CPU-s at ${self.cpu_usd_per_hour}/h"
