from __future__ import annotations

import json
from pathlib import Path

import msgspec
import pytest

from costwise.contracts import ChatMessage, DecodeError, InferenceRequest, Job, Result, decode, encode, subjects
from costwise.contracts.schema import WIRE_TYPES, render

SCHEMAS = Path(__file__).parents[1] / "schemas"
RECORDED = Path(__file__).parent / "recorded_v1"


def test_committed_schemas_match_code() -> None:
    committed = {p.name: p.read_text() for p in SCHEMAS.glob("*.json")}
    assert committed == render(), "schemas changed: run `make schemas` and commit contracts/schemas"


@pytest.mark.parametrize("path", sorted(RECORDED.glob("*.json")), ids=lambda p: p.stem)
def test_recorded_v1_payloads_still_decode(path: Path) -> None:
    kind = {t.__struct_config__.tag: t for t in WIRE_TYPES}[json.loads(path.read_text())["type"]]
    decoded = decode(path.read_bytes(), kind)
    assert decode(encode(decoded), kind) == decoded


def test_every_wire_type_has_a_recorded_payload() -> None:
    recorded = {json.loads(p.read_text())["type"] for p in RECORDED.glob("*.json")}
    assert recorded == {t.__struct_config__.tag for t in WIRE_TYPES}


def test_wire_format_is_a_map_with_a_versioned_tag() -> None:
    req = InferenceRequest(request_id="r1", tenant="acme", messages=[ChatMessage(role="user", content="hi")])
    doc = json.loads(encode(req))
    assert isinstance(doc, dict) and doc["type"] == "inference_request.v1" and doc["request_id"] == "r1"
    for kind in WIRE_TYPES:
        assert not kind.__struct_config__.array_like


def test_unknown_fields_from_a_newer_producer_are_ignored() -> None:
    doc = json.loads(
        encode(InferenceRequest(request_id="r1", tenant="a", messages=[ChatMessage(role="user", content="x")]))
    )
    doc["field_from_v1_1"] = 42
    assert decode(json.dumps(doc), InferenceRequest).request_id == "r1"


@pytest.mark.parametrize(
    "patch, where",
    [
        ({"tenant": "a.b"}, "$.tenant"),  # a dot would inject a subject token
        ({"request_id": "x" * 200}, "$.request_id"),
        ({"messages": []}, "$.messages"),
        ({"sampling": {"max_tokens": 0}}, "$.sampling.max_tokens"),
        ({"sampling": {"temperature": 9}}, "$.sampling.temperature"),
    ],
)
def test_invalid_requests_fail_with_the_offending_path(patch: dict[str, object], where: str) -> None:
    doc = {
        "type": "inference_request.v1",
        "request_id": "r",
        "tenant": "t",
        "messages": [{"role": "user", "content": "q"}],
    }
    doc.update(patch)
    with pytest.raises(DecodeError, match=rf"at `{where.replace('$', '[$]')}`"):
        decode(json.dumps(doc), InferenceRequest)


def test_invalid_utf8_is_a_decode_error() -> None:
    payload = (
        b'{"type":"inference_request.v1","request_id":"r","tenant":"t","messages":[{"role":"user","content":"\xff"}]}'
    )
    with pytest.raises(DecodeError, match="UTF-8"):
        decode(payload, InferenceRequest)


def test_every_subject_is_captured_by_exactly_one_stream() -> None:
    samples = [
        subjects.requests("t"),
        subjects.jobs("p"),
        subjects.worker_own_jobs("p", "host.example-42"),
        subjects.route("t"),
        subjects.completions("p"),
        subjects.results("t", "r"),
        subjects.usage("t"),
        subjects.dead_letters("svc"),
        subjects.cache_control("t"),
        subjects.webhooks("t"),
        subjects.webhook_failed("t"),
        subjects.webhook_dead_letters("t"),
        subjects.JOB_MAX_DELIVERIES.replace("*", "worker-p"),
    ]
    for subject in samples:
        owners = [s for s in subjects.ALL_STREAMS if any(subjects.matches(pat, subject) for pat in s.subjects)]
        assert len(owners) == 1, subject
        assert subjects.stream_of(subject) is owners[0]
    consumers = [
        subjects.CACHE_REQUESTS,
        subjects.CACHE_RESULTS,
        subjects.CACHE_CONTROL,
        subjects.ROUTER_ROUTE,
        subjects.ROUTER_COMPLETIONS,
        subjects.ROUTER_ADVISORIES,
        subjects.worker_jobs("p"),
        subjects.worker_own("p", "w1"),
        subjects.WEBHOOKS_RESULTS,
        subjects.webhooks_tenant("t"),
    ]
    for consumer in consumers:
        stream = next(s for s in subjects.ALL_STREAMS if s.name == consumer.stream)
        example = consumer.filter_subject.replace(">", "x").replace("*", "x")
        assert any(subjects.matches(pat, example) for pat in stream.subjects)


def test_a_workers_own_queue_names_one_worker_and_reads_back() -> None:
    subject = subjects.worker_own_jobs("pool-a", "ip-10-0-0-1.ec2.internal-4242")
    assert subject == "costwise.v1.jobs.pool-a.w.ip-10-0-0-1_ec2_internal-4242"
    pool, token = subjects.worker_own_owner(subject) or ("", "")
    assert pool == "pool-a" and subjects.worker_own_jobs(pool, token) == subject  # the token is idempotent
    assert subjects.worker_own_owner(subjects.jobs("pool-a")) is None
    long_id = "h" * 100 + ".x"
    assert len(subjects.worker_token(long_id)) <= 64 and subjects.worker_token(subjects.worker_token(long_id)) == (
        subjects.worker_token(long_id)
    )
    # a worker's durable can never be a pool's shared one (pools cannot contain "@")
    assert subjects.worker_own("a-w-b", "c").durable != subjects.worker_jobs("a-w-b").durable
    assert subjects.worker_own("p", "w").filter_subject != subjects.worker_jobs("p").filter_subject


def test_tenant_of_reads_every_tenant_scoped_subject() -> None:
    for subject in (
        subjects.requests("acme"),
        subjects.route("acme"),
        subjects.results("acme", "r1"),
        subjects.usage("acme"),
        subjects.cache_control("acme"),
        subjects.webhooks("acme"),
    ):
        assert subjects.tenant_of(subject) == "acme", subject
    for subject in (
        subjects.requests(""),
        subjects.results("", "r1"),
        subjects.results("acme", ""),
        subjects.jobs("pool"),
        subjects.completions("pool"),
        subjects.dead_letters("cache"),
        subjects.requests("acme") + ".more",
    ):
        assert subjects.tenant_of(subject) is None, subject


def test_stream_names_are_unique() -> None:
    names = [s.name for s in subjects.ALL_STREAMS]
    assert len(names) == len(set(names))


def test_job_nests_the_full_request() -> None:
    req = InferenceRequest(request_id="r1", tenant="a", messages=[ChatMessage(role="user", content="x")])
    job = decode(encode(Job(job_id="r1", request=req, pool="default")), Job)
    assert job.request == req and job.attempt == 1 and job.checkpoint is None


def test_result_error_codes_round_trip() -> None:
    raw = b'{"type":"result.v1","request_id":"r","tenant":"t","status":"error","error":{"code":"prompt_too_long","message":"m"}}'
    result = decode(raw, Result)
    assert result.error is not None and result.error.code == "prompt_too_long"
    with pytest.raises(msgspec.ValidationError):
        decode(raw.replace(b"prompt_too_long", b"no_such_code"), Result)
