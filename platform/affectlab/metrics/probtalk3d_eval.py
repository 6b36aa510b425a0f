"""ProbTalk3D scores that pool the §4.5 talking-head metrics over a test set one sequence at a
time, and the training-time validation metrics in the scaled motion space. Pure numpy.

A real 3DMEAD test split (≈2,000 sequences × 10 samples × 5023 vertices) does not fit in
memory at once, so each sequence is scored alone with the functions of
``metrics.talking_heads`` and the results are pooled with each metric's own rule
(``pool_sequence_scores``): MVE, LVE, MEE and CE are means over **all frames** (a sequence
weighs by its frames), FDD, sample diversity and the jaw–envelope Pearson are means over
**sequences**. The diversity's pairs are drawn per sequence from ``seed`` (the original
carries one generator through the sequences in order; the pairs are equally random).
Records are pooled in name order, so the result does not depend on the order in which
Ray Data delivered the sequences.
"""

from __future__ import annotations

import math

import numpy as np

from affectlab.metrics.talking_heads import ce, fdd, jaw_envelope_pearson, lve_probtalk3d, mee, mve, sample_diversity

FRAME_POOLED = ("mve", "lve", "mee", "ce")
SEQUENCE_POOLED = ("fdd", "diversity", "jaw_envelope_pearson")
TEST_KEYS = FRAME_POOLED + SEQUENCE_POOLED  # the keys of metrics.json's "test" and "baseline_mean_motion"


def score_sequence(
    gt_vertices: np.ndarray, sample_vertices: np.ndarray, jaw_opening: np.ndarray, envelope: np.ndarray, *,
    lip_idx, upper_idx, template, seed: int,
) -> dict[str, float]:
    """One sequence's record: ``gt_vertices`` ``(T_gt, V, 3)``, ``sample_vertices`` ``(S, T, V, 3)``
    (S ≥ 2 for diversity), the first sample's jaw opening and the audio envelope ``(T,)``."""
    gt, samples = [gt_vertices], [sample_vertices]
    frames = sample_vertices.shape[1]
    record = {
        "frames": frames,
        "mve": mve(gt, samples), "lve": lve_probtalk3d(gt, samples, lip_idx), "mee": mee(gt, samples, lip_idx),
        "ce": ce(gt, samples, lip_idx), "fdd": fdd(gt, samples, upper_idx, template),
        "diversity": sample_diversity(samples, seed) if sample_vertices.shape[0] >= 2 else float("nan"),
        "jaw_envelope_pearson": jaw_envelope_pearson(jaw_opening[:frames], envelope[:frames]) if frames >= 2 else float("nan"),
    }  # fmt: skip
    return record


def pool_sequence_scores(records: dict[str, dict]) -> dict[str, float]:
    """``{name: score_sequence(...)}`` → the test-set metrics (``TEST_KEYS``).

    A constant jaw curve (the mean-motion baseline on a short sequence, say) has no
    Pearson correlation: such sequences are left out of that mean; if every one is, the
    value is 0 (no linear relation to the audio)."""
    if not records:
        raise ValueError("no sequences were scored")
    names = sorted(records)
    frames = np.array([records[n]["frames"] for n in names], np.float64)
    out = {k: float(np.dot([records[n][k] for n in names], frames) / frames.sum()) for k in FRAME_POOLED}
    for k in SEQUENCE_POOLED:
        values = np.array([records[n][k] for n in names], np.float64)
        finite = values[np.isfinite(values)]
        out[k] = float(finite.mean()) if len(finite) else 0.0
    return out


def motion_validation_metrics(
    pred: np.ndarray, truth: np.ndarray, lengths: np.ndarray, envelope: np.ndarray | None = None, exp_dim: int = 50
) -> dict[str, float]:
    """Scaled-space validation metrics over padded ``(N, T, 53)`` arrays with ``lengths``.

    ``motion_l2``: mean over all real frames of ‖pred − truth‖₂ (the original's validation
    L2); ``variance_diff``: per sequence the mean over channels of |var_t(truth) − var_t(pred)|,
    averaged over sequences; ``l2_plus_var``: their sum, the selection metric (lower is
    better; the original monitored its validation loss). ``exp_l1`` / ``jaw_l1``: frame-pooled
    L1 of the expression / jaw channels. ``jaw_envelope_pearson``: the mean over sequences of
    the Pearson r between the predicted jaw opening (channel ``exp_dim``) and ``envelope``.
    """
    l2, exp_l1, jaw_l1, var_diff, pearson, frames = 0.0, 0.0, 0.0, [], [], 0
    for i, t in enumerate(np.asarray(lengths, np.int64)):
        if t < 1:
            continue
        p, g = np.asarray(pred[i, :t], np.float64), np.asarray(truth[i, :t], np.float64)
        l2 += float(np.linalg.norm(p - g, axis=-1).sum())
        exp_l1 += float(np.abs(p[:, :exp_dim] - g[:, :exp_dim]).mean(1).sum())
        jaw_l1 += float(np.abs(p[:, exp_dim:] - g[:, exp_dim:]).mean(1).sum())
        var_diff.append(float(np.abs(g.var(0) - p.var(0)).mean()))
        if envelope is not None and t >= 2:
            r = jaw_envelope_pearson(p[:, exp_dim], envelope[i, :t])
            if math.isfinite(r):
                pearson.append(r)
        frames += int(t)
    if not frames:
        raise ValueError("no frames to score")
    out = {"motion_l2": l2 / frames, "variance_diff": float(np.mean(var_diff)), "exp_l1": exp_l1 / frames, "jaw_l1": jaw_l1 / frames}
    out["l2_plus_var"] = out["motion_l2"] + out["variance_diff"]
    out["jaw_envelope_pearson"] = float(np.mean(pearson)) if pearson else float("nan")
    return out
