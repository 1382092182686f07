"""Model sources, configs, weights and tokenizers, on tiny models built here."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast, Qwen2Config

from prism.errors import InvalidRequest, ModelNotFound
from prism.models import (
    DEFAULT_MODEL_ID,
    Checkpoint,
    ModelConfig,
    ResolvedModel,
    Shard,
    apply_chat_template,
    cache_dir,
    convert_gguf,
    load_tokenizer,
    registry,
    resolve_model,
)
from support.models import LLAMA3_ROPE, TINY_SHAPE

TinyLlama = tuple[Path, LlamaForCausalLM]
TINY_LLAMA = TINY_SHAPE


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory: pytest.TempPathFactory) -> TinyLlama:
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**TINY_LLAMA))
    folder = tmp_path_factory.mktemp("models") / "tiny-llama"
    model.save_pretrained(folder)
    return folder, model


def write_config(folder: Path, config: dict[str, object]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_config_from_saved_tiny_llama_reads_every_field(tiny_llama: TinyLlama) -> None:
    folder, _ = tiny_llama

    config = ModelConfig.from_folder(folder)

    assert config == ModelConfig(
        architecture="LlamaForCausalLM",
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        head_dim=16,
        rms_norm_eps=1e-6,
        rope_theta=10_000.0,
        rope_scaling=None,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        bos_token_id=1,
        eos_token_ids=(2,),
        layer_windows=(None, None),
    )


def test_config_reads_transformers4_rope_keys_defaults_and_merged_eos(tmp_path: Path) -> None:
    folder = write_config(
        tmp_path / "v4",
        {
            "architectures": ["MistralForCausalLM"],
            "vocab_size": 32,
            "hidden_size": 64,
            "intermediate_size": 96,
            "num_hidden_layers": 1,
            "num_attention_heads": 8,
            "max_position_embeddings": 512,
            "rope_theta": 500_000.0,
            "rope_scaling": {"type": "linear", "factor": 2.0},
            "eos_token_id": [2, 5],
        },
    )
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [5, 7]}))

    config = ModelConfig.from_folder(folder)

    assert config.rope_theta == 500_000.0
    assert config.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert (config.num_kv_heads, config.head_dim) == (8, 8)
    assert config.eos_token_ids == (2, 5, 7)
    assert config.bos_token_id is None


def test_config_reads_transformers5_rope_parameters_with_scaling(tmp_path: Path) -> None:
    settings = TINY_LLAMA | {"max_position_embeddings": 16384}
    hf_config = LlamaConfig(**settings, rope_parameters=LLAMA3_ROPE)
    hf_config.architectures = ["LlamaForCausalLM"]
    hf_config.save_pretrained(tmp_path)

    config = ModelConfig.from_folder(tmp_path)

    assert config.rope_theta == 500_000.0
    assert config.rope_scaling == {k: v for k, v in LLAMA3_ROPE.items() if k != "rope_theta"}


def test_qwen2_config_has_attention_bias(tmp_path: Path) -> None:
    Qwen2Config(**TINY_SHAPE, architectures=["Qwen2ForCausalLM"]).save_pretrained(tmp_path)

    config = ModelConfig.from_folder(tmp_path)

    assert config.architecture == "Qwen2ForCausalLM"
    assert config.attention_bias is True


def test_unsupported_architecture_is_an_invalid_request_naming_it(tmp_path: Path) -> None:
    folder = write_config(tmp_path, {"architectures": ["GPT2LMHeadModel"], "vocab_size": 8})

    with pytest.raises(InvalidRequest, match="GPT2LMHeadModel"):
        ModelConfig.from_folder(folder)


def read_all(folder: Path, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    with Checkpoint(folder) as checkpoint:
        return {name: checkpoint.read(name, dtype) for name in checkpoint.names()}


def test_checkpoint_reads_hf_names_and_shapes_in_the_given_dtype(tiny_llama: TinyLlama) -> None:
    folder, model = tiny_llama
    expected = model.state_dict()

    state = read_all(folder, torch.bfloat16)

    assert "model.layers.0.self_attn.q_proj.weight" in state
    assert set(state) == set(expected)
    for name, tensor in state.items():
        assert tensor.dtype == torch.bfloat16
        assert tensor.shape == expected[name].shape
        assert tensor.device == torch.device("cpu")
    assert state["model.layers.0.self_attn.k_proj.weight"].shape == (32, 64)


def test_checkpoint_reads_sharded_checkpoints_through_their_index(
    tiny_llama: TinyLlama, tmp_path: Path
) -> None:
    folder, model = tiny_llama
    model.save_pretrained(tmp_path, max_shard_size="50KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()

    sharded = read_all(tmp_path, torch.float32)
    single = read_all(folder, torch.float32)

    assert set(sharded) == set(single)
    assert all(torch.equal(sharded[name], single[name]) for name in single)


def test_checkpoint_reads_one_shard_padding_an_uneven_split(tiny_llama: TinyLlama) -> None:
    folder, model = tiny_llama
    q_name, embed_name = "model.layers.0.self_attn.q_proj.weight", "model.embed_tokens.weight"
    q_proj = model.state_dict()[q_name]  # [64, 64]
    embed = model.state_dict()[embed_name]  # [256, 64]

    with Checkpoint(folder) as checkpoint:
        columns = checkpoint.read(q_name, torch.float32, shard=Shard(1, 1, 2))
        last_rows = checkpoint.read(embed_name, torch.float32, shard=Shard(0, 2, 3))
        unread = checkpoint.unread()

    assert torch.equal(columns, q_proj[:, 32:])
    assert last_rows.shape == (86, 64)  # 256 rows in parts of 86: 86, 86, 84 + 2 zero rows
    assert torch.equal(last_rows[:84], embed[172:])
    assert not last_rows[84:].any()
    assert q_name not in unread and "model.norm.weight" in unread


def test_resolve_model_uses_an_hf_folder_as_is(tiny_llama: TinyLlama) -> None:
    folder, _ = tiny_llama

    assert resolve_model(str(folder)) == ResolvedModel("tiny-llama", folder)


def test_resolve_model_on_a_missing_path_raises_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="no-such-model"):
        resolve_model(str(tmp_path / "no-such-model"))


def test_resolve_model_rejects_a_folder_without_safetensors(tmp_path: Path) -> None:
    folder = write_config(tmp_path / "bin-only", {"architectures": ["LlamaForCausalLM"]})

    with pytest.raises(ModelNotFound, match="safetensors"):
        resolve_model(str(folder))


def test_cache_dir_honours_prism_cache_dir_then_xdg(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("PRISM_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert cache_dir() == Path.home() / ".cache" / "prism"

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_dir() == tmp_path / "xdg" / "prism"

    monkeypatch.setenv("PRISM_CACHE_DIR", str(tmp_path / "prism"))
    assert cache_dir() == tmp_path / "prism"


def test_gguf_file_is_converted_once_per_name_size_and_mtime(
    tiny_llama: TinyLlama, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    folder, _ = tiny_llama
    converted: list[Path] = []

    def fake_convert(gguf_path: Path, out_dir: Path, chat_template: str | None) -> Path:
        converted.append(out_dir)
        shutil.copytree(folder, out_dir)
        return out_dir

    monkeypatch.setenv("PRISM_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(registry, "convert_gguf", fake_convert)
    gguf = tmp_path / "tiny.Q8_0.gguf"
    gguf.write_bytes(b"GGUF")

    first = resolve_model(str(gguf))
    again = resolve_model(str(gguf))
    stat = gguf.stat()
    os.utime(gguf, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    touched = resolve_model(str(gguf))

    assert first == again
    assert first.model_id == "tiny.Q8_0"
    assert first.path.is_relative_to(tmp_path / "cache" / "models")
    assert touched.path != first.path
    assert converted == [first.path, touched.path]


def test_failed_gguf_conversion_leaves_no_folder_behind(tmp_path: Path) -> None:
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"not a gguf file at all")
    out_dir = tmp_path / "cache" / "bad"

    with pytest.raises(InvalidRequest, match=r"bad\.gguf"):
        convert_gguf(bad, out_dir)

    assert list(out_dir.parent.iterdir()) == []


@pytest.fixture(scope="module")
def word_tokenizer_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    words = ["<unk>", "<s>", "</s>", "user", "assistant", ":", "hello", "world"]
    backend = Tokenizer(WordLevel({word: i for i, word in enumerate(words)}, unk_token="<unk>"))
    backend.pre_tokenizer = Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>"
    )
    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer.save_pretrained(folder)
    return folder


def test_chat_template_renders_messages_with_the_generation_prompt(
    word_tokenizer_folder: Path,
) -> None:
    tokenizer = load_tokenizer(word_tokenizer_folder)
    tokenizer.chat_template = (
        "{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
        "{% if add_generation_prompt %}assistant :{% endif %}"
    )

    ids = apply_chat_template(tokenizer, [{"role": "user", "content": "hello world"}])

    assert ids == [3, 5, 6, 7, 4, 5]


def test_tokenizer_without_chat_template_is_an_invalid_request(
    word_tokenizer_folder: Path,
) -> None:
    tokenizer = load_tokenizer(word_tokenizer_folder)

    with pytest.raises(InvalidRequest, match="chat template"):
        apply_chat_template(tokenizer, [{"role": "user", "content": "hello"}])


FRANCE = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def default_model() -> ResolvedModel:
    return resolve_model()


@pytest.mark.slow
def test_default_model_converts_to_smollm2_with_its_chat_template(
    default_model: ResolvedModel,
) -> None:
    config = ModelConfig.from_folder(default_model.path)
    tokenizer = load_tokenizer(default_model.path)

    prompt = apply_chat_template(tokenizer, FRANCE)

    assert default_model.model_id == DEFAULT_MODEL_ID
    assert (config.num_layers, config.num_heads, config.num_kv_heads) == (30, 9, 3)
    assert (config.hidden_size, config.vocab_size) == (576, 49152)
    assert config.tie_word_embeddings
    text = tokenizer.decode(prompt)
    assert "<|im_start|>user\nWhat is the capital of France?<|im_end|>" in text
    assert text.endswith("<|im_start|>assistant\n")
    sentence = "Prism serves tokens, one step at a time."
    assert tokenizer.decode(tokenizer.encode(sentence, add_special_tokens=False)) == sentence


@pytest.mark.slow
def test_converted_default_model_answers_paris_greedily(default_model: ResolvedModel) -> None:
    model = LlamaForCausalLM.from_pretrained(default_model.path, local_files_only=True)
    tokenizer = load_tokenizer(default_model.path)
    prompt = torch.tensor([apply_chat_template(tokenizer, FRANCE)])

    output = model.generate(prompt, max_new_tokens=20, do_sample=False)

    assert "Paris" in tokenizer.decode(output[0, prompt.shape[1] :], skip_special_tokens=True)


def test_sliding_window_is_kept_only_where_the_model_uses_it(tmp_path: Path) -> None:
    base = TINY_SHAPE | {"max_position_embeddings": 32768, "sliding_window": 4096}
    mistral = write_config(tmp_path / "m", base | {"architectures": ["MistralForCausalLM"]})
    qwen = write_config(tmp_path / "q", base | {"architectures": ["Qwen2ForCausalLM"]})

    assert ModelConfig.from_folder(mistral).layer_windows == (4096, 4096)
    assert ModelConfig.from_folder(qwen).layer_windows == (None, None)


def test_older_gemma3_and_qwen_moe_configs_read_like_newer_ones(tmp_path: Path) -> None:
    gemma = write_config(
        tmp_path / "gemma",
        TINY_SHAPE
        | {
            "architectures": ["Gemma3ForCausalLM"],
            "num_hidden_layers": 7,
            "sliding_window": 512,
            "sliding_window_pattern": 6,
            "rope_theta": 1_000_000.0,
            "rope_local_base_freq": 10_000.0,
            "rope_scaling": {"rope_type": "linear", "factor": 8.0},
            "hidden_activation": "gelu_pytorch_tanh",
        },
    )
    moe = write_config(
        tmp_path / "moe",
        TINY_SHAPE
        | {
            "architectures": ["Qwen3MoeForCausalLM"],
            "num_experts": 8,
            "num_experts_per_tok": 2,
            "moe_intermediate_size": 32,
            "norm_topk_prob": True,
            "decoder_sparse_step": 2,
        },
    )

    config = ModelConfig.from_folder(gemma)
    assert config.layer_windows == (512,) * 5 + (None, 512)
    assert (config.rope_theta, config.local_rope_theta) == (1_000_000.0, 10_000.0)
    assert config.rope_scaling == {"rope_type": "linear", "factor": 8.0}
    mixture = ModelConfig.from_folder(moe).mixture
    assert mixture is not None and mixture.num_experts == 8 and mixture.normalize_weights
    assert mixture.sparse_layers == (False, True)


def test_attention_soft_capping_and_unknown_activations_are_refused(tmp_path: Path) -> None:
    gemma2_like = write_config(
        tmp_path / "g",
        TINY_SHAPE | {"architectures": ["Gemma3ForCausalLM"], "attn_logit_softcapping": 50.0},
    )
    relu = write_config(
        tmp_path / "r", TINY_SHAPE | {"architectures": ["LlamaForCausalLM"], "hidden_act": "relu"}
    )

    with pytest.raises(InvalidRequest, match="soft-capping"):
        ModelConfig.from_folder(gemma2_like)
    with pytest.raises(InvalidRequest, match="activation 'relu'"):
        ModelConfig.from_folder(relu)
