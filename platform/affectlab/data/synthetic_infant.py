"""Small synthetic InfAct datasets written in the real pkl layout (reference/infant.md §1.2).

``write_synthetic_infant`` writes the train and test pkls of InfActPrimitive or InfActPlus
where the original repository keeps them: a list of clip dicts with ``pose``
(1, T, 24, 3) float32 SMPL axis-angle, ``keypoint`` (1, T, 17, 3) H36M-17 joints
(root-centred, from a small infant-sized kinematic chain), ``frame_dir``, the label string
(``pos_label`` / ``action_label``) and, for the transitional set, ``subject_id``. Primitive
clip ids carry the subject as a ``Dxx_`` prefix, as the real ones do. Train and test hold
different subjects.

The planted signal, per class: a posture (root tilt and limb angles; the transitional
classes move from a start to an end posture, rolling turns about the body's long axis)
plus periodic limb motion at a class-specific frequency and amplitude, left and right in
anti-phase. Per subject: joint-angle offsets and a tempo and amplitude factor. Per clip:
a random heading, phase and length. Per frame: Gaussian noise. A recogniser trained on
some subjects can therefore be checked on others.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from scipy.spatial.transform import Rotation

from affectlab.constants.infant import CLASSES, INFACT_FILES, LABEL_KEYS, SMPL_PARENTS, SMPL_TO_H36M

FPS = 30.0
# Rest joint positions (metres, x left, y up, z forward) of an infant-sized SMPL-like body.
REST_JOINTS = 0.4 * np.array([
    [0, 0, 0], [0.06, -0.09, 0], [-0.06, -0.09, 0], [0, 0.11, 0], [0.10, -0.40, 0], [-0.10, -0.40, 0],
    [0, 0.24, 0], [0.09, -0.72, -0.04], [-0.09, -0.72, -0.04], [0, 0.30, 0.02], [0.12, -0.78, 0.08],
    [-0.12, -0.78, 0.08], [0, 0.51, 0], [0.08, 0.42, 0], [-0.08, 0.42, 0], [0, 0.60, 0.05],
    [0.17, 0.45, 0], [-0.17, 0.45, 0], [0.40, 0.44, -0.02], [-0.40, 0.44, -0.02], [0.60, 0.45, 0],
    [-0.60, 0.45, 0], [0.67, 0.44, 0], [-0.67, 0.44, 0],
], dtype=np.float64)  # fmt: skip

# Postures: root rotvec and x-axis flexion (rad) of hips, knees, shoulders, elbows.
POSTURES = {
    "supine": {"root": (-np.pi / 2, 0, 0), "hip": -0.6, "knee": 0.9, "shoulder": 0.3, "elbow": -0.5},
    "prone": {"root": (np.pi / 2, 0, 0), "hip": 0.1, "knee": 0.3, "shoulder": -0.8, "elbow": -1.0},
    "sitting": {"root": (0, 0, 0), "hip": -1.5, "knee": 0.4, "shoulder": 0.2, "elbow": -0.3},
    "standing": {"root": (0, 0, 0), "hip": 0.0, "knee": 0.05, "shoulder": 0.0, "elbow": -0.1},
    "all_fours": {"root": (np.pi / 2, 0, 0), "hip": -1.5, "knee": 1.5, "shoulder": -1.5, "elbow": 0.0},
}
# class -> (start posture, end posture, roll (rad about the long axis), motion Hz, motion amplitude rad)
CLASS_MOTION = {
    "primitive": {
        "Supine": ("supine", "supine", 0.0, 1.2, 0.5),  # kicking
        "Prone": ("prone", "prone", 0.0, 0.5, 0.2),
        "Sitting": ("sitting", "sitting", 0.0, 0.8, 0.35),  # arm waving
        "Standing": ("standing", "standing", 0.0, 0.3, 0.1),  # swaying
        "All-fours": ("all_fours", "all_fours", 0.0, 1.0, 0.3),
    },
    "plus": {
        "Crawling": ("all_fours", "all_fours", 0.0, 1.5, 0.5),
        "Sitting": ("all_fours", "sitting", 0.0, 0.6, 0.15),
        "Standing": ("sitting", "standing", 0.0, 0.4, 0.15),
        "Rolling": ("supine", "supine", np.pi, 0.8, 0.2),
    },
}
DEFAULT_FRAMES = {"primitive": (50, 80), "plus": (80, 110)}
LIMBS = {"hip": (1, 2), "knee": (4, 5), "shoulder": (16, 17), "elbow": (18, 19)}


def forward_kinematics(pose: np.ndarray, rest_joints: np.ndarray = REST_JOINTS) -> np.ndarray:
    """(T, 24, 3) axis-angle -> (T, 24, 3) joint positions of the SMPL tree, root at the origin."""
    t = len(pose)
    local = Rotation.from_rotvec(pose.reshape(-1, 3)).as_matrix().reshape(t, 24, 3, 3)
    world = np.zeros_like(local)
    joints = np.zeros((t, 24, 3))
    world[:, 0] = local[:, 0]
    for j in range(1, 24):
        p = SMPL_PARENTS[j]
        world[:, j] = world[:, p] @ local[:, j]
        joints[:, j] = joints[:, p] + world[:, p] @ (rest_joints[j] - rest_joints[p])
    return joints


def _posture(name: str, offsets: np.ndarray) -> np.ndarray:
    spec = POSTURES[name]
    pose = offsets.copy()
    pose[0] = spec["root"]
    for part, (left, right) in LIMBS.items():
        pose[left, 0] += spec[part]
        pose[right, 0] += spec[part]
    return pose


def synthetic_clip(dataset: str, label: str, n_frames: int, subject: dict, rng: np.random.Generator) -> np.ndarray:
    """One (T, 24, 3) axis-angle clip of class ``label``."""
    start, end, roll, hz, amplitude = CLASS_MOTION[dataset][label]
    s = np.linspace(0.0, 1.0, n_frames)[:, None, None]
    pose = (1 - s) * _posture(start, subject["offsets"]) + s * _posture(end, subject["offsets"])
    time = np.arange(n_frames) / FPS
    wave = amplitude * subject["amplitude"] * np.sin(2 * np.pi * hz * subject["tempo"] * time + rng.uniform(0, 2 * np.pi))
    for left, right in LIMBS.values():
        pose[:, left, 0] += wave
        pose[:, right, 0] -= wave
    pose[:, 1:] += rng.normal(0.0, 0.03, size=pose[:, 1:].shape)
    # root: heading about the vertical, then the posture's tilt, then a roll about the body's long axis
    heading = Rotation.from_rotvec([0.0, rng.uniform(-0.5, 0.5), 0.0])
    tilt = Rotation.from_rotvec(pose[:, 0])
    rolled = Rotation.from_rotvec(np.outer(roll * s[:, 0, 0], [0.0, 1.0, 0.0]))
    pose[:, 0] = (heading * tilt * rolled).as_rotvec()
    return pose.astype(np.float32)


def write_synthetic_infant(
    dst_dir: str | Path,
    dataset: str = "primitive",
    n_subjects: int = 8,
    n_test_subjects: int = 2,
    clips_per_class: int = 2,
    frames: tuple[int, int] | None = None,
    seed: int = 0,
) -> Path:
    """Write the train and test pkls of ``dataset`` under ``dst_dir`` (the original's file
    layout, ``affectlab.constants.infant.INFACT_FILES``) and return ``dst_dir``.

    ``clips_per_class`` clips of every class per subject, lengths drawn in ``frames``
    (inclusive; default 50-80 for primitive, 80-110 for plus, around the 60 / 90 frames the
    models take). The last ``n_test_subjects`` subjects go to the test file.
    """
    if dataset not in CLASSES:
        raise ValueError(f"dataset must be one of {sorted(CLASSES)}, got {dataset!r}")
    if not 1 <= n_test_subjects < n_subjects:
        raise ValueError(f"need 1 <= n_test_subjects < n_subjects, got {n_test_subjects} and {n_subjects}")
    lo, hi = frames or DEFAULT_FRAMES[dataset]
    if not 1 <= lo <= hi:
        raise ValueError(f"frames must be (min, max) with 1 <= min <= max, got {(lo, hi)}")
    rng = np.random.default_rng(seed)
    out = Path(dst_dir)
    subjects = []
    for k in range(n_subjects):
        subjects.append(
            {
                "name": f"D{k + 1:02d}",
                "offsets": rng.normal(0.0, 0.08, size=(24, 3)),  # joint-angle habits
                "tempo": rng.uniform(0.85, 1.15),
                "amplitude": rng.uniform(0.8, 1.2),
            }
        )

    splits = {"train": subjects[: n_subjects - n_test_subjects], "test": subjects[n_subjects - n_test_subjects :]}
    for split, members in splits.items():
        clips = []
        for subject in members:
            for label in CLASSES[dataset]:
                for c in range(clips_per_class):
                    pose = synthetic_clip(dataset, label, int(rng.integers(lo, hi + 1)), subject, rng)
                    keypoint = np.ascontiguousarray(forward_kinematics(pose)[:, list(SMPL_TO_H36M)], dtype=np.float32)
                    clip = {
                        "frame_dir": f"{subject['name']}_{label.lower()}_{c:03d}",
                        "pose": pose[None],
                        "keypoint": keypoint[None],
                        LABEL_KEYS[dataset]: label,
                    }
                    if dataset == "plus":
                        clip["subject_id"] = subject["name"]
                    clips.append(clip)
        order = rng.permutation(len(clips))  # real files are not sorted by subject or class
        path = out / INFACT_FILES[dataset][split]
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            pickle.dump([clips[i] for i in order], f, protocol=pickle.HIGHEST_PROTOCOL)
    return out
