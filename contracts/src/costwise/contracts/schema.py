"""JSON Schema of every top-level wire message, generated from the Structs (committed under contracts/schemas)."""

from __future__ import annotations

import json
from pathlib import Path

import msgspec

from . import messages

__all__ = ["WIRE_TYPES", "render", "write"]

WIRE_TYPES: tuple[type[msgspec.Struct], ...] = (
    messages.InferenceRequest,
    messages.Job,
    messages.Completion,
    messages.Result,
    messages.UsageEvent,
    messages.DeadLetter,
    messages.CacheInvalidation,
    messages.CacheWrongHit,
    messages.StreamDelta,
    messages.WebhookFailed,
)


def render() -> dict[str, str]:
    """File name → schema text for every wire type (stable, sorted keys)."""
    out = {}
    for kind in WIRE_TYPES:
        tag = kind.__struct_config__.tag
        out[f"{tag}.schema.json"] = json.dumps(msgspec.json.schema(kind), indent=2, sort_keys=True) + "\n"
    return out


def write(directory: Path) -> list[Path]:
    """Write every schema into ``directory``; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render().items():
        path = directory / name
        path.write_text(text)
        paths.append(path)
    return paths
