"""``python -m costwise.billing [run | report ... | budget set|show ...]``."""

from __future__ import annotations

import argparse
import datetime as dt
import re
import sys
import time
from decimal import Decimal, InvalidOperation
from pathlib import Path

import msgspec

from costwise.budget import open_budgets
from costwise.messaging import connect, provision, run, run_command
from costwise.settings import load

from ._html import render_html
from ._ledger import open_ledger
from ._report import ledger_report, render_text
from .app import Billing, build
from .settings import BillingSettings

__all__ = ["main"]

_RELATIVE = re.compile(r"^(\d+)([hdw])$")
_UNIT_S = {"h": 3600, "d": 86400, "w": 7 * 86400}
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def since_ms(text: str | None, now: float) -> int:
    """``--since``: an ISO date/time (UTC unless it says otherwise) or a span back from now (``24h``, ``7d``, ``2w``)."""
    if not text:
        return 0
    relative = _RELATIVE.match(text)
    if relative:
        return int((now - int(relative[1]) * _UNIT_S[relative[2]]) * 1000)
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--since {text!r}: use an ISO date (2026-11-01) or 24h / 7d / 2w") from None
    return int((when if when.tzinfo else when.replace(tzinfo=dt.UTC)).timestamp() * 1000)


def _usd(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"not an amount in USD: {text!r}") from None
    if not value.is_finite() or value < 0:
        raise argparse.ArgumentTypeError(f"a budget is a non-negative amount, not {text!r}")
    return value


def _token(text: str) -> str:
    if not _TOKEN.match(text):
        raise argparse.ArgumentTypeError(f"{text[:80]!r}: letters, digits, _ and -, at most 64")
    return text


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m costwise.billing", description="costwise billing")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("run", help="run the billing service until SIGTERM/SIGINT (the default)")
    report = sub.add_parser("report", help="cost per query, totals, hit rates, routing mix, savings waterfall")
    report.add_argument("--tenant")
    report.add_argument("--key", help="only the requests that came in with this API key id")
    report.add_argument("--since", help="ISO date/time or 24h / 7d / 2w")
    report.add_argument("--html", type=Path, help="also write an HTML report with plots to this file")
    report.add_argument("--json", action="store_true", help="print the report as JSON instead of text")
    budget = sub.add_parser("budget", help="set or show a tenant's (or one of its API keys') budget")
    budget_sub = budget.add_subparsers(dest="action", required=True)
    put = budget_sub.add_parser("set")
    put.add_argument("--usd", type=_usd, required=True)
    put.add_argument("--period", choices=["day", "month", "total"], default="month")
    show = budget_sub.add_parser("show")
    for action in (put, show):
        action.add_argument("--tenant", type=_token, required=True)
        action.add_argument(
            "--key", type=_token, help="the API key id (cw-<key id>-…): its budget, on top of the tenant's"
        )
    return parser


def _report(settings: BillingSettings, args: argparse.Namespace) -> int:
    ledger = open_ledger(settings.database_url)
    try:
        start = since_ms(args.since, time.time())
        report = ledger_report(ledger, tenant=args.tenant, since_ms=start, api_key_id=args.key)
    finally:
        ledger.close()
    sys.stdout.write(msgspec.json.encode(report).decode() + "\n" if args.json else render_text(report))
    if args.html:
        args.html.write_text(render_html(report))
        sys.stderr.write(f"wrote {args.html}\n")
    return 0


async def _budget(settings: BillingSettings, args: argparse.Namespace) -> int:
    nc = await connect(settings.nats_url, name="billing-cli", patient=False)
    try:
        await provision(nc.jetstream())
        budgets = await open_budgets(nc.jetstream())
        if args.action == "set":
            state = await budgets.set_limit(args.tenant, args.usd, args.period, api_key_id=args.key)
        else:
            found = await budgets.state(args.tenant, api_key_id=args.key)
            if found is None:
                whose = f"tenant {args.tenant!r}" + (f", API key {args.key!r}," if args.key else "")
                sys.stderr.write(f"{whose} has no budget (unlimited)\n")
                return 1
            state = found
    finally:
        await nc.close()
    sys.stdout.write(msgspec.json.encode(state).decode() + "\n")
    return 0


async def _service() -> Billing:
    return await build(_settings())


def _settings() -> BillingSettings:
    return load(BillingSettings, "COSTWISE_BILLING_")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "report":
        return _report(_settings(), args)
    if args.command == "budget":
        return run_command(_budget(_settings(), args), name="costwise-billing")
    # Loading the settings inside run(): a bad one is one line and exit code 2, not a traceback.
    return run(_service, name="costwise-billing")
