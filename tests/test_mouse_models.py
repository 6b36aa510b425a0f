"""Mouse models: per-frame shapes, temporal locality, overfitting a tiny batch, EMA, pose twin."""

import numpy as np
import pytest
import torch

from affectlab.data.mouse_preprocess import pose_features_torch
from affectlab.data.pose import pose_features
from affectlab.models.mouse_c3d import build_c3d
from affectlab.models.mouse_dual_stream import DualStream
from affectlab.models.mouse_ema import EMAModel
from affectlab.models.mouse_multitask import MouseMultiTask, MultiTaskConfig, create_backbone

SIZE, T = 32, 16


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(name: str):
    torch.manual_seed(0)
    if name in ("c3d", "c3d_light"):
        return build_c3d(light=name == "c3d_light", width=0.125, dropout=0.0)
    if name == "dual_stream":
        return DualStream(visual_width=0.25, pose_hidden=16, pose_out=32, dim=32, dropout=0.0)
    return MouseMultiTask(MultiTaskConfig(backbone="tiny_resnet", pretrained=False, image_size=SIZE, pose_hidden=16, hidden=32, dropout=0.0))


MODELS = ["c3d", "c3d_light", "dual_stream", "multitask"]


@pytest.mark.parametrize("name", MODELS)
def test_per_frame_logits_for_any_window_length(name):
    model = tiny(name).eval()
    for t in (T, 24):
        out = model(torch.rand(2, t, SIZE, SIZE), torch.rand(2, t, 18))
        assert out["logits"].shape == (2, t, 6)
    if name == "multitask":
        assert out["keypoints"].shape == (2, 24, 6, 2)
        assert out["keypoints"].min() >= 0 and out["keypoints"].max() <= 1  # normalised coordinates


def test_c3d_keeps_time_local():
    """Pooling never touches time: a change at frame 0 cannot reach frames beyond the receptive field."""
    model = tiny("c3d_light").eval()  # 4 convs + a 3-frame head: receptive field 11 frames
    frames = torch.rand(1, 32, SIZE, SIZE)
    changed = frames.clone()
    changed[:, 0] = 1 - changed[:, 0]
    with torch.no_grad():
        a, b = model(frames)["logits"], model(changed)["logits"]
    assert not torch.allclose(a[0, 0], b[0, 0])
    torch.testing.assert_close(a[0, 8:], b[0, 8:])


def _tiny_batch(seed=0):
    """Two windows whose frames and pose carry the label: a bright blob moves with the class."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 6, (2, T), generator=g)
    frames = torch.zeros(2, T, SIZE, SIZE)
    pose = torch.zeros(2, T, 18)
    for b in range(2):
        for t in range(T):
            c = int(labels[b, t])
            frames[b, t, 4 * c : 4 * c + 6, 4 * c : 4 * c + 6] = 1.0
            pose[b, t, 3 * c : 3 * c + 3] = 1.0
    return frames, pose, labels


@pytest.mark.parametrize("name", MODELS)
def test_each_model_overfits_a_tiny_batch(name):
    model = tiny(name)
    frames, pose, labels = _tiny_batch()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = torch.nn.functional.cross_entropy(model(frames, pose)["logits"].reshape(-1, 6), labels.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(frames, pose)["logits"].argmax(-1) == labels).float().mean().item()
    assert accuracy > 0.9, f"{name} reached only {accuracy:.2f} on its own training batch"


def test_keypoint_head_regresses_clean_keypoints():
    """The workload's inputs jitter keypoints for the pose features; the targets stay clean."""
    from affectlab.workloads.mouse import PRESETS, MouseConfig, MouseWorkload

    cfg = MouseConfig(**{**PRESETS["tiny"], "model": "multitask", "roll_prob": 0.0, "keypoint_jitter": 0.05})
    rng = np.random.default_rng(0)
    keypoints = torch.as_tensor(rng.uniform(0.3, 0.7, (2, T, 6, 2)), dtype=torch.float32)
    batch = {
        "frames": torch.randint(0, 255, (2, T, SIZE, SIZE), dtype=torch.uint8), "keypoints": keypoints,
        "visible": torch.ones(2, T, 6), "kp_missing": torch.zeros(2, 6), "labels": torch.zeros(2, T, dtype=torch.long),
        "weights": torch.ones(2, T), "video_wh": torch.full((2, 2), 128.0), "ok": torch.ones(2, dtype=torch.long),
    }  # fmt: skip
    workload = MouseWorkload()
    clean = workload.prepare(batch, cfg)
    augmented = workload.prepare(batch, cfg, torch.Generator().manual_seed(1))
    torch.testing.assert_close(augmented["kp_target"], keypoints)  # targets: clean keypoints
    assert not torch.allclose(augmented["pose"], clean["pose"])  # inputs: jittered pose features
    torch.testing.assert_close(clean["pose"], pose_features_torch(keypoints * 128.0))

    # And the loss the head is trained with is zero exactly at the clean keypoints.
    model = MouseMultiTask(MultiTaskConfig(backbone="tiny_resnet", pretrained=False, image_size=SIZE, hidden=32, pose_hidden=16))
    model.forward = lambda frames, pose: {"logits": torch.zeros(2, T, 6, requires_grad=True), "keypoints": keypoints}
    _, terms = workload.train_step(model, batch, cfg, torch.Generator().manual_seed(1))
    assert terms["keypoint_loss"] == 0.0


def test_pose_features_torch_matches_the_numpy_definition():
    rng = np.random.default_rng(0)
    xy = rng.uniform(0, 100, (3, 20, 6, 2)).astype(np.float32)
    missing = np.zeros((3, 6), bool)
    missing[1, 5] = True  # tail_base never seen in the second sequence
    likelihood = np.where(missing[:, None, :], 0.0, 1.0).repeat(20, axis=1)
    expected = np.stack([pose_features(np.where(missing[i, None, :, None], 0, xy[i]), likelihood[i]) for i in range(3)])
    got = pose_features_torch(torch.as_tensor(np.where(missing[:, None, :, None], 0, xy)), torch.as_tensor(missing))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-4, atol=1e-5)


def test_ema_evaluates_the_average_and_trains_the_live_model():
    from torch.optim.swa_utils import AveragedModel

    live = torch.nn.Linear(3, 2)
    model = EMAModel(live, decay=0.9)
    assert isinstance(model.ema, AveragedModel)
    assert all(not p.requires_grad for p in model.ema.parameters())
    with torch.no_grad():
        live.weight.fill_(1.0)
    model.update()  # the first update copies the live weights
    torch.testing.assert_close(model.ema.module.weight, torch.full((2, 3), 1.0))
    with torch.no_grad():
        live.weight.fill_(2.0)
    model.update()  # warm-up: decay min(0.9, 2/11)
    torch.testing.assert_close(model.ema.module.weight, torch.full((2, 3), 1.0 + (1 - 2 / 11)))
    model.ema.n_averaged.fill_(1000)  # past the warm-up: decay 0.9
    with torch.no_grad():
        model.ema.module.weight.fill_(0.0)
        live.weight.fill_(1.0)
    model.update()
    torch.testing.assert_close(model.ema.module.weight, torch.full((2, 3), 0.1))
    x = torch.ones(1, 3)
    model.train()
    torch.testing.assert_close(model(x), live(x))
    model.eval()
    torch.testing.assert_close(model(x), model.ema.module(x))
    assert set(model.state_dict()) == {"model.weight", "model.bias", "ema.module.weight", "ema.module.bias", "ema.n_averaged"}


def test_ema_checkpoints_of_the_hand_written_ema_still_load():
    old = {"model.weight": torch.ones(2, 3), "model.bias": torch.zeros(2), "ema.weight": torch.full((2, 3), 0.5),
           "ema.bias": torch.full((2,), 0.25), "updates": torch.tensor(7)}  # fmt: skip
    model = EMAModel(torch.nn.Linear(3, 2), decay=0.9)
    model.load_state_dict(old, strict=True)
    torch.testing.assert_close(model.ema.module.weight, old["ema.weight"])
    torch.testing.assert_close(model.ema.module.bias, old["ema.bias"])
    assert int(model.ema.n_averaged) == 7
    wrapped = torch.nn.Sequential(EMAModel(torch.nn.Linear(3, 2)))  # under a prefix too
    wrapped.load_state_dict({f"0.{k}": v for k, v in old.items()}, strict=True)
    torch.testing.assert_close(wrapped[0].ema.module.bias, old["ema.bias"])


def test_backbone_errors_are_clear():
    with pytest.raises(RuntimeError, match="no_such_backbone.*--no-pretrained"):
        create_backbone("no_such_backbone", 32, pretrained=False)
    with pytest.raises(ValueError, match="no pretrained weights"):
        create_backbone("tiny_resnet", 32, pretrained=True)


def test_losses_on_hand_worked_values():
    from affectlab.models.mouse_losses import focal_loss, keypoint_loss, temporal_smoothness

    logits = torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])  # [B=1, T=2, C=3]
    labels = torch.tensor([[0, 2]])
    weights = torch.tensor([[1.0, 3.0]])
    # gamma 0, no smoothing: the weighted mean of cross-entropy
    ce = torch.nn.functional.cross_entropy(logits[0], labels[0], reduction="none")
    torch.testing.assert_close(focal_loss(logits, labels, weights, 0.0, 0.0), (ce * weights[0]).sum() / 4)
    # gamma 2 down-weights the confident first frame by (1 - p)^2
    p = torch.softmax(logits[0], -1)[[0, 1], [0, 2]]
    torch.testing.assert_close(focal_loss(logits, labels, weights, 2.0, 0.0), ((1 - p) ** 2 * ce * weights[0]).sum() / 4)
    assert focal_loss(logits, labels, torch.zeros(1, 2), 2.0, 0.1) == 0  # skipped windows weigh nothing
    torch.testing.assert_close(temporal_smoothness(logits), torch.tensor(1.0))  # (|0-2| + |1-0| + |0-0|) / 3
    assert temporal_smoothness(logits[:, :1]) == 0
    pred, target = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 0.0], [0.02, 0.0]]]])
    mask = torch.tensor([[[1.0, 1.0]]])
    # SmoothL1 beta 0.05: |1| -> 1 - 0.025; |0.02| -> 0.5 * 0.02^2 / 0.05
    torch.testing.assert_close(keypoint_loss(pred, target, mask, 0.05), torch.tensor((0.975 + 0.004) / 2))
