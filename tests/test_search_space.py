"""Search-space files: the shipped ones load, and every kind of mistake is named with its line."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from affectlab.tune.space import SpaceError, load_space, parse_space
from affectlab.workloads import get_workload

ROOT = Path(__file__).resolve().parents[1]

GOOD = """\
workload: pain
fixed: {epochs: 2, backbone: tiny}
params:
  lr: {distribution: loguniform, low: 1e-5, high: 1e-2}
  w_au: {distribution: uniform, low: 0.0, high: 1.0}
  lora_r: {distribution: int, low: 4, high: 16}
  finetune: {distribution: choice, values: [lora, full]}
"""


@pytest.mark.parametrize("path", sorted((ROOT / "search_spaces").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_spaces_are_valid(path):
    space = load_space(path, get_workload)
    assert space.params and space.metric.startswith("val_") and space.mode in ("min", "max")


def test_a_good_space_becomes_a_tune_param_space():
    space = parse_space(GOOD, get_workload, "good.yaml", workload="pain")
    # No metric given: the workload's own selection metric and direction.
    assert (space.metric, space.mode) == ("val_pearson", "max")
    assert space.fixed == {"epochs": 2, "backbone": "tiny"}
    assert space.params["lr"].low == 1e-5  # YAML 1.1 reads `1e-5` as a string; it is a number here
    domains = space.param_space()
    assert domains["lr"].lower == 1e-5 and domains["lr"].upper == 1e-2
    assert (domains["lora_r"].lower, domains["lora_r"].upper) == (4, 17)  # both YAML bounds included
    assert domains["finetune"].categories == ["lora", "full"]


def test_a_metric_other_than_the_default_needs_its_direction():
    space = parse_space(GOOD + "metric: val_mae\nmode: min\n", get_workload, "x.yaml")
    assert (space.metric, space.mode) == ("val_mae", "min")


def _error(text: str) -> str:
    with pytest.raises(SpaceError) as e:
        parse_space(text, get_workload, "x.yaml", workload="pain")
    return str(e.value)


def _replace(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new)


@pytest.mark.parametrize(
    "text, expected",
    [
        # an unknown hyper-parameter name
        (_replace("  w_au:", "  w_auu:"), "x.yaml:5: params.w_auu: unknown hyper-parameter"),
        # a bad distribution
        (_replace("distribution: uniform", "distribution: gaussian"), "x.yaml:5: params.w_au.distribution: expected one of"),
        # bounds in the wrong order
        (_replace("low: 1e-5, high: 1e-2", "low: 0.1, high: 0.01"), "x.yaml:4: params.lr: low (0.1) must be below high (0.01)"),
        (_replace("low: 4, high: 16", "low: 16, high: 16"), "x.yaml:6: params.lora_r: low (16) must be below high (16)"),
        # loguniform needs positive bounds
        (_replace("low: 1e-5", "low: 0"), "x.yaml:4: params.lr.low: a loguniform distribution needs low > 0"),
        # an empty choice, a missing bound, a misspelled key, a non-number
        (_replace("values: [lora, full]", "values: []"), "x.yaml:7: params.finetune.values: expected a non-empty list"),
        (_replace("low: 0.0, high: 1.0", "low: 0.0"), "x.yaml:5: params.w_au: a uniform distribution needs 'high'"),
        (_replace("high: 1.0}", "hi: 1.0}"), "x.yaml:5: params.w_au.hi: unknown key for a uniform distribution"),
        (_replace("high: 1.0}", "high: one}"), "x.yaml:5: params.w_au.high: expected a finite number, got 'one'"),
        (_replace("low: 4, high: 16", "low: 4.5, high: 16"), "params.lora_r.low: an int distribution needs whole-number bounds"),
        # values the config itself rejects, or of the wrong kind
        (_replace("[lora, full]", "[lora, fully]"), "params.finetune: value 'fully' rejected by PainConfig"),
        (_replace("  lora_r: {distribution: int", "  lora_r: {distribution: uniform"), "params.lora_r: lora_r is an integer setting: use distribution 'int'"),
        (_replace("epochs: 2,", "epochs: two,"), "x.yaml:2: fixed.epochs: expected a int (like the default 50), got 'two'"),
        # fixed: unknown names, cluster settings, and clashes with params
        (_replace("backbone: tiny}", "backbone: tiny, bakbone: x}"), "x.yaml:2: fixed.bakbone: unknown setting"),
        (_replace("backbone: tiny}", "backbone: tiny, use_gpu: true}"), "fixed.use_gpu: is a data/cluster setting"),
        (_replace("epochs: 2,", "lr: 0.1,"), "x.yaml:4: params.lr: is both fixed and searched"),
        # the file as a whole
        ("workload: pain\nparms: {}\n", "x.yaml:2: parms: unknown key; expected one of"),
        ("workload: pain\n", "params: no hyper-parameters to search"),
        (GOOD + "  lr: {distribution: uniform, low: 0, high: 1}\n", "x.yaml:8: params.lr: duplicate key (first at line 4)"),
        (GOOD + "metric: test_pearson\nmode: max\n", "x.yaml:8: metric: must be an inner-validation metric"),
        (GOOD + "metric: val_mae\n", "x.yaml:8: metric: say whether val_mae is better high or low"),
        (GOOD + "mode: maximum\n", "x.yaml:8: mode: expected 'min' or 'max'"),
        ("params: [lr]\n", "x.yaml:1: params: expected a mapping"),
        ("", "x.yaml: the search-space file is empty"),
        ("params: {lr: [\n", "x.yaml: not valid YAML"),
    ],
)
def test_bad_spaces_are_rejected_with_the_key_at_fault(text, expected):
    assert expected in _error(text)


def test_the_space_must_be_for_the_swept_workload(tmp_path):
    path = tmp_path / "s.yaml"
    path.write_text(GOOD)
    assert load_space(path, get_workload, "pain").workload == "pain"
    with pytest.raises(SpaceError, match="s.yaml:1: workload: the file is for workload 'pain', but the sweep is for 'mouse'"):
        load_space(path, get_workload, "mouse")
    with pytest.raises(SpaceError, match="x.yaml:1: workload: unknown workload 'pain_v9'"):
        parse_space(GOOD.replace("workload: pain", "workload: pain_v9"), get_workload, "x.yaml")
    with pytest.raises(SpaceError, match="cannot read"):
        load_space(tmp_path / "missing.yaml", get_workload)


def test_the_job_rejects_a_bad_space_before_anything_runs(tmp_path):
    space = tmp_path / "bad.yaml"
    space.write_text(_replace("low: 1e-5, high: 1e-2", "low: 0.1, high: 0.01"))
    output = tmp_path / "out"
    cmd = [sys.executable, str(ROOT / "jobs" / "sweep.py"), "--workload", "pain", "--space", str(space), "--synthetic", "--output", str(output)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0
    assert f"{space}:4: params.lr: low (0.1) must be below high (0.01)" in done.stderr
    assert not output.exists()  # no data written, no Ray started


def test_the_yaml_used_here_is_plain_yaml():
    assert yaml.safe_load(GOOD)["params"]["finetune"]["values"] == ["lora", "full"]
