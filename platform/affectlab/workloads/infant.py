"""The ``infant`` workload: InfAGenC on the InfActPrimitive / InfActPlus pose sequences.

Five stages, each one Ray Train run that reads the checkpoints of earlier stages by path
(``InfantConfig.stage``; reference/infant.md §4-§7):

1. ``recognizer``: the ST-GCN on the real training clips (platform loop);
2. ``cvae``: the ACTOR-style transformer CVAE (platform loop, joints from the SMPL/SMIL
   layer for the rcxyz / velxyz losses);
3. ``refine``: the refinement loop, generator <-> recogniser with data-adding rounds — its
   own per-worker function with two models and two optimizers
   (``affectlab.workloads.infant_loops.refine_loop``);
4. ``final``: the ST-GCN on the real + accepted synthetic clips (platform loop);
5. ``eval``: the held-out real test set with and without the synthetic samples over seeds,
   and the ACTOR generation metrics (``infant_loops.eval_loop``).

Defaults are the original's (§4.4, §5.3, §6): AdamW lr 1e-4 with its default weight decay
0.01, batch 16, no gradient clipping, seed 10, rot6d poses with the root, 15 / 1100 / 200 /
100 epochs for the four trained stages, a data-adding round every 10 refinement epochs with
3 recogniser sub-epochs after each. ``epochs = 0`` means "this stage's paper count". The
platform loop steps a cosine learning-rate schedule (the original kept the rate constant).

Splits: a validation split carved from the training file by subject (by clip where the
file names no subject) selects every checkpoint; the test file is only read by the
``eval`` stage (defects 3, 4). ``fold=k`` splits the training file into grouped folds
instead (``cv_folds``), for cross-validation of the recogniser.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.special import log_softmax

from affectlab.constants.infant import CLASSES, NUM_FRAMES, SEED
from affectlab.data.infant import (
    InfantClip,
    group_folds,
    infact_paths,
    infant_rows,
    read_generated_samples,
    read_infact,
    validation_split,
)
from affectlab.metrics import infant as infant_metrics
from affectlab.models.infant_cvae import cvae_losses
from affectlab.models.infant_inference import POSE_CHANNELS, build_generator, build_recognizer, weights_file
from affectlab.train.checkpoint import CONFIG_FILE, CheckpointError
from affectlab.workloads.base import TrainConfig, WorkloadDefaults, make_config

STAGES = ("recognizer", "cvae", "refine", "final", "eval")
MODEL_OF_STAGE = {"recognizer": "stgcn", "cvae": "cvae", "refine": "cvae", "final": "stgcn", "eval": "stgcn"}
PAPER_EPOCHS = {"recognizer": 15, "cvae": 1100, "refine": 200, "final": 100, "eval": 1}
GENERATED_FILE = "generated_samples.npz"  # accepted samples, in a refine checkpoint (§1.6 without pickles)


@dataclass
class InfantConfig(TrainConfig):
    # data
    data_dir: str = ""
    dataset: str = "primitive"  # "primitive" (5 postures) or "plus" (4 transitions)
    class_names: list[str] = field(default_factory=list)  # filled from dataset; recorded so checkpoints describe themselves
    num_frames: int = 0  # frames per item; 0: the paper's 60 (primitive) / 90 (plus)
    pose_rep: str = "rot6d"  # rot6d | rotmat | rotvec | xyz (recogniser only; the CVAE needs rot6d)
    glob: bool = True  # keep the root orientation as joint 0
    val_fraction: float = 0.2  # of the training subjects (clips without subject ids: of the clips)
    cv_folds: int = 5  # K of the grouped folds of the training file (fold = 0..K-1)
    body_model: str | None = None  # SMPL/SMIL .npz (affectlab.body.convert) or released .pkl: the joint losses; default DATA_DIR/body_model if present
    # stage and the checkpoints it starts from (every one is used: defect 1)
    stage: str = "recognizer"  # one of STAGES
    init_recognizer: str | None = None  # recognizer/final: starting weights; refine: the recogniser refined; eval: the real-data one
    init_cvae: str | None = None  # cvae: starting weights; refine: the generator refined; eval: the generator measured
    synthetic_samples: str | None = None  # final / eval: generated_samples .npz / .npy, or a refine checkpoint directory
    final_recognizer: str | None = None  # eval: the recogniser trained with the synthetic samples
    # models
    stgcn_preset: str = "paper"  # affectlab.models.stgcn.PRESETS
    stgcn_dropout: float = 0.0
    cvae_preset: str = "paper"  # affectlab.models.infant_cvae.PRESETS
    lambda_rc: float = 1.0
    lambda_rcxyz: float = 1.0
    lambda_kl: float = 1e-5  # KL summed over batch and latent dims (defect 10: kept, so its weight grows with the batch)
    lambda_velxyz: float = 1e-3
    # refinement (§6)
    round_every: int = 10  # a data-adding round every this many refinement epochs
    finetune_epochs: int = 3  # recogniser sub-epochs after a round that added data
    confidence_threshold: float = 0.75
    select_fraction: float = 0.5
    # evaluation (§7)
    eval_seeds: int = 5  # recognisers per recipe (real only / with synthetic): the first are the stage checkpoints
    generation_seeds: int = 20  # ACTOR's --niter: generated sets per generator
    # optimisation
    epochs: int = 0  # 0: PAPER_EPOCHS[stage]
    batch_size: int = 16
    lr: float = 1e-4
    weight_decay: float = 0.01  # AdamW's default, which the original used
    grad_clip: float = 0.0
    seed: int = SEED
    select_metric: str = ""  # "": val_accuracy (max) for recognisers, val_loss (min) for the CVAE

    def __post_init__(self):
        checks = {"dataset": tuple(CLASSES), "stage": STAGES, "pose_rep": tuple(POSE_CHANNELS)}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        names = list(CLASSES[self.dataset])
        if self.class_names and list(self.class_names) != names:
            raise ValueError(f"class_names {list(self.class_names)} differ from the {self.dataset} classes {names}")
        self.class_names = names
        if not self.body_model and self.data_dir and (Path(self.data_dir) / "body_model").is_dir():
            self.body_model = str(Path(self.data_dir) / "body_model")
        self.num_frames = self.num_frames or NUM_FRAMES[self.dataset]
        self.epochs = self.epochs or PAPER_EPOCHS[self.stage]
        if not self.select_metric:
            self.select_metric, self.select_mode = ("val_loss", "min") if self.stage == "cvae" else ("val_accuracy", "max")
        for name in ("num_frames", "batch_size", "round_every", "eval_seeds", "generation_seeds", "cv_folds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.finetune_epochs < 0:
            raise ValueError(f"finetune_epochs must be >= 0, got {self.finetune_epochs}")
        if not 0.0 < self.confidence_threshold <= 1.0 or not 0.0 < self.select_fraction <= 1.0:
            raise ValueError("confidence_threshold and select_fraction must be in (0, 1]")
        if self.stage in ("cvae", "refine", "final", "eval") and (self.pose_rep != "rot6d" or not self.glob):
            raise ValueError(f"the {self.stage} stage needs pose_rep='rot6d' with the root (glob=True): the CVAE and its samples are rot6d")
        if not self.glob and self.pose_rep != "xyz":
            raise ValueError("glob=False (23 joints) has no ST-GCN graph here; keep the root or use pose_rep='xyz'")

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def loss_weights(self) -> dict[str, float]:
        return {"rc": self.lambda_rc, "rcxyz": self.lambda_rcxyz, "kl": self.lambda_kl, "velxyz": self.lambda_velxyz}


# Named starting points, per stage; explicit options override them.
PRESETS = {
    # The original recipe (§4.4, §5.3, §6.1, §7.1).
    "paper": {
        "common": {"stgcn_preset": "paper", "cvae_preset": "paper", "eval_seeds": 5, "generation_seeds": 20},
        "recognizer": {}, "cvae": {}, "refine": {}, "final": {}, "eval": {},
    },
    # Minutes on a 2-core laptop: tiny models on 32-frame synthetic clips, a few epochs per
    # stage, four round attempts in the refinement loop.
    "tiny": {
        "common": {"stgcn_preset": "tiny", "cvae_preset": "tiny", "num_frames": 32, "batch_size": 16,
                   "eval_seeds": 3, "generation_seeds": 10},
        # Recognisers select on validation cross-entropy: the synthetic validation accuracy
        # reaches 1.0 within a few epochs, and selecting on it keeps that early epoch, whose
        # batch-norm statistics have not settled and whose softmax is far from confident.
        "recognizer": {"epochs": 10, "lr": 1e-2, "select_metric": "val_loss", "select_mode": "min"},
        "cvae": {"epochs": 20, "lr": 1e-2},
        "refine": {"epochs": 8, "round_every": 2, "finetune_epochs": 3, "lr": 1e-3},
        "final": {"epochs": 10, "lr": 1e-2, "select_metric": "val_loss", "select_mode": "min"},
        "eval": {},
    },
}  # fmt: skip
SYNTHETIC_DATA = {"n_subjects": 10, "n_test_subjects": 2, "clips_per_class": 3, "frames": (30, 45)}


def preset_values(preset: str, stage: str) -> dict:
    """Config values of ``preset`` for ``stage`` (shared settings, then the stage's own)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown infant preset {preset!r}; expected one of {sorted(PRESETS)}")
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return {**PRESETS[preset]["common"], **PRESETS[preset][stage], "stage": stage}


def infant_loop_per_worker(loop_config: dict) -> None:
    """The Train worker function of every infant run: the refinement and evaluation stages
    bring their own loops; the recognisers and the CVAE train in the platform's loop."""
    stage = loop_config["config"]["stage"]
    if stage in ("refine", "eval"):
        from affectlab.workloads import infant_loops

        (infant_loops.refine_loop if stage == "refine" else infant_loops.eval_loop)(loop_config)
        return
    from affectlab.train.loop import train_loop_per_worker

    train_loop_per_worker(loop_config)


class InfantWorkload(WorkloadDefaults):
    name = "infant"
    config_class = InfantConfig
    eval_splits = ("val", "test")
    # recognisers return accuracy, balanced_accuracy and loss (cross-entropy); the CVAE loss and its terms
    metric_names = ("accuracy", "balanced_accuracy", "loss", "rc", "rcxyz", "kl", "velxyz")
    train_loop_per_worker = staticmethod(infant_loop_per_worker)

    def make_config(self, values: dict | None = None) -> InfantConfig:
        return make_config(InfantConfig, values)

    def __getstate__(self) -> dict:
        # the body-model layers cached by joints_fn stay in the process that built them
        return {k: v for k, v in self.__dict__.items() if k != "_joints"}

    # -- data ---------------------------------------------------------------------------
    def synthetic_config(self, data_dir, write: bool = True) -> dict:
        """Config values for a laptop run on synthetic InfActPrimitive pkls (and a tiny SMPL
        stand-in for the joint losses) in ``data_dir`` (used by jobs/sweep.py)."""
        data_dir = Path(data_dir)
        if write:
            from affectlab.body.standin import write_tiny_smpl
            from affectlab.data.synthetic_infant import write_synthetic_infant

            write_synthetic_infant(data_dir, "primitive", seed=0, **SYNTHETIC_DATA)
            write_tiny_smpl(data_dir / "body_model")
        values = preset_values("tiny", "recognizer")
        return {**values, "data_dir": str(data_dir), "dataset": "primitive", "body_model": str(data_dir / "body_model")}

    def n_folds(self, cfg: InfantConfig) -> int:
        """Folds of the grouped CV of the training file (checks the files, and that it has
        enough subject/clip groups for them)."""
        group_folds(self.read_files(cfg)["train"].clips, cfg.cv_folds, cfg.seed)
        return cfg.cv_folds

    def read_files(self, cfg: InfantConfig) -> dict:
        """The train and test files as ``InfantSplit``s (skipped clips counted in each)."""
        paths = infact_paths(cfg.data_dir, cfg.dataset)
        return {split: read_infact(path, cfg.dataset) for split, path in paths.items()}

    def clips(self, cfg: InfantConfig, fold: int | None, files: dict | None = None) -> dict[str, list[InfantClip]]:
        """``train`` / ``val`` (carved from training by group) / ``test``: the test file, or
        with ``fold`` the held-out groups of grouped fold ``fold`` of the training file."""
        files = files or self.read_files(cfg)
        pool, test = files["train"].clips, files["test"].clips
        if fold is not None:
            folds = group_folds(pool, cfg.cv_folds, cfg.seed)
            if not 0 <= fold < len(folds):
                raise ValueError(f"fold must be in [0, {len(folds)}), got {fold}")
            pool, test = folds[fold]
        train, val = validation_split(pool, cfg.val_fraction, cfg.seed)
        return {"train": train, "val": val, "test": test}

    def rows(self, cfg: InfantConfig, clips: list[InfantClip], seed: int | None) -> list[dict]:
        """Model rows ``pose`` (T, J, F) and ``label`` (the string columns stay out of Train)."""
        rows = infant_rows(clips, cfg.num_frames, cfg.pose_rep, cfg.glob, seed)
        return [{"pose": r["pose"], "label": r["label"]} for r in rows]

    def datasets(self, cfg: InfantConfig, fold: int | None) -> dict:
        """Ray Datasets of one stage: ``train`` (seeded random windows; the final stage adds
        the synthetic samples), ``val`` (centred windows) and ``test`` only where it is
        reported — a CV fold's held-out groups, or the test file in the ``eval`` stage.
        The ``eval`` stage also gets the ``synthetic`` samples as their own dataset."""
        import ray

        parts = self.clips(cfg, fold)
        train = self.rows(cfg, parts["train"], cfg.seed)
        synthetic = self.synthetic_rows(cfg) if cfg.stage in ("final", "eval") and cfg.synthetic_samples else []
        if cfg.stage == "final":
            if not cfg.synthetic_samples:
                raise ValueError("the final stage trains on real + synthetic samples: give synthetic_samples (a refine checkpoint or generated_samples.npz)")
            if not synthetic:
                print(f"final: {cfg.synthetic_samples} holds no accepted samples; the recogniser sees real data only", flush=True)
            train = train + synthetic
        order = np.random.default_rng(cfg.seed).permutation(len(train))  # blocks mix real and synthetic rows
        out = {"train": ray.data.from_items([train[i] for i in order]), "val": ray.data.from_items(self.rows(cfg, parts["val"], None))}
        if fold is not None or cfg.stage == "eval":
            out["test"] = ray.data.from_items(self.rows(cfg, parts["test"], None))
        if cfg.stage == "eval" and synthetic:
            out["synthetic"] = ray.data.from_items(synthetic)
        return out

    def synthetic_rows(self, cfg: InfantConfig) -> list[dict]:
        samples = read_generated_samples(synthetic_samples_path(cfg.synthetic_samples))
        if len(samples) and (samples.y.min() < 0 or samples.y.max() >= cfg.num_classes):
            raise ValueError(f"{cfg.synthetic_samples}: labels outside [0, {cfg.num_classes})")
        return self.rows(cfg, samples.clips(), None)

    # -- models -------------------------------------------------------------------------
    def build_model(self, cfg: InfantConfig, pretrained: bool | None = None) -> torch.nn.Module:
        """The model of the stage's ``model.safetensors``: the ST-GCN (recognizer, final,
        eval) or the CVAE (cvae, refine), with ``init_recognizer`` / ``init_cvae`` loaded
        into it for the recognizer / final / cvae stages (``pretrained=False``: never)."""
        kind = MODEL_OF_STAGE[cfg.stage]
        model = build_recognizer(asdict(cfg)) if kind == "stgcn" else build_generator(asdict(cfg))
        init = cfg.init_recognizer if kind == "stgcn" else cfg.init_cvae
        if init and pretrained is not False and cfg.stage in ("recognizer", "final", "cvae"):
            loaded = load_infant_weights(model, init, kind, cfg)
            print(f"{cfg.stage}: started from {len(loaded)} tensors of {init}", flush=True)
        return model

    def param_groups(self, model, cfg: InfantConfig) -> list[dict]:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr": cfg.lr, "weight_decay": cfg.weight_decay}]

    def joints_fn(self, cfg: InfantConfig, device: torch.device):
        """The SMPL/SMIL layer's 24 joints as ``(global_orient, body_pose) -> joints``, on
        ``device``, in float32 even under autocast (cached per process)."""
        key = (cfg.body_model, str(device))
        cache = self.__dict__.setdefault("_joints", {})
        if key not in cache:
            if not cfg.body_model:
                raise ValueError("the rcxyz/velxyz losses need body_model: an SMPL/SMIL model (.npz from affectlab.body.convert, or the released .pkl)")
            from affectlab.body.models import smpl_joints, smpl_layer

            layer = smpl_layer(cfg.body_model).to(device)
            cache[key] = functools.partial(_float32_joints, layer, smpl_joints)
        return cache[key]

    # -- training -----------------------------------------------------------------------
    @staticmethod
    def inputs(batch: dict) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows (B, T, J, F) -> ACTOR's (B, J, F, T), and the labels."""
        return batch["pose"].float().permute(0, 2, 3, 1).contiguous(), batch["label"].long()

    def train_step(self, model, batch: dict, cfg: InfantConfig, generator: torch.Generator):
        x, y = self.inputs(batch)
        if MODEL_OF_STAGE[cfg.stage] == "stgcn":
            logits, _ = model(x)
            loss = F.cross_entropy(logits.float(), y)
            return loss, {"accuracy": (logits.argmax(1) == y).float().mean().item()}
        mask = torch.ones(x.shape[0], x.shape[-1], dtype=torch.bool, device=x.device)
        out = model(x, y, mask, generator=generator)
        loss, terms = cvae_losses(x, mask, out, self.joints_fn(cfg, x.device), cfg.loss_weights)
        return loss, {k: v.item() for k, v in terms.items() if k != "mixed"}

    @torch.no_grad()
    def predict(self, model, batches, cfg: InfantConfig) -> dict[str, np.ndarray]:
        """Recognisers: ``label``, ``logits``, ``features``. The CVAE: per batch, its size
        ``n`` and each loss term (reconstructions of a fixed draw, dropout off)."""
        if MODEL_OF_STAGE[cfg.stage] == "stgcn":
            parts = {"label": [], "logits": [], "features": []}
            for batch in batches:
                x, y = self.inputs(batch)
                logits, features = model(x)
                for key, value in (("label", y), ("logits", logits), ("features", features)):
                    parts[key].append(value.float().cpu().numpy() if key != "label" else value.cpu().numpy())
            return {k: np.concatenate(v) for k, v in parts.items()}
        generator, parts = None, {}
        for batch in batches:
            x, y = self.inputs(batch)
            if generator is None:
                generator = torch.Generator(device=x.device).manual_seed(cfg.seed)
            mask = torch.ones(x.shape[0], x.shape[-1], dtype=torch.bool, device=x.device)
            _, terms = cvae_losses(x, mask, model(x, y, mask, generator=generator), self.joints_fn(cfg, x.device), cfg.loss_weights)
            parts.setdefault("n", []).append(len(y))
            for k, v in terms.items():
                parts.setdefault(k, []).append(v.item())
        return {k: np.asarray(v, dtype=np.float64) for k, v in parts.items()}

    def evaluate(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
        if "logits" in predictions:
            y, logits = predictions["label"], predictions["logits"]
            pred = logits.argmax(1)
            per_class = infant_metrics.per_class_accuracy(y, pred, logits.shape[1])
            cross_entropy = -log_softmax(logits.astype(np.float64), axis=1)[np.arange(len(y)), y].mean()
            return {"accuracy": infant_metrics.accuracy(y, pred), "balanced_accuracy": float(np.nanmean(per_class)), "loss": float(cross_entropy)}
        n = predictions["n"]
        out = {k: float(np.sum(predictions[k] * n) / np.sum(n)) for k in ("rc", "rcxyz", "kl", "velxyz") if k in predictions}
        out["loss"] = float(np.sum(predictions["mixed"] * n) / np.sum(n))
        return out


def _float32_joints(layer, smpl_joints, global_orient: torch.Tensor, body_pose: torch.Tensor) -> torch.Tensor:
    with torch.autocast(global_orient.device.type, enabled=False):
        return smpl_joints(layer, global_orient.float(), body_pose.float())


# ---------------------------------------------------------------------------- checkpoints


def synthetic_samples_path(path: str | Path) -> Path:
    """A generated-samples file, or the one in a refine checkpoint directory."""
    path = Path(path)
    return path / GENERATED_FILE if path.is_dir() else path


def read_infant_config(directory: str | Path) -> dict:
    """The inner ``config`` of an infant checkpoint's ``config.json`` (JSON only)."""
    path = Path(directory) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory} is not a checkpoint: missing {CONFIG_FILE}")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, dict) or data.get("workload") != "infant" or not isinstance(data.get("config"), dict):
        raise CheckpointError(f"{path}: not an infant checkpoint (workload {data.get('workload') if isinstance(data, dict) else None!r})")
    if data["config"].get("stage") not in STAGES:
        raise CheckpointError(f"{path}: config.stage must be one of {STAGES}, got {data['config'].get('stage')!r}")
    return data["config"]


COMPATIBLE_FIELDS = {
    "stgcn": ("dataset", "class_names", "pose_rep", "glob", "stgcn_preset"),
    "cvae": ("dataset", "class_names", "cvae_preset"),
}


def load_infant_weights(model: torch.nn.Module, directory: str | Path, kind: str, cfg: InfantConfig) -> dict:
    """Load the ``kind`` model ("stgcn" / "cvae") of the infant checkpoint ``directory`` into
    ``model``: the checkpoint must be of the same dataset, classes, representation and
    preset as ``cfg`` (each difference named), and every tensor must fit. Returns the state."""
    from affectlab.train.custom import load_weights

    saved = read_infant_config(directory)
    try:
        filename = weights_file(saved["stage"], kind)
    except ValueError as e:
        raise CheckpointError(f"{directory}: {e}") from None
    current = asdict(cfg)
    differ = [f"{k} {saved.get(k)!r} (this run: {current[k]!r})" for k in COMPATIBLE_FIELDS[kind] if saved.get(k) != current[k]]
    if differ:
        raise CheckpointError(f"{directory}: a {saved['stage']} checkpoint of another setting: " + "; ".join(differ))
    return load_weights(model, directory, filename)
