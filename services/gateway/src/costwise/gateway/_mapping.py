"""OpenAI bodies ↔ costwise's wire messages."""

from __future__ import annotations

import hashlib

import msgspec

from costwise.catalog import AUTO, Catalog
from costwise.contracts import (
    CachePolicy,
    ChatMessage,
    InferenceRequest,
    Result,
    SamplingParams,
)

from .errors import ApiError, from_error_info
from .keys import Caller
from .schema import (
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    CompletionUsage,
    CostwiseInfo,
    InputMessage,
    ModelCard,
    ModelList,
)

__all__ = ["completion_id", "fingerprint", "model_list", "result_error", "to_completion", "to_request"]

COMPLETION_PREFIX = "chatcmpl-"


def completion_id(request_id: str) -> str:
    return COMPLETION_PREFIX + request_id


def _message(msg: InputMessage) -> ChatMessage:
    text = msg.content if isinstance(msg.content, str) else "".join(part.text for part in msg.content)
    role = "system" if msg.role == "developer" else msg.role  # OpenAI's newer name for the system role
    return ChatMessage(role=role, content=text, name=msg.name)


def _sampling(body: ChatCompletionRequest) -> SamplingParams:
    default = SamplingParams()
    stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
    return SamplingParams(
        max_tokens=body.max_completion_tokens or body.max_tokens or default.max_tokens,
        temperature=default.temperature if body.temperature is None else body.temperature,
        top_p=default.top_p if body.top_p is None else body.top_p,
        stop=stop,
        seed=body.seed,
    )


def to_request(
    body: ChatCompletionRequest,
    *,
    caller: Caller,
    request_id: str,
    now_ms: int,
    deadline_ms: int | None,
    callback_url: str | None = None,
) -> InferenceRequest:
    """The wire request for ``body`` (the client library checks it against the contract when publishing)."""
    extra = body.costwise
    metadata = dict(extra.metadata or {}) if extra else {}
    if body.user:
        metadata["user"] = body.user
    return InferenceRequest(
        request_id=request_id,
        tenant=caller.tenant,
        api_key_id=caller.key_id,  # the key's public id: budgets and the ledger are kept per key
        messages=[_message(m) for m in body.messages],
        model=body.model,
        sampling=_sampling(body),
        priority=extra.priority if extra else "standard",
        deadline_ms=deadline_ms,
        cache=CachePolicy(**extra.cache.model_dump()) if extra and extra.cache else CachePolicy(),
        callback_url=callback_url,
        quality_floor=extra.quality_floor if extra else None,
        cost_ceiling_usd=extra.cost_ceiling_usd if extra else None,
        created_ms=now_ms,
        metadata=metadata,
        stream=bool(body.stream),
    )


def fingerprint(request: InferenceRequest) -> str:
    """What makes a request sent again under one Idempotency-Key "the same": a hash of the request as the
    gateway built it, its caller (tenant, API key) included. Left out is only what says when and how the answer
    is delivered, never what it is: the id (the key itself), the times (now, and the deadline the client's
    timeout sets), the callback URL (so a key queued with ``POST /v1/requests`` can be fetched with
    ``POST /v1/chat/completions``) and whether it streams."""
    what = msgspec.structs.replace(
        request, request_id="-", created_ms=0, deadline_ms=None, callback_url=None, stream=False
    )
    return hashlib.sha256(msgspec.json.encode(what, order="sorted")).hexdigest()


def to_completion(result: Result, *, requested_model: str) -> ChatCompletion:
    """The OpenAI ``chat.completion`` for an ``ok`` result; raises the mapped :class:`ApiError` otherwise."""
    if result.status != "ok" or result.output is None:
        raise result_error(result)
    usage = result.usage
    return ChatCompletion(
        id=completion_id(result.request_id),
        created=(result.completed_ms or result.created_ms) // 1000,
        model=result.model or requested_model,
        choices=[
            Choice(
                message=AssistantMessage(content=result.output.text),
                finish_reason=result.output.finish_reason,
            )
        ],
        usage=CompletionUsage(
            prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens,
            total_tokens=usage.prompt_tokens + usage.completion_tokens,
        ),
        costwise=CostwiseInfo(
            request_id=result.request_id, source=result.source, cost_usd=result.cost_usd, pool=result.pool
        ),
    )


def result_error(result: Result) -> ApiError:
    """The HTTP error an error result maps to."""
    return from_error_info(result.error) if result.error else ApiError(500, "internal", "result without output")


def model_list(catalog: Catalog) -> ModelList:
    """What ``model`` may name, in OpenAI's list format: ``auto``, every tier and alias, every backend's model."""
    cards = [ModelCard(id=AUTO, costwise_kind="auto")]
    cards += [ModelCard(id=tier.name, costwise_kind="tier") for tier in catalog.tiers]
    cards += [ModelCard(id=alias, costwise_kind="alias") for alias in catalog.aliases]
    models = dict.fromkeys(backend.model for backend in catalog.backends)  # once each, in catalog order
    cards += [ModelCard(id=model, costwise_kind="model") for model in models]
    return ModelList(data=cards)
