"""Hostile input: property-based fuzzing of every reader a user or a client can reach.

Each reader gets copies of a small valid file of its format, mutated by hypothesis (bytes
flipped or set to boundary values, 32-bit fields set to 0/-1/2^31, spans inserted, deleted,
duplicated or overwritten, the file truncated at any offset; text formats also get unicode,
CSV/JSON tokens, line edits and other encodings). The property: the reader returns, or
raises the data error its documentation names (a ``BadInput`` with a 4xx status for the
serving code) — never another exception type, never a crash, never a hang.

Readers run in a ``Sandbox``: one spawned worker process with a memory cap, a per-example
time bound (a hang or a crash of native code fails the example instead of taking pytest
down) and no Ray. Examples are derandomized, so every run tries the same cases:

==================================================  ==================================  =====
reader (test)                                       documented error                    cases
==================================================  ==================================  =====
UNBC HDF5, bytes (``UNBC.open``)                    UNBCDataError                       100
UNBC HDF5, keys deleted/renamed/retyped/reshaped    UNBCDataError                       80
3D-Pain annotation JSON (``read_pain3d``)           Pain3DDataError                     80
3D-Pain split CSV (``read_pain3d``)                 Pain3DDataError                     80
MP4 + AVI, windows (``iter_video_windows``)         MouseDataError                      80
MP4 + AVI, serving (``probe_video`` + windows)      BadInput 4xx / MouseDataError       80
MP4 + AVI, training (``read_video_frames``)         MouseDataError                      60
DLC CSV (``read_dlc`` + interpolation)              MouseDataError                      80
DLC H5, table + fixed format (``read_dlc``)         MouseDataError                      100
WAV, bytes and header fields (``read_wav``)         AudioError                          150
3DMEAD .npy + .wav (``read_sequence``)              MeadDataError / AudioError          100
3DMEAD .npy headers (``discover_mead``)             MeadDataError                       60
generated samples .npz / .npy (infant)              InfantDataError / UnsafePickleError 100
InfAct + PoseDataset pkl (infant)                   InfantDataError / UnsafePickleError 100
pkl, data + body model (``load_pickle``)            UnsafePickleError / ValueError      150
pkl, chumpy/scipy stub states (``load_pickle``)     UnsafePickleError / ValueError      100
predictions.npz (``read_predictions``)              CheckpointError                     80
images PNG/JPEG+EXIF/BMP/GIF/WebP/TIFF              BadInput 4xx                        210
multipart bodies + headers (``read_payload``)       BadInput 4xx                        150
JSON bodies (``read_payload`` + ``Payload``)        BadInput 4xx                        150
arbitrary JSON values, content types, lengths       BadInput 4xx                        100
==================================================  ==================================  =====

"cases" is ``max_examples``: hypothesis runs that many valid draws (and discards a few that
overrun); a test marked xfail stops at its first failing case. ``--hypothesis-show-statistics``
shows what each reader did with its cases (read them, or raised which documented error).

Inputs that broke a reader (found by these tests, or seen reading the code they exercise)
are kept as unit tests of the minimal failing input, each next to its reader's fuzz test.
Readers another session owns (``data/dlc.py``, ``data/pose.py``, ``data/mouse.py``,
``serving/mouse.py``) are not fixed here: their failures are marked ``xfail(strict=True)``
with the minimal input in the reason.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import multiprocessing
import pickle
import re
import shutil
import sys
import tempfile
import traceback
import types
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

TIMEOUT_S = 30.0  # per example: tiny inputs decode in milliseconds; this catches hangs, not slowness
STARTUP_S = 300.0  # spawning the worker and importing the readers, once (and after a crash)
MEMORY_BYTES = 6 << 30  # the worker's data limit: a header that claims gigabytes fails there, not the machine


def fuzz(n: int, shrink: bool = True):
    """Settings of one fuzz test: ``n`` derandomized cases, no deadline (the Sandbox bounds time).
    ``shrink=False`` for a known failure marked xfail: its minimal input is in the marker."""
    return settings(
        max_examples=n,
        deadline=None,
        derandomize=True,
        database=None,
        phases=tuple(Phase) if shrink else (Phase.explicit, Phase.reuse, Phase.generate),
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
    )


# ---------------------------------------------------------------------------- the sandbox


def _documented(error: BaseException, allowed: tuple[type, ...]) -> bool:
    """``error`` is one a reader documents: exactly an allowed type, or affectlab's own subclass
    of one (a ``UnicodeDecodeError`` is a ValueError, but not the ValueError a reader documents)."""
    layer = sys.modules.get("affectlab.serving.layer")  # not imported: the error cannot be a BadInput
    if layer is not None and isinstance(error, layer.BadInput):
        return layer.BadInput in allowed and 400 <= error.status < 500
    return type(error) in allowed or (isinstance(error, allowed) and type(error).__module__.startswith("affectlab."))


_READER_MODULES = (
    "affectlab.data.unbc", "affectlab.data.pain3d", "affectlab.data.audio", "affectlab.data.mead",
    "affectlab.data.infant", "affectlab.data.safe_pickle", "affectlab.data.dlc", "affectlab.data.mouse",
    "affectlab.data.mouse_windows", "affectlab.serving.images", "affectlab.serving.layer", "affectlab.serving.mouse",
    "affectlab.train.loop", "starlette.requests", "scipy.signal",
)  # fmt: skip


def _worker(conn, memory_bytes: int, modules: tuple[str, ...]) -> None:
    import importlib
    import resource

    for name in modules:  # imported before the first example, so its time bound is the reader's alone
        importlib.import_module(name)
    if "cv2" in sys.modules:
        sys.modules["cv2"].setNumThreads(1)
    resource.setrlimit(resource.RLIMIT_DATA, (memory_bytes, memory_bytes))
    conn.send("ready")
    while True:
        try:
            fn, args, allowed = conn.recv()
        except EOFError:
            return
        try:
            fn(*args)
            reply = ("ok", "")
        except BaseException as error:  # noqa: BLE001 - classifying every outcome is the point
            if _documented(error, allowed):
                reply = ("documented", f"{type(error).__name__}: {error}")
            else:
                reply = ("other", "".join(traceback.format_exception(error)))
        conn.send(reply)


class Sandbox:
    """One spawned worker that runs readers on fuzzed files, ``timeout_s`` per call, its data
    segment capped at ``MEMORY_BYTES``; it is restarted after a hang or a crash."""

    def __init__(self, timeout_s: float = TIMEOUT_S, modules: tuple[str, ...] = _READER_MODULES):
        self.ctx = multiprocessing.get_context("spawn")
        self.timeout_s, self.modules = timeout_s, modules
        self.proc = None

    def _start(self):
        self.conn, child = self.ctx.Pipe()
        self.proc = self.ctx.Process(target=_worker, args=(child, MEMORY_BYTES, self.modules), daemon=True)
        self.proc.start()
        child.close()
        if not self.conn.poll(STARTUP_S) or self.conn.recv() != "ready":
            raise RuntimeError(f"the fuzzing worker did not start within {STARTUP_S:g} s")

    def close(self):
        if self.proc is not None:  # the worker holds nothing worth a clean shutdown
            self.proc.kill()
            self.proc.join()
            self.conn.close()
            self.proc = None

    def check(self, allowed: tuple[type, ...], fn, *args) -> str:
        """Run ``fn(*args)``; return ``"ok"`` or the documented error's text, else fail."""
        if self.proc is None or not self.proc.is_alive():
            self._start()
        self.conn.send((fn, args, allowed))
        if not self.conn.poll(self.timeout_s):
            self.proc.kill()
            self.proc.join()
            self.proc = None
            raise AssertionError(f"{fn.__name__} did not return within {self.timeout_s:g} s (a hang)")
        try:
            kind, text = self.conn.recv()
        except EOFError:
            self.proc.join()
            code, self.proc = self.proc.exitcode, None
            raise AssertionError(f"{fn.__name__} crashed the worker process (exit code {code})") from None
        if kind == "other":
            names = ", ".join(a.__name__ for a in allowed)
            raise AssertionError(f"{fn.__name__} raised an undocumented exception (documented: {names}):\n{text}")
        if currently_in_test_context():  # --hypothesis-show-statistics: the outcomes of each test
            event("read" if kind == "ok" else text.split(":", 1)[0])
        return "ok" if kind == "ok" else text


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox()
    yield box
    box.close()


class Samples(dict):
    """Valid files of one format, by name (a short repr: hypothesis prints the fixtures of a failing case)."""

    def __repr__(self) -> str:
        return f"<valid samples {sorted(self)}>"


def _sleep(seconds: float) -> None:
    import time

    time.sleep(seconds)


def _die() -> None:
    import os
    import signal

    os.kill(os.getpid(), signal.SIGSEGV)  # what a crash in native decoding code does


def _raise(kind: type) -> None:
    raise kind("raised on purpose")


def _allocate(n_bytes: int) -> None:
    np.empty(n_bytes, np.uint8)  # never touched: only the cap can refuse it


def test_sandbox_reports_hangs_crashes_and_undocumented_errors():
    """The harness itself: a documented error passes, anything else (a MemoryError past the cap
    included) fails the example, and the worker comes back after a hang or a crash."""
    box = Sandbox(timeout_s=2.0, modules=())
    try:
        assert box.check((ValueError,), _sleep, 0) == "ok"
        assert box.check((ValueError,), _raise, ValueError) == "ValueError: raised on purpose"
        with pytest.raises(AssertionError, match="(?s)undocumented exception.*UnicodeError: raised on purpose"):
            box.check((ValueError,), _raise, UnicodeError)  # a ValueError subclass, not the documented one
        with pytest.raises(AssertionError, match="did not return within 2 s"):
            box.check((ValueError,), _sleep, 60)
        with pytest.raises(AssertionError, match="crashed the worker process \\(exit code -11\\)"):
            box.check((ValueError,), _die)
        with pytest.raises(AssertionError, match="(?s)undocumented exception.*MemoryError"):
            box.check((ValueError,), _allocate, MEMORY_BYTES + (1 << 30))  # a header claiming gigabytes
        assert box.check((ValueError,), _sleep, 0) == "ok"
    finally:
        box.close()


@contextmanager
def fresh_dir(base: Path):
    """A new directory per example (readers cache by path), removed after it."""
    d = Path(tempfile.mkdtemp(dir=base))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


# ---------------------------------------------------------------------------- mutations

_BOUNDARY_BYTES = (0x00, 0xFF, 0x7F, 0x80, 0x01)
_BOUNDARY_INT32 = (0, 1, 0x7F, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)
_BYTE_OPS = ("flip", "truncate", "set", "int32", "insert", "overwrite", "delete", "duplicate")
_TOKENS = (
    ",", "\n", "\r\n", '"', "'", "\x00", "{", "}", "[", "]", ":", ";", "\t", " ", "\ufeff", "é", "\u2028",
    "NaN", "-1", "1e400", "-Infinity", "null", "true", "99999999999999999999999", "0x10", "", "=cmd|' /C calc'!A0",
)  # fmt: skip
_CELL_TOKENS = ("", "NaN", "-1", "1e400", "-inf", "99999999999999999999999", "0x10", " 1 ", "True", "1_0", '"2"', "é")
_TEXT_OPS = ("insert_token", "insert_text", "delete", "replace_char", "delete_line", "duplicate_line", "swap_lines",
             "number", "cell")  # fmt: skip
_CSV_OPS = _TEXT_OPS + ("cell",) * 8  # a CSV reader's most telling input: one odd cell in an otherwise good table


@st.composite
def mutated_bytes(draw, data: bytes, max_ops: int = 4) -> bytes:
    """``data`` after 1..``max_ops`` byte-level edits."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(_BYTE_OPS)) if out else "insert"
        n = len(out)
        # half the edits land in the first 64 bytes: where most formats keep their header fields
        at = draw(st.one_of(st.integers(0, max(0, min(n, 64) - 1)), st.integers(0, max(0, n - 1))))
        if op == "flip":
            out[at] ^= draw(st.integers(1, 255))
        elif op == "truncate":
            del out[at:]
        elif op == "set":
            out[at] = draw(st.sampled_from(_BOUNDARY_BYTES))
        elif op == "int32":
            at = min(at, max(0, n - 4))
            out[at : at + 4] = draw(st.sampled_from(_BOUNDARY_INT32)).to_bytes(4, "little")
        elif op == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif op == "overwrite":
            chunk = draw(st.binary(min_size=1, max_size=16))
            out[at : at + len(chunk)] = chunk
        elif op == "delete":
            del out[at : at + draw(st.integers(1, 64))]
        else:  # duplicate
            out[at:at] = out[at : at + draw(st.integers(1, 64))]
    return bytes(out)


@st.composite
def mutated_text(draw, text: str, max_ops: int = 4, ops: tuple[str, ...] = _TEXT_OPS) -> bytes:
    """``text`` after 1..``max_ops`` text edits, encoded (mostly UTF-8), then maybe byte edits."""
    s = text
    for _ in range(draw(st.integers(1, max_ops))):
        op = draw(st.sampled_from(ops))
        at = draw(st.integers(0, len(s)))
        lines = s.split("\n")
        if op == "insert_token":
            s = s[:at] + draw(st.sampled_from(_TOKENS)) + s[at:]
        elif op == "insert_text":
            s = s[:at] + draw(st.text(min_size=1, max_size=8)) + s[at:]
        elif op == "delete":
            s = s[:at] + s[at + draw(st.integers(1, 16)) :]
        elif op == "replace_char":
            s = s[:at] + draw(st.characters()) + s[at + 1 :]
        elif op in ("delete_line", "duplicate_line", "swap_lines"):
            i = draw(st.integers(0, len(lines) - 1))
            if op == "delete_line":
                del lines[i]
            elif op == "duplicate_line":
                lines.insert(i, lines[i])
            else:
                j = draw(st.integers(0, len(lines) - 1))
                lines[i], lines[j] = lines[j], lines[i]
            s = "\n".join(lines)
        elif op == "cell":  # one comma-separated cell of one line becomes a boundary token
            i = draw(st.integers(0, len(lines) - 1))
            cells = lines[i].split(",")
            cells[draw(st.integers(0, len(cells) - 1))] = draw(st.sampled_from(_CELL_TOKENS))
            lines[i] = ",".join(cells)
            s = "\n".join(lines)
        else:  # number: one numeric token becomes a boundary token
            numbers = list(re.finditer(r"-?\d+(\.\d+)?", s))
            if numbers:
                m = numbers[draw(st.integers(0, len(numbers) - 1))]
                s = s[: m.start()] + draw(st.sampled_from(_TOKENS)) + s[m.end() :]
    encoding = draw(st.sampled_from(("utf-8", "utf-8", "utf-8", "utf-8-sig", "utf-16", "latin-1")))
    raw = s.encode(encoding, errors="replace")
    if draw(st.integers(0, 3)) == 0:
        raw = draw(mutated_bytes(raw, max_ops=2))
    return raw


@st.composite
def edited_cells(draw, text: str, max_edits: int = 2) -> bytes:
    """A CSV ``text`` with 1..``max_edits`` cells replaced by boundary tokens, otherwise intact (UTF-8)."""
    lines = text.split("\n")
    for _ in range(draw(st.integers(1, max_edits))):
        i = draw(st.integers(0, max(0, len(lines) - 2)))  # the last line is the empty one after the final newline
        cells = lines[i].split(",")
        cells[draw(st.integers(0, len(cells) - 1))] = draw(st.sampled_from(_CELL_TOKENS))
        lines[i] = ",".join(cells)
    return "\n".join(lines).encode()


def csv_mutations(text: str) -> st.SearchStrategy[bytes]:
    return st.one_of(edited_cells(text), mutated_text(text, ops=_CSV_OPS))


# ---------------------------------------------------------------------------- UNBC HDF5


def _unbc_open(root: str, protocol: str) -> None:
    from affectlab.data.unbc import UNBC

    UNBC.open(root, protocol)


@pytest.fixture(scope="module")
def unbc_base(tmp_path_factory) -> dict[str, Path]:
    from affectlab.data.synthetic_pain import write_synthetic_unbc
    from affectlab.data.unbc import UNBC_FILES

    root = write_synthetic_unbc(tmp_path_factory.mktemp("unbc"), n_subjects=2, sequences_per_subject=1,
                                frames_per_sequence=2, size=8, n_folds=2)  # fmt: skip
    return Samples({role: root / name for role, name in UNBC_FILES.items()})


def _unbc_copy(base: dict[str, Path], d: Path) -> dict[str, Path]:
    out = {}
    for role, path in base.items():
        out[role] = d / path.name
        shutil.copyfile(path, out[role])
    return out


@fuzz(100)
@given(data=st.data())
def test_unbc_hdf5_bytes(data, sandbox, unbc_base, tmp_path_factory):
    from affectlab.data.unbc import UNBCDataError

    role = data.draw(st.sampled_from(sorted(unbc_base)), label="file")
    raw = data.draw(mutated_bytes(unbc_base[role].read_bytes()), label="bytes")
    protocol = data.draw(st.sampled_from(("5fold", "loso")), label="protocol")
    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        paths = _unbc_copy(unbc_base, d)
        paths[role].write_bytes(raw)
        sandbox.check((UNBCDataError,), _unbc_open, str(d), protocol)


_H5_DTYPES = ("int8", "int64", "uint16", "float32", "float64", "bool", "S4", "str", "complex64", "compound")


def _h5_array(kind: str, shape: tuple[int, ...]):
    import h5py

    if kind == "str":
        return np.array(["042-ll042"] * int(np.prod(shape)), dtype=h5py.string_dtype()).reshape(shape)
    if kind == "compound":
        return np.zeros(shape, dtype=[("a", "i4"), ("b", "f8")])
    if kind == "S4":
        return np.full(shape, b"ab-1", dtype="S4")
    return (np.arange(int(np.prod(shape))) % 3).astype(kind).reshape(shape)


@fuzz(80)
@given(data=st.data())
def test_unbc_hdf5_keys_dtypes_shapes(data, sandbox, unbc_base, tmp_path_factory):
    """Whole datasets deleted, renamed or replaced by other dtypes and shapes."""
    import h5py

    from affectlab.data.unbc import UNBCDataError

    role = data.draw(st.sampled_from(sorted(unbc_base)), label="file")
    with h5py.File(unbc_base[role], "r") as f:
        names = []
        f.visit(names.append)
    target = data.draw(st.sampled_from(sorted(names)), label="key")
    action = data.draw(st.sampled_from(("replace", "delete", "rename")), label="action")
    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        paths = _unbc_copy(unbc_base, d)
        with h5py.File(paths[role], "a") as f:
            if action == "delete":
                del f[target]
            elif action == "rename":
                parent = target.rsplit("/", 1)[0] + "/" if "/" in target else ""
                new = data.draw(st.sampled_from(("fold-x", "fold-", "fold--1", "fold-99999999999999999999", "x", "fold-0")))
                if parent + new not in f:
                    f.move(target, parent + new)
            else:
                kind = data.draw(st.sampled_from(_H5_DTYPES), label="dtype")
                shape = data.draw(st.sampled_from(((), (0,), (1,), (4,), (6,), (6, 2), (2, 3, 1), (6, 8, 8, 2))), label="shape")
                del f[target]
                f.create_dataset(target, data=_h5_array(kind, shape))
        sandbox.check((UNBCDataError,), _unbc_open, str(d), data.draw(st.sampled_from(("5fold", "loso"))))


def test_unbc_empty_file_is_a_data_error_naming_it(unbc_base, tmp_path):
    """Found: an empty (or truncated) HDF5 file raised h5py's OSError 'file signature not found'."""
    from affectlab.data.unbc import UNBC, UNBCDataError

    paths = _unbc_copy(unbc_base, tmp_path)
    paths["annotations"].write_bytes(b"")
    with pytest.raises(UNBCDataError, match=f"{paths['annotations'].name}: not a readable HDF5 file"):
        UNBC.open(tmp_path)
    paths = _unbc_copy(unbc_base, tmp_path)
    paths["frames"].write_bytes(unbc_base["frames"].read_bytes()[:4000])
    with pytest.raises(UNBCDataError, match=paths["frames"].name):
        UNBC.open(tmp_path)


def test_unbc_scalar_or_mistyped_keys_are_data_errors(unbc_base, tmp_path):
    """Found: a scalar ``label_AU_10`` raised TypeError (len() of a numpy scalar)."""
    import h5py

    from affectlab.data.unbc import UNBC, UNBCDataError

    paths = _unbc_copy(unbc_base, tmp_path)
    with h5py.File(paths["annotations"], "a") as f:
        del f["label_AU_10"]
        f["label_AU_10"] = np.int8(0)
    with pytest.raises(UNBCDataError, match="key 'label_AU_10' is int8 of shape \\(\\); expected numeric AU intensities"):
        UNBC.open(tmp_path)
    paths = _unbc_copy(unbc_base, tmp_path)
    with h5py.File(paths["folds"], "a") as f:
        f.move("fold-1", "fold-x")
    with pytest.raises(UNBCDataError, match="'fold-x' is not a fold group named fold-<k>"):
        UNBC.open(tmp_path)


# ---------------------------------------------------------------------------- 3D-Pain JSON + CSV


def _read_pain3d(root: str, split_csv: str | None) -> None:
    from affectlab.data.pain3d import read_pain3d

    read_pain3d(root, split_csv, seed=0)


@pytest.fixture(scope="module")
def pain3d_base(tmp_path_factory) -> Path:
    from affectlab.data.synthetic_pain import write_synthetic_pain3d

    return write_synthetic_pain3d(tmp_path_factory.mktemp("pain3d"), n_identities=3, n_pain=1, n_views=1, size=8)


def _pain3d_case(data, base: Path, d: Path, which: str) -> str | None:
    from affectlab.data.pain3d import SPLIT_CSV

    root = d / "p3d"
    shutil.copytree(base, root)
    if which == "json":
        target = data.draw(st.sampled_from(sorted((root / "annotations").glob("*.json"))), label="annotation")
    else:
        target = root / SPLIT_CSV
    text = target.read_text()
    target.write_bytes(data.draw(mutated_text(text) if which == "json" else csv_mutations(text), label="bytes"))
    return str(target) if which == "csv" and data.draw(st.booleans(), label="csv given") else None


@fuzz(80)
@given(data=st.data())
def test_pain3d_annotation_json(data, sandbox, pain3d_base, tmp_path_factory):
    from affectlab.data.pain3d import Pain3DDataError

    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        split = _pain3d_case(data, pain3d_base, d, "json")
        sandbox.check((Pain3DDataError,), _read_pain3d, str(d / "p3d"), split)


@fuzz(80)
@given(data=st.data())
def test_pain3d_split_csv(data, sandbox, pain3d_base, tmp_path_factory):
    from affectlab.data.pain3d import Pain3DDataError

    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        split = _pain3d_case(data, pain3d_base, d, "csv")
        sandbox.check((Pain3DDataError,), _read_pain3d, str(d / "p3d"), split)


def test_pain3d_split_csv_not_utf8_is_a_data_error(pain3d_base, tmp_path):
    """Found: a split CSV saved as UTF-16 raised UnicodeDecodeError from the csv module."""
    from affectlab.data.pain3d import SPLIT_CSV, Pain3DDataError, read_pain3d

    root = shutil.copytree(pain3d_base, tmp_path / "p3d")
    (root / SPLIT_CSV).write_bytes((root / SPLIT_CSV).read_text().encode("utf-16"))
    with pytest.raises(Pain3DDataError, match=f"{SPLIT_CSV}: not UTF-8 text"):
        read_pain3d(root, None, seed=0)
    (root / SPLIT_CSV).write_bytes((pain3d_base / SPLIT_CSV).read_text().encode("utf-8-sig"))  # a BOM is fine
    assert len(read_pain3d(root, None, seed=0)[0]) == 6


@pytest.mark.parametrize("pspi", ["[3]", "NaN", '"x"'])
def test_pain3d_unusable_pspi_is_a_data_error(pain3d_base, tmp_path, pspi):
    """Seen reading the code the fuzzer exercises: a PSPI that is a list raised TypeError (it was
    converted outside the error handling), and NaN/Infinity (valid in Python's JSON) became labels."""
    from affectlab.data.pain3d import Pain3DDataError, read_pain3d

    root = shutil.copytree(pain3d_base, tmp_path / "p3d")
    target = sorted((root / "annotations").glob("*.json"))[0]
    record = target.read_text()
    target.write_text(record[: record.index('"PSPI": ')] + f'"PSPI": {pspi}}}')
    with pytest.raises(Pain3DDataError, match=f"{target.name}: expected a JSON object with finite numbers"):
        read_pain3d(root, None, seed=0)


# ---------------------------------------------------------------------------- MP4 / AVI


@pytest.fixture(scope="module")
def video_base(tmp_path_factory) -> dict[str, bytes]:
    import cv2

    d = tmp_path_factory.mktemp("video")
    out = {}
    for suffix, fourcc in ((".mp4", "mp4v"), (".avi", "MJPG")):
        path = d / f"base{suffix}"
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 10.0, (16, 16))
        assert writer.isOpened()
        for i in range(8):
            frame = np.zeros((16, 16, 3), np.uint8)
            frame[:, : 2 * i] = 200
            writer.write(frame)
        writer.release()
        out[suffix] = path.read_bytes()
    return Samples(out)


def _video_windows(path: str) -> None:
    """How training evaluation and serving stream a video: its header's count, then windows."""
    import cv2

    from affectlab.data.mouse_windows import iter_video_windows

    capture = cv2.VideoCapture(path)
    count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) if capture.isOpened() else 0
    capture.release()
    for start, frames in iter_video_windows(path, 4, 2, 8, expected_frames=count if count > 0 else None):
        assert frames.dtype == np.uint8 and frames.shape[1:] == (8, 8) and 1 <= len(frames) <= 4


def _video_serving(path: str) -> None:
    """What ``POST /v1/mouse/segment`` does with an upload: probe it, then stream it."""
    from affectlab.data.mouse_windows import iter_video_windows
    from affectlab.serving.mouse import probe_video

    n_frames, fps, (width, height) = probe_video(Path(path))
    assert n_frames > 0 and width > 0 and height > 0
    for _ in iter_video_windows(path, 4, 2, 8, expected_frames=n_frames):
        pass


def _video_training(path: str) -> None:
    """What ``discover`` and a training window read: the header's count, then frames."""
    from affectlab.data.mouse import read_video_frames, video_frame_count

    n = video_frame_count(path)
    frames = read_video_frames(path, 0, min(n, 6), 8)
    assert frames.shape == (min(n, 6), 8, 8)


def _video_case(data, base, d: Path) -> str:
    suffix = data.draw(st.sampled_from(sorted(base)), label="container")
    path = d / f"upload{suffix}"
    path.write_bytes(data.draw(mutated_bytes(base[suffix]), label="bytes"))
    return str(path)


@fuzz(80)
@given(data=st.data())
def test_video_windows(data, sandbox, video_base, tmp_path_factory):
    from affectlab.data.dlc import MouseDataError

    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        sandbox.check((MouseDataError,), _video_windows, _video_case(data, video_base, d))


@fuzz(80)
@given(data=st.data())
def test_video_serving_probe(data, sandbox, video_base, tmp_path_factory):
    from affectlab.data.dlc import MouseDataError
    from affectlab.serving.layer import BadInput

    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        sandbox.check((BadInput, MouseDataError), _video_serving, _video_case(data, video_base, d))


@fuzz(60)
@given(data=st.data())
def test_video_training_reader(data, sandbox, video_base, tmp_path_factory):
    from affectlab.data.dlc import MouseDataError

    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        sandbox.check((MouseDataError,), _video_training, _video_case(data, video_base, d))


# ---------------------------------------------------------------------------- DeepLabCut CSV / H5


def _read_dlc(path: str) -> None:
    """What training discovery and ``POST /v1/mouse/segment`` do with a DLC file: read, then interpolate."""
    from affectlab.data.dlc import read_dlc
    from affectlab.data.pose import interpolate_low_likelihood

    xy, likelihood = read_dlc(path)
    assert xy.shape[1:] == (6, 2) and likelihood.shape == xy.shape[:2]
    points, missing = interpolate_low_likelihood(xy, likelihood, 0.9)
    assert np.isfinite(points).all() and missing.shape == (6,)


def _dlc_table():
    """Four frames of single-animal DeepLabCut output for affectlab's six bodyparts."""
    import pandas as pd

    from affectlab.constants.mouse import BODYPARTS

    columns = pd.MultiIndex.from_product(
        [["DLC_resnet50_fuzzJan1shuffle1_1000"], list(BODYPARTS), ["x", "y", "likelihood"]],
        names=["scorer", "bodyparts", "coords"],
    )
    return pd.DataFrame(np.round(np.random.default_rng(0).uniform(0, 1, (4, 18)), 3), columns=columns)


def _with_cell(text: str, line: int, cell: int, value: str) -> bytes:
    lines = text.split("\n")
    cells = lines[line].split(",")
    cells[cell] = value
    lines[line] = ",".join(cells)
    return "\n".join(lines).encode()


_DLC_CSV = _dlc_table().to_csv()  # in memory: the CSV fuzz's strategy is built from it at import
# The minimal failing input: the first data row's frame number past int64.
_DLC_BIG_INT_CSV = _with_cell(_DLC_CSV, 3, 0, "99999999999999999999999")


@pytest.fixture(scope="module")
def dlc_base(tmp_path_factory) -> Samples:
    table, d = _dlc_table(), tmp_path_factory.mktemp("dlc")
    table.to_hdf(d / "table.h5", key="df_with_missing", format="table", mode="w")
    table.to_hdf(d / "fixed.h5", key="df_with_missing", format="fixed", mode="w")
    return Samples({name: (d / name).read_bytes() for name in ("table.h5", "fixed.h5")})


@fuzz(80)
@given(raw=csv_mutations(_DLC_CSV))
@example(raw=_DLC_BIG_INT_CSV)
def test_dlc_csv(raw, sandbox, tmp_path_factory):
    from affectlab.data.dlc import MouseDataError

    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        path = d / "videoDLC_resnet50.csv"
        path.write_bytes(raw)
        sandbox.check((MouseDataError,), _read_dlc, str(path))


def test_dlc_csv_integer_past_int64_is_a_data_error(tmp_path):
    """The minimal failing input ``test_dlc_csv`` found (pandas keeps integers past int64 as
    Python ints; the frame-index check then names the bad frame)."""
    from affectlab.data.dlc import MouseDataError, read_dlc

    path = tmp_path / "videoDLC_resnet50.csv"
    path.write_bytes(_DLC_BIG_INT_CSV)
    with pytest.raises(MouseDataError, match="videoDLC_resnet50.csv"):
        read_dlc(path)


@fuzz(100)
@given(data=st.data())
def test_dlc_h5(data, sandbox, dlc_base, tmp_path_factory):
    from affectlab.data.dlc import MouseDataError

    name = data.draw(st.sampled_from(("table.h5", "fixed.h5")), label="format")
    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        path = d / "videoDLC_resnet50.h5"
        path.write_bytes(data.draw(mutated_bytes(dlc_base[name]), label="bytes"))
        sandbox.check((MouseDataError,), _read_dlc, str(path))


# ---------------------------------------------------------------------------- WAV


def _read_wav(raw: bytes, max_seconds: float | None) -> None:
    from affectlab.data.audio import read_wav

    audio = read_wav(raw, max_seconds=max_seconds)
    assert audio.dtype == np.float32 and audio.ndim == 1 and np.isfinite(audio).all() and np.abs(audio).max() <= 1.0


@pytest.fixture(scope="module")
def wav_base() -> Samples:
    import soundfile as sf

    out = Samples()
    rng = np.random.default_rng(0)
    for sr, channels, subtype in ((8000, 1, "PCM_16"), (16000, 2, "FLOAT"), (22050, 1, "PCM_U8")):
        buffer = io.BytesIO()
        sf.write(buffer, rng.uniform(-0.5, 0.5, (sr // 50, channels)), sr, subtype=subtype, format="WAV")
        out[f"{sr}Hz-{channels}ch-{subtype}"] = buffer.getvalue()
    return out


_WAV_FIELDS = {"channels": (22, 2), "sample rate": (24, 4), "byte rate": (28, 4), "block align": (32, 2),
               "bits per sample": (34, 2), "data size": (40, 4)}  # offset, width in a canonical 44-byte header  # fmt: skip


@st.composite
def wav_header_edits(draw, raw: bytes) -> bytes:
    """One field of the canonical WAV header set to a boundary or random value."""
    offset, width = _WAV_FIELDS[draw(st.sampled_from(sorted(_WAV_FIELDS)), label="field")]
    top = (1 << (8 * width)) - 1
    value = draw(st.one_of(st.sampled_from((0, 1, 2, 3, 7, 8000, 16001, 96001, 1_000_003, top >> 1, top)), st.integers(0, top)))
    return raw[:offset] + min(value, top).to_bytes(width, "little") + raw[offset + width :]


@fuzz(150)
@given(data=st.data())
def test_wav(data, sandbox, wav_base):
    from affectlab.data.audio import AudioError

    base = data.draw(st.sampled_from(sorted(wav_base)), label="base")
    raw = data.draw(st.one_of(mutated_bytes(wav_base[base]), wav_header_edits(wav_base[base])), label="bytes")
    sandbox.check((AudioError,), _read_wav, raw, data.draw(st.sampled_from((None, 1.0)), label="max_seconds"))


@pytest.mark.parametrize("rate", [1, 3999, 384001, 2**31 - 1, 96001, 1_000_003])
def test_wav_absurd_sample_rate_is_refused_before_decoding(wav_base, rate):
    """Seen probing header fields: a sample rate of 2^31-1 Hz raised MemoryError (a 320 GiB
    filter), 1000003 Hz stalled ~20 s designing a 20-million-tap filter for 160 samples, and
    1 Hz turned 160 samples into 2.5 million."""
    from affectlab.data.audio import AudioError, read_wav

    raw = wav_base["8000Hz-1ch-PCM_16"]
    edited = raw[:24] + rate.to_bytes(4, "little") + raw[28:]
    with pytest.raises(AudioError, match=f"<WAV bytes>: sample rate {rate} Hz"):
        read_wav(edited)
    for standard in (8000, 11025, 22050, 44100, 48000, 96000, 192000):  # still read, each by its exact ratio
        assert read_wav(raw[:24] + standard.to_bytes(4, "little") + raw[28:]).dtype == np.float32


# ---------------------------------------------------------------------------- 3DMEAD .npy + .wav


def _mead_sequence(npy: str, wav: str) -> None:
    from affectlab.data.mead import read_sequence

    out = read_sequence(npy, wav)
    assert out["motion"].shape[1] == 53 and len(out["audio"]) == 640 * len(out["motion"])


def _mead_discover(root: str) -> None:
    from affectlab.data.mead import discover_mead

    discover_mead(root)


@pytest.fixture(scope="module")
def mead_base() -> dict[str, bytes]:
    import soundfile as sf

    rng = np.random.default_rng(0)
    npy, wav = io.BytesIO(), io.BytesIO()
    np.save(npy, rng.normal(0, 0.1, (1, 3, 403)).astype(np.float32))
    sf.write(wav, rng.uniform(-0.5, 0.5, 3 * 640), 16000, subtype="PCM_16", format="WAV")
    return Samples({"npy": npy.getvalue(), "wav": wav.getvalue()})


@fuzz(100)
@given(data=st.data())
def test_mead_sequence(data, sandbox, mead_base, tmp_path_factory):
    from affectlab.data.audio import AudioError
    from affectlab.data.mead import MeadDataError

    which = data.draw(st.sampled_from(("npy", "wav")), label="file")
    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        paths = {k: d / f"M003_001_0_0.{k}" for k in mead_base}
        for k, raw in mead_base.items():
            paths[k].write_bytes(data.draw(mutated_bytes(raw), label="bytes") if k == which else raw)
        sandbox.check((MeadDataError, AudioError), _mead_sequence, str(paths["npy"]), str(paths["wav"]))


@fuzz(60)
@given(data=st.data())
def test_mead_discover_headers(data, sandbox, mead_base, tmp_path_factory):
    from affectlab.constants import probtalk3d as C
    from affectlab.data.mead import MeadDataError

    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        for sub in (C.PARAM_DIR, C.WAV_DIR):
            (d / sub).mkdir(parents=True)
        (d / C.PARAM_DIR / "M003_001_0_0.npy").write_bytes(data.draw(mutated_bytes(mead_base["npy"]), label="bytes"))
        (d / C.WAV_DIR / "M003_001_0_0.wav").write_bytes(mead_base["wav"])
        sandbox.check((MeadDataError,), _mead_discover, str(d))


def _npy_with_header(header: str, payload: bytes = b"") -> bytes:
    head = header.encode("latin1")
    head += b" " * (-(10 + len(head) + 1) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(head).to_bytes(2, "little") + head + payload


def test_mead_unreadable_params_are_data_errors(mead_base, tmp_path):
    """Found: an object-dtype header raised numpy's ValueError ('contains pickled data'), a NUL
    in the header dict raised SyntaxError and an unterminated one tokenize.TokenError; a header
    that declares 10^10 frames raised MemoryError (14.7 TiB): now refused before any allocation."""
    from affectlab.constants import probtalk3d as C
    from affectlab.data.mead import MeadDataError, discover_mead, read_sequence

    wav = tmp_path / "M003_001_0_0.wav"
    wav.write_bytes(mead_base["wav"])
    npy = tmp_path / "M003_001_0_0.npy"
    cases = {
        "holds Python objects": _npy_with_header("{'descr': '|O', 'fortran_order': False, 'shape': (1, 3, 403), }", b"\x80\x04N."),
        "not a readable .npy array": _npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1,\x00 3, 403), }"),
        "not a readable .npy array ": _npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 403"),
        "truncated: the header declares": _npy_with_header("{'descr': '<f4', 'fortran_order': False, 'shape': (1, 10000000000, 403), }"),
    }
    for message, raw in cases.items():
        npy.write_bytes(raw)
        with pytest.raises(MeadDataError, match=f"{npy.name}: {message.strip()}"):
            read_sequence(npy, wav)
    root = tmp_path / "datasets"  # discovery reads headers only: an unreadable one is a corrupt sample, skipped later
    for sub, name, raw in ((C.PARAM_DIR, "M003_001_0_0.npy", cases["not a readable .npy array"]), (C.WAV_DIR, "M003_001_0_0.wav", mead_base["wav"])):
        (root / sub).mkdir(parents=True, exist_ok=True)
        (root / sub / name).write_bytes(raw)
    assert discover_mead(root).sequences[0].n_frames == 0


# ---------------------------------------------------------------------------- infant .npz/.npy/.pkl


def _generated_samples(path: str) -> None:
    from affectlab.data.infant import read_generated_samples

    read_generated_samples(path)


def _infact(path: str, kind: str) -> None:
    from affectlab.data.infant import read_infact, read_pose_dataset

    if kind == "pose_dataset":
        read_pose_dataset(path, num_classes=3)
    else:
        read_infact(path, kind)


@pytest.fixture(scope="module")
def infant_base(tmp_path_factory) -> dict[str, bytes]:
    from affectlab.constants.infant import CLASSES, LABEL_KEYS
    from affectlab.data.infant import GeneratedSamples, write_generated_samples

    rng = np.random.default_rng(0)
    d = tmp_path_factory.mktemp("infant")
    pose = [rng.normal(0, 0.2, (2, 24, 3)).astype(np.float32) for _ in range(2)]
    keypoint = [rng.normal(0, 0.2, (2, 17, 3)).astype(np.float32) for _ in range(2)]
    samples = GeneratedSamples(pose, keypoint, np.array([0, 1]), np.array([3, 3]), np.array([0.9, 0.8]), np.ones((2, 4)))
    write_generated_samples(d / "generated.npz", samples)
    original = {"pose": pose, "keypoint": keypoint, "y": np.array([0, 1]), "epoch_idx": np.array([3, 3])}
    np.save(d / "generated.npy", np.array(original, dtype=object), allow_pickle=True)  # the original's format
    clips = [
        {"pose": p[None], "keypoint": k[None], "frame_dir": f"D0{i}_clip", LABEL_KEYS["primitive"]: CLASSES["primitive"][i]}
        for i, (p, k) in enumerate(zip(pose, keypoint))
    ]
    annotations = [{"frame_dir": f"D0{i}_clip", "label": i, "keypoint": k[None]} for i, k in enumerate(keypoint)]
    return Samples({
        "generated.npz": (d / "generated.npz").read_bytes(),
        "generated.npy": (d / "generated.npy").read_bytes(),
        "primitive.pkl/2": pickle.dumps(clips, protocol=2),
        "primitive.pkl/4": pickle.dumps(clips, protocol=4),
        "pose_dataset.pkl/5": pickle.dumps({"split": {"train": ["D00_clip", "D01_clip"]}, "annotations": annotations}, protocol=5),
    })  # fmt: skip


@fuzz(100)
@given(data=st.data())
def test_infant_generated_samples(data, sandbox, infant_base, tmp_path_factory):
    from affectlab.data.infant import InfantDataError
    from affectlab.data.safe_pickle import UnsafePickleError

    name = data.draw(st.sampled_from(("generated.npz", "generated.npy")), label="file")
    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        (d / name).write_bytes(data.draw(mutated_bytes(infant_base[name]), label="bytes"))
        sandbox.check((InfantDataError, UnsafePickleError), _generated_samples, str(d / name))


@fuzz(100)
@given(data=st.data())
def test_infant_pickles(data, sandbox, infant_base, tmp_path_factory):
    from affectlab.data.infant import InfantDataError
    from affectlab.data.safe_pickle import UnsafePickleError

    name = data.draw(st.sampled_from(("primitive.pkl/2", "primitive.pkl/4", "pose_dataset.pkl/5")), label="file")
    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        (d / "clips.pkl").write_bytes(data.draw(mutated_bytes(infant_base[name]), label="bytes"))
        kind = "pose_dataset" if name.startswith("pose_dataset") else "primitive"
        sandbox.check((InfantDataError, UnsafePickleError), _infact, str(d / "clips.pkl"), kind)


def test_infant_corrupt_files_are_data_errors_naming_them(infant_base, tmp_path):
    """Found: an .npz whose first byte changed (``QK\\x03\\x04``) raised numpy's ValueError 'contains
    pickled data', and a pkl with a bad first opcode the unpickler's plain ValueError."""
    from affectlab.data.infant import InfantDataError, read_generated_samples, read_infact, read_pose_dataset

    npz = tmp_path / "generated.npz"
    npz.write_bytes(b"Q" + infant_base["generated.npz"][1:])
    with pytest.raises(InfantDataError, match="generated.npz: not a readable generated-samples file"):
        read_generated_samples(npz)
    npz.write_bytes(infant_base["generated.npz"][:300])
    with pytest.raises(InfantDataError, match="generated.npz"):
        read_generated_samples(npz)
    pkl = tmp_path / "clips.pkl"
    pkl.write_bytes(b"\x81" + infant_base["primitive.pkl/2"][1:])
    with pytest.raises(InfantDataError, match="clips.pkl: not a readable InfAct pkl"):
        read_infact(pkl, "primitive")
    pkl.write_bytes(infant_base["pose_dataset.pkl/5"][:-40])
    with pytest.raises(InfantDataError, match="clips.pkl: not a readable PoseDataset pickle"):
        read_pose_dataset(pkl)
    npy = tmp_path / "generated.npy"
    for header in ("{'descr': '|O', 'fortran_order': False, 'shape': (),\x00 }", "{'descr': '|O', 'fortran_order': False, 'shape': ("):
        npy.write_bytes(_npy_with_header(header))  # found: SyntaxError and tokenize.TokenError from numpy's header parser
        with pytest.raises(InfantDataError, match="generated.npy: not a readable generated-samples file"):
            read_generated_samples(npy)
    assert len(read_generated_samples(_write(tmp_path / "ok.npz", infant_base["generated.npz"]))) == 2


def _write(path: Path, raw: bytes) -> Path:
    path.write_bytes(raw)
    return path


# ---------------------------------------------------------------------------- pkl (restricted unpickler)


def _load_pickle(raw: bytes, body_model: bool) -> None:
    from affectlab.data.safe_pickle import load_pickle

    load_pickle(raw, body_model=body_model)


class _FakeCh:  # pickled under chumpy's names, the way SMPL/FLAME files hold their arrays
    def __init__(self, x):
        self.x = x


class _FakeSelect:
    def __init__(self, a, idxs, preferred_shape):
        self.a, self.idxs, self.preferred_shape = a, idxs, preferred_shape


@contextmanager
def _as_chumpy():
    """Pickle ``_FakeCh``/``_FakeSelect`` as ``chumpy.ch.Ch``/``chumpy.reordering.Select`` (no chumpy installed)."""
    modules = {"chumpy": types.ModuleType("chumpy"), "chumpy.ch": types.ModuleType("chumpy.ch"),
               "chumpy.reordering": types.ModuleType("chumpy.reordering")}  # fmt: skip
    saved = [(c, c.__module__, c.__qualname__) for c in (_FakeCh, _FakeSelect)]
    _FakeCh.__module__, _FakeCh.__qualname__ = "chumpy.ch", "Ch"
    _FakeSelect.__module__, _FakeSelect.__qualname__ = "chumpy.reordering", "Select"
    modules["chumpy.ch"].Ch, modules["chumpy.reordering"].Select = _FakeCh, _FakeSelect
    sys.modules.update(modules)
    try:
        yield
    finally:
        for name in modules:
            sys.modules.pop(name, None)
        for cls, module, qualname in saved:
            cls.__module__, cls.__qualname__ = module, qualname


@pytest.fixture(scope="module")
def pickle_base() -> Samples:
    import scipy.sparse

    data = {"pose": np.arange(12.0).reshape(3, 4).T, "labels": ["sitting", "standing"], "raw": b"\x00\x01",
            "tags": {1, 2}, "score": np.float32(0.5), "nested": [{"k": (1, 2.5, None)}]}  # fmt: skip
    out = Samples({f"data/{p}": (pickle.dumps(data, protocol=p), False) for p in (0, 2, 4, 5)})
    with _as_chumpy():
        ch = _FakeCh(np.arange(6.0).reshape(2, 3))
        body = {"v_template": ch, "J": _FakeSelect(ch, np.array([0, 2]), (2,)),
                "J_regressor": scipy.sparse.csc_matrix(np.eye(3))}  # fmt: skip
        out.update({f"body_model/{p}": (pickle.dumps(body, protocol=p), True) for p in (2, 4)})
    return out


@fuzz(150)
@given(data=st.data())
def test_restricted_unpickler(data, sandbox, pickle_base):
    from affectlab.data.safe_pickle import UnsafePickleError

    base, body_model = pickle_base[data.draw(st.sampled_from(sorted(pickle_base)), label="base")]
    raw = data.draw(mutated_bytes(base), label="bytes")
    sandbox.check((UnsafePickleError, ValueError), _load_pickle, raw, body_model)


_STUB_KEYS = {"chumpy.ch\nCh": ("x",), "chumpy.reordering\nSelect": ("a", "idxs", "preferred_shape"),
              "scipy.sparse._csc\ncsc_matrix": ("data", "indices", "indptr", "_shape", "format"),
              "scipy.sparse._csr\ncsr_matrix": ("data", "indices", "indptr", "_shape", "format")}  # fmt: skip
_STATE_VALUES = st.one_of(
    st.none(), st.integers(-3, 10), st.text(max_size=3), st.tuples(st.integers(-1, 4), st.integers(-1, 4)),
    st.lists(st.integers(-2, 6), max_size=5).map(np.array), st.lists(st.floats(allow_nan=True), max_size=4).map(np.array),
)  # fmt: skip


@st.composite
def body_model_pickles(draw) -> bytes:
    """A pickle of one chumpy/scipy object as SMPL/FLAME files hold them, its state drawn: keys
    missing, values of any kind (pickled as ``chumpy.ch.Ch``, the global renamed in the bytes)."""
    target = draw(st.sampled_from(sorted(_STUB_KEYS)), label="class")
    state = {key: draw(_STATE_VALUES, label=key) for key in _STUB_KEYS[target] if draw(st.booleans())}
    if "a" in state and draw(st.booleans()):
        state["a"] = _FakeCh(np.arange(6.0))
    obj = _FakeCh(None)
    obj.__dict__ = state
    with _as_chumpy():
        raw = pickle.dumps({"v_template": obj}, protocol=2)
    return raw.replace(b"cchumpy.ch\nCh\n", b"c" + target.encode() + b"\n", 1)


@fuzz(100)
@given(raw=body_model_pickles())
def test_restricted_unpickler_body_model_states(raw, sandbox):
    from affectlab.data.safe_pickle import UnsafePickleError

    sandbox.check((UnsafePickleError, ValueError), _load_pickle, raw, True)


def test_body_model_stub_without_its_array_is_a_value_error():
    """Found: a chumpy ``Ch`` whose state has no ``x`` (and a Select without ``idxs``, a sparse
    matrix without ``indptr``) raised KeyError from the stub resolution, outside the error handling."""
    from affectlab.data.safe_pickle import load_pickle

    with _as_chumpy():
        ch = _FakeCh(np.arange(6.0))
        ch.__dict__ = {"y": ch.x}
        raw = pickle.dumps({"v_template": ch}, protocol=2)
    with pytest.raises(ValueError, match="<bytes>: a chumpy or scipy object in the pickle is malformed \\(KeyError: 'x'\\)"):
        load_pickle(raw, body_model=True)


def test_protocol_2_empty_arrays_are_read_and_bytes_cannot_allocate():
    """Found by the body-model fuzzer: protocol 2 writes ``b""`` (an empty array's data) as a call
    of ``__builtin__.bytes``, which the reader refused as unsafe, so any protocol-2 data file holding
    an empty array could not be read; ``bytes(n)`` stays refused (it would allocate n bytes)."""
    from affectlab.data.safe_pickle import load_pickle

    empty = {"pose": np.zeros((0, 24, 3), np.float32), "raw": b""}
    out = load_pickle(pickle.dumps(empty, protocol=2))
    assert out["pose"].shape == (0, 24, 3) and out["pose"].dtype == np.float32 and out["raw"] == b""
    with pytest.raises(ValueError, match=r"bytes\(1000000000,\) refused"):
        load_pickle(b"\x80\x02c__builtin__\nbytes\nJ\x00\xca\x9a;\x85R.")


# ---------------------------------------------------------------------------- predictions.npz


def _read_predictions(directory: str) -> None:
    from affectlab.train.loop import read_predictions

    read_predictions(directory)


@pytest.fixture(scope="module")
def predictions_base() -> Samples:
    buffer = io.BytesIO()
    np.savez(buffer, **{"test/pred": np.arange(4.0), "test/target": np.ones(4), "train_eval/pred": np.zeros(2)})
    return Samples({"predictions.npz": buffer.getvalue()})


@fuzz(80)
@given(data=st.data())
def test_read_predictions(data, sandbox, predictions_base, tmp_path_factory):
    from affectlab.train.checkpoint import CheckpointError
    from affectlab.train.loop import PREDICTIONS_FILE

    with fresh_dir(tmp_path_factory.getbasetemp()) as d:
        (d / PREDICTIONS_FILE).write_bytes(data.draw(mutated_bytes(predictions_base["predictions.npz"]), label="bytes"))
        sandbox.check((CheckpointError,), _read_predictions, str(d))


def test_corrupt_predictions_are_checkpoint_errors(predictions_base, tmp_path):
    """Found: a predictions.npz whose first byte changed raised numpy's ValueError 'contains
    pickled data' (serving reads this file from any checkpoint it is pointed at); a plain .npy
    and an array name without a split were a TypeError and a ValueError from unpacking."""
    from affectlab.train.checkpoint import CheckpointError
    from affectlab.train.loop import PREDICTIONS_FILE, read_predictions

    path = tmp_path / PREDICTIONS_FILE
    raw = predictions_base["predictions.npz"]
    for bad, message in ((b"Q" + raw[1:], "not a readable predictions file"), (raw[: len(raw) // 2], "not a readable predictions file")):
        path.write_bytes(bad)
        with pytest.raises(CheckpointError, match=f"{PREDICTIONS_FILE}: {message}"):
            read_predictions(tmp_path)
    np.save(path.with_suffix(".npy"), np.zeros(3))
    path.with_suffix(".npy").replace(path)
    with pytest.raises(CheckpointError, match="holds a single array"):
        read_predictions(tmp_path)
    np.savez(path.with_suffix(""), pred=np.zeros(3))
    with pytest.raises(CheckpointError, match="array 'pred' is not named <split>/<name>"):
        read_predictions(tmp_path)
    path.write_bytes(raw)
    assert read_predictions(tmp_path)["test"]["pred"].tolist() == [0.0, 1.0, 2.0, 3.0]


# ---------------------------------------------------------------------------- images


def _decode_image(raw: bytes) -> None:
    from affectlab.serving.images import decode_image

    image = decode_image(raw, "image")
    assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3


@pytest.fixture(scope="module")
def image_base() -> Samples:
    from PIL import Image

    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (8, 6, 3), dtype=np.uint8))
    out = Samples()
    for fmt, image, kwargs in (
        ("PNG", rgb, {}),
        ("PNG", rgb.convert("P"), {"transparency": 0}),
        ("JPEG", rgb, {"exif": _exif_rotated()}),
        ("BMP", rgb, {}),
        ("GIF", rgb, {}),
        ("WEBP", rgb, {}),
        ("TIFF", rgb, {"compression": "tiff_lzw"}),
    ):
        buffer = io.BytesIO()
        image.save(buffer, format=fmt, **kwargs)
        out[f"{fmt}/{image.mode}"] = buffer.getvalue()
    return out


def _exif_rotated() -> bytes:
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90° to view
    return exif.tobytes()


@fuzz(210)
@given(data=st.data())
def test_images(data, sandbox, image_base):
    from affectlab.serving.layer import BadInput

    raw = data.draw(mutated_bytes(image_base[data.draw(st.sampled_from(sorted(image_base)), label="base")]), label="bytes")
    sandbox.check((BadInput,), _decode_image, raw)


# ---------------------------------------------------------------------------- request bodies


def _read_payload(headers: list[tuple[bytes, bytes]], body: bytes, max_bytes: int):
    """``read_payload`` on a real Starlette ``Request`` (no server: the ASGI scope and body)."""
    from starlette.requests import Request

    from affectlab.serving.layer import read_payload

    sent = False

    async def receive():
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": "POST", "path": "/v1/pain/predict", "headers": headers, "query_string": b""}
    return asyncio.run(read_payload(Request(scope, receive), max_bytes, "image", ("image/",)))


def _payload(headers: list[tuple[bytes, bytes]], body: bytes, max_bytes: int) -> None:
    """``read_payload``, then every ``Payload`` helper on every field."""
    from affectlab.serving.layer import BadInput

    payload = _read_payload(headers, body, max_bytes)
    for name in sorted(payload.names | {"image", "model_id", "reference"}, key=str):
        for helper in (payload.files, payload.file, payload.text, payload.flag):
            try:
                helper(name)
            except BadInput as error:
                if not 400 <= error.status < 500:
                    raise
    payload.expect(required=("image",), optional=("model_id", "reference", "flag"))
    payload.pop("model_id")


_BOUNDARY = "fuzzboundary7MA4YWxk"


@pytest.fixture(scope="module")
def request_base(image_base) -> Samples:
    png = image_base["PNG/RGB"]
    multipart = (
        f"--{_BOUNDARY}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"face.png\"\r\n"
        "Content-Type: image/png\r\n\r\n"
    ).encode() + png + (
        f"\r\n--{_BOUNDARY}\r\nContent-Disposition: form-data; name=\"model_id\"\r\n\r\nbest"
        f"\r\n--{_BOUNDARY}\r\nContent-Disposition: form-data; name=\"reference\"; filename=\"n.png\"\r\n\r\n"
    ).encode() + png + f"\r\n--{_BOUNDARY}--\r\n".encode()
    body = {"image": base64.b64encode(png).decode(), "reference": ["data:image/png;base64," + base64.b64encode(png).decode()],
            "model_id": "fold0", "flag": True}  # fmt: skip
    return Samples({"multipart": multipart, "json": json.dumps(body).encode()})


def _headers(content_type: bytes, length: bytes | None) -> list[tuple[bytes, bytes]]:
    headers = [(b"content-type", content_type)]
    return headers + ([(b"content-length", length)] if length is not None else [])


_CONTENT_LENGTHS = st.one_of(st.none(), st.integers(0, 10**7).map(lambda n: str(n).encode()),
                             st.binary(max_size=6), st.sampled_from((b"\xb2", b"1\xb9", b"-1", b"1e3", b" 12")))  # fmt: skip


@fuzz(150)
@given(data=st.data())
def test_multipart_bodies(data, sandbox, request_base):
    from affectlab.serving.layer import BadInput

    body = data.draw(mutated_bytes(request_base["multipart"]), label="body")
    content_type = f"multipart/form-data; boundary={_BOUNDARY}".encode()
    if data.draw(st.integers(0, 4), label="mutate header") == 0:
        content_type = data.draw(mutated_text(content_type.decode()), label="content-type")
    length = data.draw(_CONTENT_LENGTHS, label="content-length")
    max_bytes = data.draw(st.sampled_from((1 << 20, 2048)), label="max_bytes")
    sandbox.check((BadInput,), _payload, _headers(content_type, length), body, max_bytes)


@fuzz(150)
@given(data=st.data())
def test_json_bodies(data, sandbox, request_base):
    from affectlab.serving.layer import BadInput

    body = data.draw(mutated_text(request_base["json"].decode()), label="body")
    content_type = data.draw(st.sampled_from((b"application/json", b"application/json; charset=utf-8", b"APPLICATION/JSON")))
    sandbox.check((BadInput,), _payload, _headers(content_type, None), body, 1 << 20)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


@fuzz(100)
@given(
    value=st.one_of(_JSON, st.dictionaries(st.sampled_from(("image", "model_id", "reference", "flag", "")), _JSON, max_size=4)),
    content_type=st.one_of(st.sampled_from((b"application/json", b"image/png", b"text/plain", b"", b"multipart/form-data")),
                           st.binary(max_size=24)),  # fmt: skip
    length=_CONTENT_LENGTHS,
)
def test_json_values_and_headers(value, content_type, length, sandbox):
    from affectlab.serving.layer import BadInput

    body = json.dumps(value).encode()
    sandbox.check((BadInput,), _payload, _headers(content_type, length), body, 1 << 20)


_JSON_TYPE = (b"content-type", b"application/json")


@pytest.mark.parametrize(
    "headers, body, status, message",
    [
        ([(b"content-type", b"image/png"), (b"content-length", b"\xb2")], b"x" * (1 << 20) + b"x", 413, "exceeds the upload limit"),
        ([_JSON_TYPE], b"[" * 100_000, 400, "nested too deeply"),
        ([_JSON_TYPE], b'{"image": ' + b"1" * 5000 + b"}", 400, "not valid JSON"),
        ([_JSON_TYPE], b'{"image": "data:image/png;base64"}', 422, "data URL without data"),
    ],
    ids=["content-length-superscript-two", "json-nested-100000-deep", "json-int-5000-digits", "data-url-without-comma"],
)
def test_request_parsing_found_inputs_are_4xx(headers, body, status, message):
    """Found: a Content-Length of '²' (latin-1 0xB2, for which ``str.isdigit`` is true) raised
    ValueError from int(). Seen reading the same code: JSON nested 100000 deep raised
    RecursionError, an integer of 5000 digits Python's ValueError (not a JSONDecodeError) and a
    data URL without a comma IndexError: each was a 500."""
    from affectlab.serving.layer import BadInput

    with pytest.raises(BadInput, match=message) as raised:
        _read_payload(headers, body, 1 << 20).file("image")
    assert raised.value.status == status
