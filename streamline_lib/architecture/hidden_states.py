"""Read the hidden states between decoder layers, without the LM head.

``h_0`` is the input of layer 0 (the embedding output) and ``h_i`` the output of
decoder layer ``i - 1``, for ``i = 1 … L``. We record them with hooks on the
layers rather than with ``output_hidden_states=True``, because transformers
applies the final norm to the last entry of ``hidden_states`` (so its ``h_L``
is not the last layer's output) and only records modules that it recognises as
decoder layers (a trained replacement would be missed). The base model is run
(``model.base_model``), so the LM head, a ``(tokens, vocabulary)`` product, is
never computed; and with ``up_to`` the forward stops after the last layer needed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from ..core.progress import progress_bar
from .layers import get_layers

__all__ = ["record_hidden_states", "iter_hidden_states"]


class _StopForward(Exception):
    """Raised by a hook to end a forward pass once the states we need are recorded."""


def _hidden(output: torch.Tensor | tuple) -> torch.Tensor:
    # Decoder layers return a tensor in most architectures, a tuple (hidden, ...) in some.
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def record_hidden_states(model: nn.Module, up_to: int | None = None) -> Iterator[list[torch.Tensor]]:
    """Within the block, every forward of ``model`` fills the yielded list with ``h_0 … h_up_to``.

    ``up_to`` defaults to the number of layers ``L``; a smaller value stops the
    forward pass after layer ``up_to - 1`` (only when run by :func:`iter_hidden_states`,
    which catches the stop). The list is cleared at the start of every forward.
    """
    layers = get_layers(model)
    up_to = len(layers) if up_to is None else up_to
    if not 0 <= up_to <= len(layers):
        raise ValueError(f"up_to={up_to} must be between 0 and the number of layers {len(layers)}")
    states: list[torch.Tensor] = []

    def record_input(module, args, kwargs):
        states.clear()
        states.append((args[0] if args else kwargs["hidden_states"]).detach())
        if up_to == 0:
            raise _StopForward

    def record_output(index: int):
        def hook(module, args, output):
            states.append(_hidden(output).detach())
            if index + 1 == up_to:
                raise _StopForward
        return hook

    handles = [layers[0].register_forward_pre_hook(record_input, with_kwargs=True)]
    handles += [layer.register_forward_hook(record_output(i)) for i, layer in enumerate(layers[:up_to])]
    try:
        yield states
    finally:
        for handle in handles:
            handle.remove()


@torch.inference_mode()
def iter_hidden_states(
    model: nn.Module,
    sequences: torch.Tensor,
    batch_size: int = 8,
    up_to: int | None = None,
    progress: bool = True,
    desc: str = "hidden states",
) -> Iterator[list[torch.Tensor]]:
    """For each batch of ``sequences`` (num_seqs, seq_len): the list ``h_0 … h_up_to``.

    Each state has shape ``(batch, seq_len, hidden)`` and lives on the model's
    device; consume a batch before asking for the next to keep memory bounded.
    """
    device = next(model.parameters()).device
    base = model.base_model
    with record_hidden_states(model, up_to) as states:
        for batch in progress_bar(sequences.split(batch_size), desc, enabled=progress):
            try:
                base(input_ids=batch.to(device), use_cache=False)
            except _StopForward:
                pass
            yield list(states)
