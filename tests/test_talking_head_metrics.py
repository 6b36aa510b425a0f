"""Talking-head metrics (metrics/talking_heads.py) against hand-worked examples.

Two sequences of different lengths (A: 2 frames, B: 1 frame) so that pooling all frames
(frame-weighted) and averaging sequences give different numbers; 3 vertices, lips = {0, 1},
vertex 2 outside the lips. Errors are written as pred − gt per frame and vertex.
"""

import math

import numpy as np
import pytest

from affectlab.metrics.talking_heads import (
    ce,
    expression_stats_by_emotion,
    fdd,
    jaw_envelope_pearson,
    lve_max_l2_mm,
    lve_probtalk3d,
    mee,
    mve,
    sample_diversity,
    talking_head_metrics,
)

LIPS = np.array([0, 1])
rng = np.random.default_rng(0)
GT_A = rng.normal(size=(3, 3, 3))  # 3 frames: the prediction has 2, so frame 2 is cropped away
GT_B = rng.normal(size=(1, 3, 3))
GT_A[2] = 1e6  # any use of the cropped frame would explode every metric

# sample 0 errors
E0_A = np.array([
    [[3, 4, 0], [1, 0, 0], [10, 0, 0]],  # frame 0: |e| = 5, 1, 10;  |e|² = 25, 1, 100
    [[0, 1, 0], [0, 0, 2], [10, 0, 0]],  # frame 1: |e| = 1, 2, 10;  |e|² = 1, 4, 100
], dtype=float)  # fmt: skip
E0_B = np.array([[[1, 1, 1], [0, 0, 0], [0, 0, 0]]], dtype=float)  # |e| = √3, 0, 0; |e|² = 3
# sample 1 errors
E1_A = np.array([
    [[0, 0, 1], [0, 0, 0], [0, 0, 0]],  # |e|² = 1, 0
    [[2, 0, 0], [0, 0, 0], [0, 0, 0]],  # |e|² = 4, 0
], dtype=float)  # fmt: skip
E1_B = np.array([[[2, 0, 0], [0, 0, 0], [0, 0, 0]]], dtype=float)  # |e|² = 4

GT = [GT_A, GT_B]
SAMPLES = [
    np.stack([GT_A[:2] + E0_A, GT_A[:2] + E1_A]),
    np.stack([GT_B + E0_B, GT_B + E1_B]),
]


def test_mve_first_sample_frame_weighted():
    # per-frame mean over the 3 vertices: A (5+1+10)/3 = 16/3, (1+2+10)/3 = 13/3; B √3/3
    # frame-weighted: (16/3 + 13/3 + √3/3) / 3 frames  (sequence mean would be ((29/6) + √3/3) / 2)
    expected = (16 / 3 + 13 / 3 + math.sqrt(3) / 3) / 3
    assert mve(GT, SAMPLES) == pytest.approx(expected)
    assert mve(GT, SAMPLES) != pytest.approx((29 / 6 + math.sqrt(3) / 3) / 2)


def test_lve_is_squared_max_lip_error_frame_weighted():
    # max over lips of |e|²: A 25, 4; B 3 (vertex 2's 100 is not a lip) → (25 + 4 + 3) / 3
    assert lve_probtalk3d(GT, SAMPLES, LIPS) == pytest.approx(32 / 3)
    # not the sequence mean ((25+4)/2 + 3) / 2 = 8.75
    assert lve_probtalk3d(GT, SAMPLES, LIPS) != pytest.approx(8.75)


def test_3diface_lve_is_unsquared_in_mm():
    # max over lips of |e|: A 5, 2; B √3 → mean, × 1000 mm
    first = [s[0] for s in SAMPLES]
    assert lve_max_l2_mm(GT, first, LIPS) == pytest.approx((5 + 2 + math.sqrt(3)) / 3 * 1000)


def test_mee_uses_the_mean_of_the_samples():
    # mean error (E0 + E1) / 2 on the lips:
    # A f0: v0 (1.5, 2, .5) → 6.5, v1 (.5, 0, 0) → .25 → 6.5;  A f1: v0 (1, .5, 0) → 1.25, v1 (0, 0, 1) → 1 → 1.25
    # B: v0 (1.5, .5, .5) → 2.75 → (6.5 + 1.25 + 2.75) / 3
    assert mee(GT, SAMPLES, LIPS) == pytest.approx(10.5 / 3)


def test_ce_takes_the_closest_sample_per_sequence():
    # A: sample 0 sums 25 + 4 = 29, sample 1 sums 1 + 4 = 5 → sample 1 (1, 4)
    # B: sample 0 = 3, sample 1 = 4 → sample 0 (3) → (1 + 4 + 3) / 3
    assert ce(GT, SAMPLES, LIPS) == pytest.approx(8 / 3)


def test_fdd_is_signed_and_averaged_over_sequences():
    template = np.array([[0.5, -1.0, 2.0], [1.0, 1.0, 1.0]])
    upper = np.array([0, 1])
    # displacements from the template; squared norms per frame, std over time, mean over vertices
    gt_a = np.array([[[1, 0, 0], [0, 0, 0]], [[2, 0, 0], [0, 0, 0]]], float)  # v0 [1, 4] → 1.5, v1 [0, 0] → 0: 0.75
    pr_a = np.array([[[1, 0, 0], [0, 0, 0]], [[1, 0, 0], [1, 0, 0]]], float)  # v0 [1, 1] → 0, v1 [0, 1] → 0.5: 0.25
    gt_b = np.array([[[0, 0, 0], [1, 0, 0]]] * 3, float)  # v0 [0,0,0] → 0, v1 [1,1,1] → 0: 0
    pr_b = np.array([[[0, 0, 0], [0, 0, 0]], [[0, 0, 0], [0, 0, 0]], [[1, 1, 1], [0, 0, 0]]], float)  # v0 [0,0,3] → √2: √2/2
    gt = [gt_a + template, gt_b + template]
    pred = [(pr_a + template)[None], (pr_b + template)[None]]
    # A: 0.75 − 0.25 = +0.5 (prediction too still); B: 0 − √2/2 (prediction moves more)
    expected = (0.5 - math.sqrt(2) / 2) / 2  # sequence mean, not frame-weighted (2·0.5 − 3·√2/2) / 5
    assert fdd(gt, pred, upper, template) == pytest.approx(expected)
    swapped = fdd([p[0] for p in pred], [g[None] for g in gt], upper, template)
    assert swapped == pytest.approx(-expected) and swapped > 0


def diversity_samples():
    """Displacements along (0.6, 0.8, 0) (unit vector), so ‖a − b‖ = |x_a − x_b|."""
    u = np.array([0.6, 0.8, 0.0])
    # sequence 1: 4 samples, 1 frame, 2 vertices (vertex 1 never differs)
    x1 = np.array([0.0, 10.0, 1.0, 3.0])
    seq1 = np.zeros((4, 1, 2, 3))
    seq1[:, 0, 0] = x1[:, None] * u
    # sequence 2: 4 samples, 2 frames, 1 vertex (frame 1 never differs)
    x2 = np.array([0.0, 10.0, 20.0, 40.0])
    seq2 = np.zeros((4, 2, 1, 3))
    seq2[:, 0, 0] = x2[:, None] * u
    return [seq1, seq2]


def test_sample_diversity_shuffled_pairs_with_seed():
    samples = diversity_samples()
    # seed 1234: default_rng(1234).permutation(4) = [0 3 1 2] for sequence 1, then [1 2 3 0] for sequence 2
    #   seq 1 pairs (0,3) |0−3| = 3, (1,2) |10−1| = 9 → mean 6, halved by the still vertex → 3
    #   seq 2 pairs (1,2) 10, (3,0) 40 → 25, halved by the still frame → 12.5;  mean (3 + 12.5) / 2
    assert sample_diversity(samples, seed=1234) == pytest.approx(7.75)
    # seed 7: permutations [0 2 1 3] and [3 1 2 0]
    #   seq 1 (0,2) 1, (1,3) 7 → 4 → 2;  seq 2 (3,1) 30, (2,0) 20 → 25 → 12.5;  mean 7.25
    assert sample_diversity(samples, seed=7) == pytest.approx(7.25)
    assert sample_diversity(samples) == sample_diversity(samples, seed=1234)  # the default seed


def test_sample_diversity_of_identical_samples_is_zero_and_needs_two():
    same = [np.repeat(rng.normal(size=(1, 5, 4, 3)), 10, axis=0)]
    assert sample_diversity(same) == 0.0
    with pytest.raises(ValueError, match="S ≥ 2"):
        sample_diversity([same[0][:1]])


def test_all_metrics_together_and_shape_errors():
    template = np.zeros((3, 3))
    out = talking_head_metrics(GT, SAMPLES, lip_idx=LIPS, upper_idx=np.array([2]), template=template)
    assert set(out) == {"mve", "lve_probtalk3d", "mee", "ce", "fdd", "sample_diversity"}
    assert out["lve_probtalk3d"] == pytest.approx(32 / 3)
    with pytest.raises(ValueError, match=r"samples\[0\] must be \(S, T, V, 3\)"):
        mve(GT, [s[0] for s in SAMPLES])
    with pytest.raises(ValueError, match="does not fit"):
        mve([GT_B, GT_B], SAMPLES)  # 2 predicted frames, 1 true frame
    with pytest.raises(ValueError, match="2 ground-truth sequences but 1"):
        mve(GT, SAMPLES[:1])


def test_jaw_envelope_pearson():
    # deviations from the mean 2.5: jaw (−1.5, −.5, .5, 1.5), envelope (−1.5, .5, −.5, 1.5)
    # covariance sum 2.25 − .25 − .25 + 2.25 = 4; each variance sum 5 → r = 4 / 5
    assert jaw_envelope_pearson([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert jaw_envelope_pearson([1, 2, 3], [6, 4, 2]) == pytest.approx(-1.0)
    assert math.isnan(jaw_envelope_pearson([1, 1, 1], [1, 2, 3]))  # a still jaw has no correlation
    with pytest.raises(ValueError, match="same length"):
        jaw_envelope_pearson([1, 2, 3], [1, 2])


def test_expression_stats_by_emotion_pools_frames():
    expressions = [np.array([[3.0, 4.0]]), np.array([[0.0, 0.0], [6.0, 8.0]]), np.array([[1.0, 0.0]])]
    stats = expression_stats_by_emotion(expressions, [1, 1, 0], emotion_names=["neutral", "happy"])
    happy = stats["happy"]
    # frames (3,4), (0,0), (6,8): mean (3, 4); x: 3, 0, 6 → var 6; y: 4, 0, 8 → var 32/3; norms 5, 0, 10
    assert happy["sequences"] == 2 and happy["frames"] == 3
    assert happy["mean"] == pytest.approx([3.0, 4.0])
    assert happy["std"] == pytest.approx([math.sqrt(6), math.sqrt(32 / 3)])
    assert happy["magnitude"] == pytest.approx(5.0)
    assert stats["neutral"]["magnitude"] == pytest.approx(1.0)
    with pytest.raises(ValueError, match="emotion index 3 has no name"):
        expression_stats_by_emotion(expressions, [3, 1, 0], emotion_names=["neutral", "happy"])
