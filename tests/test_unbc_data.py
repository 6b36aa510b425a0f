"""UNBC readers, splits and neutral references on real HDF5 files."""

import h5py
import numpy as np
import pytest

from affectlab.data import pain as pain_data
from affectlab.constants.pain import AU_KEYS
from affectlab.data.unbc import UNBC, UNBC_FILES, UNBCDataError, loso_folds


def write_unbc(d, n=12, frame_shape=(8, 8, 3), index=None, drop=(), extra=None, with_pspi=True, folds=None):
    """A hand-made UNBC layout whose frame k is filled with the value 10 + k."""
    d.mkdir(parents=True, exist_ok=True)
    images = np.stack([np.full(frame_shape, 10 + k, np.uint8) for k in range(n)])
    with h5py.File(d / UNBC_FILES["frames"], "w") as f:
        f["image"] = images
        f["index"] = np.arange(n)
    index = np.arange(n) if index is None else np.asarray(index)
    labels = {k: np.zeros(len(index)) for k in AU_KEYS}
    labels.update(extra or {})
    with h5py.File(d / UNBC_FILES["annotations"], "w") as f:
        f["index"] = index
        f["subject_name"] = np.array([b"042-ll042" if i % 2 else b"043-jh043" for i in range(len(index))])
        for k, v in labels.items():
            if k not in drop:
                f[k] = v
        if with_pspi:
            f["label_pspi"] = np.zeros(len(index))
    with h5py.File(d / UNBC_FILES["folds"], "w") as f:
        for k, (train, test) in enumerate(folds or [([42], [43]), ([43], [42])]):
            f[f"fold-{k}/train_subjects"] = np.array(train)
            f[f"fold-{k}/validation_subjects"] = np.array(test)
    return d


def test_frames_are_read_through_the_annotation_index(tmp_path):
    # annotation row r describes frame 11 - r: reading by position would get every pixel wrong
    d = write_unbc(tmp_path, index=np.arange(12)[::-1])
    unbc = UNBC.open(d)
    frames = unbc.table["frame"].to_numpy()
    pixels = pain_data.read_unbc_images(str(unbc.paths.frames), frames, size=8)
    assert [int(pixels[int(f)][0, 0, 0]) for f in frames] == [10 + 11 - r for r in range(12)]


def test_labels_nan_to_zero_nanmax_rows_binary_au43_and_pspi_from_aus(tmp_path):
    au = {k: np.zeros(4) for k in AU_KEYS}
    au["label_AU_4"] = np.array([np.nan, 2.0, 1.0, 0.0])
    au["label_AU_6"] = np.array([1.0, 3.0, np.nan, 0.0])
    au["label_AU_10"] = np.array([0.0, 4.0, 0.0, 2.0])
    au["label_AU_43"] = np.array([0.0, 0.5, 1.0, np.nan])
    d = write_unbc(tmp_path, n=4, extra=au, with_pspi=False, index=[0, 1, 2, 3])
    t = UNBC.open(d).table
    assert t["AU4"].tolist() == [0, 2, 1, 0]
    assert t["AU43"].tolist() == [0, 1, 1, 0]  # binarised
    # PSPI = AU4 + max(AU6, AU7) + max(AU9, AU10) + AU43, worked by hand per row
    assert t["pspi"].tolist() == [0 + 1 + 0 + 0, 2 + 3 + 4 + 1, 1 + 0 + 0 + 1, 0 + 0 + 2 + 0]

    multi = tmp_path / "multi"
    au_rows = {k: np.zeros((4, 3)) for k in AU_KEYS}
    au_rows["label_AU_4"] = np.array([[1, np.nan, 3], [np.nan] * 3, [0, 0, 0], [2, 1, 0]], float)
    d = write_unbc(multi, n=4, extra=au_rows, index=[0, 1, 2, 3])
    assert UNBC.open(d).table["AU4"].tolist() == [3, 0, 0, 2]  # nanmax per row, all-NaN → 0


def test_annotation_rows_past_the_last_frame_are_dropped_and_counted(tmp_path):
    d = write_unbc(tmp_path, n=6, index=[0, 1, 2, 3, 6, 9])
    unbc = UNBC.open(d)
    assert unbc.dropped_rows == 2 and unbc.table["frame"].tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("missing_file", "missing UNBC file"),
        ("missing_key", "missing key 'label_AU_7'"),
        ("lengths", "'label_AU_4' has 5 rows but 'index' has 6"),
        ("unknown_subject", "names subjects [99]"),
        ("not_images", "each row must be an image"),
    ],
)
def test_bad_input_fails_before_any_work_naming_file_and_key(tmp_path, damage, expected):
    kwargs = {"n": 6}
    if damage == "missing_key":
        kwargs["drop"] = ("label_AU_7",)
    if damage == "lengths":
        kwargs["extra"] = {"label_AU_4": np.zeros(5)}
    if damage == "unknown_subject":
        kwargs["folds"] = [([42, 99], [43])]
    if damage == "not_images":
        kwargs["frame_shape"] = (16,)  # each row a 1-D vector
    d = write_unbc(tmp_path, **kwargs)
    if damage == "missing_file":
        (d / UNBC_FILES["annotations"]).unlink()
    with pytest.raises(UNBCDataError) as err:
        UNBC.open(d)
    assert expected in str(err.value)
    assert str(d) in str(err.value)  # the message names the file


def test_no_subject_is_on_both_sides_of_any_fold(unbc_dir):
    unbc = UNBC.open(unbc_dir)
    assert len(unbc.folds) == 5
    tested = []
    for k in range(5):
        tables = unbc.fold_tables(k, inner_val_fraction=0.2, seed=0)
        train, val, test = (set(tables[s]["subject_id"]) for s in ("train", "val", "test"))
        assert train and val and test
        assert not (train & test) and not (val & test) and not (train & val)
        tested += sorted(test)
    assert sorted(tested) == sorted(set(unbc.table["subject_id"]))  # each subject tested once


def test_loso_holds_out_one_subject_per_fold():
    folds = loso_folds([43, 42, 47, 42])
    assert [f.test_subjects for f in folds] == [(42,), (43,), (47,)]
    assert folds[0].train_subjects == (43, 47)


def test_unknown_fold_is_a_clear_error(unbc_dir):
    with pytest.raises(UNBCDataError, match="fold 7 does not exist"):
        UNBC.open(unbc_dir).fold_tables(7, 0.2, 0)


def test_training_references_are_other_pspi0_frames_of_the_same_subject(unbc_dir):
    table = UNBC.open(unbc_dir).table
    refs = pain_data.training_references(table, n_shots=1, seed=3)
    by_frame = table.set_index("frame")
    for pos, ref in enumerate(refs[:, 0]):
        assert ref != table["frame"][pos]
        assert by_frame.loc[ref, "subject_id"] == table["subject_id"][pos]
        assert by_frame.loc[ref, "pspi"] == 0
    assert np.array_equal(refs, pain_data.training_references(table, 1, seed=3))  # seeded


def test_evaluation_references_use_no_labels_and_are_deterministic(unbc_dir):
    table = UNBC.open(unbc_dir).table
    refs = pain_data.evaluation_references(table, 2, "first_frames", seed=0)
    scrambled = table.assign(pspi=np.random.default_rng(0).permutation(table["pspi"].to_numpy()))
    assert np.array_equal(refs, pain_data.evaluation_references(scrambled, 2, "first_frames", seed=1))
    for pos, row in table.iterrows():
        own = table[table["subject_id"] == row["subject_id"]].sort_values("order")["frame"].tolist()
        expected = [f for f in own if f != row["frame"]][:2]
        assert refs[pos].tolist() == expected


def test_sample_weights_double_the_pain_frames_with_mean_one(unbc_dir):
    table = UNBC.open(unbc_dir).table
    weights = pain_data.sample_weights(table)
    pain = table["pspi"].to_numpy() >= 1
    assert weights.mean() == pytest.approx(1.0)
    assert np.allclose(weights[pain], 2 * weights[~pain][0]) and np.allclose(weights[~pain], weights[~pain][0])
