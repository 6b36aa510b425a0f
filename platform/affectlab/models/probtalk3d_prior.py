"""ProbTalk3D stage 1: the motion priors (VQ-VAE and the VAE variant) and their shared trunk.

Motion is the 53-d per-frame vector of 3DMEAD (expression[0:50] + jaw axis-angle, min-max
scaled), ``[B, T, 53]`` with a ``[B, T]`` bool mask of real frames (right padding).
Sizes follow reference/talking_heads.md §4.1 (the ``paper`` preset):

- encoder: Linear(53→256) + LeakyReLU(0.2) → conv block (Conv1d k=5, replicate pad,
  LeakyReLU(0.2), InstanceNorm) → Linear → sinusoidal PE (dropout 0.1) → 6-layer pre-LN
  bidirectional transformer (8 heads, FFN 384, GELU); no temporal downsampling;
- decoder: conv block → Linear → PE → 6-layer transformer → Linear(256→53, no bias);
- quantiser (taming style): 256 codes, U(−1/256, 1/256) init, straight-through,
  loss ``β‖sg[z_q] − z‖² + ‖z_q − sg[z]‖²`` with β = 0.25, no EMA, no code reset;
- loss ``1.5·quant + 0.5·L1(exp) + 0.1·L1(jaw)`` in the scaled space.

Defect 1 fixed: a code token describes **one frame**. The [B, T, 256] latent is split per
frame into ``tokens_per_frame`` slices of ``256 / tokens_per_frame`` channels, so codes are
``[B, T, G]`` (G = 2, 128-d codes in the paper preset: the reference's 2T tokens of 128, but
each made of one frame's channels instead of a channel-major slice across time).

Masks are honoured everywhere (replicate padding at each sequence's own end, instance norm
and attention over real frames only, losses averaged over real frames), so a padded batch
gives the real frames the same outputs and losses as the unpadded sequences.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from affectlab.constants.probtalk3d import MOTION_DIM, NUM_EXPRESSION

# Loss-term names each model's ``loss()`` returns (the workload logs and monitors these).
VQ_PRIOR_TERMS = ("quant", "exp_l1", "jaw_l1", "perplexity")
VAE_PRIOR_TERMS = ("kl", "exp_l1", "jaw_l1")


@dataclass(frozen=True)
class PriorConfig:
    """One trunk size for encoder and decoder; loss weights of §4.1."""

    motion_dim: int = MOTION_DIM
    exp_dim: int = NUM_EXPRESSION
    width: int = 256
    depth: int = 6
    heads: int = 8
    ffn: int = 384
    kernel: int = 5
    dropout: float = 0.1
    # VQ-VAE
    n_codes: int = 256
    tokens_per_frame: int = 2  # code dim = width / tokens_per_frame
    beta: float = 0.25
    quant_weight: float = 1.5
    exp_weight: float = 0.5
    jaw_weight: float = 0.1
    # VAE variant
    kl_weight: float = 1e-4
    vae_exp_weight: float = 1.5
    vae_jaw_weight: float = 1.0

    def __post_init__(self):
        if self.width % self.tokens_per_frame:
            raise ValueError(f"width {self.width} is not divisible by tokens_per_frame {self.tokens_per_frame}")
        if self.width % self.heads:
            raise ValueError(f"width {self.width} is not divisible by heads {self.heads}")

    @property
    def code_dim(self) -> int:
        return self.width // self.tokens_per_frame


PRIOR_PRESETS = {
    "paper": {},  # the dataclass defaults are §4.1
    "tiny": {"width": 64, "depth": 2, "heads": 4, "ffn": 128},  # tests and laptops
}


# ---------------------------------------------------------------------------- masks


def check_mask(mask: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """A right-padded ``[B, T]`` bool mask for ``x`` ``[B, T, ...]`` (all True when None)."""
    b, t = x.shape[:2]
    if mask is None:
        return torch.ones(b, t, dtype=torch.bool, device=x.device)
    if mask.shape != (b, t) or mask.dtype != torch.bool:
        raise ValueError(f"mask must be a bool tensor of shape {(b, t)}, got {mask.dtype} {tuple(mask.shape)}")
    lengths = mask.sum(1)
    if (lengths == 0).any():
        raise ValueError("every sequence needs at least one real frame (a mask row is all False)")
    if not torch.equal(mask, lengths_to_mask(lengths, t)):
        raise ValueError("mask must mark a prefix of real frames per sequence (right padding)")
    return mask


def lengths_to_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    return torch.arange(max_len, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` ``[B, T, ...]`` over real frames and all trailing elements (frame-weighted)."""
    m = mask.reshape(*mask.shape, *([1] * (x.dim() - 2))).to(x.dtype)
    per_frame = x[0, 0].numel()
    return (x * m).sum() / (m.sum() * per_frame)


def masked_l1(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return masked_mean((a - b).abs(), mask)


def replicate_tail(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Padded frames of ``[B, T, C]`` take the value of their sequence's last real frame."""
    last = mask.sum(1, keepdim=True) - 1
    index = torch.minimum(torch.arange(x.shape[1], device=x.device)[None, :], last)
    return x.gather(1, index[..., None].expand(-1, -1, x.shape[2]))


def masked_instance_norm(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """InstanceNorm1d (no affine) of ``[B, C, T]`` with statistics over real frames only."""
    m = mask[:, None, :].to(x.dtype)
    n = m.sum(-1, keepdim=True)
    mean = (x * m).sum(-1, keepdim=True) / n
    var = ((x - mean).square() * m).sum(-1, keepdim=True) / n
    return (x - mean) / torch.sqrt(var + eps) * m


# --------------------------------------------------------------------------- blocks


class ConvBlock(nn.Module):
    """Conv1d (replicate padding, stride 1) → LeakyReLU(0.2) → instance norm, on ``[B, T, C]``."""

    def __init__(self, channels: int, kernel: int):
        super().__init__()
        self.pad = kernel // 2
        self.conv = nn.Conv1d(channels, channels, kernel)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # each sequence is replicate-padded at its own end, not with the batch's padding
        h = F.pad(replicate_tail(x, mask).transpose(1, 2), (self.pad, self.pad), mode="replicate")
        h = F.leaky_relu(self.conv(h), 0.2)
        return masked_instance_norm(h.float(), mask).to(h.dtype).transpose(1, 2)


def sinusoidal_positions(length: int, dim: int, device: torch.device) -> torch.Tensor:
    position = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freq = torch.exp(torch.arange(0, dim, 2, device=device, dtype=torch.float32) * (-math.log(10000.0) / dim))
    table = torch.zeros(length, dim, device=device)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq)
    return table


class TemporalTrunk(nn.Module):
    """The stack every ProbTalk3D network shares: [Linear + LeakyReLU] → conv block → Linear →
    sinusoidal PE + dropout → pre-LN bidirectional transformer (GELU) with a final LayerNorm."""

    def __init__(self, width: int, depth: int, heads: int, ffn: int, kernel: int, dropout: float, in_dim: int | None = None):
        super().__init__()
        self.input = nn.Linear(in_dim, width) if in_dim is not None else None
        self.conv = ConvBlock(width, kernel)
        self.linear = nn.Linear(width, width)
        self.dropout = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            width, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.transformer = nn.TransformerEncoder(layer, depth, norm=nn.LayerNorm(width), enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        if self.input is not None:
            x = F.leaky_relu(self.input(x), 0.2)
        x = self.linear(self.conv(x, mask))
        x = self.dropout(x + sinusoidal_positions(x.shape[1], x.shape[2], x.device).to(x.dtype))
        return self.transformer(x, src_key_padding_mask=~mask)


class MotionDecoder(nn.Module):
    """Latent ``[B, T, W]`` → motion ``[B, T, 53]``."""

    def __init__(self, cfg: PriorConfig):
        super().__init__()
        self.trunk = TemporalTrunk(cfg.width, cfg.depth, cfg.heads, cfg.ffn, cfg.kernel, cfg.dropout)
        self.out = nn.Linear(cfg.width, cfg.motion_dim, bias=False)

    def forward(self, latent: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.out(self.trunk(latent, mask))


def motion_terms(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, exp_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked L1 of the expression channels and of the jaw channels."""
    exp = masked_l1(pred[..., :exp_dim], target[..., :exp_dim], mask)
    jaw = masked_l1(pred[..., exp_dim:], target[..., exp_dim:], mask)
    return exp, jaw


# ------------------------------------------------------------------------ quantiser


def sample_codes(
    logits: torch.Tensor, *, temperature: float, top_k: int | None = None, generator: torch.Generator
) -> torch.Tensor:
    """One code per token from ``softmax(logits / temperature)`` over the last axis.

    ``top_k`` keeps the k most likely codes before sampling (None: all). The original's ``k``
    drew k codes without replacement and kept the last; with k = 1 (its default) both are
    plain multinomial sampling. Randomness comes only from ``generator``.
    """
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    n_codes = logits.shape[-1]
    scaled = logits.float().reshape(-1, n_codes) / temperature
    if top_k is not None:
        if not 1 <= top_k <= n_codes:
            raise ValueError(f"top_k must be in [1, {n_codes}], got {top_k}")
        kth = scaled.topk(top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    probs = torch.softmax(scaled, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).reshape(logits.shape[:-1])


class VectorQuantizer(nn.Module):
    """Nearest-code quantiser over per-frame tokens: ``[B, T, W]`` → codes ``[B, T, G]``."""

    def __init__(self, n_codes: int, code_dim: int, tokens_per_frame: int, beta: float):
        super().__init__()
        self.n_codes, self.code_dim, self.tokens_per_frame, self.beta = n_codes, code_dim, tokens_per_frame, beta
        self.codebook = nn.Embedding(n_codes, code_dim)
        nn.init.uniform_(self.codebook.weight, -1.0 / n_codes, 1.0 / n_codes)

    def tokens(self, z: torch.Tensor) -> torch.Tensor:
        """``[B, T, G·d]`` → ``[B, T, G, d]``: token g of frame t is that frame's channels g·d…(g+1)·d."""
        b, t, _ = z.shape
        return z.reshape(b, t, self.tokens_per_frame, self.code_dim)

    def distances(self, z: torch.Tensor) -> torch.Tensor:
        """Squared Euclidean distance of every token to every code: ``[B, T, G, K]``."""
        tokens = self.tokens(z).float()
        codes = self.codebook.weight.float()
        return tokens.square().sum(-1, keepdim=True) - 2 * tokens @ codes.T + codes.square().sum(-1)

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """Codes ``[B, T, G]`` → quantised latent ``[B, T, G·d]``."""
        b, t, _ = codes.shape
        return self.codebook(codes).reshape(b, t, -1)

    def forward(self, z: torch.Tensor, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        codes = self.distances(z).argmin(-1)
        z_q = self.lookup(codes).to(z.dtype)
        commit = masked_mean((z_q.detach() - z).square(), mask)
        codebook = masked_mean((z_q - z.detach()).square(), mask)
        counts = torch.bincount(codes[mask].reshape(-1), minlength=self.n_codes).float()
        p = counts / counts.sum()
        perplexity = torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())
        return {
            "latent": z + (z_q - z).detach(),  # straight-through
            "codes": codes,
            "quant_loss": self.beta * commit + codebook,
            "perplexity": perplexity,
        }


# --------------------------------------------------------------------------- priors


class VQPrior(nn.Module):
    """The VQ-VAE motion prior of stage 1."""

    kind = "vqvae"

    def __init__(self, cfg: PriorConfig = PriorConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = TemporalTrunk(cfg.width, cfg.depth, cfg.heads, cfg.ffn, cfg.kernel, cfg.dropout, in_dim=cfg.motion_dim)
        self.quantizer = VectorQuantizer(cfg.n_codes, cfg.code_dim, cfg.tokens_per_frame, cfg.beta)
        self.decoder = MotionDecoder(cfg)

    def encode(self, motion: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """Continuous per-frame latent ``[B, T, W]`` (before quantisation)."""
        return self.encoder(motion, check_mask(mask, motion))

    def decode(self, latent: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(latent, check_mask(mask, latent))

    def forward(
        self, motion: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Reconstruction, straight-through latent, codes ``[B, T, G]``, quantiser loss and code
        perplexity. ``generator`` is unused (nothing is drawn); both priors take the same call."""
        mask = check_mask(mask, motion)
        quant = self.quantizer(self.encoder(motion, mask), mask)
        return {**quant, "motion": self.decoder(quant["latent"], mask)}

    def loss_from_outputs(
        self, out: dict[str, torch.Tensor], motion: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``1.5·quant + 0.5·L1(exp) + 0.1·L1(jaw)`` over real frames from ``forward``'s outputs
        (under DDP: ``out = ddp_model(motion, mask)``); terms ``VQ_PRIOR_TERMS``."""
        mask = check_mask(mask, motion)
        exp, jaw = motion_terms(out["motion"], motion, mask, self.cfg.exp_dim)
        c = self.cfg
        total = c.quant_weight * out["quant_loss"] + c.exp_weight * exp + c.jaw_weight * jaw
        terms = {"quant": out["quant_loss"], "exp_l1": exp, "jaw_l1": jaw, "perplexity": out["perplexity"]}
        return total, {k: float(v.detach()) for k, v in terms.items()}

    def loss(
        self, motion: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """forward + ``loss_from_outputs`` (single process; under DDP call the wrapper, then
        ``loss_from_outputs``)."""
        return self.loss_from_outputs(self(motion, mask, generator), motion, mask)


class VAEPrior(nn.Module):
    """The VAE variant: a Gaussian latent per frame (Linear mean / log-variance heads)."""

    kind = "vae"

    def __init__(self, cfg: PriorConfig = PriorConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = TemporalTrunk(cfg.width, cfg.depth, cfg.heads, cfg.ffn, cfg.kernel, cfg.dropout, in_dim=cfg.motion_dim)
        self.mean = nn.Linear(cfg.width, cfg.width)
        self.logvar = nn.Linear(cfg.width, cfg.width)
        self.decoder = MotionDecoder(cfg)

    def gaussian(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Trunk features ``[B, T, W]`` → per-frame (mean, log-variance)."""
        return self.mean(features), self.logvar(features)

    def encode(self, motion: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gaussian(self.encoder(motion, check_mask(mask, motion)))

    def decode(self, latent: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.decoder(latent, check_mask(mask, latent))

    @staticmethod
    def draw(
        mean: torch.Tensor, logvar: torch.Tensor, *, fact: float = 1.0, generator: torch.Generator
    ) -> torch.Tensor:
        """``mean + fact·(sample − mean)``, sample ~ N(mean, σ²): the reparameterised draw,
        with the noise scaled by ``fact`` at generation (§4.1; 1 in training)."""
        eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
        return mean + fact * torch.exp(0.5 * logvar) * eps

    def forward(
        self, motion: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Reconstruction through a latent drawn from ``generator`` in training mode (required
        there), through the mean in eval mode (deterministic validation)."""
        mask = check_mask(mask, motion)
        mean, logvar = self.gaussian(self.encoder(motion, mask))
        if self.training:
            if generator is None:
                raise ValueError("VAEPrior in training mode draws latents: pass a torch.Generator")
            latent = self.draw(mean, logvar, generator=generator)
        else:
            latent = mean
        return {"motion": self.decoder(latent, mask), "latent": latent, "mean": mean, "logvar": logvar}

    def loss_from_outputs(
        self, out: dict[str, torch.Tensor], motion: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``1e-4·KL + 1.5·L1(exp) + 1·L1(jaw)`` from ``forward``'s outputs; terms ``VAE_PRIOR_TERMS``."""
        mask = check_mask(mask, motion)
        mean, logvar = out["mean"], out["logvar"]
        # KL(N(mean, σ²) ‖ N(0, 1)), averaged over real frames and latent channels
        kl = masked_mean(0.5 * (mean.square() + logvar.exp() - 1.0 - logvar), mask)
        exp, jaw = motion_terms(out["motion"], motion, mask, self.cfg.exp_dim)
        c = self.cfg
        total = c.kl_weight * kl + c.vae_exp_weight * exp + c.vae_jaw_weight * jaw
        return total, {"kl": float(kl.detach()), "exp_l1": float(exp.detach()), "jaw_l1": float(jaw.detach())}

    def loss(
        self, motion: torch.Tensor, mask: torch.Tensor | None = None, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """forward + ``loss_from_outputs``."""
        return self.loss_from_outputs(self(motion, mask, generator), motion, mask)


PRIORS = {"vqvae": VQPrior, "vae": VAEPrior}


def prior_config(preset: str, **overrides) -> PriorConfig:
    if preset not in PRIOR_PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRIOR_PRESETS)}, got {preset!r}")
    return PriorConfig(**{**PRIOR_PRESETS[preset], **overrides})


def build_prior(model: str, preset: str = "paper", **overrides) -> VQPrior | VAEPrior:
    """Stage 1: ``build_prior("vqvae", "tiny")``; overrides are ``PriorConfig`` fields."""
    if model not in PRIORS:
        raise ValueError(f"model must be one of {sorted(PRIORS)}, got {model!r}")
    return PRIORS[model](prior_config(preset, **overrides))


def prior_config_dict(prior: VQPrior | VAEPrior) -> dict:
    return {"model": prior.kind, **asdict(prior.cfg)}
