"""kernels/gemm: the towers' dense layers on oneDNN or the BLAS, against float64 arithmetic."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from curatornet_pipeline.core.models.networks import VBPR, CuratorNet, CuratorNetConfig, VBPRConfig
from curatornet_pipeline.kernels import gemm
from curatornet_pipeline.kernels.gemm import Linear, gemm_backend, use_gemm_backend

needs_onednn = pytest.mark.skipif(
    not gemm.onednn_available(), reason="this PyTorch build has no oneDNN"
)


def _run(layer: nn.Module, x: torch.Tensor, g: torch.Tensor, input_grad: bool = True):
    layer.zero_grad()
    x = x.clone().requires_grad_(input_grad)
    y = layer(x)
    y.backward(g)
    return y.detach(), (x.grad if input_grad else None), layer.weight.grad, layer.bias.grad


def _ops(fn) -> set[str]:
    """The operators (by packet name) that ``fn`` dispatches matrix products to."""
    with FlopCounterMode(display=False) as counter:
        fn()
    return {str(op) for op, n in counter.get_flop_counts()["Global"].items() if n}


@needs_onednn
@pytest.mark.parametrize("backend", ["onednn", "blas"])
def test_linear_values_and_all_three_gradients_match_float64(backend):
    gen = torch.Generator().manual_seed(0)
    layer = Linear(96, 40)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(40, 96, generator=gen) / 10)
        layer.bias.copy_(torch.randn(40, generator=gen))
    x = torch.randn(700, 96, generator=gen)
    g = torch.randn(700, 40, generator=gen)
    with use_gemm_backend(backend):
        ours = _run(layer, x, g)
    ref = nn.Linear(96, 40).double()
    ref.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
    exact = _run(ref, x.double(), g.double())
    for a, b in zip(ours, exact, strict=True):
        assert a.dtype == torch.float32
        assert (a.double() - b).abs().max() <= 1e-5 * b.abs().max()


@needs_onednn
def test_onednn_backend_runs_forward_and_input_gradient_on_onednn_and_counts_their_flops():
    layer, x = Linear(64, 32), torch.randn(100, 64, requires_grad=True)

    def step():
        layer(x).sum().backward()

    with use_gemm_backend("onednn"):
        onednn = _ops(step)
        with FlopCounterMode(display=False) as counter:
            step()
    with use_gemm_backend("blas"):
        blas = _ops(step)
    assert onednn == {"mkldnn._linear_pointwise", "aten.mm"}  # the weight gradient on the BLAS
    assert blas == {"aten.addmm", "aten.mm"}
    assert counter.get_total_flops() == 3 * 2 * 100 * 64 * 32  # as F.linear's would count


@needs_onednn
def test_frozen_inputs_get_no_gradient_and_other_shapes_and_dtypes_take_f_linear():
    gen = torch.Generator().manual_seed(1)
    layer = Linear(32, 8)
    x = torch.randn(50, 32, generator=gen)
    g = torch.randn(50, 8, generator=gen)
    with use_gemm_backend("onednn"):
        frozen = _run(layer, x, g, input_grad=False)  # the item tower's features
        assert frozen[1] is None and frozen[2] is not None
        x3 = torch.randn(4, 5, 32, generator=gen)  # leading dimensions are kept
        assert torch.allclose(layer(x3), F.linear(x3, layer.weight, layer.bias), atol=1e-5)
        nobias = Linear(32, 8, bias=False)
        assert torch.allclose(nobias(x), x @ nobias.weight.T, atol=1e-5)
        with torch.autocast("cpu", dtype=torch.bfloat16):  # autocast keeps the library's
            assert _ops(lambda: layer(x)) == {"aten.addmm"}
            assert layer(x).dtype == torch.bfloat16
        assert _ops(lambda: layer.double()(x.double())) == {"aten.addmm"}


def test_auto_takes_the_blas_on_intel_and_onednn_elsewhere_and_the_variable_overrides(
    monkeypatch,
):
    gemm._configured_backend.cache_clear()
    try:
        monkeypatch.setattr(gemm, "onednn_available", lambda: True)
        for vendor, expected in (("GenuineIntel", "blas"), ("AuthenticAMD", "onednn")):
            monkeypatch.setattr(gemm, "cpuinfo", lambda field, v=vendor: v)
            for setting, want in (("", expected), ("auto", expected), ("blas", "blas"),
                                  ("ONEDNN", "onednn")):  # fmt: skip
                monkeypatch.setenv("CURATORNET_CPU_GEMM", setting)
                gemm._configured_backend.cache_clear()
                assert gemm_backend() == want, (vendor, setting)
        monkeypatch.setattr(gemm, "onednn_available", lambda: False)
        monkeypatch.setenv("CURATORNET_CPU_GEMM", "onednn")
        gemm._configured_backend.cache_clear()
        assert gemm_backend() == "blas"  # a build without oneDNN still trains
        monkeypatch.setenv("CURATORNET_CPU_GEMM", "mkl")
        gemm._configured_backend.cache_clear()
        with pytest.raises(ValueError, match="CURATORNET_CPU_GEMM='mkl'"):
            gemm_backend()
    finally:
        gemm._configured_backend.cache_clear()


@needs_onednn
def test_a_curatornet_step_is_the_same_on_both_backends_and_keeps_nn_linear_state():
    torch.manual_seed(0)
    model = CuratorNet(CuratorNetConfig(input_dim=48))
    dense = [m for m in model.modules() if isinstance(m, nn.Linear)]
    assert len(dense) == 5 and all(isinstance(m, Linear) for m in dense)
    reference = nn.Linear(48, 200).state_dict().keys()
    assert model.item_tower[0].state_dict().keys() == reference  # model files load as before
    x = torch.randn(30, 48)
    items = torch.randint(0, 30, (60,))
    offsets = torch.tensor([0, 5, 6, 20, 60])

    def users():
        model.zero_grad()
        u = model.embed_users(model.embed_items(x), items, offsets)
        u.square().sum().backward()
        return u.detach(), [p.grad.clone() for p in model.parameters()]

    with use_gemm_backend("onednn"):
        u1, g1 = users()
    with use_gemm_backend("blas"):
        u2, g2 = users()
    assert torch.allclose(u1, u2, rtol=1e-4, atol=1e-5)
    for a, b in zip(g1, g2, strict=True):
        assert (a - b).abs().max() <= 1e-4 * b.abs().max() + 1e-6


@needs_onednn
def test_vbpr_visual_projection_takes_the_backend_with_the_same_terms_and_gradient():
    torch.manual_seed(0)
    model = VBPR(VBPRConfig(n_users=4, n_items=30, input_dim=48))
    x, items = torch.randn(30, 48), torch.arange(30)

    def terms():
        model.zero_grad()
        vectors, bias = model.item_terms(items, x)
        (vectors.square().sum() + bias.sum()).backward()
        return vectors.detach(), model.embedding.grad.clone()

    with use_gemm_backend("onednn"):
        assert "mkldnn._linear_pointwise" in _ops(terms)
        v1, g1 = terms()
    with use_gemm_backend("blas"):
        assert "mkldnn._linear_pointwise" not in _ops(terms)
        v2, g2 = terms()
    assert torch.allclose(v1, v2, rtol=1e-4, atol=1e-5)
    assert (g1 - g2).abs().max() <= 1e-4 * g2.abs().max() + 1e-6
