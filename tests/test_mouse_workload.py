"""The mouse workload: splits by animal, aligned windows, augmentation alignment, skip-and-count,
and the job end to end on the shared Ray cluster."""

import json
import shutil

import numpy as np
import pytest
import torch

from affectlab.data.mouse import read_annotation
from affectlab.data.mouse_dataset import class_counts, inverse_frequency_weights, mixed_order, training_windows
from affectlab.data.mouse_windows import load_windows, trial_labels, window_items, window_starts
from affectlab.data.synthetic_mouse import decode_stamp, write_synthetic_mouse
from affectlab.workloads.mouse import PRESETS, MouseConfig, MouseWorkload
from conftest import MOUSE_JOB_ARGS

SIZE = 32
TEST_KEYS = ("accuracy", "macro_f1", "per_class_f1", "edit", "f1@10", "f1@25", "f1@50", "majority_baseline_macro_f1", "skipped_samples")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def mice(mouse_dir):
    return mouse_dir


@pytest.fixture(scope="module")
def stamped(tmp_path_factory):
    """Two animals with the frame index stamped in a corner of every frame (alignment checks)."""
    return write_synthetic_mouse(tmp_path_factory.mktemp("stamped"), n_animals=2, size=64, seed=5, stamp_frame_index=True)


def _cfg(mice, **kw) -> MouseConfig:
    values = {**PRESETS["tiny"], "data_dir": str(mice), "image_size": SIZE, "window": 32, "eval_window": 32}
    return MouseConfig(**{**values, **kw})


# ------------------------------------------------------------------ splits


def test_no_animal_or_video_on_two_sides(mice):
    workload = MouseWorkload()
    cfg = _cfg(mice, cv_folds=3)
    for fold in (None, 0, 1, 2):
        parts = workload.splits(cfg, fold)
        assert set(parts) == {"train", "val", "test"}
        animals = {s: {t.animal_id for _, t in p} for s, p in parts.items()}
        videos = {s: {t.video_id for _, t in p} for s, p in parts.items()}
        for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
            assert not animals[a] & animals[b], (fold, a, b)
            assert not videos[a] & videos[b], (fold, a, b)
        assert sum(len(p) for p in parts.values()) == 18  # every trial on exactly one side
    all_animals = {t.animal_id for p in workload.splits(cfg, None).values() for _, t in p}
    tested = [sorted({t.animal_id for _, t in workload.splits(cfg, fold)["test"]}) for fold in range(3)]
    assert sorted(a for fold in tested for a in fold) == sorted(all_animals)  # each animal tested once


def test_bodypart_map_and_individual_are_config_fields_checked_up_front(tmp_path, mice):
    import mouse_actions

    cfg = MouseConfig(bodyparts="mouth=Snout, tail_base=Tail Base", individual="mouse1")
    assert cfg.bodyparts == {"mouth": "Snout", "tail_base": "Tail Base"}
    assert MouseConfig(**{**vars(cfg)}).bodyparts == cfg.bodyparts  # a dict (config.json) round-trips
    with pytest.raises(ValueError, match=r"unknown bodypart\(s\) \['nose'\]"):
        MouseConfig(bodyparts="nose=Snout")
    args = mouse_actions.parser().parse_args(["--data-dir", str(mice), "--output", str(tmp_path), "--bodyparts", "mouth=Snout", "--individual", "m2"])
    job_cfg = mouse_actions.config(args, mice)
    assert (job_cfg.bodyparts, job_cfg.individual) == ({"mouth": "Snout"}, "m2")
    with pytest.raises(SystemExit, match="mapped twice"):
        mouse_actions.main(["--data-dir", str(mice), "--output", str(tmp_path / "o"), "--bodyparts", "mouth=A,mouth=B"])
    with pytest.raises(SystemExit, match=r"missing bodyparts \['mouth'\] \(looked for \['Snout'\]\)"):
        mouse_actions.main(["--data-dir", str(mice), "--output", str(tmp_path / "o"), "--bodyparts", "mouth=Snout"])


# ------------------------------------------------------------------ windows


def test_windows_align_video_pose_and_labels(stamped):
    """Every stream of a window reads the same video frames, also for trial 2/3 and 345-row trials."""
    from affectlab.data.mouse import discover

    trials = [(i, t) for i, t in enumerate(discover(stamped)) if t.trial > 1]
    short = [(i, t) for i, t in trials if t.n_frames == 345]
    assert short, "the synthetic data has a 345-row trial"
    for trial_id, trial in (trials[0], short[0]):
        labels = read_annotation(trial.annotation_path)
        items = window_items([trial], [trial_id], [labels], 32, 100)
        batch = {k: np.array([it[k] for it in items]) for k in items[0]}
        out = load_windows(batch, 64)  # native size, so the stamp stays readable
        truth = np.load(stamped / "Truth" / f"{trial.video_id}.npz")
        assert out["ok"].all()
        for w, row in enumerate(out["row"]):
            frames = trial.start + row + np.arange(32)
            assert [decode_stamp(f) for f in out["frames"][w]] == frames.tolist()
            np.testing.assert_array_equal(out["labels"][w], truth["labels"][frames])
            error = np.abs(out["keypoints"][w] * 64 - truth["keypoints"][frames])
            assert np.median(error) < 1.0  # px; DLC noise, garbage points interpolated
    assert window_starts(345, 32, 100) == [0, 100, 200, 300, 313]


def test_augmentation_moves_every_stream_together():
    """Roll with frames, keypoints, visibility, labels and weights all encoding the frame index."""
    b, t = 4, 24
    index = torch.arange(t).float()
    batch = {
        "frames": (index * 10).to(torch.uint8)[None, :, None, None].expand(b, t, 8, 8).clone(),
        "keypoints": (index / 100)[None, :, None, None].expand(b, t, 6, 2).clone(),
        "visible": (index % 2)[None, :, None].expand(b, t, 6).clone(),
        "kp_missing": torch.zeros(b, 6), "labels": (torch.arange(t) % 6)[None].expand(b, t).clone(),
        "weights": index[None].expand(b, t).clone(), "video_wh": torch.full((b, 2), 64.0), "ok": torch.ones(b),
    }  # fmt: skip
    cfg = MouseConfig(roll_prob=0.99, roll_max=5, brightness=0.0, contrast=0.0, temporal_dropout=0.0, keypoint_jitter=0.0)
    x = MouseWorkload().prepare(batch, cfg, torch.Generator().manual_seed(3))
    frame_index = torch.round(x["frames"][:, :, 0, 0] * 255 / 10)
    assert not torch.equal(frame_index, index.expand(b, t)), "the roll moved something"
    torch.testing.assert_close(torch.round(x["kp_target"][..., 0, 0] * 100), frame_index)
    torch.testing.assert_close(x["kp_mask"][..., 0], frame_index % 2)
    torch.testing.assert_close(x["labels"].float(), frame_index % 6)
    torch.testing.assert_close(x["weights"], frame_index)


def test_a_corrupt_video_is_skipped_and_counted(mice, tmp_path):
    parts = MouseWorkload().splits(_cfg(mice), None)
    trial_id, trial = parts["test"][0]
    broken = tmp_path / trial.video_path.name
    shutil.copy(trial.video_path, broken)
    with open(broken, "r+b") as handle:
        handle.truncate(broken.stat().st_size // 2)
    labels = read_annotation(trial.annotation_path)
    items = window_items([trial], [trial_id], [labels], 32, 200)
    items[1]["video"] = str(broken)  # one window of three reads the damaged file
    batch = {k: np.array([it[k] for it in items]) for k in items[0]}
    out = load_windows(batch, SIZE, class_weights=np.full(6, 2.0, np.float32))
    assert out["ok"].tolist() == [1, 0, 1]
    assert (out["weights"][1] == 0).all() and (out["weights"][0] == 2).all()
    predictions = {"probs": np.full((3, 32, 6), 1 / 6), "labels": out["labels"], "trial_id": out["trial_id"],
                   "row": out["row"], "ok": out["ok"], "video_wh": out["video_wh"]}  # fmt: skip
    assert MouseWorkload().evaluate(predictions)["skipped_samples"] == 1


# ------------------------------------------------------------------ training windows: order, weights, epochs


def test_every_block_of_training_windows_mixes_trials():
    groups = np.repeat(np.arange(12), 10)  # 12 trials of 10 windows
    order = mixed_order(groups, seed=0)
    assert sorted(order.tolist()) == list(range(120))
    assert all(len(set(block)) == 8 for block in groups[order].reshape(-1, 8))  # 8 windows, 8 trials
    assert np.array_equal(mixed_order(groups, 0), order) and not np.array_equal(mixed_order(groups, 1), order)
    # unequal trials (oversampled copies): every stretch holds each trial in proportion, within 1
    groups = np.concatenate([np.full(30, 0), np.full(5, 1), np.repeat(np.arange(2, 8), 10)])
    placed = groups[mixed_order(groups, seed=3)]
    for start in range(0, len(groups) - 19):
        counts = np.bincount(placed[start : start + 19], minlength=8)
        assert np.all(np.abs(counts - 19 * np.bincount(groups) / len(groups)) <= 1.5), (start, counts)


def test_class_weights_are_fitted_after_oversampling(mice):
    """One correction: the weights see the oversampled windows, so each class carries the same
    total weight per epoch (weight x frames = total / C), not a rare class corrected twice."""
    cfg = _cfg(mice, oversample_max=30.0)
    parts = MouseWorkload().splits(cfg, None)
    labels = trial_labels([t for _, t in parts["train"]])
    tiled = window_items([t for _, t in parts["train"]], [i for i, _ in parts["train"]], labels, cfg.window, cfg.train_stride)
    items, weights = training_windows(parts["train"], labels, cfg.window, cfg.train_stride, oversample=True,
                                      oversample_max=cfg.oversample_max, class_weights=True, seed=cfg.seed)  # fmt: skip
    assert len(items) > 1.2 * len(tiled)  # oversampling repeated rare-class windows
    frames = class_counts([it["labels"] for it in items])
    assert (frames > 0).all()
    np.testing.assert_allclose(weights * frames, frames.sum() / 6, rtol=1e-5)  # uniform per-class mass
    before = inverse_frequency_weights(class_counts(labels)) * frames  # weights fitted before sampling
    assert before.max() / before.min() > 1.5  # ... over-correct the rare classes (x2 on this data)
    _, unweighted = training_windows(parts["train"], labels, cfg.window, cfg.train_stride, oversample=True,
                                     oversample_max=30.0, class_weights=False, seed=cfg.seed)  # fmt: skip
    assert unweighted is None


def test_train_windows_reshuffle_every_epoch_and_batches_mix_trials(ray_cluster, mice):
    """A small real run of the training dataset, iterated as the platform loop does (a seeded
    local shuffle of ``shuffle_buffer`` rows, seed from cfg.seed and the epoch)."""
    from collections import Counter

    cfg = _cfg(mice, window=16, train_stride=64, image_size=16, windows_per_task=4, batch_size=4)
    workload = MouseWorkload()
    parts = workload.splits(cfg, None)
    items, _ = training_windows(parts["train"], trial_labels([t for _, t in parts["train"]]), cfg.window, cfg.train_stride,
                                oversample=cfg.oversample, oversample_max=cfg.oversample_max, class_weights=True, seed=cfg.seed)  # fmt: skip
    expected = Counter((it["trial_id"], it["row"]) for it in items)
    n_trials = len(parts["train"])
    train = workload.datasets(cfg, None)["train"]
    epochs = []
    for epoch in range(3):
        seen, trials_per_batch = [], []
        for batch in train.iter_batches(batch_size=cfg.batch_size, batch_format="numpy", local_shuffle_buffer_size=cfg.shuffle_buffer,
                                        local_shuffle_seed=cfg.seed * 1_000_003 + epoch):  # fmt: skip
            assert batch["ok"].all()
            seen += list(zip(batch["trial_id"].tolist(), batch["row"].tolist()))
            trials_per_batch.append(len(set(batch["trial_id"].tolist())))
        assert Counter(seen) == expected, f"epoch {epoch} did not see every training window as often as sampled"
        assert len(set(seen)) == len(set(expected)) > 40  # distinct windows: all of them, every epoch
        # random draws from 12 trials give 3.5 distinct per 4 rows; blocks of one trial would give ~2
        assert np.mean(trials_per_batch[:-1]) >= 0.75 * min(cfg.batch_size, n_trials), trials_per_batch
        epochs.append(seen)
    assert epochs[0] != epochs[1] != epochs[2] != epochs[0]  # another order every epoch
    print(f"{len(expected)} distinct windows of {n_trials} trials; trials per batch {np.mean(trials_per_batch):.2f} of {cfg.batch_size}")


# ------------------------------------------------------------------ end to end


def test_job_multitask_reaches_the_issue_bar_on_held_out_animals(mouse_run):
    """The job with its --synthetic defaults: macro F1 >= 0.6 on animals never trained on."""
    out, metrics = mouse_run
    for key in (*TEST_KEYS, "keypoint_mae_px", "confusion_matrix", "thresholds"):
        assert key in metrics, key
    assert set(metrics["per_class_f1"]) == {"rest", "paw_withdraw", "paw_lick", "paw_shake", "walk", "active"}
    print(f"multitask: macro F1 {metrics['macro_f1']:.3f}, majority baseline {metrics['majority_baseline_macro_f1']:.3f}")
    assert metrics["macro_f1"] >= 0.6 and metrics["macro_f1"] > metrics["majority_baseline_macro_f1"] + 0.3, metrics
    assert metrics["skipped_samples"] == 0
    test_animals, train_animals = set(metrics["animals"]["test"]), set(metrics["animals"]["train"])
    assert test_animals and not test_animals & train_animals
    assert (out / "report.html").stat().st_size > 10_000  # figures are embedded
    thresholds = json.loads((out / "checkpoint" / "thresholds.json").read_text())
    assert len(thresholds["thresholds"]) == 6 and (out / "checkpoint" / "model.safetensors").is_file()


def _run_job(tmp_path, mice, *args) -> dict:
    import mouse_actions

    argv = ["--data-dir", str(mice), "--output", str(tmp_path / "out"), "--preset", "tiny", *MOUSE_JOB_ARGS, *args]
    return json.loads(mouse_actions.main(argv).read_text())


def test_job_dual_stream_beats_the_majority_baseline_on_held_out_animals(ray_cluster, mice, tmp_path):
    """At the suite's time budget (32 px, 4 epochs). The video-only C3D models need the job's
    own defaults (larger frames, 12 epochs) to learn: their figures are in docs/mouse.md."""
    metrics = _run_job(tmp_path, mice, "--model", "dual_stream", "--epochs", "4")
    print(f"dual_stream: macro F1 {metrics['macro_f1']:.3f}, majority baseline {metrics['majority_baseline_macro_f1']:.3f}")
    assert metrics["macro_f1"] > metrics["majority_baseline_macro_f1"] + 0.05, metrics
    assert not set(metrics["animals"]["test"]) & set(metrics["animals"]["train"])


def test_job_cv_runs_grouped_folds_as_tune_trials(ray_cluster, mice, tmp_path):
    metrics = _run_job(tmp_path, mice, "--model", "c3d_light", "--epochs", "1", "--cv", "2")
    assert [f["fold"] for f in metrics["folds"]] == [0, 1]
    tested = [set(f["animals"]["test"]) for f in metrics["folds"]]
    assert not tested[0] & tested[1]
    for f in metrics["folds"]:
        assert not set(f["animals"]["test"]) & (set(f["animals"]["train"]) | set(f["animals"]["val"]))
    for key in TEST_KEYS:
        assert key in metrics, key
    assert set(metrics["summary"]["macro_f1"]) == {"mean", "ci95", "n_folds"} and metrics["n_folds"] == 2
    assert metrics["summary"]["macro_f1"]["mean"] == pytest.approx(np.mean([f["macro_f1"] for f in metrics["folds"]]))
    assert "± " in (tmp_path / "out" / "report.html").read_text()  # the report shows the CI
    assert (tmp_path / "out" / "fold_1" / "thresholds.json").is_file()


def test_job_fails_fast_on_bad_input(tmp_path, mice):
    import mouse_actions

    with pytest.raises(SystemExit, match="folder not found"):
        mouse_actions.main(["--data-dir", str(tmp_path / "nowhere"), "--output", str(tmp_path / "o")])
    root = shutil.copytree(mice, tmp_path / "copy")
    ghost = "prediction_shortened_2023-11-01_CFA_099_999M_tracking.mp4_1.csv"
    shutil.copy(next((root / "Annotations").glob("*.csv")), root / "Annotations" / ghost)
    with pytest.raises(SystemExit, match="999M_tracking.mp4"):
        mouse_actions.main(["--data-dir", str(root), "--output", str(tmp_path / "o")])
    held = tmp_path / "held"
    held.mkdir()
    (held / "metrics.json").write_text("{}")  # an earlier run's outputs are not overwritten unasked
    with pytest.raises(SystemExit, match="already holds a run's outputs.*--overwrite"):
        mouse_actions.main(["--data-dir", str(mice), "--output", str(held)])
