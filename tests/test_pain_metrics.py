"""Pain metrics against numbers worked out by hand (reference/pain.md section 7.2)."""

import numpy as np
import pytest

from affectlab.metrics.pain import (
    PSPI_THRESHOLDS,
    auroc,
    calibrate_threshold,
    calibrated_f1,
    ci95,
    f1_at,
    fold_metrics,
    mae,
    pearson,
    summarize_folds,
    undefined_notes,
)

GRID_STEP = 6 / 199  # np.linspace(0, 6, 200) spacing

# A fold where the model under-predicts on test: train-fitted thresholds are too high.
TRAIN_PRED = [0.0, 1.0, 2.0, 3.0, 4.0]
TRAIN_TARGET = [0, 1, 2, 3, 4]
TEST_PRED = [0.5, 0.8, 1.0, 2.5]
TEST_TARGET = [0, 1, 2, 3]


def test_thresholds_constant():
    assert PSPI_THRESHOLDS == (1, 2, 3)


def test_mae():
    # |1-2| + |2-2| + |3-5| = 1 + 0 + 2 = 3; 3 / 3 = 1.0
    assert mae([1, 2, 3], [2, 2, 5]) == pytest.approx(1.0)


def test_pearson_hand_example():
    # x=[1,2,3], y=[1,3,2]: dx=[-1,0,1], dy=[-1,1,0]; sum dx*dy = 1;
    # sum dx^2 = sum dy^2 = 2  ->  r = 1 / sqrt(2*2) = 0.5
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_pearson_edge_cases():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)  # perfect
    assert pearson([1, 2, 3], [6, 4, 2]) == pytest.approx(-1.0)  # anti
    assert pearson([2, 2, 2], [1, 2, 3]) == 0.0  # constant prediction
    assert pearson([1, 2, 3], [0, 0, 0]) == 0.0  # constant target
    assert pearson([1.0], [3.0]) == 0.0  # n < 2
    assert pearson([], []) == 0.0


def test_auroc_counts_concordant_pairs():
    # target >= 2 -> positives have pred 0.35, 0.8; negatives 0.1, 0.4.
    # pairs (pos > neg): (0.35,0.1) yes, (0.35,0.4) no, (0.8,0.1) yes, (0.8,0.4) yes
    # -> 3 of 4 = 0.75
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 2, 3], 2) == pytest.approx(0.75)


def test_auroc_ties_count_half():
    # positives 1, 2; negatives 1, 0: (1,1) tie = 0.5, (1,0) 1, (2,1) 1, (2,0) 1 -> 3.5/4
    assert auroc([1, 0, 1, 2], [0, 0, 1, 1], 1) == pytest.approx(0.875)


def test_auroc_single_class_is_zero():
    # nobody reaches PSPI 3 -> undefined; the reference reports 0.0
    assert auroc([0.1, 0.4, 0.35, 0.8], [0, 0, 2, 2], 3) == 0.0
    assert auroc([0.1, 0.4], [5, 6], 1) == 0.0


def test_f1_at():
    # positives (target >= 1): [0, 1, 1]
    # decision 1.0 -> predicted [0, 1, 1]: tp=2 -> F1 = 1.0
    assert f1_at([0.5, 2, 3], [0, 1, 3], 1, 1.0) == pytest.approx(1.0)
    # decision 2.5 -> predicted [0, 0, 1]: tp=1, fn=1 -> 2/(2+0+1) = 2/3
    assert f1_at([0.5, 2, 3], [0, 1, 3], 1, 2.5) == pytest.approx(2 / 3)
    # no positives predicted or present -> zero_division = 0
    assert f1_at([0.5, 0.5], [0, 0], 1, 1.0) == 0.0


def test_calibrate_threshold_explicit_grid():
    # labels (target >= 2) = [0,0,1,1]; F1 = 2tp / (2tp + fp + fn)
    # thr 0: tp2 fp2 -> 4/6; thr 1: tp2 fp1 -> 4/5; thr 2: tp2 -> 1.0; thr 3: tp1 fn1 -> 2/3
    thr = calibrate_threshold([0.5, 1.5, 2.5, 3.5], [0, 0, 2, 2], 2, grid=[0, 1, 2, 3])
    assert thr == 2.0


def test_calibrate_threshold_ties_pick_smallest():
    # labels [0, 1]: thr 0 -> 2/3, thr 1 -> 1.0, thr 2 -> 1.0, thr 3 -> 0  => first max = 1
    assert calibrate_threshold([0.5, 2.5], [0, 1], 1, grid=[0, 1, 2, 3]) == 1.0


def test_calibrate_threshold_default_grid():
    # any threshold in (0, 3] separates perfectly; thr 0 flags everyone (F1 = 4/6).
    # first grid value above 0 is 6/199 = 0.030151
    thr = calibrate_threshold([0, 0, 3, 3], [0, 0, 3, 3], 1)
    assert thr == pytest.approx(GRID_STEP)


def test_calibrated_f1_uses_train_thresholds():
    f1s, thresholds = calibrated_f1(TRAIN_PRED, TRAIN_TARGET, TEST_PRED, TEST_TARGET)
    # Train preds equal targets, so PSPI >= t is separated perfectly by any cut in (t-1, t].
    # Smallest grid value above t-1, grid step 6/199:
    #   t=1: k=1  -> 6/199   = 0.0302
    #   t=2: k=34 -> 204/199 = 1.0251  (k=33 gives 0.9950 <= 1)
    #   t=3: k=67 -> 402/199 = 2.0201  (k=66 gives 1.9899 <= 2)
    assert thresholds["1"] == pytest.approx(6 / 199)
    assert thresholds["2"] == pytest.approx(204 / 199)
    assert thresholds["3"] == pytest.approx(402 / 199)
    # Test preds [0.5, 0.8, 1.0, 2.5], targets [0, 1, 2, 3]:
    #   t=1: truth [0,1,1,1], pred >= 0.030 -> [1,1,1,1]: tp3 fp1 -> 6/7 = 0.857
    #   t=2: truth [0,0,1,1], pred >= 1.025 -> [0,0,0,1]: tp1 fn1 -> 2/3
    #   t=3: truth [0,0,0,1], pred >= 2.020 -> [0,0,0,1]: tp1 -> 1.0
    assert f1s["1"] == pytest.approx(6 / 7)
    assert f1s["2"] == pytest.approx(2 / 3)
    assert f1s["3"] == pytest.approx(1.0)
    # macro = (18/21 + 14/21 + 21/21) / 3 = 53/63 = 0.8413
    assert f1s["macro"] == pytest.approx(53 / 63)
    # Calibrating on the test fold itself would pick a different cut at t=1:
    # first grid value above 0.5 is k=17 -> 102/199 = 0.5126, which scores F1 = 1.0.
    assert calibrate_threshold(TEST_PRED, TEST_TARGET, 1) == pytest.approx(102 / 199)
    assert f1_at(TEST_PRED, TEST_TARGET, 1, 102 / 199) == pytest.approx(1.0)


def test_ci95_five_folds():
    # mean 0.3; deviations^2 = .04 .01 0 .01 .04 -> sum .10; std(ddof=1) = sqrt(.10/4) = 0.1581
    # t(0.975, 4) = 2.776 -> h = 2.776 * 0.1581 / sqrt(5) = 2.776 * 0.1581 / 2.236 = 0.1963
    out = ci95([0.1, 0.2, 0.3, 0.4, 0.5])
    assert out["mean"] == pytest.approx(0.3)
    assert out["ci95"] == pytest.approx(0.1963, abs=1e-4)


def test_ci95_small_n():
    # n=2: [1, 3] -> mean 2, std(ddof=1) = sqrt(2), se = sqrt(2)/sqrt(2) = 1, t(0.975, 1) = 12.706
    out = ci95([1.0, 3.0])
    assert out["mean"] == pytest.approx(2.0)
    assert out["ci95"] == pytest.approx(12.706, abs=1e-3)
    # n=1: no spread to estimate -> 0.0 by convention
    assert ci95([0.7]) == {"mean": pytest.approx(0.7), "ci95": 0.0}
    with pytest.raises(ValueError):
        ci95([])


def test_fold_metrics_hand_example():
    out = fold_metrics(TEST_PRED, TEST_TARGET, TRAIN_PRED, TRAIN_TARGET)
    assert set(out) == {"mae", "pearson", "auroc", "f1_train_calibrated", "thresholds"}
    assert set(out["auroc"]) == {"1", "2", "3"}
    assert set(out["f1_train_calibrated"]) == {"1", "2", "3", "macro"}
    assert set(out["thresholds"]) == {"1", "2", "3"}
    # |0.5-0| + |0.8-1| + |1.0-2| + |2.5-3| = 0.5 + 0.2 + 1.0 + 0.5 = 2.2; / 4 = 0.55
    assert out["mae"] == pytest.approx(0.55)
    # mean x 1.2, mean y 1.5; dx = [-.7,-.4,-.2,1.3], dy = [-1.5,-.5,.5,1.5]
    # sum dx*dy = 1.05 + .2 - .1 + 1.95 = 3.1; sum dx^2 = 2.38; sum dy^2 = 5
    # r = 3.1 / sqrt(11.9) = 0.8986
    assert out["pearson"] == pytest.approx(3.1 / np.sqrt(11.9))
    assert out["pearson"] == pytest.approx(0.8986, abs=1e-4)
    # predictions are in the same order as the targets -> every threshold ranks perfectly
    assert out["auroc"] == {"1": 1.0, "2": 1.0, "3": 1.0}
    assert out["f1_train_calibrated"]["macro"] == pytest.approx(53 / 63)
    assert out["thresholds"]["2"] == pytest.approx(204 / 199)
    assert all(isinstance(v, float) for v in out["auroc"].values())


def test_summarize_folds_nesting_and_values():
    def fold(k, m, a):
        return {
            "fold": k,
            "mae": m,
            "pearson": 0.5,
            "auroc": {"1": a, "2": a, "3": 0.0},
            "f1_train_calibrated": {"1": 0.4, "2": 0.4, "3": 0.4, "macro": 0.4},
            "thresholds": {"1": 0.1, "2": 1.0, "3": 2.0},
        }

    summary = summarize_folds([fold(0, 1.0, 0.6), fold(1, 2.0, 0.7), fold(2, 3.0, 0.8)])
    assert set(summary) == {"mae", "pearson", "auroc", "f1_train_calibrated"}
    # mae [1,2,3]: mean 2, std 1, se 1/sqrt(3) = 0.5774, t(0.975, 2) = 4.303 -> h = 2.484
    assert summary["mae"]["mean"] == pytest.approx(2.0)
    assert summary["mae"]["ci95"] == pytest.approx(2.484, abs=1e-3)
    # auroc@1 [.6,.7,.8]: mean .7, std .1 -> h = 4.303 * .1 / 1.732 = 0.2484
    assert summary["auroc"]["1"]["mean"] == pytest.approx(0.7)
    assert summary["auroc"]["1"]["ci95"] == pytest.approx(0.2484, abs=1e-4)
    # identical values across folds -> zero width
    assert summary["pearson"] == {"mean": pytest.approx(0.5), "ci95": pytest.approx(0.0), "n": 3}
    assert summary["f1_train_calibrated"]["macro"]["mean"] == pytest.approx(0.4)
    assert summary["auroc"]["3"]["mean"] == 0.0


def test_summarize_folds_of_real_fold_metrics():
    folds = [
        {"fold": 0, **fold_metrics(TEST_PRED, TEST_TARGET, TRAIN_PRED, TRAIN_TARGET)},
        {"fold": 1, **fold_metrics(TRAIN_PRED, TRAIN_TARGET, TRAIN_PRED, TRAIN_TARGET)},
    ]
    summary = summarize_folds(folds)
    # fold 1 is perfect (mae 0), fold 0 has mae 0.55 -> mean 0.275
    assert summary["mae"]["mean"] == pytest.approx(0.275)
    assert summary["f1_train_calibrated"]["1"]["mean"] == pytest.approx((6 / 7 + 1.0) / 2)
    with pytest.raises(ValueError):
        summarize_folds([])


def test_input_validation():
    with pytest.raises(ValueError, match="same length"):
        mae([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="finite"):
        pearson([1.0, np.nan, 2.0], [1, 2, 3])
    with pytest.raises(ValueError, match="finite"):
        auroc([1.0, np.inf], [0, 2], 1)
    with pytest.raises(ValueError, match="same length"):
        calibrated_f1([1, 2], [1, 2, 3], [1], [1])
    with pytest.raises(ValueError, match="finite"):
        fold_metrics([np.nan], [1], [1], [1])


def test_a_threshold_without_calibration_positives_is_undefined_and_left_out_of_the_macro():
    """Train side: PSPI 0, 0, 1, 2 (no frame at PSPI ≥ 3). Predictions equal the targets, so
    the grid (0–6) picks the smallest cut-off separating each class: 0.030 for ≥ 1
    (first grid value above 0) and 1.025 for ≥ 2. Test side: targets 0, 1, 2, 3 with the same
    perfect predictions: F1@1 = F1@2 = 1. F1@3 has no threshold: None, and the macro mean is
    (1 + 1) / 2 = 1, not (1 + 1 + 0) / 3."""
    train = np.array([0.0, 0.0, 1.0, 2.0])
    test = np.array([0.0, 1.0, 2.0, 3.0])
    f1s, thresholds = calibrated_f1(train, train, test, test)
    assert thresholds["1"] == pytest.approx(6 / 199) and thresholds["2"] == pytest.approx(34 * 6 / 199)
    assert thresholds["3"] is None and f1s["3"] is None
    assert f1s["1"] == 1.0 and f1s["2"] == 1.0 and f1s["macro"] == 1.0
    fold = {"fold": 0, "f1_train_calibrated": f1s, "thresholds": thresholds}
    assert undefined_notes(fold) and "PSPI >= 3" in undefined_notes(fold)[0]
    # the summary over folds leaves the undefined fold out and says how many it used
    other = {"fold": 1, "f1_train_calibrated": {"1": 0.5, "2": 0.5, "3": 0.5, "macro": 0.5}, "thresholds": {}}
    summary = summarize_folds([fold, other])
    assert summary["f1_train_calibrated"]["3"] == {"mean": 0.5, "ci95": 0.0, "n": 1}
    assert summary["f1_train_calibrated"]["macro"]["n"] == 2
    assert summarize_folds([fold])["f1_train_calibrated"]["3"] == {"mean": None, "ci95": None, "n": 0}
