"""ViTPain: PSPI and AU intensities from a face and a neutral reference of the same person.

A DINOv3 ViT (timm) encodes the face; a second, separate DINOv3 encodes the neutral
reference; cross-attention lets the face tokens look at the reference tokens. Heads read
the fused tokens: PSPI (from CLS, sigmoid on a 0–1 scale), binary PSPI ≥ 1, 2, 3 logits
(from CLS), and six AU intensities from learned AU queries attending to the patch tokens.

Differences from the original code (see reference/pain.md §9): the backbone runs its own
``forward_features`` (rotary position embeddings and the 4 register tokens included); the
AU queries are trained; only backbones with real weights are offered (plus ``tiny`` for
tests, random init only); inputs are normalised with the weights' own statistics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

# name → (timm model, extra kwargs). `tiny` has no weights: tests and laptops only.
BACKBONES = {
    "tiny": ("vit_small_patch16_dinov3", {"embed_dim": 64, "depth": 2, "num_heads": 4, "patch_size": 8}),
    "small": ("vit_small_patch16_dinov3.lvd1689m", {}),
    "base": ("vit_base_patch16_dinov3.lvd1689m", {}),
    "large": ("vit_large_patch16_dinov3.lvd1689m", {}),
    "large_sat493m": ("vit_large_patch16_dinov3.sat493m", {}),  # the original paper's weights
}
NUM_AUS = 6
BINARY_THRESHOLDS = ("1", "2", "3")


@dataclass
class ViTPainConfig:
    backbone: str = "large"
    image_size: int = 224
    pretrained: bool = True  # load the timm weights (needs the hub, or `weights_path`)
    weights_path: str | None = None  # a local timm weights file, for offline machines
    finetune: str = "lora"  # "lora": frozen backbone + LoRA; "full": train it all; "frozen"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    fusion_heads: int = 8
    use_reference: bool = True
    dropout: float = 0.5

    @classmethod
    def from_run_config(cls, config: dict) -> "ViTPainConfig":
        """The model's fields out of a whole run config (a checkpoint's ``config.json``)."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in config.items() if k in names})

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {self.backbone!r}")
        if self.finetune not in ("lora", "full", "frozen"):
            raise ValueError(f"finetune must be 'lora', 'full' or 'frozen', got {self.finetune!r}")


def build_encoder(cfg: ViTPainConfig, pretrained: bool) -> nn.Module:
    # timm (and the torchvision it imports) takes ~2.5 s of CPU to import: imported here, it is
    # paid by the processes that build a model, not by every Tune trial and job driver that
    # only reads this module's config.
    import timm

    name, kwargs = BACKBONES[cfg.backbone]
    overlay = {"file": cfg.weights_path} if (pretrained and cfg.weights_path) else None
    try:
        encoder = timm.create_model(
            name, pretrained=pretrained, num_classes=0, img_size=cfg.image_size, pretrained_cfg_overlay=overlay, **kwargs
        )
    except (OSError, RuntimeError) as e:  # no network, no cache, or a bad weights file
        if not pretrained:
            raise
        raise RuntimeError(
            f"could not load the pretrained weights of {name} ({type(e).__name__}: {str(e)[:200]}); "
            "pass a local weights file (--weights-path) or train from random initialisation (--no-pretrained)"
        ) from e
    if cfg.finetune == "lora":
        from peft import LoraConfig, inject_adapter_in_model

        for p in encoder.parameters():
            p.requires_grad_(False)
        lora = LoraConfig(
            r=cfg.lora_r,
            lora_alpha=cfg.lora_alpha,
            lora_dropout=cfg.lora_dropout,
            target_modules=r".*\.attn\.(qkv|proj)",  # attention in every block
        )
        encoder = inject_adapter_in_model(lora, encoder)
    elif cfg.finetune == "frozen":
        for p in encoder.parameters():
            p.requires_grad_(False)
    return encoder


class AUQueryHead(nn.Module):
    """Six learned queries attend to the patch tokens; one shared MLP reads each AU."""

    def __init__(self, dim: int):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(NUM_AUS, dim))
        self.norm = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Dropout(0.3), nn.Linear(dim, 512), nn.GELU(), nn.Dropout(0.3), nn.Linear(512, 1))

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        attn = torch.softmax(self.queries @ patches.transpose(1, 2) / patches.shape[-1] ** 0.5, dim=-1)
        return F.relu(self.mlp(self.norm(attn @ patches)).squeeze(-1))  # [B, 6], raw AU units


class ViTPain(nn.Module):
    """Input images are float in [0, 1], ``[B, 3, H, W]``; references ``[B, 3, H, W]`` or
    ``[B, N, 3, H, W]`` (N shots, whose outputs are averaged)."""

    def __init__(self, cfg: ViTPainConfig, pretrained: bool | None = None):
        super().__init__()
        self.cfg = cfg
        pretrained = cfg.pretrained if pretrained is None else pretrained
        self.encoder = build_encoder(cfg, pretrained)
        self.neutral_encoder = build_encoder(cfg, pretrained) if cfg.use_reference else None
        dim = self.encoder.embed_dim
        self.num_prefix = self.encoder.num_prefix_tokens  # CLS + register tokens
        data_cfg = self.encoder.pretrained_cfg
        self.register_buffer("mean", torch.tensor(data_cfg["mean"]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(data_cfg["std"]).view(1, 3, 1, 1), persistent=False)

        self.fusion = nn.MultiheadAttention(dim, cfg.fusion_heads, batch_first=True) if cfg.use_reference else None
        self.fusion_norm = nn.LayerNorm(dim)
        p = cfg.dropout
        self.pspi_head = nn.Sequential(
            nn.LayerNorm(dim), nn.Dropout(p), nn.Linear(dim, 512), nn.GELU(), nn.Dropout(p),
            nn.Linear(512, 256), nn.GELU(), nn.Dropout(0.3), nn.Linear(256, 128), nn.GELU(), nn.Dropout(0.3),
            nn.Linear(128, 1),
        )  # fmt: skip
        self.binary_heads = nn.ModuleDict(
            {t: nn.Sequential(nn.LayerNorm(dim), nn.Dropout(p), nn.Linear(dim, 1)) for t in BINARY_THRESHOLDS}
        )
        self.au_head = AUQueryHead(dim)

    def tokens(self, encoder: nn.Module, images: torch.Tensor) -> torch.Tensor:
        """``[CLS; patches]`` from the encoder's own forward (RoPE, registers)."""
        x = encoder.forward_features((images - self.mean) / self.std)
        return torch.cat([x[:, :1], x[:, self.num_prefix :]], dim=1)

    def forward(self, image: torch.Tensor, reference: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        if reference is not None and reference.dim() == 5:
            shots = [self.forward(image, reference[:, i]) for i in range(reference.shape[1])]
            return {k: torch.stack([s[k] for s in shots]).mean(0) for k in shots[0]}
        tokens = self.tokens(self.encoder, image)
        if reference is not None and self.fusion is not None:
            neutral = self.tokens(self.neutral_encoder, reference)
            attended, _ = self.fusion(tokens, neutral, neutral, need_weights=False)
            tokens = self.fusion_norm(tokens + attended)
        cls, patches = tokens[:, 0], tokens[:, 1:]
        pspi = torch.sigmoid(self.pspi_head(cls).squeeze(-1))
        binary = torch.cat([self.binary_heads[t](cls) for t in BINARY_THRESHOLDS], dim=-1)
        return {"pspi": pspi, "binary_logits": binary, "aus": self.au_head(patches), "features": cls}

    def backbone_parameters(self) -> list[nn.Parameter]:
        encoders = [self.encoder] + ([self.neutral_encoder] if self.neutral_encoder is not None else [])
        return [p for e in encoders for p in e.parameters() if p.requires_grad]


def build_vitpain(config: dict | ViTPainConfig, pretrained: bool | None = None) -> ViTPain:
    """The factory: ``build_vitpain({"backbone": "tiny", "image_size": 48})``."""
    cfg = config if isinstance(config, ViTPainConfig) else ViTPainConfig(**config)
    return ViTPain(cfg, pretrained=pretrained)


def param_groups(model: ViTPain, lr: float, weight_decay: float, backbone_lr_mult: float = 0.1) -> list[dict]:
    """AdamW groups: backbones at ``lr × backbone_lr_mult``, the rest at ``lr``.

    Every trainable parameter lands in exactly one group (the original left the AU
    queries out, so they never trained).
    """
    backbone = model.backbone_parameters()
    backbone_ids = {id(p) for p in backbone}
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in backbone_ids]
    groups = [
        {"params": backbone, "lr": lr * backbone_lr_mult, "weight_decay": weight_decay, "name": "backbone"},
        {"params": rest, "lr": lr, "weight_decay": weight_decay, "name": "heads"},
    ]
    grouped = {id(p) for g in groups for p in g["params"]}
    missing = [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in grouped]
    assert not missing, f"trainable parameters missing from the optimizer: {missing}"
    return [g for g in groups if g["params"]]


def config_dict(model: ViTPain) -> dict:
    return asdict(model.cfg)
