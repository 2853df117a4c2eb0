"""Convert a llama-architecture GGUF file into a model directory that `mlx_lm.load` reads.

MLX reads GGUF natively (`mx.load(..., return_metadata=True)`): Q4_0/Q4_1/Q8_0 tensors come
back as MLX affine-quantized triples (weight, scales, biases). What is left to do is naming
the tensors the way mlx-lm's llama model expects, writing the hyper-parameters as a
`config.json`, and rebuilding the Hugging Face tokenizer from the tokenizer metadata.
"""

import json
import re
from pathlib import Path
from typing import Any

import mlx.core as mx
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors

GGUF_GROUP_SIZE = 32

# llama.cpp's token types (`llama_token_type`); "control" tokens are the special ones.
TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4

_LAYER_TENSORS = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}
_GLOBAL_TENSORS = {
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
}
_LAYER_NAME = re.compile(r"^blk\.(\d+)\.(\w+)\.(weight|scales|biases)$")
_GLOBAL_NAME = re.compile(r"^(\w+)\.(weight|scales|biases)$")


class GGUFConversionError(ValueError):
    """The GGUF file is not a llama model this converter understands."""


def gguf_tensor_name(name: str) -> str:
    """Map a GGUF tensor name (`blk.3.attn_q.scales`) to mlx-lm's (`model.layers.3...`)."""
    if match := _LAYER_NAME.match(name):
        layer, tensor, part = match.groups()
        if tensor in _LAYER_TENSORS:
            return f"model.layers.{layer}.{_LAYER_TENSORS[tensor]}.{part}"
    elif (match := _GLOBAL_NAME.match(name)) and match.group(1) in _GLOBAL_TENSORS:
        return f"{_GLOBAL_TENSORS[match.group(1)]}.{match.group(2)}"
    raise GGUFConversionError(f"unknown GGUF tensor {name!r}")


def quantized_bits(*, packed_columns: int, groups: int, group_size: int = GGUF_GROUP_SIZE) -> int:
    """Bits per weight of an MLX-quantized matrix, from its packed uint32 and scales widths.

    A GGUF file can mix widths (SmolLM2's Q4_1 file keeps the token embedding at 8 bits), so
    each layer's width is read off its shapes rather than assumed.
    """
    columns = groups * group_size
    bits, remainder = divmod(packed_columns * 32, columns)
    if remainder or bits not in (2, 3, 4, 5, 6, 8):
        raise GGUFConversionError(
            f"cannot infer bits: {packed_columns} packed words for {columns} columns"
        )
    return bits


def gguf_weights(tensors: dict[str, mx.array]) -> tuple[dict[str, mx.array], dict[str, Any]]:
    """Rename the tensors and describe their quantization the way mlx-lm's config expects."""
    weights = {gguf_tensor_name(name): array for name, array in tensors.items()}
    layer_bits: dict[str, int] = {}
    for name, array in weights.items():
        if name.endswith(".scales"):
            module = name.removesuffix(".scales")
            layer_bits[module] = quantized_bits(
                packed_columns=weights[f"{module}.weight"].shape[-1], groups=array.shape[-1]
            )
    if not layer_bits:
        return weights, {}
    # The most common width is the default; the others are per-module overrides.
    widths = list(layer_bits.values())
    default_bits = max(set(widths), key=widths.count)
    quantization: dict[str, Any] = {"group_size": GGUF_GROUP_SIZE, "bits": default_bits}
    for module, bits in sorted(layer_bits.items()):
        if bits != default_bits:
            quantization[module] = {"group_size": GGUF_GROUP_SIZE, "bits": bits}
    return weights, quantization


def _scalar(metadata: dict[str, Any], key: str) -> Any:
    value = metadata[key]
    return value.item() if isinstance(value, mx.array) else value


def gguf_config(
    metadata: dict[str, Any], *, quantization: dict[str, Any], has_output: bool
) -> dict[str, Any]:
    """The `config.json` of the llama model described by the GGUF metadata."""
    architecture = _scalar(metadata, "general.architecture")
    if architecture != "llama":
        raise GGUFConversionError(f"unsupported architecture {architecture!r}, expected llama")

    def hyper(name: str) -> Any:
        return _scalar(metadata, f"llama.{name}")

    heads = int(hyper("attention.head_count"))
    hidden = int(hyper("embedding_length"))
    config: dict[str, Any] = {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": int(hyper("feed_forward_length")),
        "num_hidden_layers": int(hyper("block_count")),
        "num_attention_heads": heads,
        "num_key_value_heads": int(hyper("attention.head_count_kv")),
        "head_dim": int(metadata.get("llama.rope.dimension_count", hidden // heads)),
        "rms_norm_eps": float(hyper("attention.layer_norm_rms_epsilon")),
        "vocab_size": len(metadata["tokenizer.ggml.tokens"]),
        "max_position_embeddings": int(hyper("context_length")),
        "rope_theta": float(hyper("rope.freq_base")),
        # llama.cpp permutes Q and K for its interleaved rotary layout; MLX's "traditional"
        # RoPE is that layout, so the weights stay as they are.
        "rope_traditional": True,
        "tie_word_embeddings": not has_output,
        "bos_token_id": int(_scalar(metadata, "tokenizer.ggml.bos_token_id")),
        "eos_token_id": int(_scalar(metadata, "tokenizer.ggml.eos_token_id")),
    }
    if quantization:
        config["quantization"] = quantization
    return config


def gguf_tokenizer(metadata: dict[str, Any]) -> Tokenizer:
    """Rebuild the byte-level BPE tokenizer stored in the GGUF metadata."""
    kind = _scalar(metadata, "tokenizer.ggml.model")
    if kind != "gpt2":
        raise GGUFConversionError(f"unsupported tokenizer {kind!r}, expected byte-level BPE")
    tokens: list[str] = list(metadata["tokenizer.ggml.tokens"])
    token_types = [int(t) for t in metadata["tokenizer.ggml.token_type"].tolist()]
    merges = [tuple(merge.split(" ", 1)) for merge in metadata["tokenizer.ggml.merges"]]
    vocab = {token: index for index, token in enumerate(tokens)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, fuse_unk=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    if _scalar(metadata, "tokenizer.ggml.pre") in ("smollm", "starcoder", "qwen2", "llama-bpe"):
        # These pre-tokenizers split numbers into single digits before the GPT-2 regex.
        tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), byte_level]
        )
    else:
        tokenizer.pre_tokenizer = byte_level
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    tokenizer.add_special_tokens(
        [
            AddedToken(token, special=True, normalized=False)
            for token, token_type in zip(tokens, token_types, strict=True)
            if token_type in (TOKEN_TYPE_CONTROL, TOKEN_TYPE_USER_DEFINED)
        ]
    )
    return tokenizer


def gguf_tokenizer_config(metadata: dict[str, Any]) -> dict[str, Any]:
    """`tokenizer_config.json`: special tokens and the chat template from the metadata."""
    tokens = metadata["tokenizer.ggml.tokens"]

    def token(key: str) -> str | None:
        return tokens[int(_scalar(metadata, key))] if key in metadata else None

    config: dict[str, Any] = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": int(_scalar(metadata, "llama.context_length")),
        "bos_token": token("tokenizer.ggml.bos_token_id"),
        "eos_token": token("tokenizer.ggml.eos_token_id"),
        "unk_token": token("tokenizer.ggml.unknown_token_id"),
        "pad_token": token("tokenizer.ggml.padding_token_id"),
        "add_bos_token": bool(_scalar(metadata, "tokenizer.ggml.add_bos_token"))
        if "tokenizer.ggml.add_bos_token" in metadata
        else False,
        "clean_up_tokenization_spaces": False,
    }
    if "tokenizer.chat_template" in metadata:
        config["chat_template"] = _scalar(metadata, "tokenizer.chat_template")
    return config


def convert_gguf(*, gguf_path: Path, output_dir: Path) -> Path:
    """Write `config.json`, `model.safetensors` and the tokenizer files into `output_dir`.

    The weights keep the file's quantization: the runtime decides at load time whether to
    de-quantize them for the machine it runs on.
    """
    tensors, metadata = mx.load(str(gguf_path), return_metadata=True)
    weights, quantization = gguf_weights(tensors)
    config = gguf_config(
        metadata, quantization=quantization, has_output="lm_head.weight" in weights
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    mx.save_safetensors(str(output_dir / "model.safetensors"), weights, metadata={"format": "mlx"})
    (output_dir / "config.json").write_text(json.dumps(config, indent=2))
    gguf_tokenizer(metadata).save(str(output_dir / "tokenizer.json"))
    (output_dir / "tokenizer_config.json").write_text(
        json.dumps(gguf_tokenizer_config(metadata), indent=2)
    )
    return output_dir
