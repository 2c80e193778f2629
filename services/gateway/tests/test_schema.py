"""The HTTP schema reads its limits from the wire contract; the choices it cannot read are checked against it."""

from __future__ import annotations

from typing import Any, get_args, get_type_hints

import msgspec.inspect as mi
import pytest
from pydantic import BaseModel

from costwise.contracts import CachePolicy, ChatMessage, InferenceRequest, SamplingParams
from costwise.gateway._contract import bounded, wire
from costwise.gateway.schema import CacheOptions, ChatCompletionRequest, CostwiseOptions, InputMessage


def choices(model: type[BaseModel], field: str) -> set[Any]:
    return set(get_args(model.model_fields[field].annotation))


def contract_choices(struct: type, field: str) -> set[Any]:
    return set(get_args(get_type_hints(struct)[field]))


def test_the_schemas_choices_are_the_contracts() -> None:
    assert choices(CostwiseOptions, "priority") == contract_choices(InferenceRequest, "priority")
    assert choices(CacheOptions, "mode") == contract_choices(CachePolicy, "mode")
    # OpenAI's "developer" role is the contract's "system" (mapped in ``_mapping``).
    assert choices(InputMessage, "role") == contract_choices(ChatMessage, "role") | {"developer"}


def test_the_schemas_limits_are_the_contracts() -> None:
    doc = ChatCompletionRequest.model_json_schema()
    max_tokens = next(s for s in doc["properties"]["max_tokens"]["anyOf"] if s.get("type") == "integer")
    sampling, messages = wire(SamplingParams, "max_tokens"), wire(InferenceRequest, "messages")
    assert isinstance(sampling, mi.IntType) and isinstance(messages, mi.ListType)
    assert (max_tokens["minimum"], max_tokens["maximum"]) == (sampling.ge, sampling.le)
    assert (doc["properties"]["messages"]["minItems"], doc["properties"]["messages"]["maxItems"]) == (
        messages.min_length,
        messages.max_length,
    )


def test_the_gateway_adds_bounds_but_never_restates_the_contracts() -> None:
    assert bounded(wire(InferenceRequest, "cost_ceiling_usd"), le=1e6) is not None
    with pytest.raises(ValueError, match="already bounds"):
        bounded(wire(SamplingParams, "max_tokens"), le=10)
