"""What every wire message is built from: the constrained scalar types and the tagged base class (the rules are
in :mod:`costwise.contracts.messages`)."""

from __future__ import annotations

from typing import Annotated

import msgspec
from msgspec import Meta

__all__ = ["EpochMs", "JobId", "NonNegInt", "RequestId", "Token", "Url", "Wire"]

# Tenants, pools and request ids become NATS subject tokens: no dots, wildcards or spaces.
Token = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=64)]
RequestId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=128)]
# A job id is its request id, plus ``-<attempt>`` from the second attempt on (failover, escalation).
JobId = Annotated[str, Meta(pattern=r"^[A-Za-z0-9_-]+$", min_length=1, max_length=140)]
Url = Annotated[str, Meta(max_length=2048)]
EpochMs = Annotated[int, Meta(ge=0)]
NonNegInt = Annotated[int, Meta(ge=0)]


class Wire(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    """Base of every wire message: immutable, keyword-only, tagged by ``type``."""
