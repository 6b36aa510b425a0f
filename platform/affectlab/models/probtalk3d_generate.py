"""ProbTalk3D generation from a waveform and a style: what the evaluation and the server call.

- ``predictor_from_config(config)`` builds the stage-2 model from the ``"config"`` dict of a
  stage-2 checkpoint's ``config.json`` (sizes, audio front-end, prior kind); no weights are
  read, so load them after (``affectlab.train.checkpoint.load_model`` does both).
- ``style_indices(identity, emotion, intensity)`` turns names into the style columns.
- ``generate_samples(model, audio, style, ...)`` draws ``n_samples`` motions for one
  utterance: the audio is encoded **once**, then each sample draws its own codes (VQ-VAE:
  ``softmax(−d / temperature)`` per token, optionally over the ``top_k`` nearest codes; VAE:
  ``mean + fact·σ·ε``) from one ``torch.Generator`` seeded with ``seed``, and is decoded by
  the frozen prior. ``sample=False`` gives the nearest codes / the mean for every sample.
  The same seed gives bit-identical output on CPU.

The motion is ProbTalk3D's scaled 53-d layout ``(K, T, 53)`` at 25 fps (T = ⌊samples /
640⌋ for log-mel, ⌊HuBERT frames / 2⌋ for HuBERT); ``affectlab.data.mead.params_from_motion``
turns it into the generated-output layout ``(K, T, 403)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from affectlab.constants import probtalk3d as C
from affectlab.data.audio import log_mel
from affectlab.models.audio_encoders import LogMelAudioEncoder
from affectlab.models.probtalk3d import ProbTalk3DPredictor, build_probtalk3d
from affectlab.models.probtalk3d_prior import VAEPrior, build_prior, sample_codes

MEL_BANDS = 80
# the config keys the model is rebuilt from (a stage-2 checkpoint's config.json "config")
MODEL_KEYS = ("model", "preset", "audio", "mel_per_frame", "n_codes", "tokens_per_frame")


def predictor_from_config(config: dict) -> ProbTalk3DPredictor:
    """The stage-2 model a checkpoint's config describes, randomly initialised (HuBERT too:
    its fine-tuned weights are in the checkpoint)."""
    missing = [k for k in MODEL_KEYS if k not in config]
    if missing:
        raise ValueError(f"a ProbTalk3D stage-2 config needs {list(MODEL_KEYS)}; missing {missing}")
    prior = build_prior(config["model"], config["preset"], n_codes=config["n_codes"], tokens_per_frame=config["tokens_per_frame"])
    return build_probtalk3d(
        config["model"], config["preset"], n_identities=C.NUM_STYLE_IDENTITIES, n_emotions=len(C.EMOTIONS),
        n_intensities=len(C.INTENSITIES), audio=config["audio"], audio_in_dim=MEL_BANDS * config["mel_per_frame"], prior=prior,
    )  # fmt: skip


def style_indices(identity: str, emotion: str, intensity: str | int) -> tuple[int, int, int]:
    """``("M003", "happy", "level_2")`` (or intensity 1) → the style columns ``(0, 1, 1)``."""
    if identity not in C.TRAIN_SUBJECTS:
        raise ValueError(f"id: {identity!r} is not one of the {len(C.TRAIN_SUBJECTS)} training identities {list(C.TRAIN_SUBJECTS)}")
    if emotion not in C.EMOTIONS:
        raise ValueError(f"emotion: {emotion!r} is not one of {list(C.EMOTIONS)}")
    if isinstance(intensity, str):
        if intensity not in C.INTENSITIES:
            raise ValueError(f"intensity: {intensity!r} is not one of {list(C.INTENSITIES)}")
        level = C.INTENSITIES.index(intensity)
    else:
        level = int(intensity)
        if not 0 <= level < len(C.INTENSITIES):
            raise ValueError(f"intensity: {intensity!r} is not in 0-{len(C.INTENSITIES) - 1}")
    return C.TRAIN_SUBJECTS.index(identity), C.EMOTIONS.index(emotion), level


def model_input(model: ProbTalk3DPredictor, audio: np.ndarray) -> torch.Tensor:
    """The audio encoder's input ``[1, ...]`` from 16 kHz mono samples in [-1, 1]: log-mel
    frames ``[1, T, k·80]`` (as the data layer computes them) or the waveform ``[1, S]``."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1 or not np.isfinite(audio).all():
        raise ValueError(f"audio must be 1-d finite 16 kHz samples, got shape {audio.shape}")
    n_frames = len(audio) // C.SAMPLES_PER_FRAME
    if n_frames < 1:
        raise ValueError(f"audio: {len(audio)} samples is shorter than one 25 fps frame ({C.SAMPLES_PER_FRAME} samples)")
    device = next(model.parameters()).device
    encoder = model.audio_encoder
    if isinstance(encoder, LogMelAudioEncoder):
        per_frame = encoder.in_dim // MEL_BANDS
        audio = audio[: n_frames * C.SAMPLES_PER_FRAME]
        mel = log_mel(audio, C.AUDIO_SAMPLE_RATE, C.FPS, MEL_BANDS, n_frames=n_frames, per_frame=per_frame)
        return torch.from_numpy(mel)[None].to(device)
    return torch.from_numpy(audio)[None].to(device)


def generate_samples(
    model: ProbTalk3DPredictor,
    audio: np.ndarray,
    style: Sequence[int],
    *,
    n_samples: int = 1,
    temperature: float = 0.2,
    sample: bool = True,
    seed: int = 0,
    top_k: int | None = None,
    fact: float = 20.0,
) -> np.ndarray:
    """``(n_samples, T, 53)`` float32 scaled motion for one utterance and style.

    ``audio``: 16 kHz mono samples in [-1, 1]; ``style``: ``(identity, emotion, intensity)``
    indices (``style_indices``). ``temperature`` / ``top_k`` act on VQ-VAE code sampling,
    ``fact`` on the VAE's noise; ``sample=False`` is deterministic. Randomness comes only
    from a ``torch.Generator`` seeded with ``seed``.
    """
    return generate_from_input(
        model, model_input(model, audio), style, n_samples=n_samples, temperature=temperature, sample=sample,
        seed=seed, top_k=top_k, fact=fact,
    )  # fmt: skip


@torch.no_grad()
def generate_from_input(
    model: ProbTalk3DPredictor,
    x: torch.Tensor,
    style: Sequence[int],
    *,
    n_samples: int = 1,
    temperature: float = 0.2,
    sample: bool = True,
    seed: int = 0,
    top_k: int | None = None,
    fact: float = 20.0,
) -> np.ndarray:
    """``generate_samples`` on a ``model_input`` already computed (one utterance generated
    at several settings encodes its audio features once)."""
    if n_samples < 1:
        raise ValueError(f"n_samples must be >= 1, got {n_samples}")
    if sample and model.kind == "vqvae" and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    device = x.device
    style_t = torch.as_tensor([list(style)], dtype=torch.long, device=device)
    was_training = model.training
    model.eval()
    try:
        latent, mask = model(x, style_t)  # the audio encoded once: [1, T, W]
        latent, mask = latent.expand(n_samples, -1, -1), mask.expand(n_samples, -1)
        generator = torch.Generator(device=device).manual_seed(int(seed))
        if model.kind == "vqvae":
            logits = model.code_logits(latent)
            codes = sample_codes(logits, temperature=temperature, top_k=top_k, generator=generator) if sample else logits.argmax(-1)
            z = model.prior.quantizer.lookup(codes).to(latent.dtype)
        else:
            mean, logvar = model.prior.gaussian(latent)
            z = VAEPrior.draw(mean, logvar, fact=fact, generator=generator) if sample else mean
        motion = model.prior.decode(z, mask)
    finally:
        model.train(was_training)
    return motion.float().cpu().numpy()
