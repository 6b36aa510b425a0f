"""Model inputs from a batch of mouse windows: the one preprocessing of training, evaluation
and serving.

``prepare`` turns the columns of ``affectlab.data.mouse_windows`` (uint8 frames, normalised
keypoints, ...) into model inputs: frames in [0, 1], the 18 pose features computed on the
device by ``pose_features_torch`` (the torch twin of ``affectlab.data.pose.pose_features``)
and the clean targets. With a generator it also augments, after which the pose features are
computed, so a temporal shift moves pose with the frames and keypoint jitter reaches the
features but never the keypoint-regression targets (defects 5 and 6 of the original).

Serving imports this module, never the workload: the served model sees exactly the inputs
the evaluation saw. Torch lives here, not in ``mouse_windows``: the Ray Data workers that only
decode never import it.
"""

from __future__ import annotations

from typing import Any

import torch

from affectlab.data.pose import ANGLES, BODY_LENGTH_FLOOR, EDGES, NUM_POSE_FEATURES


def prepare(batch: dict, cfg: Any, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """Model inputs and clean targets of a batch; augmented when a generator is given.

    ``cfg`` is a ``MouseConfig`` (its augmentation fields). Temporal roll moves frames,
    keypoints, visibility, labels and weights together; brightness/contrast and temporal
    dropout touch the inputs; keypoint jitter reaches the pose features only, and
    ``kp_target`` stays the clean keypoints.
    """
    frames = batch["frames"].float() / 255
    keypoints = batch["keypoints"].float()
    visible = batch["visible"].float()
    labels = batch["labels"].long()
    weights = batch["weights"].float() if "weights" in batch else torch.ones_like(labels, dtype=torch.float32)
    wh = batch["video_wh"].float()[:, None, None, :]
    dropped = None
    inputs_kp = keypoints
    if generator is not None and cfg.augment:
        dev = frames.device
        b, t = labels.shape
        shift = torch.randint(-cfg.roll_max, cfg.roll_max + 1, (b,), generator=generator, device=dev)
        shift = shift * (torch.rand(b, generator=generator, device=dev) < cfg.roll_prob)
        index = (torch.arange(t, device=dev)[None, :] - shift[:, None]) % t  # circular roll per sample
        rows = torch.arange(b, device=dev)[:, None]
        frames, keypoints, visible = frames[rows, index], keypoints[rows, index], visible[rows, index]
        labels, weights = labels[rows, index], weights[rows, index]

        gain = 1 + (torch.rand(b, 1, 1, 1, generator=generator, device=dev) * 2 - 1) * cfg.brightness
        contrast = 1 + (torch.rand(b, 1, 1, 1, generator=generator, device=dev) * 2 - 1) * cfg.contrast
        frames = frames * gain
        mean = frames.mean(dim=(1, 2, 3), keepdim=True)
        frames = ((frames - mean) * contrast + mean).clamp(0, 1)
        dropped = torch.rand(b, t, generator=generator, device=dev) < cfg.temporal_dropout
        frames = torch.where(dropped[..., None, None], mean.expand_as(frames), frames)
        noise = torch.randn(keypoints.shape, generator=generator, device=dev) * cfg.keypoint_jitter
        inputs_kp = keypoints + noise
    pose = pose_features_torch(inputs_kp * wh, batch["kp_missing"])  # rotation-invariant: before rotating
    if dropped is not None:
        pose = pose.masked_fill(dropped[..., None], 0.0)
    if generator is not None and cfg.augment and cfg.rotate90:
        turns = torch.randint(0, 4, (frames.shape[0],), generator=generator, device=frames.device)
        frames, keypoints = rotate_windows(frames, keypoints, turns)
    return {
        "frames": frames, "pose": pose, "labels": labels, "weights": weights,
        "kp_target": keypoints, "kp_mask": visible,
    }  # fmt: skip


def rotate_windows(frames: torch.Tensor, keypoints: torch.Tensor, turns: torch.Tensor):
    """Rotate window ``b`` by ``turns[b]`` x 90 degrees counter-clockwise: frames ``[B,T,H,W]``
    and normalised keypoints ``[B,T,K,2]`` (each turn maps (x, y) to (y, 1 - x))."""
    frames, keypoints = frames.clone(), keypoints.clone()
    for b, k in enumerate(turns.tolist()):
        frames[b] = torch.rot90(frames[b], k, dims=(-2, -1))
        for _ in range(k):
            keypoints[b] = torch.stack([keypoints[b, ..., 1], 1 - keypoints[b, ..., 0]], dim=-1)
    return frames, keypoints


def pose_features_torch(points: torch.Tensor, missing: torch.Tensor | None = None) -> torch.Tensor:
    """The 18 pose features of ``affectlab.data.pose`` on a batch: ``[B,T,6,2]`` px -> ``[B,T,18]``.

    ``points`` are already interpolated (``interpolate_low_likelihood``); ``missing``
    ``[B,6]`` flags keypoints never seen in the trial, whose features are 0. The body-length
    floor uses the median over the ``T`` frames given, as the numpy version does over its
    sequence.
    """
    points = points.float()
    b, t = points.shape[:2]
    missing = torch.zeros(b, 6, dtype=torch.bool, device=points.device) if missing is None else missing.bool()
    have = ~missing
    body = (points[:, :, 0] - points[:, :, 5]).norm(dim=-1)  # mouth - tail_base
    floor = (BODY_LENGTH_FLOOR * body.quantile(0.5, dim=1, keepdim=True)).clamp_min(1e-6)
    body = torch.maximum(body, floor)
    has_body = (have[:, 0] & have[:, 5]).float()[:, None]
    features = []
    for a, c in EDGES:
        valid = has_body * (have[:, a] & have[:, c]).float()[:, None]
        features.append((points[:, :, a] - points[:, :, c]).norm(dim=-1) / body * valid)
    for a, v, c in ANGLES:
        u, w = points[:, :, a] - points[:, :, v], points[:, :, c] - points[:, :, v]
        cross = u[..., 0] * w[..., 1] - u[..., 1] * w[..., 0]
        valid = (have[:, a] & have[:, v] & have[:, c]).float()[:, None]
        features.append(torch.atan2(cross.abs(), (u * w).sum(-1)) * valid)
    out = torch.stack(features, dim=-1)
    assert out.shape[-1] == NUM_POSE_FEATURES
    return out
