"""The pain jobs' command lines: every option explained, missing inputs fail fast."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JOBS = ["unbc_cv.py", "pain3d_pretrain.py", "unbc_production.py"]


def run(job, *args):
    return subprocess.run([sys.executable, str(ROOT / "jobs" / job), *args], capture_output=True, text=True, timeout=120)


def run_main(job, *args, capsys) -> tuple[int, str, str]:
    """``python jobs/JOB ARGS`` for arguments argparse settles itself: in this interpreter,
    so the suite does not pay an import of torch and Ray per call."""
    import importlib

    with pytest.raises(SystemExit) as exit_info:
        importlib.import_module(job[:-3]).main(list(args))
    out = capsys.readouterr()
    return exit_info.value.code, out.out, out.err


@pytest.mark.parametrize("job", JOBS)
def test_help_explains_every_option(job, capsys):
    import importlib

    import _pain_args

    module = importlib.import_module(job[:-3])
    code, stdout, _ = run_main(job, "--help", capsys=capsys)
    assert code == 0
    parser = _pain_args.parser("x", "y")
    for action in parser._actions:
        if action.option_strings and action.dest != "help":
            assert action.help, f"{action.option_strings} has no help text"
            assert action.option_strings[-1] in stdout
    assert " ".join(module.__doc__.split("\n")[0].split()) in " ".join(stdout.split())


@pytest.mark.parametrize("job", JOBS)
def test_missing_inputs_say_what_to_pass(job, tmp_path, capsys):
    code, _, stderr = run_main(job, "--output", str(tmp_path), capsys=capsys)
    assert code == 2
    assert "one of the arguments --data-dir --synthetic is required" in stderr
    code, _, stderr = run_main(job, "--synthetic", capsys=capsys)
    assert code == 2 and "--output" in stderr


def test_a_missing_data_directory_fails_before_ray_starts(tmp_path):
    proc = run("unbc_cv.py", "--data-dir", str(tmp_path / "nope"), "--output", str(tmp_path / "out"))
    assert proc.returncode != 0
    assert f"UNBC data directory {tmp_path / 'nope'} does not exist" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr


def test_an_unknown_fold_fails_before_ray_starts(unbc_dir, tmp_path):
    proc = run("unbc_cv.py", "--data-dir", str(unbc_dir), "--output", str(tmp_path), "--folds", "0,9")
    assert proc.returncode != 0 and "fold 9 does not exist; this dataset has 5 folds" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr


def test_a_paper_scale_space_on_synthetic_data_is_refused_before_ray_starts(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "sweep.py"), "--workload", "pain", "--space", str(ROOT / "search_spaces" / "vitpain.yaml"),
         "--synthetic", "--num-samples", "4", "--output", str(tmp_path / "sweep")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "backbone=large" in proc.stderr and "search_spaces/vitpain_tiny.yaml" in proc.stderr and "--allow-paper-scale" in proc.stderr
    assert "Started a local Ray instance" not in proc.stderr
    assert not (tmp_path / "sweep" / "data").exists()  # nothing written either


def test_the_sweep_job_reads_set_values_and_checks_the_data_before_ray_starts(tmp_path):
    proc = subprocess.run(
        [sys.executable, str(ROOT / "jobs" / "sweep.py"), "--workload", "pain", "--space", str(ROOT / "search_spaces" / "vitpain_tiny.yaml"),
         "--data-dir", str(tmp_path / "nope"), "--set", "seed=3", "--output", str(tmp_path / "sweep")],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode != 0 and f"UNBC data directory {tmp_path / 'nope'} does not exist" in proc.stderr
    assert "UnboundLocalError" not in proc.stderr and "Started a local Ray instance" not in proc.stderr
