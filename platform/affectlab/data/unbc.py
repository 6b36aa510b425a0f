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

import re
from collections.abc import Iterator
from contextlib import contextmanager
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


@contextmanager
def _open_h5(path: Path) -> Iterator[h5py.File]:
    """``path`` opened read-only. HDF5's own errors, on opening or while reading a truncated or
    corrupt file, become an ``UNBCDataError`` naming it; the checks inside raise their own."""
    try:
        handle = h5py.File(path, "r")
    except OSError as error:
        raise UNBCDataError(f"{path}: not a readable HDF5 file (truncated, corrupt or not HDF5: {error})") from None
    try:
        with handle:
            yield handle
    except UNBCDataError:
        raise
    except (OSError, KeyError, RuntimeError, ValueError, TypeError) as error:  # h5py's ways of saying corrupt
        raise UNBCDataError(f"{path}: corrupt HDF5 file ({type(error).__name__}: {error})") from None


def _dataset(f: h5py.File, key: str, path: Path, kinds: str, expected: str) -> h5py.Dataset:
    """The dataset ``key``, checked from its metadata (no values read): an array, not a
    scalar or a group, of one of the numpy ``kinds``."""
    node = f.get(key)
    if node is None:
        raise UNBCDataError(f"{path}: missing key {key!r} ({expected})")
    if not isinstance(node, h5py.Dataset) or node.ndim == 0 or node.dtype.kind not in kinds:
        what = "a group" if isinstance(node, h5py.Group) else f"{node.dtype} of shape {node.shape}"
        raise UNBCDataError(f"{path}: key {key!r} is {what}; expected {expected}")
    return node


def check_frames(path: Path) -> tuple[int, tuple[int, ...]]:
    """Validate the frames file; return (number of frames, shape of one frame)."""
    with _open_h5(path) as f:
        image = _dataset(f, "image", path, "iuf", "frames as N×H×W×C or N×H×W numeric pixels")
        if image.ndim not in (3, 4) or (image.ndim == 4 and image.shape[-1] not in (1, 3)):
            raise UNBCDataError(
                f"{path}: key 'image' has shape {image.shape}; each row must be an image, H×W×C with C in (1, 3) or H×W"
            )
        return image.shape[0], image.shape[1:]


def read_annotations(path: Path, n_frames: int) -> tuple[pd.DataFrame, int]:
    """The label table: one row per usable annotation, and the number of rows dropped.

    Columns: ``frame`` (row in the frames file), ``order``, ``subject`` (name), ``subject_id``,
    the six AU columns (AU43 binarised) and ``pspi``.
    """
    with _open_h5(path) as f:
        index = _dataset(f, "index", path, "iu", "integer frame rows, one per annotation")
        n = index.shape[0]
        if index.size != n:
            raise UNBCDataError(f"{path}: key 'index' has shape {index.shape}; expected one frame row per annotation")
        keys = {"subject_name": ("SUO", "subject names such as '042-ll042'")}
        keys.update({key: ("biuf", "numeric AU intensities") for key in AU_KEYS})
        if "label_pspi" in f:
            keys["label_pspi"] = ("biuf", "numeric PSPI scores")
        nodes = {key: _dataset(f, key, path, kinds, expected) for key, (kinds, expected) in keys.items()}
        for key, node in nodes.items():  # checked before any column is read
            if node.shape[0] != n:
                raise UNBCDataError(f"{path}: key {key!r} has {node.shape[0]} rows but 'index' has {n}")
        index = np.asarray(index[()]).reshape(-1)
        columns = {key: node[()] for key, node in nodes.items()}

    aus = np.stack([_label_column(columns[k]) for k in AU_KEYS], axis=1).astype(np.float32)
    aus[:, 5] = (aus[:, 5] > 0).astype(np.float32)  # AU43 (eyes closed) is binary
    if "label_pspi" in columns:
        pspi = _label_column(columns["label_pspi"]).astype(np.float32)
    else:
        pspi = aus[:, 0] + np.maximum(aus[:, 1], aus[:, 2]) + np.maximum(aus[:, 3], aus[:, 4]) + aus[:, 5]
    subjects = np.array([_subject_text(s, path) for s in columns["subject_name"]])

    keep = (index >= 0) & (index <= n_frames - 1)
    # `order` is the annotation row: recording order, used by label-free references
    table = pd.DataFrame({"frame": index.astype(np.int64), "order": np.arange(n), "subject": subjects})
    table["subject_id"] = [subject_number(s) for s in subjects]
    for i, name in enumerate(AU_NAMES):
        table[name] = aus[:, i]
    table["pspi"] = pspi
    return table[keep].reset_index(drop=True), int((~keep).sum())


def _subject_text(value, path: Path) -> str:
    if isinstance(value, np.ndarray):  # a row of a 2-D name array
        raise UNBCDataError(f"{path}: key 'subject_name' must hold one name per annotation, got rows of {value.shape}")
    if isinstance(value, bytes):
        try:
            return value.decode()
        except UnicodeDecodeError:
            raise UNBCDataError(f"{path}: key 'subject_name' holds {value[:20]!r}, which is not UTF-8 text") from None
    return str(value)


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
    with _open_h5(path) as f:
        numbered = {}
        for key in f.keys():
            if key.startswith("fold-"):
                if not re.fullmatch(r"fold-\d{1,6}", key) or not isinstance(f[key], h5py.Group):
                    raise UNBCDataError(f"{path}: {key!r} is not a fold group named fold-<k> (k = 0, 1, ...)")
                numbered[int(key.split("-")[1])] = key
        if not numbered:
            raise UNBCDataError(f"{path}: no 'fold-k' groups")
        for k, name in sorted(numbered.items()):
            sides = [
                _dataset(f[name], key, path, "iu", f"a 1-D array of integer subject numbers in group {name!r}")
                for key in ("train_subjects", "validation_subjects")
            ]
            if any(side.ndim != 1 for side in sides):
                raise UNBCDataError(f"{path}: group {name!r}: subject lists must be 1-D, got shapes {[s.shape for s in sides]}")
            train, test = (tuple(int(s) for s in side[()]) for side in sides)
            unknown = sorted(set(train + test) - known_subjects)
            if unknown:
                raise UNBCDataError(f"{path}: {name} names subjects {unknown} that have no annotations")
            if set(train) & set(test):
                raise UNBCDataError(f"{path}: {name} has subjects on both sides: {sorted(set(train) & set(test))}")
            folds.append(Fold(k, train, test))
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
