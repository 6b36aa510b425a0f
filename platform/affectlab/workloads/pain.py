"""The ``pain`` workload: ViTPain on UNBC-McMaster (5-fold / LOSO / all) and 3D-Pain.

Defaults are the original stage-2 recipe (UNBC fine-tuning): lr 1e-4, weight decay 0.1,
batch 100, 50 epochs, AU loss weight 0.1, weighted sampling, neutral references, and
checkpoint selection on Pearson — here on an inner validation split of training subjects,
never on the reported test fold.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F

from affectlab.data import pain as pain_data
from affectlab.data.augment import augment_faces
from affectlab.data.decoding import split_cache
from affectlab.metrics import pain as pain_metrics
from affectlab.constants.pain import PSPI_MAX, PSPI_THRESHOLDS
from affectlab.models.vitpain import ViTPainConfig, build_vitpain, param_groups
from affectlab.workloads.base import TrainConfig, WorkloadDefaults, make_config


@dataclass
class PainConfig(TrainConfig):
    # data
    data_dir: str = ""
    dataset: str = "unbc"  # "unbc" or "pain3d"
    protocol: str = "5fold"  # UNBC: "5fold" (fold-k groups), "loso" or "all" (production)
    split_csv: str | None = None  # 3D-Pain split file (default: the one in data_dir)
    inner_val_fraction: float = 0.2
    weighted_sampling: bool = True  # PSPI ≥ 1 drawn twice as often (UNBC), redrawn every epoch
    reference_policy: str = "first_frames"  # evaluation references; "oracle" = original protocol
    n_shots: int = 1  # references averaged at evaluation (multi-shot)
    cache_data: bool | None = None  # decode train and val once and keep them (None: when they fit, data.decoding)
    # model (see ViTPainConfig)
    backbone: str = "large"
    image_size: int = 224
    pretrained: bool = True
    weights_path: str | None = None
    finetune: str = "lora"
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    fusion_heads: int = 8
    use_reference: bool = True
    dropout: float = 0.5
    pretrained_checkpoint: str | None = None  # stage-1 checkpoint to start from (matching keys)
    # loss and optimisation
    w_pspi: float = 1.0
    w_au: float = 0.1
    w_binary: float = 1.0
    backbone_lr_mult: float = 0.1
    augment: bool = True
    epochs: int = 50
    batch_size: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.1
    select_metric: str = "val_pearson"
    select_mode: str = "max"

    def __post_init__(self):
        checks = {
            "dataset": ("unbc", "pain3d"),
            "protocol": ("5fold", "loso", "all"),
            "reference_policy": pain_data.REFERENCE_POLICIES,
        }
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        if self.n_shots < 1:
            raise ValueError(f"n_shots must be ≥ 1, got {self.n_shots}")
        self.model_config()  # validates backbone and finetune

    def model_config(self) -> ViTPainConfig:
        return ViTPainConfig.from_run_config(asdict(self))


class PainWorkload(WorkloadDefaults):
    name = "pain"
    config_class = PainConfig
    eval_splits = ("train_eval", "val", "test")
    metric_names = ("mae", "pearson", "auroc1", "auroc2", "auroc3", "au_mae")

    def make_config(self, values: dict | None = None) -> PainConfig:
        return make_config(PainConfig, values)

    # -- data ---------------------------------------------------------------------------
    def datasets(self, cfg: PainConfig, fold: int | None) -> dict:
        """Ray Datasets for one fold (``fold=None``: production on all subjects)."""
        if cfg.dataset == "pain3d":
            return self._pain3d_datasets(cfg)
        from affectlab.data.unbc import UNBC

        unbc = UNBC.open(cfg.data_dir, "all" if fold is None else cfg.protocol)
        if fold is None:
            tables = unbc.all_subjects_tables(cfg.inner_val_fraction, cfg.seed)
        else:
            tables = unbc.fold_tables(fold, cfg.inner_val_fraction, cfg.seed)

        def make(split, table, refs, weights=None):
            return pain_data.unbc_dataset(table, refs, unbc.paths.frames, cfg.image_size, weights=weights,
                                          cache=split_cache(split, cfg.cache_data))  # fmt: skip

        train = tables["train"]
        refs = pain_data.training_references(train, 1, cfg.seed)
        # Each block a seeded mix of every training subject; the loop reshuffles and, with
        # weights, redraws every epoch.
        rows = np.random.default_rng(cfg.seed).permutation(len(train))
        weights = pain_data.sample_weights(train)[rows] if cfg.weighted_sampling else None
        out = {"train": make("train", train.iloc[rows].reset_index(drop=True), refs[rows], weights)}
        for split, table in [("train_eval", train)] + [(s, tables[s]) for s in ("val", "test") if s in tables]:
            out[split] = make(split, table, pain_data.evaluation_references(table, cfg.n_shots, cfg.reference_policy, cfg.seed))
        return out

    def _pain3d_datasets(self, cfg: PainConfig) -> dict:
        from affectlab.data.pain3d import neutral_references, read_pain3d

        table, paths = read_pain3d(cfg.data_dir, cfg.split_csv, cfg.seed)
        out = {}
        for split in ("train", "val", "test"):
            part = table[table["split"] == split].reset_index(drop=True)
            if part.empty:
                raise ValueError(f"3D-Pain data in {cfg.data_dir} has no {split!r} samples")
            seed = cfg.seed if split == "train" else None
            refs = neutral_references(part, table, 1 if split == "train" else cfg.n_shots, seed)
            out[split] = pain_data.files_dataset(part, refs, paths, cfg.image_size, cache=split_cache(split, cfg.cache_data))
        return out

    def synthetic_config(self, data_dir, write: bool = True) -> dict:
        """Config values for a laptop run on a synthetic UNBC dataset in ``data_dir``."""
        if write:
            from affectlab.data.synthetic_pain import write_synthetic_unbc

            write_synthetic_unbc(data_dir)
        return {**PRESETS["tiny"], "data_dir": str(data_dir), "dataset": "unbc", "protocol": "5fold"}

    def n_folds(self, cfg: PainConfig) -> int | None:
        """Folds of the UNBC data (validating its files on the way); 3D-Pain has none."""
        if cfg.dataset != "unbc":
            return None
        from affectlab.data.unbc import UNBC

        return len(UNBC.open(cfg.data_dir, cfg.protocol).folds)

    # -- model --------------------------------------------------------------------------
    def build_model(self, cfg: PainConfig, pretrained: bool | None = None):
        model = build_vitpain(cfg.model_config(), pretrained=pretrained)
        if cfg.pretrained_checkpoint and pretrained is not False:
            from affectlab.train.checkpoint import load_matching_weights

            load_matching_weights(model, cfg.pretrained_checkpoint)
        return model

    def param_groups(self, model, cfg: PainConfig) -> list[dict]:
        return param_groups(model, cfg.lr, cfg.weight_decay, cfg.backbone_lr_mult)

    # -- training -----------------------------------------------------------------------
    @staticmethod
    def _inputs(model, batch: dict, cfg: PainConfig, generator: torch.Generator | None = None):
        """uint8 batches → [0, 1] floats; training (a generator given) takes one reference shot
        and augments it independently of the target; evaluation keeps every shot."""
        reference = batch["reference"] if cfg.use_reference else None
        if reference is not None and generator is not None:
            reference = reference[:, :1]  # training takes one shot
        image, reference = pain_data.model_inputs(batch["image"], reference)
        if generator is not None and cfg.augment:
            image = augment_faces(image, generator)
            reference = augment_faces(reference, generator) if reference is not None else None
        return image, reference

    def train_step(self, model, batch: dict, cfg: PainConfig, generator: torch.Generator):
        image, reference = self._inputs(model, batch, cfg, generator)
        out = model(image, reference)
        pspi, aus = batch["pspi"].float(), batch["aus"].float()
        pspi_loss = F.mse_loss(out["pspi"].float(), pspi / PSPI_MAX)
        au_loss = F.mse_loss(out["aus"].float(), aus)
        targets = torch.stack([(pspi >= t).float() for t in PSPI_THRESHOLDS], dim=1)
        binary_loss = F.binary_cross_entropy_with_logits(out["binary_logits"].float(), targets)
        loss = cfg.w_pspi * pspi_loss + cfg.w_au * au_loss + cfg.w_binary * binary_loss
        return loss, {"pspi_loss": pspi_loss.item(), "au_loss": au_loss.item(), "binary_loss": binary_loss.item()}

    @torch.no_grad()
    def predict(self, model, batches, cfg: PainConfig) -> dict[str, np.ndarray]:
        parts = {"pred": [], "target": [], "aus_pred": [], "aus": [], "subject_id": [], "sample_id": []}
        for batch in batches:
            image, reference = self._inputs(model, batch, cfg)
            out = model(image, reference)
            parts["pred"].append(out["pspi"].float().cpu().numpy() * PSPI_MAX)
            parts["aus_pred"].append(out["aus"].float().cpu().numpy())
            for key, column in (("target", "pspi"), ("aus", "aus"), ("subject_id", "subject_id"), ("sample_id", "sample_id")):
                parts[key].append(batch[column].cpu().numpy())
        return {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}

    def evaluate(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
        pred, target = predictions["pred"], predictions["target"]
        out = {"mae": pain_metrics.mae(pred, target), "pearson": pain_metrics.pearson(pred, target)}
        for t in PSPI_THRESHOLDS:
            out[f"auroc{t}"] = pain_metrics.auroc(pred, target, t)
        out["au_mae"] = float(np.abs(predictions["aus_pred"] - predictions["aus"]).mean())
        return out

    # -- cross-validation -----------------------------------------------------------------
    def summarize_cv(self, folds) -> tuple[dict, list[dict]]:
        """Per-fold and summary metrics from each fold's final predictions.

        F1 thresholds are fitted on the fold's un-augmented training predictions
        (``train_eval``) and applied unchanged to its test subjects.
        """
        from affectlab.train.loop import read_predictions

        per_fold, predictions, notes = [], [], []
        for f in folds:
            p = read_predictions(f.checkpoint_dir)
            test, train = p["test"], p["train_eval"]
            metrics = pain_metrics.fold_metrics(test["pred"], test["target"], train["pred"], train["target"])
            per_fold.append({"fold": f.fold, **metrics, "n_test": int(len(test["pred"]))})
            predictions.append({"test_pred": test["pred"], "test_target": test["target"]})
            notes += [f"fold {f.fold}: {note}" for note in pain_metrics.undefined_notes(metrics)]
        return {"folds": per_fold, "summary": pain_metrics.summarize_folds(per_fold), "notes": notes}, predictions


# Named starting points; explicit options override them.
PRESETS = {
    # The original recipe (stage 2, UNBC fine-tuning) on a DINOv3-L with LoRA.
    "paper": {},
    # Finishes in minutes on a 2-core laptop with no weights to download: a 2-block
    # DINOv3-shaped ViT trained from scratch on 48 px faces.
    "tiny": {
        "backbone": "tiny", "image_size": 48, "pretrained": False, "finetune": "full", "dropout": 0.1,
        "epochs": 8, "batch_size": 16, "lr": 1e-3, "backbone_lr_mult": 1.0, "weight_decay": 0.05, "fusion_heads": 4,
    },
}  # fmt: skip
