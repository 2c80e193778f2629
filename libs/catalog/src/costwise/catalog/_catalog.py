"""Tiers, their backends and the no-lever baseline, loaded and checked once at start."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Annotated

import msgspec
from msgspec import Meta

from ._backends import Backend, Name, Provider, WorkerPool
from ._price import Price

__all__ = ["AUTO", "Catalog", "CatalogError", "Tier", "default_catalog", "load_catalog"]


AUTO = "auto"


class CatalogError(ValueError):
    """A catalog that cannot be served from (unknown tier, negative price, tier with no backend, …)."""


class Tier(msgspec.Struct, frozen=True, kw_only=True):
    """A quality level (``small``, ``large``) served by any of its backends, cheapest eligible first."""

    name: Name
    backends: Annotated[list[Name], Meta(min_length=1)]


class Catalog(msgspec.Struct, frozen=True, kw_only=True):
    """Every tier (ordered from cheapest to most capable) and every backend, plus the baseline.

    ``baseline`` names the backend whose on-demand, unquantized price is the counterfactual "no levers"
    cost that savings are measured against.
    """

    tiers: Annotated[list[Tier], Meta(min_length=1)]
    backends: Annotated[list[WorkerPool | Provider], Meta(min_length=1)]
    baseline: Name
    aliases: dict[str, Name] = {}
    """Extra model names that mean a tier (e.g. ``"gpt-4o": "large"``); tier names always work.
    ``auto`` is not an alias: it lets the router choose, starting from the first tier."""

    def __post_init__(self) -> None:
        _check(self)

    def backend(self, name: str) -> Backend:
        for backend in self.backends:
            if backend.name == name:
                return backend
        raise KeyError(name)

    def tier(self, name: str) -> Tier:
        """The tier a request's ``model`` names (tier name or alias); ``KeyError`` if none."""
        name = self.aliases.get(name, name)
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)

    def next_tier(self, name: str) -> Tier | None:
        """The next more capable tier, for escalation; ``None`` at the top."""
        names = [tier.name for tier in self.tiers]
        index = names.index(name)
        return self.tiers[index + 1] if index + 1 < len(self.tiers) else None

    def tier_of(self, backend: str) -> Tier:
        for tier in self.tiers:
            if backend in tier.backends:
                return tier
        raise KeyError(backend)

    @property
    def baseline_price(self) -> Price:
        return self.backend(self.baseline).unquantized_price


def _check(catalog: Catalog) -> None:
    names = [backend.name for backend in catalog.backends]
    dupes = sorted({name for name in names if names.count(name) > 1})
    if dupes:
        raise CatalogError(f"backend names must be unique; repeated: {', '.join(dupes)}")
    tier_names = [tier.name for tier in catalog.tiers]
    if len(set(tier_names)) != len(tier_names):
        raise CatalogError(f"tier names must be unique: {tier_names}")
    for tier in catalog.tiers:
        unknown = [name for name in tier.backends if name not in names]
        if unknown:
            raise CatalogError(f"tier {tier.name!r} names unknown backends {unknown} (known: {names})")
    if AUTO in catalog.aliases or AUTO in tier_names:
        raise CatalogError(f"{AUTO!r} is reserved: it means 'let the router choose' (cascade from the first tier)")
    for alias, target in catalog.aliases.items():
        if target not in tier_names:
            raise CatalogError(f"alias {alias!r} points at unknown tier {target!r} (tiers: {tier_names})")
    if catalog.baseline not in names:
        raise CatalogError(f"baseline {catalog.baseline!r} is not a backend (known: {names})")
    for backend in catalog.backends:
        if isinstance(backend, Provider):
            backend.price  # noqa: B018 - raises when the loader could not price it


def _priced(backend: dict[str, object]) -> dict[str, object]:
    """Fill an unpriced provider's prices from genai-prices (which knows list prices of most public APIs)."""
    if backend.get("type") != "provider" or (
        backend.get("usd_per_m_input") is not None and backend.get("usd_per_m_output") is not None
    ):
        return backend
    import genai_prices

    model = str(backend.get("model"))
    provider_id = str(backend["provider_id"]) if backend.get("provider_id") else None
    try:
        per_in = genai_prices.calc_price(genai_prices.Usage(input_tokens=1_000_000), model, provider_id=provider_id)
        per_out = genai_prices.calc_price(genai_prices.Usage(output_tokens=1_000_000), model, provider_id=provider_id)
    except LookupError as exc:
        raise CatalogError(
            f"provider {backend.get('name')!r}: genai-prices has no price for {model!r} ({exc}); "
            "set usd_per_m_input and usd_per_m_output"
        ) from None
    return {**backend, "usd_per_m_input": per_in.total_price, "usd_per_m_output": per_out.total_price}


def _from_raw(raw: dict[str, object], source: str) -> Catalog:
    backends = raw.get("backends")
    if isinstance(backends, list):
        raw = {**raw, "backends": [_priced(b) if isinstance(b, dict) else b for b in backends]}
    try:
        return msgspec.convert(raw, Catalog, strict=False)
    except msgspec.ValidationError as exc:
        raise CatalogError(f"{source}: {exc}") from None
    except CatalogError as exc:
        raise CatalogError(f"{source}: {exc}") from None


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The catalog in a TOML (see ``deploy/catalog.example.toml``) or JSON file, or :func:`default_catalog`."""
    if path is None:
        return default_catalog()
    path = Path(path)
    try:
        text = path.read_text()
        raw = msgspec.json.decode(text) if path.suffix == ".json" else tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError, msgspec.DecodeError) as exc:
        raise CatalogError(f"cannot read catalog {path}: {exc}") from None
    return _from_raw(raw, str(path))


def default_catalog(
    pool_name: str = "default", *, model: str = "builtin:smollm2", decode_tokens_per_s: float = 30.0
) -> Catalog:
    """The embedded stack: one CPU worker pool serving one tier, ``small``. The router checks each request's
    deadline against ``decode_tokens_per_s``: a faster model (the tests' tiny one) may say so."""
    pool = WorkerPool(
        name=pool_name,
        model=model,
        quantization="gguf",
        gpu_usd_per_hour=0.10,
        prefill_tokens_per_s=400.0,
        decode_tokens_per_s=decode_tokens_per_s,
    )
    return Catalog(
        tiers=[Tier(name="small", backends=[pool_name])],
        backends=[pool],
        baseline=pool_name,
    )
