"""The replay's operating point, said and recorded: ``--router-setting NAME=VALUE`` (checked by the router's own
settings loader, passed to the started stack's router, named in the JSON), and the accounting that shows where a
mix's strong calls and quality go (per workload ``source``; the shipped router's training split apart from the
rest). Light: no stack, no replay (tests/test_replay.py drives one)."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from costwise.bench.replay import add_parser
from costwise.bench.replay._account import Judge
from costwise.bench.replay._cli import options_from
from costwise.bench.replay._drive import Observed
from costwise.bench.replay._lines import Line, ReplayLine
from costwise.bench.replay._settings import effective_router_settings
from costwise.catalog import load_catalog
from costwise.contracts import Attempt, Output, Result
from costwise.router.learned import train_mask
from costwise.router.settings import RouterSettings
from costwise.settings import load

ROOT = Path(__file__).resolve().parents[1]
STANDARD = ROOT / "deploy" / "catalog.replay.toml"


def _args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["replay", "--workload", "w.jsonl", *extra])


def test_a_router_setting_reaches_the_started_stacks_router_as_its_own_loader_reads_it() -> None:
    options = options_from(_args("--router-setting", "route_quality=0.88", "--router-setting", "LEARNED=false"))
    assert options.env == {"COSTWISE_ROUTER_ROUTE_QUALITY": "0.88", "COSTWISE_ROUTER_LEARNED": "false"}
    settings = load(RouterSettings, "COSTWISE_ROUTER_", options.env)
    assert settings.route_quality == pytest.approx(0.88)
    assert settings.learned is False
    assert options_from(_args()).env is None  # no flag: the shipped settings (and whatever the environment says)


@pytest.mark.parametrize(
    ("given", "says"),
    [
        ("route_qualty=0.88", "no router setting 'route_qualty'"),  # misspelt: refused, never silently ignored
        ("route_quality=1.5", "COSTWISE_ROUTER_ROUTE_QUALITY"),  # out of the setting's range
        ("route_quality", "expected NAME=VALUE"),
        ("nats_url=nats://elsewhere:4222", "no router setting 'nats_url'"),  # costwise up sets it
    ],
)
def test_a_bad_router_setting_stops_the_replay_before_any_stack_starts(given: str, says: str) -> None:
    with pytest.raises(SystemExit, match=says):
        options_from(_args("--router-setting", given))


def test_router_settings_are_for_the_replays_own_stack_only() -> None:
    with pytest.raises(SystemExit, match="not with --nats"):
        options_from(_args("--router-setting", "route_quality=0.88", "--nats", "nats://127.0.0.1:4222"))


def test_the_json_names_every_router_setting_the_stack_saw_given_or_inherited() -> None:
    env = {
        "COSTWISE_ROUTER_ROUTE_QUALITY": "0.88",
        "COSTWISE_ROUTER_CATALOG": "/x.toml",  # set by costwise up itself: not an operating point
        "COSTWISE_ROUTER_NATS_URL": "nats://127.0.0.1:1",
        "COSTWISE_CACHE_THRESHOLD": "0.5",
        "PATH": "/bin",
    }
    assert effective_router_settings(env) == {"route_quality": "0.88"}
    assert effective_router_settings({"PATH": "/bin"}) == {}


# Two GSM8K-like prompts, one in the shipped router's training split and one not (found by its own rule), plus FAQ.
_CANDIDATES = [f"What is {n} plus {n + 1}? Answer with a number." for n in range(40)]
_SPLIT = train_mask(_CANDIDATES)
IN_TRAIN = next(p for p, inside in zip(_CANDIDATES, _SPLIT, strict=True) if inside)
NOT_IN_TRAIN = next(p for p, inside in zip(_CANDIDATES, _SPLIT, strict=True) if not inside)


def _line(number: int, prompt: str, source: str, correct: dict[str, bool] | None = None) -> Line:
    return Line(number, ReplayLine(prompt=prompt, source=source, correct=correct, label=None))


def _served(rid: str, tiers: list[str], *, cache: bool = False) -> Result:
    backend = {"small": "mixtral-fp8-spot", "large": "gpt4-1106"}
    route = [
        Attempt(backend=backend[t], tier=t, outcome="escalated" if i < len(tiers) - 1 else "accepted")
        for i, t in enumerate(tiers)
    ]
    return Result(
        request_id=rid,
        tenant="t",
        status="ok",
        output=Output(text="x", finish_reason="stop"),
        source="cache_exact" if cache else ("provider" if tiers[-1] == "large" else "engine"),
        pool=backend[tiers[-1]],
        route=[] if cache else route,
    )


def _judge() -> Judge:
    right_small = {"small": True, "large": True}
    wrong_small = {"small": False, "large": True}
    lines = {
        "a": _line(1, IN_TRAIN, "gsm8k", wrong_small),  # straight to large: right
        "b": _line(2, NOT_IN_TRAIN, "gsm8k", wrong_small),  # small, kept: wrong
        "c": _line(3, NOT_IN_TRAIN + " ", "mmlu", right_small),  # small → large (escalated): right
        "d": _line(4, "where is my card?", "banking77"),  # no correctness: not judged
        "e": _line(5, "where is my card?", "banking77"),  # a cache hit
    }
    results = {
        "a": _served("a", ["large"]),
        "b": _served("b", ["small"]),
        "c": _served("c", ["small", "large"]),
        "d": _served("d", ["small"]),
        "e": _served("e", ["small"], cache=True),
    }
    observed = Observed(sent=lines, results=results)
    return Judge(load_catalog(STANDARD), observed, {item.number: item for item in lines.values()}, "0" * 8)


def test_strong_calls_and_quality_are_told_apart_by_source() -> None:
    by = _judge().by_source()["by_source"]
    assert by["gsm8k"] == {
        "requests": 2,
        "cache_hits": 0,
        "strong_calls": 1,
        "strong_call_share": 0.5,
        "quality_ratio": 0.5,  # served right 1 of 2, large right 2 of 2
        "lines_judged": 2,
    }
    assert by["mmlu"]["strong_calls"] == 1 and by["mmlu"]["quality_ratio"] == 1.0
    assert by["banking77"] == {
        "requests": 2,
        "cache_hits": 1,
        "strong_calls": 0,
        "strong_call_share": 0.0,
        "quality_ratio": None,
        "lines_judged": 0,
    }


def test_quality_is_told_apart_for_prompts_the_router_was_fit_on() -> None:
    split = _judge().by_router_split()["quality_by_router_split"]
    in_train = train_mask([NOT_IN_TRAIN + " "])[0]  # line c's prompt: whichever side the rule puts it
    held = {"lines_judged": 1 if in_train else 2, "quality_ratio": 0.0 if in_train else 0.5}
    train = {"lines_judged": 2 if in_train else 1, "quality_ratio": 1.0}
    assert split == {"train": train, "held_out": held}
