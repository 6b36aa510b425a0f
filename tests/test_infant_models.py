"""Infant models: ST-GCN recogniser and ACTOR-style CVAE (sizes, graph, learning, sampling)."""

import functools

import numpy as np
import pytest
import roma
import torch
import torch.nn.functional as F

from affectlab.body.models import smpl_joints, smpl_layer
from affectlab.body.rotations import matrix_to_rot6d, rot6d_to_matrix
from affectlab.body.standin import write_tiny_smpl
from affectlab.constants.infant import CVAE_LOSS_WEIGHTS, SMPL_PARENTS
from affectlab.data.infant import actor_batch, infact_paths, infant_rows, pose_features, read_infact
from affectlab.data.synthetic_infant import write_synthetic_infant
from affectlab.models.infant_cvae import build_cvae, cvae_losses, kl_divergence, rot6d_to_joints
from affectlab.models.stgcn import build_stgcn, spatial_partitions

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def tensors(clips, num_frames, seed=None):
    rows = infant_rows(clips, num_frames, seed=seed)
    b = actor_batch({k: np.stack([r[k] for r in rows]) for k in ("pose", "label")})
    return torch.from_numpy(b["x"]), torch.from_numpy(b["y"])


@pytest.fixture(scope="module")
def joints_fn(tmp_path_factory):
    """The 24 joints of the tiny SMPL stand-in, as the workload injects them into the loss."""
    return functools.partial(smpl_joints, smpl_layer(write_tiny_smpl(tmp_path_factory.mktemp("smpl"))))


@pytest.fixture(scope="module")
def infant_clips(tmp_path_factory):
    """Eight synthetic subjects: six to train on, two held out in the test pkl."""
    d = write_synthetic_infant(tmp_path_factory.mktemp("infant"), "primitive", n_subjects=8, n_test_subjects=2, frames=(30, 45))
    paths = infact_paths(d, "primitive")
    return read_infact(paths["train"], "primitive").clips, read_infact(paths["test"], "primitive").clips


def test_rotation_convention_rot6d_is_the_first_two_rows():
    rz90 = torch.tensor([[0.0, -1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    np.testing.assert_allclose(matrix_to_rot6d(rz90), [0, -1, 0, 1, 0, 0])
    np.testing.assert_allclose(roma.rotvec_to_rotmat(torch.tensor([0, 0, np.pi / 2])), rz90, atol=1e-6)
    rot = roma.random_rotmat(50, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(rot6d_to_matrix(matrix_to_rot6d(rot)), rot, atol=1e-5)
    # Gram-Schmidt on rows: a skewed second row is made orthogonal to the first
    skewed = rot6d_to_matrix(torch.tensor([2.0, 0, 0, 1.0, 1.0, 0]))
    np.testing.assert_allclose(skewed, torch.eye(3), atol=1e-6)
    # the data layer's rot6d features are the same numbers
    pose = roma.random_rotvec(24, generator=torch.Generator().manual_seed(1)).numpy()[None]
    np.testing.assert_allclose(pose_features(pose, "rot6d")[0], matrix_to_rot6d(roma.rotvec_to_rotmat(torch.from_numpy(pose[0]))), atol=1e-6)


def test_paper_parameter_counts():
    # ST-GCN, 24 x 6 input, 5 classes (reference §5.2: 3.08 M): 10 blocks 3,065,088 +
    # edge importance 10 * 3 * 24 * 24 + data_bn 2 * 144 + fcn 256 * 5 + 5
    stgcn = build_stgcn("paper", in_channels=6, num_classes=5, layout="smpl")
    assert n_params(stgcn) == 3_083_941 and round(n_params(stgcn) / 1e6, 2) == 3.08
    # CVAE, 24 x 6 input, 5 classes, 8 layers (reference §4.1: 14.82 M): encoder layers
    # 8 * 789,760 + decoder layers 8 * 1,053,440 + embeddings 37,120 + 37,008 + tokens 3 * 5 * 256
    cvae = build_cvae("paper", num_joints=24, num_feats=6, num_classes=5)
    assert n_params(cvae) == 14_823_568 and round(n_params(cvae) / 1e6, 2) == 14.82
    assert n_params(build_stgcn("tiny")) < 50_000 and n_params(build_cvae("tiny")) < 50_000


def test_spatial_partitions_of_the_smpl_graph():
    edges = [(p, c) for c, p in enumerate(SMPL_PARENTS) if p >= 0]
    a = spatial_partitions(24, edges, center=0)
    assert a.shape == (3, 24, 24)
    np.testing.assert_allclose(a.sum(axis=(0, 1)), 1.0)  # every target column is normalised
    # A[k, neighbour, target]: self; neighbours farther from the centre; nearer to it
    assert a[0, 4, 4] == pytest.approx(1 / 3)  # left knee: itself, hip, ankle
    assert a[1, 7, 4] == pytest.approx(1 / 3) and a[2, 1, 4] == pytest.approx(1 / 3)
    assert a[1, 1, 0] == pytest.approx(1 / 4) and a[2, :, 0].sum() == 0  # the root has no parent
    assert a[2, 20, 22] == pytest.approx(1 / 2) and a[1, :, 22].sum() == 0  # a hand has no child
    h36m = build_stgcn("tiny", layout="infact", in_channels=3)
    assert h36m.A.shape == (3, 17, 17)
    logits, features = h36m(torch.randn(2, 17, 3, 12))
    assert logits.shape == (2, 5) and features.shape == (2, 32)


def test_stgcn_features_keep_the_batch_axis():
    model = build_stgcn("tiny").eval()
    for n in (1, model.feature_dim):  # a batch of 1, and a batch as large as the features (defect 7)
        logits, features = model(torch.randn(n, 24, 6, 16))
        assert logits.shape == (n, 5) and features.shape == (n, model.feature_dim)
    logits, _ = model(torch.randn(2, 25, 6, 16))  # a translation row is dropped
    assert logits.shape == (2, 5)
    with pytest.raises(ValueError, match=r"expects \(N, 24, 6, T\)"):
        model(torch.randn(2, 17, 6, 16))


def test_stgcn_beats_majority_on_held_out_subjects(infant_clips):
    train, test = infant_clips
    assert {c.subject for c in train}.isdisjoint({c.subject for c in test})
    torch.manual_seed(0)
    model = build_stgcn("tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(0)
    for epoch in range(12):
        model.train()
        x, y = tensors(train, 32, seed=epoch)  # fresh random windows every epoch
        order = torch.randperm(len(y), generator=generator)
        for i in range(0, len(y), 16):
            idx = order[i : i + 16]
            loss = F.cross_entropy(model(x[idx])[0], y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    model.eval()
    x, y = tensors(test, 32)
    with torch.no_grad():
        accuracy = (model(x)[0].argmax(1) == y).float().mean().item()
    majority = np.bincount(y.numpy()).max() / len(y)
    assert majority == pytest.approx(0.2)
    print(f"ST-GCN tiny held-out accuracy {accuracy:.3f} (majority {majority:.2f})")
    assert accuracy >= majority + 0.5, accuracy


def test_cvae_losses_are_finite_and_decrease(infant_clips, joints_fn):
    clips = infant_clips[0][:10]
    x, y = tensors(clips, 20, seed=0)
    mask = torch.ones(len(y), 20, dtype=torch.bool)
    mask[:4, 14:] = False  # some shorter sequences
    torch.manual_seed(0)
    model = build_cvae("tiny")
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    history = []
    for _ in range(30):
        out = model(x, y, mask, generator=generator)
        assert out["output"][:4, :, :, 14:].abs().max() == 0  # padded frames are zero
        loss, terms = cvae_losses(x, mask, out, joints_fn)
        assert set(terms) == {"rc", "rcxyz", "kl", "velxyz", "mixed"}
        assert all(torch.isfinite(v) for v in terms.values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        history.append({k: v.item() for k, v in terms.items()})
    first, last = history[0], history[-1]
    assert last["mixed"] < 0.5 * first["mixed"]
    assert last["rc"] < first["rc"] and last["rcxyz"] < first["rcxyz"]
    expected = sum(CVAE_LOSS_WEIGHTS[k] * last[k] for k in ("rc", "rcxyz", "kl", "velxyz"))
    assert last["mixed"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="joints_fn"):
        cvae_losses(x, mask, out)


def test_loss_reductions(joints_fn):
    # KL is summed over batch and latent dims: two copies of a sample give twice its KL (defect 10)
    mu, logvar = torch.randn(1, 8), torch.randn(1, 8)
    one = kl_divergence(mu, logvar)
    assert one.item() == pytest.approx((-0.5 * (1 + logvar - mu**2 - logvar.exp())).sum().item())
    assert kl_divergence(mu.repeat(2, 1), logvar.repeat(2, 1)).item() == pytest.approx(2 * one.item())
    # rc: only valid frames count; a wrong padded frame changes nothing
    x = torch.randn(2, 24, 6, 5)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    output = x.clone()
    output[0, :, :, 3:] += 10.0
    out = {"output": output, "mu": mu, "logvar": logvar}
    _, terms = cvae_losses(x, mask, out, weights={"rc": 1.0})
    assert terms["rc"].item() == 0
    output[1, 0, 0, 0] += 1.0  # one valid value off by 1: MSE = 1 / (8 valid frames * 144)
    _, terms = cvae_losses(x, mask, out, weights={"rc": 1.0})
    assert terms["rc"].item() == pytest.approx(1 / (8 * 144))
    # joints are root-relative per frame and zero at padded frames
    xyz = rot6d_to_joints(x, mask, joints_fn)
    assert xyz.shape == (2, 24, 3, 5)
    assert xyz[:, 0].abs().max() == 0 and xyz[0, :, :, 3:].abs().max() == 0


def test_generate_is_seeded_eval_and_restores_the_mode():
    model = build_cvae("tiny", num_classes=4)
    classes = torch.tensor([0, 1, 2, 3, 3])
    for training in (True, False):
        model.train(training)
        a = model.generate(classes, 12, torch.Generator().manual_seed(7))
        b = model.generate(classes, 12, torch.Generator().manual_seed(7))
        assert model.training is training
        assert torch.equal(a["output"], b["output"])  # dropout off: only the generator's draws vary
        assert not a["output"].requires_grad
    c = model.generate(classes, 12, torch.Generator().manual_seed(8))
    assert not torch.equal(a["output"], c["output"])
    varied = model.generate(classes, torch.tensor([4, 12, 8, 12, 1]), torch.Generator().manual_seed(7))
    assert varied["output"].shape == (5, 24, 6, 12) and varied["mask"].sum(1).tolist() == [4, 12, 8, 12, 1]
    assert varied["output"][0, :, :, 4:].abs().max() == 0
    # the same draws decode the same frames whatever the other sequences' lengths
    torch.testing.assert_close(varied["output"][1], a["output"][1])
