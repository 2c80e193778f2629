"""The semantic-cache hit verifier with its shipped artifact: real MiniLM weights, real embeddings, no mocks."""

from __future__ import annotations

import pytest

from costwise.cache.verify import Verifier, veto
from costwise.cache.verify.lexical import codes_differ, entities_differ, negation_differs, numbers, numbers_differ
from costwise.cache.verify.similarity import cosine_similarities
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
