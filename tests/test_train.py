"""Training loop: learns a planted signal, resumes exactly, batches by profile budget."""

import copy
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from curatornet_pipeline.core import ragged
from curatornet_pipeline.core.models.networks import VBPR, CuratorNet, CuratorNetConfig, VBPRConfig
from curatornet_pipeline.core.models.scorers import CuratorNetScorer
from curatornet_pipeline.core.training.batching import TripleSet
from curatornet_pipeline.core.training.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    TrainingDivergedError,
    bf16_native,
    train,
)
from curatornet_pipeline.core.types import Triplets
from curatornet_pipeline.kernels import fused, machine
from curatornet_pipeline.kernels.gemm import onednn_available, use_gemm_backend

pytestmark = pytest.mark.usefixtures("one_torch_thread")


D_IN, N_GROUPS, N_ITEMS, N_USERS = 16, 4, 80, 40
SMALL = CuratorNetConfig(input_dim=D_IN, item_layers=(16, 8), user_layers=(16, 8, 8))


def _planted(n_triples: int = 1600, seed: int = 0) -> tuple[Triplets, np.ndarray]:
    """Items in 4 visual groups (center + noise); user u likes group u % 4 only."""
    rng = np.random.default_rng(seed)
    group = np.arange(N_ITEMS) % N_GROUPS
    centers = rng.normal(0, 1, (N_GROUPS, D_IN)) * 2
    features = (centers[group] + rng.normal(0, 0.7, (N_ITEMS, D_IN)) + 5).astype(np.float32)
    offsets, flat, profile, positive, negative, user = [0], [], [], [], [], []
    for t in range(n_triples):
        u = t % N_USERS
        liked = np.flatnonzero(group == u % N_GROUPS)
        size = int(rng.integers(1, 7))
        chosen = rng.choice(liked, size + 1, replace=False)
        flat += chosen[:size].tolist()
        offsets.append(len(flat))
        profile.append(t)
        positive.append(chosen[size])
        negative.append(rng.choice(np.flatnonzero(group != u % N_GROUPS)))
        # a third of the profiles are artificial (no known user), as strategies 2-4
        user.append(u if t % 3 else -1)
    n = n_triples
    triplets = Triplets(
        profile_offsets=np.asarray(offsets, np.int64),
        profile_items=np.asarray(flat, np.int32),
        profile=np.asarray(profile, np.int64),
        positive=np.asarray(positive, np.int32),
        negative=np.asarray(negative, np.int32),
        user=np.asarray(user, np.int32),
        strategy=np.zeros(n, np.int8),
        hash=np.arange(n, dtype=np.uint64),
        is_validation=rng.random(n) < 0.2,
    )
    return triplets, features


def _curatornet(features: np.ndarray, seed: int = 0) -> CuratorNet:
    torch.manual_seed(seed)
    model = CuratorNet(SMALL)
    model.fit_scaler(features)
    return model


FAST = TrainConfig(lr=3e-3, lr_decay=0.9, epochs=8, patience=3, batch_triples=128, device="cpu")


BF16_NATIVE = bf16_native("cpu")


@pytest.mark.parametrize(
    "bf16",
    [
        False,
        pytest.param(
            True,
            marks=pytest.mark.skipif(not BF16_NATIVE, reason="no native bf16 on this CPU"),
        ),
    ],
)
def test_curatornet_learns_the_planted_groups(bf16):
    triplets, features = _planted()
    seen = []
    config = replace(FAST, bf16=bf16)
    result = train(
        _curatornet(features), triplets, triplets, features, config, callback=seen.append
    )
    assert result.best_val_accuracy > 0.85
    assert seen == result.history and len(seen) >= 2
    assert seen[0].lr == pytest.approx(3e-3) and seen[1].lr == pytest.approx(3e-3 * 0.9)
    assert seen[-1].loss < seen[0].loss
    assert result.history[result.best_epoch - 1].val_accuracy == result.best_val_accuracy
    assert result.triples_per_second > 0


@pytest.mark.skipif(BF16_NATIVE, reason="this CPU runs bf16 products natively")
def test_bf16_is_refused_where_the_cpu_would_emulate_it(tmp_path):
    triplets, features = _planted()
    model = _curatornet(features)
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(ValueError, match="no native bfloat16"):
        train(
            model, triplets, triplets, features, replace(FAST, bf16=True), checkpoint_dir=tmp_path
        )
    assert not list(tmp_path.iterdir())  # refused before any work or checkpoint
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_vbpr_learns_the_planted_groups_from_real_users_only():
    triplets, features = _planted()
    torch.manual_seed(0)
    model = VBPR(VBPRConfig(n_users=N_USERS, n_items=N_ITEMS, input_dim=D_IN, init_std=0.1))
    model.fit_scaler(features)
    result = train(model, triplets, triplets, features, replace(FAST, lr=2e-2, l2=1e-5))
    assert result.best_val_accuracy > 0.85

    artificial = replace(triplets, user=np.full(len(triplets), -1, np.int32))
    with pytest.raises(ValueError, match="real users"):
        train(model, artificial, artificial, features, FAST)


class _Killed(Exception):
    pass


@pytest.mark.parametrize("gemm", ["blas", "onednn"])
def test_killed_after_epoch_one_then_resumed_equals_uninterrupted(tmp_path, gemm):
    # on both CPU GEMM backends: a resumed run must reproduce the uninterrupted one on
    # whichever backend the machine takes (kernels/gemm.py)
    if gemm == "onednn" and not onednn_available():
        pytest.skip("this PyTorch build has no oneDNN")
    with use_gemm_backend(gemm):
        _killed_then_resumed_equals_uninterrupted(tmp_path)


def _killed_then_resumed_equals_uninterrupted(tmp_path) -> None:
    triplets, features = _planted(600)
    config = replace(FAST, epochs=3, patience=10)
    reference = train(_curatornet(features), triplets, triplets, features, config)

    def kill(stats):
        if stats.epoch == 1:
            raise _Killed

    with pytest.raises(_Killed):
        train(_curatornet(features), triplets, triplets, features, config, kill, tmp_path)
    assert (tmp_path / CHECKPOINT_NAME).exists()
    # a differently initialised model: everything must come from the checkpoint
    resumed = train(
        _curatornet(features, seed=7), triplets, triplets, features, config, None, tmp_path
    )

    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    assert resumed.best_epoch == reference.best_epoch
    for a, b in zip(reference.history, resumed.history, strict=True):
        assert a.loss == b.loss and a.val_accuracy == b.val_accuracy and a.lr == b.lr
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=1e-7)

    with pytest.raises(ValueError, match="another configuration"):
        train(
            _curatornet(features),
            triplets,
            triplets,
            features,
            replace(config, l2=0.0),
            None,
            tmp_path,
        )


def test_early_stopping_and_best_weights_are_returned():
    triplets, features = _planted(600)
    seen = []
    config = replace(FAST, lr=1e-9, lr_min=1e-9, epochs=10, patience=2)  # no progress
    result = train(_curatornet(features), triplets, triplets, features, config, seen.append)
    assert len(result.history) == 3  # epoch 1 sets the best, 2 and 3 are stale
    assert result.best_epoch == 1 and not seen[1].improved and not seen[2].improved


def test_nan_loss_raises_a_clear_error():
    triplets, features = _planted(300)
    bad = features.copy()
    bad[0] = np.nan
    model = _curatornet(features)
    with pytest.raises(TrainingDivergedError, match="loss is nan"):
        train(model, triplets, triplets, bad, FAST)


def test_batches_respect_the_profile_budget_and_cover_every_triple_once():
    triplets, features = _planted(500)
    mask = ~triplets.is_validation
    ts = TripleSet(triplets, mask, with_profiles=True, with_users=False)
    order = np.random.default_rng(0).permutation(len(ts))
    ranges = ts.cuts(order, budget=40, cap=9)
    covered = np.concatenate([order[a:b] for a, b in ranges])
    np.testing.assert_array_equal(np.sort(covered), np.arange(len(ts)))
    for a, b in ranges:
        assert b - a <= 9 and (ts.sizes[order[a:b]].sum() <= 40)
    # one built batch reproduces the catalogue indices of the triples it holds
    idx = order[ranges[0][0] : ranges[0][1]]
    batch = ts.batch(idx, torch.from_numpy(features), torch.device("cpu"))
    assert len(torch.unique(batch.items)) == len(batch.items)
    np.testing.assert_array_equal(batch.items[batch.positive].numpy(), ts.positive[idx])
    np.testing.assert_array_equal(batch.items[batch.negative].numpy(), ts.negative[idx])
    p = ts.profile[idx[-1]]
    expected = triplets.profile_items[triplets.profile_offsets[p] : triplets.profile_offsets[p + 1]]
    o = batch.profile_offsets.numpy()
    row = len(idx) - 1 if batch.profile_of is None else int(batch.profile_of[-1])
    got = batch.items[batch.profile_items[o[row] : o[row + 1]]].numpy()
    np.testing.assert_array_equal(got, expected)
    torch.testing.assert_close(batch.x, torch.from_numpy(features[batch.items.numpy()]))


def _vbpr(features: np.ndarray, seed: int = 0) -> VBPR:
    torch.manual_seed(seed)
    model = VBPR(VBPRConfig(n_users=N_USERS, n_items=N_ITEMS, input_dim=D_IN, init_std=0.1))
    model.fit_scaler(features)
    return model


def _assert_same_loss_and_gradients(features: np.ndarray, *batches) -> None:
    """The same fresh CuratorNet gives every batch the same loss and parameter gradients."""
    results = []
    for batch in batches:
        model = _curatornet(features)
        loss = model.loss(batch, 1e-3)
        loss.backward()
        results.append((loss.detach(), [p.grad.clone() for p in model.parameters()]))
    for loss, grads in results[1:]:
        torch.testing.assert_close(loss, results[0][0])
        for got, expected in zip(grads, results[0][1], strict=True):
            torch.testing.assert_close(got, expected)


def test_whole_catalogue_batches_train_exactly_like_gathered_ones():
    """A batch touching most of the catalogue runs the item tower on all of it instead of
    gathering its items' features: same loss and same gradients."""
    triplets, features = _planted(400)
    mask = ~triplets.is_validation
    x = torch.from_numpy(features)
    whole = TripleSet(triplets, mask, True, False, whole_catalogue_at=0.0)
    gathered = TripleSet(triplets, mask, True, False)
    idx = np.arange(40)
    b_whole = whole.batch(idx, x, torch.device("cpu"))
    b_gathered = gathered.batch(idx, x, torch.device("cpu"))
    assert len(b_whole.items) == N_ITEMS > len(b_gathered.items)
    assert b_whole.x.data_ptr() == x.data_ptr()  # the features themselves, no copy
    _assert_same_loss_and_gradients(features, b_whole, b_gathered)


def test_triples_sharing_a_profile_pool_it_once_and_train_like_separate_copies():
    """Triples of one batch that share a profile run the user tower once for it; the loss
    and gradients equal those of the same triples each holding its own copy."""
    triplets, features = _planted(400)
    shared = replace(triplets, profile=triplets.profile // 4)  # 4 triples a profile
    offsets, items = ragged.take_rows(shared.profile_offsets, shared.profile_items, shared.profile)
    copies = replace(
        shared, profile_offsets=offsets, profile_items=items, profile=np.arange(len(shared))
    )
    idx = np.arange(60)
    x = torch.from_numpy(features)
    every = np.ones(len(shared), bool)
    b_shared = TripleSet(shared, every, True, False).batch(idx, x, torch.device("cpu"))
    b_copies = TripleSet(copies, every, True, False).batch(idx, x, torch.device("cpu"))
    assert b_copies.profile_of is None and len(b_copies.profile_offsets) == 61
    assert len(b_shared.profile_offsets) == 16  # 15 distinct profiles pooled
    np.testing.assert_array_equal(b_shared.profile_of.numpy(), idx // 4)
    _assert_same_loss_and_gradients(features, b_shared, b_copies)


# ----------------------------------------------------------------------------- evaluator


def _toy_evaluator(triplets: Triplets, features: np.ndarray):
    """A ranking figure the loop knows nothing about: mean score margin on all triples."""
    calls = []

    def evaluate(model) -> dict[str, float]:
        calls.append(model.training)
        ts = TripleSet(triplets, np.ones(len(triplets), bool), True, False)
        batch = ts.batch(np.arange(len(ts)), torch.from_numpy(features), torch.device("cpu"))
        s_pos, s_neg = model.score_pairs(batch)
        return {
            "val_auc": float((s_pos > s_neg).float().mean()),
            "val_margin": float((s_pos - s_neg).mean()),
        }

    return evaluate, calls


def test_evaluator_metrics_reach_the_history_and_drive_the_best_epoch():
    triplets, features = _planted(600)
    evaluate, calls = _toy_evaluator(triplets, features)
    config = replace(FAST, epochs=4, patience=10)
    result = train(_curatornet(features), triplets, triplets, features, config, evaluator=evaluate)
    assert calls == [False] * 4  # eval mode, once per epoch
    assert result.monitor == "val_auc"
    assert all(set(h.metrics) == {"val_auc", "val_margin"} for h in result.history)
    aucs = [h.metrics["val_auc"] for h in result.history]
    assert result.best_value == max(aucs) and result.best_epoch == 1 + aucs.index(max(aucs))
    assert result.best_metrics == result.history[result.best_epoch - 1].metrics

    # a monitor the loop cannot know of: it follows the figure, even a made-up one
    def backwards(model):
        return {"val_auc": 0.5, "neg_epoch": -float(len(seen))}

    seen = []
    config = replace(FAST, epochs=5, patience=2, monitor="neg_epoch")
    result = train(
        _curatornet(features), triplets, triplets, features, config, seen.append, None, True,
        backwards,
    )  # fmt: skip
    # neg_epoch is best at epoch 1 and worse after: early stop after 1 + patience epochs
    assert len(result.history) == 3 and result.best_epoch == 1
    with pytest.raises(ValueError, match="not among the evaluator's metrics"):
        train(
            _curatornet(features), triplets, triplets, features,
            replace(FAST, monitor="val_recall@100"), evaluator=evaluate,
        )  # fmt: skip
    with pytest.raises(ValueError, match="needs an evaluator"):
        train(_curatornet(features), triplets, triplets, features, replace(FAST, monitor="x"))


@pytest.mark.parametrize("sparse", [True, False])
def test_vbpr_sparse_rows_move_only_the_rows_of_the_batch(sparse):
    from curatornet_pipeline.core.training.train import optimizers

    triplets, features = _planted(400)
    model = _vbpr(features)
    config = replace(FAST, sparse_rows=sparse, lr=1e-2)
    parts = optimizers(model, config)
    ts = TripleSet(triplets, ~triplets.is_validation, True, True)
    first = np.flatnonzero(ts.user < N_USERS // 2)
    second = np.flatnonzero(ts.user >= N_USERS // 2)
    x = torch.from_numpy(features)
    for idx in (first, second):
        batch = ts.batch(idx, x, torch.device("cpu"))
        for part in parts:
            part.zero_grad()
        model.loss(batch, 1e-3).backward()
        for part in parts:
            part.step()
        if idx is first:
            after_first = model.gamma_user.detach().clone()
    moved = ~torch.isclose(model.gamma_user.detach(), after_first).all(dim=1)
    # step 2 touches only the second half's users; dense Adam's momentum also moves the first
    assert moved[N_USERS // 2 :].all()
    assert bool(moved[: N_USERS // 2].any()) is (not sparse)
    assert (model.gamma_user.grad.is_sparse) is sparse


def test_device_from_settings_auto_picks_cuda_only_when_present(monkeypatch):
    from curatornet_pipeline.core.training.train import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    # the one place the loop branches on CUDA: with it present, "auto" means cuda
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cuda")
    assert TrainConfig().device == "auto"


def test_the_training_step_runs_on_the_meta_device():
    """Device-agnostic step: model, batch and Adam on "meta" (shapes only, no data)."""
    from curatornet_pipeline.core.training.train import optimizers

    triplets, features = _planted(200)
    ts = TripleSet(triplets, ~triplets.is_validation, True, False)
    batch = ts.batch(np.arange(32), torch.from_numpy(features), torch.device("cpu"))
    meta = torch.device("meta")
    for name, value in vars(batch).items():
        if isinstance(value, torch.Tensor):
            setattr(batch, name, value.to(meta))
    model = _curatornet(features).to(meta)
    (adam,) = optimizers(model, FAST)
    loss = model.loss(batch, 1e-3)
    loss.backward()
    adam.step()
    assert loss.device == meta and all(p.device == meta for p in model.parameters())


def test_checkpoint_in_shared_storage_resumes_on_another_worker(tmp_path):
    """Killed on one worker, retried on another with its own local folder: the retry
    resumes from the checkpoint the first left under the shared storage root (an
    fsspec URI, here ``memory://``, which neither worker's local folder holds)."""
    import dagster as dg
    import fsspec

    from curatornet_pipeline.defs.io_managers import ArtifactStorage

    triplets, features = _planted(600)
    config = replace(FAST, epochs=3, patience=10)
    reference = train(_curatornet(features), triplets, triplets, features, config)
    root = f"memory://shared-{tmp_path.name}"
    results: dict[str, object] = {}

    @dg.asset(partitions_def=dg.StaticPartitionsDefinition(["l0"]))
    def model(context: dg.AssetExecutionContext, storage: ArtifactStorage) -> None:
        def kill(stats):
            if stats.epoch == 1 and "killed" not in results:
                results["killed"] = storage.checkpoint_dir(context, "k")
                raise _Killed

        ckpt = storage.checkpoint_dir(context, "k")
        # the retry starts from other weights: everything must come from the checkpoint
        seed = 7 if "killed" in results else 0
        results["result"] = train(
            _curatornet(features, seed=seed), triplets, triplets, features, config, kill, ckpt
        )

    for worker in ("a", "b"):
        storage = ArtifactStorage(root=root, local_root=str(tmp_path / worker))
        dg.materialize(
            [model], resources={"storage": storage}, partition_key="l0", raise_on_error=False
        )
    ckpt_dir = results["killed"]
    assert str(ckpt_dir).startswith("memory://")
    assert fsspec.filesystem("memory").exists(f"{ckpt_dir.path}/{CHECKPOINT_NAME}")
    assert not list(tmp_path.rglob(CHECKPOINT_NAME))  # in no worker's local folder
    resumed = results["result"]
    assert [h.epoch for h in resumed.history] == [1, 2, 3]
    for a, b in zip(reference.history, resumed.history, strict=True):
        assert a.loss == b.loss and a.val_accuracy == b.val_accuracy
    for name, value in reference.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[name], value, rtol=0, atol=1e-7)


# ----------------------------------------------------------------------------- subnormals


def _subnormal(*shape: int) -> torch.Tensor:
    """float32 1e-39 from its bits: a float written with flushing on would already be 0."""
    return torch.full(shape, 0x000AE398, dtype=torch.int32).view(torch.float32)


def _subnormals_flushed() -> tuple[bool, bool, bool]:
    """Whether subnormal float32 come out as zero: (this thread, the OpenMP workers of a
    product split over two threads, the fused kernels' pool threads)."""
    product = _subnormal(1024, 1024) @ torch.eye(1024)
    h = _subnormal(2 * fused.PARALLEL_MIN, 2)
    index = torch.arange(len(h))
    with fused.use_kernels("fused"):
        pooled = fused.pool_profiles(h, index, index)  # one row a profile: mean = the row
    # by their bits: a comparison of floats is itself subject to the mode
    return (
        machine.denormals_flushed(),
        not product.view(torch.int32).any(),
        not pooled[:, :2].contiguous().view(torch.int32).any(),  # the means: arithmetic
    )


def _check_flushed_on_every_thread() -> None:
    """Subnormal floats slow a CPU backward pass several times (issue 31): training and
    scoring flush them, on the calling thread and on every worker thread it uses."""
    triplets, features = _planted(300)
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # the OpenMP workers are part of what is checked
    try:
        machine.set_flush_denormal(False)
        assert _subnormals_flushed() == (False, False, False)  # so the checks below can fail
        seen = []
        model = _curatornet(features)
        model.item_tower.register_forward_hook(lambda *_: seen.append(_subnormals_flushed()))
        train(model, triplets, triplets, features, replace(FAST, epochs=1))
        assert seen and all(s == (True, True, True) for s in seen), seen

        machine.set_flush_denormal(False)
        seen.clear()
        CuratorNetScorer(model, features)  # scoring: the item tower over the catalogue
        assert seen == [(True, True, True)]
    finally:
        torch.set_num_threads(threads)


@pytest.mark.skipif(not torch.set_flush_denormal(False), reason="this CPU cannot flush")
def test_training_and_scoring_run_with_subnormals_flushed_on_every_thread():
    """In a fresh process, as a training run is: a test session's earlier tests leave
    OpenMP teams and thread settings behind that a real training process does not have."""
    import subprocess
    import sys

    code = (
        "import sys; sys.path.insert(0, 'tests'); import test_train; "
        "test_train._check_flushed_on_every_thread(); print('flushed')"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
        cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    assert done.returncode == 0 and done.stdout.strip().endswith("flushed"), done.stderr[-3000:]
