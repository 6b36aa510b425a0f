"""The one 18-feature pose graph of the mouse workload, computed from DeepLabCut keypoints.

The original code had two incompatible "18-feature" graphs, mislabelled angle vertices,
two duplicated angles, no body-size normalisation and zeroed low-confidence points. Here
there is one definition, documented below, used by training, evaluation and serving.

Keypoints (``affectlab.constants.mouse.BODYPARTS`` order)::

    0 mouth   1 L_frontpaw   2 R_frontpaw   3 L_hindpaw   4 R_hindpaw   5 tail_base

Step 1, ``interpolate_low_likelihood``: points with likelihood < ``min_likelihood`` (or
non-finite) are replaced by linear interpolation over time between the nearest confident
frames of the same keypoint, holding the first/last confident value at the ends. A
keypoint never seen confidently in the sequence is set to 0 and flagged; every feature
that uses it is 0.

Step 2, features. Lengths are divided by the body length ``|mouth - tail_base|`` of the
same frame (floored at ``0.25 x`` the sequence's median body length so a collapsed
detection cannot blow up), which makes them independent of resolution and camera
distance. Angles are unsigned, in radians in [0, pi]: ``angle(a, V, b)`` is the angle at
vertex ``V`` between the rays V->a and V->b.

=====  ============================  =====  =====================================
index  edge length / body length     index  angle (vertex in capitals)
=====  ============================  =====  =====================================
0      mouth - L_frontpaw            8      L_frontpaw - MOUTH - R_frontpaw
1      mouth - R_frontpaw            9      L_hindpaw - TAIL_BASE - R_hindpaw
2      L_frontpaw - L_hindpaw        10     mouth - L_FRONTPAW - L_hindpaw
3      R_frontpaw - R_hindpaw        11     mouth - R_FRONTPAW - R_hindpaw
4      L_hindpaw - tail_base         12     L_frontpaw - L_HINDPAW - tail_base
5      R_hindpaw - tail_base         13     R_frontpaw - R_HINDPAW - tail_base
6      L_frontpaw - R_frontpaw       14     mouth - TAIL_BASE - L_hindpaw
7      L_hindpaw - R_hindpaw         15     mouth - TAIL_BASE - R_hindpaw
                                     16     tail_base - MOUTH - L_frontpaw
                                     17     tail_base - MOUTH - R_frontpaw
=====  ============================  =====  =====================================

Edges 0-5 trace the outline mouth -> front paw -> hind paw -> tail on each side, 6-7 are
the paw-pair widths (mouth-tail_base is the normaliser, so it is not a feature). Angles
8-9 are the paw spreads seen from the head and the tail, 10-13 the bends of each side of
the outline, and 14-17 the paws' positions relative to the body axis (a withdrawn or
licked hind paw moves 14/15; a turned head moves 16/17). No two angles have the same vertex
and the same pair of end points, so none duplicates another (the original multimodal graph
computed two angles twice).
"""

from __future__ import annotations

import numpy as np

from affectlab.constants.mouse import BODYPARTS, NUM_POSE_FEATURES

MOUTH, L_FRONT, R_FRONT, L_HIND, R_HIND, TAIL = range(6)

EDGES = (
    (MOUTH, L_FRONT),
    (MOUTH, R_FRONT),
    (L_FRONT, L_HIND),
    (R_FRONT, R_HIND),
    (L_HIND, TAIL),
    (R_HIND, TAIL),
    (L_FRONT, R_FRONT),
    (L_HIND, R_HIND),
)
# (a, vertex, b)
ANGLES = (
    (L_FRONT, MOUTH, R_FRONT),
    (L_HIND, TAIL, R_HIND),
    (MOUTH, L_FRONT, L_HIND),
    (MOUTH, R_FRONT, R_HIND),
    (L_FRONT, L_HIND, TAIL),
    (R_FRONT, R_HIND, TAIL),
    (MOUTH, TAIL, L_HIND),
    (MOUTH, TAIL, R_HIND),
    (TAIL, MOUTH, L_FRONT),
    (TAIL, MOUTH, R_FRONT),
)
_N = BODYPARTS
FEATURE_NAMES = tuple(
    [f"len:{_N[a]}-{_N[b]}" for a, b in EDGES]
    + [f"angle:{_N[a]}-{_N[v].upper()}-{_N[b]}" for a, v, b in ANGLES]
)
assert NUM_POSE_FEATURES == len(EDGES) + len(ANGLES)
BODY_LENGTH_FLOOR = 0.25  # fraction of the median body length


def interpolate_low_likelihood(
    xy: np.ndarray, likelihood: np.ndarray, min_likelihood: float = 0.9
) -> tuple[np.ndarray, np.ndarray]:
    """Fill unconfident points by linear interpolation in time, per keypoint.

    Returns (xy float32 [T,K,2], missing bool [K]); ``missing[k]`` is True when keypoint k is
    never confident in the sequence, in which case its coordinates are 0.
    """
    xy = np.asarray(xy, dtype=np.float32)
    likelihood = np.asarray(likelihood, dtype=np.float32)
    if xy.ndim != 3 or xy.shape[-1] != 2 or likelihood.shape != xy.shape[:2]:
        raise ValueError(f"expected xy [T,K,2] and likelihood [T,K], got {xy.shape} and {likelihood.shape}")
    visible = (likelihood >= min_likelihood) & np.isfinite(xy).all(axis=-1)
    out = np.zeros_like(xy)
    missing = ~visible.any(axis=0)
    frames = np.arange(len(xy))
    for k in np.flatnonzero(~missing):
        seen = visible[:, k]
        for c in range(2):
            out[:, k, c] = np.interp(frames, frames[seen], xy[seen, k, c])
    return out, missing


def _angle(a: np.ndarray, vertex: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Unsigned angle at ``vertex``; atan2 of cross and dot is stable near 0 and pi."""
    u, v = a - vertex, b - vertex
    cross = u[..., 0] * v[..., 1] - u[..., 1] * v[..., 0]
    dot = (u * v).sum(-1)
    return np.arctan2(np.abs(cross), dot)


def pose_features(xy: np.ndarray, likelihood: np.ndarray, min_likelihood: float = 0.9) -> np.ndarray:
    """18 pose features per frame (float32 [T,18]); see the module docstring for the table."""
    points, missing = interpolate_low_likelihood(xy, likelihood, min_likelihood)
    if points.shape[1] != 6:
        raise ValueError(f"expected 6 keypoints, got {points.shape[1]}")
    features = np.zeros((len(points), NUM_POSE_FEATURES), dtype=np.float32)
    if len(points) == 0:
        return features

    body = np.linalg.norm(points[:, MOUTH] - points[:, TAIL], axis=-1)
    have_body = not (missing[MOUTH] or missing[TAIL])
    if have_body:
        floor = max(BODY_LENGTH_FLOOR * float(np.median(body)), 1e-6)
        body = np.maximum(body, floor)
        for i, (a, b) in enumerate(EDGES):
            if not (missing[a] or missing[b]):
                features[:, i] = np.linalg.norm(points[:, a] - points[:, b], axis=-1) / body
    for i, (a, v, b) in enumerate(ANGLES):
        if not (missing[a] or missing[v] or missing[b]):
            features[:, len(EDGES) + i] = _angle(points[:, a], points[:, v], points[:, b])
    return features
