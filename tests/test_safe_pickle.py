"""The one restricted unpickler: data-file globals only, everything else refused unrun."""

import os
import pickle

import numpy as np
import pytest
import scipy.sparse

from affectlab.data.safe_pickle import UnsafePickleError, load_pickle


class Payload:
    """Unpickling this would create a marker file (what a crafted file would do)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_data_files_round_trip_in_every_protocol(protocol):
    data = {
        "pose": np.arange(24.0).reshape(2, 3, 4).transpose(2, 0, 1),  # not contiguous: protocol 5's axis order
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3)),
        "labels": ["sitting", "standing"],
        "objects": np.array([{"k": 1}, "x"], dtype=object),
        "raw": b"\x00\x01",
        "tags": {1, 2},
        "score": np.float32(0.5),
    }
    out = load_pickle(pickle.dumps(data, protocol=protocol))
    for key in ("pose", "fortran"):
        assert np.array_equal(out[key], data[key]) and out[key].dtype == data[key].dtype
    assert out["labels"] == data["labels"] and out["raw"] == b"\x00\x01" and out["tags"] == {1, 2}
    assert out["objects"][0] == {"k": 1} and out["score"] == np.float32(0.5)


def test_code_execution_is_refused_before_it_runs(tmp_path):
    marker = tmp_path / "pwned"
    for blob in (pickle.dumps(Payload(marker)), pickle.dumps({"pose": np.zeros(3), "x": [Payload(marker)]}, protocol=2)):
        with pytest.raises(UnsafePickleError, match="refusing to unpickle posix.system"):
            load_pickle(blob)
    assert not marker.exists()
    # an object array is no way around it: its items go through the same check
    with pytest.raises(UnsafePickleError):
        load_pickle(pickle.dumps(np.array([Payload(marker)], dtype=object)))
    assert not marker.exists()


def test_sparse_matrices_only_for_body_models(tmp_path):
    regressor = scipy.sparse.csc_matrix(np.array([[0.0, 0.5], [0.25, 0.0]]))
    blob = pickle.dumps({"J_regressor": regressor}, protocol=2)
    with pytest.raises(UnsafePickleError, match="scipy.sparse"):
        load_pickle(blob)
    out = load_pickle(blob, body_model=True)["J_regressor"]
    assert scipy.sparse.issparse(out) and np.array_equal(out.toarray(), regressor.toarray())


def test_truncated_and_foreign_bytes_are_clear_errors(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"pose": np.zeros((5, 72))}, protocol=2)[:40])
    with pytest.raises(ValueError, match=f"{path}: not a readable pickle"):
        load_pickle(path)
    with pytest.raises(ValueError, match="not a readable pickle"):
        load_pickle(b"GIF89a not a pickle")
