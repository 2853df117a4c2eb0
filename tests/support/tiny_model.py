"""A tiny random-weight llama model directory that `mlx_lm.load` reads in milliseconds.

The fast tests of the MLX path use it: it goes through the same loading, chat-template,
tokenizer and generation code as the real default model, without its size.
"""

import json
from pathlib import Path

import mlx.core as mx
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

SEED = 1234

# Enough text for the BPE trainer to learn merges for everyday English words, so that
# prompts tokenize to a handful of tokens rather than one per byte.
CORPUS = (
    "What is the capital of France? The capital of France is Paris.\n",
    "What is two plus two? Two plus two is four.\n",
    "You are a helpful assistant. Answer the question in one short sentence.\n",
    "question: answer: reasoning: context: summary: the a an of to in is and or for\n",
    "The quick brown fox jumps over the lazy dog. Hello world! 0123456789\n",
    "system user assistant <|im_start|> <|im_end|>\n",
)

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")

# The same ChatML template as SmolLM2, so prompts look like the default model's.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

HIDDEN_SIZE = 64
INTERMEDIATE_SIZE = 128
NUM_LAYERS = 2
NUM_HEADS = 4
NUM_KV_HEADS = 2
QUANT_GROUP_SIZE = 32
QUANT_BITS = 4


def _train_tokenizer() -> Tokenizer:
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(CORPUS * 20, trainer=trainer)
    return tokenizer


def _config(vocab_size: int, eos_token_id: int) -> dict:
    return {
        "model_type": "llama",
        "architectures": ["LlamaForCausalLM"],
        "hidden_size": HIDDEN_SIZE,
        "intermediate_size": INTERMEDIATE_SIZE,
        "num_hidden_layers": NUM_LAYERS,
        "num_attention_heads": NUM_HEADS,
        "num_key_value_heads": NUM_KV_HEADS,
        "rms_norm_eps": 1e-5,
        "vocab_size": vocab_size,
        "max_position_embeddings": 2048,
        "rope_theta": 10000.0,
        "tie_word_embeddings": True,
        "bos_token_id": eos_token_id,
        "eos_token_id": eos_token_id,
    }


def _weights(vocab_size: int) -> dict[str, mx.array]:
    mx.random.seed(SEED)
    head_dim = HIDDEN_SIZE // NUM_HEADS
    kv_size = NUM_KV_HEADS * head_dim

    def normal(*shape: int) -> mx.array:
        return mx.random.normal(shape=shape, scale=0.2, dtype=mx.float32)

    weights = {
        "model.embed_tokens.weight": normal(vocab_size, HIDDEN_SIZE),
        "model.norm.weight": mx.ones((HIDDEN_SIZE,)),
    }
    for layer in range(NUM_LAYERS):
        prefix = f"model.layers.{layer}"
        weights |= {
            f"{prefix}.self_attn.q_proj.weight": normal(HIDDEN_SIZE, HIDDEN_SIZE),
            f"{prefix}.self_attn.k_proj.weight": normal(kv_size, HIDDEN_SIZE),
            f"{prefix}.self_attn.v_proj.weight": normal(kv_size, HIDDEN_SIZE),
            f"{prefix}.self_attn.o_proj.weight": normal(HIDDEN_SIZE, HIDDEN_SIZE),
            f"{prefix}.mlp.gate_proj.weight": normal(INTERMEDIATE_SIZE, HIDDEN_SIZE),
            f"{prefix}.mlp.up_proj.weight": normal(INTERMEDIATE_SIZE, HIDDEN_SIZE),
            f"{prefix}.mlp.down_proj.weight": normal(HIDDEN_SIZE, INTERMEDIATE_SIZE),
            f"{prefix}.input_layernorm.weight": mx.ones((HIDDEN_SIZE,)),
            f"{prefix}.post_attention_layernorm.weight": mx.ones((HIDDEN_SIZE,)),
        }
    return weights


def _quantize(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """MLX affine 4-bit, group size 32: the layout of the converted default model."""
    quantized = {}
    for name, array in weights.items():
        if array.ndim == 2:
            module = name.removesuffix(".weight")
            packed, scales, biases = mx.quantize(
                array, group_size=QUANT_GROUP_SIZE, bits=QUANT_BITS
            )
            quantized |= {
                f"{module}.weight": packed,
                f"{module}.scales": scales,
                f"{module}.biases": biases,
            }
        else:
            quantized[name] = array
    return quantized


def build_tiny_model(directory: Path, *, quantized: bool = False) -> Path:
    """Write the tiny model into `directory` (created if missing) and return it.

    The same call always writes the same files: the tokenizer trainer and the weights are
    deterministic, so tests may compare generated text across runs. `quantized` stores the
    weights 4-bit, like the converted default model, so the CPU optimisations apply.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer()
    tokenizer.save(str(directory / "tokenizer.json"))
    eos_token_id = tokenizer.token_to_id("<|im_end|>")
    vocab_size = tokenizer.get_vocab_size()
    tokenizer_config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 2048,
        "bos_token": "<|im_start|>",
        "eos_token": "<|im_end|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    config = _config(vocab_size, eos_token_id)
    weights = _weights(vocab_size)
    if quantized:
        config["quantization"] = {"group_size": QUANT_GROUP_SIZE, "bits": QUANT_BITS}
        weights = _quantize(weights)
    (directory / "config.json").write_text(json.dumps(config, indent=2))
    mx.save_safetensors(str(directory / "model.safetensors"), weights, metadata={"format": "mlx"})
    return directory


# mlx-lm name -> GGUF name, the inverse of the converter's table (llama.cpp's names).
_GGUF_NAMES = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}


def _gguf_name(name: str) -> str:
    if name.startswith("model.layers."):
        layer, rest = name.removeprefix("model.layers.").split(".", 1)
        module, part = rest.rsplit(".", 1)
        return f"blk.{layer}.{_GGUF_NAMES[module]}.{part}"
    return {
        "model.embed_tokens.weight": "token_embd.weight",
        "model.norm.weight": "output_norm.weight",
    }[name]


def _u32(value: int) -> mx.array:
    return mx.array(value, dtype=mx.uint32)


def build_tiny_gguf(path: Path) -> Path:
    """The tiny model as a float32 GGUF file with llama.cpp's names and tokenizer metadata."""
    tokenizer = _train_tokenizer()
    vocab = tokenizer.get_vocab()
    tokens = sorted(vocab, key=vocab.__getitem__)
    merges = json.loads(tokenizer.to_str())["model"]["merges"]
    merges = [" ".join(merge) if isinstance(merge, list) else merge for merge in merges]
    metadata = {
        "general.architecture": "llama",
        "llama.block_count": _u32(NUM_LAYERS),
        "llama.context_length": _u32(2048),
        "llama.embedding_length": _u32(HIDDEN_SIZE),
        "llama.feed_forward_length": _u32(INTERMEDIATE_SIZE),
        "llama.attention.head_count": _u32(NUM_HEADS),
        "llama.attention.head_count_kv": _u32(NUM_KV_HEADS),
        "llama.attention.layer_norm_rms_epsilon": mx.array(1e-5, dtype=mx.float32),
        "llama.rope.dimension_count": _u32(HIDDEN_SIZE // NUM_HEADS),
        "llama.rope.freq_base": mx.array(10000.0, dtype=mx.float32),
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "smollm",
        "tokenizer.ggml.tokens": tokens,
        "tokenizer.ggml.token_type": mx.array(
            [3 if token in SPECIAL_TOKENS else 1 for token in tokens], dtype=mx.int32
        ),
        "tokenizer.ggml.merges": merges,
        "tokenizer.ggml.bos_token_id": _u32(tokenizer.token_to_id("<|im_start|>")),
        "tokenizer.ggml.eos_token_id": _u32(tokenizer.token_to_id("<|im_end|>")),
        "tokenizer.ggml.unknown_token_id": _u32(tokenizer.token_to_id("<|endoftext|>")),
        "tokenizer.ggml.padding_token_id": _u32(tokenizer.token_to_id("<|endoftext|>")),
        "tokenizer.chat_template": CHAT_TEMPLATE,
    }
    weights = {_gguf_name(name): array for name, array in _weights(len(tokens)).items()}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    mx.save_gguf(str(path), weights, metadata)
    return path
