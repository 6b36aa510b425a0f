"""The ProbTalk3D reports: what the evaluation measured, drawn; the MP4 embedded playable.

``write_evaluation_report`` takes the evaluation stage's ``evaluation.json`` (as a dict) and
``report_data.npz`` arrays, so every number on the page is a number in ``metrics.json``:

- a table of the §4.5 metrics, the model against the mean-motion baseline;
- jaw opening over time against the audio envelope, truth and samples, per test sentence;
- per-emotion expression statistics (truth and generated) and the style control (only the
  emotion, then only the intensity, changed);
- sample diversity against temperature (and with ``sample=false``);
- a rendered MP4 of one test sentence, truth beside two samples, with its audio, written
  beside the report and embedded in it (base64), so the page plays it on its own.

``write_stage_report`` is the smaller page of a stage run alone (prior or predictor):
its validation / test metrics and reconstructed (or generated) jaw curves.
"""

from __future__ import annotations

import base64
import html
from pathlib import Path

import numpy as np

from affectlab.constants import probtalk3d as C
from affectlab.data.mead import unscale_motion
from affectlab.metrics.probtalk3d_eval import TEST_KEYS
from affectlab.report.html import Section, new_figure, write_report

__all__ = ["jaw_figure", "expression_figure", "style_figure", "temperature_figure", "video_html", "write_evaluation_report",
           "write_stage_report", "render_test_video"]  # fmt: skip

LABELS = {"mve": "MVE (m)", "lve": "LVE (m², squared max lip error)", "mee": "MEE (m²)", "ce": "CE (m²)",
          "fdd": "FDD (signed)", "diversity": "sample diversity (m)", "jaw_envelope_pearson": "jaw–envelope Pearson r"}  # fmt: skip
SHOWN_COEFFICIENTS = 24  # expression coefficients drawn in the per-emotion panels


def metrics_rows(evaluation: dict) -> list[dict]:
    """One row per §4.5 metric: model, baseline, and the model's change against the baseline."""
    rows = []
    for key in TEST_KEYS:
        model, base = evaluation["test"][key], evaluation["baseline_mean_motion"][key]
        change = f"{100 * (model - base) / abs(base):+.1f}%" if base and key not in ("fdd", "diversity", "jaw_envelope_pearson") else ""
        rows.append({"metric": LABELS[key], "model": f"{model:.4g}", "mean-motion baseline": f"{base:.4g}", "change": change})
    return rows


def jaw_figure(jaw_truth: np.ndarray, jaw_samples: np.ndarray, envelope: np.ndarray, title: str):
    """Jaw opening (radians) of the truth and samples over time, the audio envelope on a second axis."""
    fig = new_figure(figsize=(8.0, 2.8))
    ax = fig.add_subplot(1, 1, 1)
    t = np.arange(len(envelope)) / C.FPS
    ax.plot(t[: len(jaw_truth)], jaw_truth, color="black", lw=2, label="truth")
    for k, jaw in enumerate(jaw_samples):
        ax.plot(t[: len(jaw)], jaw, lw=1, alpha=0.8, label=f"sample {k + 1}")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("jaw opening (rad)")
    env_ax = ax.twinx()
    env_ax.fill_between(t, 0, envelope, color="tab:gray", alpha=0.25, label="audio envelope")
    env_ax.set_ylabel("audio RMS")
    ax.set_title(title)
    ax.legend(loc="upper left", fontsize=7, ncol=4)
    fig.tight_layout()
    return fig


def _heatmap(ax, rows: dict[str, list], title: str, vmax: float):
    names = list(rows)
    values = np.array([np.asarray(rows[n])[:SHOWN_COEFFICIENTS] for n in names])
    image = ax.imshow(values, cmap="RdBu_r", vmin=-vmax, vmax=vmax, aspect="auto")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("expression coefficient")
    ax.set_title(title, fontsize=9)
    return image


def expression_figure(stats: dict):
    """Mean expression coefficient per emotion over the test frames: truth and generated."""
    truth, generated = stats["truth"], stats["generated"]
    rows_t = {e: s["mean"] for e, s in truth.items()}
    rows_g = {e: s["mean"] for e, s in generated.items()}
    vmax = max(1e-6, max(np.abs(np.asarray(v)[:SHOWN_COEFFICIENTS]).max() for v in [*rows_t.values(), *rows_g.values()]))
    fig = new_figure(figsize=(10.0, 0.6 * len(rows_t) + 2.0))
    image = None
    for k, (rows, title) in enumerate(((rows_t, "truth"), (rows_g, "generated (first sample)"))):
        image = _heatmap(fig.add_subplot(1, 2, k + 1), rows, f"mean expression by emotion — {title}", vmax)
    fig.colorbar(image, ax=fig.axes, shrink=0.8)
    return fig


def style_figure(style: dict):
    """Generated mean expression with only the emotion changed (minus neutral, when trained),
    and with only the intensity changed."""
    emotion = dict(style["emotion"])
    if "neutral" in emotion:
        neutral = np.asarray(emotion["neutral"])
        emotion = {e: (np.asarray(v) - neutral).tolist() for e, v in emotion.items()}
    parts = [(emotion, "only the emotion changed" + (" (minus neutral)" if "neutral" in style["emotion"] else ""))]
    if style.get("intensity"):
        base = np.asarray(next(iter(style["intensity"].values())))
        parts.append(({k: (np.asarray(v) - base).tolist() for k, v in style["intensity"].items()},
                      f"only the intensity changed ({style['intensity_emotion']}, minus the lowest)"))  # fmt: skip
    vmax = max(1e-6, max(np.abs(np.asarray(v)[:SHOWN_COEFFICIENTS]).max() for rows, _ in parts for v in rows.values()))
    fig = new_figure(figsize=(10.0, 3.2))
    image = None
    for k, (rows, title) in enumerate(parts):
        image = _heatmap(fig.add_subplot(1, len(parts), k + 1), rows, title, vmax)
    fig.colorbar(image, ax=fig.axes, shrink=0.8)
    return fig


def temperature_figure(temperatures: dict, sample_false: float, model: str):
    fig = new_figure(figsize=(5.0, 3.2))
    ax = fig.add_subplot(1, 1, 1)
    ts = sorted(temperatures, key=float)
    ax.plot([float(t) for t in ts], [temperatures[t]["diversity"] for t in ts], "o-", label="sampled codes")
    ax.axhline(sample_false, color="gray", ls="--", label=f"sample=false ({sample_false:g})")
    ax.set_xlabel("temperature" + (" (does not act on the VAE: fact does)" if model == "vae" else ""))
    ax.set_ylabel("sample diversity (m)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def render_test_video(arrays: dict, out_path: Path, size: int = 256) -> Path | None:
    """The report's MP4: truth beside two samples, with the sentence's audio."""
    if "render_vertices" not in arrays:
        return None
    from affectlab.body.render import render_mesh_video

    v = arrays["render_vertices"]
    return render_mesh_video(list(v), arrays["faces"], C.FPS, out_path, audio=arrays["render_audio"],
                             sample_rate=C.AUDIO_SAMPLE_RATE, size=size, titles=["truth", "sample 1", "sample 2"])  # fmt: skip


def video_html(path: Path, caption: str) -> str:
    """A playable <video> with the MP4 inline (base64), and a link to the file beside the page."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return (f'<video controls width="768" src="data:video/mp4;base64,{data}"></video>'
            f'<p class="note">{html.escape(caption)} (file: <a href="{html.escape(Path(path).name)}">{html.escape(Path(path).name)}</a>)</p>')  # fmt: skip


def write_evaluation_report(path: Path, evaluation: dict, arrays: dict, title: str, notes: list[str] = ()) -> Path:
    """The evaluation page (see the module docstring); the MP4 goes beside it."""
    path = Path(path)
    sections = [Section("Test sentences: model against the mean-motion baseline", table=metrics_rows(evaluation),
                        html="".join(f'<p class="note">{html.escape(n)}</p>' for n in notes))]  # fmt: skip
    figures = []
    for k, name in enumerate(evaluation["report"]["sequences"]):
        figures.append(jaw_figure(arrays[f"jaw_truth_{k}"], arrays[f"jaw_samples_{k}"], arrays[f"envelope_{k}"], name))
    sections.append(Section("Jaw opening against the audio envelope (test sentences, truth and samples)", figures=figures))
    style = [style_figure(evaluation["style_control"])] if evaluation.get("style_control") else []
    sections.append(Section("Per-emotion expression statistics", figures=[expression_figure(evaluation["expression_stats"]), *style],
                            table=_magnitude_rows(evaluation["expression_stats"])))  # fmt: skip
    settings = evaluation.get("settings", {})
    sections.append(Section("Diversity against temperature", figures=[
        temperature_figure(evaluation["temperatures"], evaluation["sample_false"]["diversity"], settings.get("model", ""))]))
    video = render_test_video(arrays, path.with_name("test_sentence.mp4"))
    if video is not None:
        caption = f"{evaluation['report']['render']}: truth, then two samples at temperature {settings.get('temperature')}"
        sections.append(Section("Rendered test sentence", html=video_html(video, caption)))
    return write_report(path, title, sections)


def _magnitude_rows(stats: dict) -> list[dict]:
    return [{"emotion": e, "sequences": s["sequences"], "frames": s["frames"], "truth: mean ‖expression‖": f"{s['magnitude']:.3f}",
             "generated: mean ‖expression‖": f"{stats['generated'][e]['magnitude']:.3f}"} for e, s in stats["truth"].items()]  # fmt: skip


def write_stage_report(path: Path, stage: str, metrics: dict, predictions: dict | None, title: str) -> Path:
    """A stage run alone: its final metrics and, per test sequence shown, the jaw of the
    reconstruction (prior) or the ``sample=false`` generation (predictor) against the truth."""
    rows = [{"metric": k, "value": f"{v:.4g}" if isinstance(v, float) else str(v)} for k, v in sorted(metrics.items())]
    sections = [Section(f"Stage {stage}: final metrics", table=rows)]
    test = (predictions or {}).get("test")
    if test is not None and len(test.get("length", [])):
        figures = []
        for i in range(min(3, len(test["length"]))):
            t = int(test["length"][i])
            truth = unscale_motion(test["motion"][i, :t])[:, C.NUM_EXPRESSION]
            pred = unscale_motion(test["pred"][i, :t])[None, :, C.NUM_EXPRESSION]
            label = f"test sequence {i} (identity {C.SUBJECTS[int(test['identity'][i])]}, {C.EMOTIONS[int(test['emotion'][i])]})"
            figures.append(jaw_figure(truth, pred, test["envelope"][i, :t], label))
        sections.append(Section("Jaw opening against the audio envelope", figures=figures))
    return write_report(path, title, sections)
