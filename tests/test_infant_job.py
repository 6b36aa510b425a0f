"""``jobs/infant.py`` end to end on synthetic data: one full run of the five stages with the
job's defaults (shared by the tests of this module), one stage run alone from that run's
checkpoints, and the recogniser's grouped 2-fold CV, all on the session's Ray cluster."""

import json

import numpy as np
import pytest
import torch

from affectlab.data.infant import read_generated_samples
from affectlab.models.infant_inference import build_generator, build_recognizer, classify, weights_file
from affectlab.train.checkpoint import read_checkpoint
from affectlab.train.custom import load_weights, state_fingerprint
from affectlab.workloads.infant import InfantConfig, read_infant_config

CLASSES = ["Supine", "Prone", "Sitting", "Standing", "All-fours"]
CHANCE = 1 / len(CLASSES)


@pytest.fixture(scope="module")
def run(ray_cluster, tmp_path_factory):
    """``python jobs/infant.py --synthetic --output OUT`` with the job's defaults (W&B off):
    (OUT, metrics.json)."""
    import infant

    out = tmp_path_factory.mktemp("infant_run") / "out"
    return out, json.loads(infant.main(["--synthetic", "--output", str(out), "--wandb", "off"]).read_text())


def test_metrics_have_the_interface_keys_with_cis(run):
    _, m = run
    for recipe in ("real_only", "with_synthetic"):
        stat = m["recognizer_test_accuracy"][recipe]
        assert set(stat) == {"mean", "ci95"} and 0 <= stat["mean"] <= 1 and stat["ci95"] >= 0
        values = m["recognizer_test_accuracy_per_seed"][recipe]
        assert len(values) == 3 and stat["mean"] == pytest.approx(np.mean(values))
        assert stat["ci95"] == pytest.approx(1.96 * np.std(values, ddof=1) / np.sqrt(3))  # not 1.96 * var (defect 9)
    assert set(m["generation"]) >= {"fid_test", "fid_noise_test", "accuracy_gen", "diversity", "multimodality"}
    assert all(np.isfinite(v) for v in m["generation"].values())
    assert set(m["generation_ci95"]) >= {"fid_test", "fid_noise_test", "accuracy_gen", "diversity", "multimodality"}
    assert 0 < m["majority_baseline_accuracy"] < 1
    assert m["rounds"] and all({"epoch", "accepted_per_class"} <= set(r) for r in m["rounds"])


def test_recognizer_beats_the_majority_class_by_a_wide_margin(run):
    _, m = run
    majority = m["majority_baseline_accuracy"]
    real, mixed = m["recognizer_test_accuracy"]["real_only"]["mean"], m["recognizer_test_accuracy"]["with_synthetic"]["mean"]
    print(f"held-out synthetic test set: real only {real:.3f}, with synthetic {mixed:.3f}, majority {majority:.3f}")
    assert majority == pytest.approx(CHANCE)  # the test subjects hold every class equally often
    assert real >= majority + 0.5 and mixed >= majority + 0.5


def test_generated_samples_are_recognised_and_close_to_real(run):
    _, m = run
    g = m["generation"]
    per_class = m["generation_accuracy_per_class"]
    print(f"accuracy_gen {g['accuracy_gen']:.3f} per class {per_class}; FID gen {g['fid_test']:.2f} noise {g['fid_noise_test']:.2f}")
    assert g["accuracy_gen"] >= 3 * CHANCE
    assert all(per_class[name] >= 2 * CHANCE for name in CLASSES), per_class  # every class, well above chance
    assert g["accuracy_gen_shuffled_labels"] < 2 * CHANCE  # against shuffled labels: near chance
    assert g["fid_test"] * 4 < g["fid_noise_test"]
    assert g["fid_train_test"] < g["fid_test"]  # two real sets are closer still


def test_refinement_adds_samples_of_every_class_in_at_least_two_rounds(run):
    out, m = run
    assert len(m["rounds"]) >= 2
    for r in m["rounds"]:
        assert set(r["accepted_per_class"]) == set(CLASSES) and min(r["accepted_per_class"].values()) >= 1, r
    samples = read_generated_samples(out / "refine" / "generated_samples.npz")
    accepted = sum(sum(r["accepted_per_class"].values()) for r in m["rounds"])
    assert len(samples) == accepted == m["n_synthetic"]
    # one epoch_idx per kept sample (defect 11), the generation epoch of its round
    expected = np.concatenate([np.full(sum(r["accepted_per_class"].values()), r["generation_epoch"]) for r in m["rounds"]])
    np.testing.assert_array_equal(samples.epoch_idx, expected)
    assert all(p.shape == (32, 24, 3) for p in samples.pose) and samples.score.min() >= 0.75
    for r in m["rounds"]:
        kept = samples.y[samples.epoch_idx == r["generation_epoch"]]
        assert np.bincount(kept, minlength=5).tolist() == [r["accepted_per_class"][c] for c in CLASSES]
    journal = json.loads((out / "refine" / "refinement.json").read_text())
    assert [h["epoch"] for h in journal["history"]] == list(range(1, 9)) and len(journal["rounds"]) == 4
    fine_tuned = [h["epoch"] for h in journal["history"] if h["finetuned"]]
    assert fine_tuned == [r["epoch"] + 1 for r in journal["rounds"] if not r["skipped"] and r["epoch"] < 8]


def test_checkpoints_rebuild_from_their_config_alone(run):
    out, m = run
    manifest = json.loads((out / "models.json").read_text())
    assert manifest["classifier"] == str(out / "final") and manifest["generator"] == str(out / "refine")
    assert manifest["class_names"] == CLASSES and manifest["num_frames"] == 32
    for stage in ("recognizer", "cvae", "refine", "final", "eval"):
        assert (out / stage / "config.json").is_file() and (out / stage / "model.safetensors").is_file()
    config = read_infant_config(out / "final")
    model = build_recognizer(config)
    load_weights(model, out / "final", weights_file("final", "stgcn"))
    generator = build_generator(read_infant_config(out / "refine"))
    load_weights(generator, out / "refine", weights_file("refine", "cvae"))
    test = json.loads((out / "eval" / "evaluation.json").read_text())
    samples = read_generated_samples(out / "refine" / "generated_samples.npz")
    probs = classify(model.eval(), np.stack(samples.pose[:4]))
    assert probs.shape == (4, 5) and torch.allclose(probs.sum(1), torch.ones(4), atol=1e-5)
    assert test["sources"]["with_synthetic"] == str(out / "final")
    assert InfantConfig(**read_checkpoint(out / "cvae")[1]["config"]).stage == "cvae"


def test_report_has_every_section(run):
    out, _ = run
    html = (out / "report.html").read_text()
    for title in ("with vs without synthetic data", "confusion matrices", "Generation metrics", "Refinement rounds",
                  "t-SNE of real vs accepted synthetic features", "skeleton animations"):  # fmt: skip
        assert title in html, title
    assert html.count("data:image/gif;base64,") == 5 and len(list((out / "animations").glob("*.gif"))) == 5


def test_a_stage_alone_starts_from_the_checkpoints_it_is_given(run, tmp_path):
    """One refinement epoch from the run's stage-1 and stage-2 checkpoints: the fingerprints
    of the weights it started from are those of the checkpoints' files, every tensor counted,
    and the recogniser (fine-tuned only after a round) leaves the epoch bit-identical."""
    import infant

    src, _ = run
    out = tmp_path / "refine_alone"
    infant.main(["--data-dir", str(src / "data"), "--body-model", str(src / "body_model"), "--preset", "tiny", "--stage", "refine",
                 "--init-recognizer", str(src / "recognizer"), "--init-cvae", str(src / "cvae"), "--refine-epochs", "1",
                 "--output", str(out), "--wandb", "off"])  # fmt: skip
    journal = json.loads((out / "refine" / "refinement.json").read_text())
    for key, stage in (("recognizer", "recognizer"), ("cvae", "cvae")):
        state, _, _ = read_checkpoint(src / stage)
        assert journal["init"][key]["path"] == str(src / stage)
        assert journal["init"][key]["tensors"] == len(state)
        assert journal["init"][key]["fingerprint"] == state_fingerprint(state)
    refined, _, _ = read_checkpoint(src / "recognizer")
    recognizer = build_recognizer(read_infant_config(out / "refine"))
    assert state_fingerprint(load_weights(recognizer, out / "refine", "recognizer.safetensors")) == state_fingerprint(refined)
    generator, _, _ = read_checkpoint(out / "refine")
    assert state_fingerprint(generator) != journal["init"]["cvae"]["fingerprint"]  # the CVAE trained for an epoch
    assert json.loads((out / "metrics.json").read_text())["stages"] == ["refine"]


def test_stage_flags_are_checked_before_any_work(tmp_path):
    import infant

    with pytest.raises(SystemExit, match="--stage refine needs --init-recognizer, --init-cvae"):
        infant.main(["--synthetic", "--stage", "refine", "--output", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match="not a checkpoint: missing config.json"):
        infant.main(["--synthetic", "--stage", "refine", "--init-recognizer", str(tmp_path), "--init-cvae", str(tmp_path),
                     "--output", str(tmp_path / "b")])  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_grouped_two_fold_cv_of_the_recognizer(ray_cluster, tmp_path):
    import infant

    out = tmp_path / "cv"
    m = json.loads(infant.main(["--synthetic", "--cv", "2", "--recognizer-epochs", "1", "--output", str(out), "--wandb", "off"]).read_text())
    folds = m["cv"]["folds"]
    assert [f["fold"] for f in folds] == [0, 1] and sum(f["n_test"] for f in folds) == m["data"]["files"]["train"]["clips"]
    s = m["cv"]["summary"]["test_accuracy"]
    assert s["mean"] == pytest.approx(np.mean([f["test_accuracy"] for f in folds]))
    for k in (0, 1):
        assert (out / f"fold_{k}" / "predictions.npz").is_file() and (out / f"fold_{k}" / "model.safetensors").is_file()
    assert "Grouped cross-validation" in (out / "report.html").read_text()
