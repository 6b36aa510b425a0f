"""Infant readers: InfAct pkls, MMAction2 PoseDataset, generated samples, splits, items."""

import os
import pickle
import subprocess
import sys

import numpy as np
import pytest

from affectlab.constants.infant import INFACT_FILES, PLUS_CLASSES
from affectlab.data.infant import (
    GeneratedSamples,
    InfantClip,
    InfantDataError,
    actor_batch,
    append_generated_samples,
    frame_indices,
    group_folds,
    infact_paths,
    infant_dataset,
    infant_rows,
    pose_features,
    read_generated_samples,
    read_infact,
    read_pose_dataset,
    sample_frames,
    validation_split,
)
from affectlab.data.safe_pickle import UnsafePickleError
from affectlab.data.synthetic_infant import write_synthetic_infant


def dump(path, obj):
    with open(path, "wb") as f:
        pickle.dump(obj, f)
    return path


def clip(label, value=0.0, frames=5, **extra):
    return {"frame_dir": f"clip_{value:g}", "pose": np.full((1, frames, 24, 3), value, np.float32), "pos_label": label, **extra}


class Exploit:
    """Unpickling this runs ``touch <marker>``: the reader must refuse it before that."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def primitive_dir(tmp_path_factory):
    return write_synthetic_infant(tmp_path_factory.mktemp("infant"), "primitive", n_subjects=5, n_test_subjects=1, frames=(20, 40))


def test_pickle_with_a_foreign_global_is_refused_unexecuted(tmp_path):
    marker = tmp_path / "pwned"
    path = dump(tmp_path / "evil.pkl", [{**clip("Supine"), "pose": Exploit(marker)}])
    with pytest.raises(UnsafePickleError, match="posix.system|os.system"):
        read_infact(path, "primitive")
    dump(tmp_path / "evil_pose.pkl", {"split": {"train": ["a"]}, "annotations": [Exploit(marker)]})
    with pytest.raises(UnsafePickleError):
        read_pose_dataset(tmp_path / "evil_pose.pkl")
    np.save(tmp_path / "evil.npy", {"pose": [Exploit(marker)], "keypoint": [], "y": []}, allow_pickle=True)
    with pytest.raises(UnsafePickleError):
        read_generated_samples(tmp_path / "evil.npy")
    assert not marker.exists()


def test_unknown_labels_are_skipped_and_counted_poses_stay_aligned(tmp_path):
    labels = ["Supine", "Crawling", "Prone", "supine", "All-fours", "Crawling"]  # 'supine': exact match only
    path = dump(tmp_path / "train.pkl", [clip(name, value=i) for i, name in enumerate(labels)])
    split = read_infact(path, "primitive")
    assert split.unknown_labels == {"Crawling": 2, "supine": 1}
    assert split.n_skipped == 3 and split.corrupt == []
    # every remaining pose is the one that came with its label (the original shifted them)
    assert [c.label for c in split.clips] == [0, 1, 4]
    assert [float(c.pose[0, 0, 0]) for c in split.clips] == [0.0, 2.0, 4.0]


def test_pose_layouts_and_corrupt_clips(tmp_path):
    pose = np.random.default_rng(0).normal(size=(7, 24, 3)).astype(np.float32)
    samples = [
        {"pose": pose[None], "pos_label": "Sitting"},  # (1, T, 24, 3)
        {"pose": pose.reshape(7, 72), "pos_label": "Sitting"},  # (T, 72)
        {"pose": pose, "pos_label": "Sitting"},  # (T, 24, 3)
        {"pose": np.zeros((7, 23, 3)), "pos_label": "Sitting"},  # wrong joint count
        {"pose": np.full((1, 7, 24, 3), np.nan), "pos_label": "Sitting"},  # NaN
        {"pose": pose[None], "keypoint": np.zeros((1, 6, 17, 3)), "pos_label": "Sitting"},  # frame mismatch
    ]
    split = read_infact(dump(tmp_path / "layouts.pkl", samples), "primitive")
    assert len(split.clips) == 3 and len(split.corrupt) == 3
    for c in split.clips:
        assert c.pose.dtype == np.float32 and c.pose.shape == (7, 24, 3)
        np.testing.assert_array_equal(c.pose, pose)
    assert "expected (1, T, 24, 3)" in split.corrupt[0] and "NaN" in split.corrupt[1] and "frames" in split.corrupt[2]

    with pytest.raises(InfantDataError, match="clip 0 has no key 'pos_label'"):
        read_infact(dump(tmp_path / "nolabel.pkl", [{"pose": pose}]), "primitive")
    with pytest.raises(InfantDataError, match="list of clip dicts"):
        read_infact(dump(tmp_path / "dict.pkl", {"pose": pose}), "primitive")
    with pytest.raises(InfantDataError, match="missing infant pkl"):
        read_infact(tmp_path / "absent.pkl", "primitive")


def test_synthetic_files_have_the_real_layout(primitive_dir, tmp_path):
    paths = infact_paths(primitive_dir, "primitive")
    assert paths["train"] == primitive_dir / INFACT_FILES["primitive"]["train"]
    with open(paths["train"], "rb") as f:  # the test's own file: plain pickle is fine here
        raw = pickle.load(f)
    assert isinstance(raw, list) and isinstance(raw[0], dict)
    assert raw[0]["pose"].shape[0] == 1 and raw[0]["pose"].shape[2:] == (24, 3)
    assert raw[0]["keypoint"].shape[2:] == (17, 3) and isinstance(raw[0]["pos_label"], str)

    train, test = read_infact(paths["train"], "primitive"), read_infact(paths["test"], "primitive")
    assert len(train.clips) == 4 * 5 * 2 and len(test.clips) == 5 * 2 and train.n_skipped == 0
    assert {c.subject for c in train.clips} == {"D01", "D02", "D03", "D04"}  # from the Dxx_ prefix
    assert {c.subject for c in test.clips} == {"D05"}
    assert np.bincount(train.labels()).tolist() == [8] * 5
    assert all(20 <= c.n_frames <= 40 for c in train.clips)

    again = write_synthetic_infant(tmp_path, "primitive", n_subjects=5, n_test_subjects=1, frames=(20, 40))
    assert (again / INFACT_FILES["primitive"]["train"]).read_bytes() == paths["train"].read_bytes()

    plus = write_synthetic_infant(tmp_path / "plus", "plus", n_subjects=3, n_test_subjects=1, clips_per_class=1, frames=(30, 30))
    split = read_infact(infact_paths(plus, "plus")["train"], "plus")
    assert sorted({c.label for c in split.clips}) == list(range(len(PLUS_CLASSES)))
    assert {c.subject for c in split.clips} == {"D01", "D02"}  # from subject_id


def test_validation_split_is_grouped_by_subject_and_seeded(primitive_dir):
    clips = read_infact(infact_paths(primitive_dir, "primitive")["train"], "primitive").clips
    train, val = validation_split(clips, val_fraction=0.25, seed=3)
    assert {c.subject for c in train}.isdisjoint({c.subject for c in val})
    assert len({c.subject for c in val}) == 1 and len(train) + len(val) == len(clips)
    assert [c.clip_id for c in validation_split(clips, 0.25, seed=3)[1]] == [c.clip_id for c in val]
    splits = {tuple(sorted({c.subject for c in validation_split(clips, 0.25, seed=s)[1]})) for s in range(8)}
    assert len(splits) > 1  # the seed decides

    folds = group_folds(clips, k=4, seed=0)
    tested = [c.subject for _, test in folds for c in test]
    assert sorted(set(tested)) == ["D01", "D02", "D03", "D04"] and len(tested) == len(clips)
    for fold_train, fold_test in folds:
        assert {c.subject for c in fold_train}.isdisjoint({c.subject for c in fold_test})

    # no subject ids: every clip is its own group
    anonymous = [InfantClip(f"c{i}", i % 2, None, np.zeros((3, 24, 3), np.float32)) for i in range(10)]
    train, val = validation_split(anonymous, 0.2, seed=0)
    assert len(val) == 2 and {c.clip_id for c in train}.isdisjoint({c.clip_id for c in val})
    with pytest.raises(InfantDataError, match="groups"):
        validation_split([c for c in clips if c.subject == "D01"], 0.2)  # one subject


def test_frame_sampling_windows_and_padding():
    np.testing.assert_array_equal(frame_indices(3, 6), [0, 1, 2, 2, 2, 2])  # shorter: repeat the last frame
    np.testing.assert_array_equal(frame_indices(6, 6), np.arange(6))
    np.testing.assert_array_equal(frame_indices(10, 4), [3, 4, 5, 6])  # no rng: centred window
    rng = np.random.default_rng(0)
    starts = {int(frame_indices(10, 4, rng)[0]) for _ in range(300)}
    assert starts == set(range(7))  # every window, the last included
    x = np.arange(5)[:, None] * np.ones((1, 2))
    np.testing.assert_array_equal(sample_frames(x, 7)[:, 0], [0, 1, 2, 3, 4, 4, 4])
    a = frame_indices(50, 20, np.random.default_rng(1))
    np.testing.assert_array_equal(a, frame_indices(50, 20, np.random.default_rng(1)))


def test_pose_features_rotation_convention():
    pose = np.zeros((2, 24, 3), np.float32)
    pose[:, 5] = [0, 0, np.pi / 2]  # 90 degrees about z: rows (0, -1, 0), (1, 0, 0), (0, 0, 1)
    rot6d = pose_features(pose, "rot6d")
    assert rot6d.shape == (2, 24, 6) and rot6d.dtype == np.float32
    np.testing.assert_allclose(rot6d[0, 5], [0, -1, 0, 1, 0, 0], atol=1e-6)
    np.testing.assert_allclose(rot6d[0, 0], [1, 0, 0, 0, 1, 0], atol=1e-6)  # identity
    assert pose_features(pose, "rotmat").shape == (2, 24, 9)
    assert pose_features(pose, "rot6d", glob=False).shape == (2, 23, 6)
    np.testing.assert_array_equal(pose_features(pose, "rotvec"), pose)


def test_rows_and_actor_batch(primitive_dir):
    clips = read_infact(infact_paths(primitive_dir, "primitive")["train"], "primitive").clips[:4]
    rows = infant_rows(clips, num_frames=30, seed=0)
    assert [r["label"] for r in rows] == [c.label for c in clips]
    assert all(r["pose"].shape == (30, 24, 6) and r["pose"].dtype == np.float32 for r in rows)
    assert [r["n_frames"] for r in rows] == [min(c.n_frames, 30) for c in clips]
    assert rows[0]["subject"] == clips[0].subject
    xyz = infant_rows(clips, num_frames=30, pose_rep="xyz")
    assert xyz[0]["pose"].shape == (30, 17, 3)
    batch = actor_batch({k: np.stack([r[k] for r in rows]) for k in ("pose", "label")})
    assert batch["x"].shape == (4, 24, 6, 30) and batch["mask"].all() and batch["lengths"].tolist() == [30] * 4
    np.testing.assert_array_equal(batch["x"][1, :, :, 7], rows[1]["pose"][7])


def test_pose_dataset_reader(tmp_path):
    kp = lambda t: np.random.default_rng(t).normal(size=(1, t, 17, 3)).astype(np.float32)  # noqa: E731
    annotations = [
        {"frame_dir": "D01_a", "label": 2, "keypoint": kp(5), "keypoint_score": np.ones((1, 5, 17)), "total_frames": 5},
        {"frame_dir": "D02_b", "label": 9, "keypoint": kp(6), "total_frames": 6},  # outside the 5 classes
        {"frame_dir": "c", "label": 0, "keypoint": kp(4), "total_frames": 4},
        {"frame_dir": "d", "label": 1, "keypoint": np.zeros((1, 4)), "total_frames": 4},  # malformed
    ]
    path = dump(tmp_path / "bench.pkl", {"split": {"train": ["D01_a", "D02_b", "d"], "test": ["c"]}, "annotations": annotations})
    splits = read_pose_dataset(path, num_classes=5)
    train, test = splits["train"], splits["test"]
    assert [c.clip_id for c in train.clips] == ["D01_a"] and train.clips[0].subject == "D01"
    np.testing.assert_array_equal(train.clips[0].keypoint, annotations[0]["keypoint"][0])
    assert train.unknown_labels == {"label 9": 1} and len(train.corrupt) == 1
    assert test.clips[0].label == 0 and test.clips[0].subject is None and test.n_skipped == 0
    dump(tmp_path / "bad.pkl", {"split": {"train": ["zz"]}, "annotations": annotations})
    with pytest.raises(InfantDataError, match="'zz', which has no annotation"):
        read_pose_dataset(tmp_path / "bad.pkl", num_classes=5)


def generated(n, t=6, epoch=10, seed=0):
    rng = np.random.default_rng(seed)
    return GeneratedSamples(
        pose=[rng.normal(size=(t + i, 24, 3)) for i in range(n)],
        keypoint=[rng.normal(size=(t + i, 24, 3)) for i in range(n)],
        y=np.arange(n) % 3,
        epoch_idx=np.full(n, epoch),
        score=rng.uniform(0.75, 1, n),
        feat=rng.normal(size=(n, 8)),
    )


def test_generated_samples_npz_roundtrip_append_and_counts(tmp_path):
    path = tmp_path / "exp" / "generated_samples.npz"
    assert append_generated_samples(path, generated(3, epoch=10)) == 3
    assert append_generated_samples(path, generated(2, epoch=20, seed=1)) == 5
    back = read_generated_samples(path)
    first, second = generated(3, epoch=10), generated(2, epoch=20, seed=1)
    assert back.epoch_idx.tolist() == [10, 10, 10, 20, 20] and back.y.tolist() == [0, 1, 2, 0, 1]
    for got, want in zip(back.pose, first.pose + second.pose):
        np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(back.feat, np.concatenate([first.feat, second.feat]))
    assert [c.n_frames for c in back.clips(max_epoch=10)] == [6, 7, 8]
    with open(path, "rb") as f:
        assert f.read(2) == b"PK"  # a zip of .npy arrays, no pickles
    with pytest.raises(InfantDataError, match="'epoch_idx' has 4 entries for 3 poses"):  # defect 11
        GeneratedSamples(first.pose, first.keypoint, first.y, np.full(4, 10))


def test_original_generated_samples_npy_is_read_without_unpickling_code(tmp_path):
    rng = np.random.default_rng(0)
    original = {  # what the refinement loop np.save()d: lists of arrays and numbers
        "pose": [rng.normal(size=(5, 24, 3)).astype(np.float32) for _ in range(2)],
        "keypoint": [rng.normal(size=(5, 24, 3)).astype(np.float32) for _ in range(2)],
        "y": [np.int64(3), np.int64(1)],
        "score": [0.9, 0.8],
        "epoch_idx": [10, 10],
        "feat": [rng.normal(size=256).astype(np.float32) for _ in range(2)],
    }
    np.save(tmp_path / "generated_samples.npy", original, allow_pickle=True)
    back = read_generated_samples(tmp_path / "generated_samples.npy")
    assert len(back) == 2 and back.y.tolist() == [3, 1] and back.feat.shape == (2, 256)
    np.testing.assert_array_equal(back.pose[1], original["pose"][1])
    np.save(tmp_path / "synthetic_samples.npy", {k: original[k] for k in ("pose", "keypoint", "y")}, allow_pickle=True)
    assert read_generated_samples(tmp_path / "synthetic_samples.npy").epoch_idx.tolist() == [-1, -1]


def test_readers_import_without_ray_or_torch():
    code = "import sys, affectlab.data.infant; print('ray' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


def test_infant_dataset_rows_through_ray(ray_cluster, primitive_dir):
    clips = read_infact(infact_paths(primitive_dir, "primitive")["test"], "primitive").clips
    ds = infant_dataset(clips, num_frames=16)
    batch = next(iter(ds.iter_batches(batch_size=len(clips), batch_format="numpy")))
    assert batch["pose"].shape == (len(clips), 16, 24, 6) and batch["pose"].dtype == np.float32
    assert sorted(batch["label"].tolist()) == sorted(c.label for c in clips)
    assert set(batch["subject"].tolist()) == {"D05"}
