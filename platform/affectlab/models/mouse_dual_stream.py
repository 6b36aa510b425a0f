"""Video + pose dual stream: a 3D-CNN visual stream and a pose MLP, fused by temporal attention.

The original multimodal model pooled a frozen per-frame DINOv2 stream and an 18 -> 128 ->
256 pose MLP into one vector per clip and classified the clip's centre frame. Here both
streams keep one feature vector per frame: the visual stream is the light C3D trunk, the
pose stream the same MLP shape (fed the features and their frame-to-frame change), each
stream is layer-normalised so neither drowns the other, and a temporal self-attention layer (sinusoidal positions,
pre-norm) lets every frame look at the whole window before the per-frame classifier.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn

from affectlab.constants.mouse import NUM_CLASSES, NUM_POSE_FEATURES
from affectlab.models.mouse_c3d import C3D_LIGHT, C3DTrunk
from affectlab.models.mouse_multitask import pose_velocity



def sinusoidal_positions(length: int, dim: int, device=None) -> torch.Tensor:
    """``[length, dim]`` fixed sine/cosine position codes (any window length works)."""
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    codes = torch.zeros(length, dim, device=device)
    codes[:, 0::2] = torch.sin(position * freq)
    codes[:, 1::2] = torch.cos(position * freq[: dim // 2])
    return codes


class PoseMLP(nn.Module):
    """Per-frame pose encoder: the 18 features and their change since the last frame -> ``out``."""

    def __init__(self, hidden: int = 128, out: int = 256, dropout: float = 0.3):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * NUM_POSE_FEATURES, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out), nn.GELU()
        )

    def forward(self, pose: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([pose, pose_velocity(pose)], dim=-1))


class DualStream(nn.Module):
    def __init__(
        self,
        visual_width: float = 1.0,
        pose_hidden: int = 128,
        pose_out: int = 256,
        dim: int = 256,
        heads: int = 4,
        dropout: float = 0.3,
        num_classes: int = NUM_CLASSES,
    ):
        super().__init__()
        self.visual = C3DTrunk(C3D_LIGHT.scaled(visual_width))
        self.pose = PoseMLP(pose_hidden, pose_out, dropout)
        # Each stream is layer-normalised before fusion, so neither drowns the other.
        self.visual_norm, self.pose_norm = nn.LayerNorm(self.visual.out_channels), nn.LayerNorm(pose_out)
        self.fuse = nn.Linear(self.visual.out_channels + pose_out, dim)
        self.attention = nn.TransformerEncoderLayer(
            dim, heads, dim_feedforward=2 * dim, dropout=dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, frames: torch.Tensor, pose: torch.Tensor) -> dict[str, torch.Tensor]:
        """``frames`` ``[B, T, H, W]`` in [0, 1], ``pose`` ``[B, T, 18]`` -> logits ``[B, T, 6]``."""
        visual = self.visual_norm(self.visual(frames).transpose(1, 2))  # [B, T, C]
        x = self.fuse(torch.cat([visual, self.pose_norm(self.pose(pose))], dim=-1))
        x = x + sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype)
        return {"logits": self.head(self.norm(self.attention(x)))}
