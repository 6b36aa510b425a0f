"""smplx layers for FLAME and SMPL/SMIL built from converted (``.npz``) model files.

- ``flame_layer`` builds ``smplx.FLAME`` with the coefficient counts asked for (smplx's
  defaults are only 10 shape / 10 expression) and checks smplx honoured them.
- ``flame_vertices`` evaluates it the way ProbTalk3D's evaluation does: zero shape,
  neck, eyes and translation unless given, so any batch size works.
- ``smpl_layer`` builds ``smplx.SMPLLayer`` (rotation matrices in) through its
  ``data_struct`` argument, so neither smplx nor we ever unpickle the model.
- ``smpl_joints`` runs it and returns the 24 SMPL joints (or all 45).

Before smplx opens a FLAME directory (it reads the ``.npz`` with ``allow_pickle=True``
and ``flame_static_embedding.pkl`` with plain ``pickle.load``), both files are read here
first with pickling refused and through the restricted unpickler, so a directory holding
anything but numeric arrays is rejected before smplx touches it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import smplx
import torch
from smplx.utils import Struct

from affectlab.body.convert import (
    EMBEDDING_FILE, MODEL_KEYS, load_body_model, model_filename, validate_body_model, validate_embedding,
)
from affectlab.body.standin import FLAME_REGIONS_FILE
from affectlab.data.safe_pickle import load_pickle

SMPL_FULL_VERTICES = 6890  # smplx's default extra-vertex ids (SMPL-H) assume this topology
JOINT_SETS = {"smpl": 24, "all": None}


def flame_layer(
    model_dir: str | Path, n_shape: int = 300, n_expression: int = 100, batch_size: int = 1, gender: str = "neutral"
) -> smplx.FLAME:
    """``smplx.FLAME`` from ``model_dir`` (``FLAME_<GENDER>.npz`` + ``flame_static_embedding.pkl``)."""
    model_dir = Path(model_dir).expanduser().resolve()
    model_path = model_dir / model_filename("flame", gender)
    model = load_body_model(model_path)  # validates; refuses object arrays
    embedding_path = model_dir / EMBEDDING_FILE
    if not embedding_path.is_file():
        raise FileNotFoundError(f"{embedding_path}: FLAME landmark embedding not found (smplx.FLAME opens it)")
    embedding = load_pickle(embedding_path)  # numpy arrays only, before smplx's plain pickle.load
    if not isinstance(embedding, dict):
        raise ValueError(f"{embedding_path}: expected a dict of arrays, got {type(embedding).__name__}")
    validate_embedding(embedding, len(model["f"]), str(embedding_path))
    layer = smplx.FLAME(
        model_path=str(model_dir), gender=gender, ext="npz", num_betas=n_shape, num_expression_coeffs=n_expression,
        batch_size=batch_size, use_face_contour=False,
    )
    if layer.num_betas != n_shape or layer.num_expression_coeffs != n_expression:
        raise ValueError(
            f"{model_path}: asked for {n_shape} shape / {n_expression} expression coefficients, smplx built "
            f"{layer.num_betas} / {layer.num_expression_coeffs}: shapedirs has {model['shapedirs'].shape[2]} "
            "directions (FLAME has 300 + 100; with fewer smplx uses 10 + 10)"
        )
    return layer.eval()


def flame_vertices(
    layer: smplx.FLAME,
    expression: torch.Tensor,
    jaw_pose: torch.Tensor,
    shape: torch.Tensor | None = None,
    global_orient: torch.Tensor | None = None,
) -> torch.Tensor:
    """Vertices (B, V, 3) for expression (B, n_expression) and jaw axis-angle (B, 3).

    Shape, global orientation, neck, eyes and translation are zero unless given.
    """
    ref = layer.shapedirs
    expression = torch.as_tensor(expression, dtype=ref.dtype, device=ref.device)
    jaw_pose = torch.as_tensor(jaw_pose, dtype=ref.dtype, device=ref.device)
    n_expr = layer.num_expression_coeffs
    if expression.ndim != 2 or expression.shape[1] != n_expr:
        raise ValueError(f"expression must be (B, {n_expr}), got {tuple(expression.shape)}")
    batch = expression.shape[0]
    if jaw_pose.shape != (batch, 3):
        raise ValueError(f"jaw_pose must be (B={batch}, 3) axis-angle, got {tuple(jaw_pose.shape)}")
    zeros3 = ref.new_zeros(batch, 3)
    if shape is None:
        shape = ref.new_zeros(batch, layer.num_betas)
    shape = torch.as_tensor(shape, dtype=ref.dtype, device=ref.device)
    if shape.shape != (batch, layer.num_betas):
        raise ValueError(f"shape must be (B={batch}, {layer.num_betas}), got {tuple(shape.shape)}")
    if global_orient is None:
        global_orient = zeros3
    global_orient = torch.as_tensor(global_orient, dtype=ref.dtype, device=ref.device)
    if global_orient.shape != (batch, 3):
        raise ValueError(f"global_orient must be (B={batch}, 3) axis-angle, got {tuple(global_orient.shape)}")
    out = layer(
        betas=shape, expression=expression, jaw_pose=jaw_pose, global_orient=global_orient,
        neck_pose=zeros3, leye_pose=zeros3, reye_pose=zeros3, transl=zeros3,
    )
    return out.vertices


def flame_regions(model_dir: str | Path) -> dict[str, np.ndarray]:
    """Vertex-index regions (``lips``, ``upper_face``, ...) from ``FLAME_masks.npz`` or
    the released ``FLAME_masks.pkl`` (read through the restricted unpickler)."""
    model_dir = Path(model_dir)
    npz, pkl = model_dir / FLAME_REGIONS_FILE, model_dir / "FLAME_masks.pkl"
    if npz.is_file():
        with np.load(npz, allow_pickle=False) as data:
            regions = {key: data[key] for key in data.files}
    elif pkl.is_file():
        regions = load_pickle(pkl)
        if not isinstance(regions, dict):
            raise ValueError(f"{pkl}: expected a dict of vertex-index arrays, got {type(regions).__name__}")
    else:
        raise FileNotFoundError(f"{model_dir}: no {FLAME_REGIONS_FILE} or FLAME_masks.pkl")
    return {str(key): np.asarray(value, dtype=np.int64) for key, value in regions.items()}


def smpl_layer(
    model_path_or_dir: str | Path, num_betas: int = 10, gender: str = "neutral", vertex_ids: dict | None = None
) -> smplx.SMPLLayer:
    """``smplx.SMPLLayer`` from a converted ``.npz`` (a directory means ``SMPL_<GENDER>.npz``)
    or straight from a released ``.pkl`` (SMPL or ``smil_web.pkl``, restricted unpickler).

    A mesh with other than 6890 vertices needs the 21 extra-vertex ids smplx selects
    (``vertex_ids``, or ``vertex_ids_names``/``vertex_ids_index`` arrays in the file).
    """
    path = Path(model_path_or_dir).expanduser().resolve()
    if path.is_dir():
        path = path / model_filename("smpl", gender)
    if path.suffix == ".pkl":
        if not path.is_file():
            raise FileNotFoundError(f"{path}: body-model file not found")
        data = load_pickle(path, body_model=True)
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a pickled dict, got {type(data).__name__}")
        model = validate_body_model(data, "smpl", str(path))
    else:
        model = load_body_model(path)
    if vertex_ids is None and "vertex_ids_names" in model:
        vertex_ids = dict(zip(model["vertex_ids_names"].tolist(), model["vertex_ids_index"].tolist()))
    n_verts = len(model["v_template"])
    if vertex_ids is None and n_verts != SMPL_FULL_VERTICES:
        raise ValueError(
            f"{path}: {n_verts} vertices, not SMPL's {SMPL_FULL_VERTICES}: pass vertex_ids (the 21 keys smplx's "
            "VertexJointSelector reads) or store vertex_ids_names/vertex_ids_index in the file"
        )
    if vertex_ids is not None:
        bad = {k: i for k, i in vertex_ids.items() if not 0 <= int(i) < n_verts}
        if bad:
            raise ValueError(f"{path}: vertex_ids outside [0, {n_verts}): {bad}")
    fields = {key: model[key] for key in MODEL_KEYS}
    return smplx.SMPLLayer(
        model_path=str(path), data_struct=Struct(**fields), num_betas=num_betas, gender=gender, vertex_ids=vertex_ids
    ).eval()


def smpl_joints(
    layer: smplx.SMPLLayer,
    global_orient: torch.Tensor,
    body_pose: torch.Tensor,
    betas: torch.Tensor | None = None,
    joint_set: str = "smpl",
) -> torch.Tensor:
    """Joint positions (N, 24, 3) (``joint_set='all'``: 24 + 21 vertex joints = 45) for
    rotation matrices ``global_orient`` (N, 1, 3, 3) and ``body_pose`` (N, 23, 3, 3).
    Betas are zero unless given. No root subtraction: callers decide."""
    if joint_set not in JOINT_SETS:
        raise ValueError(f"joint_set must be one of {sorted(JOINT_SETS)}, got {joint_set!r}")
    ref = layer.shapedirs
    global_orient = torch.as_tensor(global_orient, dtype=ref.dtype, device=ref.device)
    body_pose = torch.as_tensor(body_pose, dtype=ref.dtype, device=ref.device)
    if global_orient.ndim != 4 or global_orient.shape[1:] != (1, 3, 3):
        raise ValueError(f"global_orient must be (N, 1, 3, 3) rotation matrices, got {tuple(global_orient.shape)}")
    n = global_orient.shape[0]
    if body_pose.shape != (n, 23, 3, 3):
        raise ValueError(f"body_pose must be (N={n}, 23, 3, 3) rotation matrices, got {tuple(body_pose.shape)}")
    if betas is None:
        betas = ref.new_zeros(n, layer.num_betas)
    betas = torch.as_tensor(betas, dtype=ref.dtype, device=ref.device)
    if betas.shape != (n, layer.num_betas):
        raise ValueError(f"betas must be (N={n}, {layer.num_betas}), got {tuple(betas.shape)}")
    joints = layer(global_orient=global_orient, body_pose=body_pose, betas=betas).joints
    count = JOINT_SETS[joint_set]
    return joints if count is None else joints[:, :count]
