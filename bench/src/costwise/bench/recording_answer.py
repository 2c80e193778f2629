"""What the recording server answers to one chat-completions request: the recorded (or stand-in) answer of the tier
the request's model belongs to, the rest of it when asked to continue, cut to the request's budget."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from costwise.bench.recording_text import Conversation, count_tokens, prompt_tokens, stand_in, tokens
from costwise.bench.workload import WorkloadError, WorkloadLine, load_workload
from costwise.catalog import Catalog, CatalogError
from costwise.contracts.messages import MAX_MESSAGE_CHARS
from costwise.openai_wire import ChatRequest

__all__ = ["BadRequest", "Recordings", "Reply", "answer", "model_tiers"]


class BadRequest(Exception):
    """A request the server refuses: HTTP ``status`` with an OpenAI-style error body."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code = status, message, code


def conversation_of(line: WorkloadLine) -> Conversation:
    if line.messages is not None:
        return tuple((m.role, m.content) for m in line.messages)
    return (("user", line.prompt or ""),)


class Recordings:
    """Recorded answers by prompt and tier (a workload line's ``responses``)."""

    def __init__(self, answers: Mapping[tuple[Conversation, str], str] | None = None) -> None:
        self._answers = dict(answers or {})
        self.skipped: list[WorkloadError] = []
        """Lines of the workload file that did not decode (the replay reports them itself)."""

    @classmethod
    def from_workload(cls, path: Path) -> Recordings:
        """Every line's ``responses``; bad lines are skipped (kept in :attr:`skipped`), and so are answers longer
        than a chat message may be. A prompt recorded twice keeps its first answer per tier."""
        skipped: list[WorkloadError] = []
        answers: dict[tuple[Conversation, str], str] = {}
        for line in load_workload(path, on_error=skipped.append):
            for tier, text in (line.responses or {}).items():
                if len(text) <= MAX_MESSAGE_CHARS:
                    answers.setdefault((conversation_of(line), tier), text)
        recordings = cls(answers)
        recordings.skipped = skipped
        return recordings

    def get(self, conversation: Conversation, tier: str) -> str | None:
        return self._answers.get((conversation, tier))

    def __len__(self) -> int:
        return len(self._answers)


def model_tiers(catalog: Catalog) -> dict[str, str]:
    """A request's ``model`` → the tier it answers as: every backend's model names its tier (a model in two tiers
    is refused: which answer would it give?); tier names and aliases name theirs too."""
    found: dict[str, str] = {}
    for tier in catalog.tiers:
        for name in tier.backends:
            model = catalog.backend(name).model
            if found.setdefault(model, tier.name) != tier.name:
                raise CatalogError(
                    f"model {model!r} serves tiers {found[model]!r} and {tier.name!r}: cannot record both"
                )
    for tier in catalog.tiers:
        found.setdefault(tier.name, tier.name)
    for alias, target in catalog.aliases.items():
        found.setdefault(alias, target)
    return found


@dataclass(frozen=True)
class Reply:
    tokens: list[str]
    finish_reason: str
    prompt_tokens: int


def answer(
    req: ChatRequest,
    recordings: Recordings,
    tiers: Mapping[str, str],
    *,
    context_tokens: int | None,
    seen: Counter[str],
) -> Reply:
    """The reply to ``req`` (``seen`` counts ``recorded``/``stand_in``/``continued`` answers); :class:`BadRequest`
    for what a real server would refuse."""
    tier = tiers.get(req.model)
    if tier is None:
        raise BadRequest(404, f"The model `{req.model}` does not exist.", "model_not_found")
    chat, continuing = _conversation(req)
    asked = chat[:-1] if continuing else chat
    recorded = recordings.get(asked, tier)
    seen["recorded" if recorded is not None else "stand_in"] += 1
    seen["continued"] += continuing
    whole = tokens(recorded if recorded is not None else stand_in(asked, tier))
    rest = _after(whole, chat[-1][1]) if continuing else whole
    prompt, limit = prompt_tokens(chat, continuing=continuing), req.token_limit
    if context_tokens is not None and prompt + (limit or len(rest)) > context_tokens:
        wanted = prompt + (limit or len(rest))
        raise BadRequest(
            400,
            f"This model's maximum context length is {context_tokens} tokens. However, you requested {wanted} tokens"
            f" ({prompt} in the messages, {wanted - prompt} in the completion).",
        )
    if limit is not None and len(rest) > limit:
        return Reply(rest[:limit], "length", prompt)
    return Reply(rest, "stop", prompt)


def _conversation(req: ChatRequest) -> tuple[Conversation, bool]:
    if req.continue_final_message and req.add_generation_prompt:
        raise BadRequest(400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
    chat: list[tuple[str, str]] = []
    for i, message in enumerate(req.messages):
        if message.content is None:
            raise BadRequest(400, f"messages[{i}].content must be a string")
        chat.append((message.role, message.content))
    continuing = bool(req.continue_final_message)
    if continuing and (len(chat) < 2 or chat[-1][0] != "assistant"):
        raise BadRequest(400, "continue_final_message needs a prompt followed by an assistant message to continue")
    return tuple(chat), continuing


def _after(whole: list[str], prefix: str) -> list[str]:
    """The tokens of an answer after ``prefix`` (what a continuing request already has)."""
    held = ""
    for i, token in enumerate(whole):
        if held == prefix:
            return whole[i:]
        held += token
        if not prefix.startswith(held):
            break
    if held == prefix:
        return []
    text = "".join(whole)
    if text.startswith(prefix):  # the prefix ends inside a token: the rest is tokenized on its own
        return tokens(text[len(prefix) :])
    return whole[count_tokens(prefix) :]  # not this answer's start: continue as far along as the prefix is long
