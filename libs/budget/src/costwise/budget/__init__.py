"""Per-tenant budgets every service can read, enforced before any spend: by the gateway before it queues a
request (so an over-budget one gets its 402 at once), and by the router before each attempt.

State lives in the JetStream KV bucket ``costwise-budgets`` (one key per tenant). ``Budgets.admit`` reserves
a request's estimated cost by compare-and-set, under the request's id, so each later admission of the same
request replaces the earlier reservation; billing calls ``Budgets.settle`` with the ledger's spend.
"""

from ._budgets import Budgets, open_budgets
from ._estimate import estimate_usd
from ._state import Admission, BudgetExceeded, BudgetState, Period, Reservation, period_start_ms

__all__ = [
    "Admission",
    "BudgetExceeded",
    "BudgetState",
    "Budgets",
    "Period",
    "Reservation",
    "estimate_usd",
    "open_budgets",
    "period_start_ms",
]
