"""Small synthetic pain datasets written in the native layouts.

``write_synthetic_unbc`` writes the three UNBC-McMaster HDF5 files with the real file
names and keys (frames stored out of annotation order, NaN labels, annotation rows that
point past the last frame, ``fold-k`` groups), and ``write_synthetic_pain3d`` writes
the 3D-Pain folders (views as JPEG, ``*_annotations.json``, identity-disjoint split CSV).
Both draw faces whose brows, eyes, nose and mouth follow the AU values, so the readers,
the training loop and the metrics can be checked on a signal that is really there.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import h5py
import numpy as np
from tqdm import tqdm

from affectlab.data.synthetic_faces import FaceIdentity, draw_face, pain_episode, pspi_from_aus
from affectlab.constants.pain import AU_KEYS, AU_NAMES
from affectlab.data.unbc import UNBC_FILES, UNBC_SUBJECTS


def write_synthetic_unbc(
    out_dir: str | Path,
    n_subjects: int = 25,
    sequences_per_subject: int = 3,
    frames_per_sequence: int = 20,
    size: int = 64,
    n_folds: int = 5,
    seed: int = 0,
) -> Path:
    """Write a UNBC-layout dataset under ``out_dir`` and return ``out_dir``."""
    if not 2 <= n_subjects <= len(UNBC_SUBJECTS):
        raise ValueError(f"n_subjects must be between 2 and {len(UNBC_SUBJECTS)}, got {n_subjects}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    subjects = list(UNBC_SUBJECTS[:n_subjects])

    images, aus, names = [], [], []
    for name in tqdm(subjects, desc="synthetic UNBC subjects", unit="subject", leave=False):
        identity = FaceIdentity.random(rng)
        for s in range(sequences_per_subject):
            peak = 0.5 if s == 0 else rng.uniform(2.0, 5.5)  # one near-painless sequence each
            for frame_aus in pain_episode(frames_per_sequence, rng, peak):
                images.append(draw_face(frame_aus, identity, size, rng))
                aus.append(frame_aus)
                names.append(name)
    images = np.stack(images)
    aus = np.stack(aus)
    n = len(images)

    # Frames are stored in a shuffled order: readers must go through `index`.
    storage = rng.permutation(n)
    stored = np.empty_like(images)
    stored[storage] = images
    with h5py.File(out / UNBC_FILES["frames"], "w") as f:
        f.create_dataset("image", data=stored, chunks=(1,) + stored.shape[1:])
        f.create_dataset("index", data=np.arange(n, dtype=np.int64))

    labels = {key: aus[:, i].astype(np.float64) for i, key in enumerate(AU_KEYS)}
    for key in labels:  # unlabelled zeros appear as NaN in the real files
        zero = np.flatnonzero(labels[key] == 0)
        labels[key][rng.choice(zero, size=len(zero) // 20, replace=False)] = np.nan
    labels["label_AU_12"] = rng.integers(0, 3, n).astype(np.float64)  # present, unused
    pspi = pspi_from_aus(aus).astype(np.float64)

    # Two stale annotation rows that point past the last frame: the reader drops them.
    index = np.concatenate([storage, [n, n + 1]])
    pad = lambda a: np.concatenate([a, a[:2]])  # noqa: E731
    with h5py.File(out / UNBC_FILES["annotations"], "w") as f:
        f.create_dataset("index", data=index.astype(np.int64))
        f.create_dataset("subject_name", data=np.array([s.encode() for s in pad(np.array(names))]))
        for key, values in labels.items():
            f.create_dataset(key, data=pad(values))
        f.create_dataset("label_pspi", data=pad(pspi))

    order = rng.permutation(subjects)
    groups = np.array_split(order, n_folds)
    with h5py.File(out / UNBC_FILES["folds"], "w") as f:
        for k, test in enumerate(groups):
            train = [s for s in subjects if s not in set(test)]
            g = f.create_group(f"fold-{k}")
            g.create_dataset("train_subjects", data=np.array(sorted(int(s[:3]) for s in train)))
            g.create_dataset("validation_subjects", data=np.array(sorted(int(s[:3]) for s in test)))
    return out


def write_synthetic_pain3d(
    out_dir: str | Path,
    n_identities: int = 40,
    n_pain: int = 10,
    n_views: int = 3,
    size: int = 64,
    seed: int = 0,
    write_split_csv: bool = True,
) -> Path:
    """Write a 3D-Pain-layout dataset (``meshes_inpainted/``, ``annotations/``, split CSV)."""
    out = Path(out_dir)
    (out / "meshes_inpainted").mkdir(parents=True, exist_ok=True)
    (out / "annotations").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)

    def write_views(base: str, aus: np.ndarray, identity: FaceIdentity) -> None:
        for v in range(n_views):
            img = draw_face(aus, identity, size, rng)
            angle = (v - (n_views - 1) / 2) * 6.0  # views differ by a small head turn
            m = cv2.getRotationMatrix2D((size / 2, size / 2), angle, 1.0)
            img = cv2.warpAffine(img, m, (size, size), borderMode=cv2.BORDER_REPLICATE)
            path = out / "meshes_inpainted" / f"{base}_textured_view_{v:03d}_inpainted.jpg"
            cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])

    rows = []
    split_of = _identity_split(n_identities, rng)
    for i in range(n_identities):
        identity = FaceIdentity.random(rng)
        ident = f"flame_sample_{i:04d}"
        write_views(f"{ident}_neutral", np.zeros(6, np.float32), identity)
        for p in range(1, n_pain + 1):
            base = f"{ident}_pain_{p}"
            aus = pain_episode(9, rng, rng.uniform(1.0, 5.5))[4]  # the episode's peak frame
            record = {name: int(a) for name, a in zip(("AU4", "AU6", "AU7", "AU9", "AU10", "AU43"), aus)}
            record["PSPI"] = int(pspi_from_aus(aus))
            (out / "annotations" / f"{base}_annotations.json").write_text(json.dumps(record, sort_keys=True))
            write_views(base, aus, identity)
            rows.append((base, split_of[i]))
    if write_split_csv:
        with open(out / "uniform_data_70_20_10_split.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["annotation_base_name", "split"])
            w.writerows(rows)
    return out


def _identity_split(n: int, rng: np.random.Generator) -> np.ndarray:
    """0/1/2 (train/val/test) per identity in 70/20/10 proportions, at least one each."""
    n_val, n_test = max(1, round(0.2 * n)), max(1, round(0.1 * n))
    split = np.zeros(n, np.int64)
    order = rng.permutation(n)
    split[order[:n_val]] = 1
    split[order[n_val : n_val + n_test]] = 2
    return split
