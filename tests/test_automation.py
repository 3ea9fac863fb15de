"""Nightly retraining: the schedule, the incoming-files sensor and the intake it runs."""

import shutil
from pathlib import Path

import dagster as dg
import pandas as pd
import pytest

from curatornet_pipeline.core.data import DatasetPaths, read_inventory, read_purchases
from curatornet_pipeline.core.incoming import intake
from curatornet_pipeline.definitions import defs
from curatornet_pipeline.defs import intake as intake_defs


@pytest.fixture
def dataset(tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data, ignore=shutil.ignore_patterns("images"))
    (data / "incoming").mkdir()
    monkeypatch.setenv("CURATORNET_DATA", str(data))
    monkeypatch.setenv("CURATORNET_INCOMING", str(data / "incoming"))
    return data


def _new_purchase(data: Path, user: str = "new-user-1") -> str:
    inventory = read_inventory(data / "inventory.csv")
    item = inventory["artwork_id_hash"].iloc[-1]
    return f"user_id_hash,purchased_artwork_ids_hash,purchase_timestamp\n{user},\"['{item}']\",1999999999\n"


def test_nightly_schedule_requests_the_upstream_refresh() -> None:
    schedule = defs.get_schedule_def("nightly_retraining")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.job_name == "refresh_upstream"
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(
            instance=instance,
            repository_def=defs.get_repository_def(),
            scheduled_execution_time=pd.Timestamp("2026-11-28 02:00", tz="UTC").to_pydatetime(),
        )
        request = schedule.evaluate_tick(context).run_requests[0]
    assert request.run_key == "nightly-2026-11-28T02:00:00+00:00"
    job = defs.resolve_job_def("refresh_upstream")
    selected = {k.to_user_string() for k in job.asset_layer.executable_asset_keys}
    assert {
        "inventory",
        "purchases",
        "item_embeddings",
        "visual_clusters",
        "train_test_split",
    } <= selected
    assert not selected & {"triplets", "curatornet_models", "evaluation_report"}


def test_downstream_assets_follow_by_automation() -> None:
    graph = defs.resolve_asset_graph()
    for name in ("triplets", "curatornet_models", "evaluation_report", "sampling_ablation"):
        assert graph.get(dg.AssetKey(name)).automation_condition is not None, name


def test_sensor_appends_a_good_file(dataset: Path) -> None:
    before = len(
        read_purchases(dataset / "purchases.csv", read_inventory(dataset / "inventory.csv"))[0]
    )
    (dataset / "incoming" / "purchases-2026-11-27.csv").write_text(_new_purchase(dataset))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, repository_def=defs.get_repository_def()
        )
        result = intake_defs.incoming_files(context)
    assert isinstance(result, dg.RunRequest)
    assert result.tags["curatornet/accepted"] == "purchases-2026-11-27.csv"
    inventory = read_inventory(dataset / "inventory.csv")
    after, _ = read_purchases(dataset / "purchases.csv", inventory)
    assert len(after) == before + 1
    assert "new-user-1" in set(after["user_id_hash"])
    assert list((dataset / "incoming" / "processed").iterdir())


def test_sensor_rejects_a_bad_file_whole(dataset: Path) -> None:
    original = (dataset / "purchases.csv").read_bytes()
    good_line = _new_purchase(dataset, "ok-user").splitlines()[1]
    bad = (
        "user_id_hash,purchased_artwork_ids_hash,purchase_timestamp\n"
        f"{good_line}\nbad-user,\"['no-such-artwork']\",1999999999\n"
    )
    (dataset / "incoming" / "purchases-bad.csv").write_text(bad)
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, repository_def=defs.get_repository_def()
        )
        result = intake_defs.incoming_files(context)
    assert isinstance(result, dg.SkipReason)
    assert (
        dataset / "purchases.csv"
    ).read_bytes() == original  # nothing appended, not even the good row
    rejected = list((dataset / "incoming" / "rejected").iterdir())
    errors = [p for p in rejected if p.name.endswith(".error.txt")]
    assert len(rejected) == 2 and len(errors) == 1
    text = errors[0].read_text()
    assert "purchases-bad.csv" in text and "line 3" in text and "no-such-artwork" in text


def test_intake_takes_new_inventory_before_purchases_of_it(dataset: Path) -> None:
    incoming = dataset / "incoming"
    artist = read_inventory(dataset / "inventory.csv")["artist_id_hash"].iloc[0]
    (incoming / "inventory-new.csv").write_text(
        f"artwork_id_hash,artist_id_hash,upload_timestamp\nfreshart01,{artist},1999999000\n"
    )
    (incoming / "purchases-new.csv").write_text(
        "user_id_hash,purchased_artwork_ids_hash,purchase_timestamp\n"
        "buyer,\"['freshart01']\",1999999999\n"
    )
    report = intake(incoming, DatasetPaths(dataset))
    assert report.rejected == {}
    assert report.new_items == 1 and report.new_purchase_rows == 1
    assert "freshart01" in set(read_inventory(dataset / "inventory.csv")["artwork_id_hash"])


def test_sensor_skips_when_nothing_arrived(dataset: Path) -> None:
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(
            instance=instance, repository_def=defs.get_repository_def()
        )
        assert isinstance(intake_defs.incoming_files(context), dg.SkipReason)
