"""Reading the published .npy without running code from it: crafted pickles are refused."""

import os
from pathlib import Path

import numpy as np
import pytest

from curatornet_pipeline.core.data import vectors as vectors_core
from curatornet_pipeline.core.data.formats import DataError
from curatornet_pipeline.core.data.npy_safe import load_object_array


class CreatesFile:
    """A pickle payload that creates a file when unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.mkdir, (str(self.marker),))


class CreatesFileReturnsVector:
    """A payload that creates a file, then stands in for a valid float32 vector."""

    def __init__(self, marker: Path, dims: int) -> None:
        self.marker, self.dims = marker, dims

    def __reduce__(self):
        code = (
            f"(open({str(self.marker)!r}, 'w').write('pwned'), "
            f"__import__('numpy').ones({self.dims}, dtype='float32'))[1]"
        )
        return (eval, (code,))


def object_array(rows: list) -> np.ndarray:
    array = np.empty((len(rows), 2), dtype=object)
    for i, (artwork, vector) in enumerate(rows):
        array[i, 0], array[i, 1] = artwork, vector
    return array


def genuine_rows(n: int = 3, dims: int = 2048) -> list:
    rng = np.random.default_rng(0)
    return [(f"art{i}", rng.normal(size=dims).astype(np.float32)) for i in range(n)]


def test_genuine_object_array_of_float32_2048_imports(tmp_path):
    rows = genuine_rows()
    npy = tmp_path / "resnet_embeddings.npy"
    np.save(npy, object_array(rows), allow_pickle=True)
    imported = vectors_core.import_embeddings(npy, tmp_path / "embeddings.npz")
    assert imported.ids.tolist() == ["art0", "art1", "art2"]
    assert imported.vectors.shape == (3, 2048)
    np.testing.assert_array_equal(imported.vectors, np.stack([v for _, v in rows]))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
def test_every_pickle_protocol_of_a_genuine_array_reads(tmp_path, protocol):
    """np.save on numpy 1.x wrote protocol 2 or 3; protocol 2 stores bytes via _codecs.encode."""
    import pickle

    from numpy.lib import format as npy_format

    array = object_array(genuine_rows(2, dims=4))
    path = tmp_path / "p.npy"
    with open(path, "wb") as handle:
        npy_format.write_array_header_1_0(handle, npy_format.header_data_from_array_1_0(array))
        pickle.dump(array, handle, protocol=protocol)
    back = load_object_array(path)
    assert back[1, 0] == "art1"
    np.testing.assert_array_equal(back[1, 1], array[1, 1])


@pytest.mark.parametrize("payload", ["creates_file", "creates_file_returns_vector"])
def test_crafted_pickles_are_refused_and_run_nothing(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = (
        CreatesFile(marker)
        if payload == "creates_file"
        else CreatesFileReturnsVector(marker, dims=2048)
    )
    rows = genuine_rows()
    rows[1] = ("art1", evil)
    npy = tmp_path / "resnet_embeddings.npy"
    np.save(npy, object_array(rows), allow_pickle=True)

    with pytest.raises(DataError) as info:
        vectors_core.import_embeddings(npy, tmp_path / "embeddings.npz")
    refused = "posix.mkdir" if payload == "creates_file" else "builtins.eval"
    assert info.value.file == str(npy)
    assert refused in str(info.value), str(info.value)
    assert not marker.exists()
    assert not (tmp_path / "embeddings.npz").exists()

    # the payload is real: numpy's own loader runs it
    loaded = np.load(npy, allow_pickle=True)
    assert marker.exists()
    if payload == "creates_file_returns_vector":
        assert loaded[1, 1].shape == (2048,)


def test_truncated_and_malformed_npy_are_data_errors(tmp_path):
    npy = tmp_path / "full.npy"
    np.save(npy, object_array(genuine_rows(3, dims=16)), allow_pickle=True)
    raw = npy.read_bytes()
    cases = {
        "truncated.npy": (raw[: len(raw) // 2], "truncated or malformed"),
        "header_only.npy": (raw[:128], "truncated or malformed"),
        "not_npy.npy": (b"PK\x03\x04 hello", "not a .npy file"),
        "empty.npy": (b"", "not a .npy file"),
    }
    for name, (content, words) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(DataError) as info:
            vectors_core.import_embeddings(path, tmp_path / "out.npz")
        assert info.value.file == str(path)
        assert words in str(info.value), (name, str(info.value))
    with pytest.raises(DataError, match="file not found"):
        vectors_core.import_embeddings(tmp_path / "absent.npy", tmp_path / "out.npz")


def test_import_command_refuses_a_crafted_file_with_exit_2(tmp_path, capsys):
    from curatornet_pipeline.cli import main

    marker = tmp_path / "pwned"
    rows = genuine_rows(2, dims=8)
    rows[0] = ("art0", CreatesFileReturnsVector(marker, dims=8))
    npy = tmp_path / "resnet_embeddings.npy"
    np.save(npy, object_array(rows), allow_pickle=True)
    assert main(["import-embeddings", str(npy), "--data", str(tmp_path / "data")]) == 2
    assert "builtins.eval" in capsys.readouterr().err
    assert not marker.exists() and not (tmp_path / "data" / "embeddings.npz").exists()


class OtherCodec:
    """Allowed global, disallowed argument: _codecs.encode with a codec other than latin-1."""

    def __reduce__(self):
        import _codecs

        return (_codecs.encode, ("x", "rot13"))


def test_codec_other_than_latin1_is_refused(tmp_path):
    rows = genuine_rows(2, dims=4)
    rows[1] = ("art1", OtherCodec())
    npy = tmp_path / "codec.npy"
    np.save(npy, object_array(rows), allow_pickle=True)
    with pytest.raises(DataError, match=r"_codecs\.encode\(\.\.\., 'rot13'\)"):
        load_object_array(npy)
