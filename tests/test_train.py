"""Training loop: learns a planted signal, resumes exactly, batches by profile budget."""

from dataclasses import replace

import numpy as np
import pytest
import torch

from curatornet_pipeline.core.models import VBPR, CuratorNet, CuratorNetConfig, VBPRConfig
from curatornet_pipeline.core.train import (
    CHECKPOINT_NAME,
    TrainConfig,
    TrainingDivergedError,
    _TripleSet,
    train,
)
from curatornet_pipeline.core.types import Triplets

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


@pytest.mark.parametrize("bf16", [False, True])
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


def test_killed_after_epoch_one_then_resumed_equals_uninterrupted(tmp_path):
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
    ts = _TripleSet(triplets, mask, with_profiles=True, with_users=False)
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
    got = batch.items[batch.profile_items[o[-2] : o[-1]]].numpy()
    np.testing.assert_array_equal(got, expected)
    torch.testing.assert_close(batch.x, torch.from_numpy(features[batch.items.numpy()]))
