"""The flagship job end to end on the shared local Ray cluster, and resuming a run."""

import json
import sys

import numpy as np
import pytest

import unbc_cv
from ray.train import UserCallback

from affectlab.train.checkpoint import read_checkpoint
from affectlab.train.loop import read_predictions
from affectlab.train.run import fit, make_trainer
from affectlab.workloads import get_workload


def run_job(monkeypatch, module, *argv):
    module.main(list(argv))


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
    assert s["pearson"]["ci95"] > 0 and set(s["auroc"]["2"]) == {"mean", "ci95", "n"}
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


def test_train_controller_is_handed_plain_settings_not_the_workload(tiny_pain_config, tmp_path):
    """Ray Train's controller unpickles the run context, ``train_loop_config`` among it: the
    workload (and the libraries its module imports) travels only in the training function,
    which the workers alone load."""
    import ray.cloudpickle

    trainer = make_trainer(get_workload("pain"), tiny_pain_config, {}, str(tmp_path), "plain")
    assert json.loads(json.dumps(trainer.train_loop_config))["config"]["epochs"] == tiny_pain_config.epochs
    assert b"affectlab.workloads" not in ray.cloudpickle.dumps(trainer.train_run_context)
    assert b"affectlab.workloads.pain" in ray.cloudpickle.dumps(trainer.train_loop_per_worker)


def test_two_workers_train_with_ddp(ray_cluster, tiny_pain_config, tmp_path):
    workload = get_workload("pain")
    cfg = tiny_pain_config
    cfg.epochs, cfg.num_workers, cfg.cpus_per_worker = 1, 2, 0.5
    cfg.weighted_sampling = False  # every row once, so the step count is exact
    datasets = workload.datasets(cfg, fold=0)
    n_train = datasets["train"].count()
    result = fit(workload, cfg, datasets, str(tmp_path), "ddp")
    epoch = [m for _, m in result.best_checkpoints if m.get("epoch") == 0][0]
    # each rank trains on its half of the shard: rank 0 saw about n/2 rows
    assert epoch["train_steps"] == -(-(n_train // 2) // cfg.batch_size)
    assert result.metrics["final"] and np.isfinite(result.metrics["val_pearson"])


def test_three_stages_with_relative_paths_carry_the_weights(ray_cluster, pain3d_dir, unbc_dir, tmp_path, monkeypatch):
    """The README's stage 1 → 2 → 3 commands, run from a working directory with relative
    paths (data included): the stage-1 weights must really reach stages 2 and 3 (Train
    workers run in other directories, so an unresolved relative path would load nothing)."""
    import pain3d_pretrain
    import unbc_production
    from safetensors.numpy import load_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "pain_faces").symlink_to(pain3d_dir)
    (tmp_path / "data" / "unbc").symlink_to(unbc_dir)
    common = ["--preset", "tiny", "--epochs", "1", "--cpus-per-worker", "0.5"]
    pain3d_pretrain.main(["--data-dir", "data/pain_faces", "--output", "runs/pain3d", "--wandb", "offline", *common])
    m1 = json.loads((tmp_path / "runs/pain3d/metrics.json").read_text())
    assert {"val_mae", "test_mae", "test_pearson"} <= set(m1)
    assert m1["config"]["w_au"] == 1.0 and m1["config"]["select_metric"] == "val_mae"  # the stage-1 recipe
    assert list((tmp_path / "runs/pain3d/wandb").glob("**/offline-run-*")), "offline tracking wrote no run"

    # stage 2 with a frozen backbone: its backbone weights must be stage 1's, bit for bit
    unbc_cv.main(["--data-dir", "data/unbc", "--output", "runs/cv", "--folds", "0", "--finetune", "frozen", "--wandb", "offline",
                  "--pretrained-checkpoint", "runs/pain3d/checkpoint", *common])  # fmt: skip
    m2 = json.loads((tmp_path / "runs/cv/metrics.json").read_text())
    assert m2["pretrained_checkpoint"]["path"] == str(tmp_path / "runs/pain3d/checkpoint")
    assert m2["pretrained_checkpoint"]["tensors_loaded"] > 0
    stage1 = load_file(str(tmp_path / "runs/pain3d/checkpoint/model.safetensors"))
    stage2 = load_file(str(tmp_path / "runs/cv/fold_0/model.safetensors"))
    frozen = [k for k in stage1 if k.startswith("encoder.") and k in stage2]
    assert frozen and all(np.array_equal(stage1[k], stage2[k]) for k in frozen)
    assert list((tmp_path / "runs/cv/wandb").glob("**/offline-run-*")), "Tune's offline tracking wrote no run"

    unbc_production.main(["--data-dir", "data/unbc", "--output", "runs/prod", "--wandb", "off",
                          "--pretrained-checkpoint", "runs/pain3d/checkpoint", *common])  # fmt: skip
    m3 = json.loads((tmp_path / "runs/prod/metrics.json").read_text())
    assert {"val_mae", "val_pearson", "train_eval_mae"} <= set(m3) and "test_mae" not in m3
    assert m3["pretrained_checkpoint"]["tensors_loaded"] == m2["pretrained_checkpoint"]["tensors_loaded"]
    _, config, _ = read_checkpoint(tmp_path / "runs/prod/checkpoint")
    assert config["config"]["pretrained_checkpoint"] == str(tmp_path / "runs/pain3d/checkpoint")
    assert config["config"]["protocol"] == "all"
    assert not (tmp_path / "runs/prod/wandb").exists()  # --wandb off writes nothing
    assert "<img" in (tmp_path / "runs/prod/report.html").read_text()


def test_an_output_directory_holding_a_run_is_not_overwritten(tmp_path):
    """Refused before any work; --overwrite lets it through."""
    import unbc_production

    out = tmp_path / "prod"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    with pytest.raises(SystemExit) as exit_info:
        unbc_production.main(["--synthetic", "--output", str(out)])
    assert exit_info.value.code == 2
    assert (out / "metrics.json").read_text() == "{}" and sorted(p.name for p in out.iterdir()) == ["metrics.json"]
