"""affectlab.body: chumpy-style pickles convert and load in smplx, refused pickles never run,
FLAME coefficient counts are honoured, the stand-ins behave like their models, and the
rotation convention is ACTOR's (rows)."""

import contextlib
import math
import os
import pickle
import sys
import types

import numpy as np
import pytest
import scipy.sparse
import smplx
import torch
from smplx.lbs import lbs

from affectlab.body import rotations
from affectlab.body.convert import convert_body_model, load_body_model, validate_body_model, write_body_model
from affectlab.body.models import flame_layer, flame_regions, flame_vertices, smpl_joints, smpl_layer
from affectlab.body.standin import (
    SMPL_JOINTS, SMPL_PARENTS, tiny_flame_arrays, tiny_smpl_arrays, write_tiny_flame, write_tiny_smpl,
)
from affectlab.data.safe_pickle import UnsafePickleError, load_pickle

pytestmark = pytest.mark.usefixtures("one_torch_thread")
ROOT_PARENT_U32 = 4294967295  # how the released uint32 kintree tables mark the root


@pytest.fixture(scope="module")
def tiny_flame(tmp_path_factory):
    return write_tiny_flame(tmp_path_factory.mktemp("flame"))


@pytest.fixture(scope="module")
def tiny_smpl(tmp_path_factory):
    return write_tiny_smpl(tmp_path_factory.mktemp("smpl"))


# ---------------------------------------------------------------- chumpy-style pickles

@contextlib.contextmanager
def fake_chumpy():
    """Stub ``chumpy.ch.Ch`` / ``chumpy.reordering.Select`` importable only inside the block,
    so pickle writes the same globals a real chumpy model file holds."""
    names = ("chumpy", "chumpy.ch", "chumpy.reordering")
    saved = {name: sys.modules.get(name) for name in names}
    package, ch_module, reordering = (types.ModuleType(name) for name in names)
    Ch = type("Ch", (), {"__module__": "chumpy.ch"})
    Select = type("Select", (), {"__module__": "chumpy.reordering"})
    ch_module.Ch, reordering.Select = Ch, Select
    package.ch, package.reordering = ch_module, reordering
    sys.modules.update(dict(zip(names, (package, ch_module, reordering))))
    try:
        yield Ch, Select
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def chumpy_pickle(model: dict, chumpy_keys: set, select_keys: set, seed: int = 0) -> bytes:
    """Protocol-2 pickle of ``model`` with chumpy ``Ch`` objects for ``chumpy_keys``, a
    ``Select`` over a permuted ``Ch`` for ``select_keys`` (how shapedirs is stored) and a
    scipy CSC ``J_regressor``, as the released FLAME/SMPL/SMIL files are laid out."""
    rng = np.random.default_rng(seed)
    with fake_chumpy() as (Ch, Select):
        def ch(x):
            obj = Ch.__new__(Ch)
            obj.__dict__.update(x=np.asarray(x), _dirty_vars={"x"}, _itr=None, _depends_on_deps=True)
            return obj

        def select(value):
            value = np.asarray(value)
            idxs = rng.permutation(value.size)
            stored = np.empty(value.size)
            stored[idxs] = value.ravel()  # stored.ravel()[idxs] == value.ravel()
            obj = Select.__new__(Select)
            obj.__dict__.update(a=ch(stored.reshape(value.shape[-1], -1)), idxs=idxs, preferred_shape=value.shape)
            return obj

        out = {}
        for key, value in model.items():
            if key in select_keys:
                out[key] = select(value)
            elif key in chumpy_keys:
                out[key] = ch(value)
            elif key == "J_regressor":
                out[key] = scipy.sparse.csc_matrix(value)
            else:
                out[key] = value
        raw = pickle.dumps(out, protocol=2)
    assert "chumpy" not in sys.modules
    assert b"chumpy.ch" in raw and b"chumpy.reordering" in raw and b"csc_matrix" in raw
    return raw


def released_layout(arrays: dict) -> dict:
    """uint32 kintree (root = 4294967295) and faces, as in the py2 files."""
    kintree = arrays["kintree_table"].astype(np.int64)
    kintree[0, 0] = ROOT_PARENT_U32
    return {**arrays, "kintree_table": kintree.astype(np.uint32), "f": arrays["f"].astype(np.uint32)}


def test_chumpy_style_flame_pickle_converts_and_matches_direct_lbs(tmp_path):
    rng = np.random.default_rng(3)
    arrays, embedding, _ = tiny_flame_arrays(seed=1)
    arrays["posedirs"] = rng.normal(0, 2e-3, arrays["posedirs"].shape)  # exercise the pose correctives
    model = released_layout(arrays) | {"J": arrays["J_regressor"] @ arrays["v_template"], "bs_style": "lbs",
                                       "bs_type": "lrotmin"}
    src = tmp_path / "generic_model.pkl"
    src.write_bytes(chumpy_pickle(model, {"v_template", "posedirs", "weights", "J"}, {"shapedirs"}))
    (tmp_path / "flame_static_embedding.pkl").write_bytes(pickle.dumps(embedding, protocol=2))

    loaded = load_pickle(src, body_model=True)
    np.testing.assert_array_equal(loaded["shapedirs"], arrays["shapedirs"])  # Select resolved
    assert scipy.sparse.issparse(loaded["J_regressor"])

    out = convert_body_model(src, tmp_path / "converted", "flame")
    assert out.name == "FLAME_NEUTRAL.npz" and (out.parent / "flame_static_embedding.pkl").is_file()
    assert load_pickle(out.parent / "flame_static_embedding.pkl").keys() == {"lmk_face_idx", "lmk_b_coords"}

    layer = flame_layer(out.parent, n_shape=300, n_expression=100)
    batch = 3
    expression = torch.from_numpy(rng.normal(0, 1.5, (batch, 100))).float()
    jaw = torch.from_numpy(np.c_[rng.uniform(0, 0.4, batch), rng.normal(0, 0.05, (batch, 2))]).float()
    with torch.no_grad():
        vertices = flame_vertices(layer, expression, jaw)
    assert vertices.shape == (batch, len(arrays["v_template"]), 3)

    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    zeros = torch.zeros(batch, 3, dtype=torch.float64)
    direct, _ = lbs(
        torch.cat([torch.zeros(batch, 300, dtype=torch.float64), expression.double()], 1),
        torch.cat([zeros, zeros, jaw.double(), zeros, zeros], 1),
        t(arrays["v_template"]), t(arrays["shapedirs"]), t(arrays["posedirs"].reshape(-1, 36).T),
        t(arrays["J_regressor"]), torch.tensor([-1, 0, 1, 1, 1]), t(arrays["weights"]),
    )
    np.testing.assert_allclose(vertices.numpy(), direct.numpy(), atol=2e-6)
    # Not trivially equal: the expression and jaw moved the mesh by millimetres.
    assert (direct - t(arrays["v_template"])).norm(dim=-1).max() > 5e-3


def test_chumpy_style_smil_pickle_converts_and_joints_match_lbs(tmp_path):
    rng = np.random.default_rng(4)
    arrays, extra, _ = tiny_smpl_arrays(seed=2)
    arrays["posedirs"] = rng.normal(0, 1e-3, arrays["posedirs"].shape)
    n = len(arrays["v_template"])
    smil_extras = {  # SMIL keys smplx ignores
        "J": arrays["J_regressor"] @ arrays["v_template"], "bs_type": "lrotmin", "bs_style": "lbs",
        "weights_prior": arrays["weights"], "vert_sym_idxs": np.arange(n)[::-1].copy(),
        "J_regressor_prior": scipy.sparse.csc_matrix(arrays["J_regressor"]),
    }
    src = tmp_path / "smil_web.pkl"
    src.write_bytes(chumpy_pickle(released_layout(arrays) | smil_extras,
                                  {"v_template", "posedirs", "weights", "J", "weights_prior"}, {"shapedirs"}))

    out = convert_body_model(src, tmp_path / "converted", "smil")
    assert out.name == "SMPL_NEUTRAL.npz"
    with np.load(out, allow_pickle=False) as npz:
        assert set(npz.files) == {"v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f"}
    with pytest.raises(ValueError, match="vertex_ids"):
        smpl_layer(out)  # 144 vertices: smplx's default ids (up to 6787) do not fit
    vertex_ids = dict(zip(extra["vertex_ids_names"].tolist(), extra["vertex_ids_index"].tolist()))
    layer = smpl_layer(out, vertex_ids=vertex_ids)
    assert isinstance(layer, smplx.SMPLLayer)

    rot = rotations.axis_angle_to_matrix(torch.from_numpy(rng.normal(0, 0.4, (2, 24, 3))).float())
    betas = torch.from_numpy(rng.normal(0, 1, (2, 10))).float()
    with torch.no_grad():
        joints = smpl_joints(layer, rot[:, :1], rot[:, 1:], betas)
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float64)  # noqa: E731
    _, direct = lbs(betas.double(), rot.double(), t(arrays["v_template"]), t(arrays["shapedirs"]),
                    t(arrays["posedirs"].reshape(-1, 207).T), t(arrays["J_regressor"]), torch.as_tensor(SMPL_PARENTS),
                    t(arrays["weights"]), pose2rot=False)
    np.testing.assert_allclose(joints.numpy(), direct.numpy(), atol=2e-6)
    # The same layer straight from the released pickle (restricted unpickler, no file written).
    with torch.no_grad():
        again = smpl_joints(smpl_layer(src, vertex_ids=vertex_ids), rot[:, :1], rot[:, 1:], betas)
    np.testing.assert_allclose(again.numpy(), joints.numpy(), atol=1e-6)


@pytest.mark.parametrize("payload", ["open", "system"])
def test_refused_pickle_globals_never_run(tmp_path, payload):
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            if payload == "open":
                return open, (str(marker), "w")
            return os.system, (f"touch {marker}",)

    raw = pickle.dumps({"v_template": np.zeros((3, 3)), "shapedirs": Evil()}, protocol=2)
    src = tmp_path / "generic_model.pkl"
    src.write_bytes(raw)
    (tmp_path / "flame_static_embedding.pkl").write_bytes(raw)
    with pytest.raises(UnsafePickleError, match="refusing to unpickle"):
        load_pickle(src, body_model=True)
    with pytest.raises(UnsafePickleError):
        convert_body_model(src, tmp_path / "out", "flame")
    assert not marker.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_flame_layer_checks_files_before_smplx_unpickles_them(tmp_path, tiny_flame):
    """smplx.FLAME opens the embedding with plain pickle: flame_layer reads it first through
    the restricted unpickler, so a planted payload is refused and never runs."""
    marker = tmp_path / "marker"

    class Evil:
        def __reduce__(self):
            return os.system, (f"touch {marker}",)

    model_dir = tmp_path / "flame"
    model_dir.mkdir()
    (model_dir / "FLAME_NEUTRAL.npz").write_bytes((tiny_flame / "FLAME_NEUTRAL.npz").read_bytes())
    (model_dir / "flame_static_embedding.pkl").write_bytes(pickle.dumps({"lmk_face_idx": Evil()}))
    with pytest.raises(UnsafePickleError):
        flame_layer(model_dir)
    assert not marker.exists()

    np.savez(model_dir / "FLAME_NEUTRAL.npz", v_template=np.array([{"x": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a plain numeric .npz"):
        load_body_model(model_dir / "FLAME_NEUTRAL.npz")


# ---------------------------------------------------------------- validation

def test_validation_names_the_key(tmp_path):
    arrays, _, _ = tiny_smpl_arrays()
    with pytest.raises(ValueError, match=r"shapedirs has K=5 directions; smplx.SMPL fails with K < 10"):
        validate_body_model({**arrays, "shapedirs": arrays["shapedirs"][:, :, :5]}, "smpl", "m.pkl")
    with pytest.raises(ValueError, match=r"m.pkl: missing body-model key\(s\) \['weights'\]"):
        validate_body_model({k: v for k, v in arrays.items() if k != "weights"}, "smpl", "m.pkl")
    with pytest.raises(ValueError, match=r"posedirs must be \(V=144, 3, 207\)"):
        validate_body_model({**arrays, "posedirs": arrays["posedirs"][:, :, :36]}, "smpl", "m.pkl")
    with pytest.raises(ValueError, match=r"J_regressor must be \(24, V=144\)"):
        validate_body_model({**arrays, "J_regressor": arrays["J_regressor"][:5]}, "smpl", "m.pkl")
    bad_parents = arrays["kintree_table"].copy()
    bad_parents[0, 3] = 7
    with pytest.raises(ValueError, match=r"joints \[3\] have parents \[7\]"):
        validate_body_model({**arrays, "kintree_table": bad_parents}, "smpl", "m.pkl")
    flame, embedding, _ = tiny_flame_arrays()
    with pytest.raises(ValueError, match=r"K=12 directions; smplx.FLAME needs K >= 20"):
        validate_body_model({**flame, "shapedirs": flame["shapedirs"][:, :, :12]}, "flame", "f.pkl")
    with pytest.raises(ValueError, match="needs its landmark embedding"):
        write_body_model(flame, tmp_path, "flame")
    with pytest.raises(FileNotFoundError, match="flame_static_embedding.pkl"):
        src = tmp_path / "generic_model.pkl"
        src.write_bytes(pickle.dumps(flame, protocol=2))
        convert_body_model(src, tmp_path / "out", "flame")
    with pytest.raises(ValueError, match="unknown body-model kind 'mano'"):
        validate_body_model(arrays, "mano")


# ---------------------------------------------------------------- FLAME

def test_flame_counts_are_honoured(tiny_flame):
    layer = flame_layer(tiny_flame, n_shape=300, n_expression=100, batch_size=2)
    assert (layer.num_betas, layer.num_expression_coeffs) == (300, 100)
    assert tuple(layer.expr_dirs.shape[1:]) == (3, 100) and tuple(layer.shapedirs.shape[1:]) == (3, 300)
    expression = torch.zeros(2, 100)
    expression[1, 99] = 3.0  # the last of 100 coefficients (smplx's default would keep 10)
    with torch.no_grad():
        vertices = flame_vertices(layer, expression, torch.zeros(2, 3))
        zero_mesh = flame_vertices(layer, torch.zeros(5, 100), torch.zeros(5, 3))  # batch != layer batch
    assert (vertices[1] - vertices[0]).norm(dim=-1).max() > 1e-4
    np.testing.assert_allclose(zero_mesh[0].numpy(), layer.v_template.numpy(), atol=1e-7)

    small = flame_layer(tiny_flame, n_shape=50, n_expression=50)
    assert (small.num_betas, small.num_expression_coeffs) == (50, 50)
    with pytest.raises(ValueError, match=r"expression must be \(B, 50\)"):
        flame_vertices(small, torch.zeros(1, 100), torch.zeros(1, 3))
    with pytest.raises(ValueError, match=r"jaw_pose must be \(B=1, 3\)"):
        flame_vertices(small, torch.zeros(1, 50), torch.zeros(2, 3))


def test_flame_layer_refuses_counts_smplx_would_silently_drop(tmp_path):
    arrays, embedding, _ = tiny_flame_arrays()
    write_body_model({**arrays, "shapedirs": arrays["shapedirs"][:, :, 290:310]}, tmp_path, "flame",
                     embedding=embedding)
    with pytest.raises(ValueError, match="shapedirs has 20 directions"):
        flame_layer(tmp_path, n_shape=300, n_expression=100)
    assert flame_layer(tmp_path, n_shape=10, n_expression=10).num_expression_coeffs == 10


def test_tiny_flame_jaw_opens_the_mouth_only(tiny_flame):
    layer = flame_layer(tiny_flame, n_shape=300, n_expression=100)
    regions = flame_regions(tiny_flame)
    assert {"lips", "upper_face", "face"} <= regions.keys()
    jaw = torch.tensor([[0.0, 0, 0], [0.3, 0, 0]])
    with torch.no_grad():
        rest, opened = flame_vertices(layer, torch.zeros(2, 100), jaw)
    moved = (opened - rest).norm(dim=-1).numpy()
    lips, upper = regions["lips"], regions["upper_face"]
    lower_lips = lips[rest[lips, 1].numpy() < np.median(rest[lips, 1].numpy())]
    assert moved[lips].max() > 0.01 and (opened - rest)[lower_lips, 1].mean() < -0.005  # lower lip drops ~1 cm
    assert moved[upper].max() == 0.0  # brows and eyes do not follow the jaw
    # An expression moves the lips too (designed direction 0: lower lip down).
    expression = torch.zeros(1, 100)
    expression[0, 0] = 2.0
    with torch.no_grad():
        expressed = flame_vertices(layer, expression, torch.zeros(1, 3))[0]
    assert (expressed - rest)[lips, 1].min() < -0.005


def test_tiny_flame_is_seeded(tmp_path):
    a = tiny_flame_arrays(seed=5)[0]["shapedirs"]
    np.testing.assert_array_equal(a, tiny_flame_arrays(seed=5)[0]["shapedirs"])
    assert not np.array_equal(a, tiny_flame_arrays(seed=6)[0]["shapedirs"])
    arrays, _, _ = tiny_flame_arrays(n_shape=20, n_expression=10)
    assert np.abs(arrays["shapedirs"][:, :, 20:300]).max() == 0 and np.abs(arrays["shapedirs"][:, :, 310:]).max() == 0
    assert np.abs(arrays["shapedirs"][:, :, 309]).max() > 0


# ---------------------------------------------------------------- SMPL

def test_tiny_smpl_joints_and_kinematics(tiny_smpl):
    layer = smpl_layer(tiny_smpl)
    assert layer.parents.tolist() == [-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21]
    eye = torch.eye(3)
    body = eye.expand(2, 23, 3, 3).clone()
    body[1, 3] = rotations.axis_angle_to_matrix(torch.tensor([math.pi / 2, 0, 0]))  # left knee = joint 4
    with torch.no_grad():
        joints = smpl_joints(layer, eye.expand(2, 1, 3, 3), body)
        every = smpl_joints(layer, eye.expand(2, 1, 3, 3), body, joint_set="all")
    assert joints.shape == (2, 24, 3) and every.shape == (2, 45, 3)
    np.testing.assert_allclose(joints[0].numpy(), SMPL_JOINTS, atol=1e-6)  # regressor hits the joints exactly
    moved = (joints[1] - joints[0]).norm(dim=-1)
    assert set(torch.nonzero(moved > 1e-6).ravel().tolist()) == {7, 10}  # left ankle and foot only
    # Knee bent 90 degrees about +x: the shin (pointing down) turns to point backwards (-z).
    shin = SMPL_JOINTS[7] - SMPL_JOINTS[4]
    np.testing.assert_allclose(joints[1, 7].numpy(), SMPL_JOINTS[4] + [shin[0], -shin[2], shin[1]], atol=1e-5)
    with pytest.raises(ValueError, match=r"body_pose must be \(N=2, 23, 3, 3\)"):
        smpl_joints(layer, eye.expand(2, 1, 3, 3), body[:, :22])
    assert (tiny_smpl / "J_regressor_extra.npy").is_file()
    assert np.load(tiny_smpl / "J_regressor_extra.npy").shape == (9, 144)


# ---------------------------------------------------------------- rotations

def test_rotation_convention_against_a_hand_built_rotation():
    # 90 degrees about +z: x -> y, y -> -x (matrices act on column vectors).
    rz = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    aa = torch.tensor([0.0, 0.0, math.pi / 2])
    torch.testing.assert_close(rotations.axis_angle_to_matrix(aa), rz, atol=1e-6, rtol=0)
    torch.testing.assert_close(rz @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]))
    torch.testing.assert_close(rotations.matrix_to_axis_angle(rz), aa, atol=1e-6, rtol=0)
    # 6D = the first two ROWS (ACTOR / PyTorch3D), not the columns ([0, 1, 0, -1, 0, 0]).
    torch.testing.assert_close(rotations.matrix_to_rot6d(rz), torch.tensor([0.0, -1, 0, 1, 0, 0]))
    torch.testing.assert_close(rotations.rot6d_to_matrix(torch.tensor([0.0, -1, 0, 1, 0, 0])), rz)
    # Gram-Schmidt of non-orthonormal rows: (2,0,0), (1,3,0) -> identity.
    torch.testing.assert_close(rotations.rot6d_to_matrix(torch.tensor([2.0, 0, 0, 1, 3, 0])), torch.eye(3))


def test_rot6d_matches_the_pytorch3d_formula():
    g = torch.Generator().manual_seed(0)
    d6 = torch.randn(64, 6, generator=g, dtype=torch.float64)
    a1, a2 = d6[:, :3], d6[:, 3:]
    b1 = a1 / a1.norm(dim=-1, keepdim=True)
    b2 = a2 - (b1 * a2).sum(-1, keepdim=True) * b1
    b2 = b2 / b2.norm(dim=-1, keepdim=True)
    expected = torch.stack([b1, b2, torch.cross(b1, b2, dim=-1)], dim=-2)
    torch.testing.assert_close(rotations.rot6d_to_matrix(d6), expected)
    aa = torch.randn(10, 4, 3, generator=g, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(10, 4, 1, generator=g, dtype=torch.float64) * 3.0
    torch.testing.assert_close(rotations.rot6d_to_axis_angle(rotations.axis_angle_to_rot6d(aa)), aa)
    with pytest.raises(ValueError, match=r"rot6d must have shape \(..., 6\)"):
        rotations.rot6d_to_matrix(torch.zeros(4, 5))
