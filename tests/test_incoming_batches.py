"""Incoming batches in the core: validated together, applied or rejected whole, rolled back exactly."""

import hashlib
import os
import shutil
import time
from pathlib import Path

import pytest

from curatornet_pipeline.core.data import formats as data
from curatornet_pipeline.core.data.batches import apply_batch, rollback
from curatornet_pipeline.core.data.formats import DatasetPaths
from curatornet_pipeline.core.data.history import History
from curatornet_pipeline.core.data.incoming import (
    LOOSE,
    find_batches,
    read_batch,
    waiting_for_images,
)

INV_HEADER = "artwork_id_hash,artist_id_hash,upload_timestamp\n"
PUR_HEADER = "user_id_hash,purchased_artwork_ids_hash,purchase_timestamp\n"


def snapshot(folder: Path, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """sha256 of every file under ``folder`` (relative path -> digest)."""
    out = {}
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).as_posix()
        if path.is_file() and not rel.startswith(skip):
            out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def dataset_files(root: Path) -> dict[str, str]:
    """The dataset proper: everything but the inbox and the history."""
    return snapshot(root, skip=("incoming/", "batches/"))


@pytest.fixture
def dataset(tiny_data: Path, tmp_path: Path) -> Path:
    root = tmp_path / "data"
    shutil.copytree(tiny_data, root)
    (root / "incoming").mkdir()
    return root


def make_batch(
    root: Path,
    name: str,
    items: list[str] = (),
    images: list[str] | None = None,
    purchases: list[tuple[str, list[str]]] = (),
    purchases_text: str | None = None,
    ready: bool = True,
) -> Path:
    """A batch folder: inventory rows for ``items``, their images (default: all), purchases."""
    folder = root / "incoming" / name
    folder.mkdir(parents=True)
    inventory = data.read_inventory(root / "inventory.csv")
    artist = inventory["artist_id_hash"].iloc[0]
    if items:
        rows = "".join(f"{i},{artist},{1_700_000_000 + n}\n" for n, i in enumerate(items))
        (folder / f"inventory-{name}.csv").write_text(INV_HEADER + rows)
    for item in items if images is None else images:
        sample = sorted((root / "images").iterdir())[0]
        (folder / "images").mkdir(exist_ok=True)
        shutil.copyfile(sample, folder / "images" / f"{item}.jpg")
    if purchases_text is not None:
        (folder / f"purchases-{name}.csv").write_text(purchases_text)
    elif purchases:
        rows = "".join(f'{u},"{basket!r}",1800000000\n' for u, basket in purchases)
        (folder / f"purchases-{name}.csv").write_text(PUR_HEADER + rows)
    if ready:
        (folder / "READY").touch()
    return folder


def apply(root: Path, name: str):
    batch = read_batch(root / "incoming", name)
    return apply_batch(batch, DatasetPaths(root), root / "incoming")


def existing_item(root: Path, k: int = 0) -> str:
    return data.read_inventory(root / "inventory.csv")["artwork_id_hash"].iloc[k]


def test_batch_with_purchases_of_its_own_new_item_is_applied(dataset: Path) -> None:
    make_batch(dataset, "b1", items=["new01", "new02"], purchases=[("u-new", ["new01", "new02"])])
    outcome = apply(dataset, "b1")
    assert outcome.status == "applied", outcome.error
    assert outcome.report["new_items"] == 2 and outcome.report["new_purchase_rows"] == 1
    inventory = data.read_inventory(dataset / "inventory.csv")
    assert {"new01", "new02"} <= set(inventory["artwork_id_hash"])
    purchases, _ = data.read_purchases(dataset / "purchases.csv", inventory)
    assert set(purchases.loc[purchases["user_id_hash"] == "u-new", "artwork_id_hash"]) == {
        "new01",
        "new02",
    }
    manifest, _ = data.image_manifest(dataset / "images", inventory)  # every item has its image
    assert len(manifest) == len(inventory)
    assert not (dataset / "incoming" / "b1").exists()
    assert (Path(outcome.moved_to) / "READY").exists()
    entry = History(DatasetPaths(dataset)).find(outcome.entry)
    assert {f["name"] for f in entry.manifest["files"]} == {
        "inventory-b1.csv",
        "purchases-b1.csv",
        "images/new01.jpg",
        "images/new02.jpg",
    }
    assert all(len(f["sha256"]) == 64 for f in entry.manifest["files"])


def test_inventory_without_its_image_rejects_the_whole_batch(dataset: Path) -> None:
    before = dataset_files(dataset)
    make_batch(
        dataset,
        "b1",
        items=["new01", "new02"],
        images=["new01"],
        purchases=[("u-new", [existing_item(dataset)])],
    )
    outcome = apply(dataset, "b1")
    assert outcome.status == "rejected"
    assert "inventory-b1.csv, line 3, field 'artwork_id_hash'" in outcome.error
    assert "no image for 'new02'" in outcome.error
    assert dataset_files(dataset) == before  # not the image of new01, not the purchase either
    rejected = Path(outcome.moved_to)
    assert {p.name for p in rejected.iterdir()} == {
        "inventory-b1.csv",
        "purchases-b1.csv",
        "images",
        "READY",
    }
    error_file = rejected.with_name(rejected.name + ".error.txt")
    assert "line 3" in error_file.read_text()
    # the next refresh reads the dataset as before
    inventory = data.read_inventory(dataset / "inventory.csv")
    data.read_purchases(dataset / "purchases.csv", inventory)
    data.image_manifest(dataset / "images", inventory)


def test_resent_purchases_are_skipped_and_reported(dataset: Path) -> None:
    item = existing_item(dataset)
    text = PUR_HEADER + f"""u-again,"['{item}']",1800000000\n"""
    make_batch(dataset, "first", purchases_text=text)
    assert apply(dataset, "first").status == "applied"
    after_first = (dataset / "purchases.csv").read_bytes()

    make_batch(dataset, "again", purchases_text=text)  # the same file, sent again
    outcome = apply(dataset, "again")
    assert outcome.status == "skipped"
    assert outcome.report["skipped"] == ["purchases-again.csv"]
    assert outcome.entry.endswith(History(DatasetPaths(dataset)).active()[0].id[7:])
    assert (dataset / "purchases.csv").read_bytes() == after_first
    note = Path(outcome.moved_to).with_name(Path(outcome.moved_to).name + ".txt")
    assert "applied before" in note.read_text()

    # the same file beside new content: the file is skipped, the rest applied
    make_batch(dataset, "mixed", items=["new09"], purchases_text=text)
    (dataset / "incoming" / "mixed" / "purchases-mixed.csv").rename(
        dataset / "incoming" / "mixed" / "purchases-first.csv"
    )
    outcome = apply(dataset, "mixed")
    assert outcome.status == "applied"
    assert outcome.report["skipped"] == ["purchases-first.csv"]
    assert outcome.report["new_items"] == 1 and outcome.report["new_purchase_rows"] == 0
    purchases = (dataset / "purchases.csv").read_bytes()
    assert purchases == after_first


def test_rollback_restores_the_dataset_byte_for_byte(dataset: Path) -> None:
    make_batch(dataset, "a", items=["newA"], purchases=[("ua", ["newA"])])
    assert apply(dataset, "a").status == "applied"
    after_a = dataset_files(dataset)
    make_batch(dataset, "b", items=["newB1", "newB2"], purchases=[("ub", ["newB1", "newA"])])
    b = apply(dataset, "b")
    assert b.status == "applied" and dataset_files(dataset) != after_a
    assert (dataset / "images" / "newB1.jpg").exists()

    entry = rollback(DatasetPaths(dataset), b.entry, reason="test")
    assert entry.manifest["target"] == b.entry
    assert dataset_files(dataset) == after_a  # CSV files and images, byte for byte
    rows = {r["id"]: r["status"] for r in History(DatasetPaths(dataset)).describe()}
    assert rows[b.entry] == f"rolled back by {entry.id}"
    with pytest.raises(ValueError, match="rolled back already"):
        rollback(DatasetPaths(dataset), b.entry)


def test_rollback_of_a_batch_later_batches_use_is_refused(dataset: Path) -> None:
    a = (make_batch(dataset, "a", items=["newA"]), apply(dataset, "a"))[1]
    make_batch(dataset, "b", purchases=[("ub", ["newA"])])
    b = apply(dataset, "b")
    assert b.status == "applied", b.error
    before = dataset_files(dataset)
    with pytest.raises(ValueError, match=f"{b.entry}.*roll them back first"):
        rollback(DatasetPaths(dataset), a.entry)
    assert dataset_files(dataset) == before
    rollback(DatasetPaths(dataset), b.entry)
    rollback(DatasetPaths(dataset), "1" if a.entry.startswith("000001") else a.entry)
    assert "newA" not in set(data.read_inventory(dataset / "inventory.csv")["artwork_id_hash"])


def test_middle_batch_rollback_equals_never_applying_it(dataset: Path, tmp_path: Path) -> None:
    clean = tmp_path / "clean"
    shutil.copytree(dataset, clean)
    for root in (dataset, clean):
        make_batch(root, "a", items=["newA"])
        make_batch(root, "b", items=["newB"], purchases=[("ub", ["newB"])])
        make_batch(root, "c", items=["newC"], purchases=[("uc", ["newA", "newC"])])
    ids = {n: apply(dataset, n).entry for n in "abc"}
    for n in "ac":
        assert apply(clean, n).status == "applied"
    rollback(DatasetPaths(dataset), ids["b"])
    assert dataset_files(dataset) == dataset_files(clean)


def test_hand_edited_dataset_becomes_a_new_base(dataset: Path) -> None:
    a = (make_batch(dataset, "a", items=["newA"]), apply(dataset, "a"))[1]
    with open(dataset / "purchases.csv", "a") as f:  # an edit outside the intake
        f.write(f"""hand,"['{existing_item(dataset)}']",1900000000\n""")
    make_batch(dataset, "b", items=["newB"])
    assert apply(dataset, "b").status == "applied"
    text = (dataset / "purchases.csv").read_text()
    assert "hand," in text  # the edit is kept
    kinds = [e.kind for e in History(DatasetPaths(dataset)).entries()]
    assert kinds == ["base", "batch", "base", "batch"]
    with pytest.raises(ValueError, match="older than the current base"):
        rollback(DatasetPaths(dataset), a.entry)


def test_interrupted_apply_is_finished_next_time(dataset: Path) -> None:
    make_batch(dataset, "a", items=["newA"])
    assert apply(dataset, "a").status == "applied"
    expected = dataset_files(dataset)
    history = History(DatasetPaths(dataset))
    # as if the process died after committing the entry, before writing the dataset
    (dataset / "inventory.csv").write_bytes(history.render(history.entries()[:-1])["inventory.csv"])
    (dataset / "images" / "newA.jpg").unlink()
    history.sync()
    assert dataset_files(dataset) == expected


def test_batch_being_copied_is_not_ready(dataset: Path) -> None:
    make_batch(dataset, "slow", items=["newS"], ready=False)
    (batch,) = find_batches(dataset / "incoming")
    assert not batch.marked and not batch.ready(settle_s=60)
    assert batch.ready(settle_s=60, now=time.time() + 61)
    (dataset / "incoming" / "slow" / "READY").touch()
    assert read_batch(dataset / "incoming", "slow").ready(settle_s=60)


def test_inventory_waits_for_its_images(dataset: Path) -> None:
    folder = make_batch(dataset, "w", items=["newW1", "newW2"], images=["newW1"], ready=False)
    batch = read_batch(dataset / "incoming", "w")
    assert waiting_for_images(batch, DatasetPaths(dataset)) == ["newW2"]
    shutil.copyfile(folder / "images" / "newW1.jpg", folder / "images" / "newW2.jpg")
    assert waiting_for_images(read_batch(dataset / "incoming", "w"), DatasetPaths(dataset)) == []


def test_content_hash_ignores_folder_name_and_times(dataset: Path) -> None:
    one = make_batch(dataset, "one", items=["x1"])
    two = make_batch(dataset, "two", items=["x1"])
    (two / "inventory-two.csv").rename(two / "inventory-one.csv")
    os.utime(two / "images" / "x1.jpg", (0, 0))
    first = read_batch(dataset / "incoming", one.name)
    second = read_batch(dataset / "incoming", two.name)
    assert first.content_hash == second.content_hash


def test_loose_files_form_one_batch(dataset: Path) -> None:
    item = existing_item(dataset)
    (dataset / "incoming" / "purchases-x.csv").write_text(
        PUR_HEADER + f"""loose,"['{item}']",1800000000\n"""
    )
    (batch,) = find_batches(dataset / "incoming")
    assert batch.name == LOOSE
    outcome = apply_batch(batch, DatasetPaths(dataset), dataset / "incoming")
    assert outcome.status == "applied"
    assert not (dataset / "incoming" / "purchases-x.csv").exists()
    assert "loose," in (dataset / "purchases.csv").read_text()


@pytest.mark.parametrize(
    ("build", "words"),
    [
        (
            lambda root: make_batch(
                root, "bad", purchases_text=PUR_HEADER + "u,\"['nowhere']\",1800000000\n"
            ),
            ("purchases-bad.csv, line 2, field 'purchased_artwork_ids_hash'", "'nowhere'"),
        ),
        (
            lambda root: make_batch(root, "bad", items=[existing_item(root)], images=[]),
            ("inventory-bad.csv, line 2, field 'artwork_id_hash'", "already in inventory.csv"),
        ),
        (
            lambda root: make_batch(root, "bad", items=["n1"], images=["n1", "stray"]),
            ("stray.jpg, field 'file name'", "neither in the inventory nor in this batch"),
        ),
        (
            lambda root: (make_batch(root, "bad", items=["n1"]) / "notes.txt").write_text("hi"),
            ("notes.txt", "not part of a batch"),
        ),
        (
            lambda root: (make_batch(root, "bad", items=["n1"]) / "images" / "n1.jpg").write_bytes(
                b"not a jpeg"
            ),
            ("n1.jpg", "cannot decode image"),
        ),
    ],
    ids=["unknown-item", "existing-id", "image-of-nothing", "unexpected-file", "broken-image"],
)
def test_bad_batches_are_rejected_whole_with_a_located_error(dataset: Path, build, words) -> None:
    before = dataset_files(dataset)
    build(dataset)
    outcome = apply(dataset, "bad")
    assert outcome.status == "rejected"
    for word in words:
        assert word in outcome.error, outcome.error
    assert dataset_files(dataset) == before
    assert not (dataset / "incoming" / "bad").exists()
    assert History(DatasetPaths(dataset)).entries() == []


def test_batches_command_lists_and_rolls_back(dataset: Path, capsys) -> None:
    from curatornet_pipeline.cli import main

    before = dataset_files(dataset)
    make_batch(dataset, "cli", items=["newC"], purchases=[("uc", ["newC"])])
    outcome = apply(dataset, "cli")
    assert main(["batches", "list", "--data", str(dataset)]) == 0
    listing = capsys.readouterr().out
    assert outcome.entry in listing and "applied" in listing and "+1 items" in listing
    assert main(["batches", "rollback", outcome.entry, "--data", str(dataset)]) == 0
    assert dataset_files(dataset) == before
    assert main(["batches", "rollback", "nope", "--data", str(dataset)]) == 2
    assert "no history entry 'nope'" in capsys.readouterr().err
    assert main(["batches", "rollback", "e975", "--data", str(dataset)]) == 2
    assert "a content-hash prefix needs at least 6 characters" in capsys.readouterr().err
