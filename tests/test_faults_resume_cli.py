"""--resume of the CV jobs is checked before Ray starts: it needs a CV recorded in OUTPUT
(``cv.json``) that was started with the same workload, folds and config. No Ray here."""

import json

import pytest

from affectlab.train.config import config_to_dict
from affectlab.tune.cv import SETTINGS_FILE, CVError, recorded_run
from affectlab.workloads import get_workload
from affectlab.workloads.pain import PRESETS


def test_the_cv_jobs_refuse_resume_without_a_recorded_run(unbc_dir, mouse_dir, tmp_path):
    import mouse_actions
    import unbc_cv

    with pytest.raises(SystemExit) as both:
        unbc_cv.main(["--data-dir", str(unbc_dir), "--output", str(tmp_path / "a"), "--resume", "--overwrite"])
    assert both.value.code == 2
    out = tmp_path / "cv"
    out.mkdir()
    (out / "notes.txt").write_text("not a run")  # a non-empty OUTPUT is accepted with --resume ...
    with pytest.raises(SystemExit, match=r"nothing to resume: .* holds no cross-validation \(cv.json is missing\)"):
        unbc_cv.main(["--data-dir", str(unbc_dir), "--output", str(out), "--folds", "0", "--preset", "tiny", "--resume"])
    with pytest.raises(SystemExit, match="nothing to resume"):  # ... but it must hold a CV
        mouse_actions.main(["--data-dir", str(mouse_dir), "--output", str(out), "--cv", "3", "--resume"])
    with pytest.raises(SystemExit, match="--resume continues an interrupted --cv run"):
        mouse_actions.main(["--data-dir", str(mouse_dir), "--output", str(out), "--resume"])
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # nothing written


def test_a_recorded_cv_resumes_only_with_the_settings_it_started_with(unbc_dir, tmp_path):
    workload = get_workload("pain")
    cfg = workload.make_config({**PRESETS["tiny"], "data_dir": str(unbc_dir), "epochs": 2})
    record = {"workload": "pain", "folds": [0, 1], "config": config_to_dict(cfg), "run_name": "unbc-cv-x", "storage_path": str(tmp_path / "rr")}
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(record))

    assert recorded_run(tmp_path, workload, cfg, [0, 1]) == ("unbc-cv-x", str(tmp_path / "rr"))
    cfg.epochs, cfg.lr = 3, 0.5
    with pytest.raises(CVError, match=r"started with other config \(config fields epochs, lr\)"):
        recorded_run(tmp_path, workload, cfg, [0, 1])
    with pytest.raises(CVError, match="started with other config, folds"):
        recorded_run(tmp_path, workload, cfg, [0, 2])
    cfg.epochs, cfg.lr = 2, PRESETS["tiny"]["lr"]
    with pytest.raises(CVError, match="other storage"):
        recorded_run(tmp_path, workload, cfg, [0, 1], storage_path=str(tmp_path / "elsewhere"))
