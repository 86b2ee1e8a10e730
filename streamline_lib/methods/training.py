"""Train the module that replaces a removed block (LLM-Streamline's layer replacement).

Two losses, as in the paper:

* ``mse`` (the method): the replacement ``r`` sits where layers ``start .. start+n-1``
  were, and learns ``r(h_start) ~ h_{start+n}``, both hidden states of the DENSE model
  (:mod:`streamline_lib.architecture.hidden_states`). The pairs are computed once, in one pass of
  the dense model that stops after layer ``start+n-1``; after that only the replacement
  is trained and held with its optimizer state, which is the method's memory argument
  against LoRA. The pairs stay in CPU RAM when they fit in
  :attr:`TrainConfig.pair_memory_gb`, else in a temporary memory-mapped file on disk
  (under ``TMPDIR``), removed after training; both give identical results.
* ``lm``: next-token cross-entropy through the whole pruned model, with only the
  replacement trainable (everything else frozen; ``requires_grad`` is restored after).

The caller passes the training token sequences: use the corpus's ``train`` split
(:func:`streamline_lib.data.text_data.token_sequences`), never the calibration text that chose
the block nor the held-out text the pruned model is evaluated on. A ``val_fraction`` of
those sequences (whole sequences, chosen with the seed) is held back for validation,
early stopping and the choice of the weights returned.

The replacement is trained in float32 (cast back to the model's dtype afterwards), with
AdamW, linear warm-up then cosine decay (:func:`learning_rate`), gradient clipping and
dropout off (the targets are deterministic dense states, and the modern architectures
have no dropout). The weights of the best validation loss are restored at the end.
Everything is deterministic given :attr:`TrainConfig.seed`.
"""

from __future__ import annotations

import hashlib
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn
from torch.nn import functional

from ..architecture.hidden_states import iter_hidden_states
from ..architecture.layers import get_layers, num_layers
from ..core.progress import progress_bar
from ..core.results_cache import model_fingerprint
from ..data.text_data import check_token_ids

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = ["LOSSES", "LMObjective", "TrainConfig", "TrainResult", "learning_rate", "check_finite_weights",
           "train_module", "train_replacement"]

#: The training losses: ``mse`` (match the dense hidden state) and ``lm`` (next-token loss).
LOSSES: tuple[str, ...] = ("mse", "lm")


@dataclass(frozen=True)
class TrainConfig:
    """How to train a replacement: the authors' optimiser, with a budget fit for small data.

    The authors train one epoch at a peak learning rate of 2e-4 on far more tokens
    than a CPU affords. On SmolLM2-135M at 25% (block 10-18), 5 epochs at 1e-3 with
    these defaults beat plain removal in perplexity for every variant from 16k
    tokens on, and by 3.7-5.6x on 262k tokens (1,024 sequences of 256; the
    replacement chapter shows perplexity against training tokens).
    """

    loss: str = "mse"  # "mse": match the dense h_{start+n}; "lm": next-token loss through the pruned model
    lr: float = 1e-3  # peak AdamW learning rate (authors: 2e-4, for one epoch over far more data)
    min_lr: float = 5e-5  # learning rate at the end of the cosine decay (authors)
    warmup_fraction: float = 0.01  # fraction of the optimizer steps with a linear warm-up (authors: 1%)
    weight_decay: float = 1e-3  # AdamW weight decay (authors)
    batch_size: int = 8  # sequences per forward pass (authors: 8)
    grad_accum: int = 1  # forward passes per optimizer step (authors: 16, with far more data than the book's)
    epochs: int = 5  # passes over the training sequences (authors: 1, over far more data)
    max_grad_norm: float = 5.0  # gradient-norm clipping (authors)
    val_fraction: float = 0.1  # fraction of the sequences held back for validation (at least one sequence)
    eval_every: int = 10  # optimizer steps between validations (also before the first and after the last)
    patience: int | None = None  # stop after this many validations without improvement; None: never stop early
    seed: int = 0  # validation split, shuffling and (via prune) the replacement's initialisation
    pair_memory_gb: float = 4.0  # hidden-state pairs up to this size stay in RAM, larger go to a file on disk
    # Leading positions of every sequence left out of the MSE and its baseline (loss="mse" only;
    # the lm loss uses every position). The first token of a window is an attention sink whose
    # huge activations dominate the MSE (SmolLM2 at 25%: 93% of removal's). Leaving it out, its
    # output is whatever the untrained module gives there: with the zero-start FFNs that is
    # removal's, with the layer its copy's. On SmolLM2-135M at 25% with the book's budget, 1
    # gave lower held-out perplexity than the paper's 0 for every variant (ffn 44.3 vs 51.0,
    # layer 41.4 vs 46.2, ffn_relu 62.8 vs 75.2; benchmarks/replacement_training.py); only a
    # start that changes the sink and is never corrected there (a copied MLP) did worse.
    mse_skip_tokens: int = 1
    progress: bool = True  # show progress bars

    def __post_init__(self) -> None:
        checks = {
            "loss": (self.loss in LOSSES, f"one of {', '.join(map(repr, LOSSES))}"),
            "lr": (self.lr >= 0, ">= 0"),
            "min_lr": (0 <= self.min_lr <= self.lr, f"between 0 and lr={self.lr}"),
            "warmup_fraction": (0 <= self.warmup_fraction < 1, "in [0, 1)"),
            "weight_decay": (self.weight_decay >= 0, ">= 0"),
            "batch_size": (self.batch_size >= 1, "a positive integer"),
            "grad_accum": (self.grad_accum >= 1, "a positive integer"),
            "epochs": (self.epochs >= 1, "a positive integer"),
            "max_grad_norm": (self.max_grad_norm > 0, "> 0"),
            "val_fraction": (0 < self.val_fraction < 1, "in (0, 1)"),
            "eval_every": (self.eval_every >= 1, "a positive integer"),
            "patience": (self.patience is None or self.patience >= 1, "None or a positive integer"),
            "pair_memory_gb": (self.pair_memory_gb >= 0, ">= 0 (0 puts the pairs on disk)"),
            "mse_skip_tokens": (self.mse_skip_tokens >= 0, ">= 0 (0 is the paper's loss)"),
        }
        for name, (ok, expected) in checks.items():
            if not ok:
                raise ValueError(f"TrainConfig.{name}={getattr(self, name)!r} is invalid: it must be {expected}")


@dataclass(frozen=True)
class TrainResult:
    """What happened while training a replacement. Losses are of :attr:`loss`'s kind."""

    loss: str  # "mse" (per element of the hidden states) or "lm" (cross-entropy per token)
    train_losses: tuple[float, ...]  # training loss of each optimizer step
    val_steps: tuple[int, ...]  # optimizer step of each validation, 0 = before training
    val_losses: tuple[float, ...]  # validation loss at those steps
    best_val_loss: float  # the lowest validation loss: the returned weights are the ones that had it
    best_step: int  # the step it was reached at (0: training never improved on the start)
    # Plain removal on the same validation data: mse, (h_start - h_{start+n})^2 averaged over every
    # element; lm, the LM loss of the pruned model with the replacement skipped.
    baseline_val_loss: float
    steps: int  # optimizer steps taken
    stopped_early: bool
    pairs_on_disk: bool  # whether the mse pairs were streamed from disk (False for lm, which has none)
    wall_time: float  # seconds, including the dense pass that computes the pairs (unless reused: see _block_pairs)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainResult:
        """The record from its JSON form (``dataclasses.asdict``, where tuples became lists)."""
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


def learning_rate(step: int, total_steps: int, config: TrainConfig) -> float:
    """The learning rate of optimizer step ``step`` (0-based) of ``total_steps``.

    Linear warm-up over the first ``ceil(warmup_fraction * total_steps)`` steps up to
    ``lr``, then cosine decay reaching ``min_lr`` at the last step.
    """
    warmup = math.ceil(config.warmup_fraction * total_steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup - 1)
    return config.min_lr + (config.lr - config.min_lr) * 0.5 * (1 + math.cos(math.pi * progress))


def _map_tensors(obj: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    """``obj`` with ``fn`` applied to every tensor inside its tuples, lists and dicts."""
    if isinstance(obj, torch.Tensor):
        return fn(obj)
    if isinstance(obj, (tuple, list)):
        return type(obj)(_map_tensors(item, fn) for item in obj)
    if isinstance(obj, dict):
        return {key: _map_tensors(value, fn) for key, value in obj.items()}
    return obj


def _to_float32(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.float() if tensor.is_floating_point() else tensor


class _Objective(Protocol):
    """A training loss over the training items (sequences) and a validation loss."""

    num_train: int
    pairs_on_disk: bool  # whether its training data live in a memory-mapped file (reported in TrainResult)

    def train_loss(self, indices: torch.Tensor) -> torch.Tensor:
        """Mean loss over the training items ``indices``, with a graph to the replacement."""

    def val_loss(self) -> float:
        """Mean loss over all validation items, without gradients."""

    def baseline(self) -> float:
        """The validation loss of plain removal (the replacement as the identity)."""


@dataclass
class _Pairs:
    """Hidden-state pairs of the dense model for some sequences, each ``(num_seqs, seq_len, hidden)``."""

    inputs: torch.Tensor  # h_start
    targets: torch.Tensor  # h_{start+n}


def allocate_buffer(shape: tuple[int, ...], dtype: torch.dtype, directory: str | None, name: str) -> torch.Tensor:
    """An uninitialised CPU tensor: in RAM, or memory-mapped to a new file in ``directory``."""
    if directory is None:
        return torch.empty(shape, dtype=dtype)
    path = os.path.join(directory, name)
    return torch.from_file(path, shared=True, size=math.prod(shape), dtype=dtype).view(shape)


# The decoder-layer call of each batch size: positional arguments after the hidden states, and keywords.
_Calls = dict[int, tuple[tuple, dict[str, Any]]]


def _dense_pairs(
    dense: PreTrainedModel, start: int, n: int, sequences: torch.Tensor, config: TrainConfig,
    directory: str | None, name: str, calls: _Calls,
) -> _Pairs:
    """Run ``dense`` on ``sequences`` and store its ``(h_start, h_{start+n})`` pairs.

    Also records into ``calls`` the arguments dense layer ``start`` receives (rotary
    position embeddings, attention mask, ...), which a ``layer`` replacement needs. All
    training sequences have the same length and no padding, so these arguments are the
    same for every batch of the same size: one call per batch size is enough. The
    sequences are run in the batches training will use (the full ``batch_size`` and the
    smaller last batch), so every size training meets is recorded.
    """
    shape = (len(sequences), sequences.shape[1], dense.config.hidden_size)
    pairs = _Pairs(allocate_buffer(shape, dense.dtype, directory, f"{name}_inputs"),
                   allocate_buffer(shape, dense.dtype, directory, f"{name}_targets"))

    def record_call(module: nn.Module, args: tuple, kwargs: dict[str, Any]) -> None:
        hidden_states = args[0] if args else kwargs["hidden_states"]
        rest = {key: value for key, value in kwargs.items() if key != "hidden_states"}
        calls.setdefault(hidden_states.shape[0], (args[1:], rest))

    handle = get_layers(dense)[start].register_forward_pre_hook(record_call, with_kwargs=True)
    try:
        row = 0
        states_of_batches = iter_hidden_states(dense, sequences, config.batch_size, up_to=start + n,
                                               progress=config.progress, desc=f"dense hidden states ({name})")
        for states in states_of_batches:
            size = states[0].shape[0]
            pairs.inputs[row : row + size].copy_(states[start])
            pairs.targets[row : row + size].copy_(states[start + n])
            row += size
    finally:
        handle.remove()
    return pairs


# The dense pairs of the last block trained in RAM, reused when the next replacement
# is trained on the same block, model and sequences (a chapter trains several variants
# of one block; the dense pass costs more than training an FFN). One entry: a block's
# pairs take ~1 GB for 1,000 sequences of 256 tokens.
_LAST_PAIRS: dict[tuple, tuple[_Pairs, _Pairs, _Calls]] = {}


def _block_pairs(
    dense: PreTrainedModel, start: int, n: int, train_seqs: torch.Tensor, val_seqs: torch.Tensor,
    config: TrainConfig, directory: str | None,
) -> tuple[_Pairs, _Pairs, _Calls]:
    """The training and validation pairs of the block, from the in-RAM cache or a dense pass.

    Pairs streamed to disk (``directory``) live only as long as one training and are
    not kept.
    """
    key = None
    if directory is None:  # only pairs in RAM are kept, so only they need the key (a hash of every weight)
        tokens = hashlib.blake2b(digest_size=16)
        for seqs in (train_seqs, val_seqs):
            tokens.update(seqs.to(torch.int64).contiguous().numpy().tobytes())
        key = (model_fingerprint(dense), start, n, tokens.hexdigest(), config.batch_size)
        if key in _LAST_PAIRS:
            return _LAST_PAIRS[key]
    _LAST_PAIRS.clear()  # before the dense pass: the old pairs' memory is freed first
    calls: _Calls = {}
    pairs = (_dense_pairs(dense, start, n, train_seqs, config, directory, "train", calls),
             _dense_pairs(dense, start, n, val_seqs, config, directory, "validation", calls), calls)
    if key is not None:
        _LAST_PAIRS[key] = pairs
    return pairs


class _MSEObjective:
    """MSE between the replacement's output on dense ``h_start`` and dense ``h_{start+n}``."""

    def __init__(
        self, replacement: nn.Module, train: _Pairs, val: _Pairs, calls: _Calls, batch_size: int, skip_tokens: int,
        pairs_on_disk: bool,
    ) -> None:
        self.replacement = replacement
        self.train, self.val = train, val
        self.pairs_on_disk = pairs_on_disk
        self.batch_size = batch_size
        self.skip = skip_tokens  # positions left out at the start of every sequence
        self.device = next(replacement.parameters()).device
        # The recorded tensors were made in inference mode (which autograd cannot save for
        # backward), in the model's dtype: clone them into ordinary float32 tensors.
        self.calls = {size: _map_tensors(call, lambda t: _to_float32(t.clone())) for size, call in calls.items()}
        self.num_train = len(train.inputs)

    def _loss(self, pairs: _Pairs, indices: torch.Tensor, reduction: str) -> torch.Tensor:
        inputs = pairs.inputs[indices].to(self.device, torch.float32)
        targets = pairs.targets[indices].to(self.device, torch.float32)
        args, kwargs = self.calls[len(indices)]
        outputs = self.replacement(inputs, *args, **kwargs)
        return functional.mse_loss(outputs[:, self.skip :], targets[:, self.skip :], reduction=reduction)

    def train_loss(self, indices: torch.Tensor) -> torch.Tensor:
        return self._loss(self.train, indices.sort().values, "mean")  # sorted: sequential reads from disk

    def _val_batches(self) -> Iterator[torch.Tensor]:
        return iter(torch.arange(len(self.val.inputs)).split(self.batch_size))

    @torch.no_grad()
    def val_loss(self) -> float:
        total = sum(self._loss(self.val, indices, "sum").item() for indices in self._val_batches())
        return total / self.val.inputs[:, self.skip :].numel()

    def baseline(self) -> float:
        """Plain removal's MSE on the validation pairs: mean ``(h_start - h_{start+n})^2`` per element."""
        inputs, targets = self.val.inputs[:, self.skip :], self.val.targets[:, self.skip :]
        total = sum(
            functional.mse_loss(inputs[i].float(), targets[i].float(), reduction="sum").item()
            for i in self._val_batches()
        )
        return total / inputs.numel()


class LMObjective:
    """Next-token cross-entropy of the whole pruned model, mean over the predicted tokens.

    Its baseline is the model with ``replacement`` skipped (plain removal); a subclass
    whose trainable module starts as a no-op (LoRA) overrides it.
    """

    pairs_on_disk = False

    def __init__(self, pruned: PreTrainedModel, replacement: nn.Module, train: torch.Tensor, val: torch.Tensor,
                 batch_size: int) -> None:
        self.pruned, self.replacement = pruned, replacement
        self.train, self.val = train, val
        self.batch_size = batch_size
        self.device = next(pruned.parameters()).device
        self.num_train = len(train)

    def _loss(self, batch: torch.Tensor) -> torch.Tensor:
        batch = batch.to(self.device)
        return self.pruned(input_ids=batch, labels=batch, use_cache=False).loss

    def train_loss(self, indices: torch.Tensor) -> torch.Tensor:
        return self._loss(self.train[indices])

    @torch.no_grad()
    def val_loss(self) -> float:
        # Every sequence has the same length, so weighting batch means by batch size is the token mean.
        total = sum(self._loss(batch).item() * len(batch) for batch in self.val.split(self.batch_size))
        return total / len(self.val)

    def baseline(self) -> float:
        """The validation loss with the replacement skipped (its output = its input): plain removal."""

        def skip(module: nn.Module, args: tuple, kwargs: dict[str, Any], output: Any) -> torch.Tensor:
            return args[0] if args else kwargs["hidden_states"]

        handle = self.replacement.register_forward_hook(skip, with_kwargs=True)
        try:
            return self.val_loss()
        finally:
            handle.remove()


@contextmanager
def _only_trainable(model: nn.Module, module: nn.Module) -> Iterator[None]:
    """Within the block only ``module``'s parameters require grad; every flag is restored after."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    try:
        for p in model.parameters():
            p.requires_grad_(False)
        for p in module.parameters():
            p.requires_grad_(True)
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


@contextmanager
def _float32_island(module: nn.Module, output_dtype: torch.dtype) -> Iterator[None]:
    """Within the block a float32 ``module`` inside a model of ``output_dtype`` casts at its borders.

    Its floating inputs (hidden states, rotary embeddings, masks) become float32 and its
    output goes back to the model's dtype, so gradients still flow through it.
    """

    def inputs_to_float32(mod: nn.Module, args: tuple, kwargs: dict[str, Any]) -> tuple[tuple, dict[str, Any]]:
        return _map_tensors(args, _to_float32), _map_tensors(kwargs, _to_float32)

    def output_to_model_dtype(mod: nn.Module, args: tuple, output: torch.Tensor) -> torch.Tensor:
        return output.to(output_dtype)

    handles = [module.register_forward_pre_hook(inputs_to_float32, with_kwargs=True),
               module.register_forward_hook(output_to_model_dtype)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def _split(
    sequences: torch.Tensor, val_fraction: float, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (train, validation) split of whole sequences; at least one of each."""
    if sequences.ndim != 2 or len(sequences) < 2 or sequences.shape[1] < 2:
        raise ValueError(
            f"training sequences must have shape (num_seqs >= 2, seq_len >= 2) to hold back a validation "
            f"sequence, got {tuple(sequences.shape)}; pass more sequences from the corpus's train split"
        )
    num_val = min(len(sequences) - 1, max(1, round(val_fraction * len(sequences))))
    order = torch.randperm(len(sequences), generator=generator)
    return sequences[order[num_val:]], sequences[order[:num_val]]


def _step_groups(num_train: int, config: TrainConfig, generator: torch.Generator) -> list[list[torch.Tensor]]:
    """For every optimizer step of every epoch, its micro-batches of training indices (shuffled per epoch)."""
    groups = []
    for _ in range(config.epochs):
        batches = torch.randperm(num_train, generator=generator).split(config.batch_size)
        groups += [list(batches[i : i + config.grad_accum]) for i in range(0, len(batches), config.grad_accum)]
    return groups


def _fit(replacement: nn.Module, objective: _Objective, config: TrainConfig, generator: torch.Generator) -> dict:
    """The training loop: AdamW, schedule, accumulation, clipping, validation, early stopping, best weights."""
    params = list(replacement.parameters())
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    groups = _step_groups(objective.num_train, config, generator)
    best_state = {key: value.detach().clone() for key, value in replacement.state_dict().items()}
    train_losses: list[float] = []
    val_steps, val_losses = [0], [objective.val_loss()]
    best_loss, best_step, waited, stopped_early = val_losses[0], 0, 0, False
    for step, group in enumerate(progress_bar(groups, "training the replacement", enabled=config.progress), 1):
        for param_group in optimizer.param_groups:
            param_group["lr"] = learning_rate(step - 1, len(groups), config)
        optimizer.zero_grad(set_to_none=True)
        group_size = sum(len(indices) for indices in group)
        step_loss = 0.0
        for indices in group:  # weights make the step's loss the mean over its sequences
            loss = objective.train_loss(indices) * (len(indices) / group_size)
            loss.backward()
            step_loss += loss.item()
        nn.utils.clip_grad_norm_(params, config.max_grad_norm)
        optimizer.step()
        train_losses.append(step_loss)
        if step % config.eval_every and step != len(groups):
            continue
        val_steps.append(step)
        val_losses.append(objective.val_loss())
        if val_losses[-1] < best_loss:
            best_loss, best_step, waited = val_losses[-1], step, 0
            best_state = {key: value.detach().clone() for key, value in replacement.state_dict().items()}
        else:
            waited += 1
            if config.patience is not None and waited >= config.patience:
                stopped_early = True
                break
    replacement.load_state_dict(best_state)
    return dict(train_losses=tuple(train_losses), val_steps=tuple(val_steps), val_losses=tuple(val_losses),
                best_val_loss=best_loss, best_step=best_step,
                steps=len(train_losses), stopped_early=stopped_early)


def check_finite_weights(weights: Mapping[str, torch.Tensor], what: str, fix: str) -> None:
    """Refuse ``weights`` holding NaN or infinities: a fit that diverged, whose model would score garbage.

    ``what`` names the weights in the message and ``fix`` says what to change; one pass over each tensor.
    """
    bad = [name for name, tensor in weights.items() if tensor.is_floating_point() and not tensor.isfinite().all()]
    if bad:
        more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
        raise ValueError(f"{what} holds NaN or infinite values (in {', '.join(bad[:3])}{more}); {fix}")


def train_replacement(
    pruned: PreTrainedModel,
    start: int,
    sequences: torch.Tensor,
    config: TrainConfig | None = None,
    dense: PreTrainedModel | None = None,
) -> TrainResult:
    """Train, in place, the replacement module at layer position ``start`` of ``pruned``.

    ``sequences`` ``(num_seqs, seq_len)`` are training tokens (the ``train`` split; see
    the module docstring), a ``config.val_fraction`` of which are held back for
    validation. ``dense`` is the model before the block was replaced, needed for
    ``loss="mse"``: its states are the targets, and the block's length ``n`` is read
    from the layer counts (``dense`` has ``n - 1`` more layers than ``pruned``). It is
    not changed. Returns the curves and the plain-removal baseline (:class:`TrainResult`).
    """
    config = config or TrainConfig()
    replacement = get_layers(pruned)[start]
    if not any(True for _ in replacement.parameters()):
        raise ValueError(f"the module at position {start} ({type(replacement).__name__}) has no parameters to train")
    if config.loss == "mse" and dense is None:
        raise ValueError("loss='mse' needs the dense model (its hidden states are the targets): pass dense=...")
    if config.loss == "mse" and config.mse_skip_tokens >= sequences.shape[-1]:
        raise ValueError(
            f"TrainConfig.mse_skip_tokens={config.mse_skip_tokens} leaves no position of the "
            f"{sequences.shape[-1]}-token sequences in the loss; skip fewer tokens (1 leaves out the attention "
            "sink) or use longer sequences"
        )

    def make_objective(train_seqs: torch.Tensor, val_seqs: torch.Tensor, stack: ExitStack) -> _Objective:
        if config.loss == "lm":
            return LMObjective(pruned, replacement, train_seqs, val_seqs, config.batch_size)
        n = num_layers(dense) - num_layers(pruned) + 1
        pair_bytes = 2 * sequences.numel() * dense.config.hidden_size * dense.dtype.itemsize
        on_disk = pair_bytes > config.pair_memory_gb * 2**30
        directory = stack.enter_context(tempfile.TemporaryDirectory(prefix="pairs_")) if on_disk else None
        train_pairs, val_pairs, calls = _block_pairs(dense, start, n, train_seqs, val_seqs, config, directory)
        return _MSEObjective(replacement, train_pairs, val_pairs, calls, config.batch_size, config.mse_skip_tokens,
                             on_disk)

    return train_module(pruned, replacement, sequences, config, make_objective)


def train_module(
    model: nn.Module,
    module: nn.Module,
    sequences: torch.Tensor,
    config: TrainConfig,
    make_objective: Callable[[torch.Tensor, torch.Tensor, ExitStack], _Objective],
    in_float32: bool = True,
) -> TrainResult:
    """Train ``module``, a part of ``model``, in place: the procedure every training of the library shares.

    ``sequences`` are split into training and validation sequences with ``config.seed``;
    ``make_objective(train, val, stack)`` builds the loss (``stack`` undoes what it sets up
    once training ends); its baseline (the untrained model's validation loss) is measured;
    then only ``module``'s parameters are fitted (``_fit``), in float32 when
    ``in_float32`` (cast back to their dtype afterwards), every other parameter frozen and
    its ``requires_grad`` restored after. Token ids outside ``model``'s vocabulary are refused
    before anything runs, and weights that end up NaN or infinite (training diverged) after it.
    Returns the curves, the baseline and the wall time.
    """
    check_token_ids(model, sequences)
    began = time.perf_counter()
    generator = torch.Generator().manual_seed(config.seed)
    train_seqs, val_seqs = _split(sequences, config.val_fraction, generator)
    with ExitStack() as stack:
        objective = make_objective(train_seqs, val_seqs, stack)
        baseline = objective.baseline()
        if in_float32:
            dtype = next(module.parameters()).dtype
            if config.loss == "lm":  # the module runs inside the model: cast at its borders
                stack.enter_context(_float32_island(module, dtype))
            module.float()
            stack.callback(module.to, dtype)
        stack.enter_context(_only_trainable(model, module))
        fitted = _fit(module, objective, config, generator)
    check_finite_weights(module.state_dict(), f"the trained {type(module).__name__}",
                         f"training diverged: lower the learning rate (TrainConfig.lr={config.lr}) or check the "
                         "training sequences")
    return TrainResult(loss=config.loss, baseline_val_loss=baseline, pairs_on_disk=objective.pairs_on_disk,
                       wall_time=time.perf_counter() - began, **fitted)
