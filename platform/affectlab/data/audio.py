"""Audio input for the speech-driven workloads: WAV decoding, resampling and the numpy
front-end features (reference/talking_heads.md §3).

Every system resamples to **16 kHz mono**. ``read_wav`` decodes a WAV (a path, or the bytes
of an upload), mixes it down, resamples it with a polyphase filter and returns float32 in
[-1, 1]; anything it cannot use raises ``AudioError`` naming the source.

Two front-ends feed the models, both aligned to motion frames:

- **HuBERT** (ProbTalk3D, FaceDiffuser): the waveform goes through the HF feature
  extractor of the *same* model as the encoder (``hubert_processor``; the original took it
  from another model, defect 3). The encoder itself and the pair concatenation of its
  50 Hz frames to 25 fps are model code (``affectlab.models``), not here.
- **log-mel** (``log_mel``, the substitute of §3 for machines without pretrained speech
  encoders, not part of the originals): Hann 400, n_fft 512, hop 160, 80 bands,
  ``log(mel + 1e-6)``, per-utterance mean/variance normalisation per band, interpolated to
  ``per_frame`` mel frames per motion frame; ``per_frame=4`` at 25 fps mirrors HuBERT's
  pair concatenation ((T, 4·80) instead of (T, 2·768)). Expect lower lip accuracy.

``audio_envelope`` is the per-frame RMS the synthetic data plants the jaw on and the reports
plot the jaw against.
"""

from __future__ import annotations

import functools
import io
import math
import os
import socket
import struct
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlparse

import numpy as np

if TYPE_CHECKING:
    from transformers import Wav2Vec2FeatureExtractor

SAMPLE_RATE = 16000
# Sample rates a WAV may declare: real recordings lie in 4-384 kHz. A header outside that range,
# or a rate whose exact ratio to the target needs a huge polyphase filter (e.g. 1000003 Hz: a
# 20-million-tap filter), is refused before decoding, so a hostile header cannot stall a worker.
MIN_SAMPLE_RATE, MAX_SAMPLE_RATE = 4000, 384000
MAX_RATIO_TERM = 50000  # every standard rate reduces to terms <= 441 against 16 kHz
WAV_FORMATS = ("WAV", "WAVEX", "RF64")  # libsndfile's names for RIFF/WAVE files
HUBERT_BASE = "facebook/hubert-base-ls960"


class AudioError(ValueError):
    """An audio input is not a usable WAV: undecodable, truncated, empty, too long or not finite."""


# ---------------------------------------------------------------------------- decoding


def read_wav(
    source: str | os.PathLike | bytes | bytearray | memoryview,
    *,
    target_sr: int = SAMPLE_RATE,
    max_seconds: float | None = None,
    name: str | None = None,
) -> np.ndarray:
    """Decode a WAV file (path or bytes) to mono float32 in [-1, 1] at ``target_sr``.

    Channels are averaged. A float WAV whose peak is above full scale is scaled down by its
    peak (not clipped); the resampler's small overshoot is clipped. ``max_seconds`` bounds
    the duration, checked from the header before any sample is decoded. ``name`` labels the
    source in errors (defaults to the path, or ``<WAV bytes>``).
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        label = name or "<WAV bytes>"
        data = bytes(source)
        total = len(data)
        opener = lambda: io.BytesIO(data)  # noqa: E731
    else:
        path = Path(source)
        label = name or str(path)
        if not path.is_file():
            raise AudioError(f"{label}: no such audio file")
        total = path.stat().st_size
        opener = lambda: open(path, "rb")  # noqa: E731
    if total == 0:
        raise AudioError(f"{label}: empty file (0 bytes); expected a WAV file")

    import soundfile as sf  # here, not at import: log_mel and the envelope need no libsndfile

    with opener() as fh:
        _check_not_truncated(fh, total, label)
        fh.seek(0)
        try:
            sound = sf.SoundFile(fh)
        except (sf.LibsndfileError, RuntimeError) as error:
            reason = getattr(error, "error_string", None) or str(error)
            raise AudioError(f"{label}: not a WAV file or undecodable ({reason})") from error
        with sound:
            if sound.format not in WAV_FORMATS:
                raise AudioError(f"{label}: is {sound.format} audio; expected a WAV file")
            sr, n = sound.samplerate, sound.frames
            _check_rate(sr, target_sr, label)
            if n == 0:
                raise AudioError(f"{label}: holds no audio samples")
            if max_seconds is not None and n / sr > max_seconds:
                raise AudioError(f"{label}: {n / sr:.1f} s of audio is longer than the limit of {max_seconds:g} s")
            samples = sound.read(dtype="float32", always_2d=True)
    if len(samples) == 0:
        raise AudioError(f"{label}: holds no audio samples")
    if not np.isfinite(samples).all():
        raise AudioError(f"{label}: audio samples contain NaN or infinite values")
    mono = samples.mean(axis=1)
    peak = float(np.abs(mono).max())
    if peak > 1.0:  # only float WAVs can exceed full scale
        mono = mono / peak
    return np.clip(resample(mono, sr, target_sr), -1.0, 1.0).astype(np.float32)


def _check_rate(sr: int, target_sr: int, label: str) -> None:
    if not MIN_SAMPLE_RATE <= sr <= MAX_SAMPLE_RATE:
        raise AudioError(f"{label}: sample rate {sr} Hz is outside {MIN_SAMPLE_RATE}-{MAX_SAMPLE_RATE} Hz")
    g = math.gcd(int(sr), int(target_sr))
    if max(sr, target_sr) // g > MAX_RATIO_TERM:
        raise AudioError(
            f"{label}: sample rate {sr} Hz has no short exact ratio to {target_sr} Hz ({target_sr // g}/{sr // g}); "
            "convert the file to a standard rate (e.g. 16000, 44100 or 48000 Hz)"
        )


def _check_not_truncated(fh: BinaryIO, total: int, label: str) -> None:
    """Compare the RIFF ``data`` chunk's declared size with the bytes present.

    libsndfile silently reads what is there when a file was cut short, so a truncated
    upload would decode as a shorter clip; the header says how long it should be.
    """
    fh.seek(0)
    head = fh.read(12)
    if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
        return  # RF64 and friends: libsndfile's own checks only
    offset = 12
    while offset + 8 <= total:
        fh.seek(offset)
        chunk_id, size = struct.unpack("<4sI", fh.read(8))
        if chunk_id == b"data":
            present = total - offset - 8
            if size != 0xFFFFFFFF and size > present:  # 0xFFFFFFFF: streamed, size unknown
                raise AudioError(f"{label}: truncated WAV: the header declares {size} bytes of samples, {present} are present")
            return
        offset += 8 + size + (size & 1)
    raise AudioError(f"{label}: truncated WAV: no 'data' chunk")


def resample(audio: np.ndarray, sr: int, target_sr: int) -> np.ndarray:
    """Polyphase resampling by the reduced ratio ``target_sr / sr`` (``scipy.signal.resample_poly``)."""
    if sr == target_sr:
        return np.asarray(audio, dtype=np.float32)
    if sr <= 0 or target_sr <= 0:
        raise ValueError(f"sample rates must be positive, got {sr} -> {target_sr}")
    from scipy.signal import resample_poly  # here: scipy.signal takes a second to import, 16 kHz input never needs it

    g = math.gcd(int(sr), int(target_sr))
    return resample_poly(np.asarray(audio, dtype=np.float64), target_sr // g, sr // g).astype(np.float32)


# ---------------------------------------------------------------------------- per-frame features


def _n_frames(n_samples: int, sr: int, fps: float) -> int:
    return int(math.floor(n_samples * fps / sr + 1e-6))


def audio_envelope(audio: np.ndarray, sr: int, fps: float, n_frames: int | None = None) -> np.ndarray:
    """Per-frame RMS of ``audio``: frame t covers samples [t·sr/fps, (t+1)·sr/fps).

    ``n_frames`` defaults to the whole frames the audio covers; frames past its end count
    as silence.
    """
    x = np.asarray(audio, dtype=np.float64).reshape(-1)
    t = _n_frames(len(x), sr, fps) if n_frames is None else int(n_frames)
    hop = sr / fps
    edges = np.round(np.arange(t + 1) * hop).astype(np.int64)
    energy = np.concatenate([[0.0], np.cumsum(x * x)])
    inside = np.clip(edges, 0, len(x))
    width = np.maximum(np.diff(edges), 1)
    return np.sqrt(np.diff(energy[inside]) / width).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _mel_filters(n_mels: int) -> np.ndarray:
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(
        num_frequency_bins=257, num_mel_filters=n_mels, min_frequency=0.0, max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE, norm="slaney", mel_scale="slaney",
    )  # fmt: skip


def log_mel(
    audio: np.ndarray, sr: int, fps: float = 25, n_mels: int = 80, *, n_frames: int | None = None, per_frame: int = 1
) -> np.ndarray:
    """Normalised log-mel features aligned to motion frames: ``(T, per_frame * n_mels)`` float32.

    16 kHz (other rates are resampled first), Hann window 400, n_fft 512, hop 160 (100 Hz),
    ``log(mel + 1e-6)``, each band normalised to zero mean / unit variance over the
    utterance, then linearly interpolated in time to ``per_frame`` sub-frames centred in
    each motion frame, sub-frames concatenated per frame. ``T`` is ``n_frames`` or the
    whole frames the audio covers at ``fps``.
    """
    from transformers.audio_utils import spectrogram, window_function

    x = resample(np.asarray(audio, dtype=np.float32).reshape(-1), sr, SAMPLE_RATE)
    t = _n_frames(len(x), SAMPLE_RATE, fps) if n_frames is None else int(n_frames)
    if per_frame < 1:
        raise ValueError(f"per_frame must be >= 1, got {per_frame}")
    if t == 0 or len(x) == 0:
        return np.zeros((t, per_frame * n_mels), np.float32)
    if len(x) < 400:  # shorter than one window: pad with silence so the STFT has a frame
        x = np.pad(x, (0, 400 - len(x)))
    mel = spectrogram(
        x, window_function(400, "hann"), frame_length=400, hop_length=160, fft_length=512, power=2.0,
        mel_filters=_mel_filters(n_mels), mel_floor=1e-10,
    )  # fmt: skip  # (n_mels, F), power mel
    feats = np.log(mel + 1e-6)
    feats = (feats - feats.mean(axis=1, keepdims=True)) / (feats.std(axis=1, keepdims=True) + 1e-5)
    source_times = np.arange(feats.shape[1]) * 160 / SAMPLE_RATE  # centre of each STFT frame (center=True)
    target_times = (np.arange(t * per_frame) + 0.5) / (per_frame * fps)
    out = np.stack([np.interp(target_times, source_times, band) for band in feats], axis=1)  # (T*k, n_mels)
    return out.reshape(t, per_frame * n_mels).astype(np.float32)


# ---------------------------------------------------------------------------- HuBERT's processor


def hubert_processor(
    name_or_path: str | os.PathLike = HUBERT_BASE, *, allow_download: bool = True, timeout: float = 3.0
) -> tuple["Wav2Vec2FeatureExtractor", str]:
    """The HF feature extractor that belongs to the HuBERT encoder ``name_or_path``, and where it came from.

    Order: a local directory (its ``preprocessor_config.json``); the HF cache; the hub, when
    ``allow_download`` and the endpoint answers within ``timeout`` seconds. When none of
    these has it, a ``Wav2Vec2FeatureExtractor`` with HuBERT-base-ls960's settings (16 kHz,
    one channel, zero mean / unit variance normalisation, padding 0, no attention mask).
    The returned ``source`` string says which, for the run's config and report. Load the
    encoder from the same ``name_or_path`` (defect 3: the original mixed two models).
    """
    from transformers import Wav2Vec2FeatureExtractor

    text = str(name_or_path)
    path = Path(text).expanduser()
    looks_like_path = path.exists() or text.startswith(("/", "./", "../", "~"))
    if looks_like_path:
        if not path.is_dir():
            raise FileNotFoundError(f"HuBERT path {path} is not a directory (expected a HF model folder)")
        if (path / "preprocessor_config.json").is_file():
            return Wav2Vec2FeatureExtractor.from_pretrained(str(path)), f"path:{path}"
        reason = f"{path} has no preprocessor_config.json"
    else:
        try:
            return Wav2Vec2FeatureExtractor.from_pretrained(text, local_files_only=True), f"hf-cache:{text}"
        except OSError:
            pass
        if allow_download and _hub_reachable(timeout):
            try:
                return Wav2Vec2FeatureExtractor.from_pretrained(text), f"hub:{text}"
            except OSError as error:
                reason = f"the hub did not give {text} ({str(error).splitlines()[0]})"
        else:
            reason = f"{text} is not cached and the hub is {'not reachable' if allow_download else 'not asked'}"
    extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=SAMPLE_RATE, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    return extractor, f"fallback:hubert-base-ls960 settings ({reason})"


def _hub_reachable(timeout: float) -> bool:
    """A TCP connection to the HF endpoint within ``timeout`` (the HF client retries for ~45 s otherwise)."""
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return False
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    try:
        with socket.create_connection((url.hostname, url.port or (443 if url.scheme == "https" else 80)), timeout=timeout):
            return True
    except OSError:
        return False
