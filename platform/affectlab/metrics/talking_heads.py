"""Talking-head metrics of ProbTalk3D's evaluation (reference/talking_heads.md §4.5), pure numpy.

Inputs are FLAME vertices per test sequence (built elsewhere, zero shape and zero global
pose, metres): ground truth ``gt[i]`` ``(T_gt, V, 3)`` and the generated samples
``samples[i]`` ``(S, T, V, 3)`` (S = 10 in the paper). The ground truth is cropped to the
prediction's length (T ≤ T_gt). Region index arrays pick the lips (428 vertices in
``regions/lve.txt``) and the upper face (1501 in ``regions/fdd.txt``).

Which sample each metric uses and how it pools over sequences:

| metric | samples | per frame | pooling over sequences |
|---|---|---|---|
| ``mve`` | first | mean over all vertices of ‖gt − pred‖₂ | all frames pooled (frame-weighted) |
| ``lve_probtalk3d`` | first | max over lip vertices of the **squared** ‖gt − pred‖₂ | all frames pooled |
| ``mee`` | mean of the S samples (per vertex) | as LVE | all frames pooled |
| ``ce`` | per sequence, the sample of smallest summed per-frame LVE | as LVE | all frames pooled |
| ``fdd`` | first | — (per sequence: upper-face motion std, gt − pred, **signed**) | mean of sequences |
| ``sample_diversity`` | all, shuffled into S/2 pairs (seeded) | mean over vertices of ‖a − b‖₂ | mean over frames, pairs, then sequences |

Names that cannot be mixed up (defects 5 and 10): ``lve_probtalk3d`` is the squared max lip
error in m² (CodeTalker / ProbTalk3D); ``lve_max_l2_mm`` is 3DiFACE's unsquared max error
in mm — never compare the two. ``sample_diversity`` is diversity *across samples of one
condition*; FaceDiffuser's "diversity" across style conditions is a different quantity
and is not computed here.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
from scipy.stats import pearsonr

DIVERSITY_SEED = 1234  # the original runs' seed (§4.3)


def _as_vertices(x, name: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 3:
        raise ValueError(f"{name} must be vertices (T, V, 3), got shape {x.shape}")
    return x


def _pairs(gt_seqs: Sequence, sample_seqs: Sequence) -> list[tuple[np.ndarray, np.ndarray]]:
    """(gt cropped to T, samples (S, T, V, 3)) per sequence, after checking shapes."""
    if len(gt_seqs) != len(sample_seqs):
        raise ValueError(f"{len(gt_seqs)} ground-truth sequences but {len(sample_seqs)} sample sets")
    if len(gt_seqs) == 0:
        raise ValueError("no sequences to score")
    pairs = []
    for i, (gt, samples) in enumerate(zip(gt_seqs, sample_seqs)):
        gt = _as_vertices(gt, f"gt[{i}]")
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 4:
            raise ValueError(f"samples[{i}] must be (S, T, V, 3) (wrap a single prediction as pred[None]), got shape {samples.shape}")
        if samples.shape[1] > gt.shape[0] or samples.shape[2:] != gt.shape[1:]:
            raise ValueError(f"samples[{i}] of shape {samples.shape} does not fit gt[{i}] of shape {gt.shape} (T ≤ T_gt, same V)")
        pairs.append((gt[: samples.shape[1]], samples))
    return pairs


def lip_error_per_frame(gt: np.ndarray, pred: np.ndarray, lip_idx) -> np.ndarray:
    """``(T,)``: per frame, the max over lip vertices of the squared L2 error (m²)."""
    diff = gt[:, lip_idx] - pred[:, lip_idx]
    return np.square(diff).sum(-1).max(-1)


def mve(gt_seqs: Sequence, sample_seqs: Sequence) -> float:
    """Mean vertex error (m): first sample, mean over all frames of all sequences and vertices."""
    errors = [np.linalg.norm(gt - samples[0], axis=-1).mean(-1) for gt, samples in _pairs(gt_seqs, sample_seqs)]
    return float(np.concatenate(errors).mean())


def lve_probtalk3d(gt_seqs: Sequence, sample_seqs: Sequence, lip_idx) -> float:
    """Lip vertex error (m², CodeTalker / ProbTalk3D): squared max lip error per frame, first
    sample, mean over all frames pooled across sequences."""
    errors = [lip_error_per_frame(gt, samples[0], lip_idx) for gt, samples in _pairs(gt_seqs, sample_seqs)]
    return float(np.concatenate(errors).mean())


def mee(gt_seqs: Sequence, sample_seqs: Sequence, lip_idx) -> float:
    """Mean-estimate error: the LVE of the per-vertex mean of the samples."""
    errors = [lip_error_per_frame(gt, samples.mean(0), lip_idx) for gt, samples in _pairs(gt_seqs, sample_seqs)]
    return float(np.concatenate(errors).mean())


def ce(gt_seqs: Sequence, sample_seqs: Sequence, lip_idx) -> float:
    """Closest-sample error: per sequence the sample whose per-frame LVE sums lowest; its
    per-frame LVE is pooled over all frames."""
    errors = []
    for gt, samples in _pairs(gt_seqs, sample_seqs):
        per_sample = np.stack([lip_error_per_frame(gt, s, lip_idx) for s in samples])  # (S, T)
        errors.append(per_sample[per_sample.sum(1).argmin()])
    return float(np.concatenate(errors).mean())


def upper_face_motion_std(vertices: np.ndarray, template: np.ndarray, upper_idx) -> float:
    """Per upper-face vertex, the std over time of its squared displacement from the template;
    averaged over those vertices."""
    disp = vertices[:, upper_idx] - np.asarray(template, dtype=np.float64)[upper_idx]
    return float(np.square(disp).sum(-1).std(axis=0).mean())


def fdd(gt_seqs: Sequence, sample_seqs: Sequence, upper_idx, template) -> float:
    """Upper-face dynamics deviation, **signed**: std_gt − std_pred per sequence (first sample),
    averaged over sequences. Positive: the prediction moves the upper face less than the truth.
    ``template``: ``(V, 3)``, the mesh displacements are measured from (``flame_zero_pose``)."""
    template = np.asarray(template, dtype=np.float64)
    values = []
    for gt, samples in _pairs(gt_seqs, sample_seqs):
        if template.shape != gt.shape[1:]:
            raise ValueError(f"template must be {gt.shape[1:]}, got {template.shape}")
        values.append(upper_face_motion_std(gt, template, upper_idx) - upper_face_motion_std(samples[0], template, upper_idx))
    return float(np.mean(values))


def sample_diversity(sample_seqs: Sequence, seed: int = DIVERSITY_SEED) -> float:
    """Diversity across samples of one condition (ProbTalk3D). Per sequence the S samples are
    shuffled (``np.random.default_rng(seed)``, one generator through the sequences in order)
    into S // 2 pairs; per pair, the mean over frames and vertices of ‖a − b‖₂; averaged over
    pairs, then over sequences."""
    if len(sample_seqs) == 0:
        raise ValueError("no sequences to score")
    rng = np.random.default_rng(seed)
    values = []
    for i, samples in enumerate(sample_seqs):
        samples = np.asarray(samples, dtype=np.float64)
        if samples.ndim != 4 or samples.shape[0] < 2:
            raise ValueError(f"samples[{i}] must be (S ≥ 2, T, V, 3), got shape {samples.shape}")
        order = rng.permutation(samples.shape[0])
        pairs = order[: 2 * (samples.shape[0] // 2)].reshape(-1, 2)
        values.append(np.mean([np.linalg.norm(samples[a] - samples[b], axis=-1).mean() for a, b in pairs]))
    return float(np.mean(values))


def lve_max_l2_mm(gt_seqs: Sequence, pred_seqs: Sequence, lip_idx) -> float:
    """3DiFACE's lip error (``compute_max_diff_in_mm``): per frame the max over lip vertices of
    the **unsquared** L2 error, in mm; mean over all frames pooled. ``pred_seqs``: one
    prediction ``(T, V, 3)`` per sequence. Not comparable with ``lve_probtalk3d``."""
    pairs = _pairs(gt_seqs, [np.asarray(p)[None] for p in pred_seqs])
    errors = [np.linalg.norm(gt[:, lip_idx] - s[0][:, lip_idx], axis=-1).max(-1) for gt, s in pairs]
    return float(np.concatenate(errors).mean() * 1000.0)


def talking_head_metrics(
    gt_seqs: Sequence, sample_seqs: Sequence, *, lip_idx, upper_idx, template, seed: int = DIVERSITY_SEED
) -> dict[str, float]:
    """All §4.5 metrics; diversity only when every sequence has at least two samples."""
    out = {
        "mve": mve(gt_seqs, sample_seqs),
        "lve_probtalk3d": lve_probtalk3d(gt_seqs, sample_seqs, lip_idx),
        "mee": mee(gt_seqs, sample_seqs, lip_idx),
        "ce": ce(gt_seqs, sample_seqs, lip_idx),
        "fdd": fdd(gt_seqs, sample_seqs, upper_idx, template),
    }
    if all(np.shape(s)[0] >= 2 for s in sample_seqs):
        out["sample_diversity"] = sample_diversity(sample_seqs, seed)
    return out


def jaw_envelope_pearson(jaw_opening, envelope) -> float:
    """Pearson r between a jaw-opening curve and the audio envelope, both ``(T,)`` at the
    motion rate: does the mouth follow the speech? NaN when either is constant."""
    jaw, env = np.asarray(jaw_opening, dtype=np.float64), np.asarray(envelope, dtype=np.float64)
    if jaw.ndim != 1 or jaw.shape != env.shape or jaw.size < 2:
        raise ValueError(f"jaw_opening and envelope must be 1-d of the same length ≥ 2, got {jaw.shape} and {env.shape}")
    if np.ptp(jaw) == 0 or np.ptp(env) == 0:
        return float("nan")
    return float(pearsonr(jaw, env).statistic)


def expression_stats_by_emotion(
    expressions: Sequence, emotions: Sequence[int], emotion_names: Sequence[str] | None = None
) -> dict[str, dict]:
    """Per emotion, over the frames of all its sequences: ``sequences``, ``frames``, the
    per-coefficient ``mean`` and ``std`` (lists) and ``magnitude`` (mean over frames of the
    L2 norm of the expression vector). ``expressions[i]``: ``(T_i, E)``; ``emotions[i]``:
    its emotion index, named by ``emotion_names`` when given."""
    if len(expressions) != len(emotions):
        raise ValueError(f"{len(expressions)} expression sequences but {len(emotions)} emotion labels")
    frames: dict[int, list[np.ndarray]] = defaultdict(list)
    for i, (x, e) in enumerate(zip(expressions, emotions)):
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2:
            raise ValueError(f"expressions[{i}] must be (T, E), got shape {x.shape}")
        frames[int(e)].append(x)
    out = {}
    for e in sorted(frames):
        if emotion_names is not None and not 0 <= e < len(emotion_names):
            raise ValueError(f"emotion index {e} has no name in {list(emotion_names)}")
        x = np.concatenate(frames[e])
        out[emotion_names[e] if emotion_names is not None else str(e)] = {
            "sequences": len(frames[e]),
            "frames": int(x.shape[0]),
            "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(),
            "magnitude": float(np.linalg.norm(x, axis=-1).mean()),
        }
    return out
