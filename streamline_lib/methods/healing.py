"""Heal a pruned model with LoRA: the baseline LLM-Streamline's replacement is compared with.

Gromov et al. and LLM-Streamline's own LoRA comparison (claim C8) remove a block and
then fine-tune low-rank updates of every remaining linear layer on the next-token
loss. :func:`heal_with_lora` does that with peft: ``LoraConfig(target_modules=
"all-linear")`` on a copy of the pruned model, trained with the library's own loop
(AdamW, warm-up and cosine decay, clipping, validation, best weights kept:
:mod:`streamline_lib.methods.training`), then merged into the weights, so the result is a plain
model of the pruned architecture. LoRA's B matrices start at zero, so the untrained
model is exactly the pruned one, the baseline training can only improve on.

Unlike the MSE replacement, every step runs the whole model forward and backward,
with the logits of the full vocabulary: that is the memory and time the paper's
comparison is about (:mod:`streamline_lib.methods.costs` measures both).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING

import torch
from torch import nn

from ..core.deprecation import positional_deprecated
from .trained_cache import cached_training, training_key
from .training import LMObjective, TrainConfig, TrainResult, train_module

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["LoraSettings", "HealResult", "heal_with_lora", "check_healing_config", "AdapterLMObjective", "inject_lora",
           "train_adapters", "lora_modules"]


@dataclass(frozen=True)
class LoraSettings:
    """The low-rank updates: rank, scale and which linear layers get them."""

    rank: int = 8  # r of every update W + (alpha / r) B A
    alpha: float = 16.0  # LoRA's scale numerator (peft's lora_alpha)
    target_modules: str | tuple[str, ...] = "all-linear"  # peft's name for every linear layer but the LM head

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"LoraSettings.rank={self.rank} is invalid: it must be a positive integer")
        if self.alpha <= 0:
            raise ValueError(f"LoraSettings.alpha={self.alpha} is invalid: it must be > 0")


@dataclass(frozen=True)
class HealResult:
    """A healed model (LoRA merged into its weights) and how the healing went."""

    model: PreTrainedModel  # a new model; the pruned one passed in is unchanged
    train_result: TrainResult  # losses are next-token cross-entropy; baseline = the pruned model's
    lora_parameters: int  # trainable parameters while healing (the A and B matrices)


@positional_deprecated("config", "lora", "cache")
def heal_with_lora(
    pruned: PreTrainedModel,
    sequences: torch.Tensor,
    *,
    config: TrainConfig | None = None,
    lora: LoraSettings | None = None,
    cache: bool | str | os.PathLike = False,
) -> HealResult:
    """Fine-tune LoRA updates of ``pruned`` on ``sequences`` with the next-token loss, then merge them.

    ``sequences`` ``(num_seqs, seq_len)`` come from a corpus's ``train`` split; a
    ``config.val_fraction`` is held back for validation and the choice of the weights
    returned. ``config`` must have ``loss="lm"`` (default ``TrainConfig(loss="lm")``); its
    optimiser settings apply to the LoRA parameters, its ``seed`` to their initialisation
    and the data order. ``cache`` (False, True or a folder, as in
    :mod:`streamline_lib.core.results_cache`) keeps the trained A and B matrices on disk,
    keyed by everything that decides them.
    """
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    config = config or TrainConfig(loss="lm")
    lora = lora or LoraSettings()
    check_healing_config(config)
    targets = list(lora.target_modules) if isinstance(lora.target_modules, tuple) else lora.target_modules
    model = inject_lora(copy.deepcopy(pruned), lora.rank, lora.alpha, targets, config.seed)
    adapters = lora_modules(model)
    lora_parameters = sum(p.numel() for p in adapters.parameters())
    trained = cached_training(
        cache,
        key=lambda: training_key("lora-healing", pruned, sequences, config, lora=dataclasses.asdict(lora)),
        train=lambda: train_adapters(model, adapters, sequences, config),
        load=partial(set_peft_model_state_dict, model),
        weights=partial(get_peft_model_state_dict, model),
    )
    healed = model.merge_and_unload()
    for p in healed.parameters():  # peft froze the base weights; give back a model like the one passed in
        p.requires_grad_(True)
    return HealResult(healed, trained, lora_parameters)


def inject_lora(model: nn.Module, rank: int, alpha: float, target_modules: str | list[str], seed: int):
    """``model`` wrapped by peft with LoRA updates (no dropout, no bias) on ``target_modules``; ``model`` itself is changed.

    The A matrices are drawn at random: ``seed`` makes them the same on every call. The
    one place the library calls ``get_peft_model`` (LoRA healing here, SHARP's recovery
    parameters in :mod:`streamline_lib.methods.sharing`).
    """
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    with warnings.catch_warnings():  # peft 0.21 calls a transformers method deprecated in 5.x
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, bias="none",
                                                target_modules=target_modules))


def lora_modules(model: nn.Module) -> nn.ModuleList:
    """Every LoRA A and B matrix peft put into ``model``, in module order (what healing trains)."""
    return nn.ModuleList(module for name, module in model.named_modules()
                         if name.rsplit(".", 1)[-1] in ("lora_A", "lora_B"))


def check_healing_config(config: TrainConfig) -> None:
    """Refuse a config whose loss is not the next-token loss LoRA healing trains on."""
    if config.loss != "lm":
        raise ValueError(f"LoRA healing trains on the next-token loss, but config.loss={config.loss!r}: "
                         "pass TrainConfig(loss='lm', ...)")


class AdapterLMObjective(LMObjective):
    """The next-token loss of a model with low-rank updates; the baseline is the model as it starts.

    LoRA's and SHARP's recovery updates start at zero (B = 0), so the untrained model
    is the one before healing, which is the baseline training must beat.
    """

    def baseline(self) -> float:
        return self.val_loss()


def train_adapters(model: nn.Module, adapters: nn.Module, sequences: torch.Tensor, config: TrainConfig) -> TrainResult:
    """Train ``adapters`` (peft's low-rank matrices inside ``model``) on the next-token loss, in place.

    The shared procedure of LoRA healing and SHARP's fine-tuning stage
    (:mod:`streamline_lib.methods.sharing`); everything else in ``model`` stays frozen.
    """
    check_healing_config(config)

    def make_objective(train_seqs: torch.Tensor, val_seqs: torch.Tensor, stack: ExitStack) -> AdapterLMObjective:
        stack.callback(model.train, model.training)
        model.eval()  # no dropout: the book's models have none, and LoRA's is off
        return AdapterLMObjective(model, adapters, train_seqs, val_seqs, config.batch_size)

    # peft already keeps the adapters in float32 on a bfloat16 model (autocast_adapter_dtype): no cast here.
    return train_module(model, adapters, sequences, config, make_objective, in_float32=False)
