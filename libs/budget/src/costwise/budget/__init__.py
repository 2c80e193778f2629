"""Per-tenant budgets every service can read and the router enforces before any spend.

State lives in the JetStream KV bucket ``costwise-budgets`` (one key per tenant). ``Budgets.admit`` reserves
a request's estimated cost by compare-and-set; billing calls ``Budgets.settle`` with the ledger's spend.
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
