"""MS-TCN segmental metrics on hand-worked examples."""

import numpy as np
import pytest

from affectlab.metrics.segments import edit_score, f1_overlap_counts, segmental_scores, segments

A, B = 1, 2
TARGET = [A] * 5 + [B] * 5  # AAAAABBBBB
OVER_SEGMENTED = [A, A, B, A, A, B, B, B, B, B]  # AABAABBBBB


def test_segments_are_half_open_runs_without_background():
    assert segments([0, 0, 1, 1, 1, 0, 2]) == [(0, 0, 2), (1, 2, 5), (0, 5, 6), (2, 6, 7)]
    assert segments([0, 0, 1, 1, 1, 0, 2], background=(0,)) == [(1, 2, 5), (2, 6, 7)]
    assert segments([]) == []
    assert segments(np.array(["rest", "rest", "lick"])) == [("rest", 0, 2), ("lick", 2, 3)]


def test_over_segmentation_lowers_edit_but_not_accuracy():
    # Segments: target A[0,5) B[5,10); prediction A[0,2) B[2,3) A[3,5) B[5,10).
    # Levenshtein(AB, ABAB) = 2 over max length 4 -> Edit 50; 9 of 10 frames right.
    assert edit_score(OVER_SEGMENTED, TARGET) == pytest.approx(50.0)
    assert edit_score(TARGET, TARGET) == pytest.approx(100.0)
    # IoU 0.1: A[0,2) hits A (IoU 0.4); B[2,3) misses; A[3,5) would hit the already-hit A;
    # B[5,10) hits B -> tp 2, fp 2, fn 0.
    assert f1_overlap_counts(OVER_SEGMENTED, TARGET, 0.10) == (2, 2, 0)
    # IoU 0.5: both A pieces have IoU 0.4 -> only B[5,10) is a hit -> tp 1, fp 3, fn 1.
    assert f1_overlap_counts(OVER_SEGMENTED, TARGET, 0.50) == (1, 3, 1)
    scores = segmental_scores([OVER_SEGMENTED], [TARGET])
    assert scores["accuracy"] == pytest.approx(90.0)
    assert scores["edit"] == pytest.approx(50.0)
    assert scores["f1@10"] == pytest.approx(200 * 0.5 * 1.0 / 1.5)  # 66.7
    assert scores["f1@25"] == pytest.approx(200 * 0.5 * 1.0 / 1.5)
    assert scores["f1@50"] == pytest.approx(200 * 0.25 * 0.5 / 0.75)  # 33.3


def test_prediction_is_matched_to_its_best_iou_segment():
    # One long predicted A over target A[0,3) B[3,4) A[4,10): IoU 0.3 with the first A and
    # 0.6 with the second. Best-IoU matching makes it a hit at 0.5; first-hit would not.
    target = [A, A, A, B, A, A, A, A, A, A]
    assert f1_overlap_counts([A] * 10, target, 0.5) == (1, 0, 2)


def test_background_choice_changes_the_scores():
    target = [0, 0, 1, 1, 1, 0, 0, 2, 2, 0]
    pred = [0, 1, 1, 1, 0, 0, 0, 2, 2, 2]
    # Everything counted: segment labels 0 1 0 2 0 vs 0 1 0 2 -> one deletion over 5.
    assert edit_score(pred, target) == pytest.approx(80.0)
    # Rest (0) as background: 1 2 vs 1 2.
    assert edit_score(pred, target, background=(0,)) == pytest.approx(100.0)
    # With rest: pred 0[0,1) 1[1,4) 0[4,7) 2[7,10) all hit at IoU >= 0.5; target 0[9,10) missed.
    assert f1_overlap_counts(pred, target, 0.5) == (4, 0, 1)
    assert f1_overlap_counts(pred, target, 0.5, background=(0,)) == (2, 0, 0)
    assert segmental_scores([pred], [target])["f1@50"] == pytest.approx(200 * 0.8 / 1.8)
    assert segmental_scores([pred], [target], background=(0,))["f1@50"] == pytest.approx(100.0)


def test_counts_are_summed_over_sequences_and_edit_is_averaged():
    # Sequence 1 perfect (one segment); sequence 2 merges A|B into one A (IoU 0.5).
    preds = [[0] * 10, [A] * 10]
    targets = [[0] * 10, [A] * 5 + [B] * 5]
    assert f1_overlap_counts(preds[1], targets[1], 0.1) == (1, 0, 1)
    scores = segmental_scores(preds, targets)
    # Summed: tp 2, fp 0, fn 1 -> F1 = 2*1*(2/3)/(5/3) = 80 (mean of per-sequence F1 would be 83.3).
    assert scores["f1@10"] == pytest.approx(80.0)
    assert scores["f1@50"] == pytest.approx(80.0)
    assert scores["edit"] == pytest.approx((100.0 + 50.0) / 2)
    assert scores["accuracy"] == pytest.approx(75.0)


def test_empty_and_invalid_inputs():
    assert edit_score([0, 0], [0, 0], background=(0,)) == 100.0
    assert segmental_scores([[0, 0]], [[0, 0]], background=(0,))["f1@50"] == 100.0
    assert f1_overlap_counts([A, A], [0, 0], 0.5, background=(0,)) == (0, 1, 0)
    assert f1_overlap_counts([0, 0], [A, A], 0.5, background=(0,)) == (0, 0, 1)
    with pytest.raises(ValueError):
        f1_overlap_counts(TARGET, TARGET, 50)
    with pytest.raises(ValueError):
        segmental_scores([[0, 1]], [[0, 1, 1]])
