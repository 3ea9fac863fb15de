"""Max pooling of ragged profiles (core.pooling) against F.embedding_bag."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from curatornet_pipeline.core.pooling import segment_max

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _ragged(rng, n_bags, n_rows, max_len, min_len=1):
    sizes = rng.integers(min_len, max_len + 1, n_bags)
    items = torch.from_numpy(rng.integers(0, n_rows, int(sizes.sum())))
    offsets = torch.from_numpy(np.concatenate([[0], np.cumsum(sizes)]))
    return items, offsets


@pytest.mark.parametrize("seed", range(6))
def test_segment_max_equals_embedding_bag_values_and_gradients(seed):
    """Random profiles with repeated items (exact ties), empty profiles and a long tail:
    the same maxima, and the gradient goes to the same one of tied rows."""
    rng = np.random.default_rng(seed)
    n_rows, width = int(rng.integers(3, 40)), int(rng.integers(1, 9))
    items, offsets = _ragged(rng, int(rng.integers(1, 60)), n_rows, 9, min_len=0)
    if seed % 2:  # one heavy profile, as the real tail
        extra = torch.from_numpy(rng.integers(0, n_rows, 120))
        items = torch.cat([items, extra])
        offsets = torch.cat([offsets, offsets[-1:] + 120])
    h = torch.randn(n_rows, width, dtype=torch.float64, requires_grad=True)
    grad = torch.randn(len(offsets) - 1, width, dtype=torch.float64)

    ours = segment_max(h, items, offsets)
    ref = F.embedding_bag(items, h, offsets[:-1], mode="max")
    torch.testing.assert_close(ours, ref, rtol=0, atol=0)
    (g_ours,) = torch.autograd.grad(ours, h, grad)
    (g_ref,) = torch.autograd.grad(ref, h, grad)
    torch.testing.assert_close(g_ours, g_ref)
    empty = (offsets[1:] == offsets[:-1]).nonzero().flatten()
    assert bool((ours[empty] == 0).all())


def test_segment_max_passes_gradcheck():
    rng = np.random.default_rng(7)
    items, offsets = _ragged(rng, 12, 200, 6)  # distinct values: no ties
    h = torch.randn(200, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: segment_max(t, items, offsets), (h,))
