"""The probtalk3d workload without a cluster: stage configs, the contract's methods on padded
batches, the frozen prior loaded by path, seeded generation, the pooling of the §4.5 metrics
and of the validation metrics (hand-worked), the mean-motion baseline, the search spaces."""

from pathlib import Path

import numpy as np
import pytest
import torch

from affectlab.data.probtalk3d_dataset import TIME_AXES, mean_motion_per_frame, play_mean_motion
from affectlab.data.sequences import SequenceCollate
from affectlab.metrics.probtalk3d_eval import motion_validation_metrics, pool_sequence_scores
from affectlab.models.probtalk3d_generate import generate_samples, predictor_from_config, style_indices
from affectlab.train.checkpoint import save_checkpoint
from affectlab.train.config import config_to_dict
from affectlab.tune.space import load_space
from affectlab.workloads import get_workload
from affectlab.workloads.probtalk3d import METRIC_NAMES, ProbTalk3DConfig, load_predictor
from affectlab.workloads.probtalk3d_eval import report_choices, sequence_seed

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture()
def workload():
    return get_workload("probtalk3d")


def tiny(**values) -> ProbTalk3DConfig:
    return ProbTalk3DConfig(**{"preset": "tiny", "audio": "logmel", **values})


def batch(n_frames=(12, 7), audio: str = "logmel", seed: int = 0) -> dict:
    """A padded batch as the workload's collate gives it (random motion and features)."""
    rng = np.random.default_rng(seed)
    rows = {
        "motion": [rng.uniform(0.3, 0.7, (t, 53)).astype(np.float32) for t in n_frames],
        "envelope": [rng.uniform(0, 1, t).astype(np.float32) for t in n_frames],
        "identity": np.array([0, 1]), "emotion": np.array([1, 6]), "intensity": np.array([2, 0]), "sentence": np.array([1, 2]),
        "n_frames": np.array(n_frames),
    }  # fmt: skip
    if audio == "logmel":
        rows["mel"] = [rng.normal(size=(t, 320)).astype(np.float32) for t in n_frames]
    else:
        rows["audio"] = [rng.normal(0, 0.1, t * 640).astype(np.float32) for t in n_frames]
    return SequenceCollate(TIME_AXES)(rows)


@pytest.fixture()
def prior_checkpoint(tmp_path, workload):
    cfg = tiny(stage="prior")
    torch.manual_seed(0)
    prior = workload.build_model(cfg)
    return save_checkpoint(tmp_path / "prior", prior.state_dict(), "probtalk3d", config_to_dict(cfg), {}), prior


# ------------------------------------------------------------------ configs


def test_training_settings_come_from_the_preset_for_the_stage():
    paper = ProbTalk3DConfig()
    assert (paper.epochs, paper.batch_size, paper.lr, paper.weight_decay, paper.seed) == (201, 1, 1e-4, 0.01, 1234)
    pred = ProbTalk3DConfig(stage="pred")
    assert (pred.lr, pred.weight_decay, pred.batch_size) == (1e-5, 0.0, 1)  # Adam, 1e-5
    assert (tiny().epochs, tiny().batch_size, tiny().lr, tiny(stage="pred").lr, tiny().cache_data) == (12, 8, 2e-3, 1e-3, True)
    assert tiny(stage="pred", lr=5e-4).lr == 5e-4  # an explicit value wins
    assert pred.select_metric == "val_l2_plus_var" and set(METRIC_NAMES) >= {"l2_plus_var", "jaw_envelope_pearson"}


@pytest.mark.parametrize("values, message", [
    ({"model": "gan"}, "model must be one of"), ({"stage": "serve"}, "stage must be one of"),
    ({"prior_checkpoint": "runs/prior"}, "absolute path"), ({"n_samples": 1}, "n_samples must be >= 2"),
    ({"eval_temperatures": [0.1, 0.0]}, "temperatures must be > 0"), ({"top_k": 300}, "top_k"),
])  # fmt: skip
def test_bad_settings_are_named(values, message):
    with pytest.raises(ValueError, match=message):
        ProbTalk3DConfig(**values)


def test_unknown_config_keys_are_named(workload):
    with pytest.raises(ValueError, match="unknown ProbTalk3DConfig field"):
        workload.make_config({"temprature": 0.3})


@pytest.mark.parametrize("name", ["probtalk3d_prior", "probtalk3d_prior_tiny", "probtalk3d_pred", "probtalk3d_pred_tiny"])
def test_search_spaces_validate(name):
    space = load_space(ROOT / "search_spaces" / f"{name}.yaml", get_workload, "probtalk3d")
    assert space.metric == "val_l2_plus_var" and space.mode == "min"
    assert space.fixed["stage"] == ("prior" if "prior" in name else "pred") and space.params


# ------------------------------------------------------------------ the contract on batches


@pytest.mark.parametrize("model", ["vqvae", "vae"])
def test_prior_stage_steps_predicts_and_scores(workload, model):
    cfg = tiny(stage="prior", model=model)
    net = workload.build_model(cfg)
    b = batch()
    loss, terms = workload.train_step(net, b, cfg, torch.Generator().manual_seed(0))
    assert loss.requires_grad and np.isfinite(loss.item()) and "exp_l1" in terms
    net.eval()
    predictions = workload.predict(net, [b, batch((5, 9), seed=1)], cfg)
    assert predictions["pred"].shape == (4, 12, 53) and predictions["length"].tolist() == [12, 7, 5, 9]
    assert not predictions["pred"][1, 7:].any()  # padded past each length
    metrics = workload.evaluate(predictions)
    assert set(metrics) == set(METRIC_NAMES) and all(np.isfinite(v) for v in metrics.values())


@pytest.mark.parametrize("audio", ["logmel", "hubert"])
def test_predictor_stage_uses_the_prior_checkpoint_frozen(workload, prior_checkpoint, audio):
    path, prior = prior_checkpoint
    cfg = tiny(stage="pred", audio=audio, prior_checkpoint=str(path))
    net = workload.build_model(cfg)
    assert all(torch.equal(v, prior.state_dict()[k]) for k, v in net.prior.state_dict().items())
    assert not any(p.requires_grad for p in net.prior.parameters())
    groups = workload.param_groups(net, cfg)
    assert groups[0]["betas"] == (0.9, 0.98) and groups[0]["eps"] == 1e-9 and groups[0]["lr"] == 1e-3
    assert {id(p) for p in groups[0]["params"]}.isdisjoint({id(p) for p in net.prior.parameters()})
    b = batch(audio=audio)
    net.train()
    loss, terms = workload.train_step(net, b, cfg, torch.Generator().manual_seed(0))
    assert set(terms) == {"latent_l1", "exp_l1", "jaw_l1"} and np.isfinite(loss.item())
    predictions = workload.predict(net.eval(), [b], cfg)
    expected = 12 if audio == "logmel" else 11  # HuBERT: ⌊frames of 12·640 samples / 2⌋ = 11
    assert predictions["length"][0] == expected
    unloaded = workload.build_model(cfg, pretrained=False)  # rebuilt for a checkpoint: reads no file
    assert not torch.equal(unloaded.prior.quantizer.codebook.weight, prior.quantizer.codebook.weight)


def test_a_prior_of_other_sizes_is_refused(prior_checkpoint):
    path, _ = prior_checkpoint
    from affectlab.workloads.probtalk3d import load_frozen_prior

    with pytest.raises(ValueError, match="tokens_per_frame: prior 2, asked 1"):
        load_frozen_prior(tiny(stage="pred", tokens_per_frame=1, prior_checkpoint=str(path)))
    with pytest.raises(ValueError, match="needs prior_checkpoint"):
        load_frozen_prior(tiny(stage="pred"))


# ------------------------------------------------------------------ generation


@pytest.fixture()
def predictor():
    torch.manual_seed(0)
    return predictor_from_config(config_to_dict(tiny(stage="pred"))).eval()


def test_generation_is_seeded_and_argmin_is_deterministic(predictor):
    audio = np.random.default_rng(0).uniform(-0.5, 0.5, 640 * 20 + 100).astype(np.float32)
    style = style_indices("M003", "happy", "level_2")
    first = generate_samples(predictor, audio, style, n_samples=5, temperature=0.5, seed=1)
    assert first.shape == (5, 20, 53)
    assert np.array_equal(first, generate_samples(predictor, audio, style, n_samples=5, temperature=0.5, seed=1))
    assert not np.array_equal(first[0], first[1])  # each sample draws its own codes
    argmin = generate_samples(predictor, audio, style, n_samples=3, sample=False)
    assert np.array_equal(argmin[0], argmin[2])
    nearest = generate_samples(predictor, audio, style, n_samples=3, temperature=0.5, top_k=1, seed=9)
    assert np.array_equal(nearest, argmin)  # sampling among the single nearest code is the argmin
    with pytest.raises(ValueError, match="shorter than one 25 fps frame"):
        generate_samples(predictor, audio[:600], style)
    with pytest.raises(ValueError, match="n_samples"):
        generate_samples(predictor, audio, style, n_samples=0)


def test_style_names_are_validated():
    assert style_indices("W029", "contempt", 2) == (31, 7, 2)
    for args, field in ((("M032", "happy", 0), "id"), (("M003", "joy", 0), "emotion"), (("M003", "happy", 3), "intensity"),
                        (("M003", "happy", "level_4"), "intensity")):  # fmt: skip
        with pytest.raises(ValueError, match=f"^{field}:"):
            style_indices(*args)
    with pytest.raises(ValueError, match="missing"):
        predictor_from_config({"model": "vqvae"})


def test_a_stage_two_checkpoint_loads_from_its_config_alone(tmp_path, predictor):
    cfg = tiny(stage="pred")
    save_checkpoint(tmp_path / "pred", predictor.state_dict(), "probtalk3d", config_to_dict(cfg), {})
    loaded, config, _ = load_predictor(tmp_path / "pred")
    audio = np.random.default_rng(1).uniform(-0.5, 0.5, 640 * 8).astype(np.float32)
    kw = dict(n_samples=2, seed=4, temperature=0.3)
    assert np.array_equal(generate_samples(loaded, audio, (0, 0, 0), **kw), generate_samples(predictor, audio, (0, 0, 0), **kw))
    save_checkpoint(tmp_path / "prior", predictor.prior.state_dict(), "probtalk3d", config_to_dict(tiny()), {})
    with pytest.raises(ValueError, match="expected a probtalk3d 'pred' one"):
        load_predictor(tmp_path / "prior")


# ------------------------------------------------------------------ pooling (hand-worked)


def test_sequence_scores_pool_by_frames_or_by_sequences():
    nan = float("nan")
    records = {
        "b": {"frames": 6, "mve": 3.0, "lve": 0.6, "mee": 0.3, "ce": 0.0, "fdd": 3.0, "diversity": 0.4, "jaw_envelope_pearson": nan},
        "a": {"frames": 2, "mve": 1.0, "lve": 0.2, "mee": 0.1, "ce": 0.4, "fdd": 1.0, "diversity": nan, "jaw_envelope_pearson": nan},
    }  # fmt: skip
    pooled = pool_sequence_scores(records)
    # frame-weighted: (2·1 + 6·3) / 8; sequence means: (1 + 3) / 2; NaN (S < 2, constant jaw) left out
    assert pooled["mve"] == pytest.approx(2.5) and pooled["lve"] == pytest.approx(0.5) and pooled["ce"] == pytest.approx(0.1)
    assert pooled["fdd"] == pytest.approx(2.0) and pooled["diversity"] == pytest.approx(0.4)
    assert pooled["jaw_envelope_pearson"] == 0.0  # no sequence has a defined r


def test_validation_metrics_hand_worked():
    truth = np.zeros((2, 3, 3))
    pred = np.full((2, 3, 3), 9.0)  # junk past each length
    pred[0, :2] = [[3, 4, 0], [0, 0, 0]]
    pred[1, :1] = [[0, 0, 1]]
    m = motion_validation_metrics(pred, truth, np.array([2, 1]), exp_dim=2)
    assert m["motion_l2"] == pytest.approx((5 + 0 + 1) / 3)  # per-frame L2 pooled over the 3 real frames
    assert m["exp_l1"] == pytest.approx(3.5 / 3) and m["jaw_l1"] == pytest.approx(1 / 3)
    # per sequence mean over channels of |var(truth) − var(pred)|: (2.25 + 4 + 0) / 3, then 0; averaged over sequences
    assert m["variance_diff"] == pytest.approx((6.25 / 3) / 2)
    assert m["l2_plus_var"] == pytest.approx(m["motion_l2"] + m["variance_diff"])


def test_mean_motion_baseline_per_frame():
    first = {"motion": np.stack([np.ones((3, 2)), np.full((3, 2), 3.0)]), "frame_mask": np.array([[1, 1, 1], [1, 0, 0]], bool)}
    second = {"motion": np.full((1, 4, 2), 5.0), "frame_mask": np.ones((1, 4), bool)}
    baseline = mean_motion_per_frame([first, second])
    np.testing.assert_allclose(baseline[:, 0], [3.0, 3.0, 3.0, 5.0, 26 / 8])  # frames 0-3, then every frame
    played = play_mean_motion(baseline, 6)
    np.testing.assert_allclose(played[:, 1], [3, 3, 3, 5, 26 / 8, 26 / 8])
    np.testing.assert_allclose(play_mean_motion(baseline, 2)[:, 0], [3, 3])


def test_evaluation_choices_do_not_depend_on_delivery_order():
    names = ["M003_037_0_0", "M003_028_1_0", "M003_028_1_2", "M005_028_6_2", "M005_028_1_2"]
    emotions = {n: int(n.split("_")[2]) for n in names}
    assert report_choices(names, emotions) == report_choices(names[::-1], emotions) == ["M003_028_1_2", "M005_028_6_2", "M003_037_0_0"]
    assert sequence_seed(1234, "M003_028_1_2") == sequence_seed(1234, "M003_028_1_2") != sequence_seed(1234, "M005_028_1_2")
