"""``--router-setting NAME=VALUE``: the router settings a replay's own stack runs with, said on the command line
and recorded in the replay's JSON, so an operating point other than the shipped defaults (a mix-level
``route_quality``, say) is never a silent change nor an environment variable nobody sees."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping

__all__ = ["ROUTER_PREFIX", "effective_router_settings", "router_env"]

ROUTER_PREFIX = "COSTWISE_ROUTER_"
_OWNED_BY_THE_STACK = frozenset({"nats_url", "catalog"})
"""``costwise up`` sets these itself (its nats-server, the replay's catalog)."""


def router_env(assignments: Iterable[str]) -> dict[str, str]:
    """``["route_quality=0.88", ...]`` → ``{"COSTWISE_ROUTER_ROUTE_QUALITY": "0.88", ...}``, each name a field of
    the router's settings and each value checked by the router's own settings loader (so a replay never starts a
    stack whose router would refuse to start, or silently ignore a misspelt name). Raises ``ValueError``."""
    from costwise.router.settings import RouterSettings  # the router's settings, not a copy of their names
    from costwise.settings import SettingsError, load

    fields = {name for name in RouterSettings.__struct_fields__ if name not in _OWNED_BY_THE_STACK}
    env: dict[str, str] = {}
    for text in assignments:
        name, sep, value = text.partition("=")
        name = name.strip().lower()
        if not sep or not name or not value.strip():
            raise ValueError(f"--router-setting {text!r}: expected NAME=VALUE (e.g. route_quality=0.88)")
        if name not in fields:
            raise ValueError(
                f"--router-setting {text!r}: no router setting {name!r} (known: {', '.join(sorted(fields))})"
            )
        env[f"{ROUTER_PREFIX}{name.upper()}"] = value.strip()
    try:
        load(RouterSettings, ROUTER_PREFIX, env)
    except SettingsError as exc:
        raise ValueError(f"--router-setting: {exc}") from None
    return env


def effective_router_settings(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Every ``COSTWISE_ROUTER_*`` variable a started stack's router sees (``env``: the stack's whole environment;
    default this process's), by setting name: the replay's JSON names its operating point, inherited or given."""
    env = os.environ if env is None else env
    return {
        key[len(ROUTER_PREFIX) :].lower(): value
        for key, value in sorted(env.items())
        if key.startswith(ROUTER_PREFIX) and key[len(ROUTER_PREFIX) :].lower() not in _OWNED_BY_THE_STACK
    }
