"""The flagship job end to end on the shared local Ray cluster, and resuming a run."""

import json
import sys

import numpy as np
import pytest

import unbc_cv
from ray.train import UserCallback

from affectlab.train.checkpoint import read_checkpoint
from affectlab.train.loop import read_predictions
from affectlab.train.run import fit
from affectlab.workloads import get_workload


def run_job(monkeypatch, module, *argv):
    monkeypatch.setattr(sys, "argv", [module.__file__, *argv])
    module.main()


def test_cv_job_learns_on_held_out_subjects(ray_cluster, unbc_dir, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cv"
    run_job(monkeypatch, unbc_cv, "--data-dir", str(unbc_dir), "--output", str(out), "--folds", "0,1", "--preset", "tiny",
            "--wandb", "off", "--cpus-per-worker", "0.5")  # fmt: skip
    printed = capsys.readouterr().out
    metrics = json.loads((out / "metrics.json").read_text())

    assert [f["fold"] for f in metrics["folds"]] == [0, 1]
    for fold in metrics["folds"]:
        assert set(fold["auroc"]) == {"1", "2", "3"}
        assert set(fold["f1_train_calibrated"]) == {"1", "2", "3", "macro"}
        # a constant predictor scores Pearson 0 and AUROC 0.5 on these held-out subjects
        assert fold["pearson"] >= 0.4, fold
        assert fold["auroc"]["1"] > 0.7, fold
        ckpt = out / f"fold_{fold['fold']}"
        _, config, _ = read_checkpoint(ckpt)
        test = read_predictions(ckpt)["test"]
        assert config["workload"] == "pain" and len(test["pred"]) == fold["n_test"]
        # the reported MAE is recomputed from the saved test predictions, not copied
        assert fold["mae"] == pytest.approx(float(np.abs(test["pred"] - test["target"]).mean()), rel=1e-6)
    s = metrics["summary"]
    assert s["pearson"]["mean"] >= 0.6
    assert s["pearson"]["mean"] == pytest.approx(np.mean([f["pearson"] for f in metrics["folds"]]))
    assert s["pearson"]["ci95"] > 0 and set(s["auroc"]["2"]) == {"mean", "ci95"}
    assert "<img" in (out / "report.html").read_text()
    assert "summary (mean ± 95% CI over 2 folds)" in printed


class EpochLog(UserCallback):
    """Records the epoch of every report (runs in Train's controller, so it writes a file)."""

    def __init__(self, path):
        self.path = str(path)

    def after_report(self, run_context, metrics, checkpoint):
        with open(self.path, "a") as f:
            f.write(f"{metrics[0].get('epoch', 'final')}\n")


def test_a_run_started_again_resumes_from_its_last_checkpoint(ray_cluster, tiny_pain_config, tmp_path):
    """Same storage path and name: Ray Train hands the loop its latest checkpoint and the
    run continues from the next epoch instead of starting over."""
    ray_cluster.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # ship EpochLog by value
    workload = get_workload("pain")
    cfg = tiny_pain_config
    cfg.epochs = 1
    log = tmp_path / "epochs.txt"
    first = fit(workload, cfg, workload.datasets(cfg, fold=0), str(tmp_path), "resume-me", callbacks=[EpochLog(log)])
    assert first.metrics["final"] and log.read_text().split() == ["0", "final"]

    cfg.epochs = 2
    second = fit(workload, cfg, workload.datasets(cfg, fold=0), str(tmp_path), "resume-me", callbacks=[EpochLog(log)])
    assert second.metrics["final"]
    assert log.read_text().split() == ["0", "final", "1", "final"]  # epoch 0 was not trained again


def test_two_workers_train_with_ddp(ray_cluster, tiny_pain_config, tmp_path):
    workload = get_workload("pain")
    cfg = tiny_pain_config
    cfg.epochs, cfg.num_workers, cfg.cpus_per_worker = 1, 2, 0.5
    datasets = workload.datasets(cfg, fold=0)
    n_train = datasets["train"].count()
    result = fit(workload, cfg, datasets, str(tmp_path), "ddp")
    epoch = [m for _, m in result.best_checkpoints if m.get("epoch") == 0][0]
    # each rank trains on its half of the shard: rank 0 saw about n/2 rows
    assert epoch["train_steps"] == -(-(n_train // 2) // cfg.batch_size)
    assert result.metrics["final"] and np.isfinite(result.metrics["val_pearson"])


def test_pretraining_then_production_from_its_checkpoint(ray_cluster, tmp_path, monkeypatch):
    """Stage 1 on synthetic 3D-Pain, then stage 3 on synthetic UNBC starting from it."""
    import pain3d_pretrain
    import unbc_production

    stage1 = tmp_path / "pain3d"
    run_job(monkeypatch, pain3d_pretrain, "--synthetic", "--output", str(stage1), "--epochs", "2", "--wandb", "off",
            "--cpus-per-worker", "0.5")  # fmt: skip
    m1 = json.loads((stage1 / "metrics.json").read_text())
    assert {"val_mae", "test_mae", "test_pearson"} <= set(m1)
    assert m1["config"]["w_au"] == 1.0 and m1["config"]["select_metric"] == "val_mae"  # the stage-1 recipe

    stage3 = tmp_path / "production"
    run_job(monkeypatch, unbc_production, "--synthetic", "--output", str(stage3), "--epochs", "1", "--wandb", "off",
            "--cpus-per-worker", "0.5", "--pretrained-checkpoint", str(stage1 / "checkpoint"))  # fmt: skip
    m3 = json.loads((stage3 / "metrics.json").read_text())
    assert {"val_mae", "val_pearson", "train_eval_mae"} <= set(m3) and "test_mae" not in m3
    state, config, _ = read_checkpoint(stage3 / "checkpoint")
    assert config["config"]["pretrained_checkpoint"] == str(stage1 / "checkpoint")
    assert config["config"]["protocol"] == "all"
    assert "<img" in (stage3 / "report.html").read_text()
