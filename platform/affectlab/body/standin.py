"""Tiny stand-in FLAME and SMPL models for tests and synthetic demos.

The real models are licence-gated. These are small, seeded, smplx-loadable files with
the real models' structure (joint counts, parents, blend-shape layouts, landmark
embedding, region masks), so the layers, metrics and renders built on them exercise
the same code paths:

- ``write_tiny_flame``: an egg-shaped head (~400 vertices) facing +z, y up, metres, with a
  mouth slit whose lower lip and chin are skinned to the jaw joint, so jaw opening opens
  the mouth; expression directions move the lips, mouth corners and brows.
- ``write_tiny_smpl``: 24 small blobs at roughly human SMPL joint positions, one-hot
  skinning, a ``J_regressor`` that returns the joint positions exactly, and the 21
  extra-vertex ids smplx's ``VertexJointSelector`` needs for a mesh this small.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy.optimize import nnls
from scipy.spatial import ConvexHull

from affectlab.body.convert import FLAME_FULL_DIRS, write_body_model

FLAME_PARENTS = np.array([-1, 0, 1, 1, 1])  # root, neck, jaw, left eye, right eye
FLAME_REGIONS_FILE = "FLAME_masks.npz"
SMPL_PARENTS = np.array([-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21])
# Approximate joint positions of SMPL's neutral template (metres, y up, facing +z, left = +x).
SMPL_JOINTS = np.array([
    [0.00, -0.22, 0.03], [0.07, -0.31, 0.02], [-0.07, -0.31, 0.02], [0.00, -0.10, 0.01],   # pelvis, hips, spine1
    [0.10, -0.68, 0.02], [-0.10, -0.68, 0.02], [0.00, 0.03, 0.02],                        # knees, spine2
    [0.09, -1.10, -0.03], [-0.09, -1.10, -0.04], [0.00, 0.09, 0.05],                      # ankles, spine3
    [0.12, -1.15, 0.10], [-0.12, -1.15, 0.10], [-0.01, 0.29, 0.01],                       # feet, neck
    [0.08, 0.21, 0.01], [-0.08, 0.21, 0.01], [0.01, 0.37, 0.06],                          # collars, head
    [0.17, 0.22, 0.01], [-0.17, 0.22, 0.01], [0.42, 0.20, -0.02], [-0.42, 0.20, -0.01],   # shoulders, elbows
    [0.68, 0.21, -0.01], [-0.68, 0.21, -0.01], [0.76, 0.21, -0.02], [-0.76, 0.20, -0.02],  # wrists, hands
])
# smplx VertexJointSelector keys -> (joint whose blob holds the vertex, direction from the joint).
SMPL_VERTEX_IDS = {
    "nose": (15, (0, 0, 1)), "reye": (15, (-1, 1, 2)), "leye": (15, (1, 1, 2)), "rear": (15, (-1, 0, 0)),
    "lear": (15, (1, 0, 0)), "LBigToe": (10, (0, 0, 1)), "LSmallToe": (10, (1, 0, 1)), "LHeel": (7, (0, -1, -1)),
    "RBigToe": (11, (0, 0, 1)), "RSmallToe": (11, (-1, 0, 1)), "RHeel": (8, (0, -1, -1)),
    **{f"l{tip}": (22, d) for tip, d in zip(("thumb", "index", "middle", "ring", "pinky"),
                                            ((0, 0, 1), (1, 0, 1), (1, 0, 0), (1, 0, -1), (0, -1, -1)))},
    **{f"r{tip}": (23, d) for tip, d in zip(("thumb", "index", "middle", "ring", "pinky"),
                                            ((0, 0, 1), (-1, 0, 1), (-1, 0, 0), (-1, 0, -1), (0, -1, -1)))},
}


def write_tiny_flame(
    dst_dir: str | Path, seed: int = 0, n_vertices: int = 400, n_shape: int = 300, n_expression: int = 100
) -> Path:
    """Write ``FLAME_NEUTRAL.npz``, ``flame_static_embedding.pkl`` and ``FLAME_masks.npz``.

    ``shapedirs`` always has FLAME's 300 + 100 slots (smplx honours other counts only
    then); the first ``n_shape`` shape and ``n_expression`` expression directions are
    non-zero, the rest zero. Returns ``dst_dir``.
    """
    arrays, embedding, regions = tiny_flame_arrays(seed, n_vertices, n_shape, n_expression)
    dst_dir = Path(dst_dir)
    write_body_model(arrays, dst_dir, "flame", embedding=embedding, source="tiny FLAME")
    np.savez(dst_dir / FLAME_REGIONS_FILE, **regions)
    return dst_dir


def write_tiny_smpl(dst_dir: str | Path, seed: int = 0, n_vertices: int = 144) -> Path:
    """Write ``SMPL_NEUTRAL.npz`` (with ``vertex_ids_names``/``vertex_ids_index``) and
    ``J_regressor_extra.npy`` (9, V). V = 24 * round(n_vertices / 24), 4..8 per joint.
    Returns ``dst_dir``."""
    arrays, extra, j_extra = tiny_smpl_arrays(seed, n_vertices)
    dst_dir = Path(dst_dir)
    write_body_model(arrays, dst_dir, "smpl", extra=extra, source="tiny SMPL")
    np.save(dst_dir / "J_regressor_extra.npy", j_extra)
    return dst_dir


def tiny_flame_arrays(seed: int = 0, n_vertices: int = 400, n_shape: int = 300, n_expression: int = 100):
    """The stand-in FLAME as (model arrays, landmark embedding, region index arrays)."""
    if not 0 <= n_shape <= 300 or not 0 <= n_expression <= 100:
        raise ValueError(f"n_shape must be in 0..300 and n_expression in 0..100, got {n_shape}, {n_expression}")
    if not 150 <= n_vertices <= 5000:
        raise ValueError(f"n_vertices must be in 150..5000, got {n_vertices}")
    rng = np.random.default_rng(seed)
    mesh = _egg_head(n_vertices)
    v, rows, cols, lower_lip = mesh["v"], mesh["row"], mesh["col"], mesh["lower_lip"]
    n = len(v)
    y_mouth, z_front = mesh["y_mouth"], v[:, 2]

    # Skinning: chin and lower lip follow the jaw, eyes their eye joints, the rest the neck.
    jaw = np.clip((y_mouth - v[:, 1]) / 0.015, 0, 1) * np.clip((z_front + 0.02) / 0.03, 0, 1)
    jaw[rows == mesh["mouth_row"]] = 0.0
    jaw[mesh["corners"]] = 0.5
    jaw[lower_lip] = 1.0
    eye_pos = np.array([[0.03, 0.025, 0.0], [-0.03, 0.025, 0.0]])
    eye_pos[:, 2] = 0.09 * np.sqrt(np.clip(1 - (eye_pos[:, 0] / 0.075) ** 2 - (eye_pos[:, 1] / 0.11) ** 2, 0, 1))
    weights = np.zeros((n, 5))
    weights[:, 2] = jaw
    for k, pos in enumerate(eye_pos):
        near = np.argsort(np.linalg.norm(v - pos, axis=1))[:3]
        weights[near, 3 + k] = 1.0 - weights[near, 2]
    weights[:, 0] = np.clip((v[:, 1] + 0.09) / -0.02, 0, 0.5) * (1 - weights[:, 2:].sum(1))
    weights[:, 1] = 1.0 - weights.sum(1)

    joints = np.array([[0, -0.08, -0.02], [0, -0.06, -0.02], [0, -0.035, -0.015], *(eye_pos - [0, 0, 0.015])])
    regressor = _convex_regressor(v, joints)

    # Blend shapes: smooth polynomial fields; expressions localised on the mouth and brows.
    basis = _smooth_basis(v)
    shapedirs = np.zeros((n, 3, FLAME_FULL_DIRS))
    for k in range(n_shape):
        shapedirs[:, :, k] = basis @ rng.normal(0, 0.004 / np.sqrt(k + 1), (basis.shape[1], 3))
    mouth = np.exp(-np.sum((v - [0, y_mouth, 0.08]) ** 2, 1) / (2 * 0.025**2))
    brow = np.exp(-np.sum((v - [0, 0.05, 0.07]) ** 2, 1) / (2 * 0.03**2))
    below = mouth * (v[:, 1] <= y_mouth) + (np.isin(np.arange(n), lower_lip))
    designed = [
        below[:, None] * [0, -0.004, 0],                       # lower lip down
        mouth[:, None] * np.c_[np.sign(v[:, 0]) * 0.003, 0 * v[:, :2]],  # mouth corners wider
        brow[:, None] * [0, 0.003, 0],                         # brows up
        mouth[:, None] * [0, 0, 0.003],                        # lips forward (pucker)
    ]
    for k in range(n_expression):
        if k < len(designed):
            field = designed[k]
        else:
            field = (mouth + brow)[:, None] * (basis @ rng.normal(0, 0.002 / np.sqrt(k - 2), (basis.shape[1], 3)))
        shapedirs[:, :, 300 + k] = field
    posedirs = np.zeros((n, 3, 36))
    posedirs[:, :, 9:18] = rng.normal(0, 1e-3, (n, 3, 9)) * jaw[:, None, None]  # jaw-pose correctives

    arrays = {
        "v_template": v, "shapedirs": shapedirs, "posedirs": posedirs, "J_regressor": regressor,
        "weights": weights, "kintree_table": np.stack([FLAME_PARENTS, np.arange(5)]), "f": mesh["f"],
    }
    front_faces = np.flatnonzero(v[mesh["f"]].mean(1)[:, 2] > 0.05)
    embedding = {
        "lmk_face_idx": np.sort(rng.choice(front_faces, 51, replace=len(front_faces) < 51)),
        "lmk_b_coords": rng.dirichlet(np.ones(3), 51),
    }
    lip_rows = np.isin(rows, mesh["mouth_row"] + np.array([-1, 0, 1]))
    lips = np.flatnonzero((lip_rows & (np.abs(cols) <= mesh["mouth_half_cols"] + 1)) | np.isin(np.arange(n), lower_lip))
    regions = {
        "lips": lips,
        "upper_face": np.flatnonzero((v[:, 1] > 0.01) & (z_front > 0.02)),
        "face": np.flatnonzero(z_front > 0.02),
    }
    return arrays, embedding, regions


def tiny_smpl_arrays(seed: int = 0, n_vertices: int = 144):
    """The stand-in SMPL as (model arrays, extra vertex-id arrays, J_regressor_extra)."""
    per_joint = int(round(n_vertices / 24))
    if not 4 <= per_joint <= 8:
        raise ValueError(f"n_vertices must give 4..8 vertices per joint (96..192), got {n_vertices}")
    rng = np.random.default_rng(seed)
    blob = _sphere_points(per_joint) * 0.03
    blob -= blob.mean(0)  # the blob's mean is its joint: J_regressor rows average the blob
    v = (SMPL_JOINTS[:, None, :] + blob[None]).reshape(-1, 3)
    hull = ConvexHull(blob).simplices
    faces = np.concatenate([hull + j * per_joint for j in range(24)])
    owner = np.repeat(np.arange(24), per_joint)
    weights = np.eye(24)[owner]
    regressor = weights.T / per_joint

    centred = v - SMPL_JOINTS[0]
    basis = _smooth_basis(v / 0.8)
    shapedirs = np.zeros((len(v), 3, 10))
    shapedirs[:, :, 0] = 0.05 * centred  # size
    shapedirs[:, :, 1] = 0.05 * centred * [1, 0, 0]  # breadth
    for k in range(2, 10):
        shapedirs[:, :, k] = basis @ rng.normal(0, 0.01 / k, (basis.shape[1], 3))

    names = list(SMPL_VERTEX_IDS)
    index = []
    for name in names:
        joint, direction = SMPL_VERTEX_IDS[name]
        d = np.asarray(direction, float) / np.linalg.norm(direction)
        local = np.arange(joint * per_joint, (joint + 1) * per_joint)
        index.append(local[np.argmax(blob @ d)])
    bones = [(1, 4), (2, 5), (4, 7), (5, 8), (16, 18), (17, 19), (18, 20), (19, 21), (12, 15)]
    j_extra = np.zeros((len(bones), len(v)))
    for row, (a, b) in enumerate(bones):  # bone midpoints
        j_extra[row] = 0.5 * (regressor[a] + regressor[b])
    arrays = {
        "v_template": v, "shapedirs": shapedirs, "posedirs": np.zeros((len(v), 3, 207)), "J_regressor": regressor,
        "weights": weights, "kintree_table": np.stack([SMPL_PARENTS, np.arange(24)]), "f": faces,
    }
    extra = {"vertex_ids_names": np.array(names), "vertex_ids_index": np.array(index, dtype=np.int64)}
    return arrays, extra, j_extra


def _egg_head(n_vertices: int) -> dict:
    """A latitude/longitude ellipsoid head, open at the neck, with a mouth slit.

    Column 0 faces +z. Along the mouth row the interior mouth columns have a second,
    lower-lip copy of their vertex; faces below the row use the copy, so the lips part
    when the lower lip moves. Corners stay shared.
    """
    n_rows = max(8, int(round(np.sqrt(n_vertices / 1.5))))
    n_cols = 2 * max(6, int(round(n_vertices / n_rows / 2)))
    lat = np.linspace(-1.2, 1.35, n_rows)
    lat_mouth = np.arcsin(-0.05 / 0.11)
    mouth_row = int(np.argmin(np.abs(lat - lat_mouth)))
    lon = 2 * np.pi * np.arange(n_cols) / n_cols
    cols_signed = np.where(np.arange(n_cols) <= n_cols // 2, np.arange(n_cols), np.arange(n_cols) - n_cols)
    ii, jj = np.meshgrid(np.arange(n_rows), np.arange(n_cols), indexing="ij")
    grid = np.stack([
        0.075 * np.cos(lat[ii]) * np.sin(lon[jj]),
        0.11 * np.sin(lat[ii]),
        0.09 * np.cos(lat[ii]) * np.cos(lon[jj]),
    ], -1).reshape(-1, 3)
    idx = np.arange(n_rows * n_cols).reshape(n_rows, n_cols)
    top = len(grid)
    mouth_half_cols = max(1, int(round(0.45 / (2 * np.pi / n_cols))) - 1)
    interior = [j % n_cols for j in range(-mouth_half_cols, mouth_half_cols + 1)]
    corners = [idx[mouth_row, (mouth_half_cols + 1) % n_cols], idx[mouth_row, -(mouth_half_cols + 1) % n_cols]]
    lower_lip = top + 1 + np.arange(len(interior))
    below = idx.copy()
    below[mouth_row, interior] = lower_lip  # faces under the mouth row see the lower-lip copies
    v = np.concatenate([grid, [[0, 0.11 * np.sin(lat[-1]) + 0.005, 0]], grid[idx[mouth_row, interior]]])

    faces = []
    for i in range(n_rows - 1):  # band i lies between row i and the row above it
        upper = below if i + 1 == mouth_row else idx
        for j in range(n_cols):
            k = (j + 1) % n_cols
            a, b, c, d = idx[i, j], idx[i, k], upper[i + 1, k], upper[i + 1, j]
            faces += [[a, b, c], [a, c, d]]
    faces += [[idx[-1, j], idx[-1, (j + 1) % n_cols], top] for j in range(n_cols)]
    row = np.concatenate([ii.ravel(), [n_rows], np.full(len(interior), mouth_row)])
    col = np.concatenate([cols_signed[jj.ravel()], [0], cols_signed[interior]])
    return {
        "v": v, "f": np.asarray(faces), "row": row, "col": col, "mouth_row": mouth_row,
        "mouth_half_cols": mouth_half_cols, "lower_lip": lower_lip, "corners": np.asarray(corners),
        "y_mouth": float(0.11 * np.sin(lat[mouth_row])),
    }


def _smooth_basis(v: np.ndarray) -> np.ndarray:
    """Monomials of the (scaled) coordinates up to degree 3: smooth displacement fields."""
    x, y, z = (v / 0.1).T
    terms = [np.ones_like(x), x, y, z, x * x, y * y, z * z, x * y, x * z, y * z,
             x**3, y**3, z**3, x * x * y, x * y * y, y * y * z, y * z * z, x * x * z, x * z * z, x * y * z]
    return np.stack(terms, 1)


def _convex_regressor(v: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Non-negative rows summing to one whose vertex averages hit ``targets`` (inside the hull)."""
    rows = []
    for target in targets:
        a = np.vstack([v.T, 100.0 * np.ones(len(v))])
        w, _ = nnls(a, np.append(target, 100.0))
        rows.append(w / w.sum())
    return np.asarray(rows)


def _sphere_points(n: int) -> np.ndarray:
    """``n`` well-spread unit vectors (Fibonacci sphere), deterministic."""
    k = np.arange(n) + 0.5
    polar = np.arccos(1 - 2 * k / n)
    azimuth = np.pi * (1 + 5**0.5) * k
    return np.stack([np.cos(azimuth) * np.sin(polar), np.sin(azimuth) * np.sin(polar), np.cos(polar)], 1)
