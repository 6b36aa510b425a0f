"""C3D (Tran et al., 2015) for per-frame behaviour logits, and its light variant.

3x3x3 convolutions over a grayscale clip ``[B, 1, T, H, W]``. Pooling halves only the
spatial size, never time, so the last feature map still has one column per frame; a
small temporal head turns it into per-frame logits ``[B, T, 6]``. The standard network
keeps C3D's eight convolutions (64-128-256-256-512-512-512-512, pools after conv 1, 2,
4, 6 and 8): its temporal receptive field is 17 frames, the clip length of the original
video pipeline. The light network has four narrow convolutions and a strided first one,
for CPUs and small GPUs.

Each convolution is followed by BatchNorm3d (the usual modern C3D; the 2015 network had
none and does not train from scratch in a few epochs). In evaluation it is a fixed affine
map per channel, so every frame's logits depend only on its receptive field.
``norm="frame_group"`` (GroupNorm over each frame) is there for batches too small for
batch statistics.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn as nn

from affectlab.constants.mouse import NUM_CLASSES


@dataclass(frozen=True)
class C3DConfig:
    channels: tuple[int, ...] = (64, 128, 256, 256, 512, 512, 512, 512)
    pool_after: tuple[int, ...] = (0, 1, 3, 5, 7)  # conv indices followed by 1x2x2 max pooling
    first_stride: int = 1  # spatial stride of the first convolution
    norm: str = "batch"  # "batch" (BatchNorm3d) or "frame_group" (GroupNorm per frame)
    head_hidden: int = 512
    dropout: float = 0.5
    num_classes: int = NUM_CLASSES

    def scaled(self, width: float) -> C3DConfig:
        """The same network with every channel count multiplied by ``width``."""
        channels = tuple(max(8, int(round(c * width))) for c in self.channels)
        return replace(self, channels=channels, head_hidden=max(16, int(round(self.head_hidden * width))))


C3D_STANDARD = C3DConfig()
C3D_LIGHT = C3DConfig(channels=(32, 64, 128, 128), pool_after=(0, 1, 2, 3), first_stride=2, head_hidden=128, dropout=0.3)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm over (channels / groups, H, W) of each frame of a ``[B, C, T, H, W]`` tensor."""

    def __init__(self, num_channels: int):
        super().__init__(next(g for g in (8, 4, 2, 1) if num_channels % g == 0), num_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, t, h, w = x.shape
        frames = x.transpose(1, 2).reshape(b * t, c, h, w)
        return super().forward(frames).reshape(b, t, c, h, w).transpose(1, 2)


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm3d(channels)
    if kind == "frame_group":
        return FrameGroupNorm(channels)
    raise ValueError(f"C3D norm must be 'batch' or 'frame_group', got {kind!r}")


class C3DTrunk(nn.Module):
    """The convolutional part: ``[B, T, H, W]`` in [0, 1] -> per-frame features ``[B, C, T]``."""

    def __init__(self, cfg: C3DConfig):
        super().__init__()
        layers, c_in = [], 1
        for i, c_out in enumerate(cfg.channels):
            stride = (1, cfg.first_stride, cfg.first_stride) if i == 0 else 1
            layers += [nn.Conv3d(c_in, c_out, 3, stride=stride, padding=1, bias=False), _norm(cfg.norm, c_out), nn.ReLU(inplace=True)]
            if i in cfg.pool_after:
                layers.append(nn.MaxPool3d((1, 2, 2), ceil_mode=True))
            c_in = c_out
        self.features = nn.Sequential(*layers)
        self.out_channels = c_in

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        x = (frames.unsqueeze(1) - 0.5) / 0.25  # grayscale: a fixed, dataset-free normalisation
        return self.features(x).amax(dim=(3, 4))  # max, not mean: the animal is a small part of the frame


class C3D(nn.Module):
    """C3D trunk + per-frame head (a 3-frame temporal convolution, then a linear layer)."""

    def __init__(self, cfg: C3DConfig = C3D_STANDARD):
        super().__init__()
        self.cfg = cfg
        self.trunk = C3DTrunk(cfg)
        self.head = nn.Sequential(
            nn.Conv1d(self.trunk.out_channels, cfg.head_hidden, 3, padding=1),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Conv1d(cfg.head_hidden, cfg.num_classes, 1),
        )

    def forward(self, frames: torch.Tensor, pose: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """``frames`` ``[B, T, H, W]`` in [0, 1]; ``pose`` is ignored (video only)."""
        return {"logits": self.head(self.trunk(frames)).transpose(1, 2)}


def build_c3d(light: bool = False, width: float = 1.0, dropout: float | None = None) -> C3D:
    cfg = (C3D_LIGHT if light else C3D_STANDARD).scaled(width)
    return C3D(cfg if dropout is None else replace(cfg, dropout=dropout))
