"""core/activations.selu_: the CPU SELU with exp against the library's F.selu."""

import pytest
import torch
import torch.nn.functional as F

from curatornet_pipeline.core.activations import SELU, selu_


def _through_a_layer(act, x: torch.Tensor, w: torch.Tensor, g: torch.Tensor):
    """act after a linear layer (the towers' use): output and the gradients of x and w."""
    x = x.clone().requires_grad_()
    w = w.clone().requires_grad_()
    y = act(x @ w)
    y.backward(g)
    return y.detach(), x.grad, w.grad


def test_selu_matches_the_library_values_and_gradients_on_the_whole_range():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(512, 64, generator=gen) * 3  # both branches, tails and values near 0
    w = torch.randn(64, 96, generator=gen) / 8
    g = torch.randn(512, 96, generator=gen)
    ours = _through_a_layer(selu_, x, w, g)
    library = _through_a_layer(lambda z: F.selu(z, inplace=True), x, w, g)
    pre = x @ w
    assert (pre > 0).any() and (pre < 0).any() and (pre.abs() < 1e-3).any()
    for a, b in zip(ours, library, strict=True):  # float32 rounding of the largest values
        assert (a - b).abs().max() <= 1e-6 * b.abs().max()
    # exactly 0 at 0 and the limit -scale*alpha far below it, as SELU must
    edges = selu_(torch.tensor([0.0, -100.0, 1.0]))
    assert edges[0] == 0 and edges[1] == pytest.approx(-1.0507009873 * 1.6732632423)
    assert edges[2] == pytest.approx(1.0507009873)


def test_selu_writes_in_place_and_the_module_is_the_function():
    x = torch.randn(10, 5)
    expected = F.selu(x)
    y = x.clone()
    out = SELU()(y)
    assert out.data_ptr() == y.data_ptr()
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_selu_leaves_other_dtypes_to_the_library(dtype):
    x = (torch.randn(64, 32) * 2).to(dtype)
    assert torch.equal(selu_(x.clone()), F.selu(x))


def test_selu_runs_on_the_meta_device():
    x = torch.empty(4, 3, device="meta")
    assert selu_(x).shape == (4, 3)


def test_selu_blocks_cover_every_element_of_large_and_strided_tensors():
    from curatornet_pipeline.core.activations import BLOCK

    x = torch.randn(BLOCK // 100 + 7, 250) * 2  # two blocks and a partial third
    assert BLOCK < x.numel() < 3 * BLOCK and x.numel() % BLOCK
    expected = F.selu(x)
    assert (selu_(x.clone()) - expected).abs().max() <= 1e-6 * expected.abs().max()
    strided = x.t()  # not contiguous: one pass over the whole tensor
    assert (
        selu_(strided.clone(memory_format=torch.preserve_format)) - expected.t()
    ).abs().max() <= 1e-6 * expected.abs().max()
