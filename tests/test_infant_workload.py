"""The infant workload's parts without a full run: config defaults, per-stage datasets and
splits, init checkpoints really loaded (or refused, naming the difference), the models
rebuilt from a config alone, seeded inference for serving, and the custom-loop helpers."""

import functools
from dataclasses import asdict

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from affectlab.body.models import smpl_joints, smpl_layer
from affectlab.body.rotations import axis_angle_to_rot6d
from affectlab.body.standin import write_tiny_smpl
from affectlab.data.infant import GeneratedSamples, pose_features, write_generated_samples
from affectlab.data.synthetic_infant import write_synthetic_infant
from affectlab.models.infant_cvae import rot6d_to_joints
from affectlab.models.infant_inference import (
    balanced_labels,
    build_generator,
    build_recognizer,
    classify,
    generate_sequences,
    poses_to_input,
    weights_file,
)
from affectlab.train.checkpoint import CheckpointError, save_checkpoint
from affectlab.train.custom import load_weights, state_fingerprint
from affectlab.workloads.infant import PRESETS, STAGES, InfantConfig, InfantWorkload, preset_values
from affectlab.workloads.infant_pipeline import stage_plan

pytestmark = pytest.mark.usefixtures("one_torch_thread")
TINY = {"stgcn_preset": "tiny", "cvae_preset": "tiny", "num_frames": 16}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """Six synthetic subjects (two in the test file), short clips, and a tiny SMPL in data_dir/body_model."""
    d = write_synthetic_infant(tmp_path_factory.mktemp("infant"), "primitive", n_subjects=6, n_test_subjects=2, frames=(14, 20))
    write_tiny_smpl(d / "body_model")
    return d


def cfg_for(data_dir, stage="recognizer", **kw) -> InfantConfig:
    return InfantConfig(**{**TINY, "data_dir": str(data_dir), "stage": stage, **kw})


# ------------------------------------------------------------------ config


def test_defaults_are_the_original_recipe():
    cfg = InfantConfig()
    assert (cfg.lr, cfg.weight_decay, cfg.batch_size, cfg.grad_clip, cfg.seed) == (1e-4, 0.01, 16, 0.0, 10)
    assert cfg.class_names == ["Supine", "Prone", "Sitting", "Standing", "All-fours"] and cfg.num_frames == 60
    assert (cfg.pose_rep, cfg.glob, cfg.stgcn_preset, cfg.cvae_preset) == ("rot6d", True, "paper", "paper")
    assert (cfg.round_every, cfg.finetune_epochs, cfg.confidence_threshold, cfg.select_fraction) == (10, 3, 0.75, 0.5)
    assert cfg.loss_weights == {"rc": 1.0, "rcxyz": 1.0, "kl": 1e-5, "velxyz": 1e-3}
    epochs = {stage: InfantConfig(stage=stage).epochs for stage in STAGES}
    assert epochs == {"recognizer": 15, "cvae": 1100, "refine": 200, "final": 100, "eval": 1}
    assert (cfg.select_metric, cfg.select_mode) == ("val_accuracy", "max")
    assert (InfantConfig(stage="cvae").select_metric, InfantConfig(stage="cvae").select_mode) == ("val_loss", "min")
    plus = InfantConfig(dataset="plus")
    assert plus.class_names == ["Crawling", "Sitting", "Standing", "Rolling"] and plus.num_frames == 90
    # a config.json round-trips
    assert InfantConfig(**asdict(InfantConfig(stage="refine", **TINY))) == InfantConfig(stage="refine", **TINY)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"stage": "pretrain"}, "stage must be one of"),
        ({"class_names": ["A", "B"]}, "differ from the primitive classes"),
        ({"stage": "cvae", "pose_rep": "xyz"}, "needs pose_rep='rot6d'"),
        ({"round_every": 0}, "round_every must be >= 1"),
        ({"confidence_threshold": 1.5}, r"in \(0, 1\]"),
    ],
)
def test_bad_settings_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        InfantConfig(**values)


def test_every_preset_builds_every_stage(tmp_path):
    for preset in PRESETS:
        for stage in STAGES:
            cfg = InfantWorkload().make_config({**preset_values(preset, stage), "data_dir": str(tmp_path)})
            assert cfg.stage == stage
    tiny = preset_values("tiny", "refine")
    assert tiny["round_every"] * 2 <= InfantWorkload().make_config(tiny).epochs  # at least two round attempts
    assert InfantConfig(**preset_values("tiny", "recognizer")).select_metric == "val_loss"


def test_stage_plan(tmp_path):
    assert stage_plan(None, {}) == list(STAGES)
    assert stage_plan(None, {"init_recognizer": "r"}) == ["cvae", "refine", "final", "eval"]
    assert stage_plan("final", {"synthetic_samples": "s"}) == ["final"]
    given = {"init_recognizer": "r", "final_recognizer": "f", "init_cvae": "g"}
    assert stage_plan("eval", given) == ["eval"] and "synthetic_samples" not in given  # a cvae checkpoint has no samples
    write_generated_samples(tmp_path / "generated_samples.npz", GeneratedSamples([], [], [], []))
    given = {"init_recognizer": "r", "final_recognizer": "f", "init_cvae": str(tmp_path)}
    assert stage_plan("eval", given) == ["eval"] and given["synthetic_samples"] == str(tmp_path)  # a refine checkpoint holds its samples
    with pytest.raises(ValueError, match="--stage refine needs --init-recognizer, --init-cvae"):
        stage_plan("refine", {})
    with pytest.raises(ValueError, match="belong to --stage runs"):
        stage_plan(None, {"synthetic_samples": "s"})


# ------------------------------------------------------------------ datasets and splits


def _count(ds) -> int:
    return ds.count()


def test_datasets_per_stage(ray_cluster, data_dir, tmp_path):
    workload = InfantWorkload()
    cfg = cfg_for(data_dir)
    assert cfg.body_model == str(data_dir / "body_model")  # found beside the pkls
    parts = workload.clips(cfg, None)
    groups = {s: {c.group for c in clips} for s, clips in parts.items()}
    assert not groups["train"] & groups["val"] and not groups["train"] & groups["test"] and not groups["val"] & groups["test"]
    ds = workload.datasets(cfg, None)
    assert set(ds) == {"train", "val"}  # the test file is not read for training or selection
    row = ds["train"].take(1)[0]
    assert set(row) == {"pose", "label"} and row["pose"].shape == (16, 24, 6)
    cv = cfg_for(data_dir, cv_folds=2)
    assert workload.n_folds(cv) == 2
    with pytest.raises(ValueError, match=r"number of groups \(4\), got 5"):
        workload.n_folds(cfg)  # 4 training subjects cannot make 5 grouped folds
    folds = [workload.clips(cv, k) for k in range(2)]
    assert sorted(c.clip_id for f in folds for c in f["test"]) == sorted(c.clip_id for c in workload.read_files(cfg)["train"].clips)
    assert set(workload.datasets(cv, 0)) == {"train", "val", "test"}

    with pytest.raises(ValueError, match="give synthetic_samples"):
        workload.datasets(cfg_for(data_dir, "final"), None)
    rng = np.random.default_rng(0)
    samples = GeneratedSamples([rng.normal(0, 0.3, (16, 24, 3)) for _ in range(4)], [np.zeros((16, 24, 3))] * 4, [0, 1, 2, 3], [6, 6, 8, 8])
    path = write_generated_samples(tmp_path / "generated_samples.npz", samples)
    final = workload.datasets(cfg_for(data_dir, "final", synthetic_samples=str(path)), None)
    assert _count(final["train"]) == len(parts["train"]) + 4
    evaluation = workload.datasets(cfg_for(data_dir, "eval", synthetic_samples=str(path)), None)
    assert set(evaluation) == {"train", "val", "test", "synthetic"} and _count(evaluation["test"]) == len(parts["test"])
    # the synthetic rows are the samples' poses as rot6d features
    rows = sorted(evaluation["synthetic"].take_all(), key=lambda r: int(r["label"]))
    np.testing.assert_allclose(rows[2]["pose"], pose_features(samples.pose[2]), atol=1e-6)


# ------------------------------------------------------------------ models, init checkpoints


def test_build_model_starts_from_the_init_checkpoint(tmp_path, data_dir):
    workload = InfantWorkload()
    torch.manual_seed(1)
    saved = build_recognizer(asdict(cfg_for(data_dir)))
    ckpt = save_checkpoint(tmp_path / "recognizer", saved.state_dict(), "infant", asdict(cfg_for(data_dir)), {})
    torch.manual_seed(2)
    fresh = workload.build_model(cfg_for(data_dir))
    assert state_fingerprint(fresh.state_dict()) != state_fingerprint(saved.state_dict())
    started = workload.build_model(cfg_for(data_dir, init_recognizer=str(ckpt)))
    assert state_fingerprint(started.state_dict()) == state_fingerprint(saved.state_dict())
    assert workload.build_model(cfg_for(data_dir, init_recognizer=str(ckpt)), pretrained=False) is not None  # not read
    # the final stage fine-tunes from it too; the checkpoint must be of the same setting
    final = workload.build_model(cfg_for(data_dir, "final", init_recognizer=str(ckpt), synthetic_samples="x"))
    assert state_fingerprint(final.state_dict()) == state_fingerprint(saved.state_dict())
    with pytest.raises(CheckpointError, match=r"stgcn_preset 'tiny' \(this run: 'paper'\)"):
        workload.build_model(cfg_for(data_dir, init_recognizer=str(ckpt), stgcn_preset="paper"))
    cvae = save_checkpoint(tmp_path / "cvae", build_generator(asdict(cfg_for(data_dir))).state_dict(), "infant",
                           asdict(cfg_for(data_dir, "cvae")), {})  # fmt: skip
    with pytest.raises(CheckpointError, match="a 'cvae' checkpoint holds no stgcn model"):
        workload.build_model(cfg_for(data_dir, init_recognizer=str(cvae)))
    assert weights_file("refine", "stgcn") == "recognizer.safetensors" and weights_file("refine", "cvae") == "model.safetensors"


def test_load_weights_is_strict_and_fingerprints_follow_the_weights(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    save_checkpoint(tmp_path, model.state_dict(), "infant", {}, {})
    other = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    state = load_weights(other, tmp_path)
    assert state_fingerprint(other.state_dict()) == state_fingerprint(model.state_dict()) == state_fingerprint(state)
    with torch.no_grad():
        other[0].weight[0, 0] += 1e-6
    assert state_fingerprint(other.state_dict()) != state_fingerprint(model.state_dict())
    with pytest.raises(CheckpointError, match=r"missing \['2.bias'"):
        load_weights(torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2), torch.nn.Linear(2, 2)), tmp_path)
    with pytest.raises(CheckpointError, match=r"other shapes \['0.bias', '0.weight'"):
        load_weights(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(2)), tmp_path)


def test_train_step_predict_and_evaluate(data_dir):
    workload = InfantWorkload()
    rows = workload.rows(cfg_for(data_dir), workload.clips(cfg_for(data_dir), None)["train"][:10], seed=0)
    batch = {"pose": torch.from_numpy(np.stack([r["pose"] for r in rows])), "label": torch.tensor([int(r["label"]) for r in rows])}
    for stage in ("recognizer", "cvae"):
        cfg = cfg_for(data_dir, stage)
        torch.manual_seed(0)
        model = workload.build_model(cfg)
        loss, terms = workload.train_step(model, batch, cfg, torch.Generator().manual_seed(0))
        assert torch.isfinite(loss) and loss.requires_grad
        predictions = workload.predict(model.eval(), [batch, batch], cfg)
        metrics = workload.evaluate(predictions)
        assert set(metrics) <= set(workload.metric_names) and cfg.select_metric[4:] in metrics
    cfg = cfg_for(data_dir)
    model = workload.build_model(cfg).eval()
    metrics = workload.evaluate(workload.predict(model, [batch], cfg))
    with torch.no_grad():
        logits = model(batch["pose"].permute(0, 2, 3, 1))[0]
    assert metrics["loss"] == pytest.approx(F.cross_entropy(logits, batch["label"]).item(), rel=1e-5)
    assert metrics["accuracy"] == pytest.approx((logits.argmax(1) == batch["label"]).float().mean().item())


# ------------------------------------------------------------------ inference (serving)


def test_balanced_labels_per_batch():
    # batch 1 (8): one of each of 5 classes, the remainder 3 to classes 0, 1, 2; batch 2 (4): remainder only
    assert balanced_labels(12, 5, 8).tolist() == [0, 1, 2, 3, 4, 0, 1, 2, 0, 1, 2, 3]
    assert balanced_labels(10, 5, 16).tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]
    assert balanced_labels(0, 5, 16).tolist() == []


def test_classify_is_the_softmax_of_the_rot6d_model():
    torch.manual_seed(0)
    model = build_recognizer(asdict(InfantConfig(**TINY))).eval()
    poses = np.random.default_rng(0).normal(0, 0.4, (3, 20, 24, 3)).astype(np.float32)
    probs = classify(model, poses)
    x = torch.from_numpy(np.stack([pose_features(p) for p in poses])).permute(0, 2, 3, 1)
    with torch.no_grad():
        expected = torch.softmax(model(x)[0], dim=1)
    torch.testing.assert_close(probs, expected, atol=1e-5, rtol=1e-5)
    assert probs.shape == (3, 5) and torch.allclose(probs.sum(1), torch.ones(3))
    assert model.training is False
    with pytest.raises(ValueError, match=r"\(B, T, 24, 3\)"):
        classify(model, poses[:, :, :17])
    with pytest.raises(ValueError, match="NaN"):
        classify(model, np.full((1, 5, 24, 3), np.nan, np.float32))
    assert poses_to_input(np.zeros((1, 5, 17, 3)), "xyz").shape == (1, 17, 3, 5)


def test_generate_sequences_is_seeded_with_root_relative_joints(tmp_path):
    torch.manual_seed(0)
    cvae = build_generator(asdict(InfantConfig(**TINY)))
    layer = smpl_layer(write_tiny_smpl(tmp_path))
    a = generate_sequences(cvae, [0, 3], 2, 12, seed=5, smpl_layer=layer)
    b = generate_sequences(cvae, [0, 3], 2, 12, seed=5, smpl_layer=layer)
    c = generate_sequences(cvae, [0, 3], 2, 12, seed=6)
    assert a["y"].tolist() == [0, 0, 3, 3] and a["pose"].shape == (4, 12, 24, 3) and a["joints"].shape == (4, 12, 24, 3)
    assert torch.equal(a["rot6d"], b["rot6d"]) and not torch.equal(a["rot6d"], c["rot6d"]) and "joints" not in c
    torch.testing.assert_close(axis_angle_to_rot6d(a["pose"]).permute(0, 2, 3, 1), a["rot6d"], atol=1e-5, rtol=0)
    assert a["joints"][:, :, 0].abs().max() == 0  # root-relative per frame
    mask = torch.ones(4, 12, dtype=torch.bool)
    expected = rot6d_to_joints(a["rot6d"], mask, functools.partial(smpl_joints, layer)).permute(0, 3, 1, 2)
    torch.testing.assert_close(a["joints"], expected)
    with pytest.raises(ValueError, match=r"class indices in \[0, 5\)"):
        generate_sequences(cvae, [5], 1, 12, seed=0)
