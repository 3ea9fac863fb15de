"""CuratorNet and VBPR against their equations; the Scorer contract; model files."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from curatornet_pipeline.core.models.networks import (
    VBPR,
    CuratorNet,
    CuratorNetConfig,
    TripletBatch,
    VBPRConfig,
    load_model,
    save_model,
)
from curatornet_pipeline.core.models.scorers import (
    CuratorNetScorer,
    OracleScorer,
    RandomScorer,
    VBPRScorer,
    VisRankScorer,
)
from curatornet_pipeline.core.types import TrainTestSplit
from curatornet_pipeline.kernels import use_kernels

pytestmark = pytest.mark.usefixtures("one_torch_thread")


D_IN = 16
CONFIG = CuratorNetConfig(input_dim=D_IN, item_layers=(12, 8), user_layers=(10, 9, 8))


def _features(n: int = 30, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(2.0, 3.0, (n, D_IN)).astype(np.float32)


def _curatornet(features: np.ndarray, seed: int = 0) -> CuratorNet:
    torch.manual_seed(seed)
    model = CuratorNet(CONFIG)
    model.fit_scaler(features)
    return model


# ragged profiles of sizes 1, 3, 7 (catalogue indices), positives and negatives
PROFILES = [[4], [0, 9, 17], [1, 2, 3, 5, 8, 13, 21]]
POSITIVE = [6, 9, 29]  # 9 is also in the 2nd profile: shared item vectors are fine
NEGATIVE = [7, 11, 2]


def _batch(features: np.ndarray, users=(0, 1, 2)) -> TripletBatch:
    flat = np.concatenate([np.asarray(p) for p in PROFILES])
    items, inverse = np.unique(np.concatenate([flat, POSITIVE, NEGATIVE]), return_inverse=True)
    s, b = len(flat), len(POSITIVE)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in PROFILES])])
    return TripletBatch(
        items=torch.from_numpy(items),
        x=torch.from_numpy(features[items]),
        profile_offsets=torch.from_numpy(offsets),
        profile_items=torch.from_numpy(inverse[:s]),
        positive=torch.from_numpy(inverse[s : s + b]),
        negative=torch.from_numpy(inverse[s + b :]),
        users=torch.tensor(users),
    )


def _direct_curatornet(model: CuratorNet, features: np.ndarray, l2: float):
    """The paper's equations, one triple at a time, one item at a time (no batching)."""
    linears_f = [m for m in model.item_tower if isinstance(m, torch.nn.Linear)]
    linears_g = [m for m in model.user_tower if isinstance(m, torch.nn.Linear)]
    mu, sigma = model.feature_mean, model.feature_std

    def f(i: int) -> torch.Tensor:  # item tower on ONE item
        h = (torch.from_numpy(features[i]) - mu) / sigma
        for lin in linears_f:
            h = F.selu(lin.weight @ h + lin.bias)
        return h

    def g(z: torch.Tensor) -> torch.Tensor:
        for lin in linears_g:
            z = F.selu(lin.weight @ z + lin.bias)
        return z

    s_pos, s_neg, losses = [], [], []
    for profile, i, j in zip(PROFILES, POSITIVE, NEGATIVE, strict=True):
        h_p = torch.stack([f(k) for k in profile])  # (|P|, D)
        u = g(torch.cat([h_p.mean(0), h_p.max(0).values]))
        x_ui, x_uj = u @ f(i), u @ f(j)
        s_pos.append(x_ui)
        s_neg.append(x_uj)
        losses.append(-torch.log(torch.sigmoid(x_ui - x_uj)))  # cross-entropy, label 1
    reg = sum(0.5 * (lin.weight**2).sum() for lin in linears_f + linears_g)
    return torch.stack(s_pos), torch.stack(s_neg), torch.stack(losses).mean() + l2 * reg


def test_curatornet_matches_unbatched_equations_scores_loss_and_gradients():
    features = _features()
    model = _curatornet(features)
    batch = _batch(features)
    l2 = 1e-2

    s_pos, s_neg = model.score_pairs(batch)
    loss = model.loss(batch, l2)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    model.zero_grad()

    d_pos, d_neg, d_loss = _direct_curatornet(model, features, l2)
    d_loss.backward()
    torch.testing.assert_close(s_pos, d_pos, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(s_neg, d_neg, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(loss, d_loss, rtol=1e-5, atol=1e-5)
    assert len(grads) == 10
    for name, p in model.named_parameters():
        assert float(p.grad.abs().sum()) > 0, name
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-5, atol=1e-5, msg=name)


def test_curatornet_l2_excludes_biases():
    model = _curatornet(_features())
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.Linear):
                m.bias.fill_(5.0)
    expected = sum(
        0.5 * float((m.weight.detach() ** 2).sum())
        for m in model.modules()
        if isinstance(m, torch.nn.Linear)
    )
    assert float(model.l2_penalty().detach()) == pytest.approx(expected, rel=1e-6)


def test_vbpr_matches_its_equation_on_hand_set_parameters():
    features = _features(30)
    n_users, k, k_vis = 3, 2, 3
    model = VBPR(
        VBPRConfig(n_users=n_users, n_items=30, input_dim=D_IN, latent_dim=k, visual_dim=k_vis)
    )
    rng = np.random.default_rng(1)
    params = {
        "gamma_user": rng.normal(size=(n_users, k)),
        "theta_user": rng.normal(size=(n_users, k_vis)),
        "gamma_item": rng.normal(size=(30, k)),
        "beta_item": rng.normal(size=30),
        "embedding": rng.normal(size=(k_vis, D_IN)) * 0.1,
        "beta_visual": rng.normal(size=D_IN) * 0.1,
    }
    with torch.no_grad():
        for name, value in params.items():
            getattr(model, name).copy_(torch.from_numpy(value))
    mean, std = features.mean(0), features.std(0)
    model.set_scaler(mean, std)
    f = (features.astype(np.float64) - mean) / std

    def x_hat(u: int, i: int) -> float:
        p = params
        return (
            p["beta_item"][i]
            + p["gamma_user"][u] @ p["gamma_item"][i]
            + p["theta_user"][u] @ (p["embedding"] @ f[i])
            + p["beta_visual"] @ f[i]
        )

    users = (2, 0, 1)
    s_pos, s_neg = model.score_pairs(_batch(features, users=users))
    expected_pos = [x_hat(u, i) for u, i in zip(users, POSITIVE, strict=True)]
    expected_neg = [x_hat(u, j) for u, j in zip(users, NEGATIVE, strict=True)]
    np.testing.assert_allclose(s_pos.detach().numpy(), expected_pos, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(s_neg.detach().numpy(), expected_neg, rtol=1e-4, atol=1e-4)
    bpr = np.mean(np.log1p(np.exp(-(np.array(expected_pos) - expected_neg))))
    assert float(model.loss(_batch(features, users=users), 0.0).detach()) == pytest.approx(
        bpr, rel=1e-4
    )

    scorer = VBPRScorer(model, features)
    scores = scorer.score(np.array([0, 0]), np.array([], np.int32), np.array([1, 2]))
    np.testing.assert_allclose(scores[1, 29], x_hat(2, 29), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="unknown users"):
        scorer.score(np.array([0, 0]), np.array([], np.int32), np.array([-1]))


def _direct_vbpr_loss(model: VBPR, features: np.ndarray, users, positive, negative, l2: float):
    """BPR loss + L2 of VBPR one triple at a time: each triple's own rows, no sharing."""
    f = (torch.from_numpy(features) - model.feature_mean) / model.feature_std
    total, rows = 0.0, 0.0
    for u, i, j in zip(users, positive, negative, strict=True):
        w = torch.cat([model.gamma_user[u], model.theta_user[u]])

        def x(k: int, w=w) -> torch.Tensor:
            v = torch.cat([model.gamma_item[k], model.embedding @ f[k]])
            return model.beta_item[k] + w @ v + model.beta_visual @ f[k]

        total = total - torch.log(torch.sigmoid(x(i) - x(j)))
        rows = rows + w.pow(2).sum() + model.gamma_item[i].pow(2).sum()
        rows = rows + model.gamma_item[j].pow(2).sum()
    n = len(users)
    return total / n + l2 * 0.5 * (rows / n + model.embedding.pow(2).sum())


@pytest.mark.parametrize("kernels", ["fused", "torch"])
@pytest.mark.parametrize("catalogue_x", [False, True])
@pytest.mark.parametrize("sparse", [False, True])
def test_vbpr_loss_and_gradients_match_the_per_triple_equation(kernels, catalogue_x, sparse):
    """Users and items repeat across triples: the loss gathers each user once and weighs
    the L2 of each row by its uses; the sum and every gradient must be the per-triple one."""
    features = _features(30)
    torch.manual_seed(1)
    model = VBPR(VBPRConfig(n_users=5, n_items=30, input_dim=D_IN, latent_dim=6, visual_dim=4))
    model.fit_scaler(features)
    with torch.no_grad():
        model.beta_item.normal_()
        model.beta_visual.normal_(std=0.1)
        for t in (model.gamma_user, model.theta_user, model.gamma_item, model.embedding):
            t.normal_(std=0.5)
    users = [3, 0, 3, 1, 3, 0, 4]
    positive = [6, 9, 9, 29, 2, 6, 11]
    negative = [7, 11, 2, 2, 7, 29, 6]
    items, inverse = np.unique(np.concatenate([positive, negative]), return_inverse=True)
    b = len(users)
    batch = TripletBatch(
        items=torch.from_numpy(items),
        x=torch.from_numpy(features if catalogue_x else features[items]),
        profile_offsets=torch.zeros(b + 1, dtype=torch.int64),
        profile_items=torch.zeros(0, dtype=torch.int64),
        positive=torch.from_numpy(inverse[:b]),
        negative=torch.from_numpy(inverse[b:]),
        users=torch.tensor(users),
        catalogue_x=catalogue_x,
    )
    l2 = 0.3
    expected = _direct_vbpr_loss(model, features, users, positive, negative, l2)
    want = torch.autograd.grad(expected, list(model.parameters()))
    model.sparse_grad = sparse
    with use_kernels(kernels):
        loss = model.loss(batch, l2)
    got = torch.autograd.grad(loss, list(model.parameters()))
    torch.testing.assert_close(loss, expected, rtol=1e-5, atol=1e-6)
    for name, g, w in zip([n for n, _ in model.named_parameters()], got, want, strict=True):
        if g.is_sparse:
            # each used row once: the tables' sparse gradients hold no duplicates to coalesce
            assert g._nnz() == len(g._indices()[0].unique()), name
            g = g.to_dense()
        torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5, msg=name)


def _split(n_items: int) -> TrainTestSplit:
    return TrainTestSplit(
        user_ids=np.array(["a", "b", "c"]),
        user_basket_offsets=np.array([0, 1, 2, 3]),
        basket_item_offsets=np.array([0, 1, 2, 3]),
        basket_items=np.array([1, 2, 3], np.int32),
        basket_timestamps=np.array([0, 0, 0]),
        test_users=np.array([0, 2], np.int32),
        test_item_offsets=np.array([0, 2, 3]),
        test_items=np.array([7, 20, 11], np.int32),
        test_timestamps=np.array([1, 1]),
        n_items=n_items,
    )


def test_every_scorer_honours_the_contract():
    features = _features(30)
    n_items = len(features)
    torch.manual_seed(0)
    vbpr = VBPR(VBPRConfig(n_users=3, n_items=n_items, input_dim=D_IN))
    vbpr.fit_scaler(features)
    scorers = [
        CuratorNetScorer(_curatornet(features), features),
        VBPRScorer(vbpr, features),
        VisRankScorer(features),
        RandomScorer(n_items, seed=0),
        OracleScorer(_split(n_items)),
    ]
    offsets = np.array([0, 1, 4, 6])
    items = np.array([1, 2, 3, 4, 5, 6], np.int32)
    users = np.array([0, 1, 2], np.int32)
    for scorer in scorers:
        scores = scorer.score(offsets, items, users)
        assert isinstance(scorer.name, str) and scorer.name
        assert scores.shape == (3, n_items), scorer.name
        assert scores.dtype == np.float32, scorer.name
        assert np.isfinite(scores).all(), scorer.name
        assert scores.std() > 0, scorer.name

    oracle = scorers[-1].score(offsets, items, users)
    assert set(np.argsort(-oracle[0])[:2]) == {7, 20}
    assert np.argmax(oracle[2]) == 11
    assert oracle[1].max() < 1.0  # user without a hidden basket


def test_curatornet_scorer_agrees_with_training_scores_and_embeds_new_items():
    features = _features()
    model = _curatornet(features)
    s_pos, _ = model.score_pairs(_batch(features))
    scorer = CuratorNetScorer(model, features)
    offsets = np.concatenate([[0], np.cumsum([len(p) for p in PROFILES])])
    scores = scorer.score(offsets, np.concatenate(PROFILES), np.full(3, -1))
    np.testing.assert_allclose(scores[np.arange(3), POSITIVE], s_pos.detach().numpy(), rtol=1e-5)
    assert scorer.item_vectors.shape == (30, 8)
    np.testing.assert_allclose(scorer.embed_items(features[:4]), scorer.item_vectors[:4], rtol=1e-6)
    assert scorer.user_vectors(offsets, np.concatenate(PROFILES)).shape == (3, 8)
    with pytest.raises(ValueError, match="at least one profile item"):
        scorer.user_vectors(np.array([0, 0]), np.array([], np.int32))


def test_visrank_is_max_cosine_to_the_profile():
    features = _features(30)
    offsets = np.array([0, 2, 2, 5])  # second profile empty
    items = np.array([3, 8, 0, 1, 29], np.int32)
    scores = VisRankScorer(features, chunk_rows=2).score(offsets, items, np.full(3, -1))
    unit = features / np.linalg.norm(features, axis=1, keepdims=True)
    expected = np.stack(
        [(unit[[3, 8]] @ unit.T).max(0), np.zeros(30), (unit[[0, 1, 29]] @ unit.T).max(0)]
    )
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["curatornet", "vbpr"])
def test_save_load_round_trip(tmp_path, kind):
    features = _features()
    if kind == "curatornet":
        model = _curatornet(features)
    else:
        model = VBPR(VBPRConfig(n_users=3, n_items=30, input_dim=D_IN))
        model.fit_scaler(features)
    path = tmp_path / "model.pt"
    save_model(path, model, {"run": "abc", "epoch": 3})
    loaded, extra = load_model(path)
    assert type(loaded) is type(model) and loaded.config == model.config
    assert extra == {"run": "abc", "epoch": 3}
    for (name, a), (_, b) in zip(
        model.state_dict().items(), loaded.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    batch = _batch(features)
    torch.testing.assert_close(loaded.score_pairs(batch), model.score_pairs(batch))
