"""Readers and validation of the published file format (core/data/formats.py)."""

import hashlib
import os
import pickle
from pathlib import Path

import numpy as np
import pytest

from curatornet_pipeline.core.data import formats as data
from curatornet_pipeline.core.data import vectors as vectors_core
from curatornet_pipeline.core.data.formats import DataError, DatasetPaths, ReadOptions
from curatornet_pipeline.core.types import ItemVectors

HERE = Path(__file__).parent / "data"
GOOD = HERE / "good"
BAD = HERE / "bad"
DROP = ReadOptions(on_unknown_items="drop", on_missing_images="drop")


@pytest.fixture
def inventory():
    return data.read_inventory(GOOD / "inventory.csv")


def assert_located(exc: DataError, path: Path, line: int | None, field: str | None, *words: str):
    """The error names the file, line and field, in its attributes and its message."""
    assert exc.file == str(path)
    assert exc.line == line
    assert exc.field == field
    message = str(exc)
    assert message.startswith(str(path))
    if line is not None:
        assert f"line {line}," in message or f"line {line}:" in message
    if field is not None:
        assert f"field '{field}'" in message
    for word in words:
        assert word in message, message


# --- inventory ---------------------------------------------------------------------------


def test_good_inventory_bom_whitespace_extra_columns_float_timestamp(inventory):
    assert list(inventory.columns) == [
        "artwork_id_hash",
        "artist_id_hash",
        "upload_timestamp",
        "line",
    ]
    assert inventory["artwork_id_hash"].tolist() == ["a1", "a2", "a3", "a4"]  # BOM, " a1 " stripped
    assert inventory["upload_timestamp"].dtype == np.int64
    assert inventory["upload_timestamp"].tolist()[2] == 1_500_000_200  # "1.5000002e9"
    assert inventory["line"].tolist() == [2, 3, 4, 5]
    assert inventory["artist_id_hash"].tolist() == ["art1", "art1", "art2", "art3"]


@pytest.mark.parametrize(
    ("name", "line", "field", "words"),
    [
        ("inventory_missing_column.csv", 1, None, ("artist_id_hash",)),
        ("inventory_duplicate_id.csv", 4, "artwork_id_hash", ("duplicate", "'a1'", "line 2")),
        ("inventory_no_artist.csv", 3, "artist_id_hash", ("without artist",)),
        ("inventory_timestamp_missing.csv", 4, "upload_timestamp", ("missing value",)),
        ("inventory_unsafe_id.csv", 3, "artwork_id_hash", ("unsafe", "../../etc/passwd")),
        ("inventory_empty.csv", None, None, ("empty file",)),
        ("inventory_header_only.csv", None, None, ("no data rows",)),
    ],
)
def test_bad_inventory(name, line, field, words):
    with pytest.raises(DataError) as info:
        data.read_inventory(BAD / name)
    assert_located(info.value, BAD / name, line, field, *words)


@pytest.mark.parametrize("bad_id", ["..", ".", "a/b", "a\\b", "C:x", "/abs", "a\x00b", "a\tb"])
def test_unsafe_artwork_ids(tmp_path, bad_id):
    path = tmp_path / "inventory.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        f.write(f'artwork_id_hash,artist_id_hash,upload_timestamp\n"{bad_id}",x,1\n')
    with pytest.raises(DataError, match="unsafe|empty") as info:
        data.read_inventory(path)
    assert (info.value.line, info.value.field) == (2, "artwork_id_hash")


def test_missing_file_and_line_numbers_across_quoted_newlines(tmp_path):
    with pytest.raises(DataError, match="file not found") as info:
        data.read_inventory(tmp_path / "nope.csv")
    assert info.value.line is None
    path = tmp_path / "inventory.csv"
    path.write_text(
        'artwork_id_hash,artist_id_hash,upload_timestamp,note\na1,x,1,"two\nlines"\n\na2,x,zz,\n'
    )
    with pytest.raises(DataError, match="not a number: 'zz'") as info:
        data.read_inventory(path)
    assert info.value.line == 5  # the record on lines 2-3 and the blank line 4 are counted


# --- purchases ---------------------------------------------------------------------------


def test_good_purchases_long_table_and_report(inventory):
    df, report = data.read_purchases(GOOD / "purchases.csv", inventory)
    assert list(df.columns) == ["user_id_hash", "artwork_id_hash", "purchase_timestamp", "line"]
    assert df["artwork_id_hash"].tolist() == ["a1", "a2", "a3", "a3", "a4", "a1"]
    assert df["line"].tolist() == [2, 3, 3, 4, 5, 6]
    assert df["purchase_timestamp"].dtype == np.int64
    assert report["rows"] == 5
    assert report["purchases"] == 6
    assert report["users"] == 2
    assert report["baskets"] == 4  # u1's rows on lines 4 and 5 share a timestamp
    assert report["dropped_unknown"] == 0


def test_baskets_merge_rows_with_equal_timestamp(inventory):
    df, _ = data.read_purchases(GOOD / "purchases.csv", inventory)
    b = data.baskets(df)
    assert list(b.columns) == list(data.BASKET_COLUMNS)
    assert b["purchase_timestamp"].is_monotonic_increasing
    rows = list(zip(b["user_id_hash"], b["items"], b["basket"], b["line"], strict=True))
    assert rows == [
        ("u1", ("a1",), 0, 2),
        ("u2", ("a1",), 0, 6),
        ("u2", ("a2", "a3"), 1, 3),
        ("u1", ("a3", "a4"), 1, 4),
    ]
    assert data.baskets(df.iloc[:0]).empty


@pytest.mark.parametrize(
    ("name", "line", "field", "words"),
    [
        ("purchases_missing_column.csv", 1, None, ("purchased_artwork_ids_hash",)),
        ("purchases_basket_not_list.csv", 3, "purchased_artwork_ids_hash", ("not a list", "'foo'")),
        ("purchases_basket_not_str.csv", 3, "purchased_artwork_ids_hash", ("not a string", "3")),
        ("purchases_basket_empty.csv", 3, "purchased_artwork_ids_hash", ("empty basket",)),
        ("purchases_basket_code.csv", 4, "purchased_artwork_ids_hash", ("__import__",)),
        ("purchases_timestamp_missing.csv", 3, "purchase_timestamp", ("missing value",)),
        ("purchases_timestamp_text.csv", 4, "purchase_timestamp", ("not a number: 'abc'",)),
        ("purchases_unknown_id.csv", 3, "purchased_artwork_ids_hash", ("unknown", "'zz9'")),
        ("purchases_unquoted_basket.csv", 2, None, ("4 fields", "header has 3")),
    ],
)
def test_bad_purchases(inventory, tmp_path, monkeypatch, name, line, field, words):
    monkeypatch.chdir(tmp_path)  # the code basket would create ./PWNED if it were executed
    with pytest.raises(DataError) as info:
        data.read_purchases(BAD / name, inventory)
    assert_located(info.value, BAD / name, line, field, *words)
    assert not (tmp_path / "PWNED").exists()


def test_unknown_ids_dropped_and_counted(inventory):
    df, report = data.read_purchases(BAD / "purchases_unknown_id.csv", inventory, DROP)
    assert df["artwork_id_hash"].tolist() == ["a1", "a2"]
    assert report["rows"] == 3
    assert report["dropped_unknown"] == 2
    assert report["dropped_unknown_examples"] == [
        {"line": 3, "artwork_id_hash": "zz9"},
        {"line": 4, "artwork_id_hash": "zz8"},
    ]
    assert report["users"] == 2  # u3 bought only an unknown item


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1600000000", 1600000000), ("1.6e9", 1600000000), ("+7", 7), ("16000000.00e2", 1600000000)],
)
def test_timestamps_accepted(tmp_path, text, expected):
    path = tmp_path / "inventory.csv"
    path.write_text(f"artwork_id_hash,artist_id_hash,upload_timestamp\na,x,{text}\n")
    assert data.read_inventory(path)["upload_timestamp"].tolist() == [expected]


@pytest.mark.parametrize("text", ["nan", "inf", "1.5", "1e30", "0x10", "1_000", "12abc"])
def test_timestamps_refused(tmp_path, text):
    path = tmp_path / "inventory.csv"
    path.write_text(f"artwork_id_hash,artist_id_hash,upload_timestamp\na,x,{text}\n")
    with pytest.raises(DataError) as info:
        data.read_inventory(path)
    assert (info.value.line, info.value.field) == (2, "upload_timestamp")


def test_long_basket_text_is_truncated_in_message(inventory, tmp_path):
    path = tmp_path / "purchases.csv"
    path.write_text(
        f'user_id_hash,purchased_artwork_ids_hash,purchase_timestamp\nu,"{"x" * 500}",1\n'
    )
    with pytest.raises(DataError) as info:
        data.read_purchases(path, inventory)
    assert len(str(info.value)) < 250
    assert "…" in str(info.value)


def test_read_options_validated():
    with pytest.raises(ValueError, match="on_unknown_items"):
        ReadOptions(on_unknown_items="ignore")


# --- images --------------------------------------------------------------------------------


def make_images(folder: Path, names: list[str]) -> Path:
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(name.encode())
    return folder


def test_image_manifest(inventory, tmp_path):
    folder = make_images(
        tmp_path / "images", ["a1.jpg", "a2.PNG", "a3.jpeg", "a4.webp", "x.jpg", "notes.txt"]
    )
    df, report = data.image_manifest(folder, inventory)
    assert df["artwork_id_hash"].tolist() == ["a1", "a2", "a3", "a4"]
    assert all(Path(p).is_absolute() and Path(p).exists() for p in df["path"])
    assert Path(df["path"][1]).name == "a2.PNG"
    assert df["content_hash"][0] == hashlib.sha256(b"a1.jpg").hexdigest()
    assert df["size_bytes"].tolist() == [6, 6, 7, 7]
    assert report["unmatched_files"] == 2
    assert report["dropped_missing"] == 0


def test_missing_image_error_and_drop(inventory, tmp_path):
    folder = make_images(tmp_path / "images", ["a1.jpg", "a2.png", "a4.webp"])
    with pytest.raises(DataError) as info:
        data.image_manifest(folder, inventory)
    src = GOOD / "inventory.csv"
    assert_located(info.value, src, 4, "artwork_id_hash", "no image", "'a3'", str(folder.resolve()))
    df, report = data.image_manifest(folder, inventory, DROP)
    assert df["artwork_id_hash"].tolist() == ["a1", "a2", "a4"]
    assert report["dropped_missing"] == 1
    assert report["dropped_missing_examples"] == [{"line": 4, "artwork_id_hash": "a3"}]


def test_several_images_for_one_id_and_missing_folder(inventory, tmp_path):
    folder = make_images(tmp_path / "images", ["a1.jpg", "a1.png", "a2.png", "a3.png", "a4.png"])
    with pytest.raises(DataError, match="several images") as info:
        data.image_manifest(folder, inventory)
    assert (info.value.line, info.value.field) == (2, "artwork_id_hash")
    with pytest.raises(DataError, match="image folder not found"):
        data.image_manifest(tmp_path / "nope", inventory)


def test_symlink_outside_image_folder_refused(inventory, tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"secret")
    folder = make_images(tmp_path / "images", ["a1.jpg", "a2.jpg", "a3.jpg"])
    os.symlink(secret, folder / "a4.jpg")
    with pytest.raises(DataError, match="outside the image folder") as info:
        data.image_manifest(folder, inventory)
    assert info.value.file == str(folder / "a4.jpg")


# --- embeddings ----------------------------------------------------------------------------


def write_npy(path: Path, rows: list) -> Path:
    array = np.empty((len(rows), 2), dtype=object)
    for i, (artwork, vector) in enumerate(rows):
        array[i, 0], array[i, 1] = artwork, vector
    np.save(path, array, allow_pickle=True)
    return path


def test_import_embeddings_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rows = [(f"id{i}", rng.normal(size=8)) for i in range(5)]
    npy = write_npy(tmp_path / "resnet_embeddings.npy", rows)
    out = tmp_path / "data" / "embeddings.npz"
    imported = vectors_core.import_embeddings(npy, out)
    back = vectors_core.read_imported_embeddings(out)
    assert isinstance(back, ItemVectors)
    assert back.ids.dtype.kind == "U"
    assert back.ids.tolist() == [f"id{i}" for i in range(5)]
    assert back.vectors.dtype == np.float32
    np.testing.assert_array_equal(back.vectors, imported.vectors)
    np.testing.assert_allclose(back.vectors, np.stack([v for _, v in rows]), rtol=1e-6)
    with np.load(out, allow_pickle=False) as npz:  # the bundle needs no pickle
        assert set(npz.files) >= {"ids", "vectors"}


@pytest.mark.parametrize(
    ("bad_row", "field", "words"),
    [
        (("id3", np.zeros(5)), "vector", ("shape (5,)", "(8,)")),
        (("id3", np.full(8, np.nan)), "vector", ("NaN",)),
        (("id0", np.zeros(8)), "artwork_id_hash", ("duplicate", "row 0")),
        ((3, np.zeros(8)), "artwork_id_hash", ("not a non-empty string",)),
    ],
)
def test_import_embeddings_malformed_row_3(tmp_path, bad_row, field, words):
    rows = [(f"id{i}", np.zeros(8)) for i in range(5)]
    rows[3] = bad_row
    npy = write_npy(tmp_path / "bad.npy", rows)
    with pytest.raises(DataError) as info:
        vectors_core.import_embeddings(npy, tmp_path / "embeddings.npz")
    assert info.value.row == 3
    assert_located(info.value, npy, None, field, "row 3", *words)
    assert not (tmp_path / "embeddings.npz").exists()


def test_import_embeddings_wrong_shape_and_bad_bundle(tmp_path):
    npy = tmp_path / "plain.npy"
    np.save(npy, np.zeros((4, 2048), dtype=np.float32))
    with pytest.raises(DataError, match=r"shape \(n, 2\)"):
        vectors_core.import_embeddings(npy, tmp_path / "out.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="not an embeddings bundle"):
        vectors_core.read_imported_embeddings(tmp_path / "junk.npz")
    with pytest.raises(DataError, match="import-embeddings"):
        vectors_core.read_imported_embeddings(tmp_path / "missing.npz")


# --- paths and errors ----------------------------------------------------------------------


def test_dataset_paths(tmp_path):
    paths = DatasetPaths(tmp_path)
    assert paths.imported_embeddings == tmp_path / "embeddings.npz"
    assert not paths.exists()
    (tmp_path / "purchases.csv").write_text("x")
    (tmp_path / "inventory.csv").write_text("x")
    (tmp_path / "embeddings.npz").write_bytes(b"x")
    assert paths.exists()
    (tmp_path / "images").mkdir()
    assert paths.describe()["images"] == {"path": str(tmp_path / "images"), "exists": True}


def test_data_error_format_and_pickle():
    exc = DataError("not a number: 'abc'", "purchases.csv", 7, "purchase_timestamp")
    assert str(exc) == "purchases.csv, line 7, field 'purchase_timestamp': not a number: 'abc'"
    back = pickle.loads(pickle.dumps(exc))
    assert (back.file, back.line, back.field, str(back)) == (exc.file, 7, exc.field, str(exc))
    assert isinstance(exc, ValueError)


# --- encoding and imported vectors ------------------------------------------------------


def test_non_utf8_byte_is_reported_at_its_line(tmp_path):
    rows = ["artwork_id_hash,artist_id_hash,upload_timestamp"]
    rows += [f"a{i},artist{i % 3},{1_500_000_000 + i}" for i in range(1, 60)]
    text = "\n".join(rows) + "\n"
    raw = bytearray(text.encode())
    at = raw.index(b"a37,")  # line 38 (header is line 1)
    raw[at + 1 : at + 2] = b"\xff"
    path = tmp_path / "inventory.csv"
    path.write_bytes(bytes(raw))
    with pytest.raises(DataError) as info:
        data.read_inventory(path)
    assert_located(info.value, path, 38, None, "not UTF-8", "0xff", "byte 2 of the line")


def _vectors(ids: list[str]) -> ItemVectors:
    return ItemVectors(
        ids=np.asarray(ids, dtype=str),
        vectors=np.arange(len(ids) * 4, dtype=np.float32).reshape(len(ids), 4),
        meta={"source": "imported"},
    )


def test_item_without_vector_is_an_error_naming_its_inventory_line(inventory):
    ids = inventory["artwork_id_hash"].tolist()
    missing = ids[2]
    vectors = _vectors([i for i in ids if i != missing] + ["not-in-inventory"])
    with pytest.raises(DataError) as info:
        vectors_core.align_imported_embeddings(vectors, inventory, "error", "embeddings.npz")
    line = int(inventory["line"].iloc[2])
    assert_located(
        info.value, GOOD / "inventory.csv", line, "artwork_id_hash", repr(missing), "no vector"
    )


def test_item_without_vector_dropped_and_counted(inventory):
    ids = inventory["artwork_id_hash"].tolist()
    vectors = _vectors(list(reversed(ids[1:])) + ["stray"])
    aligned, report = vectors_core.align_imported_embeddings(vectors, inventory, "drop")
    assert aligned.ids.tolist() == ids[1:]  # inventory order
    assert report["dropped_missing"] == 1
    assert report["dropped_missing_examples"] == [
        {"line": int(inventory["line"].iloc[0]), "artwork_id_hash": ids[0]}
    ]
    assert report["unmatched_vectors"] == 1
    row = list(vectors.ids).index(ids[1])
    np.testing.assert_array_equal(aligned.vectors[0], vectors.vectors[row])
    with pytest.raises(ValueError, match="on_missing_vectors"):
        vectors_core.align_imported_embeddings(vectors, inventory, "ignore")
