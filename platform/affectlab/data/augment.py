"""Random image augmentation on batches, on the training device, from a seeded generator.

Done in the training loop rather than in the data pipeline so that every epoch sees new
draws while the run stays reproducible (the generator is seeded by seed, epoch and rank).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def augment_faces(
    images: torch.Tensor,
    generator: torch.Generator,
    p_flip: float = 0.3,
    max_degrees: float = 15.0,
    brightness: float = 0.2,
    contrast: float = 0.2,
) -> torch.Tensor:
    """Flip, rotate (zero fill) and jitter brightness/contrast each image of ``[B, 3, H, W]`` in [0, 1]."""
    b = images.shape[0]
    dev, dtype = images.device, images.dtype

    def uniform(lo: float, hi: float) -> torch.Tensor:
        return torch.rand(b, generator=generator, device=dev, dtype=dtype) * (hi - lo) + lo

    angle = uniform(-max_degrees, max_degrees) * math.pi / 180
    flip = torch.where(torch.rand(b, generator=generator, device=dev) < p_flip, -1.0, 1.0).to(dtype)
    cos, sin = torch.cos(angle), torch.sin(angle)
    theta = torch.stack([torch.stack([cos * flip, -sin, torch.zeros_like(cos)], -1),
                         torch.stack([sin * flip, cos, torch.zeros_like(cos)], -1)], 1)  # fmt: skip
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    out = F.grid_sample(images, grid, padding_mode="zeros", align_corners=False)
    out = out * uniform(1 - brightness, 1 + brightness).view(b, 1, 1, 1)
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * uniform(1 - contrast, 1 + contrast).view(b, 1, 1, 1) + mean
    return out.clamp(0, 1)
