"""An exponential moving average of a model's weights, kept beside the model itself.

In training mode the wrapper runs the live model; in eval mode (validation, test,
serving) it runs the averaged copy, so checkpoint selection and every reported number use
the EMA weights. The copy's parameters never require gradients, so the optimizer and
gradient clipping only see the live ones. Both live in the state dict, which makes a
checkpoint self-contained.
"""

from __future__ import annotations

import copy

import torch
import torch.nn as nn


class EMAModel(nn.Module):
    def __init__(self, model: nn.Module, decay: float = 0.999):
        super().__init__()
        if not 0.0 < decay < 1.0:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.model = model
        self.ema = copy.deepcopy(model).requires_grad_(False)
        self.decay = decay
        self.register_buffer("updates", torch.zeros((), dtype=torch.long))

    def forward(self, *args, **kwargs):
        return (self.model if self.training else self.ema)(*args, **kwargs)

    @torch.no_grad()
    def update(self) -> None:
        """Fold the live weights into the average; early updates weigh more (warm-up)."""
        self.updates += 1
        n = float(self.updates)
        decay = min(self.decay, (1.0 + n) / (10.0 + n))
        for average, live in zip(self.ema.parameters(), self.model.parameters()):
            average.lerp_(live.detach(), 1.0 - decay)
        for average, live in zip(self.ema.buffers(), self.model.buffers()):
            average.copy_(live)  # BatchNorm statistics follow the live model
