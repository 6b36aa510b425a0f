"""Mouse metrics on hand-worked examples: per-class F1 by name, thresholds, baseline, stitching."""

import numpy as np
import pytest

from affectlab.metrics import mouse as mm

REST, WITHDRAW, LICK, SHAKE, WALK, ACTIVE = range(6)


def test_per_class_f1_keeps_names_and_reports_absent_classes():
    # Truth has rest, withdraw, lick; shake is predicted but never true; walk and active
    # appear nowhere. sklearn without labels=range(6) would drop classes and shift names.
    y_true = [REST, REST, REST, REST, WITHDRAW, WITHDRAW, LICK, LICK]
    y_pred = [REST, REST, REST, WITHDRAW, WITHDRAW, WITHDRAW, LICK, SHAKE]
    s = mm.frame_scores(y_true, y_pred)
    f1 = s["per_class_f1"]
    assert list(f1) == ["rest", "paw_withdraw", "paw_lick", "paw_shake", "walk", "active"]
    # rest: tp 3, fp 0, fn 1 -> 2*3/(2*3+1) = 6/7
    assert f1["rest"] == pytest.approx(6 / 7)
    # withdraw: tp 2, fp 1, fn 0 -> 4/5
    assert f1["paw_withdraw"] == pytest.approx(4 / 5)
    # lick: tp 1, fp 0, fn 1 -> 2/3
    assert f1["paw_lick"] == pytest.approx(2 / 3)
    assert f1["paw_shake"] == 0.0  # predicted, never true: all false positives
    assert f1["walk"] is None and f1["active"] is None  # absent from truth and prediction
    assert s["macro_f1"] == pytest.approx((6 / 7 + 4 / 5 + 2 / 3 + 0) / 4)
    assert s["accuracy"] == pytest.approx(6 / 8)
    cm = np.array(s["confusion_matrix"])
    assert cm.shape == (6, 6) and cm.sum() == 8
    assert cm[REST, WITHDRAW] == 1 and cm[LICK, SHAKE] == 1


def test_thresholds_are_fitted_on_val_and_applied_unchanged_to_test():
    # Validation: the model under-calls class 1 (probability 0.3 when it is true).
    val_probs = np.array([[0.7, 0.3, 0, 0, 0, 0]] * 4 + [[0.9, 0.1, 0, 0, 0, 0]] * 6)
    val_labels = np.array([1] * 4 + [0] * 6)
    t = mm.fit_thresholds(val_probs, val_labels)
    assert t[1] == pytest.approx(0.15)  # the lowest grid value separating 0.3 from 0.1 wins
    assert t[0] == pytest.approx(0.75)  # class 0 is best called only at p >= 0.9
    assert t[2:].tolist() == [0.5] * 4  # classes with no validation frames keep 0.5
    # Argmax would call every validation frame class 0; the fitted rule recovers class 1.
    assert (np.argmax(val_probs, 1) == 0).all()
    np.testing.assert_array_equal(mm.apply_thresholds(val_probs, t), val_labels)
    # Applied unchanged to test: p1/0.15 vs p0/0.75 decides.
    test_probs = np.array([[0.8, 0.2, 0, 0, 0, 0], [0.95, 0.05, 0, 0, 0, 0]])
    np.testing.assert_array_equal(mm.apply_thresholds(test_probs, t), [1, 0])
    # Equal thresholds reduce to argmax.
    np.testing.assert_array_equal(mm.apply_thresholds(test_probs, np.full(6, 0.5)), [0, 0])


def test_majority_baseline_predicts_the_train_majority():
    train = np.array([REST] * 10 + [LICK] * 3)
    test = np.array([REST] * 6 + [LICK] * 2 + [WALK] * 2)
    assert mm.majority_class(train) == REST
    # Always rest: rest F1 = 2*6/(2*6+4) = 0.75; lick and walk 0; others absent -> mean over 3.
    assert mm.majority_baseline_macro_f1(train, test) == pytest.approx(0.75 / 3)
    # The train majority, not the test majority, is predicted.
    assert mm.majority_baseline_macro_f1(np.array([LICK] * 5), test) == pytest.approx((2 * 2 / (2 * 2 + 8)) / 3)


def test_keypoint_mae_is_in_pixels_and_masked():
    target = np.zeros((1, 2, 2))  # one frame, two keypoints
    pred = np.array([[[0.1, 0.0], [0.5, 0.5]]])
    mask = np.array([[1.0, 0.0]])  # second keypoint not visible: ignored
    assert mm.keypoint_mae_px(pred, target, mask, np.array([200.0, 100.0])) == pytest.approx((0.1 * 200 + 0) / 2)


def test_stitching_averages_overlaps_and_drops_skipped_windows():
    # Trial 7: windows of 4 frames at rows 0 and 2 (overlap on rows 2-3); trial 9: one skipped window.
    probs = np.zeros((3, 4, 6))
    probs[0, :, 0] = 1.0
    probs[1, :, 1] = 1.0
    labels = np.array([[0, 0, 1, 1], [1, 1, 1, 1], [2, 2, 2, 2]])
    out = mm.stitch_trials([7, 7, 9], [0, 2, 0], probs, labels, [1, 1, 0])
    assert list(out) == [7]
    seq = out[7]
    np.testing.assert_array_equal(seq["labels"], [0, 0, 1, 1, 1, 1])
    np.testing.assert_allclose(seq["probs"][2, :2], [0.5, 0.5])
    np.testing.assert_array_equal(seq["frames"], np.arange(6))


def test_segmental_scores_are_per_trial_with_explicit_background():
    # Two trials; concatenating them would merge the trailing lick of trial 1 with the
    # leading lick of trial 2 into one segment.
    true = [np.array([0, 0, 2, 2]), np.array([2, 2, 0, 0])]
    pred = [np.array([0, 0, 2, 2]), np.array([2, 2, 0, 0])]
    assert mm.segment_scores(pred, true)["edit"] == pytest.approx(100.0)
    rest_bg = mm.segment_scores([np.array([0, 2, 2, 2])], [np.array([0, 0, 2, 2])], mm.BACKGROUND_REST)
    assert rest_bg["edit"] == pytest.approx(100.0)  # only the lick segment counts
    with_rest = mm.segment_scores([np.array([0, 2, 0, 2])], [np.array([0, 0, 2, 2])], mm.BACKGROUND_NONE)
    assert with_rest["edit"] == pytest.approx(50.0)  # 0 2 0 2 vs 0 2: two insertions of four


def _fold(fold, macro_f1, lick, confusion_diag, edit):
    per_class = {"rest": 0.9, "paw_withdraw": 0.5, "paw_lick": lick, "paw_shake": 0.4, "walk": 0.3, "active": 0.2}
    return {
        "fold": fold, "accuracy": 0.8, "macro_f1": macro_f1, "per_class_f1": per_class,
        "confusion_matrix": (np.eye(6, dtype=int) * confusion_diag).tolist(), "edit": edit,
        "segmental_rest_as_background": {"edit": edit / 2, "f1@10": 10.0},
        "argmax": {"macro_f1": macro_f1 - 0.1, "per_class_f1": per_class},
        "thresholds": {"rest": 0.5}, "segment_background": [], "model": "multitask",
        "skipped_samples": fold, "n_test_frames": 100, "n_test_trials": 3,
    }


def test_cv_summary_is_mean_and_t_based_ci95_like_pain():
    folds = [_fold(0, 0.5, 0.6, 1, 40.0), _fold(1, 0.6, None, 2, 50.0), _fold(2, 0.7, 0.8, 3, 60.0)]
    out = mm.summarize_folds(folds)
    # mean 0.6, std(ddof=1) 0.1, t_{0.975, 2} = 4.302653: half-width 4.302653 * 0.1 / sqrt(3)
    assert out["summary"]["macro_f1"] == pytest.approx({"mean": 0.6, "ci95": 4.302653 * 0.1 / np.sqrt(3), "n_folds": 3}, rel=1e-6)
    assert out["macro_f1"] == pytest.approx(0.6) and out["edit"] == pytest.approx(50.0)
    assert out["summary"]["accuracy"]["ci95"] == pytest.approx(0.0, abs=1e-12)  # no spread
    # paw_lick is absent from fold 1's test animals: summarised over the two folds that have it
    assert out["summary"]["per_class_f1"]["paw_lick"] == pytest.approx({"mean": 0.7, "ci95": 12.706205 * np.sqrt(0.02) / np.sqrt(2), "n_folds": 2}, rel=1e-6)
    assert out["per_class_f1"]["paw_lick"] == pytest.approx(0.7)
    assert out["summary"]["segmental_rest_as_background"]["edit"]["mean"] == pytest.approx(25.0)
    assert out["summary"]["argmax"]["macro_f1"]["mean"] == pytest.approx(0.5)
    assert (out["skipped_samples"], out["n_test_frames"], out["n_test_trials"], out["n_folds"]) == (3, 300, 9, 3)
    assert np.array_equal(out["confusion_matrix"], np.eye(6) * 6)
    assert not any(k.endswith("_std") for k in out)  # no population std any more


@pytest.mark.parametrize(
    "module, banned",
    [
        ("affectlab.constants.mouse", ("numpy", "affectlab.data")),
        ("affectlab.metrics.mouse", ("cv2", "h5py", "ray", "torch", "affectlab.data")),
        ("affectlab.report.mouse", ("cv2", "h5py", "ray", "torch", "affectlab.data")),
        ("affectlab.models.mouse_losses", ("cv2", "pandas", "h5py", "ray", "affectlab.data")),
        ("affectlab.serving.mouse", ("affectlab.workloads",)),
    ],
)
def test_layers_import_only_what_they_may(module, banned):
    """Pure layers stay pure (constants: stdlib; metrics/report: no decoders, no torch, no
    data readers), and serving reaches the workload's code through lower layers only."""
    import importlib
    import inspect
    import os
    import subprocess
    import sys
    from pathlib import Path

    code = f"import sys, {module}; print(' '.join(m for m in {banned!r} if m in sys.modules))"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "platform")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.strip() == "", f"{module} imports {out.stdout.strip()}"
    source = inspect.getsource(importlib.import_module(module))  # nor inside a function
    assert not [b for b in banned if b.startswith("affectlab") and f"from {b}" in source]
