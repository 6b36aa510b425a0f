"""ACTOR-style transformer CVAE for pose sequences (reference/infant.md §4).

Tensors follow ACTOR's batch layout: ``x`` (B, J, F, T) — (B, 24, 6, T) rot6d with the
root as joint 0 in the paper setting — labels ``y`` (B,) and ``mask`` (B, T) bool.

- Encoder: Linear(J·F → D) per frame, two class-conditional tokens ``mu_query[y]`` and
  ``sigma_query[y]`` prepended, sinusoidal positions, a transformer encoder with the
  padding mask; ``mu`` and ``logvar`` are the outputs at the two tokens.
- ``z = mu + eps · exp(logvar / 2)``.
- Decoder: one memory token ``z + action_bias[y]``; T zero queries plus sinusoidal
  positions attend to it through a transformer decoder; Linear(D → J·F); padded frames 0.
- No translation row: the paper runs use ``--no-translation``.

Positional encoding: ``pe[:, 0::2] = sin``, ``pe[:, 1::2] = cos`` of
``pos · exp(arange(0, D, 2) · (-ln 10000 / D))``, max length 5000, dropout after adding.
Modules are batch-first; the arithmetic is ACTOR's sequence-first one.

``generate`` samples ``z ~ N(0, I) · fact`` from the caller's ``torch.Generator`` only, in
``eval()`` and ``no_grad()`` (the original sampled with dropout on, defect 2), and puts the
model back in the train/eval state it found.

Losses (``cvae_losses``), ACTOR's definitions and the paper's weights
``CVAE_LOSS_WEIGHTS`` (rc 1, rcxyz 1, kl 1e-5, velxyz 1e-3):

- ``rc``: MSE (mean) between input and output rot6d over valid frames, root included;
- ``rcxyz``: MSE between the joints of input and output poses over valid frames, joints
  from the SMPL layer the caller injects (``joints_fn``) and root-relative per frame;
- ``kl``: ``-0.5 · Σ(1 + logvar - mu² - exp(logvar))`` SUMMED over batch and latent
  dimensions, so its effective weight grows with the batch size (defect 10): kept as a sum
  because λ = 1e-5 was tuned for it;
- ``velxyz``: MSE of frame-to-frame joint differences over pairs of valid frames.

Sizes: the ``paper`` preset (24 x 6 input, 5 classes, 8 layers) has 14,823,568
parameters (reference: 14.82 M).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from affectlab.body.rotations import rot6d_to_matrix  # pure roma wrappers, ACTOR's row convention (§2)
from affectlab.constants.infant import CVAE_LOSS_WEIGHTS

# (global_orient (N, 1, 3, 3), body_pose (N, 23, 3, 3)) -> joints (N, J, 3): an SMPL layer's
# joints, e.g. functools.partial(affectlab.body.models.smpl_joints, layer).
JointsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class CVAEConfig:
    num_joints: int = 24
    num_feats: int = 6
    num_classes: int = 5
    latent_dim: int = 256
    ff_size: int = 1024
    num_heads: int = 4
    num_layers: int = 8  # every paper command; ACTOR's CLI default is 4
    dropout: float = 0.1
    activation: str = "gelu"
    max_len: int = 5000


PRESETS = {
    "paper": {},
    "tiny": {"latent_dim": 32, "ff_size": 64, "num_heads": 2, "num_layers": 1},
}


def cvae_config(preset: str = "paper", **overrides) -> CVAEConfig:
    """The named preset (``paper``, ``tiny``) with dataset-specific fields overridden."""
    if preset not in PRESETS:
        raise ValueError(f"unknown CVAE preset {preset!r}; expected one of {sorted(PRESETS)}")
    return replace(CVAEConfig(**PRESETS[preset]), **overrides)


# ---------------------------------------------------------------------------- joints


def rot6d_to_joints(x: torch.Tensor, mask: torch.Tensor, joints_fn: JointsFn) -> torch.Tensor:
    """(B, 24, 6, T) rot6d poses -> (B, J, 3, T) joints, root-relative per frame and zero at
    padded frames. Only valid frames go through the body model."""
    b, j, f, t = x.shape
    if j != 24 or f != 6:
        raise ValueError(f"rot6d_to_joints needs (B, 24, 6, T) poses with the root as joint 0, got {tuple(x.shape)}")
    rot = rot6d_to_matrix(x.permute(0, 3, 1, 2)[mask])  # (N, 24, 3, 3)
    joints = joints_fn(rot[:, :1], rot[:, 1:])
    joints = joints - joints[:, :1]
    out = joints.new_zeros(b, t, *joints.shape[1:])
    out[mask] = joints
    return out.permute(0, 2, 3, 1)


# ---------------------------------------------------------------------------- model (§4.2)


class PositionalEncoding(nn.Module):
    def __init__(self, dim: int, dropout: float, max_len: int):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
        pe = torch.zeros(max_len, dim)
        pe[:, 0::2] = torch.sin(position * div_term)
        pe[:, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe, persistent=False)  # derived, not a weight
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, T, D) -> (B, T, D)."""
        return self.dropout(x + self.pe[: x.shape[1]])


class Encoder(nn.Module):
    def __init__(self, cfg: CVAEConfig):
        super().__init__()
        d = cfg.latent_dim
        self.skel_embedding = nn.Linear(cfg.num_joints * cfg.num_feats, d)
        self.mu_query = nn.Parameter(torch.randn(cfg.num_classes, d))
        self.sigma_query = nn.Parameter(torch.randn(cfg.num_classes, d))
        self.positions = PositionalEncoding(d, cfg.dropout, cfg.max_len)
        layer = nn.TransformerEncoderLayer(d, cfg.num_heads, cfg.ff_size, cfg.dropout, cfg.activation, batch_first=True)
        self.transformer = nn.TransformerEncoder(layer, cfg.num_layers, enable_nested_tensor=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        b, j, f, t = x.shape
        h = self.skel_embedding(x.permute(0, 3, 1, 2).reshape(b, t, j * f))
        seq = self.positions(torch.cat([self.mu_query[y][:, None], self.sigma_query[y][:, None], h], dim=1))
        valid = torch.cat([mask.new_ones(b, 2), mask], dim=1)
        out = self.transformer(seq, src_key_padding_mask=~valid)
        return out[:, 0], out[:, 1]


class Decoder(nn.Module):
    def __init__(self, cfg: CVAEConfig):
        super().__init__()
        d = cfg.latent_dim
        self.cfg = cfg
        self.action_bias = nn.Parameter(torch.randn(cfg.num_classes, d))
        self.positions = PositionalEncoding(d, cfg.dropout, cfg.max_len)
        layer = nn.TransformerDecoderLayer(d, cfg.num_heads, cfg.ff_size, cfg.dropout, cfg.activation, batch_first=True)
        self.transformer = nn.TransformerDecoder(layer, cfg.num_layers)
        self.final = nn.Linear(d, cfg.num_joints * cfg.num_feats)

    def forward(self, z: torch.Tensor, y: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        b, t = mask.shape
        memory = (z + self.action_bias[y])[:, None]
        queries = self.positions(z.new_zeros(b, t, z.shape[-1]))
        out = self.transformer(tgt=queries, memory=memory, tgt_key_padding_mask=~mask)
        out = self.final(out).reshape(b, t, self.cfg.num_joints, self.cfg.num_feats) * mask[..., None, None]
        return out.permute(0, 2, 3, 1)


class InfantCVAE(nn.Module):
    def __init__(self, cfg: CVAEConfig = CVAEConfig()):
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)

    @staticmethod
    def reparameterize(
        mu: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None, noise_factor: float = 1.0
    ) -> torch.Tensor:
        """``mu + noise_factor · eps · exp(logvar / 2)``; ``eps`` drawn on the generator's
        device (then moved), so a CPU generator gives the same draws for a GPU model."""
        device = generator.device if generator is not None else mu.device
        eps = torch.randn(mu.shape, generator=generator, device=device, dtype=mu.dtype).to(mu.device)
        return mu + noise_factor * eps * torch.exp(logvar / 2)

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor, generator: torch.Generator | None = None
    ) -> dict[str, torch.Tensor]:
        """Encode, sample, decode: ``output`` (B, J, F, T), ``mu``, ``logvar``, ``z``."""
        mu, logvar = self.encoder(x, y, mask)
        z = self.reparameterize(mu, logvar, generator)
        return {"output": self.decoder(z, y, mask), "mu": mu, "logvar": logvar, "z": z}

    def generate(
        self, classes: torch.Tensor, n_frames: int | torch.Tensor, generator: torch.Generator, fact: float = 1.0
    ) -> dict[str, torch.Tensor]:
        """Sample one sequence per class label: ``output`` (B, J, F, T), ``mask`` (B, T), ``y``.

        ``n_frames`` is one duration for all or a (B,) tensor of durations (T is their max).
        Runs in ``eval()`` and ``no_grad()``; the model's previous mode is restored.
        """
        device = self.decoder.action_bias.device
        classes = torch.as_tensor(classes, dtype=torch.long, device=device).reshape(-1)
        lengths = torch.as_tensor(n_frames, dtype=torch.long, device=device).expand(len(classes))
        if (lengths < 1).any():
            raise ValueError(f"durations must be >= 1 frame, got {lengths.tolist()}")
        mask = torch.arange(int(lengths.max()), device=device)[None] < lengths[:, None]
        was_training = self.training
        self.eval()
        try:
            with torch.no_grad():
                z = torch.randn((len(classes), self.cfg.latent_dim), generator=generator, device=generator.device)
                z = z.to(device) * fact
                output = self.decoder(z, classes, mask)
        finally:
            self.train(was_training)
        return {"output": output, "mask": mask, "y": classes, "lengths": lengths}


def build_cvae(preset: str = "paper", **overrides) -> InfantCVAE:
    return InfantCVAE(cvae_config(preset, **overrides))


# ---------------------------------------------------------------------------- losses (§4.3)


def masked_mse(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the frames where ``mask`` (B, T) is true; a, b are (B, ..., T)."""
    frames = lambda v: v.movedim(-1, 1)[mask]  # noqa: E731 — (N_valid, ...)
    return F.mse_loss(frames(a), frames(b), reduction="mean")


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) SUMMED over the batch and the latent dimensions."""
    return -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())


def cvae_losses(
    x: torch.Tensor,
    mask: torch.Tensor,
    out: dict[str, torch.Tensor],
    joints_fn: JointsFn | None = None,
    weights: dict[str, float] = CVAE_LOSS_WEIGHTS,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``mixed = Σ λ · loss`` over the terms with a weight, and each term (detached).

    ``x`` (B, 24, 6, T) rot6d input, ``mask`` (B, T), ``out`` from ``InfantCVAE.forward``.
    ``joints_fn`` is needed when ``rcxyz`` or ``velxyz`` has a non-zero weight.
    """
    unknown = set(weights) - {"rc", "rcxyz", "kl", "velxyz"}
    if unknown:
        raise ValueError(f"unknown CVAE loss(es) {sorted(unknown)}; known: rc, rcxyz, kl, velxyz")
    terms = {}
    if weights.get("rc", 0):
        terms["rc"] = masked_mse(x, out["output"], mask)
    if weights.get("kl", 0):
        terms["kl"] = kl_divergence(out["mu"], out["logvar"])
    if weights.get("rcxyz", 0) or weights.get("velxyz", 0):
        if joints_fn is None:
            raise ValueError("the rcxyz/velxyz losses need joints_fn (an SMPL layer's joints)")
        with torch.no_grad():
            target_xyz = rot6d_to_joints(x, mask, joints_fn)
        output_xyz = rot6d_to_joints(out["output"], mask, joints_fn)
        if weights.get("rcxyz", 0):
            terms["rcxyz"] = masked_mse(target_xyz, output_xyz, mask)
        if weights.get("velxyz", 0):
            pairs = mask[:, 1:] & mask[:, :-1]
            velocity = lambda v: v[..., 1:] - v[..., :-1]  # noqa: E731
            terms["velxyz"] = masked_mse(velocity(target_xyz), velocity(output_xyz), pairs)
    mixed = sum(weights[name] * value for name, value in terms.items())
    return mixed, {**{k: v.detach() for k, v in terms.items()}, "mixed": mixed.detach()}
