"""affectlab.data.sequences: padding and masks on hand-made ragged batches, masked means, length buckets.

The batch through a real Ray Dataset is in tests/test_mead_data.py (one Ray test for both)."""

import numpy as np
import pytest
import torch

from affectlab.data.sequences import SequenceCollate, bucket_by_length, masked_mean, pad_rows


def ragged_batch(lengths=(3, 5, 2), rate=4):
    """What Ray Data hands a collate function for ragged rows: object arrays of per-row arrays."""
    motion = np.empty(len(lengths), dtype=object)
    audio = np.empty(len(lengths), dtype=object)
    for i, n in enumerate(lengths):
        motion[i] = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * i
        audio[i] = np.arange(n * rate, dtype=np.float32) + 1000 * i
    return {
        "motion": motion, "audio": audio, "identity": np.array([4, 7, 9]),
        "name": np.array(["a", "b", "c"], dtype=object),
    }  # fmt: skip


AXES = {"frame": {"motion": 1, "audio": 4}}


def test_ragged_rows_are_padded_to_the_batch_max_with_a_mask():
    out = SequenceCollate(AXES)(ragged_batch())
    assert set(out) == {"motion", "audio", "identity", "frame_mask", "frame_length"}  # strings left out for torch
    assert all(isinstance(v, torch.Tensor) for v in out.values())
    assert out["motion"].shape == (3, 5, 2) and out["audio"].shape == (3, 20)
    assert out["frame_mask"].dtype == torch.bool
    assert out["frame_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert out["frame_length"].tolist() == [3, 5, 2]
    batch = ragged_batch()
    np.testing.assert_array_equal(out["motion"][0, :3].numpy(), batch["motion"][0])
    assert (out["motion"][0, 3:] == 0).all() and (out["audio"][2, 8:] == 0).all()
    np.testing.assert_array_equal(out["audio"][1].numpy(), batch["audio"][1])
    assert out["identity"].tolist() == [4, 7, 9]


def test_padding_to_a_multiple_and_numpy_output_keeps_names():
    out = SequenceCollate(AXES, multiple=4, to_torch=False, pad_value=-1.0)(ragged_batch())
    assert out["motion"].shape == (3, 8, 2) and out["audio"].shape == (3, 32)
    assert out["frame_mask"].sum(axis=1).tolist() == [3, 5, 2]
    assert (out["motion"][1, 5:] == -1).all()
    assert out["name"].tolist() == ["a", "b", "c"]


def test_stacked_batches_and_lists_give_the_same_result():
    """Ray stacks a column when every row of the batch has one shape."""
    batch = ragged_batch(lengths=(4, 4, 4))
    stacked = {**batch, "motion": np.stack(list(batch["motion"])), "audio": np.stack(list(batch["audio"]))}
    listed = {**batch, "motion": list(batch["motion"]), "audio": list(batch["audio"])}
    a, b, c = (SequenceCollate(AXES)(x) for x in (batch, stacked, listed))
    for key in a:
        assert torch.equal(a[key], b[key]) and torch.equal(a[key], c[key])
    assert a["frame_mask"].all()


def test_length_is_what_every_column_covers_and_rates_may_be_fractional():
    rate = 16000 / 30  # 533.3 samples per frame at 30 fps
    rows = {"verts": [np.ones((6, 3)), np.ones((4, 3))], "audio": [np.ones(round(6 * rate)), np.ones(round(2.5 * rate))]}
    out = SequenceCollate({"frame": {"verts": 1, "audio": rate}}, to_torch=False)(rows)
    assert out["frame_length"].tolist() == [6, 2]  # row 1: audio covers 2 whole frames of its 4
    assert out["verts"].shape == (2, 6, 3) and out["audio"].shape == (2, 3200)
    assert out["frame_mask"].tolist() == [[True] * 6, [True, True] + [False] * 4]


def test_bad_columns_are_named():
    batch = ragged_batch()
    with pytest.raises(ValueError, match="column 'audio' varies in length .* on no time axis"):
        SequenceCollate({"frame": {"motion": 1}})(batch)
    with pytest.raises(ValueError, match="column 'motion': rows differ beyond the time axis"):
        pad_rows([np.zeros((2, 3)), np.zeros((2, 4))], 2, column="motion")
    with pytest.raises(ValueError, match="on two time axes"):
        SequenceCollate({"a": {"motion": 1}, "b": {"motion": 2}})


def test_masked_mean_numpy_and_torch():
    x = np.array([[[1.0, 3.0], [5.0, 7.0], [100.0, 100.0]], [[2.0, 2.0], [100.0, 100.0], [100.0, 100.0]]])
    mask = np.array([[True, True, False], [True, False, False]])
    # (1+3+5+7+2+2) / 6 positions
    assert masked_mean(x, mask) == pytest.approx(20 / 6)
    assert masked_mean(torch.tensor(x), torch.tensor(mask)).item() == pytest.approx(20 / 6)
    assert masked_mean(x[..., 0], mask) == pytest.approx(8 / 3)
    assert masked_mean(torch.tensor(x), torch.zeros(2, 3, dtype=torch.bool)).item() == 0.0


def test_bucket_by_length_is_seeded_and_groups_similar_lengths():
    lengths = np.random.default_rng(3).permutation(np.arange(20, 200, 7))[:23]  # distinct lengths
    batches = bucket_by_length(lengths, 4, seed=1)
    assert sorted(np.concatenate(batches).tolist()) == list(range(23))
    ordered = np.sort(lengths)
    runs = {tuple(ordered[k : k + 4]) for k in range(0, 23, 4)}  # consecutive runs in length order
    assert {tuple(np.sort(lengths[b])) for b in batches} == runs
    assert [b.tolist() for b in bucket_by_length(lengths, 4, seed=1)] == [b.tolist() for b in batches]
    assert [b.tolist() for b in bucket_by_length(lengths, 4, seed=2)] != [b.tolist() for b in batches]
    assert [len(b) for b in bucket_by_length(lengths, 4, seed=1, drop_last=True)] == [4] * 5
