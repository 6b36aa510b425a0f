"""Chumpy-free conversion of FLAME / SMPL / SMIL model pickles into files smplx loads.

The released model files are py2 pickles holding chumpy objects and a scipy sparse
``J_regressor``; reading them with ``pickle.load`` needs chumpy (dead on Python >= 3.11
and numpy >= 1.24) and runs whatever the file names. Here they are read once through
the restricted unpickler (``affectlab.data.safe_pickle.load_pickle``), checked key by key
against what smplx 0.1.28 reads, and written as a plain ``.npz`` of numeric arrays:

- FLAME -> ``FLAME_<GENDER>.npz`` plus a clean ``flame_static_embedding.pkl`` (smplx.FLAME
  opens both by name; ``ext='npz'``);
- SMPL / SMIL -> ``SMPL_<GENDER>.npz`` (built with ``smplx.SMPLLayer(data_struct=...)``
  by ``affectlab.body.models.smpl_layer``; SMIL's extra keys are dropped).
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from affectlab.data.safe_pickle import load_pickle

MODEL_KEYS = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
N_JOINTS = {"flame": 5, "smpl": 24, "smil": 24}
GENDERS = ("neutral", "female", "male")
EMBEDDING_FILE = "flame_static_embedding.pkl"
EMBEDDING_KEYS = ("lmk_face_idx", "lmk_b_coords")
# smplx.FLAME honours num_betas / num_expression_coeffs only when shapedirs has 300 + 100
# directions; with fewer it silently uses 10 shape (0:10) + 10 expression (10:20).
FLAME_FULL_DIRS = 400
FLAME_MIN_DIRS = 20
SMPL_MIN_DIRS = 10  # smplx slices shapedirs[..., :10] and builds 10 betas: fewer breaks blend_shapes


def model_filename(kind: str, gender: str = "neutral") -> str:
    """The file name smplx (and ``affectlab.body.models``) look for: ``FLAME_NEUTRAL.npz`` ..."""
    kind, gender = _check_kind(kind), _check_gender(gender)
    return f"{'FLAME' if kind == 'flame' else 'SMPL'}_{gender.upper()}.npz"


def validate_body_model(arrays: Mapping[str, Any], kind: str, source: str = "<arrays>") -> dict[str, np.ndarray]:
    """Check the keys and shapes smplx reads and return them as dense numpy arrays.

    Floats become float32 (smplx computes in float32), ``kintree_table`` int64 with the
    root's parent as -1, ``f`` int64. Raises ``ValueError`` naming ``source`` and the key.
    """
    kind = _check_kind(kind)
    missing = [key for key in MODEL_KEYS if key not in arrays]
    if missing:
        raise ValueError(f"{source}: missing body-model key(s) {missing}; a {kind} model needs {list(MODEL_KEYS)}")
    out = {key: _dense(arrays[key], key, source) for key in MODEL_KEYS}
    n_joints = N_JOINTS[kind]

    v_template = _float(out["v_template"], "v_template", source)
    if v_template.ndim != 2 or v_template.shape[1] != 3:
        raise ValueError(f"{source}: v_template must be (V, 3), got {v_template.shape}")
    n_verts = v_template.shape[0]

    shapedirs = _float(out["shapedirs"], "shapedirs", source)
    if shapedirs.ndim != 3 or shapedirs.shape[:2] != (n_verts, 3):
        raise ValueError(f"{source}: shapedirs must be (V={n_verts}, 3, K), got {shapedirs.shape}")
    n_dirs = shapedirs.shape[2]
    if kind == "flame" and n_dirs < FLAME_MIN_DIRS:
        raise ValueError(
            f"{source}: shapedirs has K={n_dirs} directions; smplx.FLAME needs K >= {FLAME_MIN_DIRS} "
            f"(10 shape + 10 expression) and honours other counts only with K = {FLAME_FULL_DIRS} (300 + 100)"
        )
    if kind != "flame" and n_dirs < SMPL_MIN_DIRS:
        raise ValueError(f"{source}: shapedirs has K={n_dirs} directions; smplx.SMPL fails with K < {SMPL_MIN_DIRS}")

    posedirs = _float(out["posedirs"], "posedirs", source)
    n_pose = 9 * (n_joints - 1)
    if posedirs.shape != (n_verts, 3, n_pose):
        raise ValueError(
            f"{source}: posedirs must be (V={n_verts}, 3, {n_pose}) = 9 x {n_joints - 1} joints, got {posedirs.shape}"
        )

    j_regressor = _float(out["J_regressor"], "J_regressor", source)
    if j_regressor.shape != (n_joints, n_verts):
        raise ValueError(f"{source}: J_regressor must be ({n_joints}, V={n_verts}), got {j_regressor.shape}")

    weights = _float(out["weights"], "weights", source)
    if weights.shape != (n_verts, n_joints):
        raise ValueError(f"{source}: weights must be (V={n_verts}, {n_joints}), got {weights.shape}")

    kintree = np.asarray(out["kintree_table"])
    if kintree.ndim != 2 or kintree.shape != (2, n_joints) or not np.issubdtype(kintree.dtype, np.number):
        raise ValueError(
            f"{source}: kintree_table must be (2, {n_joints}) integers, got {kintree.shape} {kintree.dtype}"
        )
    parents = kintree.astype(np.int64)  # uint32 4294967295 marks the root in the real files
    parents[0, 0] = -1
    bad = [j for j in range(1, n_joints) if not 0 <= parents[0, j] < j]
    if bad:
        raise ValueError(
            f"{source}: kintree_table row 0 (parents) must name an earlier joint for every joint but the "
            f"root; joints {bad} have parents {parents[0, bad].tolist()}"
        )

    faces = np.asarray(out["f"])
    if faces.ndim != 2 or faces.shape[1] != 3 or not np.issubdtype(faces.dtype, np.integer):
        raise ValueError(f"{source}: f must be (F, 3) integers, got {faces.shape} {faces.dtype}")
    if faces.size and (faces.min() < 0 or faces.max() >= n_verts):
        raise ValueError(f"{source}: f indexes vertices outside [0, {n_verts}): range {faces.min()}..{faces.max()}")

    return {
        "v_template": v_template,
        "shapedirs": shapedirs,
        "posedirs": posedirs,
        "J_regressor": j_regressor,
        "weights": weights,
        "kintree_table": parents,
        "f": faces.astype(np.int64),
    }


def validate_embedding(
    embedding: Mapping[str, Any], n_faces: int, source: str = "<embedding>"
) -> dict[str, np.ndarray]:
    """Check a FLAME landmark embedding (``lmk_face_idx`` (L,), ``lmk_b_coords`` (L, 3))."""
    missing = [key for key in EMBEDDING_KEYS if key not in embedding]
    if missing:
        raise ValueError(f"{source}: missing landmark-embedding key(s) {missing}; expected {list(EMBEDDING_KEYS)}")
    face_idx = np.asarray(embedding["lmk_face_idx"])
    coords = _float(np.asarray(embedding["lmk_b_coords"]), "lmk_b_coords", source)
    if face_idx.ndim != 1 or not np.issubdtype(face_idx.dtype, np.integer):
        raise ValueError(f"{source}: lmk_face_idx must be (L,) integers, got {face_idx.shape} {face_idx.dtype}")
    if coords.shape != (face_idx.shape[0], 3):
        raise ValueError(f"{source}: lmk_b_coords must be (L={face_idx.shape[0]}, 3), got {coords.shape}")
    if face_idx.size and (face_idx.min() < 0 or face_idx.max() >= n_faces):
        raise ValueError(f"{source}: lmk_face_idx indexes faces outside [0, {n_faces})")
    return {"lmk_face_idx": face_idx.astype(np.int64), "lmk_b_coords": coords}


def write_body_model(
    arrays: Mapping[str, Any],
    dst_dir: str | Path,
    kind: str,
    *,
    gender: str = "neutral",
    embedding: Mapping[str, Any] | None = None,
    extra: Mapping[str, np.ndarray] | None = None,
    source: str = "<arrays>",
) -> Path:
    """Validate ``arrays`` and write the smplx-loadable model file; return its path.

    FLAME also needs ``embedding`` (written as ``flame_static_embedding.pkl``). ``extra``
    numeric arrays are stored beside the model keys (smplx ignores them). Files are
    written to a temporary name and renamed, so a failure leaves nothing half-written.
    """
    kind = _check_kind(kind)
    model = validate_body_model(arrays, kind, source)
    clean_embedding = None
    if kind == "flame":
        if embedding is None:
            raise ValueError(
                f"{source}: a FLAME model needs its landmark embedding ({EMBEDDING_FILE}); smplx.FLAME opens it"
            )
        clean_embedding = validate_embedding(embedding, len(model["f"]), source)
    for key, value in (extra or {}).items():
        value = np.asarray(value)
        if key in model or value.dtype.kind not in "biufU":
            raise ValueError(f"{source}: extra key {key!r} must be a new numeric or string array, got {value.dtype}")
        model[key] = value

    dst_dir = Path(dst_dir)
    dst_dir.mkdir(parents=True, exist_ok=True)
    path = dst_dir / model_filename(kind, gender)
    _atomic(path, lambda f: np.savez_compressed(f, **model))
    if clean_embedding is not None:
        # smplx.FLAME reads this file with plain pickle.load: it holds only numeric arrays we wrote.
        _atomic(dst_dir / EMBEDDING_FILE, lambda f: pickle.dump(clean_embedding, f, protocol=4))
    return path


def convert_body_model(
    src: str | Path,
    dst_dir: str | Path,
    kind: str,
    *,
    gender: str | None = None,
    embedding: str | Path | None = None,
) -> Path:
    """Convert a released model pickle (chumpy objects inside) to a file smplx loads.

    ``kind``: ``flame`` (``generic_model.pkl``, ``female_model.pkl``, ``male_model.pkl``),
    ``smpl`` or ``smil`` (``smil_web.pkl``). ``gender`` defaults to the one the file name
    says (``female``/``male``/``_f_``/``_m_``), else neutral. For FLAME, ``embedding`` is
    the user's ``flame_static_embedding.pkl`` (default: beside ``src``), read through the
    restricted unpickler and re-written with numeric arrays only. Returns the model path.
    """
    src = Path(src).expanduser().resolve()
    kind = _check_kind(kind)
    if not src.is_file():
        raise FileNotFoundError(f"{src}: body-model file not found")
    gender = _check_gender(gender) if gender is not None else _gender_from_name(src.name)
    emb = None
    if kind == "flame":
        emb_path = Path(embedding).expanduser().resolve() if embedding is not None else src.parent / EMBEDDING_FILE
        if not emb_path.is_file():
            raise FileNotFoundError(
                f"{emb_path}: FLAME landmark embedding not found; smplx.FLAME always opens {EMBEDDING_FILE} "
                "(from RingNet / FLAME_PyTorch): pass embedding=PATH"
            )
        emb = _read_mapping(emb_path, body_model=False)
    data = _read_mapping(src, body_model=True)
    return write_body_model(data, dst_dir, kind, gender=gender, embedding=emb, source=str(src))


def load_body_model(path: str | Path) -> dict[str, np.ndarray]:
    """Read a converted ``.npz`` model (never unpickles) and re-validate it for its kind."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: body-model file not found")
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except ValueError as exc:  # object arrays need pickle: refuse
        raise ValueError(f"{path}: not a plain numeric .npz ({exc})") from None
    kind = "flame" if path.name.upper().startswith("FLAME") else "smpl"
    model = validate_body_model(arrays, kind, str(path))
    return {**arrays, **model}


def _read_mapping(path: Path, *, body_model: bool) -> dict:
    data = load_pickle(path, body_model=body_model)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a pickled dict, got {type(data).__name__}")
    return data


def _dense(value: Any, key: str, source: str) -> np.ndarray:
    if hasattr(value, "toarray"):  # scipy sparse (J_regressor)
        value = value.toarray()
    array = np.asarray(value)
    if array.dtype == object:
        raise ValueError(f"{source}: {key} is not a numeric array (dtype object)")
    return array


def _float(array: np.ndarray, key: str, source: str) -> np.ndarray:
    if not np.issubdtype(array.dtype, np.number):
        raise ValueError(f"{source}: {key} must be numeric, got dtype {array.dtype}")
    array = array.astype(np.float32)
    if not np.isfinite(array).all():
        raise ValueError(f"{source}: {key} contains NaN or infinite values")
    return array


def _check_kind(kind: str) -> str:
    if kind not in N_JOINTS:
        raise ValueError(f"unknown body-model kind {kind!r}; expected one of {sorted(N_JOINTS)}")
    return kind


def _check_gender(gender: str) -> str:
    if gender.lower() not in GENDERS:
        raise ValueError(f"unknown gender {gender!r}; expected one of {list(GENDERS)}")
    return gender.lower()


def _gender_from_name(name: str) -> str:
    name = name.lower()
    if "female" in name or "_f_" in name:
        return "female"
    if "male" in name or "_m_" in name:
        return "male"
    return "neutral"


def _atomic(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
