"""The one restricted unpickler for pickles found in the wild.

Some datasets and body models exist only as pickles: the InfAct and MMAction2 ``.pkl``
files, VOCASET's, and the SMPL/SMIL/FLAME models (py2 pickles holding chumpy objects).
``pickle.load`` on such a file runs whatever the file names. This reader admits only the
globals those files need — numpy array and dtype reconstruction, ``set``/``frozenset``,
``collections.OrderedDict`` and, for body models, scipy sparse matrices and chumpy's
``Ch``/``Select`` — and refuses anything else *before* it is called. Chumpy and scipy
objects are rebuilt from their pickled state by small stubs (no chumpy install, no scipy
``__setstate__``), and ``load_pickle`` returns plain numpy arrays and scipy matrices.

Nothing that arrives over HTTP goes through here: requests never reach a pickle at all.
"""

from __future__ import annotations

import codecs
import collections
import io
import pickle
from pathlib import Path
from typing import Any

import numpy as np


class UnsafePickleError(ValueError):
    """A pickle names a global outside the allowed set; nothing it names was run."""


class _Stub:
    """Holds the pickled state of an object we rebuild ourselves (never the real class)."""

    state: Any = None  # set by __setstate__; pickle's NEWOBJ never calls __init__

    def __setstate__(self, state):
        self.state = state


class ChumpyCh(_Stub):
    """``chumpy.ch.Ch``: the array is under ``x`` in its state dict."""


class ChumpySelect(_Stub):
    """``chumpy.reordering.Select``: value = ``a.x.ravel()[idxs].reshape(preferred_shape)``."""


class SparseMatrix(_Stub):
    """``scipy.sparse`` CSC/CSR matrices: rebuilt from ``data``, ``indices``, ``indptr``, ``_shape``."""


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not np.ndarray:
        raise UnsafePickleError(f"numpy reconstruct of {subtype!r} refused: only numpy.ndarray is allowed")
    return np.ndarray.__new__(np.ndarray, shape, dtype)


def _np_scalar(dtype, data=None):
    return np._core.multiarray.scalar(dtype, data) if data is not None else np._core.multiarray.scalar(dtype)


def _np_frombuffer(buffer, dtype, shape, order, axis_order=None):  # protocol 5's array layout
    array = np.frombuffer(buffer, dtype=dtype)
    if order == "K" and axis_order is not None:  # a non-contiguous array, stored in memory order
        return array.reshape(shape, order="C").transpose(axis_order).copy()
    return array.reshape(shape, order=order).copy()


def _bytes(*args):
    """``bytes()``: how protocol 2 spells ``b""`` (an empty array's data). Nothing else is built
    here: ``bytes(n)`` would allocate whatever a file asks for."""
    if args:
        raise ValueError(f"bytes{args!r:.40} refused: only bytes() with no arguments appears in data files")
    return b""


_NUMPY = {
    **{(m, "_frombuffer"): _np_frombuffer for m in ("numpy.core.numeric", "numpy._core.numeric")},
    **{(m, "_reconstruct"): _np_reconstruct for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(m, "scalar"): _np_scalar for m in ("numpy.core.multiarray", "numpy._core.multiarray")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}
_BUILTINS = {
    (m, n): obj
    for m in ("builtins", "__builtin__")
    for n, obj in (("set", set), ("frozenset", frozenset))
} | {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("_codecs", "encode"): codecs.encode,  # how py3 writes bytes in protocol 2
    ("__builtin__", "bytes"): _bytes,  # ... and empty bytes
    ("builtins", "bytes"): _bytes,
}
_BODY_MODEL = {
    ("chumpy.ch", "Ch"): ChumpyCh,
    ("chumpy.reordering", "Select"): ChumpySelect,
    **{
        (module, name): SparseMatrix
        for name in ("csc_matrix", "csr_matrix")
        for module in (f"scipy.sparse.{name[:3]}", f"scipy.sparse._{name[:3]}", "scipy.sparse")
    },
}


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, allowed: dict, source: str):
        super().__init__(file, encoding="latin1")  # py2 pickles (SMPL, FLAME) need latin1
        self._allowed = allowed
        self._source = source

    def find_class(self, module: str, name: str):
        try:
            return self._allowed[(module, name)]
        except KeyError:
            raise UnsafePickleError(
                f"{self._source}: refusing to unpickle {module}.{name}; this reader admits only "
                "numpy arrays, builtin containers" + (", scipy sparse matrices and chumpy arrays"
                                                      if ChumpyCh in self._allowed.values() else "")
            ) from None


def _resolve(obj):
    """Replace stubs by the arrays they stand for, recursively through containers."""
    if isinstance(obj, ChumpyCh):
        return np.asarray(_state(obj)["x"])
    if isinstance(obj, ChumpySelect):
        state = _state(obj)
        base = _resolve(state["a"])
        return np.asarray(base).ravel()[np.asarray(state["idxs"])].reshape(state["preferred_shape"])
    if isinstance(obj, SparseMatrix):
        import scipy.sparse

        state = _state(obj)
        kind = scipy.sparse.csr_matrix if str(state.get("format", "csc")) == "csr" else scipy.sparse.csc_matrix
        return kind((state["data"], state["indices"], state["indptr"]), shape=tuple(state["_shape"]))
    if isinstance(obj, dict):
        return type(obj)((k, _resolve(v)) for k, v in obj.items())
    if isinstance(obj, (list, tuple)):
        return type(obj)(_resolve(v) for v in obj)
    return obj


def _state(stub: _Stub) -> dict:
    state = stub.state
    if isinstance(state, tuple) and len(state) == 2 and isinstance(state[1], dict):
        state = {**(state[0] or {}), **state[1]}  # (dict state, slot state)
    if not isinstance(state, dict):
        raise ValueError(f"{type(stub).__name__}: unexpected pickled state {type(state).__name__}")
    return state


def load_pickle(source: str | Path | bytes, *, body_model: bool = False) -> Any:
    """Unpickle ``source`` (a path or bytes) admitting only data-file globals.

    ``body_model=True`` also admits scipy sparse matrices and chumpy's ``Ch``/``Select``,
    which SMPL/SMIL/FLAME pickles hold; they come back as scipy matrices and numpy arrays.
    Raises ``UnsafePickleError`` naming the refused global; anything else malformed raises
    ``ValueError`` naming the file.
    """
    allowed = _NUMPY | _BUILTINS | (_BODY_MODEL if body_model else {})
    if isinstance(source, (bytes, bytearray)):
        name, raw = "<bytes>", bytes(source)
    else:
        name, raw = str(source), Path(source).read_bytes()
    try:
        obj = _RestrictedUnpickler(io.BytesIO(raw), allowed, name).load()
    except UnsafePickleError:
        raise
    except Exception as exc:  # truncated or corrupt: pickle raises many kinds
        raise ValueError(f"{name}: not a readable pickle ({type(exc).__name__}: {exc})") from None
    try:
        return _resolve(obj)
    except Exception as exc:  # a stub whose state lacks a key or holds the wrong kinds of arrays
        raise ValueError(f"{name}: a chumpy or scipy object in the pickle is malformed ({type(exc).__name__}: {exc})") from None
