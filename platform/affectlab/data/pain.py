"""Ray Datasets of pain samples: a face, its neutral reference(s), PSPI and the six AUs.

The driver holds only the label table (small); pixels are read by Ray Data tasks, a
batch at a time, from the HDF5 frames file (through the annotation ``index``) or from
image files, and leave the pipeline as uint8 ``[B, 3, S, S]``. Normalisation and random
augmentation happen on the training device (``affectlab.data.augment``), seeded per epoch.

Neutral references (reference/pain.md §2.6, defect 5):

- ``training_references``: a seeded draw of PSPI = 0 frames of the same subject, never
  the target itself (the target is used only when the subject has no other PSPI = 0 frame).
- ``first_frame_references`` (evaluation default): the subject's first frames in recording
  order, excluding the target. It uses no labels, so test subjects' PSPI never leaks into
  the input; UNBC sequences start from a neutral face, which is what makes it sensible.
- ``oracle_references``: PSPI = 0 frames chosen with the labels — the original protocol,
  available only when asked for by name.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import h5py
import numpy as np
import pandas as pd
import ray

from affectlab.constants.pain import AU_NAMES
from affectlab.data.decoding import cache_decoded, decode_compute

if TYPE_CHECKING:  # Ray Data tasks read through this module: they need no torch
    import torch

log = logging.getLogger(__name__)
REFERENCE_POLICIES = ("first_frames", "oracle")


def training_references(table: pd.DataFrame, n_shots: int, seed: int, key: str = "frame") -> np.ndarray:
    """``[len(table), n_shots]`` reference ids: seeded PSPI = 0 draws of the same subject."""
    rng = np.random.default_rng(seed)
    refs = np.empty((len(table), n_shots), np.int64)
    for _, rows in table.groupby("subject_id", sort=True):
        pool = rows.loc[rows["pspi"] == 0, key].to_numpy()
        for pos, target in zip(rows.index, rows[key].to_numpy()):
            candidates = pool[pool != target]
            if len(candidates) == 0:
                candidates = np.array([target])
            refs[pos] = rng.choice(candidates, size=n_shots, replace=len(candidates) < n_shots)
    return refs


def first_frame_references(table: pd.DataFrame, n_shots: int, key: str = "frame", order: str = "order") -> np.ndarray:
    """``[len(table), n_shots]``: each subject's first frames in recording order, not the target."""
    refs = np.empty((len(table), n_shots), np.int64)
    for _, rows in table.groupby("subject_id", sort=True):
        ordered = rows.sort_values(order)[key].to_numpy()
        for pos, target in zip(rows.index, rows[key].to_numpy()):
            others = ordered[ordered != target]
            if len(others) == 0:
                others = np.array([target])
            refs[pos] = np.resize(others[:n_shots], n_shots)
    return refs


def oracle_references(table: pd.DataFrame, n_shots: int, seed: int, key: str = "frame") -> np.ndarray:
    """The original protocol: PSPI = 0 frames picked with the test labels. Seeded here."""
    return training_references(table, n_shots, seed, key)


def evaluation_references(table: pd.DataFrame, n_shots: int, policy: str, seed: int, key: str = "frame") -> np.ndarray:
    if policy == "first_frames":
        return first_frame_references(table, n_shots, key)
    if policy == "oracle":
        return oracle_references(table, n_shots, seed, key)
    raise ValueError(f"reference policy must be one of {REFERENCE_POLICIES}, got {policy!r}")


def sample_weights(table: pd.DataFrame, pain_weight: float = 2.0) -> np.ndarray:
    """Per-row draw weights with mean 1: PSPI ≥ 1 rows ``pain_weight`` times as likely as the
    others (the original's ``WeightedRandomSampler``). The training loop redraws every epoch
    from them (``affectlab.train.sampling``)."""
    weights = np.where(table["pspi"].to_numpy() >= 1, pain_weight, 1.0)
    return (weights / weights.mean()).astype(np.float32)


def _rows(table: pd.DataFrame, refs: np.ndarray, id_column: str, weights: np.ndarray | None) -> dict[str, np.ndarray]:
    rows = {
        "sample_id": table[id_column].to_numpy(np.int64),
        "ref_ids": refs.astype(np.int64),
        "subject_id": table["subject_id"].to_numpy(np.int64),
        "pspi": table["pspi"].to_numpy(np.float32),
        "aus": table[list(AU_NAMES)].to_numpy(np.float32),
    }
    if weights is not None:
        rows["sample_weight"] = np.asarray(weights, np.float32)
    return rows


def model_inputs(image: torch.Tensor, reference: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """What ViTPain takes, for training, evaluation and serving alike: uint8 images
    ``[B, 3, S, S]`` and references ``[B, N, 3, S, S]`` → floats in [0, 1]; a single
    reference shot as ``[B, 3, S, S]`` (several are averaged by the model)."""
    image = image.float() / 255
    if reference is None:
        return image, None
    reference = reference.float() / 255
    return image, reference[:, 0] if reference.shape[1] == 1 else reference


def to_chw(image: np.ndarray, size: int) -> np.ndarray:
    """Any H×W, H×W×1 or H×W×3 image → uint8 ``[3, size, size]``."""
    image = np.asarray(image)
    if image.dtype != np.uint8:  # floats in [0, 1] or [0, 255]
        scale = 255.0 if image.max() <= 1.0 else 1.0
        image = np.clip(image * scale, 0, 255).astype(np.uint8)
    if image.ndim == 3 and image.shape[-1] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image.shape[:2] != (size, size):
        interp = cv2.INTER_AREA if image.shape[0] > size else cv2.INTER_LINEAR
        image = cv2.resize(image, (size, size), interpolation=interp)
    return np.ascontiguousarray(image.transpose(2, 0, 1))


_OPEN_FILES: dict[str, h5py.File] = {}


def _frames(path: str) -> h5py.Dataset:
    """One open handle per file per worker process (the original reopened it per sample)."""
    if path not in _OPEN_FILES:
        _OPEN_FILES[path] = h5py.File(path, "r")
    return _OPEN_FILES[path]["image"]


def read_rows(dataset: h5py.Dataset, ids: np.ndarray) -> np.ndarray:
    """Rows ``ids`` (sorted, unique) of an h5py dataset, one slice per run of consecutive ids.

    h5py's fancy indexing (``dataset[ids]``) builds one selection out of every id, which for
    a batch of scattered frames is ~90× slower than reading them one by one (1.25 s against
    14 ms for 640 frames of 64×64×3, docs/performance.md)."""
    if len(ids) == 0:
        return dataset[0:0]
    runs = np.split(ids, np.flatnonzero(np.diff(ids) != 1) + 1)
    return np.concatenate([dataset[int(run[0]) : int(run[-1]) + 1] for run in runs])


def read_unbc_images(frames_path: str, ids: np.ndarray, size: int) -> dict[int, np.ndarray]:
    """Frames by row id, read in sorted order."""
    unique = np.unique(ids)
    pixels = read_rows(_frames(frames_path), unique)
    return {int(i): to_chw(p, size) for i, p in zip(unique, pixels)}


def load_unbc_batch(batch: dict, frames_path: str, size: int) -> dict:
    images = read_unbc_images(frames_path, np.concatenate([batch["sample_id"], batch["ref_ids"].ravel()]), size)
    return _with_pixels(batch, images)


def load_file_batch(batch: dict, paths: dict[int, str], size: int) -> dict:
    """Image-file variant (3D-Pain): ``paths`` maps sample ids to files."""
    ids = np.unique(np.concatenate([batch["sample_id"], batch["ref_ids"].ravel()]))
    images = {}
    for i in ids:
        pixels = cv2.imread(paths[int(i)], cv2.IMREAD_COLOR)
        if pixels is None:
            raise ValueError(f"{paths[int(i)]}: not a readable image")
        images[int(i)] = to_chw(cv2.cvtColor(pixels, cv2.COLOR_BGR2RGB), size)
    return _with_pixels(batch, images)


def _with_pixels(batch: dict, images: dict[int, np.ndarray]) -> dict:
    out = {k: v for k, v in batch.items() if k != "ref_ids"}
    out["image"] = np.stack([images[int(i)] for i in batch["sample_id"]])
    out["reference"] = np.stack([np.stack([images[int(i)] for i in row]) for row in batch["ref_ids"]])
    return out


def _label_dataset(rows: dict[str, np.ndarray], batch_size: int):
    """The label rows as a Ray Dataset in blocks of a few batches (not one tiny task per row)."""
    n_blocks = max(1, len(rows["sample_id"]) // (8 * batch_size))
    items = [dict(zip(rows, values)) for values in zip(*rows.values())]
    return ray.data.from_items(items, override_num_blocks=n_blocks)


def _decoded_bytes(refs: np.ndarray, size: int) -> int:
    """The decoded split's size: each row's face and references, uint8 ``[3,S,S]`` each."""
    return refs.shape[0] * (1 + refs.shape[1]) * 3 * size * size


def unbc_dataset(table: pd.DataFrame, refs: np.ndarray, frames_path: str | Path, size: int, batch_size: int = 32,
                 weights: np.ndarray | None = None, cache: bool | None = None):  # fmt: skip
    """A Ray Dataset of UNBC samples: ``image``, ``reference`` ``[N,3,S,S]``, labels (and
    ``sample_weight`` when ``weights`` are given), in the table's row order; decoded once
    and cached as ``affectlab.data.decoding.cache_decoded`` decides."""
    ds = _label_dataset(_rows(table.assign(sample_id=table["frame"]), refs, "sample_id", weights), batch_size)
    ds = ds.map_batches(
        load_unbc_batch, fn_kwargs={"frames_path": str(frames_path), "size": size}, batch_size=batch_size, num_cpus=0.25,
        compute=decode_compute(),
    )  # fmt: skip
    return cache_decoded(ds, _decoded_bytes(refs, size), cache)


def files_dataset(table: pd.DataFrame, refs: np.ndarray, paths: dict[int, str], size: int, batch_size: int = 32,
                  cache: bool | None = None):  # fmt: skip
    """A Ray Dataset of samples read from image files (3D-Pain)."""
    ds = _label_dataset(_rows(table, refs, "sample_id", None), batch_size)
    ds = ds.map_batches(load_file_batch, fn_kwargs={"paths": paths, "size": size}, batch_size=batch_size, num_cpus=0.25,
                        compute=decode_compute())  # fmt: skip
    return cache_decoded(ds, _decoded_bytes(refs, size), cache)
