"""Variable-length sequences in batches: padding with masks, and length buckets.

Rows of the sequence workloads (ProbTalk3D audio + motion, 3DiFACE vertices + audio,
infant pose sequences) differ in length. What Ray Data 2.60 hands a collate function in
``batch_format="numpy"`` (checked with a small dataset of ragged rows): a column whose rows
differ in shape arrives as a 1-D **object array of per-row arrays**; a column whose rows in
*this batch* happen to share a shape arrives **stacked**, ``(B, L, ...)``; string columns
arrive as object arrays of ``str``. ``SequenceCollate`` accepts all three.

Columns that share one time axis at different rates are padded together: ProbTalk3D's
``{"frame": {"motion": 1, "audio": 640}}`` pads motion to ``T`` frames and audio to
``640·T`` samples, and gives one frame mask. A row's length on an axis is the number of
whole steps every one of its columns covers (``min(len(column) / rate)``); rates need not be
integers (16 kHz audio at 30 fps is 533.3 samples per frame).

Use it as ``ds.iter_torch_batches(batch_size=B, collate_fn=SequenceCollate(axes))`` (a
``NumpyBatchCollateFn``, so Ray passes numpy batches and then moves the tensors to the
training device), or call it on ``ds.iter_batches(batch_format="numpy")`` batches with
``to_torch=False`` to keep string columns such as names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from ray.data.collate_fn import NumpyBatchCollateFn

if TYPE_CHECKING:
    import torch

TimeAxes = Mapping[str, Mapping[str, float]]  # axis name -> {column: samples per step}


class SequenceCollate(NumpyBatchCollateFn):
    """Pad the variable-length columns of a numpy batch along time and add masks.

    ``axes`` maps an axis name to the columns on it and their samples per step. For each
    axis ``a`` the output holds every listed column present in the batch, padded with
    ``pad_value`` to ``T = ceil(max length / multiple) · multiple`` steps (``ceil(T · rate)``
    samples), plus ``{a}_mask`` (B, T) bool, True on real steps, and ``{a}_length`` (B,)
    int64. Other numeric columns are stacked. With ``to_torch`` every value is a torch
    tensor and string columns are left out (Ray moves a batch to the device only when all
    its values are tensors); without it, numpy arrays and strings are kept.
    """

    def __init__(self, axes: TimeAxes, *, multiple: int = 1, to_torch: bool = True, pad_value: float = 0.0):
        if multiple < 1:
            raise ValueError(f"multiple must be >= 1, got {multiple}")
        seen: dict[str, str] = {}
        for axis, columns in axes.items():
            if not columns:
                raise ValueError(f"time axis {axis!r} lists no columns")
            for column, rate in columns.items():
                if rate <= 0:
                    raise ValueError(f"time axis {axis!r}: column {column!r} needs a positive rate, got {rate}")
                if column in seen:
                    raise ValueError(f"column {column!r} is on two time axes, {seen[column]!r} and {axis!r}")
                seen[column] = axis
        self.axes = {axis: dict(columns) for axis, columns in axes.items()}
        self.multiple = multiple
        self.to_torch = to_torch
        self.pad_value = pad_value

    def __call__(self, batch: Mapping[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        on_axis = {column for columns in self.axes.values() for column in columns}
        for axis, columns in self.axes.items():
            present = {c: _rows(batch[c], c) for c in columns if c in batch}
            if not present:
                continue
            n = {len(rows) for rows in present.values()}
            if len(n) > 1:
                raise ValueError(f"time axis {axis!r}: columns {sorted(present)} have different batch sizes {sorted(n)}")
            lengths = np.array(
                [min(_steps(len(rows[i]), columns[c]) for c, rows in present.items()) for i in range(n.pop())], np.int64
            )
            steps = math.ceil(int(lengths.max(initial=0)) / self.multiple) * self.multiple
            for column, rows in present.items():
                out[column] = pad_rows(rows, math.ceil(steps * columns[column] - 1e-6), self.pad_value, column)
            out[f"{axis}_mask"] = np.arange(steps)[None, :] < lengths[:, None]
            out[f"{axis}_length"] = lengths
        for column, values in batch.items():
            if column in on_axis:
                continue
            fixed = _fixed_column(values, column)
            if fixed is not None:
                out[column] = fixed
            elif not self.to_torch:  # strings: kept for numpy consumers only
                out[column] = np.asarray(values)
        if self.to_torch:
            import torch  # here, not at the top: decode-only Ray Data workers never import torch

            # Ray hands read-only arrays; torch wants to own writable memory
            return {k: torch.from_numpy(v if v.flags.writeable and v.flags.c_contiguous else v.copy()) for k, v in out.items()}
        return out


def _rows(values: Any, column: str) -> list[np.ndarray]:
    """Per-row arrays of a column given stacked, as an object array or as a list."""
    rows = [np.asarray(v) for v in values]
    for i, row in enumerate(rows):
        if row.ndim == 0:
            raise ValueError(f"column {column!r} row {i}: a scalar, expected an array with time along axis 0")
        if row.dtype == object:
            raise ValueError(f"column {column!r} row {i}: not a numeric array (dtype object)")
    return rows


def _steps(n_samples: int, rate: float) -> int:
    return int(math.floor(n_samples / rate + 1e-6))


def pad_rows(rows: Sequence[np.ndarray], length: int, pad_value: float = 0.0, column: str = "column") -> np.ndarray:
    """Stack arrays of shape (L_i, ...) into (B, length, ...), cropping or padding axis 0."""
    if not rows:
        raise ValueError(f"column {column!r}: an empty batch")
    trailing = {row.shape[1:] for row in rows}
    if len(trailing) > 1:
        raise ValueError(f"column {column!r}: rows differ beyond the time axis: shapes {sorted(r.shape for r in rows)}")
    out = np.full((len(rows), length, *rows[0].shape[1:]), pad_value, dtype=np.result_type(*rows))
    for i, row in enumerate(rows):
        take = min(len(row), length)
        out[i, :take] = row[:take]
    return out


def _fixed_column(values: Any, column: str) -> np.ndarray | None:
    """A column that is not on a time axis, stacked; None for a string column."""
    values = np.asarray(values)
    if values.dtype != object:
        return None if values.dtype.kind in "US" else values
    items = list(values)
    if all(isinstance(v, (str, bytes)) for v in items):
        return None
    shapes = {np.shape(v) for v in items}
    if len(shapes) > 1:
        raise ValueError(f"column {column!r} varies in length ({sorted(shapes)}) but is on no time axis; add it to one")
    return np.stack([np.asarray(v) for v in items])


def masked_mean(x: "np.ndarray | torch.Tensor", mask: "np.ndarray | torch.Tensor") -> "np.ndarray | torch.Tensor":
    """Mean of ``x`` over the positions where ``mask`` is True.

    ``mask`` (B, T) covers the leading axes of ``x`` (B, T, ...) and broadcasts over the
    rest. Works on numpy arrays and torch tensors alike; an all-False mask gives 0.
    """
    m = mask.reshape(tuple(mask.shape) + (1,) * (x.ndim - mask.ndim))
    m = m.astype(x.dtype) if isinstance(x, np.ndarray) else m.to(x.dtype)
    per_position = math.prod(x.shape[mask.ndim :])
    count = m.sum() * per_position
    return (x * m).sum() / (count + (count == 0))


def bucket_by_length(lengths: Sequence[int], batch_size: int, seed: int, *, drop_last: bool = False) -> list[np.ndarray]:
    """Batches of row indices whose lengths are close, in a seeded random order.

    Rows are sorted by length (ties broken at random), cut into consecutive batches of
    ``batch_size``, and the batches shuffled; padding then wastes little. The same seed
    gives the same batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    lengths = np.asarray(lengths)
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(lengths)), lengths))
    batches = [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    if drop_last and batches and len(batches[-1]) < batch_size:
        batches.pop()
    return [batches[i] for i in rng.permutation(len(batches))]
