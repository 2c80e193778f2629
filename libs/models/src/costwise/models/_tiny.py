"""A tiny random-weight Llama with a locally trained tokenizer, for tests that need a real model."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

from ._cache import build_once, content_key, default_cache_dir

# Bump whenever the build code changes its output without changing TINY_SPEC.
_BUILD_VERSION = 1

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
PAD = "<|endoftext|>"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

TINY_SPEC: dict[str, Any] = {
    "build_version": _BUILD_VERSION,
    "vocab_size": 512,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    # head size 64: vLLM's CPU attention only supports a fixed set of head sizes (32, 64, 80, ...).
    "num_attention_heads": 2,
    "num_key_value_heads": 2,
    "max_position_embeddings": 2048,
    "seed": 1234,
    # vLLM on CPU downcasts float32 checkpoints to bfloat16 anyway; storing bf16 avoids the cast.
    "dtype": "bfloat16",
}

_SUBJECTS = ["the cat", "a dog", "my friend", "the teacher", "our team", "the old man", "a small bird"]
_VERBS = ["sees", "likes", "finds", "helps", "follows", "reads about", "talks to"]
_OBJECTS = ["the river", "a red house", "the city", "an apple", "the morning sun", "a long story"]
_TAILS = ["today.", "every day.", "in the park.", "after dinner.", "with great care.", "again and again."]
_QA = [
    ("What is the capital of France?", "The capital of France is Paris."),
    ("How many days are in a week?", "There are seven days in a week."),
    ("What color is the sky?", "The sky is usually blue during the day."),
    ("Can you help me write a short note?", "Of course, I would be happy to help you."),
    ("What is two plus two?", "Two plus two is four."),
]


def _corpus() -> str:
    """A few hundred KB of plain English built from templates (no data files to ship)."""
    lines = [f"{s.capitalize()} {v} {o} {t}" for s, v, o, t in itertools.product(_SUBJECTS, _VERBS, _OBJECTS, _TAILS)]
    for q, a in _QA:
        lines += [f"user\n{q}", f"assistant\n{a}", "system\nYou are a helpful assistant."]
    lines.append("0 1 2 3 4 5 6 7 8 9 10 100 1000 , . ; : ! ? ' \" ( ) [ ] { } - + * / = < > # @ & %")
    return "\n".join(lines)


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    # Byte-level so any input text round-trips, even characters never seen in the corpus.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus().splitlines(), trainer=trainer)
    return tok


def _build(out: Path) -> None:
    import torch
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    spec = TINY_SPEC
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(spec["vocab_size"]),
        eos_token=IM_END,
        pad_token=PAD,
        additional_special_tokens=[IM_START],
        # The default clean-up rewrites " ." to "." and would break the decode round-trip.
        clean_up_tokenization_spaces=False,
        model_max_length=spec["max_position_embeddings"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec["hidden_size"],
        intermediate_size=spec["intermediate_size"],
        num_hidden_layers=spec["num_hidden_layers"],
        num_attention_heads=spec["num_attention_heads"],
        num_key_value_heads=spec["num_key_value_heads"],
        max_position_embeddings=spec["max_position_embeddings"],
        bos_token_id=int(tokenizer.convert_tokens_to_ids(IM_START)),  # type: ignore[arg-type]
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        dtype=spec["dtype"],
    )
    # fork_rng keeps the caller's global torch RNG untouched while making the weights reproducible.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(spec["seed"])
        model = LlamaForCausalLM(config).to(getattr(torch, spec["dtype"]))
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def tiny_llama(cache_dir: Path | None = None) -> Path:
    """Return a directory holding a tiny random-weight ``LlamaForCausalLM`` for tests.

    2 layers, hidden size 128, 2 heads of size 64, a ~512-token byte-level BPE tokenizer trained
    locally, and a ChatML chat template (eos ``<|im_end|>``). Weights are seeded, so every build is
    identical. Built once into ``cache_dir`` (default: :func:`default_cache_dir`) under a name that
    includes a hash of the build parameters; later calls return the existing directory.
    """
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    # The corpus and template are hashed too, so editing them can't silently reuse an old build.
    key = content_key({**TINY_SPEC, "corpus": _corpus(), "chat_template": CHATML_TEMPLATE})
    name = f"tiny-llama-{key}"
    return build_once(cache_dir, name, _build)
