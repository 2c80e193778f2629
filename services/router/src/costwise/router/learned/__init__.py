"""Learned routing and the cascade's quality check.

At run time: :class:`RoutePredictor` (P(small tier OK) from a prompt's MiniLM embedding + cheap features, and the
calibrated threshold for a quality target), :class:`OnlineRouter` (per-tenant refinement from the cascade's
verdicts), :func:`check_response` (accept or escalate a small-tier answer; optionally with the learned
:class:`ResponseVerifier`). Offline: loading RouteLLM-format outcomes, training, choosing operating points.
"""

from .calibrate import CascadePoint, Policy, cascade_point, evaluate, evaluate_cascade, router_threshold
from .cascade import ResponseVerifier, Verdict, check_response, verifier_matrix
from .data import Outcomes, load_routellm, train_mask
from .model import LogisticHead, RoutePredictor, TextHead, design_matrix
from .online import OnlineRouter
from .train import QUALITIES, cross_fit, small_good_enough, train_router

__all__ = [
    "QUALITIES",
    "CascadePoint",
    "LogisticHead",
    "OnlineRouter",
    "Outcomes",
    "Policy",
    "ResponseVerifier",
    "RoutePredictor",
    "TextHead",
    "Verdict",
    "cascade_point",
    "check_response",
    "cross_fit",
    "design_matrix",
    "evaluate",
    "evaluate_cascade",
    "load_routellm",
    "router_threshold",
    "small_good_enough",
    "train_mask",
    "train_router",
    "verifier_matrix",
]
