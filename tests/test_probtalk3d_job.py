"""``jobs/probtalk3d.py`` end to end on the synthetic 3DMEAD: one shared run of all three
stages (prior → predictor over the frozen prior → §4.5 evaluation, each a Ray Train run fed
by Ray Data), checked against the issue's bars, plus the VAE variant run stage by stage from
checkpoint paths."""

import base64
import copy
import json
import re
import subprocess

import imageio_ffmpeg
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import probtalk3d

from affectlab.constants import probtalk3d as C
from affectlab.data import mead
from affectlab.data.audio import read_wav
from affectlab.data.synthetic_mead import emotion_pattern, emotion_signature
from affectlab.metrics.probtalk3d_eval import TEST_KEYS
from affectlab.metrics.talking_heads import sample_diversity
from affectlab.models.probtalk3d_generate import generate_samples, model_input, style_indices
from affectlab.models.probtalk3d_prior import build_prior
from affectlab.train.checkpoint import read_checkpoint
from affectlab.workloads.probtalk3d import GENERATION_FILE, load_predictor

# The synthetic defaults with the small dataset (84 sequences), 20 + 10 epochs of batch 4
# and 4 samples a sentence: the bars must hold at this size too.
JOB_ARGS = ["--synthetic", "--synthetic-size", "small", "--prior-epochs", "20", "--pred-epochs", "10", "--batch-size", "4",
            "--n-samples", "4", "--wandb", "off"]  # fmt: skip


@pytest.fixture(scope="module")
def run(ray_cluster, tmp_path_factory):
    """(OUT, metrics.json) of ``python jobs/probtalk3d.py --synthetic ... --output OUT``."""
    out = tmp_path_factory.mktemp("probtalk3d") / "out"
    return out, json.loads(probtalk3d.main([*JOB_ARGS, "--output", str(out)]).read_text())


@pytest.fixture(scope="module")
def test_sentences(run):
    """The stage-2 test sequences (seen identities, unseen sentences) of the run's data."""
    out, _ = run
    layout = mead.discover_mead(out / "data")
    rows = mead.split_sequences(layout.sequences, C.SEEN_IDENTITIES_UNSEEN_SENTENCES, "test")
    return [(s, mead.read_sequence(layout.param_path(s.name), layout.wav_path(s.name))) for s in rows]


@pytest.fixture(scope="module")
def predictor(run):
    model, config, _ = load_predictor(run[0] / "pred")
    return model, config


def test_metrics_json_has_the_interface_keys(run):
    out, metrics = run
    for part in ("test", "baseline_mean_motion"):
        assert set(metrics[part]) == set(TEST_KEYS) == {"mve", "lve", "mee", "ce", "fdd", "diversity", "jaw_envelope_pearson"}
        assert all(isinstance(v, float) and np.isfinite(v) for v in metrics[part].values()), metrics[part]
    assert set(metrics["temperatures"]) == {"0.1", "0.2", "0.5"}
    assert all(set(v) == {"diversity"} for v in metrics["temperatures"].values())
    for stage in ("prior", "pred"):
        assert (out / stage / "model.safetensors").is_file() and (out / stage / "config.json").is_file()
    assert metrics["n_test_sequences"] == 14
    assert (out / "report.html").is_file() and (out / "eval" / "evaluation.json").is_file()


def test_stage2_beats_the_mean_motion_baseline_on_held_out_sentences(run):
    _, metrics = run
    test, base = metrics["test"], metrics["baseline_mean_motion"]
    assert test["lve"] <= 0.7 * base["lve"], (test["lve"], base["lve"])  # at least 30% lower
    assert test["jaw_envelope_pearson"] >= 0.6, test["jaw_envelope_pearson"]
    assert test["mve"] < base["mve"]
    assert base["diversity"] == 0.0  # one deterministic motion


def test_diversity_grows_with_temperature_and_is_zero_without_sampling(run):
    _, metrics = run
    t = {k: v["diversity"] for k, v in metrics["temperatures"].items()}
    assert t["0.2"] > 0 and t["0.5"] > t["0.1"], t
    assert metrics["test"]["diversity"] == t["0.2"]  # the reported samples are drawn at 0.2
    assert metrics["sample_false"]["diversity"] == 0.0


def test_same_seed_is_bit_identical_and_argmin_has_no_diversity(run, predictor, test_sentences):
    model, _ = predictor
    again, _, _ = load_predictor(run[0] / "pred")  # a second, independent load of the checkpoint
    seq, data = test_sentences[0]
    style = (seq.identity, seq.emotion, seq.intensity)
    first = generate_samples(model, data["audio"], style, n_samples=3, temperature=0.5, seed=7)
    assert first.shape == (3, seq.n_frames, 53) and first.dtype == np.float32
    assert np.array_equal(first, generate_samples(again, data["audio"], style, n_samples=3, temperature=0.5, seed=7))
    assert not np.array_equal(first, generate_samples(model, data["audio"], style, n_samples=3, temperature=0.5, seed=8))
    argmin = generate_samples(model, data["audio"], style, n_samples=4, sample=False, seed=7)
    assert sample_diversity([argmin[..., None]]) == 0.0 and np.array_equal(argmin[0], argmin[3])
    with pytest.raises(ValueError, match="temperature"):
        generate_samples(model, data["audio"], style, temperature=0.0)


def test_the_frozen_prior_in_the_predictor_checkpoint_equals_stage_1(run):
    out, _ = run
    prior, pred = load_file(str(out / "prior" / "model.safetensors")), load_file(str(out / "pred" / "model.safetensors"))
    assert prior and all(torch.equal(prior[k], pred[f"prior.{k}"]) for k in prior)
    assert len([k for k in pred if k.startswith("prior.")]) == len(prior)


def test_the_predictor_checkpoint_holds_what_a_server_needs(run, predictor):
    out, _ = run
    model, config = predictor
    assert config["stage"] == "pred" and config["prior_checkpoint"] == str(out / "prior")
    assert config["identities"] == ["M003", "M005"] and config["emotions"] == ["neutral", "happy", "angry"]
    assert config["audio"] == "logmel" and "random init" in config["audio_source"]
    info = json.loads((out / "pred" / GENERATION_FILE).read_text())
    assert (info["fps"], info["sample_rate"], info["motion_dim"], info["param_dim"]) == (25, 16000, 53, 403)
    assert info["scaler"]["expression_range"] == [-3.0, 3.0] and info["scaler"]["jaw_range"] == [-0.1, 0.5]
    assert info["prior"]["width"] == 64 and info["style"]["identities"] == config["identities"]
    assert info["flame_dir"] == "flame" and (out / "pred" / "flame" / "FLAME_NEUTRAL.npz").is_file()
    state, _, _ = read_checkpoint(out / "pred")  # safetensors + JSON only, rebuilt from config.json alone
    assert set(state) == set(model.state_dict())
    assert style_indices("M005", "angry", "level_3") == (1, 6, 2)


def test_report_embeds_the_rendered_mp4_with_audio(run, tmp_path):
    out, _ = run
    page = (out / "report.html").read_text()
    for title in ("Jaw opening against the audio envelope", "Per-emotion expression statistics", "Diversity against temperature"):
        assert title in page
    match = re.search(r'<video controls[^>]*src="data:video/mp4;base64,([^"]+)"', page)
    assert match, "no playable MP4 in the report"
    video = tmp_path / "embedded.mp4"
    video.write_bytes(base64.b64decode(match.group(1)))
    assert video.read_bytes() == (out / "test_sentence.mp4").read_bytes()
    with np.load(out / "eval" / "report_data.npz") as f:
        n_frames = f["render_vertices"].shape[1]
    frames, seconds = imageio_ffmpeg.count_frames_and_secs(str(video))
    assert frames == n_frames and seconds == pytest.approx(n_frames / 25, abs=0.1)
    probe = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-i", str(video)], capture_output=True, text=True).stderr
    assert "Video: h264" in probe and "Audio: aac" in probe


def test_the_prior_is_blind_to_sentence_constant_offsets(run, test_sentences):
    """Why the synthetic data plants emotion in the dynamics: the prior's conv blocks
    InstanceNorm every hidden channel over time (§4.1, encoder and decoder as in the
    original), so a constant added to a whole sentence (here the happy level-3 pattern, held
    still) leaves its reconstruction unchanged."""
    out, _ = run
    state, config, _ = read_checkpoint(out / "prior")
    prior = build_prior("vqvae", "tiny", n_codes=config["config"]["n_codes"], tokens_per_frame=config["config"]["tokens_per_frame"])
    prior.load_state_dict(state)
    prior.eval()
    seq, data = next((s, d) for s, d in test_sentences if s.emotion == C.NEUTRAL)
    planted = np.r_[emotion_pattern(C.EMOTIONS.index("happy"), 2), np.zeros(3)]
    scaled_offset = mead.scale_motion(planted) - mead.scale_motion(np.zeros(53))
    motion = torch.from_numpy(data["motion"])[None]
    with torch.no_grad():
        plain = prior(motion)
        shifted = prior(motion + torch.from_numpy(scaled_offset))
    moved = mead.unscale_motion(shifted["motion"][0].numpy()).mean(0) - mead.unscale_motion(plain["motion"][0].numpy()).mean(0)
    direction = planted / np.linalg.norm(planted)
    assert abs(moved @ direction) < 0.1 * np.linalg.norm(planted)  # < 10% of the offset comes through
    assert (plain["codes"] == shifted["codes"]).float().mean() > 0.9


HAPPY = C.EMOTIONS.index("happy")
STYLES = {"neutral": (C.NEUTRAL, 0), "happy level_1": (HAPPY, 0), "happy level_3": (HAPPY, 2)}
# only the emotion changed (neutral -> happy at the top intensity), only the intensity changed (happy level_1 -> level_3)
CHANGES = {"emotion": ("neutral", "happy level_3"), "intensity": ("happy level_1", "happy level_3")}


def style_shifts(signatures: dict[str, list[np.ndarray]]) -> dict[str, dict[str, float]]:
    """Per change, the mean change of ``emotion_signature`` over sentences, split into its
    component along the planted change of ``emotion_pattern`` and the norm of the rest, their
    cosine, and the t-statistic of the per-sentence components along (the change paired by
    sentence: each sentence's ``after`` against its ``before``)."""
    out = {}
    for change, (before, after) in CHANGES.items():
        planted = emotion_pattern(*STYLES[after]) - emotion_pattern(*STYLES[before])
        direction = planted / np.linalg.norm(planted)
        shifts = np.subtract(signatures[after], signatures[before])  # [sentences, coefficients]
        mean = shifts.mean(0)
        along = float(mean @ direction)
        across = float(np.linalg.norm(mean - along * direction))
        spread = (shifts @ direction).std(ddof=1) / np.sqrt(len(shifts))
        t = along / spread if spread > 0 else (0.0 if along == 0 else np.copysign(np.inf, along))
        out[change] = {"along": along, "across": across, "cosine": along / max(np.hypot(along, across), 1e-12), "t": float(t)}
    return out


def generated_signatures(models: dict, sentences) -> dict[str, dict[str, list[np.ndarray]]]:
    """Per model, ``emotion_signature`` of the ``sample=False`` generation of each sentence's
    audio and identity under each of ``STYLES`` (nothing else changed; one batch a sentence)."""
    out = {name: {style: [] for style in STYLES} for name in models}
    for seq, data in sentences:
        x = None
        for name, model in models.items():
            x = model_input(model, data["audio"]) if x is None else x  # the features generate_samples uses
            styles = torch.tensor([[seq.identity, e, i] for e, i in STYLES.values()])
            motion, _ = model.generate(x.expand(len(STYLES), -1, -1), styles, sample=False)
            for style, m in zip(STYLES, motion.numpy()):
                out[name][style].append(emotion_signature(mead.unscale_motion(m)[:, : C.NUM_EXPRESSION], data["audio"]))
    return out


def moves_as_planted(shifts: dict) -> bool:
    """The check, for both changes: the generated signature moves along the planted change
    consistently over the sentences (t >= 3: a paired one-sided test at about p < 0.005 with
    14 sentences) and in its direction (cosine >= 0.5 over 50 coefficients, where an unrelated
    change has |cosine| about 0.14)."""
    return all(s["t"] >= 3 and s["cosine"] >= 0.5 for s in shifts.values())


def with_style_tables(model, change):
    """A copy of ``model`` with its emotion and intensity embeddings changed by ``change``."""
    model = copy.deepcopy(model)
    with torch.no_grad():
        change(model.style[1].weight, model.style[2].weight)
    return model


def zeroed(emotion, intensity):  # style-blind: the output no longer depends on emotion or intensity
    emotion.zero_()
    intensity.zero_()


def scrambled(emotion, intensity):  # style-shuffled: happy takes angry's row, level_1 and level_3 swap
    happy, angry = emotion[HAPPY].clone(), emotion[C.EMOTIONS.index("angry")].clone()
    emotion[HAPPY], emotion[C.EMOTIONS.index("angry")] = angry, happy
    intensity[[0, 2]] = intensity[[2, 0]].clone()


def test_style_control_moves_expression_in_the_planted_direction(predictor, test_sentences):
    """Only the emotion, then only the intensity, changed on each held-out sentence's audio
    and identity: the generated expression's speech-locked signature moves along the planted
    change, by a part of what the truth shows and more than across it. The same check fails
    for the same model made style-blind (emotion and intensity embeddings zeroed) or with its
    style rows shuffled."""
    model, _ = predictor
    truth = {name: [] for name in STYLES}
    for seq, data in test_sentences:  # the truth: the test sentences spoken in each style
        for name, style in STYLES.items():
            if (seq.emotion, seq.intensity) == style:
                truth[name].append(emotion_signature(mead.unscale_motion(data["motion"])[:, : C.NUM_EXPRESSION], data["audio"]))
    truth_shifts = style_shifts(truth)
    for change, s in truth_shifts.items():  # the truth moves as planted
        planted = emotion_pattern(*STYLES[CHANGES[change][1]]) - emotion_pattern(*STYLES[CHANGES[change][0]])
        assert s["along"] == pytest.approx(np.linalg.norm(planted), rel=0.05) and s["across"] < 0.1 * s["along"], (change, s)

    models = {"model": model, "style zeroed": with_style_tables(model, zeroed), "style shuffled": with_style_tables(model, scrambled)}
    shifts = {name: style_shifts(signatures) for name, signatures in generated_signatures(models, test_sentences).items()}
    for name, result in {"truth": truth_shifts, **shifts}.items():
        print(f"style control, {name}: " + "; ".join(f"{c} " + " ".join(f"{k} {v:.3f}" for k, v in s.items()) for c, s in result.items()))
    assert moves_as_planted(shifts["model"]), shifts["model"]
    for change, s in shifts["model"].items():  # a real part of what the truth shows
        assert s["along"] >= 0.02 * truth_shifts[change]["along"], (change, s)
    assert all(s["along"] == pytest.approx(0.0, abs=1e-6) for s in shifts["style zeroed"].values())  # the same motion
    assert not moves_as_planted(shifts["style zeroed"])
    assert not moves_as_planted(shifts["style shuffled"]), shifts["style shuffled"]


# ------------------------------------------------------------------ single stages, the VAE variant


def test_a_stage_needs_its_input_checkpoint(run, tmp_path):
    out, _ = run
    with pytest.raises(SystemExit, match="needs --prior-checkpoint"):
        probtalk3d.main(["--synthetic", "--stage", "pred", "--output", str(tmp_path / "a")])
    with pytest.raises(SystemExit, match="expected a probtalk3d 'pred' one"):
        probtalk3d.main(["--synthetic", "--stage", "eval", "--pred-checkpoint", str(out / "prior"), "--output", str(tmp_path / "b")])
    with pytest.raises(SystemExit, match="is a vqvae prior"):
        probtalk3d.main(["--synthetic", "--stage", "pred", "--model", "vae", "--prior-checkpoint", str(out / "prior"),
                         "--output", str(tmp_path / "c")])  # fmt: skip
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before anything is written


def test_the_vae_variant_trains_stage_by_stage_from_relative_checkpoint_paths(ray_cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # checkpoint paths are given relative to the working directory
    small = ["--synthetic", "--synthetic-size", "small", "--wandb", "off", "--model", "vae"]
    probtalk3d.main([*small, "--stage", "prior", "--prior-epochs", "2", "--output", "vae_prior"])
    metrics = json.loads(probtalk3d.main([*small, "--stage", "pred", "--prior-checkpoint", "vae_prior/prior", "--pred-epochs", "2",
                                          "--output", "vae_pred"]).read_text())  # fmt: skip
    assert metrics["checkpoints"]["prior"] == str(tmp_path / "vae_prior" / "prior")
    assert np.isfinite(metrics["stages"]["pred"]["test_l2_plus_var"])
    assert (tmp_path / "vae_pred" / "report.html").is_file()
    model, config, _ = load_predictor(tmp_path / "vae_pred" / "pred")
    assert model.kind == "vae" and config["model"] == "vae"
    audio = read_wav(tmp_path / "vae_pred" / "data" / C.WAV_DIR / "M003_037_0_0.wav")
    style = style_indices("M003", "neutral", 0)

    def spread(fact: float) -> float:
        samples = generate_samples(model, audio, style, n_samples=4, fact=fact, seed=3)
        return sample_diversity([samples[..., None]])

    assert spread(20.0) > spread(1.0) > 0
    mean = generate_samples(model, audio, style, n_samples=2, sample=False)
    assert np.array_equal(mean[0], mean[1]) and np.array_equal(generate_samples(model, audio, style, n_samples=2, fact=20.0, seed=3),
                                                                 generate_samples(model, audio, style, n_samples=2, fact=20.0, seed=3))  # fmt: skip
