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


def build_tiny_model(directory: Path) -> Path:
    """Write the tiny model into `directory` (created if missing) and return it.

    The same call always writes the same files: the tokenizer trainer and the weights are
    deterministic, so tests may compare generated text across runs.
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
    (directory / "config.json").write_text(json.dumps(_config(vocab_size, eos_token_id), indent=2))
    mx.save_safetensors(
        str(directory / "model.safetensors"), _weights(vocab_size), metadata={"format": "mlx"}
    )
    return directory
