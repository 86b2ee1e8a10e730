"""Plain helpers and constants that several test files share; the shared fixtures are in conftest.py.

Import them as ``from helpers import ...`` (pytest puts this folder on ``sys.path``; the
subprocess scripts of test_output_safety.py put it on ``PYTHONPATH``).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from collections.abc import Callable
from typing import Any

import torch
from tokenizers import Tokenizer, models, pre_tokenizers
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    Gemma3TextConfig,
    GPT2Config,
    GPTNeoXConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    OPTConfig,
    Phi3Config,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
)

from streamline_lib.architecture.layers import get_layers
from streamline_lib.methods.pruning import PruneResult, prune
from streamline_lib.methods.replacement import ResidualFFN

# --- tiny random models of every supported architecture, for layer surgery ---------------

LAYERS = 6
ARCH_VOCAB = 128  # the vocabulary of the models build() makes
WINDOW = 4  # sliding window, shorter than the test sequences so that it matters
S, F = "sliding_attention", "full_attention"
# Removing layers 1-2 shifts later layers onto positions of another type, so trimming
# layer_types wrongly (e.g. keeping its first entries) would change the logits.
GEMMA3_LAYER_TYPES = [S, F, S, S, F, S]

COMMON = dict(vocab_size=ARCH_VOCAB, hidden_size=32, num_hidden_layers=LAYERS, num_attention_heads=4,
              max_position_embeddings=64)
LLAMA_STYLE = dict(COMMON, intermediate_size=64, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                   eos_token_id=2)
CONFIGS = {
    "llama": lambda: LlamaConfig(**LLAMA_STYLE),
    "mistral": lambda: MistralConfig(**LLAMA_STYLE, sliding_window=WINDOW),
    # layer_types = [F, F, S, S, S, S]
    "qwen2": lambda: Qwen2Config(**LLAMA_STYLE, use_sliding_window=True, sliding_window=WINDOW,
                                 max_window_layers=2),
    "gemma3_text": lambda: Gemma3TextConfig(**LLAMA_STYLE, head_dim=8, query_pre_attn_scalar=8,
                                            sliding_window=WINDOW, layer_types=GEMMA3_LAYER_TYPES),
    "phi3": lambda: Phi3Config(**LLAMA_STYLE, sliding_window=WINDOW),
    "opt": lambda: OPTConfig(**COMMON, ffn_dim=64, word_embed_proj_dim=32, pad_token_id=0, bos_token_id=1,
                             eos_token_id=2),
    "gpt2": lambda: GPT2Config(vocab_size=ARCH_VOCAB, n_embd=32, n_layer=LAYERS, n_head=4, n_positions=64,
                               pad_token_id=0, bos_token_id=1, eos_token_id=2),
    "gpt_neox": lambda: GPTNeoXConfig(**COMMON, intermediate_size=64, pad_token_id=0, bos_token_id=1,
                                      eos_token_id=2),
}
ARCHS = sorted(CONFIGS)


def build(model_type: str) -> nn.Module:
    """A tiny randomly initialised causal LM of `model_type`, in eval mode."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(CONFIGS[model_type]())
    assert model.config.model_type == model_type
    return model.eval()


def batch() -> dict[str, torch.Tensor]:
    """Two left-padded sequences of 10 tokens, longer than the sliding window."""
    generator = torch.Generator().manual_seed(1)
    input_ids = torch.randint(3, ARCH_VOCAB, (2, 10), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[1, :3] = 0
    attention_mask[1, :3] = 0
    return {"input_ids": input_ids, "attention_mask": attention_mask}


def skip_with_hooks(model: nn.Module, indices: range) -> list:
    """Make layers `indices` of `model` return their input hidden states unchanged."""

    def passthrough(module, args, kwargs, output):
        hidden_states = args[0] if args else kwargs["hidden_states"]
        return (hidden_states, *output[1:]) if isinstance(output, tuple) else hidden_states

    layers = get_layers(model)
    return [layers[i].register_forward_hook(passthrough, with_kwargs=True) for i in indices]


def logits(model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        out = model(**inputs, use_cache=False).logits
    return out[inputs["attention_mask"].bool()]  # padded positions are not compared


def greedy(model: nn.Module, inputs: dict[str, torch.Tensor], use_cache: bool) -> torch.Tensor:
    return model.generate(**inputs, max_new_tokens=5, do_sample=False, use_cache=use_cache, pad_token_id=0)


# --- a tiny llama to train, and tokens to train it on ------------------------------------

VOCAB = 64  # the vocabulary of tiny_llama() and of the word-level tokenizers
# A few dozen steps at a high learning rate. 64 sequences leave a smaller last batch in
# both the training (51) and the validation (13) sequences.
FAST = dict(lr=1e-2, min_lr=1e-3, batch_size=4, epochs=3, val_fraction=0.2, eval_every=4, progress=False)


def tiny_llama(dtype: torch.dtype = torch.float32) -> LlamaForCausalLM:
    """A random 6-layer llama whose layers change the hidden state noticeably (init std 0.1)."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1)
    return LlamaForCausalLM(config).to(dtype).eval()


def random_tokens(num_seqs: int = 64, seq_len: int = 16) -> torch.Tensor:
    return torch.randint(3, VOCAB, (num_seqs, seq_len), generator=torch.Generator().manual_seed(1))


def counting_tokens(num_seqs: int = 32, seq_len: int = 16) -> torch.Tensor:
    """Sequences that count up (mod VOCAB) from a random start: a next-token rule to learn."""
    starts = torch.randint(0, VOCAB, (num_seqs, 1), generator=torch.Generator().manual_seed(1))
    return (starts + torch.arange(seq_len)) % VOCAB


# --- word-level tokenizers and models to export ------------------------------------------

def word_level_tokenizer(size: int, **special_tokens: str) -> PreTrainedTokenizerFast:
    """A tokenizer of the words ``t0 .. t<size-1>`` (``t0`` is unknown), split on whitespace."""
    backend = Tokenizer(models.WordLevel({f"t{i}": i for i in range(size)}, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=backend, **special_tokens)


def tiny_llama_and_tokenizer() -> tuple[LlamaForCausalLM, PreTrainedTokenizerFast]:
    """A random 6-layer llama (default init) and a word-level tokenizer of its 64 ids: what the export tests save."""
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=6,
                         num_attention_heads=4, num_key_value_heads=2)
    return LlamaForCausalLM(config).eval(), word_level_tokenizer(VOCAB, eos_token="t1")


def tiny_of(model_type: str) -> tuple[PreTrainedModel, PreTrainedTokenizerFast]:
    """A tiny random model of ``model_type`` (OPT with its MLP 4 x hidden wide, the ffn_relu shape) and a tokenizer."""
    torch.manual_seed(0)
    config = CONFIGS[model_type]()
    if model_type == "opt":
        config.ffn_dim = 4 * config.hidden_size
    tokenizer = word_level_tokenizer(ARCH_VOCAB, eos_token="t2", pad_token="t0")
    return AutoModelForCausalLM.from_config(config).eval(), tokenizer


def _weights_that_matter(module: nn.Module) -> None:
    """Random weights around 1 (vectors) and 0 (matrices): an untrained module may be exactly plain removal."""
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=generator) * 0.1 + (1 if p.ndim == 1 else 0))


def pruned_for_export(model: PreTrainedModel, replacement: str) -> PruneResult:
    """Layers 2-4 of ``model`` replaced by ``replacement``, a linear map fitted, an FFN given weights that matter."""
    # the linear map is fitted on a few token windows; without them it would be the identity (plain removal)
    tokens = torch.randint(0, 64, (8, 12), generator=torch.Generator().manual_seed(2)) if replacement == "linear" \
        else None
    result = prune(model, 2, 3, replacement=replacement, train_sequences=tokens)
    module = get_layers(result.model)[2]
    if isinstance(module, ResidualFFN):
        _weights_that_matter(module)
    return result


def trained_looking(model: PreTrainedModel, kind: str) -> PruneResult:
    """Layers 2-4 of ``model`` replaced by an untrained ``kind`` module given weights that matter."""
    result = prune(model, 2, 3, replacement=kind)
    _weights_that_matter(get_layers(result.model)[2])
    return result


# --- deprecated call forms ---------------------------------------------------------------

def positional_and_keyword(function: Callable, args: tuple, moved: dict[str, Any], **keywords: Any) -> tuple[Any, Any]:
    """``function`` called with ``moved`` by position (deprecated) and by keyword: both results.

    The positional call must warn once, naming the call and its keyword form, at the line
    that made it; the keyword call must not warn.
    """
    name = function.__name__
    expected = (rf"{name}\(\) got {', '.join(moved)} by position, which is deprecated \(keyword-only now\): "
                rf"call {name}\(.*{re.escape(', '.join(f'{m}=...' for m in moved))}\)$")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        old = function(*args, *moved.values(), **keywords)
    ours = [w for w in caught if w.category is DeprecationWarning and "by position" in str(w.message)]
    assert len(ours) == 1 and re.search(expected, str(ours[0].message)), [str(w.message) for w in ours]
    assert ours[0].filename == __file__, "the warning points at the caller's line"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        new = function(*args, **moved, **keywords)
    assert not [w for w in caught if w.category is DeprecationWarning and w.filename == __file__]
    return old, new


def assert_same_training(a: Any, b: Any) -> None:
    """Two training records (or tuples of them, or None) alike in everything but their wall time."""
    def timeless(records):
        records = records if isinstance(records, tuple) else (records,)
        return [r if r is None else dataclasses.replace(r, wall_time=0.0) for r in records]
    assert timeless(a) == timeless(b)


def assert_same_logits(a: nn.Module, b: nn.Module, tokens: torch.Tensor) -> None:
    with torch.no_grad():
        torch.testing.assert_close(a(tokens).logits, b(tokens).logits, rtol=0, atol=0)
