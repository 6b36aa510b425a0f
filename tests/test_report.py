"""HTML report writer and the pain CV report, on small synthetic arrays."""

import base64
import re

import numpy as np
import pytest

from affectlab.metrics.pain import fold_metrics, summarize_folds
from affectlab.report.html import Section, figure_to_data_uri, new_figure, write_report
from affectlab.report.pain import write_cv_report

ROW = re.compile(r"<tr>(.*?)</tr>")
CELL = re.compile(r"<td>(.*?)</td>")


def _rows(text):
    """Data rows of every table in the page, as lists of cell strings."""
    return [CELL.findall(r) for r in ROW.findall(text) if "<td>" in r]


def _synthetic_cv(n_folds=3, n=40, seed=0):
    """Noisy predictions of integer PSPI; the last fold never reaches PSPI 3."""
    rng = np.random.default_rng(seed)
    folds, predictions = [], []
    for k in range(n_folds):
        top = 3 if k == n_folds - 1 else 6  # targets 0..2 in the last fold
        test_target = rng.integers(0, top, size=n).astype(float)
        test_pred = test_target + rng.normal(0, 0.8, size=n)
        train_target = rng.integers(0, 6, size=2 * n).astype(float)
        train_pred = train_target + rng.normal(0, 0.8, size=2 * n)
        folds.append({"fold": k, **fold_metrics(test_pred, test_target, train_pred, train_target)})
        predictions.append({"test_pred": test_pred, "test_target": test_target})
    return folds, summarize_folds(folds), predictions


def test_figure_to_data_uri_is_png_and_closes_pyplot_figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure()
    fig.gca().plot([0, 1], [1, 0])
    uri = figure_to_data_uri(fig)
    assert uri.startswith("data:image/png;base64,")
    assert base64.b64decode(uri.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert fig.number not in plt.get_fignums()


def test_write_report_escapes_and_embeds(tmp_path):
    import pandas as pd

    fig = new_figure()
    fig.gca().plot([0, 1], [0, 1])
    sections = [
        Section("Rows & <cols>", table=[{"name": "<script>", "value": 0.123456}]),
        Section("Frame", table=pd.DataFrame({"a": [1, 2], "b": ["x", "y"]}), figures=[fig]),
        Section("Raw", html="<p>kept as is</p>"),
    ]
    title = 'Pain <b>"CV"</b> & friends'
    path = write_report(tmp_path / "sub" / "report.html", title, sections)
    text = path.read_text(encoding="utf-8")
    assert path.exists() and path.name == "report.html"
    assert not (tmp_path / "sub" / "report.html.tmp").exists()
    assert "<title>Pain &lt;b&gt;&quot;CV&quot;&lt;/b&gt; &amp; friends</title>" in text
    assert "<h1>Pain &lt;b&gt;&quot;CV&quot;&lt;/b&gt; &amp; friends</h1>" in text
    assert "<b>" not in text
    assert "<h2>Rows &amp; &lt;cols&gt;</h2>" in text
    assert "<script>" not in text
    # floats get 4 significant digits; DataFrame rows come out in order
    assert _rows(text) == [["&lt;script&gt;", "0.1235"], ["1", "x"], ["2", "y"]]
    assert text.count("<img") == 1
    assert "<p>kept as is</p>" in text


def test_cv_report(tmp_path):
    folds, summary, predictions = _synthetic_cv()
    path = write_cv_report(tmp_path / "report.html", folds, summary, predictions)
    text = path.read_text(encoding="utf-8")

    # two figures: the scatter small multiples and the three-panel ROC figure
    assert text.count("<img") == 2
    assert text.count('src="data:image/png;base64,') == 2

    rows = _rows(text)
    assert len(rows) == len(folds) + 1
    for k, (fold, row) in enumerate(zip(folds, rows)):
        auc, f1 = fold["auroc"], fold["f1_train_calibrated"]
        expected = [str(k), f"{fold['mae']:.3f}", f"{fold['pearson']:.3f}"]
        expected += [f"{auc[t]:.3f}" for t in "123"]
        expected += [f"{f1[t]:.3f}" for t in ("1", "2", "3", "macro")]
        assert row == expected
    mae = summary["mae"]
    assert rows[-1][0] == "mean ± ci95"
    assert rows[-1][1] == f"{mae['mean']:.3f} ± {mae['ci95']:.3f}"
    assert len(rows[-1]) == 10

    # the last fold has no PSPI >= 3 frame: its AUROC@3 is 0.0 and its curve is skipped
    assert rows[2][5] == "0.000"
    assert "fold 2 at PSPI ≥ 3" in text


def test_cv_report_rejects_mismatched_inputs(tmp_path):
    folds, summary, predictions = _synthetic_cv()
    with pytest.raises(ValueError, match="prediction"):
        write_cv_report(tmp_path / "r.html", folds, summary, predictions[:-1])
