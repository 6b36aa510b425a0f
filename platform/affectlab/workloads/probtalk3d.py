"""The ``probtalk3d`` workload: speech + style → stochastic FLAME expression and jaw motion
(reference/talking_heads.md §4), as three platform runs that hand over by checkpoint path:

1. ``stage="prior"``: the VQ-VAE motion prior (or the VAE variant), on the identity-disjoint
   split, by the platform's training loop;
2. ``stage="pred"``: the speech + style predictor over the prior loaded from
   ``prior_checkpoint`` and frozen, on the seen-identities / unseen-sentences split, by the
   platform's training loop; its checkpoint holds the prior's weights unchanged;
3. ``stage="eval"``: the §4.5 evaluation of ``pred_checkpoint`` on that split's test
   sentences (FLAME vertices, mean-motion baseline, temperatures), by its own per-worker
   function (``workloads.probtalk3d_eval``) — still a Ray Train run fed by Ray Data.

Config defaults are the original's (§4.3: batch 1, whole sequences, up to 201 epochs,
AdamW 1e-4 with betas (0.9, 0.98) and eps 1e-9 for the prior, Adam 1e-5 for the predictor,
seed 1234); the training settings left ``None`` take the ``preset``'s value for the stage
(``STAGE_TRAINING``), so one preset name serves both stages. Checkpoints are selected on
``val_l2_plus_var`` (the original's validation L2 plus variance difference): a key every
stage's ``evaluate`` returns (defect 2: the original monitored a key nothing produced). The
platform loop has no early stopping; the epochs run out (and its cosine schedule spans them).
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from affectlab.constants import probtalk3d as C
from affectlab.data.probtalk3d_dataset import AUDIO_FRONTENDS, STAGES, TIME_AXES, stage_datasets
from affectlab.data.sequences import SequenceCollate, pad_rows
from affectlab.metrics.probtalk3d_eval import motion_validation_metrics
from affectlab.models.probtalk3d import trainable_parameters
from affectlab.models.probtalk3d_generate import MODEL_KEYS, predictor_from_config
from affectlab.models.probtalk3d_prior import PRIOR_PRESETS, PRIORS, build_prior
from affectlab.workloads.base import TrainConfig, WorkloadDefaults, make_config

# Training settings per preset and stage (fields left None in the config take these).
STAGE_TRAINING = {
    "paper": {  # §4.3 / §4.1-4.2: batch 1, 201 epochs; AdamW 1e-4 (prior), Adam = AdamW without decay 1e-5 (predictor)
        "prior": {"epochs": 201, "batch_size": 1, "lr": 1e-4, "weight_decay": 0.01, "grad_clip": 0.0, "cache_data": False},
        "pred": {"epochs": 201, "batch_size": 1, "lr": 1e-5, "weight_decay": 0.0, "grad_clip": 0.0, "cache_data": False},
    },
    "tiny": {  # a 2-core laptop on the synthetic 3DMEAD: small batches, larger steps, cached features
        "prior": {"epochs": 12, "batch_size": 8, "lr": 2e-3, "weight_decay": 0.01, "grad_clip": 1.0, "cache_data": True},
        "pred": {"epochs": 12, "batch_size": 8, "lr": 1e-3, "weight_decay": 0.0, "grad_clip": 1.0, "cache_data": True},
    },
}
STAGE_TRAINING["paper"]["eval"] = STAGE_TRAINING["paper"]["pred"]
STAGE_TRAINING["tiny"]["eval"] = STAGE_TRAINING["tiny"]["pred"]
ADAM_BETAS, ADAM_EPS = (0.9, 0.98), 1e-9
# write_synthetic_mead arguments of the synthetic datasets jobs and sweeps write
SYNTHETIC_SIZES = {
    "small": {"size": "small"},  # 84 sequences: 4 identities x 3 sentences x neutral/happy/angry
    "medium": {"n_identities": 6, "n_sentences": 6, "emotions": ("neutral", "happy", "angry")},  # 252
    "demo": {"size": "demo"},  # 480: 8 identities x 6 sentences x neutral/happy/sad/angry
}
GENERATION_FILE = "generation.json"  # beside a stage-2 checkpoint: what a server needs besides config.json
METRIC_NAMES = ("l2_plus_var", "motion_l2", "variance_diff", "exp_l1", "jaw_l1", "jaw_envelope_pearson")


@dataclass
class ProbTalk3DConfig(TrainConfig):
    # data
    data_dir: str = ""
    stage: str = "prior"  # prior | pred | eval
    cache_data: bool | None = None  # materialise each split once (None: the preset's choice)
    # model
    model: str = "vqvae"  # vqvae | vae (the variant)
    preset: str = "paper"  # model sizes (and training settings) of models.probtalk3d*: paper | tiny
    audio: str = "hubert"  # hubert (HuBERT-base, §4.2) | logmel (the §3 substitute)
    hubert_path: str | None = None  # local HuBERT weights (from_pretrained folder); None: random init
    mel_per_frame: int = 4  # log-mel frames stacked per motion frame (4 at 25 fps mirrors HuBERT's pairs)
    n_codes: int = 256
    tokens_per_frame: int = 2
    prior_checkpoint: str = ""  # stage pred: the stage-1 checkpoint directory (absolute path)
    pred_checkpoint: str = ""  # stage eval: the stage-2 checkpoint directory (absolute path)
    # style vocabularies a stage-2 model was trained on (names; set from the data by the job)
    identities: list = field(default_factory=list)
    emotions: list = field(default_factory=list)
    intensities: list = field(default_factory=list)
    audio_source: str = ""  # where the audio encoder's weights came from (set when the model is built)
    # generation and evaluation (§4.2, §4.5)
    temperature: float = 0.2
    top_k: int = 0  # 0: sample among all codes
    fact: float = 20.0  # VAE noise scale at generation
    n_samples: int = 10
    eval_temperatures: list = field(default_factory=lambda: [0.1, 0.2, 0.5])
    flame_dir: str = ""  # FLAME model directory (converted, or the tiny stand-in) for vertices and renders
    # training: None takes STAGE_TRAINING[preset][stage]
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    grad_clip: float | None = None
    seed: int = 1234
    select_metric: str = "val_l2_plus_var"
    select_mode: str = "min"

    def __post_init__(self):
        checks = {"stage": STAGES, "model": tuple(PRIORS), "preset": tuple(PRIOR_PRESETS), "audio": AUDIO_FRONTENDS}
        for name, allowed in checks.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {getattr(self, name)!r}")
        for name, value in STAGE_TRAINING[self.preset][self.stage].items():
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.mel_per_frame < 1:
            raise ValueError(f"mel_per_frame must be >= 1, got {self.mel_per_frame}")
        if self.n_samples < 2:
            raise ValueError(f"n_samples must be >= 2 (diversity pairs samples), got {self.n_samples}")
        if not self.temperature > 0 or not all(t > 0 for t in self.eval_temperatures):
            raise ValueError(f"temperatures must be > 0, got {self.temperature} and {self.eval_temperatures}")
        if self.top_k < 0 or self.top_k > self.n_codes:
            raise ValueError(f"top_k must be in 0..n_codes ({self.n_codes}), got {self.top_k}")
        for name in ("prior_checkpoint", "pred_checkpoint", "flame_dir", "data_dir"):
            value = getattr(self, name)
            if value and "://" not in value and not Path(value).is_absolute():
                raise ValueError(f"{name} must be an absolute path (Ray workers change directory), got {value!r}")

    def model_values(self) -> dict:
        """What the stage-2 model is rebuilt from (``predictor_from_config``)."""
        return {k: getattr(self, k) for k in MODEL_KEYS}


# ------------------------------------------------------------------------------- checkpoints


def read_stage_config(directory: str | Path, stage: str) -> dict:
    """The ``config`` of a checkpoint a stage wrote, checked to be a ``probtalk3d`` ``stage`` one."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{directory}: not a checkpoint directory (no config.json); expected a probtalk3d {stage} checkpoint")
    data = json.loads(path.read_text())
    config = data.get("config", {})
    if data.get("workload") != "probtalk3d" or config.get("stage") != stage:
        raise ValueError(f"{directory}: a {data.get('workload')!r} {config.get('stage')!r} checkpoint, expected a probtalk3d {stage!r} one")
    if not (Path(directory) / "model.safetensors").is_file():
        raise FileNotFoundError(f"{directory}: no model.safetensors")
    return config


PRIOR_KEYS = ("model", "preset", "n_codes", "tokens_per_frame")


def prior_settings(prior_checkpoint: str | Path) -> dict:
    """The prior's model settings (``PRIOR_KEYS``) from its checkpoint: stage 2 must use them."""
    config = read_stage_config(prior_checkpoint, "prior")
    return {k: config[k] for k in PRIOR_KEYS}


def load_frozen_prior(cfg: ProbTalk3DConfig):
    """The stage-1 prior of ``cfg.prior_checkpoint`` with its trained weights (frozen by the predictor)."""
    from affectlab.train.checkpoint import CheckpointError, read_checkpoint

    if not cfg.prior_checkpoint:
        raise ValueError("stage 'pred' needs prior_checkpoint: the stage-1 checkpoint directory (DIR/prior of a prior run)")
    settings = prior_settings(cfg.prior_checkpoint)
    wrong = {k: (settings[k], getattr(cfg, k)) for k in PRIOR_KEYS if settings[k] != getattr(cfg, k)}
    if wrong:
        detail = ", ".join(f"{k}: prior {a!r}, asked {b!r}" for k, (a, b) in wrong.items())
        raise ValueError(f"{cfg.prior_checkpoint}: the prior does not fit this stage-2 config ({detail})")
    prior = build_prior(cfg.model, cfg.preset, n_codes=cfg.n_codes, tokens_per_frame=cfg.tokens_per_frame)
    state, _, _ = read_checkpoint(cfg.prior_checkpoint)
    missing, unexpected = prior.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise CheckpointError(f"{cfg.prior_checkpoint}: weights do not fit the prior (missing {missing[:5]}, unexpected {unexpected[:5]})")
    return prior


def load_predictor(directory: str | Path, device: str | torch.device = "cpu"):
    """(model in eval mode, config dict, metrics) of a stage-2 checkpoint; safetensors and JSON only."""
    from affectlab.train.checkpoint import load_model

    read_stage_config(directory, "pred")
    return load_model(directory, lambda values: (predictor_from_config(values), values), device)


# ------------------------------------------------------------------------------- the workload


def stage_loop_per_worker(loop_config: dict) -> None:
    """Ray Train's per-worker function: the platform loop trains the prior and the predictor;
    the evaluation brings its own."""
    if loop_config["config"]["stage"] == "eval":
        from affectlab.workloads.probtalk3d_eval import evaluation_loop_per_worker

        return evaluation_loop_per_worker(loop_config)
    from affectlab.train.loop import train_loop_per_worker

    return train_loop_per_worker(loop_config)


class ProbTalk3DWorkload(WorkloadDefaults):
    name = "probtalk3d"
    config_class = ProbTalk3DConfig
    eval_splits = ("val", "test")
    metric_names = METRIC_NAMES
    train_loop_per_worker = staticmethod(stage_loop_per_worker)

    def make_config(self, values: dict | None = None) -> ProbTalk3DConfig:
        return make_config(ProbTalk3DConfig, values)

    # -- data ---------------------------------------------------------------------------
    def datasets(self, cfg: ProbTalk3DConfig, fold: int | None = None) -> dict:
        """The stage's named split as Ray Datasets (``data.probtalk3d_dataset``); no folds."""
        from affectlab.data.mead import discover_mead

        return stage_datasets(discover_mead(cfg.data_dir), cfg.stage, audio=cfg.audio, mel_per_frame=cfg.mel_per_frame,
                              cache=cfg.cache_data)  # fmt: skip

    def collate_fn(self, cfg: ProbTalk3DConfig) -> SequenceCollate:
        return SequenceCollate(TIME_AXES)

    def synthetic_config(self, data_dir, write: bool = True) -> dict:
        """The tiny preset with log-mel audio on a synthetic 3DMEAD (the jobs' default size) in ``data_dir``."""
        if write:
            from affectlab.data.synthetic_mead import write_synthetic_mead

            write_synthetic_mead(data_dir, **SYNTHETIC_SIZES["medium"])
        return {"data_dir": str(Path(data_dir).resolve()), "preset": "tiny", "audio": "logmel"}

    def n_folds(self, cfg: ProbTalk3DConfig) -> None:
        """No folds (named splits). Checks the data, and the stage's input checkpoint, first."""
        from affectlab.data.mead import discover_mead

        discover_mead(cfg.data_dir)
        if cfg.stage == "pred":
            load_frozen_prior(cfg)
        if cfg.stage == "eval":
            read_stage_config(cfg.pred_checkpoint, "pred")
        return None

    # -- model --------------------------------------------------------------------------
    def build_model(self, cfg: ProbTalk3DConfig, pretrained: bool | None = None) -> torch.nn.Module:
        """Stage 1: a fresh prior. Stage 2: the predictor over the prior of ``prior_checkpoint``
        (frozen); ``pretrained=False`` (loading a stage-2 checkpoint) reads no file: the
        checkpoint brings every weight, the prior's too."""
        if cfg.stage == "prior":
            return build_prior(cfg.model, cfg.preset, n_codes=cfg.n_codes, tokens_per_frame=cfg.tokens_per_frame)
        if pretrained is False:
            return predictor_from_config(cfg.model_values())
        from affectlab.models.probtalk3d import build_probtalk3d

        return build_probtalk3d(
            cfg.model, cfg.preset, n_identities=C.NUM_STYLE_IDENTITIES, n_emotions=len(C.EMOTIONS),
            n_intensities=len(C.INTENSITIES), audio=cfg.audio, hubert_path=cfg.hubert_path,
            audio_in_dim=80 * cfg.mel_per_frame, prior=load_frozen_prior(cfg),
        )  # fmt: skip

    def param_groups(self, model: torch.nn.Module, cfg: ProbTalk3DConfig) -> list[dict]:
        """One group of the trainable parameters (the frozen prior and HuBERT parts left out),
        with the original's Adam betas and eps."""
        return [{"params": trainable_parameters(model), "lr": cfg.lr, "weight_decay": cfg.weight_decay,
                 "betas": ADAM_BETAS, "eps": ADAM_EPS}]  # fmt: skip

    # -- training -----------------------------------------------------------------------
    @staticmethod
    def _audio_inputs(batch: dict, cfg: ProbTalk3DConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """The audio encoder's input and its mask: log-mel frames share the motion's frame mask;
        waveform samples are real up to 640 × the sequence's frames."""
        if cfg.audio == "logmel":
            return batch["mel"], batch["frame_mask"]
        audio = batch["audio"]
        samples = batch["frame_length"] * C.SAMPLES_PER_FRAME
        return audio, torch.arange(audio.shape[1], device=audio.device)[None, :] < samples[:, None]

    @staticmethod
    def _style(batch: dict) -> torch.Tensor:
        return torch.stack([batch["identity"], batch["emotion"], batch["intensity"]], dim=1).long()

    def train_step(self, model, batch: dict, cfg: ProbTalk3DConfig, generator: torch.Generator):
        module = model.module if hasattr(model, "module") else model
        motion, mask = batch["motion"].float(), batch["frame_mask"]
        if cfg.stage == "prior":
            return module.loss_from_outputs(model(motion, mask, generator), motion, mask)
        audio, audio_mask = self._audio_inputs(batch, cfg)
        latent, frames = model(audio, self._style(batch), mask, audio_mask)  # the DDP wrapper's forward
        return module.loss_from_outputs(latent, frames, motion, generator)

    @torch.no_grad()
    def predict(self, model, batches, cfg: ProbTalk3DConfig) -> dict[str, np.ndarray]:
        """Deterministic reconstructions (prior: nearest codes / the mean) or generations
        (predictor: ``sample=False``), padded to the longest sequence, with their lengths."""
        parts = defaultdict(list)
        for batch in batches:
            motion, mask = batch["motion"].float(), batch["frame_mask"]
            if cfg.stage == "prior":
                pred = model(motion, mask)["motion"]
            else:
                audio, audio_mask = self._audio_inputs(batch, cfg)
                pred, mask = model.generate(audio, self._style(batch), mask, sample=False, audio_mask=audio_mask)
            lengths = mask.sum(1).cpu().numpy()
            for i, t in enumerate(lengths):
                parts["motion"].append(motion[i, :t].cpu().numpy())
                parts["pred"].append(pred[i, :t].float().cpu().numpy())
                parts["envelope"].append(batch["envelope"][i, :t].float().cpu().numpy())
            parts["length"].append(lengths)
            for key in ("identity", "emotion", "intensity", "sentence"):
                parts[key].append(batch[key].cpu().numpy())
        if not parts["length"]:
            return {"length": np.zeros(0, np.int64)}
        longest = max(len(m) for m in parts["motion"])
        out = {k: pad_rows(parts[k], longest, column=k) for k in ("motion", "pred", "envelope")}
        out.update({k: np.concatenate(parts[k]) for k in ("length", "identity", "emotion", "intensity", "sentence")})
        return out

    def evaluate(self, predictions: dict[str, np.ndarray]) -> dict[str, float]:
        if not len(predictions["length"]):
            return {k: float("nan") for k in METRIC_NAMES}
        return motion_validation_metrics(predictions["pred"], predictions["motion"], predictions["length"], predictions["envelope"])


# ------------------------------------------------------------------------------- running the stages


def train_stage(cfg: ProbTalk3DConfig, output: Path, storage: str | None = None, callbacks=(), extra_files=None) -> tuple[dict, Path]:
    """One stage as a Ray Train run fed by Ray Data; its final checkpoint is published as
    ``output/<stage>`` (written beside it and renamed into place). ``extra_files(dir)`` adds
    files to it. Returns (the run's final metrics, the checkpoint directory)."""
    from affectlab.train.outputs import new_run_name, publish
    from affectlab.train.run import fit

    workload = ProbTalk3DWorkload()
    datasets = workload.datasets(cfg)
    name = new_run_name(f"probtalk3d-{cfg.stage}")
    result = fit(workload, cfg, datasets, storage or str(output / "ray_results"), name, callbacks)
    if result.checkpoint is None or not (result.metrics or {}).get("final"):
        raise RuntimeError(f"run {name} ended without its final checkpoint (error: {result.error})")

    def write(tmp: Path) -> None:
        result.checkpoint.to_directory(str(tmp))
        if extra_files is not None:
            extra_files(tmp)

    return dict(result.metrics), publish(write, output / cfg.stage)


def generation_info(cfg: ProbTalk3DConfig, flame_dir: str | None) -> dict:
    """``generation.json`` of a stage-2 checkpoint: rates, scaling, vocabularies, the prior and
    the FLAME geometry, so a server needs nothing but the checkpoint directory."""
    prior = build_prior(cfg.model, cfg.preset, n_codes=cfg.n_codes, tokens_per_frame=cfg.tokens_per_frame)
    return {
        "fps": C.FPS, "sample_rate": C.AUDIO_SAMPLE_RATE, "samples_per_frame": C.SAMPLES_PER_FRAME,
        "motion_dim": C.MOTION_DIM, "param_dim": C.PARAM_DIM, "num_expression": C.NUM_EXPRESSION,
        "scaler": {"expression_range": list(C.EXPRESSION_RANGE), "jaw_range": list(C.JAW_RANGE),
                   "scaled": "x * scale + min_, scale = 1 / (hi - lo), min_ = -lo * scale (no clipping)"},
        "style": {"identities": cfg.identities, "emotions": cfg.emotions, "intensities": cfg.intensities,
                  "identity_slots": list(C.TRAIN_SUBJECTS), "emotion_slots": list(C.EMOTIONS),
                  "intensity_slots": list(C.INTENSITIES)},
        "model": cfg.model_values(), "prior": {"model": cfg.model, **dataclasses.asdict(prior.cfg)},
        "audio_source": cfg.audio_source,
        "generation_defaults": {"temperature": cfg.temperature, "top_k": cfg.top_k, "fact": cfg.fact},
        "flame_dir": flame_dir,
    }  # fmt: skip
