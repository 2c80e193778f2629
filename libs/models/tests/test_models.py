"""Real builds, no mocks: the tiny model takes seconds, the SmolLM2 conversion ~30 s."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest

from costwise.models import default_cache_dir, resolve, run_dtype, smollm2, tiny_llama
from costwise.models._cache import COMPLETE_MARKER, build_once


@pytest.fixture(scope="module")
def tiny_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("tiny-cache")


@pytest.fixture(scope="module")
def tiny(tiny_cache: Path) -> Path:
    return tiny_llama(tiny_cache)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_tiny_llama_second_call_is_a_cache_hit(tiny: Path, tiny_cache: Path) -> None:
    weights = tiny / "model.safetensors"
    mtime = weights.stat().st_mtime_ns

    start = time.perf_counter()
    again = tiny_llama(tiny_cache)
    elapsed = time.perf_counter() - start

    assert again == tiny
    assert elapsed < 0.5
    assert weights.stat().st_mtime_ns == mtime
    # Only the finished directory (and its lock file) remain: no temp dirs left behind.
    assert sorted(p.name for p in tiny_cache.iterdir()) == sorted([tiny.name, f".{tiny.name}.lock"])
    assert (tiny / COMPLETE_MARKER).is_file()


def test_tiny_llama_files_and_config(tiny: Path) -> None:
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert (tiny / name).is_file(), name
    config = json.loads((tiny / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["num_hidden_layers"] == 2
    assert config["hidden_size"] == 128
    # vLLM's CPU attention rejects head sizes like 16; 64 is supported.
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    assert config.get("head_dim", 64) == 64
    assert config["max_position_embeddings"] == 2048


def test_tiny_llama_tokenizer_chat_template_and_round_trip(tiny: Path) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    assert tok.eos_token == "<|im_end|>"
    assert 256 < len(tok) <= 1000

    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
    ]
    rendered = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert rendered == (
        "<|im_start|>system\nBe brief.<|im_end|>\n"
        "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    ids = tok(rendered, add_special_tokens=False)["input_ids"]
    # Special tokens are single ids, not spelled out byte by byte.
    assert ids.count(tok.convert_tokens_to_ids("<|im_start|>")) == 3
    assert ids.count(tok.eos_token_id) == 2
    assert tok.decode(ids) == rendered

    for text in ["Hello , world .", "  two  spaces\tand tab", "naïve café — 東京 🙂", ""]:
        assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_tiny_llama_is_deterministic(tiny: Path, tmp_path: Path) -> None:
    other = tiny_llama(tmp_path)
    assert other.name == tiny.name
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _sha256(other / name) == _sha256(tiny / name), name


def test_failed_build_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    def broken(out: Path) -> None:
        (out / "config.json").write_text("{}")
        raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        build_once(tmp_path, "thing", broken)
    assert not (tmp_path / "thing").exists()
    assert [p.name for p in tmp_path.iterdir()] == [".thing.lock"]

    # A directory without the marker (e.g. from a copy or an older layout) is rebuilt, not trusted.
    (tmp_path / "thing").mkdir()
    (tmp_path / "thing" / "junk").write_text("x")
    out = build_once(tmp_path, "thing", lambda d: (d / "ok").write_text("1"))
    assert sorted(p.name for p in out.iterdir()) == sorted([COMPLETE_MARKER, "ok"])


def test_resolve_builtin_and_passthrough(tiny: Path, tiny_cache: Path) -> None:
    assert resolve("builtin:tiny-llama", tiny_cache) == tiny
    for spec in ["HuggingFaceTB/SmolLM2-135M-Instruct", "/models/some-dir", "builtin:unknown", ""]:
        assert resolve(spec) == spec
        assert resolve(spec, tiny_cache) == spec


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("COSTWISE_MODEL_CACHE", str(tmp_path / "models"))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("COSTWISE_MODEL_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "costwise" / "models"


def test_smollm2_conversion_answers_sensibly(tmp_path: Path) -> None:
    import torch
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = smollm2(tmp_path)
    assert smollm2(tmp_path) == path

    config = json.loads((path / "config.json").read_text())
    assert config["architectures"] == ["LlamaForCausalLM"]
    assert config["hidden_size"] // config["num_attention_heads"] == 64
    with safe_open(str(path / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16

    tok = AutoTokenizer.from_pretrained(path)
    assert tok.eos_token == "<|im_end|>"
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    inputs = tok.apply_chat_template(messages, add_generation_prompt=True, return_dict=True, return_tensors="pt")
    assert tok.decode(inputs["input_ids"][0]).endswith("<|im_start|>assistant\n")

    # Greedy generation catches a wrong q/k un-permutation, which would still load without errors.
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    answer = tok.decode(out[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_concurrent_builders_build_once(tmp_path: Path) -> None:
    import threading

    calls: list[int] = []
    results: list[Path] = []

    def slow(out: Path) -> None:
        calls.append(1)
        time.sleep(0.3)
        (out / "weights").write_text("w")

    def run() -> None:
        results.append(build_once(tmp_path, "shared", slow))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [tmp_path / "shared"] * 4
    assert oct((tmp_path / "shared" / "weights").stat().st_mode & 0o777) == oct(0o644)


def test_builtin_models_run_in_float32_unless_a_pool_asks_otherwise() -> None:
    assert run_dtype("builtin:smollm2") == run_dtype("builtin:tiny-llama") == "float32"
    assert run_dtype("builtin:smollm2", "bfloat16") == "bfloat16"  # asked for: as asked
    assert run_dtype("HuggingFaceTB/SmolLM2-135M-Instruct") == "auto"  # anyone else's model: vLLM decides
