"""A small synthetic 3DMEAD in the layout ProbTalk3D prepares (reference/talking_heads.md §2.1).

``write_synthetic_mead`` writes ``mead/param/*.npy`` (1, T, 403) at 25 fps, ``mead/wav/*.wav``
(16 kHz, PCM 16), ``regions/lve.txt`` / ``regions/fdd.txt``, ``flame_zero_pose.npy`` and
``templates_mead_vert.pkl``, with a signal a model can learn:

- **speech-like audio**: voiced syllables (harmonics of a gliding pitch, weighted by two
  formant bumps, with a smooth attack and decay) separated by pauses; the syllable rhythm
  belongs to the sentence, the pitch to the identity;
- **jaw opening** (jaw[0]) and expression[0] follow the audio's per-frame RMS envelope,
  smoothed and one frame late (the *opening*, scaled to peak 1);
- **emotion**: an expression that follows the speech, ``EMOTION_LAG_FRAMES`` (4, 160 ms)
  after the mouth: coefficients 5-36 add ``emotion_pattern(e, i) · opening(t − 4)``, where
  the pattern is the emotion's own ±1 sign pattern over those 32 coefficients (row e of a
  32 × 32 Hadamard matrix, so the patterns of two emotions are orthogonal) scaled by
  0.5·(intensity + 1); neutral has none. ``emotion_signature`` measures it back from an
  expression sequence and its audio. Not a sentence-constant offset: the §4.1 prior
  InstanceNorms every hidden channel over time and cannot carry one; a second time course
  beside the jaw's keeps its relative amplitude through that normalisation, and the style,
  which multiplies the audio features, can select speech-driven dynamics (docs/probtalk3d.md);
- **identity**: a constant style offset over the 50 expression coefficients, its own
  shape betas and pitch; plus small smooth noise everywhere.

Identities are real 3DMEAD subject names drawn from the training, prior-val and
prior-test lists, and sentence numbers fall in the train, val and test ranges of the
stage-2 split, so both named split protocols have every part.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import soundfile as sf
from scipy.linalg import hadamard
from scipy.ndimage import gaussian_filter1d
from tqdm import tqdm

from affectlab.constants import probtalk3d as C
from affectlab.data.audio import audio_envelope
from affectlab.data.mead import sequence_name

SIZES = {  # the defaults: "small" for tests (84 sequences), "demo" for the demo
    "small": {"n_identities": 4, "n_sentences": 3, "emotions": ("neutral", "happy", "angry")},
    "demo": {"n_identities": 8, "n_sentences": 6, "emotions": ("neutral", "happy", "sad", "angry")},  # 480
}
JAW_LAG_FRAMES = 1
EMOTION_LAG_FRAMES = 4  # the emotion's expression follows the mouth opening 160 ms late
EMOTION_COEFFICIENTS = (5, 37)  # expression coefficients 5-36 carry every emotion's pattern
EMOTION_SIGNS = hadamard(EMOTION_COEFFICIENTS[1] - EMOTION_COEFFICIENTS[0]).astype(np.float32)  # row e: emotion e


def emotion_pattern(emotion: int, intensity: int) -> np.ndarray:
    """The planted expression pattern (50,) of an emotion at an intensity: 0.5·(i+1) times
    the emotion's sign pattern (Hadamard row e) on coefficients 5-36; zero for neutral. A
    sequence's expression adds ``pattern · opening(t − EMOTION_LAG_FRAMES)``."""
    pattern = np.zeros(C.NUM_EXPRESSION, np.float32)
    if emotion != C.NEUTRAL:
        lo, hi = EMOTION_COEFFICIENTS
        pattern[lo:hi] = 0.5 * (intensity + 1) * EMOTION_SIGNS[emotion]
    return pattern


def mouth_opening(audio: np.ndarray, n_frames: int) -> np.ndarray:
    """The jaw's time course (T,): the per-frame audio RMS scaled to peak 1, smoothed
    (σ = 0.5 frames) and ``JAW_LAG_FRAMES`` late."""
    envelope = audio_envelope(audio, C.AUDIO_SAMPLE_RATE, C.FPS, n_frames)
    opening = gaussian_filter1d(envelope / max(1e-9, float(envelope.max())), sigma=0.5)
    return _late(opening, JAW_LAG_FRAMES)


def _late(x: np.ndarray, frames: int) -> np.ndarray:
    """``x`` delayed by ``frames``, its first value held at the start."""
    return np.concatenate([np.repeat(x[:1], frames), x[: len(x) - frames]])


def emotion_signature(expression: np.ndarray, audio: np.ndarray) -> np.ndarray:
    """How strongly each coefficient of ``expression`` (T, E) follows the speech the way the
    planted emotion does: its least-squares coefficient on ``opening(t − EMOTION_LAG_FRAMES)``,
    fitted together with a constant and ``opening(t)`` (so neither a sentence's rest level
    nor plain jaw-locked motion counts), ``(E,)``. On the synthetic data it recovers
    ``emotion_pattern(e, i)``; ``audio`` is the sequence's 16 kHz audio (≥ T frames)."""
    x = np.asarray(expression, dtype=np.float64)
    if x.ndim != 2 or len(x) <= EMOTION_LAG_FRAMES + 2:
        raise ValueError(f"expression must be (T, E) with T > {EMOTION_LAG_FRAMES + 2} frames, got shape {x.shape}")
    if len(audio) < len(x) * C.SAMPLES_PER_FRAME:
        raise ValueError(f"audio has {len(audio)} samples, fewer than the {len(x)} frames of the expression need")
    opening = mouth_opening(audio, len(x))
    design = np.stack([np.ones(len(x)), opening, _late(opening, EMOTION_LAG_FRAMES)], axis=1)
    return np.linalg.lstsq(design, x, rcond=None)[0][2]


def _subjects(n: int) -> list[str]:
    """n identities: mostly training subjects, at least one prior-val and one prior-test."""
    if n < 3:
        raise ValueError(f"n_identities must be >= 3 (train, prior-val and prior-test identities), got {n}")
    n_hold = max(1, round(0.15 * n))
    n_train = n - 2 * n_hold
    return list(C.TRAIN_SUBJECTS[:n_train] + C.PRIOR_VAL_SUBJECTS[:n_hold] + C.PRIOR_TEST_SUBJECTS[:n_hold])


def _sentences(n: int, kind: str) -> list[int]:
    """n sentence numbers falling in the train, val and test ranges of the stage-2 split."""
    n_hold = max(1, n // 6)
    parts = {"train": n - 2 * n_hold, "val": n_hold, "test": n_hold}
    out = []
    for part, count in parts.items():
        lo, hi = C.SENTENCE_SPLIT[part][kind]
        if count > hi - lo + 1:
            raise ValueError(f"n_sentences={n} needs {count} {kind} {part} sentences; the range {lo}-{hi} has {hi - lo + 1}")
        out += list(range(lo, lo + count))
    return out


def speech_like_audio(n_samples: int, rhythm: np.random.Generator, voice: np.random.Generator, f0: float) -> np.ndarray:
    """Voiced syllables separated by pauses, float32 in [-1, 1] at 16 kHz."""
    sr = C.AUDIO_SAMPLE_RATE
    audio = np.zeros(n_samples)
    t = int(rhythm.uniform(0.08, 0.2) * sr)
    while t < n_samples - int(0.1 * sr):
        length = min(int(rhythm.uniform(0.2, 0.45) * sr), n_samples - t)
        time = np.arange(length) / sr
        pitch = f0 * (1 + 0.08 * np.sin(2 * np.pi * voice.uniform(1, 3) * time + voice.uniform(0, 2 * np.pi)))
        phase = 2 * np.pi * np.cumsum(pitch) / sr
        formants = (rhythm.uniform(300, 800), rhythm.uniform(900, 2200))
        syllable = np.zeros(length)
        for k in range(1, int(4000 // f0) + 1):
            weight = sum(np.exp(-0.5 * ((k * f0 - f) / 150.0) ** 2) for f in formants) + 0.05 / k
            syllable += weight * np.sin(k * phase)
        envelope = np.sin(np.pi * np.arange(length) / length) ** 0.7 * rhythm.uniform(0.5, 1.0)
        audio[t : t + length] = syllable * envelope / max(1e-9, np.abs(syllable).max())
        t += length + int(rhythm.uniform(0.08, 0.25) * sr)
    audio += voice.normal(0, 0.003, n_samples)
    return (0.8 * audio / np.abs(audio).max()).astype(np.float32)


def write_synthetic_mead(
    root: str | Path,
    n_identities: int | None = None,
    n_sentences: int | None = None,
    *,
    emotions: tuple[str, ...] | None = None,
    size: str = "small",
    seconds: tuple[float, float] = (2.0, 4.0),
    seed: int = 0,
) -> Path:
    """Write a synthetic 3DMEAD ``datasets`` directory under ``root`` and return it.

    ``size`` picks the defaults (``SIZES``); explicit arguments override them. Every
    identity speaks ``n_sentences`` sentences per emotion and intensity (neutral: intensity
    0 only), each ``seconds`` long (uniform).
    """
    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}, got {size!r}")
    preset = SIZES[size]
    n_identities = n_identities or preset["n_identities"]
    n_sentences = n_sentences or preset["n_sentences"]
    emotions = emotions or preset["emotions"]
    if n_sentences < 3:
        raise ValueError(f"n_sentences must be >= 3 (train, val and test sentences), got {n_sentences}")
    unknown = [e for e in emotions if e not in C.EMOTIONS]
    if unknown:
        raise ValueError(f"unknown emotions {unknown}; choose from {C.EMOTIONS}")

    root = Path(root)
    for sub in (C.PARAM_DIR, C.WAV_DIR, "regions"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    subjects = _subjects(n_identities)
    style = {s: rng.normal(0, 0.3, C.NUM_EXPRESSION) for s in subjects}
    betas = {s: rng.normal(0, 0.5, 300) for s in subjects}
    jaw_rest = {s: rng.uniform(-0.01, 0.02) for s in subjects}
    pitch = {s: rng.uniform(100, 220) for s in subjects}

    for s_index, subject in enumerate(tqdm(subjects, desc="synthetic 3DMEAD speakers", unit="speaker", leave=False)):
        for emotion in (C.EMOTIONS.index(e) for e in emotions):
            levels = [0] if emotion == C.NEUTRAL else range(len(C.INTENSITIES))
            kind = "neutral" if emotion == C.NEUTRAL else "emotional"
            for intensity in levels:
                for sentence in _sentences(n_sentences, kind):
                    name = sequence_name(subject, sentence, emotion, intensity)
                    # a sentence's rhythm is shared by every speaker; the voice is the speaker's
                    rhythm = np.random.default_rng([seed, sentence, emotion, intensity])
                    voice = np.random.default_rng([seed, s_index, sentence, emotion, intensity, 1])
                    n_frames = int(round(rhythm.uniform(*seconds) * C.FPS))
                    extra = int(voice.integers(0, 300))  # real wavs rarely end on a frame boundary
                    audio = speech_like_audio(n_frames * C.SAMPLES_PER_FRAME + extra, rhythm, voice, pitch[subject])
                    params = _params(audio, n_frames, betas[subject], style[subject], jaw_rest[subject],
                                     emotion_pattern(emotion, intensity), voice)  # fmt: skip
                    np.save(root / C.PARAM_DIR / f"{name}.npy", params)
                    sf.write(root / C.WAV_DIR / f"{name}.wav", audio, C.AUDIO_SAMPLE_RATE, subtype="PCM_16")
    _write_side_files(root, subjects, rng)
    return root


def _params(audio, n_frames, betas, style, jaw_rest, emotion, rng) -> np.ndarray:
    """(1, T, 403) FLAME parameters driven by the audio envelope, emotion and identity;
    ``emotion`` is the ``emotion_pattern``, moved by the lagged opening."""
    opening = mouth_opening(audio, n_frames)
    smooth_noise = lambda scale, dims: gaussian_filter1d(rng.normal(0, scale, (n_frames, dims)), 2.0, axis=0)  # noqa: E731

    params = np.zeros((1, n_frames, C.PARAM_DIM), np.float32)
    params[0, :, 0:300] = betas
    expression = style + smooth_noise(0.1, C.EXPRESSION_SLICE[1] - C.EXPRESSION_SLICE[0])[:, : C.NUM_EXPRESSION]
    expression += _late(opening, EMOTION_LAG_FRAMES)[:, None] * emotion
    expression[:, 0] += 1.2 * opening
    params[0, :, 300 : 300 + C.NUM_EXPRESSION] = expression
    params[0, :, 300 + C.NUM_EXPRESSION : 400] = smooth_noise(0.05, 100 - C.NUM_EXPRESSION)
    params[0, :, 400] = jaw_rest + 0.3 * opening + rng.normal(0, 0.004, n_frames)
    params[0, :, 401:403] = rng.normal(0, 0.004, (n_frames, 2))
    return params


def _write_side_files(root: Path, subjects: list[str], rng: np.random.Generator) -> None:
    """Region index files, the zero-pose mesh and per-subject templates."""
    lips = np.sort(np.concatenate([[649, 3928], rng.choice(np.arange(650, 3928), C.NUM_LIP_VERTICES - 2, replace=False)]))
    upper = np.sort(np.concatenate([[16, 5012], rng.choice(np.arange(17, 5012), C.NUM_UPPER_FACE_VERTICES - 2, replace=False)]))
    (root / C.LIP_REGION_FILE).write_text(", ".join(str(i) for i in lips))
    (root / C.UPPER_FACE_REGION_FILE).write_text(", ".join(str(i) for i in upper))
    zero_pose = rng.normal(0, 0.05, (C.NUM_FLAME_VERTICES, 3)).astype(np.float32)
    np.save(root / C.ZERO_POSE_FILE, zero_pose)
    templates = {s: zero_pose + rng.normal(0, 0.002, zero_pose.shape).astype(np.float32) for s in subjects}
    (root / C.TEMPLATES_FILE).write_bytes(pickle.dumps(templates, protocol=2))
