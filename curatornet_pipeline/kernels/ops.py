"""The pooling and margins of a CuratorNet step: the fused CPU kernels (:mod:`.fused`)
where they apply, PyTorch's operators elsewhere."""

import torch
import torch.nn.functional as F

from curatornet_pipeline.kernels import fused


def pool_profiles(
    h: torch.Tensor, profile_items: torch.Tensor, profile_offsets: torch.Tensor
) -> torch.Tensor:
    """[mean || max] of ragged profiles, (P, 2D): h (U, D) item vectors, profile k the rows
    ``profile_items[offsets[k]:offsets[k+1]]`` of h. Pools in float32 (under bf16 autocast
    too). Ties of the max send the gradient to the first of the tied rows."""
    h = h.float()
    if fused.applies(h):
        return fused.pool_profiles(h, profile_items, profile_offsets)
    starts = profile_offsets[:-1]
    mean = F.embedding_bag(profile_items, h, starts, mode="mean")  # (P, D)
    amax = F.embedding_bag(profile_items, h, starts, mode="max")  # (P, D)
    return torch.cat([mean, amax], dim=1)


def margins(
    u: torch.Tensor,
    h: torch.Tensor,
    positive: torch.Tensor,
    negative: torch.Tensor,
    row_of: torch.Tensor | None = None,
) -> torch.Tensor:
    """x_uij = u[row_of[k]] . (h[positive[k]] - h[negative[k]]), (B,): u (R, D) the distinct
    user-side vectors (``row_of`` None: one per triple), h (U, D) item vectors. One product
    with h_pos - h_neg, which makes fewer passes over (B, D) than two scores."""
    if fused.applies(u, h):
        return fused.triple_margins(u, h, positive, negative, row_of)
    if row_of is not None:
        u = u.index_select(0, row_of)
    d = h.index_select(0, positive) - h.index_select(0, negative)
    return (u * d).sum(dim=-1)
