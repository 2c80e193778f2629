from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, TypeVar

import msgspec

__all__ = ["SettingsError", "load"]

T = TypeVar("T", bound=msgspec.Struct)

# Settings every process shares: ``COSTWISE_NATS_URL`` reaches each service's ``nats_url`` (and the CLI's
# ``--nats``) unless the service's own variable says otherwise, so one export points every command at a stack.
SHARED_PREFIX = "COSTWISE_"
SHARED_FIELDS = frozenset({"nats_url"})


class SettingsError(ValueError):
    """Bad configuration, with the environment variable that caused it named in the message."""


def _env_name(prefix: str, field: str) -> str:
    return f"{prefix}{field}".upper()


def load(kind: type[T], prefix: str, env: Mapping[str, str] | None = None) -> T:
    """Build ``kind`` from ``{PREFIX}{FIELD}`` environment variables; defaults fill the rest.

    A shared field (``nats_url``) falls back to ``COSTWISE_<FIELD>``. Values are parsed from strings (``"30"`` → 30, ``"true"`` → True; lists and dicts as JSON), then checked
    against the Struct's constraints. Any problem raises :class:`SettingsError` naming the variable,
    so a service fails at start with one clear line instead of deep inside a handler.
    """
    env = os.environ if env is None else env
    raw: dict[str, Any] = {}
    for field in msgspec.structs.fields(kind):
        name = _env_name(prefix, field.encode_name)
        if name not in env and field.encode_name in SHARED_FIELDS:
            name = _env_name(SHARED_PREFIX, field.encode_name)
        if name in env:
            raw[field.encode_name] = _parse(env[name])
    try:
        return msgspec.convert(raw, kind, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid {kind.__name__}: {_explain(exc, prefix)}") from None


def _parse(value: str) -> Any:
    # JSON-looking values (lists, objects) are decoded; everything else stays a string and
    # msgspec's lax conversion turns it into the field's type.
    if value[:1] in "[{":
        try:
            return msgspec.json.decode(value)
        except msgspec.DecodeError:
            return value
    return value


def _explain(exc: msgspec.ValidationError, prefix: str) -> str:
    # msgspec says "... - at `$.ack_wait_s`"; name the environment variable instead.
    text = str(exc)
    head, sep, path = text.rpartition(" - at `$.")
    if not sep:
        return text
    field = path.rstrip("`").split(".")[0].split("[")[0]
    return f"{head} (set by {_env_name(prefix, field)})"
