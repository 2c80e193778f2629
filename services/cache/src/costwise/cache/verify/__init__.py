"""Hit verification for the semantic cache: may a cached answer be served for a differently worded query?

``Verifier.load()`` loads the shipped artifact (fine-tuned MiniLM cross-encoder layers + calibration);
``Verifier.accept(query, cached, similarity)`` applies the cosine pre-threshold, the lexical vetoes
(:mod:`.lexical`, :mod:`.traps`), the near-repeat rule (:mod:`.normalise`) and the calibrated
cross-encoder threshold.
"""

from .data import SPLIT_RULE, Pair, load_pairs, split_of
from .lexical import CHECKS, DEFAULT_CHECKS, LEGACY_CHECKS, veto
from .normalise import near_repeat, normalise
from .verifier import ARTIFACT_DIR, Decision, Verifier

__all__ = [
    "ARTIFACT_DIR",
    "CHECKS",
    "DEFAULT_CHECKS",
    "LEGACY_CHECKS",
    "SPLIT_RULE",
    "Decision",
    "Pair",
    "Verifier",
    "load_pairs",
    "near_repeat",
    "normalise",
    "split_of",
    "veto",
]
