"""The GGUF -> mlx-lm conversion, piece by piece and end to end on a tiny GGUF file."""

import json

import mlx.core as mx
import mlx_lm
import pytest

from providers.mlx.gguf import (
    GGUFConversionError,
    convert_gguf,
    gguf_config,
    gguf_tensor_name,
    gguf_weights,
    quantized_bits,
)


@pytest.mark.parametrize(
    ("gguf", "mlx"),
    [
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
        ("blk.12.attn_k.scales", "model.layers.12.self_attn.k_proj.scales"),
        ("blk.3.attn_v.biases", "model.layers.3.self_attn.v_proj.biases"),
        ("blk.3.attn_output.weight", "model.layers.3.self_attn.o_proj.weight"),
        ("blk.29.ffn_gate.weight", "model.layers.29.mlp.gate_proj.weight"),
        ("blk.1.ffn_up.weight", "model.layers.1.mlp.up_proj.weight"),
        ("blk.1.ffn_down.weight", "model.layers.1.mlp.down_proj.weight"),
        ("blk.1.attn_norm.weight", "model.layers.1.input_layernorm.weight"),
        ("blk.1.ffn_norm.weight", "model.layers.1.post_attention_layernorm.weight"),
        ("token_embd.weight", "model.embed_tokens.weight"),
        ("token_embd.scales", "model.embed_tokens.scales"),
        ("output_norm.weight", "model.norm.weight"),
        ("output.weight", "lm_head.weight"),
    ],
)
def test_tensor_names_map_to_mlx_lm_llama(gguf, mlx):
    assert gguf_tensor_name(gguf) == mlx


@pytest.mark.parametrize("name", ["blk.0.attn_qkv.weight", "rope_freqs.weight", "blk.x.attn_q"])
def test_unknown_tensor_names_are_refused(name):
    with pytest.raises(GGUFConversionError, match="unknown GGUF tensor"):
        gguf_tensor_name(name)


def test_bits_are_read_off_the_packed_shapes():
    # SmolLM2's file: 576 columns in groups of 32; Q4_1 packs 8 per uint32, Q8 4 per uint32.
    assert quantized_bits(packed_columns=72, groups=18) == 4
    assert quantized_bits(packed_columns=144, groups=18) == 8
    with pytest.raises(GGUFConversionError, match="cannot infer bits"):
        quantized_bits(packed_columns=70, groups=18)


def _quantized(rows: int, columns: int, bits: int) -> tuple[mx.array, ...]:
    return mx.quantize(mx.random.normal((rows, columns)), group_size=32, bits=bits)


def test_mixed_widths_become_a_default_plus_per_module_overrides():
    tensors = {}
    for name, bits in (("token_embd", 8), ("blk.0.attn_q", 4), ("blk.0.attn_k", 4)):
        weight, scales, biases = _quantized(64, 64, bits)
        tensors |= {f"{name}.weight": weight, f"{name}.scales": scales, f"{name}.biases": biases}
    tensors["output_norm.weight"] = mx.ones((64,))

    weights, quantization = gguf_weights(tensors)

    assert quantization == {
        "group_size": 32,
        "bits": 4,
        "model.embed_tokens": {"group_size": 32, "bits": 8},
    }
    assert set(weights) == {gguf_tensor_name(name) for name in tensors}


def test_float_weights_need_no_quantization_config():
    _weights, quantization = gguf_weights({"output_norm.weight": mx.ones((8,))})
    assert quantization == {}


def test_only_llama_architectures_convert():
    with pytest.raises(GGUFConversionError, match="unsupported architecture 'qwen2'"):
        gguf_config({"general.architecture": "qwen2"}, quantization={}, has_output=False)


def test_converted_tiny_gguf_loads_and_generates(tiny_gguf_path, tiny_model_dir, tmp_path):
    model_dir = convert_gguf(gguf_path=tiny_gguf_path, output_dir=tmp_path / "converted")

    config = json.loads((model_dir / "config.json").read_text())
    assert config["rope_traditional"] is True
    assert config["tie_word_embeddings"] is True
    assert (config["num_hidden_layers"], config["hidden_size"], config["head_dim"]) == (2, 64, 16)
    tokenizer_config = json.loads((model_dir / "tokenizer_config.json").read_text())
    assert tokenizer_config["eos_token"] == "<|im_end|>"
    assert tokenizer_config["chat_template"].startswith("{% for message in messages %}")

    model, tokenizer = mlx_lm.load(str(model_dir))
    _reference_model, reference = mlx_lm.load(str(tiny_model_dir))
    text = "What is the capital of France? <|im_end|> The quick brown fox."
    assert tokenizer.encode(text) == reference.encode(text)
    assert tokenizer.eos_token_ids == reference.eos_token_ids
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hello"}], add_generation_prompt=True
    )
    assert prompt == reference.apply_chat_template(
        [{"role": "user", "content": "hello"}], add_generation_prompt=True
    )
    assert mlx_lm.generate(model, tokenizer, prompt, max_tokens=4)
