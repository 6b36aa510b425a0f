"""The ``mouse`` workload: per-frame pain-behaviour recognition from video and DeepLabCut pose.

Six classes (rest, paw_withdraw, paw_lick, paw_shake, walk, active). Four models share one
data pipeline and one loss: ``c3d`` and ``c3d_light`` (video only), ``dual_stream``
(video + pose MLP with temporal attention) and ``multitask`` (per-frame timm backbone,
pose branch, dilated TCN, action and keypoint heads). Defaults are the original
multi-task recipe (reference/mouse.md §6.3): AdamW lr 5e-5, weight decay 0.05, batch 2,
30 epochs, 180-frame training windows and 240-frame evaluation windows, class-weighted
focal loss with gamma 2.5 on 0.1-smoothed targets, temporal smoothness 5e-4, keypoint
loss weight 1, roll +-5 frames with p 0.2, rare-class boosting up to 30x. Keypoint jitter is
0.003, not 0.02: the original jittered only the regression targets (a defect); on the inputs
0.02 swamps the paw motion that tells walk, shake and active from rest. Checkpoints are
selected on the inner-validation macro F1; decision thresholds are fitted on validation
afterwards (``final_metrics``) and applied unchanged to test.

Splits are by animal (``affectlab.data.mouse.group_split`` / ``group_kfold``): the test
animals are never seen in training or selection.

This module ties the parts together, as ``workloads/pain.py`` does: files, splits and
window tables in ``affectlab.data`` (``mouse``, ``dlc``, ``mouse_dataset``,
``mouse_windows``), model inputs and augmentation in ``affectlab.data.mouse_preprocess``,
losses in ``affectlab.models.mouse_losses``, scores in ``affectlab.metrics.mouse``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from affectlab.constants.mouse import CLASS_NAMES, DEFAULT_IMAGE_SIZE, MODELS
from affectlab.data.decoding import split_cache
from affectlab.data.dlc import parse_bodypart_map
from affectlab.data.mouse import Trial, discover
from affectlab.data.mouse_dataset import evaluation_windows, split_trials, training_windows
from affectlab.data.mouse_preprocess import prepare
from affectlab.data.mouse_windows import trial_labels, window_dataset
from affectlab.metrics import mouse as mouse_metrics
from affectlab.models.mouse import build_mouse_model
from affectlab.models.mouse_ema import EMAModel
from affectlab.models.mouse_losses import focal_loss, keypoint_loss, temporal_smoothness
from affectlab.workloads.base import TrainConfig, WorkloadDefaults, make_config



@dataclass
class MouseConfig(TrainConfig):
    # data
    data_dir: str = ""
    model: str = "multitask"  # one of MODELS
    image_size: int | None = None  # None: 112 for the 3D CNNs (C3D's input), 224 for multitask
    window: int = 180  # training window, frames
    eval_window: int = 240  # validation/test windows, tiled with half overlap
    train_stride: int | None = None  # None: window // 2
    test_fraction: float = 0.2  # of the animals (single split)
    val_fraction: float = 0.1  # of the animals, carved from the training side
    cv_folds: int = 5  # K of --cv K (folds grouped by animal)
    min_likelihood: float = 0.9  # DLC points below are interpolated and left out of the keypoint loss
    prefer_filtered: bool = False  # use DLC's *_filtered pose files when present (else only where they are the only ones)
    bodyparts: dict[str, str] = field(default_factory=dict)  # ours=theirs: DLC names of BODYPARTS ("mouth=Snout,..." accepted)
    individual: str | None = None  # the animal to read from multi-animal DLC files
    windows_per_task: int = 8  # windows decoded per Ray Data task
    cache_data: bool | None = None  # decode train and val once and keep them (None: when they fit, data.decoding)
    shuffle_buffer: int = 16  # windows in each worker's per-epoch shuffle buffer (frames: window x S x S bytes each)
    # model
    backbone: str = "vit_small_patch14_dinov2.lvd142m"  # multitask: timm name, or tiny_resnet / tiny_vit
    pretrained: bool = True
    weights_path: str | None = None
    hidden: int = 512
    pose_hidden: int = 128
    dropout: float = 0.3
    visual_dropout: float = 0.0  # multitask: share of training windows with the visual stream zeroed
    c3d_width: float = 1.0  # channel multiplier of the 3D CNNs
    grad_checkpointing: bool = True  # multitask: recompute backbone activations (2 x 180 frames per step)
    backbone_lr_mult: float = 0.1
    # loss
    focal_gamma: float = 2.5
    label_smoothing: float = 0.1
    class_weights: bool = True  # inverse frequency total / (count * C) over the oversampled training windows' frames
    smooth_weight: float = 5e-4  # L1 on consecutive logit differences
    keypoint_weight: float = 1.0
    keypoint_beta: float = 0.05  # SmoothL1 beta, normalised units
    oversample: bool = True  # repeat training windows showing rare classes
    oversample_max: float = 30.0
    ema: bool = False
    ema_decay: float = 0.999
    # augmentation (training device, seeded; every temporal transform moves all streams)
    augment: bool = True
    roll_prob: float = 0.2
    roll_max: int = 5
    brightness: float = 0.2
    contrast: float = 0.2
    temporal_dropout: float = 0.05  # probability that a frame's video and pose inputs are blanked
    rotate90: bool = False  # rotate each window's frames (and keypoint targets) by k x 90 degrees
    keypoint_jitter: float = 0.003  # std, normalised units; inputs only (see docs: 0.02 swamps paw motion)
    # optimisation
    epochs: int = 30
    batch_size: int = 2
    lr: float = 5e-5
    weight_decay: float = 0.05
    select_metric: str = "val_macro_f1"
    select_mode: str = "max"

    def __post_init__(self):
        self.bodyparts = parse_bodypart_map(self.bodyparts)
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        for name in ("window", "eval_window"):
            if not 1 <= getattr(self, name) <= 345:
                raise ValueError(f"{name} must be between 1 and 345 frames (the shortest trial), got {getattr(self, name)}")
        for name in ("roll_prob", "temporal_dropout", "label_smoothing"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")
        if self.focal_gamma < 0:
            raise ValueError(f"focal_gamma must be >= 0, got {self.focal_gamma}")

    @property
    def input_size(self) -> int:
        return self.image_size or DEFAULT_IMAGE_SIZE[self.model]


class MouseWorkload(WorkloadDefaults):
    name = "mouse"
    config_class = MouseConfig
    eval_splits = ("val", "test")
    metric_names = ("accuracy", "macro_f1", *(f"f1_{c}" for c in CLASS_NAMES), "edit", "f1@10", "f1@25", "f1@50",
                    "skipped_samples", "keypoint_mae_px")  # fmt: skip

    def make_config(self, values: dict | None = None) -> MouseConfig:
        return make_config(MouseConfig, values)

    # -- data ---------------------------------------------------------------------------
    def synthetic_config(self, data_dir, write: bool = True) -> dict:
        """Config values for a laptop run on a synthetic dataset in ``data_dir`` (used by jobs/sweep.py)."""
        if write:
            from affectlab.data.synthetic_mouse import write_synthetic_mouse

            write_synthetic_mouse(data_dir, n_animals=8, size=128)
        return {**PRESETS["tiny"], "data_dir": str(data_dir)}

    def n_folds(self, cfg: MouseConfig) -> int:
        """Folds of ``--cv`` (grouped by animal); checks the data files on the way."""
        self.splits(cfg, 0)
        return cfg.cv_folds

    def splits(self, cfg: MouseConfig, fold: int | None) -> dict[str, list[tuple[int, Trial]]]:
        """``{split: [(trial_id, Trial)]}`` grouped by animal; ``trial_id`` indexes the sorted discovery."""
        trials = discover(cfg.data_dir, cfg.prefer_filtered, bodyparts=cfg.bodyparts, individual=cfg.individual)
        try:
            return split_trials(trials, fold, cv_folds=cfg.cv_folds, test_fraction=cfg.test_fraction, val_fraction=cfg.val_fraction, seed=cfg.seed)
        except ValueError as error:
            raise ValueError(f"{cfg.data_dir}: {error}") from None

    def datasets(self, cfg: MouseConfig, fold: int | None) -> dict:
        """Ray Datasets of windows: ``train`` (oversampled, class-weighted, trials mixed in every
        block; the loop reshuffles it every epoch), ``val`` and ``test`` (tiled)."""
        parts = self.splits(cfg, fold)
        labels = {split: trial_labels([t for _, t in part]) for split, part in parts.items()}
        train, weights = training_windows(
            parts["train"], labels["train"], cfg.window, cfg.train_stride or max(1, cfg.window // 2),
            oversample=cfg.oversample, oversample_max=cfg.oversample_max, class_weights=cfg.class_weights, seed=cfg.seed,
        )  # fmt: skip
        pose = {"bodyparts": cfg.bodyparts, "individual": cfg.individual}
        out = {"train": window_dataset(train, cfg.input_size, cfg.min_likelihood, weights, cfg.windows_per_task, **pose,
                                       cache=split_cache("train", cfg.cache_data))}  # fmt: skip
        for split in ("val", "test"):
            tiles = evaluation_windows(parts[split], labels[split], cfg.eval_window)
            out[split] = window_dataset(tiles, cfg.input_size, cfg.min_likelihood, None, cfg.windows_per_task, **pose,
                                        cache=split_cache(split, cfg.cache_data))  # fmt: skip
        return out

    # -- model --------------------------------------------------------------------------
    def build_model(self, cfg: MouseConfig, pretrained: bool | None = None):
        return build_mouse_model(cfg, pretrained)

    def param_groups(self, model, cfg: MouseConfig) -> list[dict]:
        net = model.model if isinstance(model, EMAModel) else model  # the live model, not its average
        if hasattr(net, "param_groups"):
            return net.param_groups(cfg.lr, cfg.weight_decay, cfg.backbone_lr_mult)
        decay = [p for p in net.parameters() if p.requires_grad and p.ndim > 1]
        no_decay = [p for p in net.parameters() if p.requires_grad and p.ndim <= 1]
        return [{"params": decay, "lr": cfg.lr, "weight_decay": cfg.weight_decay}, {"params": no_decay, "lr": cfg.lr, "weight_decay": 0.0}]

    # -- inputs and augmentation ----------------------------------------------------------
    @staticmethod
    def prepare(batch: dict, cfg: MouseConfig, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Model inputs and clean targets of a batch (``affectlab.data.mouse_preprocess.prepare``,
        which serving uses too); augmented when a generator is given."""
        return prepare(batch, cfg, generator)

    # -- training -----------------------------------------------------------------------
    def train_step(self, model, batch: dict, cfg: MouseConfig, generator: torch.Generator):
        net = getattr(model, "module", model)  # under DDP
        if isinstance(net, EMAModel):  # fold in the weights of the last optimizer step
            net.update()
        x = self.prepare(batch, cfg, generator)
        out = model(x["frames"], x["pose"])
        logits = out["logits"].float()
        action = focal_loss(logits, x["labels"], x["weights"], cfg.focal_gamma, cfg.label_smoothing)
        smooth = temporal_smoothness(logits)
        loss = action + cfg.smooth_weight * smooth
        terms = {"action_loss": action.item(), "smooth_loss": smooth.item(), "skipped": float((batch["ok"] == 0).sum())}
        if "keypoints" in out:
            kp = keypoint_loss(out["keypoints"].float(), x["kp_target"], x["kp_mask"], cfg.keypoint_beta)
            loss = loss + cfg.keypoint_weight * kp
            terms["keypoint_loss"] = kp.item()
        return loss, terms

    @torch.no_grad()
    def predict(self, model, batches, cfg: MouseConfig) -> dict[str, np.ndarray]:
        parts: dict[str, list] = {k: [] for k in ("probs", "labels", "trial_id", "row", "ok", "video_wh")}
        for batch in batches:
            x = self.prepare(batch, cfg)
            out = model(x["frames"], x["pose"])
            parts["probs"].append(torch.softmax(out["logits"].float(), dim=-1).cpu().numpy())
            for key in ("labels", "trial_id", "row", "ok", "video_wh"):
                parts[key].append(batch[key].cpu().numpy())
            if "keypoints" in out:
                for key, value in (("kp_pred", out["keypoints"]), ("kp_true", x["kp_target"]), ("kp_mask", x["kp_mask"])):
                    parts.setdefault(key, []).append(value.float().cpu().numpy())
        return {k: np.concatenate(v) for k, v in parts.items() if v}

    def evaluate(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
        """Argmax scores of one split (checkpoint selection; thresholds come after training)."""
        return mouse_metrics.evaluation_scores(predictions)

    # -- final metrics --------------------------------------------------------------------
    def final_metrics(self, cfg: MouseConfig, fold: int | None, predictions: dict) -> tuple[dict, list[dict]]:
        """Test metrics with thresholds fitted on validation, and per-trial sequences for ethograms.

        ``predictions`` is ``read_predictions(final checkpoint)``: ``{"val": ..., "test": ...}``.
        """
        parts = self.splits(cfg, fold)
        train_labels = np.concatenate(trial_labels([t for _, t in parts["train"]]))
        metrics, per_trial = mouse_metrics.held_out_metrics(predictions["val"], predictions["test"], train_labels)
        metrics["animals"] = {split: sorted({t.animal_id for _, t in part}) for split, part in parts.items()}
        metrics["model"] = cfg.model
        trial_of = {i: t for part in parts.values() for i, t in part}
        sequences = [
            {"name": f"{trial_of[i].video_id} trial {trial_of[i].trial}", "true": true, "pred": pred}
            for i, (true, pred) in per_trial.items()
        ]
        return metrics, sequences

    def summarize_cv(self, folds) -> tuple[dict, list[dict]]:
        """Per-fold test metrics (thresholds from each fold's own validation animals), their
        means and t-based 95% CIs (``metrics.mouse.summarize_folds``)."""
        from affectlab.train.loop import read_predictions

        per_fold, sequences = [], []
        for f in folds:
            config = json.loads((Path(f.checkpoint_dir) / "config.json").read_text())["config"]
            metrics, seqs = self.final_metrics(self.make_config(config), f.fold, read_predictions(f.checkpoint_dir))
            per_fold.append({"fold": f.fold, **metrics})
            sequences += [{**s, "name": f"fold {f.fold}: {s['name']}"} for s in seqs]
        return {**mouse_metrics.summarize_folds(per_fold), "folds": per_fold}, sequences


# Named starting points; explicit options override them.
PRESETS = {
    # The original multi-task recipe (defaults above), on a pretrained DINOv2 ViT-S/14 per frame.
    "paper": {},
    # Finishes in a few minutes on a 2-core laptop with nothing to download: 32 px frames,
    # 48-frame windows, a 4-block ResNet from scratch, narrow 3D CNNs.
    "tiny": {
        "image_size": 32, "window": 48, "eval_window": 48, "train_stride": 48, "backbone": "tiny_resnet", "pretrained": False,
        "hidden": 64, "pose_hidden": 32, "dropout": 0.1, "c3d_width": 0.25, "backbone_lr_mult": 1.0, "grad_checkpointing": False,
        "epochs": 8, "batch_size": 8, "lr": 1e-3, "oversample_max": 4.0,
    },
}  # fmt: skip

# What a preset changes for one model: the 3D CNNs see only pixels, so on a laptop they get
# larger frames and more epochs than the pose-driven models.
MODEL_PRESETS = {
    "tiny": {
        "c3d": {"image_size": 48, "c3d_width": 0.125, "epochs": 12},
        "c3d_light": {"image_size": 64, "epochs": 12},
    },
}


def preset_values(preset: str, model: str) -> dict:
    """The config values of ``preset`` for ``model``: ``PRESETS`` then ``MODEL_PRESETS``."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; available: {sorted(PRESETS)}")
    return {**PRESETS[preset], **MODEL_PRESETS.get(preset, {}).get(model, {}), "model": model}
