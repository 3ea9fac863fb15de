"""CuratorNet and VBPR as PyTorch modules, plus their model files.

CuratorNet: Messina, Cartagena, Cerda, del Rio, Parra, "CuratorNet: Visually-aware
Recommendation of Art Images", 2020 (section 3). VBPR: He & McAuley, "VBPR: Visual
Bayesian Personalized Ranking from Implicit Feedback", AAAI 2016.

Both models consume a :class:`TripletBatch` (unique items, distinct profiles as CSR, local
indices), so CuratorNet's item tower runs once per unique item and its user tower once per
distinct profile, never padded. Pooling, margins and dense layers go through
:mod:`curatornet_pipeline.kernels`.

Regularisation follows the reference TensorFlow code: ``tf.nn.l2_loss`` over the
weights only (no biases), i.e. ``l2 * sum(0.5 * ||W||^2)``.
"""

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from curatornet_pipeline.kernels import Linear, linear, margins, pool_profiles

logger = logging.getLogger(__name__)


@dataclass
class TripletBatch:
    """One mini-batch of (profile, positive, negative) triples, on the model's device."""

    items: torch.Tensor  # (U,) int64 unique catalogue item indices of the batch
    x: torch.Tensor  # (U, input_dim) float32 raw visual features of ``items``
    profile_offsets: torch.Tensor  # (P+1,) int64 into profile_items (all zeros if unused)
    profile_items: torch.Tensor  # (S,) int64 local indices into ``items``
    positive: torch.Tensor  # (B,) int64 local index into ``items``
    negative: torch.Tensor  # (B,) int64 local index into ``items``
    users: torch.Tensor  # (B,) int64 user index, -1 for artificial profiles
    scaled: bool = False  # x already z-scored by the model's scaler (training pre-scales once)
    # (B,) int64: the profile (row of profile_offsets) of each triple, when triples share
    # profiles (P < B); None: triple k has profile k (P == B)
    profile_of: torch.Tensor | None = None
    # x holds the whole catalogue (row = catalogue index) instead of the rows of ``items``:
    # a batch that touches nearly every item reads the features in place, no (U, F) gather
    catalogue_x: bool = False

    def __len__(self) -> int:
        return int(self.positive.shape[0])


class _ScaledInput(nn.Module):
    """Z-score scaling of the visual features, stored as buffers (reference: StandardScaler)."""

    def _init_scaler(self, input_dim: int, mean: Any = None, std: Any = None) -> None:
        self.register_buffer("feature_mean", torch.zeros(input_dim))
        self.register_buffer("feature_std", torch.ones(input_dim))
        if mean is not None or std is not None:
            self.set_scaler(mean, std)

    def set_scaler(self, mean: Any, std: Any) -> None:
        mean_t = torch.as_tensor(np.asarray(mean, dtype=np.float32)).reshape(-1)
        std_t = torch.as_tensor(np.asarray(std, dtype=np.float32)).reshape(-1)
        if mean_t.shape != self.feature_mean.shape or std_t.shape != self.feature_std.shape:
            raise ValueError(f"scaler of shape {tuple(mean_t.shape)} for {self.feature_mean.shape}")
        std_t = torch.where(std_t > 1e-8, std_t, torch.ones_like(std_t))  # constant dims
        self.feature_mean.copy_(mean_t)
        self.feature_std.copy_(std_t)

    def fit_scaler(self, features: np.ndarray) -> None:
        """Set the per-dimension mean and std from the catalogue features (n_items, input_dim)."""
        features = np.asarray(features, dtype=np.float64)
        self.set_scaler(features.mean(axis=0), features.std(axis=0))

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.feature_mean) / self.feature_std


# ----------------------------------------------------------------------------- CuratorNet


@dataclass(frozen=True)
class CuratorNetConfig:
    input_dim: int = 2048  # ResNet-50 visual embedding
    item_layers: tuple[int, ...] = (200, 200)  # shared item tower f (paper section 3.4)
    # user tower g on [avg-pool || max-pool] (400): paper text; reference code (300, 300, 200)
    user_layers: tuple[int, ...] = (300, 200, 200)

    def __post_init__(self) -> None:
        # accept lists (model files store tuples as lists)
        object.__setattr__(self, "item_layers", tuple(int(u) for u in self.item_layers))
        object.__setattr__(self, "user_layers", tuple(int(u) for u in self.user_layers))
        if self.item_layers[-1] != self.user_layers[-1]:
            raise ValueError(
                f"item vector size {self.item_layers[-1]} != user vector size {self.user_layers[-1]}"
            )


def _selu_mlp(sizes: list[int]) -> nn.Sequential:
    """Dense + SELU on every layer, the last included (as ``tf.layers.dense(activation=selu)``
    on every layer of the reference code). LeCun-normal weights, zero biases, as SELU's
    self-normalisation assumes (Klambauer et al., 2017). SELU works in place on the
    linear output (which no backward needs): one activation fewer to allocate per layer."""
    layers: list[nn.Module] = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        dense = Linear(n_in, n_out)
        nn.init.normal_(dense.weight, std=1.0 / math.sqrt(n_in))
        nn.init.zeros_(dense.bias)
        layers += [dense, nn.SELU(inplace=True)]
    return nn.Sequential(*layers)


class CuratorNet(_ScaledInput):
    """CuratorNet (Messina et al., 2020, section 3): score(u, i) = g(P_u) . f(x_i).

    f: item tower shared by profile items, positive and negative (2048 -> 200 -> 200, SELU).
    g: user tower on the concatenated average- and max-pooled profile item vectors
    (400 -> 300 -> 200 -> 200, SELU). Offsets and user biases cancel in BPR and the item
    bias was dropped by the authors, so the score is the plain dot product.
    """

    kind = "curatornet"
    needs_profiles = True

    def __init__(self, config: CuratorNetConfig, feature_mean: Any = None, feature_std: Any = None):
        super().__init__()
        self.config = config
        d_item = config.item_layers[-1]
        self.item_tower = _selu_mlp([config.input_dim, *config.item_layers])
        self.user_tower = _selu_mlp([2 * d_item, *config.user_layers])
        self._init_scaler(config.input_dim, feature_mean, feature_std)

    def embed_items(self, x: torch.Tensor, scaled: bool = False) -> torch.Tensor:
        """f(x): (N, input_dim) raw (or already ``scaled``) features -> (N, D) item vectors."""
        return self.item_tower(x if scaled else self.scale(x))

    def embed_users(
        self, h: torch.Tensor, profile_items: torch.Tensor, profile_offsets: torch.Tensor
    ) -> torch.Tensor:
        """g([mean || max]): (U, D) item vectors, P CSR profiles of row indices -> (P, D)."""
        return self.user_tower(pool_profiles(h, profile_items, profile_offsets))

    def _vectors(self, batch: TripletBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(u, h): (P, D) vectors of the batch's profiles, (U, D) of its items."""
        h = self.embed_items(batch.x, batch.scaled)  # (U, D) once per unique item
        return self.embed_users(h, batch.profile_items, batch.profile_offsets), h

    def score_pairs(self, batch: TripletBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(s_pos, s_neg), each (B,): x_ui and x_uj of every triple."""
        u, h = self._vectors(batch)
        if batch.profile_of is not None:
            u = u.index_select(0, batch.profile_of)
        s_pos = (u * h.index_select(0, batch.positive)).sum(dim=-1)
        return s_pos, (u * h.index_select(0, batch.negative)).sum(dim=-1)

    def l2_penalty(self) -> torch.Tensor:
        """sum(0.5 * ||W||^2) over the weight matrices (``tf.nn.l2_loss``, biases excluded)."""
        return sum(0.5 * m.weight.pow(2).sum() for m in self.modules() if isinstance(m, nn.Linear))

    def loss(self, batch: TripletBatch, l2: float) -> torch.Tensor:
        """Sigmoid cross-entropy of x_uij = s_pos - s_neg against 1, batch mean, + L2."""
        u, h = self._vectors(batch)
        x_uij = margins(u, h, batch.positive, batch.negative, batch.profile_of)  # (B,)
        loss = F.softplus(-x_uij).mean()
        if l2 > 0:
            loss = loss + l2 * self.l2_penalty()
        return loss


# ----------------------------------------------------------------------------- VBPR


@dataclass(frozen=True)
class VBPRConfig:
    n_users: int  # one latent vector per known user
    n_items: int  # one latent vector per catalogue item
    input_dim: int = 2048  # visual feature size
    latent_dim: int = 100  # K: gamma_u, gamma_i
    visual_dim: int = 100  # K': theta_u, E f_i (K + K' = 200 as CuratorNet)
    init_std: float = 0.01  # normal init of the embeddings and E (reference: U(-1, 1))


class VBPR(_ScaledInput):
    """VBPR (He & McAuley, AAAI 2016): x_ui = beta_i + gamma_u.gamma_i + theta_u.(E f_i) + beta'.f_i.

    The global offset and user bias cancel in BPR. Trained with the BPR loss
    -ln sigma(x_ui - x_uj); L2 on the weights only as in the reference code, applied to the
    rows used by the batch (per-sample regularisation of BPR's SGD) and to E.
    ``f_i`` are z-scored visual features.
    """

    kind = "vbpr"
    needs_profiles = False

    def __init__(self, config: VBPRConfig, feature_mean: Any = None, feature_std: Any = None):
        super().__init__()
        self.config = config
        c = config
        self.gamma_user = nn.Parameter(torch.randn(c.n_users, c.latent_dim) * c.init_std)
        self.theta_user = nn.Parameter(torch.randn(c.n_users, c.visual_dim) * c.init_std)
        self.gamma_item = nn.Parameter(torch.randn(c.n_items, c.latent_dim) * c.init_std)
        self.beta_item = nn.Parameter(torch.zeros(c.n_items))
        self.embedding = nn.Parameter(torch.randn(c.visual_dim, c.input_dim) * c.init_std)  # E
        self.beta_visual = nn.Parameter(torch.zeros(c.input_dim))  # beta'
        # sparse row gradients of the latent tables (training sets it; see sparse_parameters)
        self.sparse_grad = False
        self._init_scaler(c.input_dim, feature_mean, feature_std)

    def item_terms(
        self, items: torch.Tensor, x: torch.Tensor, scaled: bool = False, catalogue: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """([gamma_i || E f_i], beta_i + beta'.f_i) for (N,) items: x (N, input_dim) their
        features, or with ``catalogue`` the whole catalogue's (n_items, input_dim), whose
        visual terms are computed for every item and the rows of ``items`` kept."""
        f = x if scaled else self.scale(x)  # (N, F) or (n_items, F)
        visual = linear(f, self.embedding)  # f @ E.T, on the towers' GEMM backend
        visual_bias = f @ self.beta_visual
        if catalogue:
            visual, visual_bias = visual.index_select(0, items), visual_bias.index_select(0, items)
        vectors = torch.cat([self._rows(self.gamma_item, items), visual], dim=1)  # (N, K + K')
        return vectors, self.beta_item[items] + visual_bias

    SPARSE = ("gamma_user", "theta_user", "gamma_item")  # the (rows x K) latent tables

    def _rows(self, table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """``table[index]``; with ``sparse_grad`` the gradient holds only the used rows."""
        return F.embedding(index, table, sparse=self.sparse_grad)

    def sparse_parameters(self) -> list[nn.Parameter]:
        """The latent tables, whose gradients are sparse when ``sparse_grad`` is set."""
        return [getattr(self, name) for name in self.SPARSE]

    def user_terms(self, users: torch.Tensor) -> torch.Tensor:
        """[gamma_u || theta_u]: (B,) user indices -> (B, K + K')."""
        if users.numel() and int(users.min()) < 0:
            raise ValueError("VBPR has no vector for unknown users (user index -1)")
        return torch.cat(
            [self._rows(self.gamma_user, users), self._rows(self.theta_user, users)], 1
        )

    def _item_terms(self, batch: TripletBatch) -> tuple[torch.Tensor, torch.Tensor]:
        return self.item_terms(batch.items, batch.x, batch.scaled, batch.catalogue_x)

    def score_pairs(self, batch: TripletBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(x_ui, x_uj), each (B,)."""
        v, b = self._item_terms(batch)  # (U, K+K'), (U,)
        w_u = self.user_terms(batch.users)  # (B, K+K')
        s_pos = (w_u * v[batch.positive]).sum(dim=1) + b[batch.positive]  # (B,)
        s_neg = (w_u * v[batch.negative]).sum(dim=1) + b[batch.negative]  # (B,)
        return s_pos, s_neg

    def loss(self, batch: TripletBatch, l2: float) -> torch.Tensor:
        """BPR loss -ln sigma(x_uij), batch mean, + L2 (0.5 ||.||^2) on the batch rows and E.

        Each distinct user's row is gathered once (a batch has ~10x more triples than
        users) and the margins read the user and item rows in place
        (:func:`margins`); the per-triple L2 of the rows, sum_k ||w_u(k)||^2 + ||gamma_i(k)||^2
        + ||gamma_j(k)||^2, is the same sum weighted by how many triples use each row. So no
        (B, K + K') tensor is made, and the latent tables' sparse gradients hold each row
        once.
        """
        v, b = self._item_terms(batch)  # (U, K+K'), (U,)
        # sorted distinct rows and their counts: deterministic on every device (bincount is not
        # on CUDA)
        users, user_of, user_uses = torch.unique(
            batch.users, return_inverse=True, return_counts=True
        )  # (Q,), (B,), (Q,)
        w = self.user_terms(users)  # (Q, K+K')
        pos, neg = batch.positive, batch.negative
        x_uij = margins(w, v, pos, neg, user_of) + (b.index_select(0, pos) - b.index_select(0, neg))
        loss = F.softplus(-x_uij).mean()
        if l2 > 0:
            used, uses = torch.unique(torch.cat([pos, neg]), return_counts=True)
            gamma = v[:, : self.config.latent_dim].index_select(0, used)  # the rows triples use
            rows = (user_uses.to(w.dtype) * w.pow(2).sum(1)).sum()
            rows = rows + (uses.to(v.dtype) * gamma.pow(2).sum(1)).sum()
            loss = loss + l2 * 0.5 * (rows / len(pos) + self.embedding.pow(2).sum())
        return loss


# ----------------------------------------------------------------------------- model files

_KINDS: dict[str, tuple[type[nn.Module], type]] = {
    "curatornet": (CuratorNet, CuratorNetConfig),
    "vbpr": (VBPR, VBPRConfig),
}


def model_payload(model: CuratorNet | VBPR, extra: dict | None = None) -> dict:
    """Kind, config, weights and ``extra`` as plain types: what a model file holds."""
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(model.config).items()}
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {"kind": model.kind, "config": config, "state_dict": state, "extra": extra or {}}


def model_from_payload(
    payload: dict, source: str = "model payload"
) -> tuple[CuratorNet | VBPR, dict]:
    """Rebuild a model from :func:`model_payload`'s dict; returns (model in eval mode, extra)."""
    kind = payload.get("kind")
    if kind not in _KINDS:
        raise ValueError(f"{source}: unknown model kind {kind!r}, expected one of {sorted(_KINDS)}")
    model_cls, config_cls = _KINDS[kind]
    config = {k: tuple(v) if isinstance(v, list) else v for k, v in payload["config"].items()}
    model = model_cls(config_cls(**config))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload["extra"]


def save_model(path: str | Path, model: CuratorNet | VBPR, extra: dict | None = None) -> None:
    """Write the model (kind, config, weights) and ``extra`` (plain types) with ``torch.save``."""
    torch.save(model_payload(model, extra), Path(path))


def load_model(path: str | Path) -> tuple[CuratorNet | VBPR, dict]:
    """Rebuild a model written by :func:`save_model` (``weights_only=True``: no foreign code)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    return model_from_payload(payload, source=str(path))
