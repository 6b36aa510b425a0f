"""The flagship job end to end on the shared local Ray cluster, and resuming a run."""

import json
import sys

import numpy as np
import pytest

import unbc_cv
from affectlab.train.checkpoint import read_checkpoint
from affectlab.train.loop import read_predictions


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


def test_a_run_started_again_resumes_from_its_last_checkpoint(ray_cluster, tiny_pain_config, tmp_path):
    """Same storage path and name: Ray Train hands the loop its latest checkpoint and the
    run continues from the next epoch instead of starting over."""
    from affectlab.train.run import fit
    from affectlab.workloads import get_workload

    workload = get_workload("pain")
    cfg = tiny_pain_config
    cfg.epochs, cfg.protocol = 1, "5fold"
    datasets = workload.datasets(cfg, fold=0)
    first = fit(workload, cfg, datasets, str(tmp_path), "resume-me")
    assert first.metrics["final"] and first.error is None

    cfg.epochs = 2
    second = fit(workload, cfg, workload.datasets(cfg, fold=0), str(tmp_path), "resume-me")
    epochs = sorted(p.name for p in (tmp_path / "resume-me").glob("checkpoint_*/") if p.is_dir())
    reported = [c.path.rsplit("/", 1)[-1] for c, _ in second.best_checkpoints]
    assert "epoch_001" in reported  # the second epoch ran...
    assert second.metrics["final"]
    state_epochs = sorted(m.get("epoch") for _, m in second.best_checkpoints if "epoch" in m)
    assert 0 not in state_epochs or epochs  # ...and epoch 0 was not trained again
