"""Readers of the UNBC-McMaster Shoulder Pain Archive in its HDF5 layout.

Three files (names as the original loader expects; a date-stamped variant with the same
prefix is accepted):

- frames ``frames_unbc_*.hdf5``: ``image`` (N×H×W×C or N×H×W uint8) and ``index``;
- annotations ``annotations_unbc_*.hdf5``: ``index`` (the frame row each annotation
  describes), ``subject_name``, ``label_AU_{4,6,7,9,10,43}`` (NaN → 0; an array row
  takes its nanmax) and optional ``label_pspi`` (computed from the AUs when absent);
- folds ``UNBC_CVFolds_*.hdf5``: groups ``fold-k`` with ``train_subjects`` and
  ``validation_subjects`` (integer subject numbers).

Only the label table is read here; pixels are read later, row by row through the
annotation ``index``, by the Ray Data pipeline (``affectlab.data.pain``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from affectlab.constants.pain import AU_KEYS, AU_NAMES

UNBC_FILES = {
    "frames": "frames_unbc_2020-09-21-05-42-04.hdf5",
    "annotations": "annotations_unbc_2020-10-13-22-55-04.hdf5",
    "folds": "UNBC_CVFolds_2019-05-16-15-16-36.hdf5",
}
UNBC_SUBJECTS = (
    "042-ll042", "043-jh043", "047-jl047", "048-aa048", "049-bm049", "052-dr052", "059-fn059",
    "064-ak064", "066-mg066", "080-bn080", "092-ch092", "095-tv095", "096-bg096", "097-gf097",
    "101-mg101", "103-jk103", "106-nm106", "107-hs107", "108-th108", "109-ib109", "115-jy115",
    "120-kz120", "121-vw121", "123-jh123", "124-dn124",
)  # fmt: skip


class UNBCDataError(ValueError):
    """A UNBC file, key or value is not what the layout requires."""


@dataclass(frozen=True)
class UNBCPaths:
    frames: Path
    annotations: Path
    folds: Path | None

    @classmethod
    def from_dir(cls, data_dir: str | Path, require_folds: bool = True) -> "UNBCPaths":
        d = Path(data_dir)
        if not d.is_dir():
            raise UNBCDataError(f"UNBC data directory {d} does not exist")
        found = {role: _find(d, name, required=(role != "folds" or require_folds)) for role, name in UNBC_FILES.items()}
        return cls(**found)


def _find(d: Path, name: str, required: bool) -> Path | None:
    if (d / name).is_file():
        return d / name
    prefix = name.rsplit("_", 1)[0] if name.startswith("UNBC") else name.split("_unbc_")[0] + "_unbc_"
    matches = sorted(d.glob(prefix + "*.hdf5"))
    if len(matches) == 1:
        return matches[0]
    if len(matches) > 1:
        raise UNBCDataError(f"several files in {d} match {prefix}*.hdf5: {[m.name for m in matches]}; keep one")
    if required:
        raise UNBCDataError(f"missing UNBC file {d / name} (expected the HDF5 layout described in docs/data.md)")
    return None


@dataclass(frozen=True)
class Fold:
    index: int
    train_subjects: tuple[int, ...]
    test_subjects: tuple[int, ...]


def subject_number(name: str) -> int:
    """``'042-ll042'`` → 42."""
    try:
        return int(name.split("-")[0])
    except ValueError as e:
        raise UNBCDataError(f"subject name {name!r} is not of the form NNN-xxNNN") from e


def check_frames(path: Path) -> tuple[int, tuple[int, ...]]:
    """Validate the frames file; return (number of frames, shape of one frame)."""
    with h5py.File(path, "r") as f:
        if "image" not in f:
            raise UNBCDataError(f"{path}: missing key 'image' (frames as N×H×W×C or N×H×W uint8)")
        image = f["image"]
        if image.ndim not in (3, 4) or (image.ndim == 4 and image.shape[-1] not in (1, 3)):
            raise UNBCDataError(
                f"{path}: key 'image' has shape {image.shape}; each row must be an image, H×W×C with C in (1, 3) or H×W"
            )
        if not (np.issubdtype(image.dtype, np.integer) or np.issubdtype(image.dtype, np.floating)):
            raise UNBCDataError(f"{path}: key 'image' has dtype {image.dtype}; expected numeric pixels")
        return image.shape[0], image.shape[1:]


def read_annotations(path: Path, n_frames: int) -> tuple[pd.DataFrame, int]:
    """The label table: one row per usable annotation, and the number of rows dropped.

    Columns: ``frame`` (row in the frames file), ``order``, ``subject`` (name), ``subject_id``,
    the six AU columns (AU43 binarised) and ``pspi``.
    """
    with h5py.File(path, "r") as f:
        for key in ("index", "subject_name", *AU_KEYS):
            if key not in f:
                raise UNBCDataError(f"{path}: missing key {key!r}")
        index = np.asarray(f["index"][()]).reshape(-1)
        n = len(index)
        columns = {"subject_name": f["subject_name"][()]}
        columns.update({key: f[key][()] for key in AU_KEYS})
        if "label_pspi" in f:
            columns["label_pspi"] = f["label_pspi"][()]
    for key, values in columns.items():
        if len(values) != n:
            raise UNBCDataError(f"{path}: key {key!r} has {len(values)} rows but 'index' has {n}")
    if not np.issubdtype(index.dtype, np.integer):
        raise UNBCDataError(f"{path}: key 'index' must hold integer frame rows, got {index.dtype}")

    aus = np.stack([_label_column(columns[k]) for k in AU_KEYS], axis=1).astype(np.float32)
    aus[:, 5] = (aus[:, 5] > 0).astype(np.float32)  # AU43 (eyes closed) is binary
    if "label_pspi" in columns:
        pspi = _label_column(columns["label_pspi"]).astype(np.float32)
    else:
        pspi = aus[:, 0] + np.maximum(aus[:, 1], aus[:, 2]) + np.maximum(aus[:, 3], aus[:, 4]) + aus[:, 5]
    subjects = np.array([s.decode() if isinstance(s, bytes) else str(s) for s in columns["subject_name"]])

    keep = (index >= 0) & (index <= n_frames - 1)
    # `order` is the annotation row: recording order, used by label-free references
    table = pd.DataFrame({"frame": index.astype(np.int64), "order": np.arange(n), "subject": subjects})
    table["subject_id"] = [subject_number(s) for s in subjects]
    for i, name in enumerate(AU_NAMES):
        table[name] = aus[:, i]
    table["pspi"] = pspi
    return table[keep].reset_index(drop=True), int((~keep).sum())


def _label_column(values: np.ndarray) -> np.ndarray:
    """NaN → 0; a row that is itself an array contributes its nanmax."""
    v = np.asarray(values, dtype=np.float64)
    if v.ndim > 1:
        with np.errstate(all="ignore"):
            flat = v.reshape(len(v), -1)
            v = np.where(np.isnan(flat).all(axis=1), np.nan, np.nanmax(np.where(np.isnan(flat), -np.inf, flat), axis=1))
    return np.nan_to_num(v, nan=0.0)


def read_folds(path: Path, known_subjects: set[int]) -> list[Fold]:
    """The ``fold-k`` groups, validated against the subjects in the annotations."""
    folds = []
    with h5py.File(path, "r") as f:
        names = sorted((k for k in f.keys() if k.startswith("fold-")), key=lambda k: int(k.split("-")[1]))
        if not names:
            raise UNBCDataError(f"{path}: no 'fold-k' groups")
        for name in names:
            for key in ("train_subjects", "validation_subjects"):
                if key not in f[name]:
                    raise UNBCDataError(f"{path}: group {name!r} has no dataset {key!r}")
            train = tuple(int(s) for s in f[name]["train_subjects"][()])
            test = tuple(int(s) for s in f[name]["validation_subjects"][()])
            unknown = sorted(set(train + test) - known_subjects)
            if unknown:
                raise UNBCDataError(f"{path}: {name} names subjects {unknown} that have no annotations")
            if set(train) & set(test):
                raise UNBCDataError(f"{path}: {name} has subjects on both sides: {sorted(set(train) & set(test))}")
            folds.append(Fold(int(name.split("-")[1]), train, test))
    return folds


def loso_folds(subject_ids: list[int]) -> list[Fold]:
    """Leave-one-subject-out: fold k holds out the k-th subject in sorted order."""
    ids = sorted(set(subject_ids))
    return [Fold(k, tuple(s for s in ids if s != held), (held,)) for k, held in enumerate(ids)]


def inner_split(train_subjects: tuple[int, ...], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Carve a subject-disjoint inner-validation set from a fold's training subjects."""
    subjects = sorted(train_subjects)
    if len(subjects) < 2:
        raise UNBCDataError("a fold needs at least 2 training subjects to carve an inner validation set")
    n_val = min(len(subjects) - 1, max(1, round(fraction * len(subjects))))
    split = GroupShuffleSplit(n_splits=1, test_size=n_val, random_state=seed)
    train, val = next(split.split(subjects, groups=subjects))
    return sorted(subjects[i] for i in train), sorted(subjects[i] for i in val)


@dataclass(frozen=True)
class UNBC:
    """An opened, validated UNBC dataset: paths, the label table and the folds."""

    paths: UNBCPaths
    table: pd.DataFrame
    folds: list[Fold]
    dropped_rows: int
    frame_shape: tuple[int, ...]

    @classmethod
    def open(cls, data_dir: str | Path, protocol: str = "5fold") -> "UNBC":
        """Validate every file and key up front, before any work starts."""
        if protocol not in ("5fold", "loso", "all"):
            raise UNBCDataError(f"protocol must be '5fold', 'loso' or 'all', got {protocol!r}")
        paths = UNBCPaths.from_dir(data_dir, require_folds=(protocol == "5fold"))
        n_frames, frame_shape = check_frames(paths.frames)
        table, dropped = read_annotations(paths.annotations, n_frames)
        if table.empty:
            raise UNBCDataError(f"{paths.annotations}: no annotation row points at a frame in {paths.frames}")
        subjects = set(table["subject_id"])
        if protocol == "5fold":
            folds = read_folds(paths.folds, subjects)
        elif protocol == "loso":
            folds = loso_folds(list(subjects))
        else:
            folds = []
        return cls(paths, table, folds, dropped, frame_shape)

    def fold_tables(self, fold: int, inner_val_fraction: float, seed: int) -> dict[str, pd.DataFrame]:
        """``train`` / ``val`` (inner, from training subjects) / ``test`` tables of one fold."""
        if not 0 <= fold < len(self.folds):
            raise UNBCDataError(f"fold {fold} does not exist; this dataset has {len(self.folds)} folds")
        f = self.folds[fold]
        train, val = inner_split(f.train_subjects, inner_val_fraction, seed + f.index)
        by = self.table["subject_id"]
        return {
            "train": self.table[by.isin(train)].reset_index(drop=True),
            "val": self.table[by.isin(val)].reset_index(drop=True),
            "test": self.table[by.isin(f.test_subjects)].reset_index(drop=True),
        }

    def all_subjects_tables(self, inner_val_fraction: float, seed: int) -> dict[str, pd.DataFrame]:
        """Production training on every subject, still with a held-back inner validation set."""
        train, val = inner_split(tuple(sorted(set(self.table["subject_id"]))), inner_val_fraction, seed)
        by = self.table["subject_id"]
        return {"train": self.table[by.isin(train)].reset_index(drop=True), "val": self.table[by.isin(val)].reset_index(drop=True)}
