"""The multi-task mouse model: per-frame image backbone + pose branch + dilated TCN, two heads.

Follows the original ``train_multitask.py`` where it was right and fixes it where it was
not (reference/mouse.md §6.3, §9.4):

- a timm image backbone runs on **every frame** (the original broadcast one clip vector to
  all frames, defect 17), grayscale in, normalised with the backbone's own mean and std
  (defect 18); a pretrained backbone that cannot be loaded is a clear error (defect 20);
- the pose branch embeds the 18 pose features (Linear -> GELU -> Dropout);
- a temporal model of residual dilated Conv1d blocks (dilations 1, 2, 4; kernel 3;
  GroupNorm(8); GELU; dropout) mixes the two per frame;
- an action head gives per-frame logits ``[B, T, 6]``; a keypoint head regresses the 6
  keypoints ``[B, T, 6, 2]`` in normalised coordinates (sigmoid). The workload trains it on
  clean keypoints, masked to visible points (defect 6).
"""

from __future__ import annotations

from dataclasses import dataclass

import timm
import torch
import torch.nn as nn

from affectlab.constants.mouse import NUM_BODYPARTS as NUM_KEYPOINTS
from affectlab.constants.mouse import NUM_CLASSES, NUM_POSE_FEATURES


class GroupNorm4(nn.GroupNorm):
    """GroupNorm with 4 groups, in BatchNorm's call signature (what timm's ResNet expects)."""

    def __init__(self, num_channels: int, **kwargs):
        super().__init__(4, num_channels, **kwargs)


# Small named backbones for tests and laptops (random initialisation only); any other name
# is a timm model name. GroupNorm, not BatchNorm: a batch of windows is a few dozen
# strongly correlated frames, whose batch statistics differ from the running ones.
TINY_BACKBONES = {
    "tiny_resnet": ("resnet18", {"layers": (1, 1, 1, 1), "channels": (16, 32, 64, 96), "norm_layer": GroupNorm4}),
    "tiny_vit": ("vit_tiny_patch16_224", {"patch_size": 8, "embed_dim": 64, "depth": 2, "num_heads": 2}),
}


@dataclass(frozen=True)
class MultiTaskConfig:
    backbone: str = "vit_small_patch14_dinov2.lvd142m"
    pretrained: bool = True
    weights_path: str | None = None  # a local weights file for offline machines
    image_size: int = 224
    pose_hidden: int = 128
    hidden: int = 512
    dilations: tuple[int, ...] = (1, 2, 4)
    dropout: float = 0.3
    visual_dropout: float = 0.0  # training: share of windows whose visual features are zeroed
    keypoint_head: bool = True
    grad_checkpointing: bool = False  # recompute backbone activations: frames x window fit on one GPU
    num_classes: int = NUM_CLASSES


def create_backbone(name: str, image_size: int, pretrained: bool, weights_path: str | None = None) -> tuple[nn.Module, float, float]:
    """A timm model with one input channel and no classifier, and its grayscale mean/std."""
    kwargs = {"num_classes": 0, "in_chans": 1}
    tiny = name in TINY_BACKBONES
    if tiny:
        if pretrained:
            raise ValueError(f"backbone {name!r} is a small test network with no pretrained weights; set pretrained=False")
        name, extra = TINY_BACKBONES[name]
        kwargs.update(extra)
    if "vit" in name or "deit" in name or "eva" in name:
        kwargs["img_size"] = image_size
    if pretrained and weights_path:
        kwargs["pretrained_cfg_overlay"] = {"file": weights_path}
    try:
        model = timm.create_model(name, pretrained=pretrained, **kwargs)
    except Exception as error:  # download, file or name problems all end up here
        raise RuntimeError(
            f"could not create backbone {name!r} (pretrained={pretrained}): {error}. "
            "Give a local weights file (weights_path / --weights-path) or use random initialisation "
            "(pretrained=False / --no-pretrained)."
        ) from error
    # The normalisation depends on the backbone only, never on whether weights were loaded,
    # so a checkpoint rebuilt without downloading (pretrained=False) sees the same inputs.
    if tiny:
        mean, std = 0.5, 0.25
    else:  # timm folds the RGB filters into one gray channel: normalise gray the same way
        mean = float(sum(model.pretrained_cfg["mean"]) / 3)
        std = float(sum(model.pretrained_cfg["std"]) / 3)
    return model, mean, std


def pose_velocity(pose: torch.Tensor) -> torch.Tensor:
    """Frame-to-frame change of the pose features ``[B, T, F]`` (0 at the first frame)."""
    return torch.cat([torch.zeros_like(pose[:, :1]), pose[:, 1:] - pose[:, :-1]], dim=1)


class DilatedResidualBlock(nn.Module):
    def __init__(self, channels: int, dilation: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv1d(channels, channels, 3, padding=dilation, dilation=dilation),
            nn.GroupNorm(8, channels),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Conv1d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class MouseMultiTask(nn.Module):
    def __init__(self, cfg: MultiTaskConfig = MultiTaskConfig()):
        super().__init__()
        self.cfg = cfg
        self.backbone, mean, std = create_backbone(cfg.backbone, cfg.image_size, cfg.pretrained, cfg.weights_path)
        if cfg.grad_checkpointing and hasattr(self.backbone, "set_grad_checkpointing"):
            self.backbone.set_grad_checkpointing(True)
        self.register_buffer("pixel_mean", torch.tensor(mean), persistent=False)
        self.register_buffer("pixel_std", torch.tensor(std), persistent=False)
        self.visual_norm = nn.LayerNorm(self.backbone.num_features)  # puts both streams on one scale
        self.pose = nn.Sequential(
            nn.Linear(2 * NUM_POSE_FEATURES, cfg.pose_hidden), nn.GELU(), nn.Dropout(cfg.dropout), nn.LayerNorm(cfg.pose_hidden)
        )
        self.project = nn.Conv1d(self.backbone.num_features + cfg.pose_hidden, cfg.hidden, 1)
        self.temporal = nn.Sequential(*[DilatedResidualBlock(cfg.hidden, d, cfg.dropout) for d in cfg.dilations])
        self.action_head = nn.Conv1d(cfg.hidden, cfg.num_classes, 1)
        self.keypoint_head = (
            nn.Sequential(nn.Conv1d(cfg.hidden, cfg.hidden // 2, 1), nn.GELU(), nn.Conv1d(cfg.hidden // 2, 2 * NUM_KEYPOINTS, 1))
            if cfg.keypoint_head
            else None
        )

    def frame_features(self, frames: torch.Tensor) -> torch.Tensor:
        """``[B, T, H, W]`` in [0, 1] -> ``[B, D, T]``, the backbone applied to every frame."""
        b, t, h, w = frames.shape
        x = (frames.reshape(b * t, 1, h, w) - self.pixel_mean) / self.pixel_std
        return self.visual_norm(self.backbone(x).reshape(b, t, -1)).transpose(1, 2)

    def forward(self, frames: torch.Tensor, pose: torch.Tensor) -> dict[str, torch.Tensor]:
        visual = self.frame_features(frames)
        if self.training and self.cfg.visual_dropout > 0:  # modality dropout: the pose alone must also work
            keep = torch.rand(visual.shape[0], 1, 1, device=visual.device) >= self.cfg.visual_dropout
            visual = visual * keep
        pose = torch.cat([pose, pose_velocity(pose)], dim=-1)
        x = torch.cat([visual, self.pose(pose).transpose(1, 2)], dim=1)
        x = self.temporal(self.project(x))
        out = {"logits": self.action_head(x).transpose(1, 2)}
        if self.keypoint_head is not None:
            b, _, t = x.shape
            out["keypoints"] = torch.sigmoid(self.keypoint_head(x)).transpose(1, 2).reshape(b, t, NUM_KEYPOINTS, 2)
        return out

    def param_groups(self, lr: float, weight_decay: float, backbone_lr_mult: float) -> list[dict]:
        """The backbone trains at ``lr * backbone_lr_mult`` (all of it: nothing is left frozen by a
        name that does not match, defect 16); norms and biases get no weight decay."""
        groups = {}
        for name, param in self.named_parameters():
            if not param.requires_grad:
                continue
            is_backbone = name.startswith("backbone.")
            no_decay = param.ndim <= 1
            key = (is_backbone, no_decay)
            if key not in groups:
                groups[key] = {"params": [], "lr": lr * (backbone_lr_mult if is_backbone else 1.0), "weight_decay": 0.0 if no_decay else weight_decay}
            groups[key]["params"].append(param)
        return list(groups.values())
