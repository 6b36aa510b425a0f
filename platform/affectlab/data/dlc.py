"""DeepLabCut pose files (CSV and H5), read without ever unpickling them.

DeepLabCut writes its predictions as CSV and as pandas HDF5 (``DataFrame.to_hdf``). Opening
such an H5 with pandas or PyTables is unsafe when the file comes from elsewhere (an upload,
another lab's project): PyTables unpickles every node attribute that looks like a pickle
(pandas keeps its column labels and index metadata that way, in table and fixed format
alike), and pandas' fixed format stores object columns as pickled arrays. H5 files are
therefore read with h5py only, and their structure is checked before any value is read:

- **table format** (``format="table"``, DLC's ``df_with_missing``): the ``table`` dataset
  may hold only the integer ``index`` and numeric ``values_block_<k>`` fields; the column
  labels, which pandas stores only as pickled attributes (protocol-0 lists of string
  tuples), are parsed by the restricted unpickler (``affectlab.data.safe_pickle``), which
  refuses every callable without running it;
- **fixed format** (``format="fixed"``, e.g. multi-animal ``/tracks``): every
  ``block<i>_values`` must be a plain numeric array (a block of Python objects is a pickle:
  refused unread), column labels are plain string arrays plus integer codes, and the row
  index is an integer array.

Anything else (another pandas type, a MultiIndex or string row index, string columns, a file
that is not HDF5 or is truncated) is a ``MouseDataError`` naming the file and the reason.

File kinds: single-animal output (3 column levels ``scorer/bodyparts/coords``), ``_filtered``
output (same layout), multi-animal output (4 levels ``scorer/individuals/bodyparts/coords``;
one individual is chosen by name) and labelled training data (``CollectedData_*``: x/y
without likelihood, indexed by image path; recognised and refused). Rows must be frames
0, 1, 2, ... with none skipped, so that row ``r`` is video frame ``r``.

Bodyparts are looked up by name through a **bodypart map** ``ours=theirs``
(``parse_bodypart_map``) from affectlab's ``BODYPARTS`` to the project's own names; an
unmapped bodypart is looked for under its own name.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

from affectlab.constants.mouse import BODYPARTS
from affectlab.data.safe_pickle import UnsafePickleError, load_pickle

SINGLE_LEVELS = ("scorer", "bodyparts", "coords")
MULTI_LEVELS = ("scorer", "individuals", "bodyparts", "coords")
COORDS = ("x", "y", "likelihood")
H5_SUFFIXES = (".h5", ".hdf5")
# Files beside a video that share its "<stem>DLC<scorer>" prefix but are not pose tables.
_NOT_POSE = ("_meta", "_full", "_assemblies", "_skeleton", "_sk", "_tr", "_labeled")
_NUMERIC = "fiub"  # numpy kinds: float, signed, unsigned, bool
_VALUES_BLOCK = re.compile(r"values_block_\d+")
_MAPPING_HELP = "job: --bodyparts, config: MouseConfig.bodyparts, serving: the bodyparts argument"


class MouseDataError(ValueError):
    """A native mouse file (video, annotation, DeepLabCut pose) is missing, malformed or
    inconsistent with its video."""


@dataclass(frozen=True)
class PoseTable:
    """A DeepLabCut table as read from disk: column labels and numeric values, no pandas."""

    path: Path
    levels: tuple[str, ...]  # SINGLE_LEVELS or MULTI_LEVELS
    columns: tuple[tuple[str, ...], ...]  # one label tuple per column, in ``levels`` order
    values: np.ndarray  # float64 [T, C]
    index: np.ndarray  # float64 [T], the frame number of each row

    def level(self, name: str) -> list[str]:
        """The labels of level ``name`` in column order, each once."""
        i = self.levels.index(name)
        return list(dict.fromkeys(c[i] for c in self.columns))


# ---------------------------------------------------------------------------- bodypart map


def parse_bodypart_map(spec: str | Mapping[str, str] | None) -> dict[str, str]:
    """``{ours: theirs}`` from ``"mouth=Snout,L_frontpaw=FrontPawL"`` or a dict, validated.

    ``ours`` must be one of ``BODYPARTS``, each at most once, and no two of affectlab's
    bodyparts may end up read from the same name of the file (an unmapped bodypart is read
    under its own name). Raises ``ValueError`` naming the problem.
    """
    if not spec:
        return {}
    if isinstance(spec, str):
        pairs = []
        for item in spec.split(","):
            if not item.strip():
                continue
            ours, sep, theirs = item.partition("=")
            if not sep or not ours.strip() or not theirs.strip():
                raise ValueError(f"bodypart map item {item.strip()!r} is not ours=theirs (e.g. mouth=Snout)")
            pairs.append((ours.strip(), theirs.strip()))
    elif isinstance(spec, Mapping):
        pairs = list(spec.items())
        bad = [p for p in pairs if not (isinstance(p[0], str) and isinstance(p[1], str) and p[0] and p[1])]
        if bad:
            raise ValueError(f"bodypart map entries must be non-empty names, got {bad}")
    else:
        raise ValueError(f"a bodypart map is 'ours=theirs,...' or a dict, got {type(spec).__name__}")
    mapping: dict[str, str] = {}
    for ours, theirs in pairs:
        if ours in mapping:
            raise ValueError(f"bodypart {ours!r} is mapped twice in the bodypart map ({mapping[ours]!r} and {theirs!r})")
        mapping[ours] = theirs
    unknown = [o for o in mapping if o not in BODYPARTS]
    if unknown:
        raise ValueError(f"unknown bodypart(s) {unknown} in the bodypart map; affectlab's bodyparts are {list(BODYPARTS)}")
    read_as: dict[str, list[str]] = {}
    for ours in BODYPARTS:
        read_as.setdefault(mapping.get(ours, ours), []).append(ours)
    shared = {theirs: ours for theirs, ours in read_as.items() if len(ours) > 1}
    if shared:
        raise ValueError(f"the bodypart map reads several bodyparts from one name of the file: {shared}")
    return mapping


def _lookup_names(bodyparts: Mapping[str, str] | None) -> list[str]:
    """The file's name for each of ``BODYPARTS``."""
    mapping = parse_bodypart_map(bodyparts)
    return [mapping.get(ours, ours) for ours in BODYPARTS]


# ---------------------------------------------------------------------------- discovery


def dlc_kind(path: Path, video_stem: str) -> tuple[str, bool] | None:
    """``(scorer, filtered)`` when ``path`` is a DLC pose table of this video, else None.

    Matches ``<stem>DLC...`` exactly (``video1`` never takes ``video10DLC...``), for
    TF-era (``DLC_resnet50_...``), DLC 3 (``DLC_Resnet50_..._snapshot_010``) and
    multi-animal (``..._el``) scorers; ``_meta``/``_full``/``_labeled``... files are not pose.
    """
    if path.suffix not in (".csv", *H5_SUFFIXES):
        return None
    rest = path.stem[len(video_stem):]
    if not path.stem.startswith(video_stem) or not rest.startswith(("DLC", "DeepCut")):
        return None
    filtered = rest.endswith("_filtered")
    scorer = rest[: -len("_filtered")] if filtered else rest
    if scorer.endswith(_NOT_POSE):
        return None
    return scorer, filtered


def find_dlc_file(videos_dir, video_stem: str, prefer_filtered: bool = False) -> Path | None:
    """The DLC pose file of one video, or None.

    Unfiltered output is used unless ``prefer_filtered`` (then filtered where it exists);
    a video that has only ``_filtered`` output uses it. H5 wins over CSV for the same
    scorer; two different scorers are ambiguous (``MouseDataError``).
    """
    videos_dir = Path(videos_dir)
    found: dict[tuple[str, bool], list[Path]] = {}
    for path in sorted(videos_dir.iterdir()):
        kind = dlc_kind(path, video_stem)
        if kind is not None and path.is_file():
            found.setdefault(kind, []).append(path)
    if not found:
        return None
    has_filtered = any(filtered for _, filtered in found)
    only_filtered = all(filtered for _, filtered in found)
    want_filtered = only_filtered or (prefer_filtered and has_filtered)
    chosen = {k: v for k, v in found.items() if k[1] == want_filtered}
    if len(chosen) > 1:
        names = sorted(p.name for paths in chosen.values() for p in paths)
        raise MouseDataError(f"{videos_dir}: several DLC scorers for video {video_stem}: {names}; keep one")
    (paths,) = chosen.values()
    return min(paths, key=lambda p: (p.suffix not in H5_SUFFIXES, p.name))


# ---------------------------------------------------------------------------- reading


def read_dlc(
    path,
    expected_frames: int | None = None,
    bodyparts: Mapping[str, str] | str | None = None,
    individual: str | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Read DLC pose of affectlab's six bodyparts: (xy float32 [T,6,2], likelihood float32 [T,6]).

    ``bodyparts`` maps ours to the file's names (``parse_bodypart_map``); ``individual``
    picks one animal of a multi-animal file (required there, ignored for single-animal
    files). Rows must be frames 0..T-1 (``expected_frames`` when given). Non-finite values
    get likelihood 0, so pose interpolation treats them as unseen.
    """
    names = _lookup_names(bodyparts)  # a bad map fails before the file is touched
    path = Path(path)
    if not path.is_file():
        raise MouseDataError(f"{path}: DLC pose file not found")
    table = read_pose_table(path)
    if expected_frames is not None and len(table.index) != expected_frames:
        raise MouseDataError(
            f"{path}: has {len(table.index)} pose rows, expected {expected_frames} (one per video frame)"
        )
    check_frame_index(table)
    return select_pose(table, names, individual)


def read_pose_table(path) -> PoseTable:
    """The columns and values of a DLC CSV or H5 (H5 by its suffix or its HDF5 signature)."""
    path = Path(path)
    if path.name.startswith("CollectedData"):
        raise labelled_data_error(path)
    if path.suffix.lower() in H5_SUFFIXES:
        return _read_h5(path)
    if path.suffix.lower() == ".csv":
        return _read_csv(path)
    raise MouseDataError(f"{path}: DLC pose must be .csv or .h5")


def check_frame_index(table: PoseTable) -> None:
    """Rows must be frames 0, 1, 2, ...: a skipped or repeated frame would shift every later row."""
    index = table.index
    expected = np.arange(len(index))
    bad = np.flatnonzero(index != expected)
    if not bad.size:
        return
    r = int(bad[0])
    if r > 0 and np.isfinite(index[r]) and index[r] > index[r - 1] + 1:
        raise MouseDataError(
            f"{table.path}: the frame index jumps from {index[r - 1]:g} to {index[r]:g} at row {r}: "
            "a skipped frame (every row must be the next video frame)"
        )
    raise MouseDataError(f"{table.path}: row {r} is frame {index[r]:g}, expected {r} (rows must be frames 0, 1, 2, ...)")


def select_pose(table: PoseTable, names: list[str], individual: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """xy [T,6,2] and likelihood [T,6] of the bodyparts the file calls ``names`` (BODYPARTS order)."""
    path, level = table.path, {name: i for i, name in enumerate(table.levels)}
    scorers = table.level("scorer")
    if len(scorers) != 1:
        raise MouseDataError(f"{path}: expected one scorer, found {scorers}")
    if "likelihood" not in table.level("coords"):
        raise labelled_data_error(path)
    keep = range(len(table.columns))
    if "individuals" in level:
        individuals = table.level("individuals")
        if individual is None:
            raise MouseDataError(
                f"{path}: multi-animal DLC file with individuals {individuals}; choose one "
                "(job: --individual NAME, config: MouseConfig.individual, serving: the individual argument)"
            )
        if individual not in individuals:
            raise MouseDataError(f"{path}: no individual {individual!r}; the file has individuals {individuals}")
        keep = [j for j in keep if table.columns[j][level["individuals"]] == individual]
    lookup: dict[tuple[str, str], int] = {}
    for j in keep:
        key = (table.columns[j][level["bodyparts"]], table.columns[j][level["coords"]])
        if key in lookup:
            raise MouseDataError(f"{path}: column {key} appears twice")
        lookup[key] = j
    present = list(dict.fromkeys(bp for bp, _ in lookup))
    missing = [(ours, theirs) for ours, theirs in zip(BODYPARTS, names) if theirs not in present]
    if missing:
        looked = "" if all(o == t for o, t in missing) else f" (looked for {[t for _, t in missing]})"
        example = ",".join(f"{ours}=<name>" for ours, _ in missing)
        raise MouseDataError(
            f"{path}: missing bodyparts {[o for o, _ in missing]}{looked}; the file has bodyparts {present}. "
            f"Map affectlab's bodyparts {list(BODYPARTS)} to the file's as ours=theirs, e.g. --bodyparts {example} "
            f"({_MAPPING_HELP})"
        )
    values = np.empty((len(table.values), len(BODYPARTS), 3), dtype=np.float32)
    for i, theirs in enumerate(names):
        for c, coord in enumerate(COORDS):
            if (theirs, coord) not in lookup:
                raise MouseDataError(f"{path}: bodypart {theirs} has no {coord!r} column")
            values[:, i, c] = table.values[:, lookup[(theirs, coord)]]
    xy, likelihood = values[..., :2], values[..., 2]
    bad = ~np.isfinite(values).all(axis=-1)
    xy[bad] = 0.0
    likelihood[bad] = 0.0
    return np.ascontiguousarray(xy), np.ascontiguousarray(likelihood)


def labelled_data_error(path: Path) -> MouseDataError:
    return MouseDataError(
        f"{path}: labelled training data (DLC's CollectedData: hand-placed x/y, no likelihood, rows are "
        "images), not tracking output; use the <video>DLC_<scorer>.csv/.h5 that analyze_videos writes"
    )


def _levels(names, n_levels: int, path: Path) -> tuple[str, ...]:
    """Level names from the file, or by count when the file has none."""
    names = tuple(names) if names is not None else ()
    if names in (SINGLE_LEVELS, MULTI_LEVELS):
        return names
    if not any(names) and n_levels in (3, 4):
        return SINGLE_LEVELS if n_levels == 3 else MULTI_LEVELS
    raise MouseDataError(
        f"{path}: column levels {list(names) or n_levels}, expected scorer/bodyparts/coords (single animal) "
        "or scorer/individuals/bodyparts/coords (multi-animal)"
    )


# ---------------------------------------------------------------------------- CSV


def _read_csv(path: Path) -> PoseTable:
    """DLC CSV: header rows ``scorer``/[``individuals``]/``bodyparts``/``coords``, then one row per
    frame with the frame number first. A UTF-8 BOM and CRLF line ends (spreadsheet re-saves) are fine."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            header = []
            for row in csv.reader(handle):
                if not row or row[0].strip() not in MULTI_LEVELS:
                    break
                header.append([cell.strip() for cell in row])
    except UnicodeDecodeError:
        raise MouseDataError(f"{path}: not UTF-8 text; expected a DeepLabCut CSV") from None
    except csv.Error as error:
        raise MouseDataError(f"{path}: not a readable CSV ({error})") from None
    names = tuple(row[0] for row in header)
    if names not in (SINGLE_LEVELS, MULTI_LEVELS):
        raise MouseDataError(
            f"{path}: header rows {list(names)}, expected scorer/bodyparts/coords (single animal) "
            "or scorer/individuals/bodyparts/coords (multi-animal)"
        )
    n_index = 1
    while n_index < len(header[0]) and not header[0][n_index]:
        n_index += 1
    if n_index > 1:  # DLC >= 2.2 CollectedData: (labeled-data, video, image) index columns
        raise labelled_data_error(path)
    if len({len(row) for row in header}) != 1:
        raise MouseDataError(f"{path}: the header rows {list(names)} have different numbers of cells")
    columns = tuple(zip(*(row[1:] for row in header)))
    try:
        data = pd.read_csv(path, header=None, skiprows=len(header), encoding="utf-8-sig")
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, ValueError) as error:
        raise MouseDataError(f"{path}: malformed CSV rows ({type(error).__name__}: {(str(error).splitlines() or [''])[0][:200]})") from None
    if data.shape[1] != 1 + len(columns):
        raise MouseDataError(f"{path}: rows have {data.shape[1]} cells, the header {1 + len(columns)}")
    numeric = []
    for j in range(data.shape[1]):
        column = data.iloc[:, j]
        if column.dtype.kind not in _NUMERIC:  # text, or numbers pandas keeps as objects (integers past int64)
            converted = pd.to_numeric(column, errors="coerce")
            bad = np.flatnonzero(converted.isna() & column.notna())
            if len(bad):
                what = "frame number" if j == 0 else f"column {columns[j - 1]}"
                raise MouseDataError(f"{path}: data row {bad[0]} has {str(column.iloc[bad[0]])[:40]!r} as its {what}, expected a number")
            column = converted
        numeric.append(column.to_numpy(np.float64))
    values = np.column_stack(numeric)
    return PoseTable(path, names, columns, values[:, 1:], values[:, 0])


# ---------------------------------------------------------------------------- HDF5 (h5py only)


def _read_h5(path: Path) -> PoseTable:
    try:
        handle = h5py.File(path, "r")
    except OSError:
        raise MouseDataError(f"{path}: not a readable HDF5 file (truncated, corrupt or not HDF5)") from None
    try:
        with handle:
            keys = [k for k, node in handle.items() if isinstance(node, h5py.Group) and "pandas_type" in node.attrs]
            if "df_with_missing" in keys:
                key = "df_with_missing"
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise MouseDataError(f"{path}: expected key df_with_missing or a single pandas frame, found keys {sorted(handle)}")
            group = handle[key]
            kind = _text_attr(group, "pandas_type")
            if kind == "frame_table":
                return _read_table_format(path, group)
            if kind == "frame":
                return _read_fixed_format(path, group)
            raise MouseDataError(f"{path}: key /{key} holds a pandas {kind!r}, expected a DataFrame (frame or frame_table)")
    except MouseDataError:
        raise
    except (OSError, KeyError, ValueError, TypeError, IndexError, RuntimeError):  # truncated or inconsistent internals
        raise MouseDataError(f"{path}: not a readable pandas HDF5 file (truncated, corrupt or not written by pandas)") from None


def _text_attr(node, name: str) -> str | None:
    value = node.attrs.get(name)
    if value is None:
        return None
    if isinstance(value, np.ndarray) and value.size == 1:
        value = value.item()
    if isinstance(value, (bytes, np.bytes_)):
        return bytes(value).decode("utf-8", errors="replace")
    return str(value)


def _pickled_attr(path: Path, node, name: str):
    """An attribute pandas stored pickled, through the restricted unpickler (None when absent)."""
    raw = node.attrs.get(name)
    if raw is None:
        return None
    if not isinstance(raw, (bytes, np.bytes_)):
        raise MouseDataError(f"{path}: attribute {name} of {node.name} is {type(raw).__name__}, expected pandas metadata")
    try:
        return load_pickle(bytes(raw))
    except UnsafePickleError as error:
        raise MouseDataError(
            f"{path}: attribute {name} of {node.name} is a pickle that names Python code ({str(error).split(': ', 1)[-1]}); "
            "refused without running it"
        ) from None
    except ValueError:
        raise MouseDataError(f"{path}: attribute {name} of {node.name} is not readable pandas metadata") from None


def _label_tuples(path: Path, labels, width: int, where: str) -> list[tuple[str, ...]]:
    if not isinstance(labels, list) or len(labels) != width:
        raise MouseDataError(f"{path}: {where}: expected {width} column labels")
    out = []
    for label in labels:
        label = label if isinstance(label, tuple) else (label,)
        if not all(isinstance(x, (str, int)) for x in label):
            raise MouseDataError(f"{path}: {where}: column labels must be strings, got {label!r}")
        out.append(tuple(str(x) for x in label))
    return out


def _read_table_format(path: Path, group) -> PoseTable:
    """``format="table"``: a compound ``table`` dataset of ``index`` + numeric ``values_block_<k>``."""
    table = group.get("table")
    if not isinstance(table, h5py.Dataset) or table.dtype.names is None or "index" not in table.dtype.names:
        raise MouseDataError(f"{path}: {group.name} has no pandas table (expected a 'table' dataset with an index field)")
    if _text_attr(table, "index_kind") != "integer" or table.dtype.fields["index"][0].kind not in "iu":
        raise MouseDataError(f"{path}: the row index is {_text_attr(table, 'index_kind')!r}, expected frame numbers (integers)")
    blocks = []
    for name in table.dtype.names:
        if name == "index":
            continue
        field = table.dtype.fields[name][0]
        if not _VALUES_BLOCK.fullmatch(name):
            raise MouseDataError(f"{path}: column {name!r} is stored as a data column; expected DLC's numeric values blocks")
        if field.base.kind not in _NUMERIC:
            raise MouseDataError(f"{path}: column block {name} holds {field.base} values; only numeric pose columns are read")
        width = int(np.prod(field.shape)) if field.shape else 1
        labels = _label_tuples(path, _pickled_attr(path, table, f"{name}_kind"), width, f"labels of {name}")
        blocks.append((name, labels))
    if not blocks:
        raise MouseDataError(f"{path}: {group.name} has no value columns")
    info = _pickled_attr(path, group, "info")
    names = info.get(1, {}).get("names") if isinstance(info, dict) and isinstance(info.get(1), dict) else None
    columns = [label for _, labels in blocks for label in labels]
    levels = _levels(names, len(columns[0]), path)
    if any(len(c) != len(levels) for c in columns):
        raise MouseDataError(f"{path}: column labels do not all have {len(levels)} levels")
    rows = table[()]  # structure checked: only numbers are read
    values = np.concatenate([rows[name].reshape(len(rows), -1).astype(np.float64) for name, _ in blocks], axis=1)
    return PoseTable(path, levels, tuple(columns), values, rows["index"].astype(np.float64))


def _plain_node(path: Path, group, name: str, kinds: str, what: str) -> h5py.Dataset:
    """A PyTables ``ARRAY`` of one of the numpy ``kinds``, checked from its metadata only:
    object arrays (``VLARRAY``, pickled Python objects) are refused unread."""
    node = group.get(name)
    if not isinstance(node, h5py.Dataset):
        raise MouseDataError(f"{path}: {group.name}/{name} is missing ({what})")
    if _text_attr(node, "CLASS") != "ARRAY" or node.dtype.kind not in kinds:
        stored = "pickled Python objects" if _text_attr(node, "CLASS") == "VLARRAY" or node.dtype.kind == "O" else f"{node.dtype} values"
        raise MouseDataError(f"{path}: {group.name}/{name} ({what}) holds {stored}; refused unread, only numeric pose files are read")
    return node


def _plain_array(path: Path, group, name: str, kinds: str, what: str) -> np.ndarray:
    return _plain_node(path, group, name, kinds, what)[()]


def _decode(path: Path, values: np.ndarray) -> list[str]:
    if values.dtype.kind == "S":
        try:
            return [v.decode("utf-8") for v in values.tolist()]
        except UnicodeDecodeError:
            raise MouseDataError(f"{path}: column labels are not UTF-8 text") from None
    return [str(v) for v in values.tolist()]


def _fixed_labels(path: Path, group, prefix: str, width: int) -> tuple[list[tuple[str, ...]], list[str | None]]:
    """Column labels of a fixed-format block (``<prefix>_level<j>`` + ``<prefix>_label<j>`` codes)."""
    variety = _text_attr(group, f"{prefix}_variety")
    if variety == "regular":
        labels = _decode(path, _plain_array(path, group, prefix, "SUiu", "column labels"))
        return [(label,) for label in labels], [None]
    if variety != "multi":
        raise MouseDataError(f"{path}: {group.name}/{prefix} has column labels of kind {variety!r}")
    n_levels = int(group.attrs[f"{prefix}_nlevels"])
    levels, names = [], []
    for j in range(n_levels):
        level = _decode(path, _plain_array(path, group, f"{prefix}_level{j}", "SUiu", "column labels"))
        codes = _plain_array(path, group, f"{prefix}_label{j}", "iu", "column label codes").astype(np.int64)
        if codes.shape != (width,) or (codes < 0).any() or (codes >= len(level)).any():
            raise MouseDataError(f"{path}: {group.name}/{prefix}_label{j} does not index its {len(level)} labels")
        levels.append([level[c] for c in codes])
        name = _text_attr(group[f"{prefix}_level{j}"], "name")
        names.append(None if name in (None, "N.") else name)
    return list(zip(*levels)), names


def _read_fixed_format(path: Path, group) -> PoseTable:
    """``format="fixed"``: numeric ``block<i>_values`` arrays labelled by plain string arrays."""
    if _text_attr(group, "axis1_variety") == "multi":  # DLC >= 2.2 CollectedData: (labeled-data, video, image)
        raise labelled_data_error(path)
    index_node = group.get("axis1")
    if not isinstance(index_node, h5py.Dataset) or _text_attr(index_node, "kind") != "integer":
        kind = _text_attr(index_node, "kind") if isinstance(index_node, h5py.Dataset) else None
        raise MouseDataError(
            f"{path}: the row index holds {kind or 'no'} values, not frame numbers "
            "(labelled data such as CollectedData are indexed by image)"
        )
    index = _plain_array(path, group, "axis1", "iu", "row index")
    columns, names, blocks = [], None, []
    for i in range(int(group.attrs.get("nblocks", 0))):
        node = _plain_node(path, group, f"block{i}_values", _NUMERIC, "values")
        transposed = bool(node.attrs.get("transposed", False))
        width = node.shape[-1] if transposed else node.shape[0]
        labels, block_names = _fixed_labels(path, group, f"block{i}_items", width)
        values = node[()] if transposed else node[()].T  # every block checked numeric before its values are read
        if values.ndim != 2 or values.shape != (len(index), len(labels)):
            raise MouseDataError(f"{path}: block{i}_values has shape {values.shape}, expected {(len(index), len(labels))}")
        columns += labels
        names = names or block_names
        blocks.append(values.astype(np.float64))
    if not blocks:
        raise MouseDataError(f"{path}: {group.name} has no value columns")
    levels = _levels(names if names and any(names) else None, len(columns[0]), path)
    if any(len(c) != len(levels) for c in columns):
        raise MouseDataError(f"{path}: column labels do not all have {len(levels)} levels")
    return PoseTable(path, levels, tuple(columns), np.concatenate(blocks, axis=1), index.astype(np.float64))
