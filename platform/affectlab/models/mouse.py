"""The mouse workload's model factory: one of the four models of a run config (timm style).

``build_mouse_model(cfg)`` is what training (``MouseWorkload.build_model``) and serving
(rebuilding a checkpoint) both call, so neither builds a model the other would not.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from affectlab.constants.mouse import MODELS
from affectlab.models.mouse_ema import EMAModel


def build_mouse_model(cfg: Any, pretrained: bool | None = None) -> nn.Module:
    """The model ``cfg.model`` names, sized by ``cfg`` (a ``MouseConfig``, or a checkpoint's run
    config with ``input_size``), wrapped in an EMA when ``cfg.ema``.

    ``pretrained=False`` never loads backbone weights (rebuilding a checkpoint); ``None``
    follows ``cfg.pretrained``.
    """
    if cfg.model in ("c3d", "c3d_light"):
        from affectlab.models.mouse_c3d import build_c3d

        model = build_c3d(light=cfg.model == "c3d_light", width=cfg.c3d_width, dropout=cfg.dropout)
    elif cfg.model == "dual_stream":
        from affectlab.models.mouse_dual_stream import DualStream

        model = DualStream(cfg.c3d_width, cfg.pose_hidden, 2 * cfg.pose_hidden, cfg.hidden // 2, dropout=cfg.dropout)
    elif cfg.model == "multitask":
        from affectlab.models.mouse_multitask import MouseMultiTask, MultiTaskConfig

        use_weights = cfg.pretrained if pretrained is None else (cfg.pretrained and pretrained)
        model = MouseMultiTask(MultiTaskConfig(
            backbone=cfg.backbone, pretrained=use_weights, weights_path=cfg.weights_path, image_size=cfg.input_size,
            pose_hidden=cfg.pose_hidden, hidden=cfg.hidden, dropout=cfg.dropout, visual_dropout=cfg.visual_dropout,
            grad_checkpointing=cfg.grad_checkpointing,
        ))  # fmt: skip
    else:
        raise ValueError(f"model must be one of {MODELS}, got {cfg.model!r}")
    return EMAModel(model, cfg.ema_decay) if cfg.ema else model
