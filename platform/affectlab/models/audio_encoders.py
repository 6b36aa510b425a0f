"""Speech front-ends of ProbTalk3D (reference/talking_heads.md §3, §4.2).

Both encoders are called the same way and return motion-rate features with their mask::

    feats, mask = encoder(audio, frame_mask=None, audio_mask=None)   # [B, T, out_dim], [B, T]

- ``HubertAudioEncoder``: 16 kHz waveforms ``[B, S]`` → HuBERT-base (``transformers``) at
  50 Hz → **pair concatenation** to 25 fps: the 2t-th and (2t+1)-th HuBERT frames form
  motion frame t (768 → 1536). An odd trailing HuBERT frame is dropped; when audio (2T)
  and motion (T) disagree, the longer one is truncated: the returned mask is the frames
  that have both. Without ``frame_mask`` (generation), T = ⌊frames / 2⌋. The waveform is
  z-normalised per utterance over its real samples, which is what the HF processor does
  (the original's min-max scaling before it is affine, so it changes nothing); it is done
  here so a served model and a trained one see the same input whatever the data layer did.
  The CNN feature extractor, ``feature_projection`` and encoder layers 0–1 are frozen; the
  rest fine-tunes (§4.2).
- ``LogMelAudioEncoder``: the documented substitute when no pretrained speech encoder is
  available (§3): log-mel frames computed in the data layer at the motion rate, ``[B, T,
  in_dim]`` (80 bands, or k·80 when k mel frames were stacked per motion frame), through a
  small masked convolutional encoder. Expect lower lip accuracy than HuBERT.

``build_audio_encoder`` returns ``(encoder, source)``; ``source`` says where the weights came
from (a local path, or "random init") so a run can state it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

if TYPE_CHECKING:  # transformers is imported where a HuBERT is built (it pulls in soundfile and more)
    from transformers import HubertConfig, HubertModel

HUBERT_FROZEN_LAYERS = 2  # encoder layers 0-1 stay frozen with the CNN and the projection

# `paper` is HubertConfig()'s defaults = HuBERT-base sizes; `tiny` keeps the 320-sample
# stride (so the 50 Hz → 25 fps pairing is the real one) with a very small network.
HUBERT_PRESETS = {
    "paper": {},
    "tiny": {
        "hidden_size": 32, "num_hidden_layers": 3, "num_attention_heads": 2, "intermediate_size": 64,
        "conv_dim": (16,) * 7, "num_conv_pos_embeddings": 16, "num_conv_pos_embedding_groups": 4,
    },
}  # fmt: skip
LOGMEL_PRESETS = {"paper": {"width": 256, "layers": 2}, "tiny": {"width": 64, "layers": 2}}


def _motion_mask(frame_mask: torch.Tensor | None, available: torch.Tensor) -> torch.Tensor:
    """Frames that have both motion (``frame_mask``) and audio (``available`` frames per sequence)."""
    t = frame_mask.shape[1] if frame_mask is not None else int(available.max())
    mask = torch.arange(t, device=available.device)[None, :] < available[:, None]
    if frame_mask is not None:
        if frame_mask.dtype != torch.bool or frame_mask.shape[0] != available.shape[0]:
            raise ValueError(f"frame_mask must be a bool [B, T] tensor for B = {available.shape[0]}, got {frame_mask.dtype} {tuple(frame_mask.shape)}")
        mask = mask & frame_mask
    if not mask.any(1).all():
        raise ValueError("a sequence has no frame with both audio and motion (audio too short?)")
    return mask


def _fit_time(x: torch.Tensor, length: int) -> torch.Tensor:
    """Crop or zero-pad ``[B, N, C]`` to ``length`` frames."""
    if x.shape[1] >= length:
        return x[:, :length]
    return F.pad(x, (0, 0, 0, length - x.shape[1]))


def hubert_num_frames(num_samples: torch.Tensor, config: HubertConfig) -> torch.Tensor:
    """HuBERT output frames for waveforms of ``num_samples`` (its convolutions, no padding)."""
    n = num_samples.long()
    for kernel, stride in zip(config.conv_kernel, config.conv_stride):
        n = torch.div(n - kernel, stride, rounding_mode="floor") + 1
    return n.clamp_min(0)


class HubertAudioEncoder(nn.Module):
    frames_per_motion_frame = 2  # 50 Hz HuBERT → 25 fps motion

    def __init__(self, hubert: HubertModel, normalize: bool = True, frozen_layers: int = HUBERT_FROZEN_LAYERS):
        super().__init__()
        self.hubert = hubert
        self.normalize = normalize
        self.out_dim = self.frames_per_motion_frame * hubert.config.hidden_size
        hubert.feature_extractor._freeze_parameters()
        frozen = [hubert.feature_projection, *hubert.encoder.layers[:frozen_layers]]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)

    def forward(
        self, audio: torch.Tensor, frame_mask: torch.Tensor | None = None, audio_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``audio`` ``[B, S]`` 16 kHz (``audio_mask`` ``[B, S]``: real samples) → ``[B, T, 1536]``."""
        if audio.dim() != 2:
            raise ValueError(f"HuBERT expects waveforms [B, samples], got shape {tuple(audio.shape)}")
        if audio_mask is None:
            audio_mask = torch.ones_like(audio, dtype=torch.bool)
        elif audio_mask.shape != audio.shape or audio_mask.dtype != torch.bool:
            raise ValueError(f"audio_mask must be a bool tensor of shape {tuple(audio.shape)}, got {audio_mask.dtype} {tuple(audio_mask.shape)}")
        x = audio.float()
        if self.normalize:  # per utterance over its real samples; padding stays 0
            m = audio_mask.float()
            n = m.sum(1, keepdim=True).clamp_min(1)
            mean = (x * m).sum(1, keepdim=True) / n
            var = ((x - mean).square() * m).sum(1, keepdim=True) / n
            x = (x - mean) / torch.sqrt(var + 1e-7) * m
        hidden = self.hubert(x, attention_mask=audio_mask.long()).last_hidden_state  # [B, N, 768]
        pairs = torch.div(hubert_num_frames(audio_mask.sum(1), self.hubert.config), 2, rounding_mode="floor")
        mask = _motion_mask(frame_mask, pairs)
        b, t = mask.shape
        feats = _fit_time(hidden, 2 * t).reshape(b, t, self.out_dim)
        return feats * mask[..., None].to(feats.dtype), mask


class ResidualConv(nn.Module):
    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.conv = nn.Conv1d(width, width, 3, padding=1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = (x * mask[..., None].to(x.dtype)).transpose(1, 2)  # padding reads as zeros
        return x + self.dropout(F.gelu(self.conv(h).transpose(1, 2)))


class LogMelAudioEncoder(nn.Module):
    """Log-mel frames at the motion rate ``[B, T, in_dim]`` → ``[B, T, width]``."""

    def __init__(self, in_dim: int = 80, width: int = 256, layers: int = 2, dropout: float = 0.1):
        super().__init__()
        self.in_dim = in_dim
        self.out_dim = width
        self.input = nn.Linear(in_dim, width)
        self.blocks = nn.ModuleList([ResidualConv(width, dropout) for _ in range(layers)])
        self.norm = nn.LayerNorm(width)

    def forward(
        self, audio: torch.Tensor, frame_mask: torch.Tensor | None = None, audio_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``audio_mask`` ``[B, T_audio]`` marks real log-mel frames (all when None)."""
        if audio.dim() != 3 or audio.shape[-1] != self.in_dim:
            raise ValueError(f"log-mel input must be [B, T, {self.in_dim}], got shape {tuple(audio.shape)}")
        if audio_mask is None:
            available = torch.full((audio.shape[0],), audio.shape[1], device=audio.device)
        elif audio_mask.shape != audio.shape[:2] or audio_mask.dtype != torch.bool:
            raise ValueError(f"audio_mask must be a bool tensor of shape {tuple(audio.shape[:2])}, got {audio_mask.dtype} {tuple(audio_mask.shape)}")
        else:
            available = audio_mask.sum(1)
        mask = _motion_mask(frame_mask, available)
        x = self.input(_fit_time(audio.float(), mask.shape[1]))
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x) * mask[..., None].to(x.dtype), mask


def hubert_config(preset: str) -> HubertConfig:
    if preset not in HUBERT_PRESETS:
        raise ValueError(f"preset must be one of {sorted(HUBERT_PRESETS)}, got {preset!r}")
    from transformers import HubertConfig

    return HubertConfig(**HUBERT_PRESETS[preset])


def build_audio_encoder(
    kind: str = "hubert", preset: str = "paper", *, path: str | None = None, in_dim: int = 80
) -> tuple[nn.Module, str]:
    """``(encoder, source)``. ``kind``: "hubert" (weights from the local ``path`` given, else a
    random-init ``HubertConfig`` of the preset) or "logmel" (``in_dim`` features per frame)."""
    if kind == "hubert":
        from transformers import HubertModel, Wav2Vec2FeatureExtractor

        if path is None:
            model = HubertModel(hubert_config(preset))
            sizes = "HuBERT-base sizes" if preset == "paper" else f"{preset} preset"
            return HubertAudioEncoder(model), f"random init (HubertConfig, {sizes})"
        if not Path(path).is_dir():
            raise FileNotFoundError(f"HuBERT weights directory {path!r} does not exist (expected a from_pretrained folder)")
        model = HubertModel.from_pretrained(path)
        normalize = True
        if (Path(path) / "preprocessor_config.json").is_file():  # defect 3: normalisation from the same model
            normalize = bool(Wav2Vec2FeatureExtractor.from_pretrained(path).do_normalize)
        return HubertAudioEncoder(model, normalize=normalize), f"pretrained HuBERT from {path}"
    if kind == "logmel":
        if preset not in LOGMEL_PRESETS:
            raise ValueError(f"preset must be one of {sorted(LOGMEL_PRESETS)}, got {preset!r}")
        return LogMelAudioEncoder(in_dim, **LOGMEL_PRESETS[preset]), f"log-mel substitute ({in_dim} per frame), random init"
    raise ValueError(f"audio encoder kind must be 'hubert' or 'logmel', got {kind!r}")
