"""Mouse data layer: trial alignment, DLC reading, validation, grouped splits, pose features."""

import contextlib
import pickle
import shutil
import warnings
from pathlib import Path

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest

from affectlab.data import mouse
from affectlab.constants.mouse import BODYPARTS
from affectlab.data.mouse import (
    MouseDataError,
    Trial,
    discover,
    find_dlc_file,
    group_kfold,
    group_split,
    read_annotation,
    read_dlc,
    read_video_frames,
    trial_frame_range,
)
from affectlab.data.dlc import parse_bodypart_map
from affectlab.data.pose import interpolate_low_likelihood, pose_features
from affectlab.data.synthetic_mouse import decode_stamp, write_synthetic_mouse

SIZE = 32


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """Two animals, one 3-trial video each; video 1 trial 2 has 345 rows; frames stamped."""
    out = tmp_path_factory.mktemp("mouse")
    return write_synthetic_mouse(out, n_animals=2, size=SIZE, seed=3, stamp_frame_index=True)


def _copy(dataset: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(dataset, tmp_path / "copy"))


def _trial(trials, video_index: int, trial: int) -> Trial:
    videos = sorted({t.video_id for t in trials})
    return next(t for t in trials if t.video_id == videos[video_index] and t.trial == trial)


def _truth(dataset: Path, trial: Trial):
    return np.load(dataset / "Truth" / f"{trial.video_id}.npz")


# ------------------------------------------------------------------ alignment


def test_trial_frame_range_rule():
    assert trial_frame_range(1, 360) == (0, 360)
    assert trial_frame_range(2, 360) == (360, 720)
    assert trial_frame_range(3, 360) == (720, 1080)
    assert trial_frame_range(2, 345) == (375, 720)  # row r -> trial frame r + 15
    with pytest.raises(ValueError):
        trial_frame_range(1, 300)


def _check_streams_aligned(dataset: Path, trial: Trial):
    truth = _truth(dataset, trial)
    frames = read_video_frames(trial.video_path, trial.start, trial.stop, SIZE)
    stamps = np.array([decode_stamp(f) for f in frames])
    np.testing.assert_array_equal(stamps, np.arange(trial.start, trial.stop))

    labels = read_annotation(trial.annotation_path)
    np.testing.assert_array_equal(labels, truth["labels"][trial.start : trial.stop])

    xy, likelihood = read_dlc(trial.dlc_path)
    xy, likelihood = xy[trial.start : trial.stop], likelihood[trial.start : trial.stop]
    confident = likelihood >= 0.9
    error = np.linalg.norm(xy - truth["keypoints"][trial.start : trial.stop], axis=-1)
    assert confident.mean() > 0.9
    assert error[confident].max() < 1.0  # DLC noise is ~0.13 px at 32 px
    # and trial 1's pose would not match: the streams really are offset.
    wrong = np.linalg.norm(xy - truth["keypoints"][: trial.n_frames], axis=-1)
    assert wrong[confident].mean() > 5 * error[confident].mean()


def test_trial_2_reads_frames_360_to_719_in_every_stream(dataset):
    trial = _trial(discover(dataset), 0, 2)
    assert (trial.start, trial.stop) == (360, 720)
    _check_streams_aligned(dataset, trial)


def test_345_row_trial_maps_row_r_to_trial_frame_r_plus_15(dataset):
    trial = _trial(discover(dataset), 1, 2)
    assert len(read_annotation(trial.annotation_path)) == 345
    assert (trial.start, trial.stop) == (375, 720)
    _check_streams_aligned(dataset, trial)


def test_discover_is_sorted_and_parses_ids(dataset):
    trials = discover(dataset)
    assert len(trials) == 6
    assert trials == discover(dataset)
    assert [(t.video_id, t.trial) for t in trials] == sorted((t.video_id, t.trial) for t in trials)
    assert {t.animal_id for t in trials} == {"250M", "253F"}
    assert trials[3].dlc_path.suffix == ".h5"  # the second video's pose is stored as H5
    assert mouse.animal_id_from_name("shortened_2023-10-25_CFA_010_267M_tracking") == "267M"
    assert mouse.animal_id_from_name("session7") == "session7"
    assert mouse.parse_annotation_name(
        "prediction_shortened_2023-10-25_CFA_010_267M_tracking.mp4_3.csv"
    ) == ("shortened_2023-10-25_CFA_010_267M_tracking.mp4", 3)


def test_synthetic_labels_cover_every_class_and_exercise_the_merge(dataset):
    raw = np.concatenate([pd.read_csv(p)["Action"].to_numpy() for p in sorted((dataset / "Annotations").glob("*.csv"))])
    assert {1, 3}.issubset(set(raw))  # paw_withdraw and paw_guard, merged to one class
    for trial_file in sorted((dataset / "Truth").glob("*.npz")):
        counts = np.bincount(np.load(trial_file)["labels"], minlength=6)
        assert (counts > 0).all() and counts.argmax() == 0


# ------------------------------------------------------------------ DLC reader


def test_dlc_csv_and_h5_read_identically(dataset, tmp_path):
    csv_path = find_dlc_file(dataset / "Videos", _trial(discover(dataset), 0, 1).video_id)
    assert csv_path.suffix == ".csv"
    table = pd.read_csv(csv_path, header=[0, 1, 2], index_col=0)
    h5_path = tmp_path / "videoDLC_resnet50_x.h5"
    table.to_hdf(h5_path, key="df_with_missing", format="table", mode="w")
    xy_csv, lk_csv = read_dlc(csv_path, expected_frames=1080)
    xy_h5, lk_h5 = read_dlc(h5_path, expected_frames=1080)
    assert xy_csv.shape == (1080, 6, 2) and lk_csv.shape == (1080, 6)
    assert xy_csv.dtype == np.float32
    np.testing.assert_array_equal(xy_csv, xy_h5)
    np.testing.assert_array_equal(lk_csv, lk_h5)

    # Bodyparts are matched by name, not by column position.
    shuffled = table[[c for bp in reversed(BODYPARTS) for c in table.columns if c[1] == bp]]
    shuffled.to_csv(tmp_path / "shuffledDLC_x.csv")
    xy_shuffled, _ = read_dlc(tmp_path / "shuffledDLC_x.csv")
    np.testing.assert_array_equal(xy_csv, xy_shuffled)


def _multi_animal_table(n=10):
    columns = pd.MultiIndex.from_product(
        [["DLC_resnet50_maJan1shuffle1_100"], ["mouse1"], list(BODYPARTS), ["x", "y", "likelihood"]],
        names=["scorer", "individuals", "bodyparts", "coords"],
    )
    return pd.DataFrame(np.ones((n, len(columns))), columns=columns)


def test_dlc_rejects_multi_animal_row_mismatch_and_missing_bodypart(dataset, tmp_path):
    table = _multi_animal_table()
    table.to_csv(tmp_path / "maDLC_x.csv")
    table.to_hdf(tmp_path / "maDLC_x.h5", key="df_with_missing", format="table", mode="w")
    for path in (tmp_path / "maDLC_x.csv", tmp_path / "maDLC_x.h5"):
        with pytest.raises(MouseDataError, match="multi-animal") as error:
            read_dlc(path)
        assert path.name in str(error.value)

    csv_path = find_dlc_file(dataset / "Videos", _trial(discover(dataset), 0, 1).video_id)
    with pytest.raises(MouseDataError, match="has 1080 pose rows, expected 1000") as error:
        read_dlc(csv_path, expected_frames=1000)
    assert csv_path.name in str(error.value)

    table = pd.read_csv(csv_path, header=[0, 1, 2], index_col=0)
    table.drop(columns="tail_base", level=1).to_csv(tmp_path / "noTailDLC_x.csv")
    with pytest.raises(MouseDataError, match="missing bodyparts \\['tail_base'\\]"):
        read_dlc(tmp_path / "noTailDLC_x.csv")


def test_find_dlc_file_matches_exact_stem_and_filtered_explicitly(tmp_path):
    tf = "DLC_resnet50_pawtracking_comparisionMay7shuffle1_500000"
    dlc3 = "DLC_Resnet50_test1Apr9shuffle1_snapshot_010"
    for name in (
        f"video10{tf}.csv",
        f"video1{tf}.csv",
        f"video1{tf}.h5",
        f"video1{tf}_filtered.h5",
        f"video1{tf}_meta.pickle",
        f"video1{tf}_labeled.mp4",
        f"video2{dlc3}.csv",
    ):
        (tmp_path / name).touch()
    assert find_dlc_file(tmp_path, "video1").name == f"video1{tf}.h5"
    assert find_dlc_file(tmp_path, "video1", prefer_filtered=True).name == f"video1{tf}_filtered.h5"
    assert find_dlc_file(tmp_path, "video10").name == f"video10{tf}.csv"
    assert find_dlc_file(tmp_path, "video10", prefer_filtered=True).name == f"video10{tf}.csv"
    assert find_dlc_file(tmp_path, "video2").name == f"video2{dlc3}.csv"
    assert find_dlc_file(tmp_path, "video3") is None


# ------------------------------------------------------------------ untrusted H5: no pickle path


class TouchOnUnpickle:
    """Unpickling this calls ``open(marker, "w")``: the marker file proves that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def dlc_frame(n: int = 20, bodyparts=BODYPARTS, scorer: str = "DLC_resnet50_testJan1shuffle1_1000") -> pd.DataFrame:
    """A single-animal DLC table as DeepLabCut builds it (scorer/bodyparts/coords MultiIndex)."""
    columns = pd.MultiIndex.from_product([[scorer], list(bodyparts), ["x", "y", "likelihood"]], names=["scorer", "bodyparts", "coords"])
    values = np.random.default_rng(0).uniform(0.5, 1.0, (n, len(columns)))
    return pd.DataFrame(values, columns=columns)


def pickle_bearing_h5(path: Path, marker: Path, n: int = 20) -> Path:
    """A fixed-format DLC H5 with an object column whose cells run code when unpickled."""
    table = dlc_frame(n)
    table[(table.columns[0][0], "note", "text")] = [TouchOnUnpickle(marker)] * n
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pandas warns that PyTables will pickle the object column
        table.to_hdf(path, key="df_with_missing", format="fixed", mode="w")
    return path


def poisoned_table_h5(path: Path, marker: Path, n: int = 20) -> Path:
    """A table-format DLC H5 whose column-label attribute is a code-running pickle: PyTables
    unpickles node attributes, so table format alone is not safe to open with pandas."""
    dlc_frame(n).to_hdf(path, key="df_with_missing", format="table", mode="w")
    with h5py.File(path, "a") as handle:
        handle["df_with_missing/table"].attrs["values_block_0_kind"] = np.bytes_(pickle.dumps(TouchOnUnpickle(marker), protocol=0))
    return path


@pytest.mark.parametrize("make", [pickle_bearing_h5, poisoned_table_h5], ids=["fixed_object_column", "table_pickled_attribute"])
def test_pickle_bearing_h5_is_refused_without_running_it(tmp_path, make):
    marker = tmp_path / "code_ran"
    path = make(tmp_path / "evilDLC_resnet50_x.h5", marker)
    with contextlib.suppress(Exception):  # the payload is live: pandas runs it on read
        pd.read_hdf(path)
    assert marker.exists()
    marker.unlink()
    with pytest.raises(MouseDataError, match="refused") as error:
        read_dlc(path)
    assert path.name in str(error.value)
    assert not marker.exists()


def test_numeric_h5_in_table_and_fixed_format_reads_like_pandas(tmp_path):
    table = dlc_frame(30)
    table.iloc[3, :3] = np.nan  # DLC writes NaN for undetected points
    for fmt in ("table", "fixed"):
        path = tmp_path / f"{fmt}DLC_x.h5"
        table.to_hdf(path, key="df_with_missing", format=fmt, mode="w")
        xy, likelihood = read_dlc(path, expected_frames=30)
        np.testing.assert_allclose(xy[:, 1, 0], table[(table.columns[0][0], "L_frontpaw", "x")], rtol=1e-6)
        assert likelihood[3, 0] == 0 and (xy[3, 0] == 0).all()  # NaN: unseen


def test_truncated_or_non_hdf5_h5_names_the_file(tmp_path):
    good = tmp_path / "goodDLC_x.h5"
    dlc_frame(200).to_hdf(good, key="df_with_missing", format="table", mode="w")
    data = good.read_bytes()
    cases = {"cut": data[: len(data) // 2], "text": b"scorer,DLC\nbodyparts,mouth\n", "empty": b""}
    for name, content in cases.items():
        path = tmp_path / f"{name}DLC_x.h5"
        path.write_bytes(content)
        with pytest.raises(MouseDataError, match="HDF5") as error:
            read_dlc(path)
        assert path.name in str(error.value), name


# ------------------------------------------------------------------ other DLC projects: bodypart map, file kinds

THEIRS = ("Snout", "Front Paw L", "FrontPawR", "HindPawL", "HindPawR", "TailBase")  # another lab's names
THEIR_MAP = ",".join(f"{ours}={theirs}" for ours, theirs in zip(BODYPARTS, THEIRS))


def multi_animal_frame(n: int = 20, individuals=("mouse1", "mouse2"), bodyparts=THEIRS) -> pd.DataFrame:
    """Multi-animal DLC output: scorer/individuals/bodyparts/coords; mouse k's x values are k*100 + frame."""
    columns = pd.MultiIndex.from_product(
        [["DLC_dlcrnetms5_maJan1shuffle1_100"], list(individuals), list(bodyparts), ["x", "y", "likelihood"]],
        names=["scorer", "individuals", "bodyparts", "coords"],
    )
    table = pd.DataFrame(np.ones((n, len(columns))), columns=columns)
    for k, name in enumerate(individuals, start=1):
        for bp in bodyparts:
            table[(columns[0][0], name, bp, "x")] = k * 100 + np.arange(n, dtype=float)
    return table


def test_bodypart_map_reads_another_projects_names_in_every_single_animal_layout(tmp_path):
    table = dlc_frame(40, bodyparts=THEIRS)
    paths = {"csv": tmp_path / "vDLC_x.csv", "h5": tmp_path / "vDLC_x.h5", "h5_other_key": tmp_path / "wDLC_x.h5"}
    table.to_csv(paths["csv"])
    table.to_hdf(paths["h5"], key="df_with_missing", format="table", mode="w")
    table.to_hdf(paths["h5_other_key"], key="pose", format="fixed", mode="w")  # a single key of another name
    expected = table.xs("x", level="coords", axis=1).to_numpy(np.float32)  # THEIRS order = BODYPARTS order
    for kind, path in paths.items():
        xy, likelihood = read_dlc(path, expected_frames=40, bodyparts=THEIR_MAP)
        np.testing.assert_allclose(xy[..., 0], expected, rtol=1e-6, err_msg=kind)
        with pytest.raises(MouseDataError, match="missing bodyparts") as error:
            read_dlc(path)
        message = str(error.value)
        assert "'Snout', 'Front Paw L'" in message and "--bodyparts" in message, message  # what the file has, how to map
    # a dict works as well as the string form, and the map is checked before the file
    np.testing.assert_array_equal(read_dlc(paths["csv"], bodyparts=dict(zip(BODYPARTS, THEIRS)))[0], read_dlc(paths["csv"], bodyparts=THEIR_MAP)[0])
    with pytest.raises(MouseDataError, match=r"missing bodyparts \['mouth'\] \(looked for \['Nose'\]\).*'Snout'"):
        read_dlc(paths["csv"], bodyparts=THEIR_MAP.replace("mouth=Snout", "mouth=Nose"))


def test_bodypart_map_is_validated_up_front():
    assert parse_bodypart_map("mouth=Snout, tail_base = Tail Base ,") == {"mouth": "Snout", "tail_base": "Tail Base"}
    assert parse_bodypart_map(None) == {} and parse_bodypart_map("") == {}
    for spec, message in [
        ("nose=Snout", r"unknown bodypart\(s\) \['nose'\].*'mouth'"),
        ("mouth=Snout,mouth=Nose", "'mouth' is mapped twice"),
        ("mouth=Snout,tail_base=Snout", "several bodyparts from one name"),
        ("mouth=tail_base", "several bodyparts from one name"),  # tail_base, unmapped, is read as tail_base too
        ("mouth", "not ours=theirs"),
        ("mouth=", "not ours=theirs"),
    ]:
        with pytest.raises(ValueError, match=message):
            parse_bodypart_map(spec)
    with pytest.raises(ValueError, match="unknown bodypart"):
        read_dlc("/nonexistent.csv", bodyparts="nose=Snout")  # before the file is looked at


@pytest.mark.parametrize("fmt", ["csv", "table", "fixed"])
def test_multi_animal_needs_an_individual_and_reads_the_chosen_one(tmp_path, fmt):
    table = multi_animal_frame()
    path = tmp_path / ("maDLC_x_el.csv" if fmt == "csv" else "maDLC_x_el.h5")
    if fmt == "csv":
        table.to_csv(path)
    else:
        table.to_hdf(path, key="df_with_missing", format=fmt, mode="w")
    with pytest.raises(MouseDataError, match=r"multi-animal DLC file with individuals \['mouse1', 'mouse2'\]; choose one.*--individual"):
        read_dlc(path, bodyparts=THEIR_MAP)
    with pytest.raises(MouseDataError, match=r"no individual 'mouse3'.*\['mouse1', 'mouse2'\]"):
        read_dlc(path, bodyparts=THEIR_MAP, individual="mouse3")
    xy, _ = read_dlc(path, expected_frames=20, bodyparts=THEIR_MAP, individual="mouse2")
    np.testing.assert_array_equal(xy[:, :, 0], 200 + np.arange(20)[:, None] * np.ones(6))
    # an individual named for a single-animal file is not needed there: ignored
    table = dlc_frame(20)
    table.to_csv(tmp_path / "singleDLC_x.csv")
    assert read_dlc(tmp_path / "singleDLC_x.csv", individual="mouse2")[0].shape == (20, 6, 2)


def test_labelled_data_is_recognised_and_refused(tmp_path):
    """DLC >= 2.2 CollectedData: 3 index columns (labeled-data, video, image), x/y only."""
    columns = pd.MultiIndex.from_product([["Mena"], list(THEIRS), ["x", "y"]], names=["scorer", "bodyparts", "coords"])
    index = pd.MultiIndex.from_tuples([("labeled-data", "video1", f"img{i:05d}.png") for i in range(5)])
    table = pd.DataFrame(np.random.default_rng(0).uniform(0, 500, (5, len(columns))), columns=columns, index=index)
    table.to_csv(tmp_path / "labels.csv")
    table.to_hdf(tmp_path / "labels.h5", key="df_with_missing", mode="w")  # DLC's own call: fixed format
    flat = table.reset_index(drop=True)  # x/y without likelihood, whatever the index
    flat.to_csv(tmp_path / "flat.csv")
    table.to_csv(tmp_path / "CollectedData_Mena.csv")
    for name in ("labels.csv", "labels.h5", "flat.csv", "CollectedData_Mena.csv"):
        with pytest.raises(MouseDataError, match="labelled training data.*not tracking output") as error:
            read_dlc(tmp_path / name, bodyparts=THEIR_MAP)
        assert name in str(error.value)


def test_skipped_frame_is_an_error_not_a_shift(tmp_path):
    table = dlc_frame(60).drop(index=40)  # rows 39 -> 41
    table.to_csv(tmp_path / "gapDLC_x.csv")
    table.to_hdf(tmp_path / "gapDLC_x.h5", key="df_with_missing", format="table", mode="w")
    for name in ("gapDLC_x.csv", "gapDLC_x.h5"):
        with pytest.raises(MouseDataError, match="jumps from 39 to 41 at row 40: a skipped frame") as error:
            read_dlc(tmp_path / name)
        assert name in str(error.value)
    dlc_frame(10).set_axis(np.arange(5, 15)).to_csv(tmp_path / "offsetDLC_x.csv")
    with pytest.raises(MouseDataError, match="row 0 is frame 5, expected 0"):
        read_dlc(tmp_path / "offsetDLC_x.csv")


def test_spreadsheet_resave_with_bom_and_crlf_reads_the_same(tmp_path):
    table = dlc_frame(30)
    table.iloc[0] = np.nan  # an all-empty first row (pandas' index_col=0 quirk)
    table.to_csv(tmp_path / "plainDLC_x.csv")
    text = (tmp_path / "plainDLC_x.csv").read_text()
    (tmp_path / "excelDLC_x.csv").write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    plain, excel = read_dlc(tmp_path / "plainDLC_x.csv", expected_frames=30), read_dlc(tmp_path / "excelDLC_x.csv", expected_frames=30)
    for a, b in zip(plain, excel):
        np.testing.assert_array_equal(a, b)
    assert plain[1][0].tolist() == [0.0] * 6 and plain[1][1].min() > 0.5


def test_malformed_csv_cells_name_the_row(tmp_path):
    lines = dlc_frame(5).to_csv().splitlines()
    cells = lines[5].split(",")
    cells[2] = "oops"
    lines[5] = ",".join(cells)
    (tmp_path / "badDLC_x.csv").write_text("\n".join(lines))
    with pytest.raises(MouseDataError, match=r"data row 2 has 'oops' as its column \(.*'mouth', 'y'\), expected a number"):
        read_dlc(tmp_path / "badDLC_x.csv")


def test_filtered_output_is_used_when_it_is_the_only_one(tmp_path):
    tf = "DLC_resnet50_pawtracking_comparisionMay7shuffle1_500000"
    (tmp_path / f"video4{tf}_filtered.csv").touch()
    (tmp_path / f"video5DLC_dlcrnetms5_maJan1shuffle1_100_el.h5").touch()  # multi-animal tracks are pose too
    (tmp_path / f"video5DLC_dlcrnetms5_maJan1shuffle1_100_full.pickle").touch()
    assert find_dlc_file(tmp_path, "video4").name == f"video4{tf}_filtered.csv"
    assert find_dlc_file(tmp_path, "video4", prefer_filtered=True).name == f"video4{tf}_filtered.csv"
    assert find_dlc_file(tmp_path, "video5").name == "video5DLC_dlcrnetms5_maJan1shuffle1_100_el.h5"


def test_discover_and_windows_read_a_renamed_project_through_the_map(dataset, tmp_path):
    """A dataset whose DLC files use another lab's bodypart names trains through the map."""
    from affectlab.data.mouse_windows import read_window

    root = _copy(dataset, tmp_path)
    for path in sorted((root / "Videos").glob("*DLC*")):
        table = read_dlc_frame(path)
        table.columns = table.columns.set_levels([dict(zip(BODYPARTS, THEIRS))[b] for b in table.columns.levels[1]], level=1)
        if path.suffix == ".h5":
            table.to_hdf(path, key="df_with_missing", format="table", mode="w")
        else:
            table.to_csv(path)
    with pytest.raises(MouseDataError, match="missing bodyparts.*--bodyparts"):
        discover(root)
    trials = discover(root, bodyparts=THEIR_MAP)
    assert [t.annotation_path.name for t in trials] == [t.annotation_path.name for t in discover(dataset)]
    trial = _trial(trials, 1, 2)
    args = (str(trial.video_path), str(trial.dlc_path), trial.start, trial.stop, 0, 8, SIZE)
    original = _trial(discover(dataset), 1, 2)
    mapped = read_window(*args, bodyparts=parse_bodypart_map(THEIR_MAP))
    expected = read_window(str(original.video_path), str(original.dlc_path), *args[2:])
    np.testing.assert_array_equal(mapped["keypoints"], expected["keypoints"])


def read_dlc_frame(path: Path) -> pd.DataFrame:
    """A DLC file as pandas reads it (only for files these tests wrote themselves)."""
    if path.suffix == ".h5":
        return pd.read_hdf(path, key="df_with_missing")
    return pd.read_csv(path, header=[0, 1, 2], index_col=0)


# ------------------------------------------------------------------ bad input


def test_annotation_for_missing_video_fails_before_work(dataset, tmp_path):
    root = _copy(dataset, tmp_path)
    ghost = "prediction_shortened_2023-11-01_CFA_099_999M_tracking.mp4_1.csv"
    shutil.copy(next((root / "Annotations").glob("*.csv")), root / "Annotations" / ghost)
    with pytest.raises(MouseDataError, match="shortened_2023-11-01_CFA_099_999M_tracking.mp4"):
        discover(root)


def test_labels_outside_0_to_7_name_file_row_and_value(tmp_path):
    path = tmp_path / "prediction_v.mp4_1.csv"
    actions = np.zeros(360, dtype=int)
    actions[5] = 9
    pd.DataFrame({"Frame": np.arange(360), "Action": actions}).to_csv(path, index=False)
    with pytest.raises(MouseDataError, match="row 5.*Action 9") as error:
        read_annotation(path)
    assert str(path) in str(error.value)

    pd.DataFrame({"Frame": np.arange(300), "Action": 0}).to_csv(path, index=False)
    with pytest.raises(MouseDataError, match="300 rows"):
        read_annotation(path)
    pd.DataFrame({"frame": np.arange(360), "Action": 0}).to_csv(path, index=False)
    with pytest.raises(MouseDataError, match="Frame"):
        read_annotation(path)

    raw = np.array([0, 1, 2, 3, 4, 5, 6, 7] * 45)
    pd.DataFrame({"Frame": np.arange(360), "Action": raw}).to_csv(path, index=False)
    np.testing.assert_array_equal(read_annotation(path)[:8], [0, 1, 2, 1, 3, 1, 4, 5])


def test_truncated_video_is_a_clear_error(dataset, tmp_path):
    root = _copy(dataset, tmp_path)
    video = sorted((root / "Videos").glob("*.mp4"))[0]
    with open(video, "r+b") as handle:
        handle.truncate(video.stat().st_size // 2)
    with pytest.raises(MouseDataError, match=video.name):
        discover(root)
    with pytest.raises(MouseDataError, match=video.name):
        read_video_frames(video, 0, 10, SIZE)


def test_video_too_short_for_its_trials(dataset, tmp_path):
    root = _copy(dataset, tmp_path)
    video = sorted((root / "Videos").glob("*.mp4"))[0]
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"mp4v"), 30.0, (SIZE, SIZE))
    for _ in range(700):
        writer.write(np.zeros((SIZE, SIZE, 3), np.uint8))
    writer.release()
    with pytest.raises(MouseDataError, match="expected 700"):  # pose rows must match the video
        discover(root)
    for path in (root / "Videos").glob(f"{video.stem}DLC*"):
        path.unlink()
    with pytest.raises(MouseDataError, match="no DeepLabCut file"):
        discover(root)
    with pytest.raises(MouseDataError, match="frames 360-719.*has 700 frames"):
        discover(root, require_pose=False)


# ------------------------------------------------------------------ splits


def _fake_trials(n_animals=8, videos=2, trials=3):
    out = []
    for a in range(n_animals):
        for v in range(videos):
            stem = f"shortened_2023-10-2{v}_CFA_{a:03d}_{100 + a}M_tracking"
            for t in range(1, trials + 1):
                start, stop = trial_frame_range(t, 360)
                out.append(Trial(Path(stem + ".mp4"), stem, f"{100 + a}M", t, Path(f"{stem}_{t}.csv"), None, start, stop))
    return out


def test_group_split_keeps_animals_and_videos_on_one_side():
    trials = _fake_trials()
    splits = group_split(trials, test_fraction=0.25, val_fraction=0.125, seed=7)
    assert sum(len(s) for s in splits.values()) == len(trials)
    animals = {name: {t.animal_id for t in s} for name, s in splits.items()}
    videos = {name: {t.video_id for t in s} for name, s in splits.items()}
    assert [len(animals[n]) for n in ("train", "val", "test")] == [5, 1, 2]
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not animals[a] & animals[b]
        assert not videos[a] & videos[b]
    assert splits == group_split(trials, 0.25, 0.125, seed=7)
    assert any(group_split(trials, 0.25, 0.125, seed=s)["test"] != splits["test"] for s in range(8, 12))


def test_group_kfold_tests_every_animal_once():
    trials = _fake_trials()
    folds = group_kfold(trials, k=4, seed=1)
    tested = []
    for train_val, test in folds:
        assert len(train_val) + len(test) == len(trials)
        assert not {t.animal_id for t in train_val} & {t.animal_id for t in test}
        assert not {t.video_id for t in train_val} & {t.video_id for t in test}
        tested += sorted({t.animal_id for t in test})
    assert sorted(tested) == sorted({t.animal_id for t in trials})
    with pytest.raises(ValueError):
        group_kfold(trials, k=9)


# ------------------------------------------------------------------ pose features

# A unit square of paws with the mouth in front and the tail behind; body length 2.
SQUARE = np.array(
    [[0.5, -0.5], [0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [0.5, 1.5]], dtype=np.float32
)


def test_pose_features_on_a_square_layout():
    xy = np.repeat(SQUARE[None], 4, axis=0)
    features = pose_features(xy, np.ones((4, 6)))
    assert features.shape == (4, 18) and features.dtype == np.float32
    f = features[0]
    assert f[6] == pytest.approx(0.5)  # L_frontpaw-R_frontpaw = 1, body length 2
    assert f[7] == pytest.approx(0.5)  # L_hindpaw-R_hindpaw
    assert f[2] == pytest.approx(0.5)  # L_frontpaw-L_hindpaw
    assert f[0] == pytest.approx(np.sqrt(0.5) / 2)  # mouth-L_frontpaw
    assert f[8] == pytest.approx(np.pi / 2)  # L_frontpaw-MOUTH-R_frontpaw
    assert f[9] == pytest.approx(np.pi / 2)  # L_hindpaw-TAIL_BASE-R_hindpaw
    assert f[10] == pytest.approx(3 * np.pi / 4)  # mouth-L_FRONTPAW-L_hindpaw
    assert f[14] == pytest.approx(np.pi / 4)  # mouth-TAIL_BASE-L_hindpaw
    # Scale invariance: lengths are relative to the body, angles do not change.
    np.testing.assert_allclose(pose_features(xy * 37.0 + 5.0, np.ones((4, 6))), features, rtol=1e-5, atol=1e-6)
    # No duplicated features on a generic pose.
    rng = np.random.default_rng(0)
    generic = pose_features(rng.normal(size=(50, 6, 2)), np.ones((50, 6)))
    assert np.linalg.matrix_rank(generic - generic.mean(0)) == 18


def test_low_likelihood_points_are_interpolated_not_zeroed():
    xy = np.repeat(SQUARE[None], 5, axis=0).copy()
    xy[:, 1, 0] = [0.0, 1.0, 2.0, 3.0, 4.0]  # L_frontpaw moves right by 1 per frame
    likelihood = np.ones((5, 6), dtype=np.float32)
    xy[2, 1] = [99.0, -99.0]  # a garbage detection...
    likelihood[2, 1] = 0.3  # ...with low likelihood
    likelihood[0, 3] = 0.1  # first frame of L_hindpaw unseen: held from frame 1
    xy[0, 3] = [50.0, 50.0]
    likelihood[:, 5] = 0.0  # tail_base never seen
    filled, missing = interpolate_low_likelihood(xy, likelihood, 0.9)
    np.testing.assert_allclose(filled[2, 1], [2.0, 0.0])
    np.testing.assert_allclose(filled[0, 3], SQUARE[3])
    assert missing.tolist() == [False] * 5 + [True]
    np.testing.assert_array_equal(filled[:, 5], 0.0)

    features = pose_features(xy, likelihood)
    assert (features[:, :8] == 0).all()  # no body length without the tail base
    assert (features[:, [9, 12, 13, 14, 15, 16, 17]] == 0).all()  # angles using tail_base
    assert features[0, 8] == pytest.approx(np.pi / 2)
