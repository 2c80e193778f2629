"""The semantic-cache hit verifier with its shipped artifact: real MiniLM weights, real embeddings, no mocks."""

from __future__ import annotations

from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from costwise.cache import CachedAnswer, EdgeIndex, Probe, load_semantic
from costwise.cache.verify import LEGACY_CHECKS, Verifier, near_repeat, normalise, veto
from costwise.cache.verify.lexical import codes_differ, entities_differ, negation_differs, numbers, numbers_differ
from costwise.cache.verify.similarity import cosine_similarities
from costwise.contracts import ChatMessage, InferenceRequest, Output, Usage
from costwise.embed import Backend, space_of

PARAPHRASE = ("How can I lose weight quickly?", "What is the fastest way to lose weight?")
NEGATION = ("Can I use my credit card abroad?", "Why can't I use my credit card abroad?")
OTHER_NUMBER = ("How do I lose 5 kg in a month?", "How do I lose 10 kg in a month?")
OTHER_ORDER_ID = ("Where is my order AB-1234?", "Where is my order AB-1243?")
UNRELATED = ("What is the capital of France?", "How do I learn Python programming?")
CASES = [PARAPHRASE, NEGATION, OTHER_NUMBER, OTHER_ORDER_ID, UNRELATED]


@pytest.fixture(scope="module", params=["torch", "onnx-int8"])
def backend(request: pytest.FixtureRequest) -> Backend:
    """fp32 vectors and int8 ones: each has its own pre-threshold and calibration in the artifact."""
    return request.param  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def verifier(backend: Backend) -> Verifier:
    return Verifier.load(threads=1, space=space_of(backend))


@pytest.fixture(scope="module")
def similarity(backend: Backend) -> dict[tuple[str, str], float]:
    """Each case's cosine under the cache's own embedder, as the Qdrant search would report it."""
    return dict(zip(CASES, cosine_similarities(CASES, backend=backend), strict=True))


def test_vectors_of_a_space_it_was_never_calibrated_for_are_refused() -> None:
    with pytest.raises(ValueError, match="not calibrated for minilm-l6-fp16 embeddings"):
        Verifier.load(threads=1, space="minilm-l6-fp16")


def test_a_paraphrase_is_accepted(verifier: Verifier, similarity: dict[tuple[str, str], float]) -> None:
    decision = verifier.decide(*PARAPHRASE, similarity[PARAPHRASE])
    assert decision.accepted, decision


@pytest.mark.parametrize("case", [NEGATION, OTHER_NUMBER, OTHER_ORDER_ID, UNRELATED], ids=lambda c: c[1])
def test_a_different_question_is_rejected(
    verifier: Verifier, similarity: dict[tuple[str, str], float], case: tuple[str, str]
) -> None:
    assert not verifier.accept(*case, similarity[case])
    assert not verifier.accept(case[1], case[0], similarity[case])  # whichever side is cached


@pytest.mark.parametrize("case", [NEGATION, OTHER_NUMBER, OTHER_ORDER_ID], ids=lambda c: c[1])
def test_the_model_alone_also_refuses_what_the_vetoes_catch(
    verifier: Verifier, similarity: dict[tuple[str, str], float], case: tuple[str, str]
) -> None:
    # Defence in depth: the vetoes are not the only thing standing between these pairs and a wrong answer.
    assert verifier.score([case], [similarity[case]])[0] < verifier.threshold()


def test_the_rejections_name_their_reason(verifier: Verifier, similarity: dict[tuple[str, str], float]) -> None:
    assert verifier.decide(*OTHER_ORDER_ID, similarity[OTHER_ORDER_ID]).reason == "veto:numbers"
    assert verifier.decide(*NEGATION, similarity[NEGATION]).reason == "veto:negation"
    assert verifier.decide(*PARAPHRASE, 0.0).reason == "similarity"


def test_score_is_batched_and_deterministic(verifier: Verifier) -> None:
    batch = verifier.score(CASES)
    assert len(batch) == len(CASES)
    assert all(0.0 <= p <= 1.0 for p in batch)
    assert verifier.score(CASES) == batch
    # One at a time (no padding) agrees with the padded batch up to float rounding.
    assert [verifier.score([c])[0] for c in CASES] == pytest.approx(batch, abs=1e-4)
    assert batch[0] > max(batch[1:]), "the paraphrase should outscore every different question"


def test_target_precision_maps_to_a_calibrated_threshold(verifier: Verifier) -> None:
    stricter = verifier.max_target_precision
    assert verifier.threshold(0.85) <= verifier.threshold() <= verifier.threshold(stricter)
    assert verifier.threshold() == verifier.threshold(verifier.default_target_precision)
    with pytest.raises(ValueError, match="exceeds"):  # a tenant target calibration never reached
        verifier.threshold(stricter + 0.001)


def test_numbers_are_normalised() -> None:
    assert numbers("Is 1,000 more than three?") == {"1000", "3"}
    assert not numbers_differ("Best phone under 20000?", "Best phone under 20,000?")
    assert numbers_differ("Python 2 or Python 3?", "Python 3 or Python 4?")


def test_codes_compare_across_spacing_and_order() -> None:
    assert not codes_differ("Is the iPhone6 waterproof?", "Is the iphone 6 waterproof?")
    assert not codes_differ("Best earphones under rs1000?", "Best earphones under 1000 rs?")
    assert codes_differ("Status of order ORD-A77?", "Status of order ORD-B77?")


def test_negation_and_entities() -> None:
    assert negation_differs("Should I learn Java?", "Should I never learn Java?")
    assert not negation_differs("Why can't I sleep?", "Why can\u2019t I sleep at night?")
    assert entities_differ("How do I learn Python fast?", "How do I learn Java fast?")
    assert not entities_differ("Is Trump a good president?", "Is Donald Trump a good president?")
    assert veto(*PARAPHRASE) is None


# ---- issue 16: traps refused by a named check, near-repeats served ---------------------------------------------

TRAPS = {
    "negation": [
        ("My card has arrived, what now?", "My card hasn't arrived, what now?"),
        ("why werent my funds added", "Why were my funds added?"),
    ],
    "antonym": [
        ("How do I activate my card?", "How do I deactivate my card?"),
        ("How do I turn on notifications?", "How do I turn off notifications?"),
        ("Should I eat eggs before a run?", "Should I avoid eggs before a run?"),
        ("What are the pros and cons of renting?", "What are the cons and cons of renting?"),
    ],
    "kinds": [
        ("can i top up with euros", "can i top up with dollars"),
        ("Does my wife need her own card?", "Does my son need his own card?"),
    ],
    "dates": [("I was charged twice on Monday", "I was charged twice on Friday")],
    "quantities": [("Why was I charged twice?", "Why was I charged once?")],
    "numbers": [("Can I transfer 50 euros?", "Can I transfer 70 euros?")],
    "scope": [
        ("How do I freeze my card?", "How do I freeze all my cards?"),
        ("What is my spending limit this month?", "What is my spending limit this year?"),
        ("Can I open an account?", "Can I open a joint account?"),
        ("How do I cancel my subscription?", "How do I cancel someone else's subscription?"),
    ],
}
NEAR_REPEATS = [
    ("What's the capital city of France?", "whats the capital city of france"),  # the known miss of issue 16
    ("How do I change my delivery address?", "How do I change my delivery adress?"),  # typo
    ("I got my new card. How do I activate it?", "How do I activate it, I got my new card?"),  # clause order
    ("Where is my refund?", "Hi, where is my refund? Thanks in advance."),  # courtesy
    ("I can't log in to the app", "I cannot log in to the app"),  # contraction
    ("Why is my top-up still pending?", "why is my topup still pending"),  # case and punctuation
]
TRAP_CASES = [(check, pair) for check, pairs in TRAPS.items() for pair in pairs]


@pytest.fixture(scope="module")
def near_repeat_similarity(backend: Backend) -> dict[tuple[str, str], float]:
    return dict(zip(NEAR_REPEATS, cosine_similarities(NEAR_REPEATS, backend=backend), strict=True))


@pytest.mark.parametrize(("check", "pair"), TRAP_CASES, ids=[f"{c}:{p[1]}" for c, p in TRAP_CASES])
def test_each_trap_kind_is_refused_by_a_check_that_names_itself(
    verifier: Verifier, check: str, pair: tuple[str, str]
) -> None:
    # A cosine of 0.99: as if the index had found the pair, so the named check, not the pre-threshold, decides.
    for query, cached in (pair, pair[::-1]):
        decision = verifier.decide(query, cached, 0.99)
        assert not decision.accepted and decision.refused_by == check, decision
        assert decision.reason == f"veto:{check}"


@pytest.mark.parametrize("pair", NEAR_REPEATS, ids=lambda p: p[1])
def test_near_repeats_are_served(
    verifier: Verifier, near_repeat_similarity: dict[tuple[str, str], float], pair: tuple[str, str]
) -> None:
    similarity = near_repeat_similarity[pair]
    assert similarity >= verifier.candidate_floor, "the index would not even propose this candidate"
    for query, cached in (pair, pair[::-1]):
        decision = verifier.decide(query, cached, similarity)
        assert decision.accepted and decision.refused_by is None, decision


def test_the_model_still_decides_what_is_no_near_repeat(verifier: Verifier) -> None:
    decision = verifier.decide(*PARAPHRASE, 0.95)
    assert decision.reason in {"accepted", "verifier"} and decision.probability is not None
    assert (decision.refused_by == "verifier") is (not decision.accepted)


def test_the_verifier_shipped_before_issue_16_is_still_selectable(backend: Backend) -> None:
    old = Verifier.load(threads=1, space=space_of(backend), checks=LEGACY_CHECKS, near_repeats=False)
    assert old.checks == LEGACY_CHECKS and not old.near_repeats
    # It reads "werent" as not negated, so its negation check refuses a pair that only drops an apostrophe.
    assert old.decide("Why weren't my funds added?", "why werent my funds added", 0.99).refused_by == "negation_v1"


def test_normalisation_ignores_how_a_question_is_typed_but_not_what_it_asks() -> None:
    assert normalise("What\u2019s the FEE? Thank you!").startswith("what is the fee?")
    assert normalise("Whats the fee") == "what is the fee" and "thank" not in normalise("Thanks in advance")
    assert near_repeat("I don't know my PIN", "i do not know my pin")
    assert not near_repeat("Where is my order?", "Where are my orders?")  # plural: scope, not a typo
    assert not near_repeat("Transfer from savings to checking", "Transfer from checking to savings")  # roles
    assert not near_repeat("What is the fee for $10?", "What is the fee for 10?")  # a currency is a word
    assert veto("I lost my card", "I found my card") == "antonym"
    assert veto("Is the US open?", "Is it open for us?") is None  # "us" the pronoun is no country
    # Words alone are not the question: symbols and letters outside a-z count ("~" vs "%", "C#" vs "C").
    assert not near_repeat("What does ~ mean in C++?", "What does % mean in C++?")
    assert not near_repeat("What does さあ mean?", "What does 呵呵 mean?")
    assert not near_repeat("Is C# harder than C++?", "Is C harder than C++?")
    assert near_repeat("Where is my invoice #85632?", "where is my invoice 85632")


async def test_the_refusing_check_is_named_on_the_cache_span(tmp_path: Path, backend: Backend) -> None:
    """Through the semantic cache's own lookup: a trap's refusal puts the check's name on the current span."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    semantic = load_semantic(EdgeIndex.open(tmp_path / "index"), backend, embed_workers=1)
    try:
        cached, asked = "How do I freeze my card?", "How do I freeze all my cards?"
        answer = CachedAnswer(
            request_id="r1", output=Output(text="-", finish_reason="stop"), model=None, usage=Usage(), stored_ms=0
        )
        stored = Probe(question=cached, scope="s", vector=await semantic.embedder.embed(cached))
        await semantic.store("t", "k1", stored, answer, expires_ms=2**52)
        req = InferenceRequest(request_id="q1", tenant="t", messages=[ChatMessage(role="user", content=asked)])
        probe = Probe(question=asked, scope="s", vector=await semantic.embedder.embed(asked))
        with provider.get_tracer("test").start_as_current_span("lookup"):
            assert await semantic.lookup(req, probe, now_ms=0) is None
    finally:
        await semantic.close()
    (span,) = exporter.get_finished_spans()
    attributes = dict(span.attributes or {})
    assert attributes["costwise.cache.semantic.candidate"] == "r1"
    assert float(attributes["costwise.cache.semantic.similarity"]) >= semantic.verifier.min_similarity
    assert attributes["costwise.cache.semantic.decision"] == "veto:scope"
    assert attributes["costwise.cache.semantic.refused_by"] == "scope"


# ---- issue 16, follow-up: near-repeats below the model's pre-threshold; the best of several candidates --------

LOW_COSINE_TYPOS = [
    ("What's the right way to activate my card?", "What's the right way to acitvate my card?"),
    ("need support with my signup", "need spuport with my signup"),
    ("I can not find my refund.", "I can not find my reund."),
]


@pytest.fixture(scope="module")
def low_cosine_typo_similarity(backend: Backend) -> dict[tuple[str, str], float]:
    return dict(zip(LOW_COSINE_TYPOS, cosine_similarities(LOW_COSINE_TYPOS, backend=backend), strict=True))


@pytest.mark.parametrize("pair", LOW_COSINE_TYPOS, ids=lambda p: p[1])
def test_a_typo_that_moves_the_vector_below_the_pre_threshold_is_still_served(
    verifier: Verifier, low_cosine_typo_similarity: dict[tuple[str, str], float], pair: tuple[str, str]
) -> None:
    similarity = low_cosine_typo_similarity[pair]
    # The case of issue 16: one misspelled word moves MiniLM's vector below the model's pre-threshold.
    assert verifier.candidate_floor <= similarity < verifier.min_similarity
    for query, cached in (pair, pair[::-1]):
        decision = verifier.decide(query, cached, similarity)
        assert decision.accepted and decision.reason == "near_repeat", decision


def test_below_the_pre_threshold_only_a_near_repeat_is_served(verifier: Verifier) -> None:
    between = (verifier.near_repeat_min_similarity + verifier.min_similarity) / 2
    assert verifier.decide(*PARAPHRASE, between).refused_by == "similarity"  # the model never runs down there
    assert verifier.decide(*LOW_COSINE_TYPOS[0], verifier.near_repeat_min_similarity - 0.01).refused_by == "similarity"
    # The checks still run before the near-repeat rule: a one-prefix antonym is refused by name.
    assert (
        verifier.decide("How do I activate my card?", "How do I deactivate my card?", between).refused_by == "antonym"
    )


async def test_a_low_cosine_near_repeat_is_served_through_the_semantic_cache(tmp_path: Path, backend: Backend) -> None:
    """The lookup asks the verifier from its candidate floor, not from the model's pre-threshold."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    semantic = load_semantic(EdgeIndex.open(tmp_path / "index"), backend, embed_workers=1)
    cached, asked = LOW_COSINE_TYPOS[0]
    try:
        answer = CachedAnswer(
            request_id="r1", output=Output(text="ok", finish_reason="stop"), model=None, usage=Usage(), stored_ms=0
        )
        stored = Probe(question=cached, scope="s", vector=await semantic.embedder.embed(cached))
        await semantic.store("t", "k1", stored, answer, expires_ms=2**52)
        req = InferenceRequest(request_id="q1", tenant="t", messages=[ChatMessage(role="user", content=asked)])
        probe = Probe(question=asked, scope="s", vector=await semantic.embedder.embed(asked))
        with provider.get_tracer("test").start_as_current_span("lookup"):
            hit = await semantic.lookup(req, probe, now_ms=0)
    finally:
        await semantic.close()
    assert hit is not None and hit.answer.output.text == "ok"
    assert hit.similarity < semantic.verifier.min_similarity
    (span,) = exporter.get_finished_spans()
    assert dict(span.attributes or {})["costwise.cache.semantic.decision"] == "near_repeat"


async def test_the_best_of_the_nearest_candidates_is_served(tmp_path: Path, backend: Backend) -> None:
    """The nearest cached question is a trap, the next one the same question misspelled: judging one candidate
    misses, judging three serves the second."""
    typo_cached, asked = LOW_COSINE_TYPOS[0][1], LOW_COSINE_TYPOS[0][0]
    trap = "What's the right way to deactivate my card?"
    semantic = load_semantic(EdgeIndex.open(tmp_path / "index"), backend, embed_workers=1, candidates=3)
    try:
        for i, text in enumerate((trap, typo_cached)):
            answer = CachedAnswer(
                request_id=f"r{i}",
                output=Output(text=text, finish_reason="stop"),
                model=None,
                usage=Usage(),
                stored_ms=0,
            )
            stored = Probe(question=text, scope="s", vector=await semantic.embedder.embed(text))
            await semantic.store("t", f"k{i}", stored, answer, expires_ms=2**52)
        req = InferenceRequest(request_id="q1", tenant="t", messages=[ChatMessage(role="user", content=asked)])
        probe = Probe(question=asked, scope="s", vector=await semantic.embedder.embed(asked))
        (nearest, second) = await semantic.index.nearest_k("t", "s", probe.vector, now_ms=0, limit=2)
        assert nearest.payload["request_id"] == "r0" and second.payload["request_id"] == "r1"
        hit = await semantic.lookup(req, probe, now_ms=0)
        semantic.candidates = 1
        assert await semantic.lookup(req, probe, now_ms=0) is None  # the trap alone: refused
    finally:
        await semantic.close()
    assert hit is not None and hit.answer.output.text == typo_cached
