"""Losses of the mouse workload (reference/mouse.md §6.3), on tensors only.

- ``focal_loss``: class-weighted focal loss on label-smoothed one-hot targets; the per-frame
  weights carry the class weights and zero out skipped windows.
- ``temporal_smoothness``: L1 on consecutive per-frame logit differences.
- ``keypoint_loss``: SmoothL1 on the clean, visible keypoints (normalised coordinates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor, gamma: float, smoothing: float) -> torch.Tensor:
    """Weighted focal loss on label-smoothed targets: ``-sum_c y_c (1 - p_c)^gamma log p_c``.

    ``logits`` ``[B, T, C]``, ``labels`` ``[B, T]``; ``weights`` ``[B, T]`` are per-frame
    (class weight of the frame's label, 0 for skipped windows); the loss is their weighted mean.
    """
    log_p = F.log_softmax(logits, dim=-1)
    n_classes = logits.shape[-1]
    target = F.one_hot(labels, n_classes).float() * (1 - smoothing) + smoothing / n_classes
    per_frame = -(target * (1 - log_p.exp()).pow(gamma) * log_p).sum(-1)
    return (per_frame * weights).sum() / weights.sum().clamp_min(1e-6)


def temporal_smoothness(logits: torch.Tensor) -> torch.Tensor:
    """Mean ``|logits[t+1] - logits[t]|`` over frames ``[B, T, C]`` (0 for one-frame windows)."""
    if logits.shape[1] < 2:
        return logits.new_zeros(())
    return (logits[:, 1:] - logits[:, :-1]).abs().mean()


def keypoint_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """SmoothL1 over visible keypoints (``pred``/``target`` ``[B, T, K, 2]``, ``mask`` ``[B, T, K]``)."""
    error = F.smooth_l1_loss(pred, target, reduction="none", beta=beta).sum(-1)
    return (error * mask).sum() / mask.sum().clamp_min(1.0)
