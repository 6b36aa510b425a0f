"""Reader of the 3D-Pain synthetic face set (SoroushMehraban/3D-Pain), extracted from its shards.

Layout under the data directory: ``meshes_inpainted/*.{png,jpg,jpeg}`` (3 views per
pain configuration and per neutral), ``annotations/*_annotations.json`` (keys AU4, AU6,
AU7, AU9, AU10, AU43, PSPI) and the split CSV ``uniform_data_70_20_10_split.csv``
(``annotation_base_name,split`` with 0/1/2 = train/val/test, identity-disjoint).
Neutral faces are only references when a split CSV is used (as in the original).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit

from affectlab.constants.pain import AU_NAMES

SPLIT_CSV = "uniform_data_70_20_10_split.csv"
_SUFFIXES = ("_textured_view_", "_view_", "_bg_", "_render_", "_deform_", "_inpainted", "_textured")
_SPLITS = {0: "train", 1: "val", 2: "test"}


class Pain3DDataError(ValueError):
    pass


def image_base_name(stem: str) -> str:
    """Cut the file stem at the first known suffix, checked in the original's order."""
    for suffix in _SUFFIXES:
        if suffix in stem:
            return stem.split(suffix)[0]
    return stem


def identity_of(base: str) -> str:
    return base.split("_neutral")[0] if "_neutral" in base else base.split("_pain_")[0]


def read_pain3d(data_dir: str | Path, split_csv: str | Path | None, seed: int) -> tuple[pd.DataFrame, dict[int, str]]:
    """(samples table, ``{sample_id: image path}`` including neutral views).

    Without a split file, identities are split 70/20/10 with ``seed`` (the run's config seed).

    The table has ``sample_id``, ``subject_id`` (identity number), ``identity``, ``split``,
    the six AUs, ``pspi``, ``neutral`` (bool) and ``order``.
    """
    root = Path(data_dir)
    images_dir, ann_dir = root / "meshes_inpainted", root / "annotations"
    for d in (images_dir, ann_dir):
        if not d.is_dir():
            raise Pain3DDataError(f"missing folder {d} (extract the images and annotations shards there)")
    split_path = Path(split_csv) if split_csv else root / SPLIT_CSV
    splits = _read_split_csv(split_path) if split_path.is_file() else None
    if split_csv and splits is None:
        raise Pain3DDataError(f"split file {split_path} does not exist")

    labels = {}
    for path in sorted(ann_dir.glob("*_annotations.json")):
        aus, pspi = _read_annotation(path)
        labels[path.name[: -len("_annotations.json")]] = (aus, pspi)
    if not labels:
        raise Pain3DDataError(f"no *_annotations.json files in {ann_dir}")

    rows, paths = [], {}
    images = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    identities = sorted({identity_of(image_base_name(p.stem)) for p in images})
    identity_ids = {name: i for i, name in enumerate(identities)}
    for sample_id, path in enumerate(images):
        base = image_base_name(path.stem)
        neutral = "_neutral" in base
        if not neutral and base not in labels:
            continue
        aus, pspi = ([0.0] * 6, 0.0) if neutral else labels[base]
        identity = identity_of(base)
        split = None
        if splits is not None and not neutral:
            if base not in splits:
                raise Pain3DDataError(f"{split_path}: no split for annotation {base!r}")
            split = splits[base]
        paths[sample_id] = str(path)
        rows.append({"sample_id": sample_id, "identity": identity, "subject_id": identity_ids[identity], "base": base,
                     "split": split, "neutral": neutral, "pspi": pspi, **dict(zip(AU_NAMES, aus))})  # fmt: skip
    table = pd.DataFrame(rows)
    table["order"] = np.arange(len(table))
    if splits is None:  # no CSV: a seeded identity-disjoint 70/20/10 split; neutrals also train
        table["split"] = _seeded_identity_split(table["identity"], seed)
    _check_identity_disjoint(table)
    return table, paths


def _read_annotation(path: Path) -> tuple[list[float], float]:
    """(six AUs with AU43 binarised, PSPI) of one ``*_annotations.json``; PSPI computed when absent."""
    expected = f"expected a JSON object with finite numbers under {list(AU_NAMES)} (and optionally PSPI)"
    try:
        record = json.loads(path.read_bytes())
        if not isinstance(record, dict):
            raise TypeError(f"the JSON is a {type(record).__name__}")
        aus = [float(record[name]) for name in AU_NAMES]
        pspi = float(record["PSPI"]) if "PSPI" in record else None
    except (KeyError, TypeError, ValueError) as e:  # ValueError: also JSONDecodeError, UnicodeDecodeError
        raise Pain3DDataError(f"{path}: {expected} ({type(e).__name__}: {e})") from None
    if not np.isfinite(aus + [0.0 if pspi is None else pspi]).all():
        raise Pain3DDataError(f"{path}: {expected} (got NaN or infinity)")
    aus[5] = float(aus[5] > 0)
    if pspi is None:
        pspi = aus[0] + max(aus[1], aus[2]) + max(aus[3], aus[4]) + aus[5]
    return aus, pspi


def _read_split_csv(path: Path) -> dict[str, str]:
    out = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:  # a spreadsheet re-save adds a BOM
            reader = csv.DictReader(f)
            if reader.fieldnames is None or not {"annotation_base_name", "split"} <= set(reader.fieldnames):
                raise Pain3DDataError(f"{path}: expected columns annotation_base_name,split")
            for line, row in enumerate(reader, start=2):
                if row["split"] not in ("0", "1", "2"):
                    raise Pain3DDataError(f"{path}:{line}: split must be 0, 1 or 2, got {row['split']!r}")
                out[row["annotation_base_name"]] = _SPLITS[int(row["split"])]
    except UnicodeDecodeError as e:
        raise Pain3DDataError(f"{path}: not UTF-8 text ({e}); expected the CSV annotation_base_name,split") from None
    except csv.Error as e:
        raise Pain3DDataError(f"{path}: not a readable CSV ({e})") from None
    return out


def _seeded_identity_split(identities: pd.Series, seed: int) -> list[str]:
    """Identity-disjoint 70/20/10 (train/val/test) with ``seed``: two grouped shuffles."""
    groups = identities.to_numpy()
    n = len(np.unique(groups))
    n_val, n_test = max(1, round(0.2 * n)), max(1, round(0.1 * n))
    split = np.full(len(groups), "train", dtype=object)
    rest, test = next(GroupShuffleSplit(n_splits=1, test_size=n_test, random_state=seed).split(groups, groups=groups))
    split[test] = "test"
    train, val = next(GroupShuffleSplit(n_splits=1, test_size=n_val, random_state=seed).split(rest, groups=groups[rest]))
    split[rest[val]] = "val"
    return split.tolist()


def _check_identity_disjoint(table: pd.DataFrame) -> None:
    labelled = table.dropna(subset=["split"])
    per_identity = labelled.groupby("identity")["split"].nunique()
    mixed = per_identity[per_identity > 1]
    if len(mixed):
        raise Pain3DDataError(f"identities in more than one split: {list(mixed.index[:5])}")


def neutral_references(samples: pd.DataFrame, table: pd.DataFrame, n_shots: int, seed: int | None) -> np.ndarray:
    """For each of ``samples``, neutral views of the same identity found in ``table``
    (a seeded draw; ``seed=None``: the first views, for deterministic evaluation)."""
    neutrals = table[table["neutral"]].groupby("identity")["sample_id"].apply(np.array).to_dict()
    table = samples
    rng = np.random.default_rng(seed)
    refs = np.empty((len(table), n_shots), np.int64)
    for pos, (identity, sample) in enumerate(zip(table["identity"], table["sample_id"])):
        pool = neutrals.get(identity, np.array([sample]))
        pool = pool[pool != sample] if len(pool) > 1 else pool
        refs[pos] = rng.choice(pool, n_shots, replace=len(pool) < n_shots) if seed is not None else np.resize(pool, n_shots)
    return refs
