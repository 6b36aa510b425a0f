"""Cartoon faces whose features move with FACS action units.

The synthetic pain datasets need a signal a model can really learn from pixels: the
six PSPI action units change the face the way they change a real one, and each
subject has its own face shape, skin tone and placement, so that a neutral reference
of the same person is informative.

| AU   | drawn as                                                    |
|------|-------------------------------------------------------------|
| AU4  | brows lowered and pulled together (brow lowerer)            |
| AU6  | cheeks raised: darker cheek patches, lower lids pushed up   |
| AU7  | lids tightened: eye opening narrowed                        |
| AU9  | nose wrinkles: dark lines across the nose bridge            |
| AU10 | upper lip raised: mouth opens, teeth show                   |
| AU43 | eyes closed: each eye drawn as a line                       |
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


_SUPERSAMPLE = 4  # draw large, then shrink: smooth edges at small sizes


@dataclass(frozen=True)
class FaceIdentity:
    """What stays the same across one subject's frames."""

    skin: tuple[int, int, int]
    background: int
    face_w: float  # half-width of the face, as a fraction of the image
    face_h: float
    eye_gap: float  # half-distance between the eyes, fraction of the image
    dx: float  # placement of the face centre, fraction of the image
    dy: float
    brow_thickness: float

    @classmethod
    def random(cls, rng: np.random.Generator) -> "FaceIdentity":
        tone = rng.uniform(0.45, 0.95)
        skin = (int(150 * tone + 40), int(170 * tone + 50), int(200 * tone + 55))  # BGR
        return cls(
            skin=skin,
            background=int(rng.integers(10, 90)),
            face_w=float(rng.uniform(0.30, 0.36)),
            face_h=float(rng.uniform(0.40, 0.46)),
            eye_gap=float(rng.uniform(0.13, 0.17)),
            dx=float(rng.uniform(-0.04, 0.04)),
            dy=float(rng.uniform(-0.03, 0.03)),
            brow_thickness=float(rng.uniform(0.025, 0.04)),
        )


def pspi_from_aus(aus: np.ndarray) -> np.ndarray:
    """PSPI = AU4 + max(AU6, AU7) + max(AU9, AU10) + AU43 (AU order as AU_NAMES)."""
    aus = np.asarray(aus, dtype=np.float32)
    return aus[..., 0] + np.maximum(aus[..., 1], aus[..., 2]) + np.maximum(aus[..., 3], aus[..., 4]) + (aus[..., 5] > 0)


def draw_face(aus: np.ndarray, identity: FaceIdentity, size: int, rng: np.random.Generator) -> np.ndarray:
    """Render one face as uint8 ``[size, size, 3]`` (RGB) with the given AU intensities."""
    au4, au6, au7, au9, au10, au43 = (float(a) for a in aus)
    s = size * _SUPERSAMPLE
    img = np.full((s, s, 3), identity.background, np.uint8)

    def px(v: float) -> int:
        return int(round(v * s))

    # a small per-frame head jitter, like a real sequence that is roughly aligned
    cx = 0.5 + identity.dx + rng.normal(0, 0.008)
    cy = 0.5 + identity.dy + rng.normal(0, 0.008)
    skin = identity.skin
    dark = tuple(int(c * 0.35) for c in skin)

    cv2.ellipse(img, (px(cx), px(cy)), (px(identity.face_w), px(identity.face_h)), 0, 0, 360, skin, -1, cv2.LINE_AA)

    # AU6: raised cheeks show as darker patches under the eyes
    if au6 > 0:
        cheek = tuple(int(c * (1 - 0.06 * au6)) for c in skin)
        for side in (-1, 1):
            cv2.ellipse(img, (px(cx + side * identity.eye_gap), px(cy + 0.07)), (px(0.07), px(0.045)), 0, 0, 360, cheek, -1, cv2.LINE_AA)

    eye_y = cy - 0.06
    for side in (-1, 1):
        ex = cx + side * identity.eye_gap
        if au43 > 0:
            cv2.line(img, (px(ex - 0.06), px(eye_y)), (px(ex + 0.06), px(eye_y)), dark, max(1, px(0.012)), cv2.LINE_AA)
        else:
            # AU7 narrows the lids, AU6 pushes the lower lid up
            opening = 0.045 * (1 - 0.13 * au7) * (1 - 0.07 * au6)
            cv2.ellipse(img, (px(ex), px(eye_y)), (px(0.06), max(1, px(opening))), 0, 0, 360, (245, 245, 245), -1, cv2.LINE_AA)
            cv2.circle(img, (px(ex), px(eye_y)), max(1, px(min(0.022, opening))), (40, 30, 20), -1, cv2.LINE_AA)
        # AU4 lowers the brows and pulls their inner ends down and together
        brow_y = eye_y - 0.085 + 0.011 * au4
        inner_x = ex - side * (0.055 - 0.006 * au4)
        outer_x = ex + side * 0.07
        inner_y = brow_y + 0.008 * au4
        cv2.line(img, (px(inner_x), px(inner_y)), (px(outer_x), px(brow_y)), dark, max(1, px(identity.brow_thickness)), cv2.LINE_AA)

    # nose, and AU9 wrinkles across its bridge
    cv2.line(img, (px(cx), px(eye_y + 0.02)), (px(cx), px(cy + 0.09)), tuple(int(c * 0.7) for c in skin), max(1, px(0.012)), cv2.LINE_AA)
    for k in range(int(round(au9))):
        y = eye_y + 0.03 + 0.017 * k
        cv2.line(img, (px(cx - 0.045), px(y)), (px(cx + 0.045), px(y)), dark, max(1, px(0.008)), cv2.LINE_AA)

    # AU10 raises the upper lip: the mouth opens upwards and teeth show
    mouth_y = cy + 0.2
    lip_raise = 0.012 * au10
    cv2.line(img, (px(cx - 0.1), px(mouth_y)), (px(cx + 0.1), px(mouth_y)), (60, 50, 140), max(1, px(0.018)), cv2.LINE_AA)
    if au10 > 0:
        cv2.rectangle(img, (px(cx - 0.07), px(mouth_y - lip_raise)), (px(cx + 0.07), px(mouth_y)), (250, 250, 250), -1, cv2.LINE_AA)
        cv2.line(img, (px(cx - 0.09), px(mouth_y - lip_raise)), (px(cx + 0.09), px(mouth_y - lip_raise)), (60, 50, 140), max(1, px(0.014)), cv2.LINE_AA)

    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    noise = rng.normal(0, 3.0, img.shape)
    img = np.clip(img.astype(np.float32) + noise, 0, 255).astype(np.uint8)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def pain_episode(n_frames: int, rng: np.random.Generator, peak: float) -> np.ndarray:
    """AU intensities ``[n_frames, 6]`` for one sequence: neutral, a pain bump, neutral.

    Sequences start and end neutral, as UNBC sequences do; the AUs move together with
    per-episode mixing so that PSPI is not a fixed function of any single AU.
    """
    t = np.linspace(0, 1, n_frames)
    centre, width = rng.uniform(0.4, 0.6), rng.uniform(0.12, 0.22)
    bump = np.exp(-0.5 * ((t - centre) / width) ** 2)
    bump[t < 0.12] = 0.0  # the first frames are neutral
    mix = rng.uniform(0.3, 1.0, size=5)
    aus = np.zeros((n_frames, 6), np.float32)
    aus[:, :5] = np.clip(np.round(peak * bump[:, None] * mix[None, :]), 0, 5)
    aus[:, 5] = (peak * bump > 3.2) & (rng.uniform(size=n_frames) < 0.7)
    return aus
