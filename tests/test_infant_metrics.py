"""Infant metrics and refinement selection, against hand-worked examples."""

import numpy as np
import pytest

from affectlab.metrics.infant import (
    BestGeneration,
    accuracy,
    confident,
    confusion,
    diversity,
    feature_ratio,
    fid,
    mean_ci95,
    multimodality,
    per_class_accuracy,
    select_by_feature_ratio,
    select_middle,
)


def test_accuracy_confusion_per_class():
    y_true, y_pred = [0, 0, 1, 2], [0, 1, 1, 0]
    assert accuracy(y_true, y_pred) == 0.5
    cm = confusion(y_true, y_pred, num_classes=4)
    np.testing.assert_array_equal(cm, [[1, 1, 0, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]])
    assert np.trace(cm) / cm.sum() == accuracy(y_true, y_pred)
    np.testing.assert_array_equal(per_class_accuracy(y_true, y_pred, 4), [0.5, 1.0, 0.0, np.nan])
    with pytest.raises(ValueError, match="equally many"):
        accuracy([0, 1], [0])


def test_fid_hand_worked():
    # 1-D: means 1 and 3, variances (ddof 1) 2 and 8: (1 - 3)^2 + 2 + 8 - 2 * sqrt(2 * 8) = 6
    assert fid([[0.0], [2.0]], [[1.0], [5.0]]) == pytest.approx(6.0)
    rng = np.random.default_rng(0)
    real = rng.normal(size=(300, 6)) @ rng.normal(size=(6, 6))  # correlated features
    assert abs(fid(real, real)) < 1e-6
    shift = np.array([0.5, -1.0, 0.0, 2.0, 0.25, -0.75])
    # equal covariances: the trace terms cancel and FID is exactly |shift|^2
    assert fid(real, real + shift) == pytest.approx(float(shift @ shift), rel=1e-8)
    assert fid(real, real + 2 * shift) == pytest.approx(4 * float(shift @ shift), rel=1e-8)
    with pytest.raises(ValueError, match="at least 2 samples"):
        fid(real[:1], real)


def test_diversity_hand_worked():
    features = np.array([[0.0, 0.0], [3.0, 4.0], [6.0, 8.0]])  # distances 5, 5, 10
    # seed 0 draws first = [2, 1, 1, 0], second = [0, 0, 0, 0]: distances 10, 5, 5, 0
    assert diversity(features, num_pairs=4, seed=0) == pytest.approx(5.0)
    assert diversity(np.ones((5, 3)), seed=1) == 0.0
    # 200 pairs by default; on two points at distance d about half the pairs differ
    two = np.array([[0.0], [8.0]])
    assert 3.0 < diversity(two) < 5.0
    assert diversity(3 * features, seed=4) == pytest.approx(3 * diversity(features, seed=4))


def test_multimodality_hand_worked():
    features = np.array([[0.0], [1.0], [10.0], [12.0], [15.0]])
    labels = np.array([0, 0, 1, 1, 1])
    # seed 0: class 0 pairs (1,0) x3 -> 1+1+1; class 1 pairs (2,4), (2,3), (2,4) -> 5+2+5
    # (3 + 12) / (3 pairs * 2 classes) = 2.5
    assert multimodality(features, labels, num_pairs=3, seed=0) == pytest.approx(2.5)
    # identical within each class: 0, however far apart the classes are
    same = np.array([[0.0], [0.0], [100.0], [100.0]])
    assert multimodality(same, [0, 0, 1, 1], seed=3) == 0.0 and diversity(same, seed=3) > 0
    with pytest.raises(ValueError, match=r"classes \[2\] have no samples"):
        multimodality(features, labels, num_classes=3)


def test_mean_ci95_is_std_over_sqrt_n():
    mean, half = mean_ci95([1.0, 2.0, 3.0, 4.0])
    # std (ddof 1) = sqrt(5 / 3); 1.96 * 1.2910 / 2 = 1.2652 (the original printed 1.96 * var = 2.45)
    assert mean == 2.5 and half == pytest.approx(1.96 * np.sqrt(5 / 3) / 2) and half == pytest.approx(1.2651746)
    assert mean_ci95([0.7]) == (0.7, 0.0)
    with pytest.raises(ValueError):
        mean_ci95([])


def test_confidence_filter():
    logits = np.array([[2.0, 0, 0], [0, 0, 0], [0, 3.0, 0], [5.0, 0, 0]])
    labels = np.array([0, 0, 1, 1])
    keep, score = confident(logits, labels)  # softmax maxima 0.787, 1/3, 0.909, 0.987
    np.testing.assert_allclose(score, [np.e**2 / (np.e**2 + 2), 1 / 3, np.e**3 / (np.e**3 + 2), np.e**5 / (np.e**5 + 2)])
    np.testing.assert_array_equal(keep, [True, False, True, False])  # last: confident but wrong
    np.testing.assert_array_equal(confident(logits, labels, threshold=0.8)[0], [False, False, True, False])


def test_feature_ratio_hand_worked_and_finite():
    train, train_labels = np.array([[0.0], [2.0], [10.0]]), np.array([0, 0, 1])
    generated, labels = np.array([[1.0], [3.0], [5.0], [9.0]]), np.array([0, 0, 0, 1])
    ratio = feature_ratio(generated, labels, train, train_labels)
    # class 0: within 1, 2, 4 -> 0, 1/3, 1; between 9, 7, 5 -> 1, 1/2, 0
    # ratio = 0.6 w / (0.4 b + 1e-6); class 1 has one sample: 0 / 1e-6 = 0 (defect 8)
    np.testing.assert_allclose(ratio, [0.0, 0.2 / (0.2 + 1e-6), 0.6 / 1e-6, 0.0])
    assert np.isfinite(feature_ratio(np.zeros((3, 2)), [0, 0, 1], np.ones((2, 2)), [0, 1])).all()
    with pytest.raises(ValueError, match="class 0: the training features need samples of this class and of others"):
        feature_ratio(generated, labels, train[:2], train_labels[:2])


def test_select_middle_hand_worked():
    ratio = np.array([5.0, 1.0, 4.0, 2.0, 3.0, 0.3, 0.1])
    labels = np.array([0, 0, 0, 0, 0, 1, 1])
    # min class count 2 -> n = 1; class 0 ranked [1, 3, 4, 2, 0], start 5//2 - 0 = 2 -> 4;
    # class 1 ranked [6, 5], start 1 -> 5
    np.testing.assert_array_equal(select_middle(ratio, labels, num_classes=2), [4, 5])
    # n = int(0.5 * 4) = 2: class 0 start 5//2 - 1 = 1 -> ranked[1:3] = [3, 4]
    more = np.concatenate([ratio, [0.2, 0.4]])
    np.testing.assert_array_equal(select_middle(more, np.concatenate([labels, [1, 1]]), 2), [3, 4, 7, 5])


def test_select_by_feature_ratio_skips_unbalanced_rounds():
    rng = np.random.default_rng(0)
    labels = np.array([0, 0, 0, 1, 1, 1])
    logits = np.where(np.eye(2)[labels] > 0, 4.0, 0.0)  # all recognised at 0.98
    logits[4] = [4.0, 0.0]  # one class-1 sample is misrecognised
    features = rng.normal(size=(6, 4))
    train, train_labels = rng.normal(size=(10, 4)), np.arange(10) % 2
    chosen = select_by_feature_ratio(logits, labels, features, train, train_labels, num_classes=2)
    assert not chosen.skipped and chosen.survivors.tolist() == [3, 2]
    assert len(chosen.indices) == 2 and 4 not in chosen.indices  # n = int(0.5 * 2) = 1 per class
    assert sorted(labels[chosen.indices]) == [0, 1] and (chosen.scores > 0.75).all()
    logits[5] = [4.0, 0.0]  # class 1 now has a single survivor: the round is skipped
    skipped = select_by_feature_ratio(logits, labels, features, train, train_labels, num_classes=2)
    assert skipped.skipped and len(skipped.indices) == 0 and "[1]" in skipped.reason
    missing = select_by_feature_ratio(logits[:3], labels[:3], features[:3], train, train_labels, num_classes=2)
    assert missing.skipped and missing.survivors.tolist() == [3, 0]


def test_best_generation_resets_after_every_round():
    best = BestGeneration()
    assert best.offer(0.5, 1, "a") and not best.offer(0.4, 2, "b") and best.offer(0.6, 3, "c")
    assert best.take() == (3, "c")  # the round used epoch 3, whether it then adds data or is skipped
    assert best.offer(0.1, 11, "d")  # a fresh round: 0.6 no longer blocks later epochs (defect 6)
    assert best.take() == (11, "d") and best.take() == (None, None)
