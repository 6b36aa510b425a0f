"""ProbTalk3D stage 2: speech + style → motion through the frozen stage-1 prior (§4.2).

``ProbTalk3DPredictor`` holds an audio encoder (``models.audio_encoders``), the style
embeddings and a transformer that predicts a per-frame latent ``[B, T, W]``; the frozen
prior turns it into motion:

- **VQ-VAE** (``--model vqvae``): the latent is quantised with the prior's codebook. In
  training the nearest code (straight-through); at generation each token's code is drawn
  from ``softmax(−d / temperature)`` (d: squared distance to each code), optionally
  restricted to the ``top_k`` nearest, or the nearest (``sample=False``).
- **VAE** (``--model vae``): the latent goes through the prior's mean / log-variance heads;
  generation draws ``mean + fact·σ·ε`` (``fact`` 20 by default, §4.1), or the mean.

Architecture (paper preset): Linear(audio_dim→256)(audio) ⊙ style (broadcast over time) →
conv block (k=5) → Linear → PE → 12-layer transformer (8 heads, FFN 384). The style is the
reference's ``Linear(43→256, bias=False)`` of the one-hot ``[identity | emotion |
intensity]``, written as the sum of three bias-free embeddings (the same function, with
the vocabulary sizes passed in). Loss ``1.0·L1(latent) + 0.15·L1(exp) + 0.1·L1(jaw)``,
where the latent is the quantised one (VQ) or the drawn / mean one (VAE), against the
prior's own encoding of the ground truth.

The prior is frozen (``freeze``): no parameter of it requires grad and it stays in eval mode
when the predictor trains; gradients still flow *through* its decoder to the predictor.
Every sample is drawn from the ``torch.Generator`` passed in, nothing else: same seed →
bit-identical output on CPU.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

from affectlab.models.audio_encoders import build_audio_encoder
from affectlab.models.probtalk3d_prior import (
    PRIOR_PRESETS,
    TemporalTrunk,
    VAEPrior,
    VQPrior,
    build_prior,
    check_mask,
    masked_l1,
    motion_terms,
    sample_codes,
)

PREDICTOR_TERMS = ("latent_l1", "exp_l1", "jaw_l1")
STYLE_FIELDS = ("identity", "emotion", "intensity")  # the columns of a style tensor [B, 3]


@dataclass(frozen=True)
class PredictorConfig:
    n_identities: int
    n_emotions: int
    n_intensities: int
    depth: int = 12
    latent_weight: float = 1.0
    exp_weight: float = 0.15
    jaw_weight: float = 0.1


PREDICTOR_PRESETS = {"paper": {"depth": 12}, "tiny": {"depth": 2}}


def freeze(module: nn.Module) -> nn.Module:
    """No parameter of ``module`` requires grad, and it is in eval mode (dropout off)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module.eval()


class ProbTalk3DPredictor(nn.Module):
    def __init__(self, prior: VQPrior | VAEPrior, audio_encoder: nn.Module, cfg: PredictorConfig):
        super().__init__()
        self.cfg = cfg
        self.prior = freeze(prior)
        self.kind = prior.kind
        self.audio_encoder = audio_encoder
        p = prior.cfg
        self.audio_proj = nn.Linear(audio_encoder.out_dim, p.width)
        # = Linear(n_id + n_emo + n_int → width, bias=False) on the concatenated one-hot, with its init
        bound = (cfg.n_identities + cfg.n_emotions + cfg.n_intensities) ** -0.5
        self.style = nn.ModuleList(
            [nn.Embedding(n, p.width) for n in (cfg.n_identities, cfg.n_emotions, cfg.n_intensities)]
        )
        for table in self.style:
            nn.init.uniform_(table.weight, -bound, bound)
        self.trunk = TemporalTrunk(p.width, cfg.depth, p.heads, p.ffn, p.kernel, p.dropout)

    def train(self, mode: bool = True) -> "ProbTalk3DPredictor":
        super().train(mode)
        self.prior.eval()  # frozen: its dropout stays off even while the predictor trains
        return self

    def style_vector(self, style: torch.Tensor) -> torch.Tensor:
        """``style`` ``[B, 3]`` long (identity, emotion, intensity indices) → ``[B, W]``."""
        sizes = (self.cfg.n_identities, self.cfg.n_emotions, self.cfg.n_intensities)
        if style.dim() != 2 or style.shape[1] != 3 or style.dtype != torch.long:
            raise ValueError(f"style must be a long tensor [B, 3] of {STYLE_FIELDS} indices, got {style.dtype} {tuple(style.shape)}")
        for i, (name, n) in enumerate(zip(STYLE_FIELDS, sizes)):
            if style[:, i].min() < 0 or style[:, i].max() >= n:
                raise ValueError(f"style {name} index out of range [0, {n}): {style[:, i].tolist()}")
        return sum(table(style[:, i]) for i, table in enumerate(self.style))

    def forward(
        self, audio: torch.Tensor, style: torch.Tensor, frame_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The predicted per-frame latent ``[B, T, W]`` (before quantisation / the Gaussian
        heads) and the mask of frames that have audio and motion."""
        feats, mask = self.audio_encoder(audio, frame_mask, audio_mask)
        mask = check_mask(mask, feats)
        x = self.audio_proj(feats) * self.style_vector(style)[:, None, :]
        return self.trunk(x, mask), mask

    def code_logits(self, latent: torch.Tensor) -> torch.Tensor:
        """VQ-VAE only: ``−d`` to every code of the frozen codebook, ``[B, T, G, K]``."""
        if self.kind != "vqvae":
            raise ValueError("code logits exist for the VQ-VAE predictor only")
        return -self.prior.quantizer.distances(latent)

    def loss_from_outputs(
        self, latent: torch.Tensor, mask: torch.Tensor, motion: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``1.0·L1(latent) + 0.15·L1(exp) + 0.1·L1(jaw)`` over real frames from ``forward``'s
        ``(latent, mask)`` (under DDP: ``latent, mask = ddp_model(audio, style, frame_mask)``);
        terms ``PREDICTOR_TERMS``. Motion frames without audio are dropped (the encoder's mask).
        The VAE draws latents in training mode, from ``generator``, and uses means in eval mode.
        Only frozen modules run here, so nothing outside DDP's forward has trainable weights."""
        motion = motion[:, : mask.shape[1]]
        if motion.shape[:2] != mask.shape:
            raise ValueError(f"motion {tuple(motion.shape)} is shorter than the {mask.shape[1]} frames of the batch")
        draw = self.training and self.kind == "vae"
        if draw and generator is None:
            raise ValueError("the VAE predictor draws latents in training mode: pass a torch.Generator")
        with torch.no_grad():
            if self.kind == "vqvae":
                target = self.prior.quantizer(self.prior.encode(motion, mask), mask)["latent"]
            else:
                mean, logvar = self.prior.encode(motion, mask)
                target = VAEPrior.draw(mean, logvar, generator=generator) if draw else mean
        if self.kind == "vqvae":
            pred = self.prior.quantizer(latent, mask)["latent"]  # nearest code, straight-through
        else:
            mean, logvar = self.prior.gaussian(latent)
            pred = VAEPrior.draw(mean, logvar, generator=generator) if draw else mean
        out = self.prior.decode(pred, mask)
        latent_l1 = masked_l1(pred, target, mask)
        exp, jaw = motion_terms(out, motion, mask, self.prior.cfg.exp_dim)
        c = self.cfg
        total = c.latent_weight * latent_l1 + c.exp_weight * exp + c.jaw_weight * jaw
        return total, {"latent_l1": float(latent_l1.detach()), "exp_l1": float(exp.detach()), "jaw_l1": float(jaw.detach())}

    def loss(
        self, audio: torch.Tensor, style: torch.Tensor, motion: torch.Tensor, frame_mask: torch.Tensor | None = None,
        audio_mask: torch.Tensor | None = None, generator: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """forward + ``loss_from_outputs`` (single process)."""
        latent, mask = self(audio, style, frame_mask, audio_mask)
        return self.loss_from_outputs(latent, mask, motion, generator)

    @torch.no_grad()
    def generate(
        self, audio: torch.Tensor, style: torch.Tensor, frame_mask: torch.Tensor | None = None, *,
        sample: bool = True, generator: torch.Generator | None = None, temperature: float = 0.2,
        top_k: int | None = None, fact: float = 20.0, audio_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Motion ``[B, T, 53]`` (zero on padded frames) and its mask ``[B, T]``.

        ``sample=True`` draws from ``generator`` (required): codes at ``temperature`` /
        ``top_k`` (VQ-VAE) or ``mean + fact·σ·ε`` (VAE). ``sample=False`` is deterministic
        (nearest code / mean). Runs in eval mode, so dropout draws nothing.
        """
        if sample and generator is None:
            raise ValueError("sampling needs a seeded torch.Generator (generator=...); or pass sample=False")
        was_training = self.training
        self.eval()
        try:
            latent, mask = self.forward(audio, style, frame_mask, audio_mask)
            if self.kind == "vqvae":
                logits = self.code_logits(latent)
                if sample:
                    codes = sample_codes(logits, temperature=temperature, top_k=top_k, generator=generator)
                else:
                    codes = logits.argmax(-1)
                z = self.prior.quantizer.lookup(codes).to(latent.dtype)
            else:
                mean, logvar = self.prior.gaussian(latent)
                z = VAEPrior.draw(mean, logvar, fact=fact, generator=generator) if sample else mean
            motion = self.prior.decode(z, mask)
        finally:
            self.train(was_training)
        return motion * mask[..., None].to(motion.dtype), mask


def predictor_config(preset: str, **vocab_and_overrides) -> PredictorConfig:
    if preset not in PREDICTOR_PRESETS:
        raise ValueError(f"preset must be one of {sorted(PREDICTOR_PRESETS)}, got {preset!r}")
    return PredictorConfig(**{**PREDICTOR_PRESETS[preset], **vocab_and_overrides})


def build_probtalk3d(
    model: str, preset: str = "paper", *, n_identities: int, n_emotions: int, n_intensities: int,
    audio: str = "hubert", hubert_path: str | None = None, audio_in_dim: int = 80,
    prior: VQPrior | VAEPrior | None = None,
) -> ProbTalk3DPredictor:
    """Stage 2. ``prior`` is the trained stage-1 module (frozen here, in place); without it a fresh prior
    of the preset is built, to receive a stage-2 checkpoint's weights. ``model.audio_source``
    says where the audio encoder's weights came from."""
    if preset not in PRIOR_PRESETS:
        raise ValueError(f"preset must be one of {sorted(PRIOR_PRESETS)}, got {preset!r}")
    prior = build_prior(model, preset) if prior is None else prior
    if prior.kind != model:
        raise ValueError(f"model {model!r} was asked for, but the prior given is a {prior.kind!r} prior")
    encoder, source = build_audio_encoder(audio, preset, path=hubert_path, in_dim=audio_in_dim)
    cfg = predictor_config(preset, n_identities=n_identities, n_emotions=n_emotions, n_intensities=n_intensities)
    predictor = ProbTalk3DPredictor(prior, encoder, cfg)
    predictor.audio_source = source
    return predictor


def trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    """What the optimizer gets: the frozen prior and the frozen HuBERT parts are left out."""
    return [p for p in model.parameters() if p.requires_grad]


def predictor_config_dict(model: ProbTalk3DPredictor) -> dict:
    return {"model": model.kind, **asdict(model.cfg), "prior": asdict(model.prior.cfg)}
