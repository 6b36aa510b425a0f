"""affectlab.data.mead and synthetic_mead: names, fixed-range scaling, layout checks, named splits,
the planted signal, side files, and one read through a real Ray Dataset with the sequence collate."""

import itertools
import shutil

import numpy as np
import pytest
import torch

from affectlab.constants import probtalk3d as C
from affectlab.data import mead
from affectlab.data.audio import audio_envelope
from affectlab.data.sequences import SequenceCollate
from affectlab.data.synthetic_mead import JAW_LAG_FRAMES, emotion_pattern, emotion_signature, write_synthetic_mead


@pytest.fixture(scope="module")
def mead_dir(tmp_path_factory):
    """The small synthetic 3DMEAD: 4 identities x (3 neutral + 2 emotions x 3 levels x 3) sentences = 84 sequences."""
    return write_synthetic_mead(tmp_path_factory.mktemp("mead"), seed=0)


@pytest.fixture(scope="module")
def layout(mead_dir):
    return mead.discover_mead(mead_dir)


def test_names_parse_into_subject_sentence_emotion_intensity():
    s = mead.parse_name("M003_001_0_0")
    assert (s.subject, s.sentence, s.emotion, s.intensity, s.identity) == ("M003", 1, 0, 0, 0)
    s = mead.parse_name("W040_030_7_2")
    assert (s.subject, s.sentence, C.EMOTIONS[s.emotion], C.INTENSITIES[s.intensity]) == ("W040", 30, "contempt", "level_3")
    assert s.identity == 46 and mead.parse_name("M032_005_1_1").identity == 32  # past the 32 style slots
    bad_names = {
        "M003_001_0_1": "neutral sequences have intensity 0", "M003_001_8_0": "emotion 8",
        "M999_001_1_0": "not one of the 47", "M003_01_1_0": "not of the form", "M003_000_1_0": "start at 001",
    }  # fmt: skip
    for bad, why in bad_names.items():
        with pytest.raises(mead.MeadDataError, match=why):
            mead.parse_name(bad)


def test_scaling_uses_the_fixed_ranges():
    params = np.zeros((1, 2, 403), np.float32)
    params[0, 0, 300:303] = [1.5, -3.0, 4.5]  # expression: x / 6 + 0.5, not clipped
    params[0, 0, 349] = 3.0
    params[0, 0, 350:400] = 9.0  # expression beyond the first 50: ignored
    params[0, 0, 0:300] = 7.0  # shape: ignored
    params[0, 0, 400:403] = [0.2, -0.1, 0.5]  # jaw: (x + 0.1) / 0.6
    motion = mead.motion_from_params(params)
    assert motion.shape == (1, 2, 53) and motion.dtype == np.float32
    np.testing.assert_allclose(motion[0, 0, [0, 1, 2, 49]], [0.75, 0.0, 1.25, 1.0], atol=1e-7)
    np.testing.assert_allclose(motion[0, 0, 50:], [0.5, 0.0, 1.0], atol=1e-7)
    np.testing.assert_allclose(motion[0, 1], [0.5] * 50 + [1 / 6] * 3, atol=1e-7)  # zeros


def test_inverse_scaling_gives_the_generated_output_layout():
    rng = np.random.default_rng(0)
    params = rng.uniform(-2, 2, (3, 7, 403)).astype(np.float32)  # K=3 samples x T=7 frames
    params[..., 400:403] = rng.uniform(-0.1, 0.5, (3, 7, 3))
    back = mead.params_from_motion(mead.motion_from_params(params))
    assert back.shape == (3, 7, 403) and back.dtype == np.float32
    np.testing.assert_allclose(back[..., 300:350], params[..., 300:350], rtol=0, atol=1e-6)
    np.testing.assert_allclose(back[..., 400:403], params[..., 400:403], rtol=0, atol=1e-7)
    assert not back[..., :300].any() and not back[..., 350:400].any()  # zero shape, 50 zero expression coefficients
    np.testing.assert_allclose(mead.unscale_motion(mead.scale_motion(params[..., 300:353])), params[..., 300:353], atol=1e-6)
    with pytest.raises(mead.MeadDataError, match=r"expected \(\.\.\., 53\)"):
        mead.params_from_motion(np.zeros((2, 50)))


def test_missing_and_malformed_files_are_fatal_before_work(tmp_path, mead_dir):
    with pytest.raises(mead.MeadDataError, match="does not exist"):
        mead.discover_mead(tmp_path / "nowhere")
    with pytest.raises(mead.MeadDataError, match="missing directory mead/param/"):
        mead.discover_mead(tmp_path)
    copy = tmp_path / "repo" / "datasets"
    shutil.copytree(mead_dir, copy)
    assert mead.discover_mead(tmp_path / "repo").root == copy  # a repository root holding datasets/ works
    (copy / "mead/wav/M003_001_0_0.wav").unlink()
    np.save(copy / "mead/param/M005_001_0_0.npy", np.zeros((1, 10, 400), np.float32))
    np.save(copy / "mead/param/extra_file.npy", np.zeros(3))
    with pytest.raises(mead.MeadDataError) as error:
        mead.discover_mead(copy)
    message = str(error.value)
    assert "3 unusable sequence files" in message
    assert "M003_001_0_0.npy: no matching mead/wav/M003_001_0_0.wav" in message
    assert "M005_001_0_0.npy: float32 array of shape (1, 10, 400); expected float (1, T, 403)" in message
    assert "'extra_file' is not of the form" in message


def test_discover_reads_lengths_from_headers(layout):
    assert len(layout.sequences) == 84
    first = layout.sequences[0]
    assert first.n_frames == np.load(layout.param_path(first.name)).shape[1]
    assert all(2 * C.FPS <= s.n_frames <= 4 * C.FPS for s in layout.sequences)


def test_splits_are_disjoint_as_named(layout):
    parts = {(p, q): mead.split_sequences(layout.sequences, p, q) for p in C.SPLIT_PROTOCOLS for q in C.SPLIT_PARTS}
    for protocol in C.SPLIT_PROTOCOLS:
        names = [{s.name for s in parts[protocol, q]} for q in C.SPLIT_PARTS]
        assert all(names) and not any(a & b for a, b in itertools.combinations(names, 2))
    ids = {q: {s.subject for s in parts[C.IDENTITY_DISJOINT, q]} for q in C.SPLIT_PARTS}
    assert ids == {"train": {"M003", "M005"}, "val": {"M032"}, "test": {"M037"}}
    # stage 2: the same (training) identities in every part, the parts differ by sentence
    stage2 = {q: parts[C.SEEN_IDENTITIES_UNSEEN_SENTENCES, q] for q in C.SPLIT_PARTS}
    assert all({s.subject for s in stage2[q]} == {"M003", "M005"} for q in C.SPLIT_PARTS)
    for q in C.SPLIT_PARTS:
        for s in stage2[q]:
            lo, hi = C.SENTENCE_SPLIT[q]["neutral" if s.emotion == 0 else "emotional"]
            assert lo <= s.sentence <= hi
        assert {s.intensity for s in stage2[q] if s.emotion} == {0, 1, 2}
    with pytest.raises(ValueError, match="split protocol must be one of"):
        mead.split_sequences(layout.sequences, "test", "test")


def test_splits_on_the_full_subject_list():
    """The real dataset's name grid: 47 subjects x (40 neutral + 7 emotions x 3 levels x 30)."""
    rows = [mead.MeadSequence(mead.sequence_name(s, n, 0, 0), s, n, 0, 0) for s in C.SUBJECTS for n in range(1, 41)]
    rows += [mead.MeadSequence(mead.sequence_name(s, n, e, i), s, n, e, i)
             for s in C.SUBJECTS for e in range(1, 8) for i in range(3) for n in range(1, 31)]  # fmt: skip
    count = lambda p, q: len(mead.split_sequences(rows, p, q))  # noqa: E731
    assert [count(C.IDENTITY_DISJOINT, q) for q in C.SPLIT_PARTS] == [32 * 670, 7 * 670, 8 * 670]
    assert [count(C.SEEN_IDENTITIES_UNSEEN_SENTENCES, q) for q in C.SPLIT_PARTS] == [
        32 * (32 + 21 * 24), 32 * (4 + 21 * 3), 32 * (4 + 21 * 3),
    ]  # fmt: skip


def test_synthetic_jaw_follows_the_audio_envelope(layout):
    pearson, lagged = [], []
    for s in layout.sequences:
        data = mead.read_sequence(layout.param_path(s.name), layout.wav_path(s.name))
        jaw = mead.unscale_motion(data["motion"])[:, 50]
        envelope = audio_envelope(data["audio"], C.AUDIO_SAMPLE_RATE, C.FPS)
        assert len(envelope) == len(jaw) == s.n_frames and len(data["audio"]) == s.n_frames * 640
        pearson.append(np.corrcoef(jaw, envelope)[0, 1])
        lagged.append(np.corrcoef(jaw[JAW_LAG_FRAMES:], envelope[:-JAW_LAG_FRAMES])[0, 1])
    assert np.mean(pearson) > 0.8 and np.min(pearson) > 0.7
    assert np.mean(lagged) > np.mean(pearson)  # the jaw is one frame late


def test_synthetic_emotion_follows_the_speech_in_the_planted_pattern(layout):
    """Each sequence's expression moves with the mouth opening 4 frames late, in its
    emotion's sign pattern scaled by the intensity: ``emotion_signature`` recovers
    ``emotion_pattern(e, i)`` on every coefficient (zero for neutral and outside 5-36)."""
    signatures = {}
    for s in layout.sequences:
        data = mead.read_sequence(layout.param_path(s.name), layout.wav_path(s.name))
        expression = mead.unscale_motion(data["motion"])[:, :50]
        signatures.setdefault((s.emotion, s.intensity), []).append(emotion_signature(expression, data["audio"]))
    assert sorted(signatures) == [(0, 0), (1, 0), (1, 1), (1, 2), (6, 0), (6, 1), (6, 2)]
    for (emotion, intensity), found in signatures.items():
        np.testing.assert_allclose(np.mean(found, axis=0), emotion_pattern(emotion, intensity), atol=0.1)
        assert np.abs(np.asarray(found) - emotion_pattern(emotion, intensity)).max() < 0.4  # every sequence on its own
    happy, angry = emotion_pattern(1, 2), emotion_pattern(6, 2)
    assert np.array_equal(np.flatnonzero(happy), np.arange(5, 37)) and set(np.abs(happy[5:37])) == {1.5}
    assert happy @ angry == 0 and np.array_equal(happy, 3 * emotion_pattern(1, 0))  # orthogonal; intensity scales it
    assert not emotion_pattern(0, 0).any()
    with pytest.raises(ValueError, match="fewer than"):
        emotion_signature(np.zeros((20, 50)), np.zeros(640 * 19))


def test_side_files(layout, tmp_path):
    lips = mead.read_region(layout.side_file(C.LIP_REGION_FILE))
    upper = mead.read_region(layout.side_file(C.UPPER_FACE_REGION_FILE))
    assert (len(lips), lips.min(), lips.max()) == (428, 649, 3928)
    assert (len(upper), upper.min(), upper.max()) == (1501, 16, 5012)
    zero = mead.read_zero_pose(layout.side_file(C.ZERO_POSE_FILE))
    templates = mead.read_templates(layout.side_file(C.TEMPLATES_FILE))
    assert zero.shape == (5023, 3) and sorted(templates) == ["M003", "M005", "M032", "M037"]
    assert np.abs(templates["M003"] - zero).max() < 0.02
    bad = tmp_path / "lve.txt"
    bad.write_text("1, 2, 9999")
    with pytest.raises(mead.MeadDataError, match="vertex indices in 0-5022"):
        mead.read_region(bad)
    with pytest.raises(mead.MeadDataError, match="missing 3DMEAD file"):
        layout.side_file("regions/nope.txt")


def test_ray_dataset_rows_batches_and_skipped_samples(ray_cluster, mead_dir, tmp_path):
    """The one Ray test: rows read inside Ray Data tasks, padded by SequenceCollate; corrupt samples skipped."""
    root = tmp_path / "mead"
    shutil.copytree(mead_dir, root)
    layout = mead.discover_mead(root)
    rows = mead.split_sequences(layout.sequences, C.IDENTITY_DISJOINT, "test")  # M037: 21 sequences
    wav, npy = layout.wav_path(rows[0].name), layout.param_path(rows[1].name)
    wav.write_bytes(wav.read_bytes()[:5000])  # truncated audio
    npy.write_bytes(npy.read_bytes()[:1000])  # truncated array body (header intact: discover passes)
    assert len(mead.discover_mead(root).sequences) == 84

    ds = mead.mead_dataset(layout, rows, mel_per_frame=4, sequences_per_task=11)
    collate = SequenceCollate(mead.MEAD_TIME_AXES)
    seen = {}
    for batch in ds.iter_torch_batches(batch_size=4, collate_fn=collate):
        t = batch["frame_mask"].shape[1]
        assert batch["motion"].shape[1:] == (t, 53) and batch["audio"].shape[1] == t * 640
        assert batch["mel"].shape[1:] == (t, 320) and batch["motion"].dtype == torch.float32
        assert torch.equal(batch["frame_mask"].sum(1), batch["n_frames"])
        assert torch.equal(batch["frame_length"], batch["n_frames"])
        for i in range(len(batch["n_frames"])):
            seen[int(batch["sentence"][i]), int(batch["emotion"][i]), int(batch["intensity"][i])] = {
                k: batch[k][i] for k in ("motion", "audio", "n_frames", "identity", "frame_mask")
            }
    assert len(rows) - len(seen) == 2  # skipped = rows asked for minus rows read
    by_key = {(s.sentence, s.emotion, s.intensity): s for s in rows[2:]}
    assert set(seen) == set(by_key)
    for key, got in seen.items():
        s = by_key[key]
        n = int(got["n_frames"])
        assert n == s.n_frames and int(got["identity"]) == C.SUBJECTS.index("M037")
        want = mead.read_sequence(layout.param_path(s.name), layout.wav_path(s.name))
        np.testing.assert_array_equal(got["motion"][:n].numpy(), want["motion"])
        np.testing.assert_array_equal(got["audio"][: n * 640].numpy(), want["audio"])
        assert not got["frame_mask"][n:].any() and not got["motion"][n:].any()
