"""Tests for diffnum.orth.adapt: zero change at initialization, merge/unmerge round trips,
input-centric = weight-centric, orthogonality and neuron angles kept in training, frozen base,
adapter state dicts, batched and float32 inputs, qGOFT's relaxation and penalty, SVFT's
patterns, gradcheck, bad arguments, and PEFT parity where PEFT is installed."""

from __future__ import annotations

import copy
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffnum.orth import (
    ADAPTERS,
    Adapter,
    adapt,
    adapter_state_dict,
    givens,
    load_adapter_state_dict,
    merge_adapters,
    orthogonality_penalty,
    trainable_parameters,
    unmerge_adapters,
)
from diffnum.orth._adapters import _skew_from_vector
from diffnum.orth._maps import _rotations

F64 = torch.float64
# Float64 products of O(1) matrices of side 16 round to ~1e-15; 1e-12 (the bar for
# round trips) and 1e-13 (orthogonality) leave two or more orders of margin.
ROUND_TRIP_TOL = 1e-12
ORTHOGONAL_TOL = 1e-13
# HRA (compact WY of equal pairs) and PiSSA (W_res + B A) equal the base only to rounding:
# one or two ulps of O(1) outputs; the other methods are exact (torch.equal).
INIT_TOL = 1e-15
INEXACT_AT_INIT = ("hra", "pissa")

# Every method with options that fit the models below (input sizes d = 16).
CASES = {
    "oft": ("oft", {"block_size": 4}),
    "oft-weight-centric": ("oft", {"block_size": 4, "input_centric": False}),
    "oft-neumann": ("oft", {"block_size": 4, "map": "cayley_neumann", "terms": 5}),
    "hra": ("hra", {"r": 4}),
    "boft": ("boft", {"block_size": 4}),
    "qgoft": ("qgoft", {}),
    "qgoft-strict": ("qgoft", {"relax": False}),
    "lora": ("lora", {"r": 3, "alpha": 6.0}),
    "pissa": ("pissa", {"r": 3}),
    "svft": ("svft", {}),
    "svft-banded": ("svft", {"pattern": "banded", "width": 2}),
    "svft-random": ("svft", {"pattern": "random", "entries": 20}),
}
ORTHOGONAL_CASES = ["oft", "oft-weight-centric", "hra", "boft", "qgoft-strict"]


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(16, 16, dtype=F64), act=nn.Tanh(),
                                     fc2=nn.Linear(16, 8, dtype=F64)))


def _conv(seed=0):
    torch.manual_seed(seed)  # weight (6, 4, 2, 2): the matrix (6, 16)
    return nn.Sequential(OrderedDict(conv=nn.Conv2d(4, 6, 2, dtype=F64), act=nn.Tanh()))


def _inputs(kind, seed=1):
    g = torch.Generator().manual_seed(seed)
    shape = (5, 16) if kind == "mlp" else (2, 4, 5, 5)
    return torch.randn(*shape, dtype=F64, generator=g)


MODELS = {"mlp": (_mlp, ["fc1", "fc2"]), "conv": (_conv, ["conv"])}


def _adapted(case, kind="mlp", seed=0):
    make, targets = MODELS[kind]
    base = make(seed)
    method, options = CASES[case]
    return base, adapt(copy.deepcopy(base), targets, method, **options)


@torch.no_grad()
def _perturb(model, scale=0.05, seed=2):
    g = torch.Generator().manual_seed(seed)
    for p in adapter_state_dict(model):
        param = model.get_parameter(p)
        param.add_(scale * torch.randn(param.shape, dtype=param.dtype, generator=g))


def _adapters(model):
    return [m for m in model.modules() if isinstance(m, Adapter)]


def _train(model, x, train_steps=5, lr=0.1):
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr)
    target = torch.ones_like(model(x))
    for _ in range(train_steps):
        loss = (model(x) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()


def _angles(W):
    """Cosines of the angles between the rows (neurons) of W."""
    unit = W / torch.linalg.vector_norm(W, dim=1, keepdim=True)
    return unit @ unit.mT


def _matrix(layer):
    return layer.weight.detach().reshape(layer.weight.shape[0], -1)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("case", CASES)
def test_output_equals_the_base_model_at_initialization(case, kind):
    base, model = _adapted(case, kind)
    x = _inputs(kind)
    y, y_adapted = base(x), model(x)
    if CASES[case][0] in INEXACT_AT_INIT:
        torch.testing.assert_close(y_adapted, y, rtol=0, atol=INIT_TOL)
    else:
        assert torch.equal(y_adapted, y)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("case", CASES)
def test_merge_unmerge_round_trip(case, kind):
    _, model = _adapted(case, kind)
    _perturb(model)
    x = _inputs(kind)
    y = model(x)
    layers = [a.base_layer for a in _adapters(model)]
    weights = [layer.weight.detach().clone() for layer in layers]
    merge_adapters(model)
    assert all(a.merged for a in _adapters(model))
    assert not any(torch.equal(w, layer.weight) for w, layer in zip(weights, layers))
    torch.testing.assert_close(model(x), y, rtol=0, atol=ROUND_TRIP_TOL)
    unmerge_adapters(model)
    for w, layer in zip(weights, layers):
        torch.testing.assert_close(layer.weight.detach(), w, rtol=0, atol=ROUND_TRIP_TOL)
    torch.testing.assert_close(model(x), y, rtol=0, atol=ROUND_TRIP_TOL)


@pytest.mark.parametrize("case", ["oft", "oft-neumann", "hra", "boft", "qgoft",
                                  "qgoft-strict"])
def test_input_centric_forward_equals_weight_centric(case):
    _, model = _adapted(case)
    _perturb(model)
    x = _inputs("mlp")
    for adapter in _adapters(model):
        assert adapter.input_centric
        z = torch.randn(7, adapter.in_size, dtype=F64)
        W = adapter.base_layer.weight
        R = adapter.rotation()
        # x R̃ with R̃ = Rᵀ, then the base layer: the same as the layer with W' = W R.
        torch.testing.assert_close(adapter.rotate_input(z), z @ R.mT, rtol=0, atol=1e-14)
        torch.testing.assert_close(adapter(z), F.linear(z, W @ R, adapter.base_layer.bias),
                                   rtol=0, atol=1e-13)
        torch.testing.assert_close(adapter.adapted_weight(), W @ R, rtol=0, atol=1e-14)
    weight_centric = copy.deepcopy(model)
    for adapter in _adapters(weight_centric):
        adapter.input_centric = False
    torch.testing.assert_close(model(x), weight_centric(x), rtol=0, atol=1e-13)


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("case", ORTHOGONAL_CASES)
def test_orthogonal_adapters_stay_orthogonal_and_keep_neuron_angles(case, kind):
    _, model = _adapted(case, kind)
    _train(model, _inputs(kind))
    for adapter in _adapters(model):
        R = adapter.rotation().detach()
        eye = torch.eye(R.shape[0], dtype=F64)
        assert float((R - eye).abs().max()) > 1e-3  # training moved R
        assert float((R.mT @ R - eye).abs().max()) <= ORTHOGONAL_TOL
        # R acts on the input side (W' = W R): the rows of W (neurons) keep their lengths and
        # mutual angles, W'W'ᵀ = W Wᵀ; the columns' Gram WᵀW is not kept.
        W, W_adapted = _matrix(adapter.base_layer), adapter.adapted_weight().detach()
        W_adapted = W_adapted.reshape(W.shape)
        torch.testing.assert_close(_angles(W_adapted), _angles(W), rtol=0, atol=1e-12)
        torch.testing.assert_close(torch.linalg.vector_norm(W_adapted, dim=1),
                                   torch.linalg.vector_norm(W, dim=1), rtol=0, atol=1e-12)
        assert float((W_adapted.mT @ W_adapted - W.mT @ W).abs().max()) > 1e-6


def test_cayley_neumann_adapter_is_orthogonal_to_its_series_error():
    # OFTv2's R: blockwise ‖R_qᵀR_q − I‖₂ = ‖A_q‖₂^{2k} for odd k (docs/pillars/orth.md).
    _, model = _adapted("oft-neumann")
    _perturb(model, scale=0.2)
    for adapter in _adapters(model):
        A = _skew_from_vector(adapter.skew.detach(), adapter.block_size)
        B = adapter.blocks().detach()
        eye = torch.eye(4, dtype=F64)
        error = torch.linalg.matrix_norm(B.mT @ B - eye, 2)
        bound = torch.linalg.matrix_norm(A, 2) ** 10
        torch.testing.assert_close(error, bound, rtol=1e-3, atol=1e-15)


@pytest.mark.parametrize("case", CASES)
def test_only_adapter_parameters_train(case):
    _, model = _adapted(case, "mlp")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == set(adapter_state_dict(model))
    assert trainable_parameters(model) == sum(p.numel() for p in
                                              adapter_state_dict(model).values())
    frozen = {n: p.detach().clone() for n, p in model.named_parameters()
              if not p.requires_grad}
    assert frozen and all(".base_layer." in n for n in frozen)
    model(_inputs("mlp")).sum().backward()
    for n, p in model.named_parameters():
        assert (p.grad is not None) == (n in trainable), n
    _train(model, _inputs("mlp"))
    for n, p in model.named_parameters():
        if n in frozen:
            assert torch.equal(p, frozen[n]), n


def test_trainable_parameter_counts():
    # Per layer with d = 16 inputs: OFT (16/4)·6, HRA 16·r, BOFT 3 factors·(16/4)·6,
    # GOFT ⌈log₂ 16⌉ = 4 rounds of 8 angles, qGOFT 4 numbers per 2×2 block of them,
    # LoRA/PiSSA r·(16 + out); two layers (out 16, 8). SVFT at full rank r = min(out, 16):
    # plain r, banded r(2w + 1) − w(w + 1) (w = 2), random ``entries``.
    expected = {"oft": 2 * 24, "hra": 2 * 64, "boft": 2 * 72, "qgoft-strict": 2 * 32,
                "qgoft": 2 * 4 * 32, "lora": 3 * 32 + 3 * 24, "pissa": 3 * 32 + 3 * 24,
                "svft": 16 + 8, "svft-banded": (16 * 5 - 6) + (8 * 5 - 6),
                "svft-random": 2 * 20}
    for case, count in expected.items():
        assert trainable_parameters(_adapted(case)[1]) == count, case


@pytest.mark.parametrize("kind", MODELS)
@pytest.mark.parametrize("case", CASES)
def test_adapter_state_dict_round_trip(case, kind):
    base, model = _adapted(case, kind)
    _train(model, _inputs(kind))
    state = adapter_state_dict(model)
    assert state and not any("base_layer" in k for k in state)
    method, options = CASES[case]
    torch.manual_seed(123)  # a different random start (HRA, LoRA) for the fresh copy
    fresh = adapt(copy.deepcopy(base), MODELS[kind][1], method, **options)
    x = _inputs(kind)
    load_adapter_state_dict(fresh, state)
    assert torch.equal(fresh(x), model(x))


def test_load_adapter_state_dict_rejects_mismatches():
    _, model = _adapted("oft")
    state = adapter_state_dict(model)
    with pytest.raises(ValueError, match="missing"):
        load_adapter_state_dict(model, {k: v for k, v in state.items() if "fc1" not in k})
    with pytest.raises(ValueError, match="unexpected"):
        load_adapter_state_dict(model, {**state, "fc3.skew": state["fc1.skew"]})
    with pytest.raises(ValueError, match=r"state_dict\['fc1.skew'\]"):
        load_adapter_state_dict(model, {**state, "fc1.skew": state["fc1.skew"][:2]})
    model.fc1.merge()
    with pytest.raises(ValueError, match="unmerge"):
        load_adapter_state_dict(model, state)
    with pytest.raises(RuntimeError, match="already merged"):
        model.fc1.merge()
    model.fc1.unmerge()
    with pytest.raises(RuntimeError, match="not merged"):
        model.fc1.unmerge()


def test_pissa_factors_are_the_principal_triplets():
    base, model = _adapted("pissa")
    W = base.fc1.weight.detach()
    U, S, Vh = torch.linalg.svd(W)
    adapter = model.fc1
    torch.testing.assert_close(adapter.delta().detach(), (U[:, :3] * S[:3]) @ Vh[:3],
                               rtol=0, atol=1e-13)
    # The frozen residual holds the other singular values only.
    torch.testing.assert_close(torch.linalg.svdvals(adapter.base_layer.weight.detach())[:13],
                               S[3:], rtol=0, atol=1e-13)
    # svd="randomized" (diffnum.factor.rsvd) agrees when the spectrum decays (here σ_i = 2^-i:
    # 13 sketch columns and two power iterations leave an error ~ (σ_14/σ_4)^5 ≈ 1e-15).
    with torch.no_grad():
        base.fc1.weight.copy_((U * 0.5 ** torch.arange(16, dtype=F64)) @ Vh)
    exact = adapt(copy.deepcopy(base), ["fc1"], "pissa", r=3)
    torch.manual_seed(0)
    randomized = adapt(copy.deepcopy(base), ["fc1"], "pissa", r=3, svd="randomized")
    torch.testing.assert_close(randomized.fc1.delta().detach(), exact.fc1.delta().detach(),
                               rtol=0, atol=1e-12)


@pytest.mark.parametrize("case", CASES)
def test_batched_inputs_and_float32(case):
    base, model = _adapted(case)
    _perturb(model)
    x = _inputs("mlp")
    batched = torch.randn(2, 3, 16, dtype=F64, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(model(batched), model(batched.reshape(6, 16)).reshape(2, 3, 8),
                               rtol=0, atol=1e-14)
    # The same adapter built on float32 weights, loaded with the float64 adapter values,
    # computes the float64 outputs to float32 rounding and round-trips merge/unmerge.
    method, options = CASES[case]
    model32 = adapt(copy.deepcopy(base).float(), ["fc1", "fc2"], method, **options)
    x32 = x.float()
    start = model32(x32)
    torch.testing.assert_close(start, base.float()(x32), rtol=0, atol=1e-5)
    load_adapter_state_dict(model32, adapter_state_dict(model))
    assert all(p.dtype == torch.float32 for p in model32.parameters())
    y32 = model32(x32)
    assert y32.dtype == torch.float32
    torch.testing.assert_close(y32.double(), model(x), rtol=0, atol=1e-5)
    weights = [a.base_layer.weight.detach().clone() for a in _adapters(model32)]
    unmerge_adapters(merge_adapters(model32))
    for w, a in zip(weights, _adapters(model32)):
        torch.testing.assert_close(a.base_layer.weight.detach(), w, rtol=0, atol=1e-5)


# qGOFT's quasi-Givens relaxation (Ma et al., ICML 2024, Sec. 4.2, Eqs. 5–6).


@pytest.mark.parametrize("d", [16, 7])
def test_relaxed_qgoft_with_rotation_blocks_is_strict_qgoft(d):
    # Blocks set to [[cos θ, −sin θ], [sin θ, cos θ]] give GOFT's R = givens(θ): the two forms
    # share the schedule, the block positions and the order of the rounds (odd d: a bye).
    torch.manual_seed(0)
    base = nn.Sequential(nn.Linear(d, 5, dtype=F64))
    relaxed = adapt(copy.deepcopy(base), ["0"], "qgoft")
    strict = adapt(copy.deepcopy(base), ["0"], "qgoft", relax=False)
    assert relaxed[0].relax and not strict[0].relax
    theta = torch.randn(strict[0].angles.shape, dtype=F64, generator=torch.Generator()
                        .manual_seed(5))
    with torch.no_grad():
        strict[0].angles.copy_(theta)
        relaxed[0].blocks.copy_(_rotations(theta))
    R = relaxed[0].rotation().detach()
    torch.testing.assert_close(R, givens(theta, d), rtol=0, atol=1e-14)
    x = torch.randn(4, d, dtype=F64)
    torch.testing.assert_close(relaxed(x), strict(x), rtol=0, atol=1e-13)
    assert float(orthogonality_penalty(relaxed).detach()) <= 1e-30  # rotation rows are orthogonal


def test_relaxed_qgoft_blocks_set_norms_and_angles():
    # One round on d = 4 (pairs (0, 3) and (1, 2)): a neuron w becomes w P, and
    # ‖w P‖² = w (P Pᵀ) wᵀ with P Pᵀ = [[‖α‖², ⟨α, β⟩], [⟨α, β⟩, ‖β‖²]] on each pair's
    # coordinates (Eq. 6; α, β the rows of a block here, the columns of the paper's G̃).
    torch.manual_seed(0)
    model = adapt(nn.Sequential(nn.Linear(4, 3, dtype=F64)), ["0"], "qgoft", rounds=1)
    adapter = model[0]
    blocks = torch.tensor([[[1.5, 0.4], [-0.2, 0.7]], [[0.9, 0.0], [0.0, 1.2]]], dtype=F64)
    with torch.no_grad():
        adapter.blocks.copy_(blocks[None])
    R = adapter.rotation().detach()
    G = R @ R.mT
    for (i, j), B in zip([(0, 3), (1, 2)], blocks):
        alpha, beta = B
        expected = torch.stack([torch.stack([alpha @ alpha, alpha @ beta]),
                                torch.stack([alpha @ beta, beta @ beta])])
        torch.testing.assert_close(G[[i, j]][:, [i, j]], expected, rtol=0, atol=1e-15)
    assert float(G[[0, 0, 3, 3], [1, 2, 1, 2]].abs().max()) == 0.0  # pairs do not mix
    W = _matrix(adapter.base_layer)
    W_adapted = adapter.adapted_weight().detach()
    torch.testing.assert_close(W_adapted.square().sum(1), torch.diag(W @ G @ W.mT),
                               rtol=0, atol=1e-14)
    # ⟨α, β⟩² = (1.5·(−0.2) + 0.4·0.7)² for the first block, 0 for the diagonal one.
    torch.testing.assert_close(orthogonality_penalty(model),
                               torch.tensor(0.02 ** 2, dtype=F64), rtol=1e-12, atol=0)


def test_relaxed_qgoft_leaves_orthogonality_and_the_penalty_pulls_it_back():
    _, model = _adapted("qgoft")
    _train(model, _inputs("mlp"), train_steps=10, lr=0.2)
    for adapter in _adapters(model):
        R = adapter.rotation().detach()
        eye = torch.eye(16, dtype=F64)
        assert float((R.mT @ R - eye).abs().max()) > 1e-3  # no longer orthogonal
        W, W_adapted = _matrix(adapter.base_layer), adapter.adapted_weight().detach()
        assert float((_angles(W_adapted) - _angles(W)).abs().max()) > 1e-4
    # Gradient of Σ⟨α, β⟩²: 2⟨α, β⟩β for α and 2⟨α, β⟩α for β.
    _perturb(model, scale=0.3)
    model.zero_grad()
    penalty = orthogonality_penalty(model)
    penalty.backward()
    for adapter in _adapters(model):
        B = adapter.blocks.detach()
        inner = (B[..., 0, :] * B[..., 1, :]).sum(-1, keepdim=True)
        expected = torch.stack([2 * inner * B[..., 1, :], 2 * inner * B[..., 0, :]], dim=-2)
        torch.testing.assert_close(adapter.blocks.grad, expected, rtol=0, atol=1e-14)
    opt = torch.optim.SGD([a.blocks for a in _adapters(model)], lr=0.05)
    for _ in range(30):
        opt.zero_grad()
        orthogonality_penalty(model).backward()
        opt.step()
    assert float(orthogonality_penalty(model).detach()) < 0.01 * float(penalty.detach())


def test_orthogonality_penalty_counts_relaxed_qgoft_only():
    for case in ("oft", "qgoft-strict", "lora", "svft"):
        _, model = _adapted(case)
        _perturb(model)
        assert float(orthogonality_penalty(model)) == 0.0
    model = adapt(adapt(_mlp(), ["fc1"], "qgoft"), ["fc2"], "lora", r=2)  # mixed
    _perturb(model)
    torch.testing.assert_close(orthogonality_penalty(model), model.fc1.orthogonality_penalty(),
                               rtol=0, atol=0)
    assert float(orthogonality_penalty(model).detach()) > 0
    with pytest.raises(TypeError, match="model"):
        orthogonality_penalty(torch.ones(2))


def test_relaxed_qgoft_unmerge_refuses_a_singular_block():
    _, model = _adapted("qgoft")
    with torch.no_grad():
        model.fc1.blocks[1, 3] = torch.tensor([[1.0, 2.0], [0.5, 1.0]], dtype=F64)
    model.fc1.merge()
    with pytest.raises(RuntimeError, match="singular"):
        model.fc1.unmerge()


# SVFT (Lingam et al. 2024, Sec. 3.1).


def test_svft_is_a_sparse_combination_of_singular_vector_pairs():
    base, model = _adapted("svft-banded")
    _perturb(model)
    for name in ("fc1", "fc2"):
        W = getattr(base, name).weight.detach()
        U, _, Vh = torch.linalg.svd(W, full_matrices=False)
        adapter = getattr(model, name)
        r = min(W.shape)
        assert adapter.U.shape == (W.shape[0], r) and adapter.V.shape == (16, r)
        # The pairs of torch.linalg.svd with one sign per pair: the largest-magnitude entry of
        # every u_i positive (the coefficients then do not depend on LAPACK's sign choice).
        sign = adapter.U.gather(0, U.abs().argmax(0, keepdim=True)).sign()
        assert bool((sign > 0).all())
        sign = torch.where(U.gather(0, U.abs().argmax(0, keepdim=True)) < 0, -1.0, 1.0)
        U, Vh = U * sign, Vh * sign.mT
        torch.testing.assert_close(adapter.U, U, rtol=0, atol=0)
        torch.testing.assert_close(adapter.V, Vh.mT, rtol=0, atol=0)
        pairs = set(zip(adapter.rows.tolist(), adapter.cols.tolist()))
        assert pairs == {(i, j) for i in range(r) for j in range(r) if abs(i - j) <= 2}
        # ΔW = Σ_{(i,j)∈Ω} m_ij u_i v_jᵀ (Eq. 2).
        m = adapter.coefficients.detach()
        delta = sum(c * torch.outer(U[:, i], Vh[j]) for c, i, j in
                    zip(m, adapter.rows.tolist(), adapter.cols.tolist()))
        torch.testing.assert_close(adapter.delta().detach(), delta, rtol=0, atol=1e-14)
        torch.testing.assert_close(adapter.adapted_weight().detach(), W + delta, rtol=0,
                                   atol=1e-14)


def test_svft_plain_changes_only_the_singular_values():
    # Lemma (a): a diagonal M keeps U and V; the singular values become |σ_i + m_i|.
    base, model = _adapted("svft")
    _perturb(model, scale=0.1)
    W = base.fc1.weight.detach()
    S = torch.linalg.svdvals(W)
    m = model.fc1.coefficients.detach()
    W_adapted = model.fc1.adapted_weight().detach()
    torch.testing.assert_close(torch.linalg.svdvals(W_adapted),
                               (S + m).abs().sort(descending=True).values, rtol=0, atol=1e-13)
    U = model.fc1.U
    torch.testing.assert_close(U.mT @ W_adapted @ model.fc1.V, torch.diag(S + m), rtol=0,
                               atol=1e-13)


def test_svft_random_and_topk_patterns():
    base = _square_mlp()
    a = adapt(copy.deepcopy(base), ["fc1"], "svft", pattern="random", entries=30, seed=1)
    b = adapt(copy.deepcopy(base), ["fc1"], "svft", pattern="random", entries=30, seed=1)
    c = adapt(copy.deepcopy(base), ["fc1"], "svft", pattern="random", entries=30, seed=2)
    flat = a.fc1.rows * 16 + a.fc1.cols
    assert flat.numel() == 30 and flat.unique().numel() == 30
    assert torch.equal(flat, b.fc1.rows * 16 + b.fc1.cols)
    assert not torch.equal(flat, c.fc1.rows * 16 + c.fc1.cols)
    top = adapt(copy.deepcopy(base), ["fc1"], "svft", pattern="topk", entries=12)
    align = (top.fc1.U.mT @ top.fc1.V).abs()
    chosen = torch.zeros(16, 16, dtype=torch.bool)
    chosen[top.fc1.rows, top.fc1.cols] = True
    assert int(chosen.sum()) == 12
    assert float(align[chosen].min()) >= float(align[~chosen].max())


def test_svft_truncated_and_randomized():
    # r < min(out, d) keeps the top-r pairs (App. C.3); svd="randomized" (factor.rsvd, drawn
    # with ``seed``) is reproducible and agrees with the exact SVD on a decaying spectrum, up
    # to the signs of the pairs, which u_i v_iᵀ does not see.
    base = _square_mlp()
    U, _, Vh = torch.linalg.svd(base.fc1.weight.detach())
    with torch.no_grad():
        base.fc1.weight.copy_((U * 0.5 ** torch.arange(16, dtype=F64)) @ Vh)
    exact = adapt(copy.deepcopy(base), ["fc1"], "svft", r=4)
    first = adapt(copy.deepcopy(base), ["fc1"], "svft", r=4, svd="randomized", seed=3)
    again = adapt(copy.deepcopy(base), ["fc1"], "svft", r=4, svd="randomized", seed=3)
    assert exact.fc1.U.shape == (16, 4) and trainable_parameters(exact) == 4
    assert torch.equal(first.fc1.U, again.fc1.U) and torch.equal(first.fc1.V, again.fc1.V)
    values = torch.tensor([0.3, -0.2, 0.1, 0.4], dtype=F64)
    with torch.no_grad():
        for model in (exact, first):
            model.fc1.coefficients.copy_(values)
    torch.testing.assert_close(first.fc1.delta(), exact.fc1.delta(), rtol=0, atol=1e-12)


@pytest.mark.parametrize("layer", ["linear", "conv"])
@pytest.mark.parametrize(("method", "options", "name"), [
    ("qgoft", {}, "blocks"),
    ("qgoft", {"input_centric": False}, "blocks"),
    ("svft", {"pattern": "banded", "width": 1}, "coefficients"),
])
def test_gradcheck_relaxed_qgoft_and_svft(layer, method, options, name):
    torch.manual_seed(0)
    if layer == "linear":  # d = 5: odd, a bye in every round
        module, x = nn.Linear(5, 3, dtype=F64), torch.randn(4, 5, dtype=F64)
    else:  # the weight as a matrix (3, 2·2·2 = 8)
        module, x = nn.Conv2d(2, 3, 2, dtype=F64), torch.randn(1, 2, 3, 3, dtype=F64)
    model = adapt(nn.Sequential(module), ["0"], method, **options)
    start = getattr(model[0], name).detach()
    p = (start + 0.1 * torch.randn_like(start)).requires_grad_()

    def f(value):
        return torch.func.functional_call(model, {f"0.{name}": value}, (x,))

    assert torch.autograd.gradcheck(f, (p,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_adapting_twice_and_suffix_targets():
    model = nn.Sequential(OrderedDict(block=nn.Sequential(OrderedDict(
        fc=nn.Linear(4, 4, dtype=F64))), fc=nn.Linear(4, 4, dtype=F64)))
    adapt(model, ["fc"], "lora", r=1)  # a suffix: both "fc" and "block.fc"
    assert isinstance(model.fc, Adapter) and isinstance(model.block.fc, Adapter)
    with pytest.raises(ValueError, match=r"target_modules.*already an adapter"):
        adapt(model, ["block.fc"], "oft", block_size=2)
    with pytest.raises(ValueError, match="inside one"):
        adapt(model, ["block.fc.base_layer"], "oft", block_size=2)


@pytest.mark.parametrize(("method", "options", "error", "name"), [
    ("dora", {}, ValueError, "method"),
    ("oft", {"block_size": 3}, ValueError, "block_size"),
    ("oft", {"block_size": 0}, ValueError, "block_size"),
    ("oft", {"block_size": 4, "map": "exp"}, ValueError, "map"),
    ("oft", {"block_size": 4, "terms": 3}, TypeError, "terms"),
    ("oft", {"block_size": 4, "input_centric": 1}, TypeError, "input_centric"),
    ("oft", {"rank": 4}, TypeError, "rank"),
    ("boft", {"block_size": 3}, ValueError, "block_size"),
    ("boft", {"block_size": 4, "factors": 4}, ValueError, "factors"),
    ("hra", {"r": 3}, ValueError, "r must be even"),
    ("hra", {"r": 18}, ValueError, "r"),
    ("hra", {"r": 0}, ValueError, "r"),
    ("qgoft", {"rounds": 16}, ValueError, "rounds"),
    ("qgoft", {"relax": 1}, TypeError, "relax"),
    ("svft", {"r": 9}, ValueError, "r"),  # fc2 is (8, 16): r <= 8
    ("svft", {"pattern": "diagonal"}, ValueError, "pattern"),
    ("svft", {"width": 2}, TypeError, "width"),
    ("svft", {"pattern": "banded", "width": 8}, ValueError, "width"),  # fc2: r = 8, w <= 7
    ("svft", {"pattern": "banded", "width": 0}, ValueError, "width"),
    ("svft", {"entries": 3}, TypeError, "entries"),
    ("svft", {"pattern": "random", "entries": 0}, ValueError, "entries"),
    ("svft", {"pattern": "random", "entries": 65}, ValueError, "entries"),  # fc2: 8·8
    ("svft", {"pattern": "topk"}, ValueError, "pattern='topk'"),  # fc2 is not square
    ("svft", {"seed": -1}, ValueError, "seed"),
    ("svft", {"svd": "lanczos"}, ValueError, "svd"),
    ("lora", {"r": 0}, ValueError, "r"),
    ("lora", {"r": 9}, ValueError, "r"),  # fc2 is (8, 16): r <= 8
    ("lora", {"r": 2, "alpha": -1.0}, ValueError, "alpha"),
    ("lora", {"r": 2.0}, TypeError, "r"),
    ("pissa", {"r": 2, "svd": "lanczos"}, ValueError, "svd"),
])
def test_bad_arguments_name_the_argument(method, options, error, name):
    model = _mlp()
    before = copy.deepcopy(model.state_dict())
    with pytest.raises(error, match=name):
        adapt(model, ["fc1", "fc2"], method, **options)
    # Nothing was changed: every check runs before the model is touched.
    assert not _adapters(model)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def test_bad_targets_name_the_argument():
    with pytest.raises(ValueError, match=r"target_modules.*\['fc3'\]"):
        adapt(_mlp(), ["fc1", "fc3"], "oft", block_size=4)
    with pytest.raises(TypeError, match=r"target_modules.*Tanh"):
        adapt(_mlp(), ["act"], "oft", block_size=4)
    with pytest.raises(TypeError, match="target_modules"):
        adapt(_mlp(), "fc1", "oft", block_size=4)
    with pytest.raises(TypeError, match="target_modules"):
        adapt(_mlp(), [], "oft", block_size=4)
    with pytest.raises(TypeError, match="model"):
        adapt(torch.ones(3), ["fc1"])


def test_every_method_has_a_case():
    assert {method for method, _ in CASES.values()} == set(ADAPTERS)


# PEFT parity: same base, same adapter values, same outputs (skipped without PEFT).


def _square_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(OrderedDict(fc1=nn.Linear(16, 16, dtype=F64), act=nn.Tanh(),
                                     fc2=nn.Linear(16, 16, dtype=F64)))


def test_lora_matches_peft():
    peft = pytest.importorskip("peft", reason="PEFT is not installed: no parity check")
    base = _square_mlp()
    config = peft.LoraConfig(r=3, lora_alpha=6, target_modules=["fc1", "fc2"],
                             lora_dropout=0.0)
    theirs = peft.get_peft_model(copy.deepcopy(base), config).to(F64)
    ours = adapt(copy.deepcopy(base), ["fc1", "fc2"], "lora", r=3, alpha=6.0)
    _perturb(ours)
    with torch.no_grad():
        for name in ("fc1", "fc2"):
            layer = theirs.base_model.model.get_submodule(name)
            layer.lora_A["default"].weight.copy_(getattr(ours, name).lora_A)
            layer.lora_B["default"].weight.copy_(getattr(ours, name).lora_B)
    x = _inputs("mlp")
    torch.testing.assert_close(ours(x), theirs(x), rtol=0, atol=1e-12)


def test_oft_matches_peft():
    # PEFT's OFT storage has changed between versions; compare through its merged weight:
    # W' = W R gives R = W⁻¹W' (square W), which must be block diagonal and orthogonal, and
    # our adapter with the same blocks (inverse Cayley) must give PEFT's outputs. The
    # tolerance 1e-6 allows for a rotation PEFT may build in float32; a convention mismatch
    # (side, transpose, block order) gives O(1e-2) errors.
    peft = pytest.importorskip("peft", reason="PEFT is not installed: no parity check")
    base = _square_mlp()
    fields = getattr(peft.OFTConfig, "__dataclass_fields__", {})
    options = {"target_modules": ["fc1", "fc2"], "module_dropout": 0.0}
    if "oft_block_size" in fields:
        options.update(oft_block_size=4, r=0)
    else:
        options.update(r=4)  # older PEFT: r = number of blocks
    if "use_cayley_neumann" in fields:
        options["use_cayley_neumann"] = False
    theirs = peft.get_peft_model(copy.deepcopy(base), peft.OFTConfig(**options)).to(F64)
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if "oft_" in name and p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g).to(p.dtype))
    x = _inputs("mlp")
    y_theirs = theirs(x)
    merged = theirs.merge_and_unload()
    ours = adapt(copy.deepcopy(base), ["fc1", "fc2"], "oft", block_size=4)
    rows, cols = torch.triu_indices(4, 4, 1)
    eye = torch.eye(4, dtype=F64)
    with torch.no_grad():
        for name in ("fc1", "fc2"):
            W, W_merged = getattr(base, name).weight, getattr(merged, name).weight
            R = torch.linalg.solve(W, W_merged.to(F64))
            blocks = torch.stack([R[4 * q:4 * q + 4, 4 * q:4 * q + 4] for q in range(4)])
            assert float((torch.block_diag(*blocks) - R).abs().max()) < 1e-6
            A = torch.linalg.solve(eye + blocks, eye - blocks)  # inverse Cayley
            getattr(ours, name).skew.copy_(A[:, rows, cols])
    torch.testing.assert_close(ours(x), y_theirs.to(F64), rtol=0, atol=1e-6)
