"""The DLC reader on real DeepLabCut output of other labs (``../shared/data/dlc/``, read in
place): bodypart maps onto their names, multi-animal tracks, filtered output, labelled data."""

from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from affectlab.data.dlc import MouseDataError, find_dlc_file, read_dlc, read_pose_table

DLC_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "dlc"
pytestmark = pytest.mark.skipif(not DLC_DIR.is_dir(), reason=f"real DLC files not found in {DLC_DIR}")

BSOID = "raw_clip1DLC_resnet50_OpenFieldHighResApr8shuffle1_1030000.h5"  # table format, df_with_missing
DEEPOF_CSV = "testDLC_csv_table.csv"
MADLC = "testDLC_h5_table_madlc.h5"  # fixed format, key /tracks
RAT_FILTERED = "Grupo2R5S15 - TrimDLC_resnet101_CVMar25shuffle1_229000_filtered.csv"
COLLECTED = "CollectedData_Mena.csv"

# ours=theirs for each lab's names (a bottom-up mouse, two top-view mice, a rat)
BSOID_MAP = "mouth=Snout,L_frontpaw=Front Paw L,R_frontpaw=Front Paw R,L_hindpaw=Hind Paw L,R_hindpaw=Hind Paw R,tail_base=Butt/Proximal Tail"
DEEPOF_MAP = "mouth=Nose,L_frontpaw=Left_fhip,R_frontpaw=Right_fhip,L_hindpaw=Left_bhip,R_hindpaw=Right_bhip,tail_base=Tail_base"
RAT_MAP = "mouth=Snout,L_frontpaw=LeftPaw1,R_frontpaw=RightPaw1,L_hindpaw=LeftPaw2,R_hindpaw=RightPaw2,tail_base=TailBase"


def column(table: pd.DataFrame, *label) -> np.ndarray:
    """One column of a trusted file as pandas reads it (the cross-check)."""
    return table[tuple(label)].to_numpy(np.float32)


def test_bsoid_h5_through_a_map_of_its_names():
    path = DLC_DIR / BSOID
    assert find_dlc_file(DLC_DIR, "raw_clip1") == path
    with pytest.raises(MouseDataError, match="missing bodyparts.*'Snout', 'Front Paw R', 'Front Paw L'.*--bodyparts"):
        read_dlc(path)
    xy, likelihood = read_dlc(path, expected_frames=7200, bodyparts=BSOID_MAP)
    assert xy.shape == (7200, 6, 2) and likelihood.shape == (7200, 6)
    trusted = pd.read_hdf(path)  # a known table-format file: pandas as the reference
    scorer = trusted.columns[0][0]
    np.testing.assert_array_equal(xy[:, 0, 0], column(trusted, scorer, "Snout", "x"))
    np.testing.assert_array_equal(xy[:, 3, 1], column(trusted, scorer, "Hind Paw L", "y"))
    np.testing.assert_array_equal(likelihood[:, 5], column(trusted, scorer, "Butt/Proximal Tail", "likelihood"))


def test_deepof_csv_and_a_spreadsheet_resave_of_it(tmp_path):
    path = DLC_DIR / DEEPOF_CSV
    xy, likelihood = read_dlc(path, expected_frames=97, bodyparts=DEEPOF_MAP)
    trusted = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    scorer = trusted.columns[0][0]
    np.testing.assert_array_equal(xy[:, 0], np.stack([column(trusted, scorer, "Nose", c) for c in "xy"], -1))
    np.testing.assert_array_equal(likelihood[:, 2], column(trusted, scorer, "Right_fhip", "likelihood"))
    resaved = tmp_path / "resavedDLC_x.csv"  # UTF-8 BOM and CRLF, as a spreadsheet writes it
    resaved.write_bytes(b"\xef\xbb\xbf" + path.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", b"\r\n"))
    np.testing.assert_array_equal(read_dlc(resaved, bodyparts=DEEPOF_MAP)[0], xy)


def test_madlc_tracks_need_an_individual():
    path = DLC_DIR / MADLC
    with h5py.File(path) as handle:  # the real file is pandas *fixed* format with numeric blocks only
        assert handle["tracks"].attrs["pandas_type"] == b"frame"
        assert handle["tracks/block0_values"].dtype == np.float64
    table = read_pose_table(path)
    assert table.levels == ("scorer", "individuals", "bodyparts", "coords")
    with pytest.raises(MouseDataError, match=r"individuals \['mouse_black_tail', 'mouse_white_tail'\]; choose one"):
        read_dlc(path, bodyparts=DEEPOF_MAP)
    xy, likelihood = read_dlc(path, expected_frames=100, bodyparts=DEEPOF_MAP, individual="mouse_white_tail")
    trusted = pd.read_hdf(path)
    scorer = trusted.columns[0][0]
    np.testing.assert_array_equal(xy[:, 5, 0], column(trusted, scorer, "mouse_white_tail", "Tail_base", "x"))
    np.testing.assert_array_equal(likelihood[:, 0], column(trusted, scorer, "mouse_white_tail", "Nose", "likelihood"))
    black = read_dlc(path, bodyparts=DEEPOF_MAP, individual="mouse_black_tail")[0]
    assert not np.array_equal(black, xy)


def test_filtered_rat_csv_with_spaces_in_its_name():
    path = find_dlc_file(DLC_DIR, "Grupo2R5S15 - Trim")  # only filtered output exists for this video
    assert path == DLC_DIR / RAT_FILTERED
    xy, likelihood = read_dlc(path, expected_frames=1074, bodyparts=RAT_MAP)
    trusted = pd.read_csv(path, header=[0, 1, 2], index_col=0)
    scorer = trusted.columns[0][0]
    np.testing.assert_array_equal(xy[:, 4, 0], column(trusted, scorer, "RightPaw2", "x"))
    assert 0.0 <= likelihood.min() and likelihood.max() <= 1.0


def test_collected_data_is_refused_and_two_scorers_are_ambiguous(tmp_path):
    with pytest.raises(MouseDataError, match="labelled training data.*not tracking output") as error:
        read_dlc(DLC_DIR / COLLECTED, bodyparts=RAT_MAP)
    assert COLLECTED in str(error.value)
    upload = tmp_path / "upload.csv"  # recognised by its layout too, as an upload with no name
    upload.write_bytes((DLC_DIR / COLLECTED).read_bytes())
    with pytest.raises(MouseDataError, match="labelled training data"):
        read_dlc(upload, bodyparts=RAT_MAP)
    with pytest.raises(MouseDataError, match="several DLC scorers for video test.*testDLC_csv_table.csv.*testDLC_h5_table_madlc.h5"):
        find_dlc_file(DLC_DIR, "test")
