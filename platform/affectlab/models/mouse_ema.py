"""An exponential moving average of a model's weights, kept beside the model itself.

The average is ``torch.optim.swa_utils.AveragedModel`` with an EMA ``multi_avg_fn`` whose
decay warms up as ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (early weights,
from a random start, are not worth 0.999 of the average); BatchNorm statistics follow the
live model (``use_buffers=False``). In training mode the wrapper runs the live model; in
eval mode (validation, test, serving) the average, so checkpoint selection and every
reported number use it. The average's parameters never require gradients, so the
optimizer and gradient clipping see only the live ones. Both are in the state dict
(``model.*``, ``ema.module.*``, ``ema.n_averaged``), so a checkpoint is self-contained;
checkpoints of the earlier hand-written EMA (``ema.*``, ``updates``) still load.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from torch.optim.swa_utils import AveragedModel


def ema_with_warmup(decay: float):
    """An ``AveragedModel`` ``multi_avg_fn``: EMA with decay ``min(decay, (1 + n) / (10 + n))``."""

    @torch.no_grad()
    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], num_averaged: torch.Tensor) -> None:
        n = float(num_averaged)
        torch._foreach_lerp_(averaged, current, 1.0 - min(decay, (1.0 + n) / (10.0 + n)))

    return update


class EMAModel(nn.Module):
    def __init__(self, model: nn.Module, decay: float = 0.999):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.model = model
        self.ema = AveragedModel(model, multi_avg_fn=ema_with_warmup(decay), use_buffers=False).requires_grad_(False)
        self.decay = decay
        self.register_load_state_dict_pre_hook(_from_hand_written_ema)

    def forward(self, *args, **kwargs):
        return self.model(*args, **kwargs) if self.training else self.ema(*args, **kwargs)

    @torch.no_grad()
    def update(self) -> None:
        """Fold the live weights into the average (the first update copies them)."""
        self.ema.update_parameters(self.model)


def _from_hand_written_ema(module, state_dict, prefix, *args) -> None:
    """Rename an older checkpoint's keys (``ema.<name>``, ``updates``) to AveragedModel's."""
    if prefix + "updates" in state_dict:
        state_dict[prefix + "ema.n_averaged"] = state_dict.pop(prefix + "updates")
    for key in [k for k in state_dict if k.startswith(prefix + "ema.") and not k.startswith(prefix + "ema.module.")]:
        if key != prefix + "ema.n_averaged":
            state_dict[prefix + "ema.module." + key[len(prefix + "ema."):]] = state_dict.pop(key)
