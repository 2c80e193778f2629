"""What the recording server says and how it counts it: a token estimate, prompt usage, and the stand-in answer for a
prompt nothing recorded.

**Tokens.** A regex split close to what BPE tokenizers (cl100k, Llama's) do to English: a word of up to 8 letters
is one token, longer words one token per 8 letters, numbers one token per 3 digits (cl100k's grouping), every
other symbol one token, a single space joined to the token after it, other whitespace one token per run. The
tokens concatenate to the text exactly, so a stream of them adds up to the answer, and a prefix that ends between
two tokens leaves the rest's tokens unchanged (what a continued answer relies on).

**Prompt usage.** OpenAI's chat count: each message costs its content's tokens plus ``PER_MESSAGE_TOKENS`` (role
markers), and the reply is primed with ``REPLY_PRIMING_TOKENS`` (the assistant header). A continued answer's
final assistant message takes the priming's place (its header is that same header), so continuing adds exactly
the prefix's tokens to the prompt.

**Stand-in length.** Answer lengths are right-skewed and close to lognormal; a stand-in's token count is drawn from
a lognormal with median ``STAND_IN_MEDIAN_TOKENS`` = 80 and sigma = ``STAND_IN_SIGMA`` = 0.5 (of the natural log):
p10 ≈ 42, p90 ≈ 152, mean ≈ 91 tokens, then rounded to the nearest sentence end (sentences here are 8-20 tokens).
The shape is measured, the median assumed: by this estimate the answers RouteLLM recorded for GSM8K
(../shared/data, 660 prompts) have median 97 tokens (Mixtral-8x7B) and 104 (GPT-4-1106), sigma 0.45-0.46; FAQ traffic
(banking77, Bitext) asks short support questions, answered in a few sentences (a 40-150-word help-desk reply),
so the median is set a little below. Measured over 5,000 stand-ins: median 81, mean 91, sigma 0.50. With the
workload's FAQ budget of 256 tokens, about 1 % are cut off (finish ``length``), as a real model's longest would be.
"""

from __future__ import annotations

import hashlib
import math
import random
import re
from collections.abc import Sequence

__all__ = [
    "PER_MESSAGE_TOKENS",
    "REPLY_PRIMING_TOKENS",
    "STAND_IN_MAX_TOKENS",
    "STAND_IN_MEDIAN_TOKENS",
    "STAND_IN_MIN_TOKENS",
    "STAND_IN_SIGMA",
    "Conversation",
    "count_tokens",
    "prompt_tokens",
    "stand_in",
    "tokens",
]

Conversation = tuple[tuple[str, str], ...]
"""A prompt as (role, content) pairs: what recordings are looked up by."""

PER_MESSAGE_TOKENS = 3
REPLY_PRIMING_TOKENS = 3
STAND_IN_MEDIAN_TOKENS = 80
STAND_IN_SIGMA = 0.5
STAND_IN_MIN_TOKENS = 8
STAND_IN_MAX_TOKENS = 2048

_TOKEN = re.compile(r" ?\d{1,3}| ?[^\W\d_]{1,8}| ?[^\w\s]|\s+|_")
_WORD = re.compile(r"[A-Za-z]{3,}")
_STOPWORDS = frozenset(
    [
        "the",
        "and",
        "but",
        "for",
        "with",
        "from",
        "about",
        "into",
        "over",
        "under",
        "you",
        "your",
        "our",
        "their",
        "his",
        "her",
        "its",
        "this",
        "that",
        "these",
        "those",
        "are",
        "was",
        "were",
        "been",
        "being",
        "does",
        "did",
        "have",
        "has",
        "had",
        "can",
        "could",
        "would",
        "should",
        "will",
        "shall",
        "may",
        "might",
        "must",
        "what",
        "which",
        "who",
        "whom",
        "whose",
        "when",
        "where",
        "why",
        "how",
        "not",
        "yes",
        "please",
        "thanks",
        "thank",
        "hello",
        "hey",
        "get",
        "got",
        "there",
        "here",
        "just",
        "also",
        "any",
        "some",
        "need",
        "want",
        "know",
        "tell",
        "help",
    ]
)
_OPENERS = (
    "Thanks for asking about {topic}.",
    "Happy to help with {topic}.",
    "Here is what you need to know about {topic}.",
    "Good question about {topic}.",
)
_BODY = (
    "You can find this in the app under Settings, in the section for your account.",
    "The change usually takes effect within one to two business days.",
    "If anything looks wrong, our support team can check it for you directly.",
    "Make sure the details you entered match the ones on your account.",
    "You will get a confirmation by email as soon as it is done.",
    "In most cases there is no fee, and the app shows any charge before you confirm.",
    "For your security we may ask you to verify your identity first.",
    "Open the app, choose the item in question and follow the steps on the screen.",
    "Most requests like this are handled automatically, so you rarely need to wait.",
    "The same steps work from abroad, as long as you have a data connection.",
    "Keep your reference number, since it speeds things up if you need to follow up.",
    "You can also do this on our website after signing in.",
    "If the option is greyed out, updating the app to the latest version usually fixes it.",
    "Our help centre has a step-by-step guide with screenshots if you prefer.",
)
_CLOSERS = (
    "Let me know if there is anything else I can help with.",
    "I hope this helps.",
    "If you have more questions, just ask.",
)


def tokens(text: str) -> list[str]:
    """``text`` split into estimated tokens (module docstring); ``"".join(tokens(t)) == t``."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    return sum(1 for _ in _TOKEN.finditer(text))


def prompt_tokens(messages: Sequence[tuple[str, str]], *, continuing: bool) -> int:
    """Prompt usage of a chat (module docstring); ``continuing``: its last message is an answer to continue."""
    content = sum(PER_MESSAGE_TOKENS + count_tokens(text) for _, text in messages)
    return content + (0 if continuing else REPLY_PRIMING_TOKENS)


def stand_in(conversation: Conversation, tier: str) -> str:
    """A deterministic support-style answer to ``conversation`` for ``tier`` (the same inputs, the same text), of a
    length drawn as the module docstring says."""
    digest = hashlib.sha256(repr((tier, conversation)).encode()).digest()
    rng = random.Random(int.from_bytes(digest[:8], "big"))
    drawn = rng.lognormvariate(math.log(STAND_IN_MEDIAN_TOKENS), STAND_IN_SIGMA)
    target = min(max(round(drawn), STAND_IN_MIN_TOKENS), STAND_IN_MAX_TOKENS)
    sentences = [rng.choice(_OPENERS).format(topic=_topic(conversation))]
    held = count_tokens(sentences[0])
    while held < target:
        sentence = " " + _next_sentence(rng, sentences, target - held)
        grown = held + count_tokens(sentence)
        if grown - target > target - held:  # the end nearer the drawn length is before this sentence
            break
        sentences.append(sentence)
        held = grown
    return "".join(sentences)


def _next_sentence(rng: random.Random, said: list[str], left: int) -> str:
    closers = [s for s in _CLOSERS if " " + s not in said]
    if left <= 14 and closers:  # the last words: a closing line
        return rng.choice(closers)
    recent = said[-len(_BODY) // 2 :]
    return rng.choice([s for s in _BODY if " " + s not in recent])


def _topic(conversation: Conversation) -> str:
    """A few content words of the last user message, for the answer's first line."""
    asked = next((text for role, text in reversed(conversation) if role == "user"), conversation[-1][1])
    words = [w.lower() for w in _WORD.findall(asked) if w.lower() not in _STOPWORDS]
    return " ".join(dict.fromkeys(words[:4])) or "your question"
