"""Cheap text features: of a prompt (for the router) and of a response to it (for the cascade's check).

Response features look for the failure signs a weak model leaves in its own text: no final answer, a cut-off
ending, arithmetic it wrote down wrongly, numbers of the question it never used, hedging.
"""

from __future__ import annotations

import ast
import math
import operator
import re

import numpy as np
from numpy.typing import NDArray

__all__ = ["PROMPT_FEATURES", "RESPONSE_FEATURES", "arithmetic_errors", "prompt_features", "response_features"]

PROMPT_FEATURES = ("log_chars", "log_words", "numbers", "has_options", "lines", "question_marks")
RESPONSE_FEATURES = (
    "log_chars",
    "has_final",
    "final_integer",
    "final_negative",
    "final_in_prompt",
    "cut_off",
    "equations",
    "arith_errors",
    "unused_prompt_numbers",
    "hedges",
    "refusal",
    "steps_per_prompt_number",
    "final_is_last_result",
    "fractional_results",
)

_NUMBER = re.compile(r"(?<![\w.])-?\d[\d,]*(?:\.\d+)?")
_OPTIONS = re.compile(r"^\s*[A-D][.)]\s", re.MULTILINE)
_FINAL = re.compile(r"(?:####|answer is|answer:)\s*\$?\s*(-?[\d,]*\.?\d+)", re.IGNORECASE)
# "<<3*4=12>>" (GSM8K calculator notes) or a plain "3 x 4 = 12"
_OPERAND = r"\d++(?:[.,]\d++)*+"  # possessive: long digit runs cannot make the match backtrack
_EQUATION = re.compile(
    r"<<([^=<>]{1,200})=([^<>]{1,50})>>"
    rf"|(?<![\d.,])((?:{_OPERAND}\s*+[-+*/x\u00d7\u00f7]\s*+){{1,20}}+{_OPERAND})\s*=\s*\$?(-?\d[\d,]*(?:\.\d+)?)"
)
_HEDGES = re.compile(
    r"\b(?:assum\w*|approximately|not sure|unclear|cannot be determined|might|perhaps|probably)\b", re.I
)
_REFUSAL = re.compile(r"\b(?:I can(?:no|')t|I am unable|I'm unable|I won't|as an AI)\b", re.I)
MAX_CHARS = 16_000
"""Longer prompts are read from the start, longer responses from the end (where the final answer is)."""
_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def prompt_features(prompt: str) -> NDArray[np.float32]:
    """Length, how many numbers and lines, whether it is multiple choice: in :data:`PROMPT_FEATURES` order."""
    prompt = prompt[:MAX_CHARS]
    return np.array(
        [
            math.log1p(len(prompt)),
            math.log1p(len(prompt.split())),
            math.log1p(len(_NUMBER.findall(prompt))),
            float(bool(_OPTIONS.search(prompt))),
            math.log1p(prompt.count("\n")),
            float(prompt.count("?")),
        ],
        dtype=np.float32,
    )


def response_features(prompt: str, response: str) -> NDArray[np.float32]:
    """Signs of a wrong answer in ``response``: in :data:`RESPONSE_FEATURES` order."""
    prompt, response = prompt[:MAX_CHARS], response[-MAX_CHARS:]
    final = _final_answer(response)
    sides = _equations(response)
    results = [right for _, right in sides if right is not None]
    equations, errors = _count_errors(sides)
    prompt_numbers = {_num(n) for n in _NUMBER.findall(prompt)} - {None}
    response_numbers = {_num(n) for n in _NUMBER.findall(response)}
    stripped = response.rstrip()
    return np.array(
        [
            math.log1p(len(response)),
            float(final is not None),
            float(final is not None and final == int(final)),
            float(final is not None and final < 0),
            float(final is not None and final in prompt_numbers),
            float(bool(stripped) and stripped[-1].isalnum() and final is None),
            math.log1p(equations),
            float(errors),
            len(prompt_numbers - response_numbers) / max(1, len(prompt_numbers)),
            float(len(_HEDGES.findall(response))),
            float(bool(_REFUSAL.search(response))),
            equations / max(1, len(prompt_numbers)),
            float(bool(results) and final is not None and math.isclose(results[-1], final, abs_tol=0.01)),
            float(sum(r != int(r) for r in results)),
        ],
        dtype=np.float32,
    )


def arithmetic_errors(text: str) -> tuple[int, int]:
    """(equations found, equations whose left side does not evaluate to the right side) in ``text``."""
    return _count_errors(_equations(text))


def _equations(text: str) -> list[tuple[float | None, float | None]]:
    """(value of the left side, the right side) of each equation written in ``text``; None: not arithmetic."""
    return [(_evaluate(nl or lhs), _num(nr or rhs)) for nl, nr, lhs, rhs in _EQUATION.findall(text)]


def _count_errors(sides: list[tuple[float | None, float | None]]) -> tuple[int, int]:
    checked = [(left, right) for left, right in sides if left is not None and right is not None]
    wrong = sum(not math.isclose(left, right, rel_tol=0.01, abs_tol=0.01) for left, right in checked)
    return len(checked), wrong


def _final_answer(response: str) -> float | None:
    match = _FINAL.findall(response)
    return _num(match[-1]) if match else None


def _num(text: str) -> float | None:
    try:
        value = float(text.replace(",", "").replace("$", "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _evaluate(expression: str) -> float | None:
    """The value of a +-*/ expression of numbers (anything else: None); never ``eval``."""
    cleaned = expression.replace(",", "").replace("\u00d7", "*").replace("\u00f7", "/").replace("\\", "")
    cleaned = re.sub(r"(?<=\d)\s*x\s*(?=\d)", "*", cleaned).replace("$", "")
    if len(cleaned) > 200:
        return None
    try:
        value = _eval_node(ast.parse(cleaned, mode="eval").body)
    except (SyntaxError, ValueError, ZeroDivisionError, OverflowError, RecursionError):
        return None
    return value if math.isfinite(value) else None


def _eval_node(node: ast.expr) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return float(node.value)
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_eval_node(node.left), _eval_node(node.right)))
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return -_eval_node(node.operand)
    raise ValueError("not arithmetic")
