"""``costwise-bench replay`` (issue 13) through a real ``costwise up`` stack on the standard replay catalog: a real
nats-server, every service, a pool worker fronting the replay's recording server, a provider worker calling it.

One stack for the module (started by the replay's own stack code, as ``costwise-bench replay`` starts it); each
test replays with ``--nats`` to it. The learned router is off in this stack, so every ``auto`` request starts on
the small tier, and the response verifier is off, so the cascade's rules decide: that makes the expectation below
computable by hand from tests/fixtures/replay/small.jsonl (its README says what each line is).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import itertools
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

from costwise.bench.__main__ import main
from costwise.bench.replay import Line, ReplayError, ReplayLine, Stack, loopback_port, schedule, wait_ready
from costwise.bench.replay._drive import Observed, error_codes, error_samples
from costwise.catalog import load_catalog
from costwise.contracts import ErrorCode, ErrorInfo, Result
from costwise.messaging import connect
from costwise.testing import free_port

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = Path(__file__).parent / "fixtures" / "replay"
STANDARD = ROOT / "deploy" / "catalog.replay.toml"
SMALL_POOL = "mixtral-fp8-spot"

pytestmark = pytest.mark.timeout(900)
# Every `auto` request starts small and the cascade's rules alone judge it (the learned router and the response
# verifier are the router's own tests' concern): the expectation stays computable by hand.
CASCADE_BY_RULES = {"COSTWISE_ROUTER_LEARNED": "false", "COSTWISE_ROUTER_RESPONSE_VERIFIER": "false"}


@dataclass
class Running:
    stack: Stack
    catalog: Path
    ledger: str


@dataclass
class Replayed:
    code: int
    out: dict[str, Any]
    err: str
    seconds: float


def _replay(running: Running, workload: Path, *extra: str) -> Replayed:
    argv = ["replay", "--workload", str(workload), "--catalog", str(running.catalog), "--nats", running.stack.url]
    argv += ["--ledger", running.ledger, "--no-progress", *extra]
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(argv)
    return Replayed(code, json.loads(out.getvalue()), err.getvalue(), time.monotonic() - started)


async def _serving(stack: Stack, catalog: Path) -> None:
    await stack.wait_listening()
    nc = await connect(stack.url, name="pytest-replay")
    try:
        await wait_ready(nc.jetstream(), load_catalog(catalog), stack, timeout=600)
    finally:
        await nc.close()


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """The standard replay catalog on a free port for the recording server; the stack serving it."""
    data = tmp_path_factory.mktemp("replay-stack")
    catalog = data / "catalog.replay.toml"
    catalog.write_text(STANDARD.read_text().replace("127.0.0.1:8765/", f"127.0.0.1:{free_port()}/"))
    ledger = f"sqlite:///{data / 'billing' / 'ledger.db'}"
    stack = Stack.start(catalog, data, ledger, env=CASCADE_BY_RULES)
    try:
        asyncio.run(_serving(stack, catalog))
        yield Running(stack, catalog, ledger)
    finally:
        stack.stop()


@pytest.fixture(scope="module")
def small(running: Running) -> tuple[Replayed, dict[str, Any]]:
    """The small replay, and ``costwise report`` on its ledger read right after it (before any other replay)."""
    replayed = _replay(running, FIXTURES / "small.jsonl", "--timeout", "120")
    since = replayed.out["ledger"]["since"]
    env = dict(os.environ, COSTWISE_BILLING_DATABASE_URL=running.ledger)
    report = subprocess.run(
        [sys.executable, "-m", "costwise.cli", "report", "--since", since, "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    return replayed, json.loads(report.stdout)


def test_a_small_replay_accounts_for_every_request_as_computed_by_hand(small: tuple[Replayed, dict[str, Any]]) -> None:
    replayed, _ = small
    out = replayed.out
    assert replayed.code == 0, replayed.err
    assert (out["requests"], out["completed"], out["lost"], out["duplicates"]) == (21, 21, 0, 0)
    assert out["errors"] == out["error_samples"] == {} and out["skipped_lines"] == []
    # Lines 1-8, 10, 11, 16, 17, 18, 21: the small tier's answer accepted; 9: refused by the small tier, escalated;
    # 19: names the large tier; 12-15: exact repeats of 1, 5, 9, 10; 20: a near-repeat of 17.
    assert out["ledger"]["sources"] == {"cache_exact": 4, "cache_semantic": 1, "engine": 14, "provider": 2}
    assert out["routes"] == {"small": 14, "small→large": 1, "large": 1}
    assert out["cache_hits"] == {"exact": 4, "semantic": 1}
    assert out["cache_hit_rate"] == {"exact": round(4 / 21, 4), "semantic": round(1 / 21, 4)}
    assert (out["wrong_cache_hits"], out["cache_hits_unjudged"]) == (1, 0)  # 20's answer key differs from 17's
    assert (out["strong_calls"], out["strong_call_share"]) == (2, round(2 / 21, 4))
    # Judged: 1-9, 12-14, 16, 19. Served right: all but 5 (small wrong) and 13 (the hit of 5's answer); the
    # all-large baseline misses only 8.
    assert out["quality"]["lines_judged"] == 14
    assert out["quality"]["served_accuracy"] == round(12 / 14, 4)
    assert out["quality"]["baseline_accuracy"] == round(13 / 14, 4)
    assert out["quality_ratio"] == round(12 / 13, 4)
    # Strong calls on judged lines: 9 (small wrong, large right: bought quality) and 19 (both right: bought
    # nothing). To reach 0.95 of the baseline's 13 right answers from the small tier's 10: ceil(12.35 - 10) = 3.
    assert out["strong_calls_spent"] == {
        "judged_calls": 2,
        "bought_quality": 1,
        "precision": 0.5,
        "needed_for_goal": 3,
        "goal": 0.95,
    }
    assert {k: v["n"] for k, v in out["latency"].items()} == {"cache": 5, "engine": 15, "escalated": 1}
    checks = out["cascade_checks"]
    assert checks["small_answers_judged"] == 15 and checks["no_logprobs"] == 15  # recordings carry no logprobs
    assert checks["ran"] == {"rules": 15}  # as the router recorded each verdict
    assert checks["escalated_by_reason"] == {"refusal": 1}


def test_the_replays_costs_are_the_ledgers_split_by_lever(small: tuple[Replayed, dict[str, Any]]) -> None:
    out = small[0].out
    ledger, saved = out["ledger"], out["ledger"]["savings_nusd"]
    assert ledger["settled"] and ledger["requests"] == 21 and ledger["in_flight"] == 0
    assert ledger["other_requests_in_window"] == 0
    actual, baseline = ledger["actual_nusd"], ledger["baseline_nusd"]
    assert 0 < actual < baseline and actual + sum(saved.values()) == baseline  # billing's waterfall adds up
    assert out["cost_actual_usd"] == actual / 1e9 and out["cost_baseline_usd"] == baseline / 1e9
    assert out["cost_reduction"] == round(1 - actual / baseline, 4)
    assert out["savings_by_lever"] == {lever: n / 1e9 for lever, n in saved.items()}
    # The catalog: spot $1.50/h vs $4.50/h on demand (spot saves 2x what the small tier cost), FP8 at 1.6x
    # (unquantized costs 1.6x on demand: 1.8x what it cost). The large tier is a provider: neither applies.
    assert saved["spot"] > 0 and abs(saved["quantization"] - 0.9 * saved["spot"]) <= 60  # a nano-dollar per line
    assert saved["provider"] == 0 and saved["resume_prefill"] == 0
    assert saved["cache_exact"] > 0 and saved["routing"] > 0


def test_costwise_report_on_the_replays_ledger_shows_the_same_totals(small: tuple[Replayed, dict[str, Any]]) -> None:
    replayed, report = small
    ledger = replayed.out["ledger"]
    assert report["requests"] == ledger["requests"] == replayed.out["requests"]
    assert (report["actual_nusd"], report["baseline_nusd"]) == (ledger["actual_nusd"], ledger["baseline_nusd"])
    assert report["savings_nusd"] == ledger["savings_nusd"]
    assert report["sources"] == ledger["sources"]


def test_malformed_lines_are_reported_by_number_and_the_rest_replayed(running: Running) -> None:
    replayed = _replay(running, FIXTURES / "malformed.jsonl", "--timeout", "120")
    out = replayed.out
    assert replayed.code == 0, replayed.err
    assert [s["line"] for s in out["skipped_lines"]] == [2, 4, 5, 7]
    for number in (2, 4, 5, 7):
        assert f"malformed.jsonl:{number}: " in replayed.err
    reasons = {s["line"]: s["reason"] for s in out["skipped_lines"]}
    assert "prompt" in reasons[4] and "tenant" in reasons[5] and "max_tokens" in reasons[7]
    assert (out["requests"], out["completed"], out["lost"]) == (3, 3, 0)


def test_a_request_whose_only_worker_died_is_reported_lost_with_a_failing_exit(
    running: Running, tmp_path: Path
) -> None:
    workload = tmp_path / "lost.jsonl"
    line = {"tenant": "lost", "model": "small", "prompt": f"Is my card frozen? ({time.time_ns()})", "max_tokens": 64}
    workload.write_text(json.dumps(line) + "\n")
    (worker,) = running.stack.workers()  # the small pool's only worker
    supervisor = running.stack.proc.pid
    os.kill(supervisor, signal.SIGSTOP)  # the supervisor must not restart what is killed next
    try:
        worker.kill()
        _until_dead(worker)
        replayed = _replay(running, workload, "--timeout", "8")
    finally:
        os.kill(supervisor, signal.SIGCONT)
    out = replayed.out
    assert replayed.code == 1 and out["exit_code"] == 1
    assert (out["requests"], out["completed"], out["lost"]) == (1, 0, 1)
    assert replayed.seconds < 8 + 30  # the timeout, then the ledger read: it does not wait for the lost one
    assert f"worker-{SMALL_POOL} has no pull waiting" in replayed.err


def _until_dead(proc: psutil.Process, timeout: float = 10.0) -> None:
    """Gone or a zombie (its stopped parent cannot reap it)."""
    deadline = time.monotonic() + timeout
    with contextlib.suppress(psutil.NoSuchProcess):
        while proc.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline, "the worker did not die"
            time.sleep(0.05)


def _line(arrival: float | None) -> Line:
    return Line(1, ReplayLine(prompt="x", arrival=arrival))


def test_arrivals_are_scaled_by_speed_or_retimed_to_a_seeded_poisson_rate() -> None:
    lines = [_line(0.0), _line(2.0), _line(None), _line(5.0)]
    assert schedule(lines, speed=2.0, rate=None, seed=0) == [0.0, 1.0, 1.0, 2.5]
    poisson = schedule(lines * 500, speed=None, rate=50.0, seed=3)
    assert (
        poisson
        == schedule(lines * 500, speed=None, rate=50.0, seed=3)
        != schedule(lines * 500, speed=None, rate=50.0, seed=4)
    )
    assert all(b > a for a, b in itertools.pairwise(poisson))
    assert 2000 / poisson[-1] == pytest.approx(50.0, rel=0.1)


def test_loopback_backends_on_two_ports_are_refused_with_the_reason(tmp_path: Path) -> None:
    assert loopback_port(load_catalog(STANDARD)) == 8765
    two = tmp_path / "two.toml"
    two.write_text(
        STANDARD.read_text().replace('base_url = "http://127.0.0.1:8765/v1"', 'base_url = "http://127.0.0.1:9999/v1"')
    )
    with pytest.raises(ReplayError, match=r"ports \[8765, 9999\].*same port"):
        loopback_port(load_catalog(two))


def test_the_waterfall_steps_from_the_baseline_down_to_what_was_spent(tmp_path: Path) -> None:
    from xml.etree import ElementTree

    from costwise.bench.replay._plot import write_waterfall

    replay = {
        "requests": 3,
        "cost_baseline_usd": 10.0,
        "cost_actual_usd": 3.5,
        "cost_reduction": 0.65,
        "savings_by_lever": {"cache_exact": 2.0, "routing": 5.0, "resume_prefill": -0.5},
    }
    write_waterfall(replay, tmp_path / "w.svg")
    svg = ElementTree.parse(tmp_path / "w.svg").getroot()
    bars = [r for r in svg.iter("{http://www.w3.org/2000/svg}rect")][1:]  # the first is the background
    widths = [float(r.get("width", 0)) for r in bars]
    assert len(bars) == 5 and widths[0] == pytest.approx(440.0) and widths[-1] == pytest.approx(440.0 * 0.35)
    assert widths[1:4] == pytest.approx([88.0, 220.0, 22.0])  # each lever's bar is its share of the baseline
    labels = "".join(t.text or "" for t in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert "-$2.0000" in labels and "+$0.5000" in labels and "exact cache" in labels


def test_error_results_are_counted_by_code_with_their_first_messages() -> None:
    def failed(rid: str, code: ErrorCode, message: str) -> Result:
        return Result(request_id=rid, tenant="t", status="error", error=ErrorInfo(code=code, message=message))

    observed = Observed()
    observed.results = {f"r{i}": failed(f"r{i}", ErrorCode.NO_BACKEND_AVAILABLE, f"why {i}") for i in range(5)}
    observed.results["r9"] = failed("r9", ErrorCode.DEADLINE_EXCEEDED, "too slow")
    observed.results["ok"] = Result(request_id="ok", tenant="t", status="ok")
    assert error_codes(observed) == {"deadline_exceeded": 1, "no_backend_available": 5}
    assert error_samples(observed, per_code=2) == {
        "no_backend_available": [{"request_id": "r0", "message": "why 0"}, {"request_id": "r1", "message": "why 1"}],
        "deadline_exceeded": [{"request_id": "r9", "message": "too slow"}],
    }
