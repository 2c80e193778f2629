"""Billing: the exact ledger, per-lever savings attribution, budgets settlement, and the cost report."""

from ._attribution import LEVERS, RequestCost, attribute
from ._ledger import Ledger, Line, Scope, open_ledger
from ._pricing import Pricer, Unbillable, nusd
from ._report import Report, build_report, ledger_report, render_text
from .app import Billing, build
from .settings import BillingSettings

__all__ = [
    "LEVERS",
    "Billing",
    "BillingSettings",
    "Ledger",
    "Line",
    "Pricer",
    "Report",
    "RequestCost",
    "Scope",
    "Unbillable",
    "attribute",
    "build",
    "build_report",
    "ledger_report",
    "nusd",
    "open_ledger",
    "render_text",
]
