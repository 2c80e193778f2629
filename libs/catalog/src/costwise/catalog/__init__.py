"""What costwise can route to and what it costs: tiers, backends (worker pools, providers), prices.

The router reads it to pick the cheapest eligible backend, the provider worker to reach its API, and
billing to price every attempt and its no-lever baseline. One file, checked once at start.
"""

from ._backends import Backend, Provider, WorkerPool
from ._catalog import AUTO, Catalog, CatalogError, Tier, default_catalog, load_catalog
from ._estimate import estimate_usage
from ._price import Price, usd

__all__ = [
    "AUTO",
    "Backend",
    "Catalog",
    "CatalogError",
    "Price",
    "Provider",
    "Tier",
    "WorkerPool",
    "default_catalog",
    "estimate_usage",
    "load_catalog",
    "usd",
]
