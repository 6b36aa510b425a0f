"""Building and running the infant models from a checkpoint's config alone.

Shared by the workload's loops, its evaluation and serving, which imports this module and
never a workload. Pure torch on nn.Modules: no I/O, no Ray.

A checkpoint's ``config.json`` holds ``{"workload": "infant", "config": {...}}``; from the
inner ``config`` dict ``build_recognizer`` / ``build_generator`` rebuild the models
(``class_names``, ``stgcn_preset``, ``cvae_preset``, ``pose_rep``, ``num_frames``...), and
``CHECKPOINT_FILES[config["stage"]]`` says which weights file holds which model.

Inputs follow ACTOR's layout: ``x`` (B, J, F, T); poses from users are (B, T, 24, 3)
SMPL axis-angle with the root as joint 0. The 6D rows a decoder emits are not exactly
orthonormal; ``normalize_rot6d`` maps them to the rotations they stand for (the
Gram-Schmidt of §2), which is what the axis-angle poses the loop stores encode too.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from affectlab.body.rotations import axis_angle_to_matrix, matrix_to_axis_angle, matrix_to_rot6d, rot6d_to_matrix
from affectlab.constants.infant import NUM_H36M_JOINTS, NUM_SMPL_JOINTS
from affectlab.models.infant_cvae import InfantCVAE, cvae_config, rot6d_to_joints
from affectlab.models.stgcn import STGCN, stgcn_config

POSE_CHANNELS = {"rotvec": 3, "rotmat": 9, "rot6d": 6, "xyz": 3}
# Which file of a stage's checkpoint holds which model ("stgcn" recogniser, "cvae" generator).
CHECKPOINT_FILES = {
    "recognizer": {"model.safetensors": "stgcn"},
    "cvae": {"model.safetensors": "cvae"},
    "refine": {"model.safetensors": "cvae", "recognizer.safetensors": "stgcn"},
    "final": {"model.safetensors": "stgcn"},
    "eval": {"model.safetensors": "stgcn"},  # the real-data recogniser the generation metrics use
}

__all__ = [
    "POSE_CHANNELS",
    "CHECKPOINT_FILES",
    "weights_file",
    "build_recognizer",
    "build_generator",
    "normalize_rot6d",
    "poses_to_input",
    "recognize",
    "classify",
    "generate_sequences",
    "sequence_joints",
    "balanced_labels",
]


def weights_file(stage: str, kind: str) -> str:
    """The file of a ``stage`` checkpoint that holds a model of ``kind`` ("stgcn" or "cvae")."""
    files = CHECKPOINT_FILES.get(stage)
    if files is None:
        raise ValueError(f"unknown infant stage {stage!r}; expected one of {sorted(CHECKPOINT_FILES)}")
    for name, held in files.items():
        if held == kind:
            return name
    raise ValueError(f"a {stage!r} checkpoint holds no {kind} model (it holds {sorted(set(files.values()))})")


def build_recognizer(config: dict) -> STGCN:
    """The ST-GCN a config describes (random weights): ``stgcn_preset``, ``class_names``,
    ``pose_rep`` (xyz: the H36M-17 graph on keypoints; otherwise SMPL-24) and ``stgcn_dropout``."""
    pose_rep = config["pose_rep"]
    if pose_rep not in POSE_CHANNELS:
        raise ValueError(f"pose_rep must be one of {sorted(POSE_CHANNELS)}, got {pose_rep!r}")
    return STGCN(stgcn_config(
        config["stgcn_preset"], in_channels=POSE_CHANNELS[pose_rep], num_classes=len(config["class_names"]),
        layout="infact" if pose_rep == "xyz" else "smpl", dropout=float(config.get("stgcn_dropout", 0.0)),
    ))  # fmt: skip


def build_generator(config: dict) -> InfantCVAE:
    """The CVAE a config describes (random weights): ``cvae_preset`` on 24 x 6 rot6d poses
    with the root (the paper setting, the only one the joint losses support)."""
    return InfantCVAE(cvae_config(
        config["cvae_preset"], num_joints=NUM_SMPL_JOINTS, num_feats=6, num_classes=len(config["class_names"]),
    ))  # fmt: skip


def normalize_rot6d(x: torch.Tensor) -> torch.Tensor:
    """(B, J, 6, T) -> the same poses as exact rotations (rows orthonormal)."""
    matrices = rot6d_to_matrix(x.permute(0, 3, 1, 2))
    return matrix_to_rot6d(matrices).permute(0, 2, 3, 1).contiguous()


def poses_to_input(poses, pose_rep: str = "rot6d") -> torch.Tensor:
    """Poses (B, T, V, 3) -> recogniser input (B, V, F, T).

    Axis-angle (B, T, 24, 3) for ``rot6d`` / ``rotmat`` / ``rotvec`` models; H36M-17
    keypoints (B, T, 17, 3) for ``xyz`` models.
    """
    poses = torch.as_tensor(poses, dtype=torch.float32)
    joints = NUM_H36M_JOINTS if pose_rep == "xyz" else NUM_SMPL_JOINTS
    if poses.ndim != 4 or poses.shape[2:] != (joints, 3) or poses.shape[1] < 1:
        raise ValueError(f"poses must be (B, T, {joints}, 3) with T >= 1 for a {pose_rep} model, got {tuple(poses.shape)}")
    if not torch.isfinite(poses).all():
        raise ValueError("poses contain NaN or infinite values")
    if pose_rep in ("xyz", "rotvec"):
        features = poses
    elif pose_rep in ("rot6d", "rotmat"):
        matrices = axis_angle_to_matrix(poses)
        features = matrix_to_rot6d(matrices) if pose_rep == "rot6d" else matrices.flatten(-2)
    else:
        raise ValueError(f"pose_rep must be one of {sorted(POSE_CHANNELS)}, got {pose_rep!r}")
    return features.permute(0, 2, 3, 1).contiguous()


@torch.no_grad()
def recognize(model: STGCN, x: torch.Tensor, batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits (N, C), features (N, D)) of inputs (N, V, F, T), in ``eval()`` mode and
    batches of ``batch_size``; the model's previous mode is restored. Empty input gives
    empty outputs."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        logits, features = [], []
        for start in range(0, len(x), batch_size):
            out = model(x[start : start + batch_size].to(device, torch.float32))
            logits.append(out[0].float().cpu())
            features.append(out[1].float().cpu())
    finally:
        model.train(was_training)
    if not logits:
        return torch.zeros(0, model.cfg.num_classes), torch.zeros(0, model.feature_dim)
    return torch.cat(logits), torch.cat(features)


def classify(model: STGCN, poses, pose_rep: str = "rot6d") -> torch.Tensor:
    """Class probabilities (B, C) of pose sequences (B, T, 24, 3) axis-angle (or (B, T, 17, 3)
    keypoints for an ``xyz`` model); see ``poses_to_input``."""
    logits, _ = recognize(model, poses_to_input(poses, pose_rep))
    return torch.softmax(logits, dim=1)


def generate_sequences(
    cvae: InfantCVAE,
    classes,
    n: int,
    frames: int,
    seed: int,
    smpl_layer=None,
    fact: float = 1.0,
) -> dict[str, torch.Tensor]:
    """``n`` sequences of ``frames`` frames for each class index in ``classes`` (class-major
    order), sampled from ``torch.Generator().manual_seed(seed)`` in ``eval()`` and
    ``no_grad()``: the same arguments give the same sequences.

    Returns ``y`` (N,), ``rot6d`` (N, 24, 6, T) exact rotations, ``pose`` (N, T, 24, 3)
    axis-angle with the root and, with an ``smplx.SMPLLayer``, ``joints`` (N, T, 24, 3)
    root-relative per frame (§3.4), all on the CPU.
    """
    classes = torch.as_tensor(classes, dtype=torch.long).reshape(-1)
    num_classes = cvae.cfg.num_classes
    if len(classes) == 0 or (classes < 0).any() or (classes >= num_classes).any():
        raise ValueError(f"classes must be non-empty class indices in [0, {num_classes}), got {classes.tolist()}")
    if n < 1 or frames < 1:
        raise ValueError(f"n and frames must be >= 1, got {n} and {frames}")
    labels = classes.repeat_interleave(n)
    out = cvae.generate(labels, frames, torch.Generator().manual_seed(int(seed)), fact=fact)
    rot6d = normalize_rot6d(out["output"].float().cpu())
    pose = matrix_to_axis_angle(rot6d_to_matrix(rot6d.permute(0, 3, 1, 2)))  # (N, T, 24, 3)
    result = {"y": labels, "rot6d": rot6d, "pose": pose}
    if smpl_layer is not None:
        result["joints"] = sequence_joints(rot6d, smpl_layer)
    return result


def sequence_joints(rot6d: torch.Tensor, smpl_layer) -> torch.Tensor:
    """(N, 24, 6, T) rot6d poses -> (N, T, 24, 3) root-relative SMPL joints, in float32."""
    from affectlab.body.models import smpl_joints  # smplx only where joints are asked for

    layer_device = smpl_layer.shapedirs.device
    mask = torch.ones(rot6d.shape[0], rot6d.shape[-1], dtype=torch.bool, device=layer_device)
    with torch.no_grad():
        joints = rot6d_to_joints(rot6d.to(layer_device, torch.float32), mask, functools.partial(smpl_joints, smpl_layer))
    return joints.permute(0, 3, 1, 2).float().cpu()


def balanced_labels(n: int, num_classes: int, batch_size: int) -> np.ndarray:
    """Labels for ``n`` generated samples, class-balanced within each batch of
    ``batch_size`` (§6.2): ``len // num_classes`` of every class, the remainder to classes
    0, 1, ... in order."""
    if n < 0 or num_classes < 1 or batch_size < 1:
        raise ValueError(f"need n >= 0, num_classes >= 1 and batch_size >= 1, got {n}, {num_classes}, {batch_size}")
    labels = []
    for start in range(0, n, batch_size):
        size = min(batch_size, n - start)
        labels += [c for c in range(num_classes) for _ in range(size // num_classes)] + list(range(size % num_classes))
    return np.asarray(labels, dtype=np.int64)
