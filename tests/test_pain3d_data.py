"""The 3D-Pain reader: names, identities, the split CSV and neutral references."""

import pytest

from affectlab.data.pain3d import Pain3DDataError, identity_of, image_base_name, neutral_references, read_pain3d


def test_names_parse_as_the_original_loader_does():
    assert image_base_name("flame_sample_0100_pain_3_textured_view_000_inpainted") == "flame_sample_0100_pain_3"
    assert image_base_name("flame_sample_0100_neutral_view_002") == "flame_sample_0100_neutral"
    assert identity_of("flame_sample_0100_pain_3") == "flame_sample_0100"
    assert identity_of("flame_sample_0100_neutral") == "flame_sample_0100"


def test_splits_are_identity_disjoint_and_neutrals_only_reference(pain3d_dir):
    table, paths = read_pain3d(pain3d_dir, None, 0)
    labelled = table[~table["neutral"]]
    assert labelled.groupby("identity")["split"].nunique().max() == 1
    assert set(labelled["split"]) == {"train", "val", "test"}
    assert table[table["neutral"]]["split"].isna().all()  # with a CSV, neutrals are references only
    assert len(labelled) == 12 * 4 * 2  # identities × pain configurations × views
    refs = neutral_references(labelled, table, n_shots=1, seed=0)
    by_id = table.set_index("sample_id")
    for (identity, ref) in zip(labelled["identity"], refs[:, 0]):
        assert by_id.loc[ref, "identity"] == identity and by_id.loc[ref, "neutral"]
    assert all(p.endswith(".jpg") for p in paths.values())


def test_a_bad_split_value_names_the_line(pain3d_dir, tmp_path):
    bad = tmp_path / "split.csv"
    lines = (pain3d_dir / "uniform_data_70_20_10_split.csv").read_text().splitlines()
    lines[3] = lines[3].rsplit(",", 1)[0] + ",7"
    bad.write_text("\n".join(lines))
    with pytest.raises(Pain3DDataError, match=r"split.csv:4: split must be 0, 1 or 2"):
        read_pain3d(pain3d_dir, bad, 0)
