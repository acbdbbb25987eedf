"""Tests for diffnum.optim: parity with torch.optim.Muon and AdamW, routing of parameters,
N-D weights, batching, the variants, state_dict round trips and bad arguments."""

from __future__ import annotations

import io

import pytest
import torch

from diffnum.factor import POLAR_PRESETS, msign, polar_schedule
from diffnum.optim import AuON, Muon, Root, TurboMuon


def _params(shapes, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(*s, dtype=dtype, generator=g)) for s in shapes]


def _clone(params):
    return [torch.nn.Parameter(p.detach().clone()) for p in params]


def _set_grads(params, seed):
    g = torch.Generator().manual_seed(seed)
    for p in params:
        p.grad = torch.randn(p.shape, dtype=p.dtype, generator=g)


@pytest.mark.parametrize("nesterov", [True, False])
@pytest.mark.parametrize("shape", [(64, 32), (32, 96), (48, 48)])
def test_matches_torch_muon(shape, nesterov):
    # Same coefficients, step count, bf16 iterations and lr rule: the same parameters after
    # three steps, to float32 rounding (the bar: 1e-5 relative).
    ours_p = _params([shape])
    ref_p = _clone(ours_p)
    ours = Muon(ours_p, lr=0.02, weight_decay=0.1, nesterov=nesterov, adjust_lr="original")
    ref = torch.optim.Muon(ref_p, lr=0.02, weight_decay=0.1, nesterov=nesterov)
    for k in range(3):
        _set_grads(ours_p, k)
        _set_grads(ref_p, k)
        ours.step()
        ref.step()
        delta = (ours_p[0] - ref_p[0]).detach().norm() / ref_p[0].detach().norm()
        assert float(delta) <= 1e-5
    for rule in ("match_rms_adamw",):
        a, b = _params([shape]), None
        b = _clone(a)
        _set_grads(a, 7)
        _set_grads(b, 7)
        Muon(a, lr=0.02, adjust_lr=rule).step()
        torch.optim.Muon(b, lr=0.02, adjust_lr_fn=rule).step()
        assert float((a[0] - b[0]).detach().norm() / b[0].detach().norm()) <= 1e-5


def test_adamw_group_matches_torch_adamw():
    ours_p = _params([(5,), (3,)], dtype=torch.float64)
    ref_p = _clone(ours_p)
    ours = Muon(ours_p, lr=3e-3, weight_decay=0.05, betas=(0.9, 0.99), eps=1e-8)
    ref = torch.optim.AdamW(ref_p, lr=3e-3, weight_decay=0.05, betas=(0.9, 0.99), eps=1e-8)
    assert [g["algorithm"] for g in ours.param_groups] == ["adamw"]
    for k in range(4):
        _set_grads(ours_p, k)
        _set_grads(ref_p, k)
        ours.step()
        ref.step()
    for a, b in zip(ours_p, ref_p, strict=True):
        torch.testing.assert_close(a, b, atol=1e-15, rtol=1e-14)


def test_model_is_split_by_rank_and_explicit_groups_are_kept():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8),
                                torch.nn.Conv1d(8, 4, 3))
    opt = Muon(model.parameters())
    algorithms = [g["algorithm"] for g in opt.param_groups]
    assert algorithms == ["muon", "adamw"]
    assert sum(len(g["params"]) for g in opt.param_groups) == 5
    emb = model[0].weight
    rest = [p for p in model.parameters() if p is not emb]
    opt = Muon([{"params": [emb], "algorithm": "adamw", "lr": 1e-2}, {"params": rest}])
    assert [g["algorithm"] for g in opt.param_groups] == ["adamw", "muon", "adamw"]
    assert opt.param_groups[0]["lr"] == 1e-2


def test_conv_weight_is_orthogonalized_as_out_by_in_times_k():
    # A (out, in, k, k) weight's step is msign of its (out, in·k²) matrix, reshaped back.
    W = _params([(4, 3, 3, 3)], dtype=torch.float64)[0]
    W0 = W.detach().clone()
    _set_grads([W], 0)
    G = W.grad.clone()
    Muon([W], lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0, compute_dtype=None,
         adjust_lr=None).step()
    expected = W0 - 0.1 * msign(G.reshape(4, 27), steps=5).reshape(4, 3, 3, 3)
    torch.testing.assert_close(W.detach(), expected, atol=1e-14, rtol=0)


def test_batched_equal_shapes_equal_one_at_a_time():
    # Equal shapes share one batched msign; the result is that of separate calls.
    shapes = [(16, 8)] * 3 + [(8, 16), (4, 2, 2)]
    a = _params(shapes, dtype=torch.float64)
    b = _clone(a)
    kwargs = dict(lr=0.05, compute_dtype=None, schedule=polar_schedule(5, lower=1e-3))
    _set_grads(a, 1)
    _set_grads(b, 1)
    Muon(a, **kwargs).step()
    for p in b:
        Muon([p], **kwargs).step()
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, atol=1e-14, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
def test_dtypes_and_float64_exact_path(dtype):
    p = _params([(12, 20)], dtype=dtype)[0]
    _set_grads([p], 3)
    g = p.grad.detach().clone()
    before = p.detach().clone()
    opt = Muon([p], lr=0.1, momentum=0.0, nesterov=False, weight_decay=0.0, adjust_lr=None,
               compute_dtype=None, schedule=polar_schedule(8, lower=1e-3, safety=0.0))
    opt.step()
    assert p.dtype == dtype and torch.isfinite(p).all()
    if dtype == torch.float64:
        # A designed 8-step schedule from 1e-3 lands σ₀ ∈ [1e-3, 1] on 1 to rounding.
        s = torch.linalg.svdvals((before - p.detach()) / 0.1)
        assert float((s - 1).abs().max()) < 1e-12
        U, _, Vh = torch.linalg.svd(g, full_matrices=False)
        torch.testing.assert_close((before - p.detach()) / 0.1, U @ Vh, atol=1e-13, rtol=0)


@pytest.mark.parametrize("norm", ["sign", "column", "auon"])
def test_other_norms_give_their_oracles(norm):
    p = _params([(6, 10)], dtype=torch.float64)[0]
    _set_grads([p], 4)
    G = p.grad.clone()
    before = p.detach().clone()
    Muon([p], lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0, norm=norm,
         adjust_lr=None).step()
    O = before - p.detach()
    if norm == "sign":
        torch.testing.assert_close(O, G.sign(), atol=1e-15, rtol=0)  # before − p rounds
        assert float((O * G).sum()) == pytest.approx(float(G.abs().sum()))  # ⟨G, O⟩ = ‖G‖₁
    elif norm == "column":
        torch.testing.assert_close(O.norm(dim=0), torch.ones(10, dtype=torch.float64))
        torch.testing.assert_close(O, G / G.norm(dim=0))
    else:
        Gh = G / G.norm()
        torch.testing.assert_close(O, Gh / torch.cosh(Gh).square().mean().sqrt())
        assert float(torch.linalg.matrix_norm(O, ord=2)) <= 1.0  # AuON's bound
        s_in, s_out = torch.linalg.svdvals(G), torch.linalg.svdvals(O)
        torch.testing.assert_close(s_out / s_out[0], s_in / s_in[0])  # ratios kept


def test_match_rms_gives_update_rms_0_2():
    for shape, norm in [((64, 16), "spectral"), ((16, 64), "spectral"), ((32, 8), "sign"),
                        ((32, 8), "column")]:
        p = _params([shape], dtype=torch.float64)[0]
        _set_grads([p], 5)
        before = p.detach().clone()
        Muon([p], lr=1.0, momentum=0.0, weight_decay=0.0, norm=norm, compute_dtype=None,
             schedule=polar_schedule(8, lower=1e-3, safety=0.0)).step()
        rms = float((before - p.detach()).square().mean().sqrt())
        assert rms == pytest.approx(0.2, rel=1e-12), (shape, norm)


def test_turbo_root_auon_defaults():
    t = TurboMuon(_params([(8, 8)]))
    assert t.param_groups[0]["precondition"] == "aol"
    assert t.param_groups[0]["schedule"] == POLAR_PRESETS["turbo_muon"]
    r = Root(_params([(8, 8)]))
    assert r.param_groups[0]["clip_quantile"] == 0.9
    assert (2048, 8192) in r.param_groups[0]["shape_schedules"]
    # ROOT's (2048, 2048) triple, 5 times, maps σ₀ ≈ 0.56 to 3.31: refused, Muon's instead.
    assert (2048, 2048) not in r.param_groups[0]["shape_schedules"]
    with pytest.raises(ValueError, match=r"singular values reach 3\.31"):
        Muon(_params([(8, 8)]), schedule=((3.4916, -4.8224, 2.1095),) * 5,
             compute_dtype=torch.float64)
    a = AuON(_params([(8, 8)]))
    assert a.param_groups[0]["norm"] == "auon"


def test_root_clips_outliers_before_orthogonalizing():
    # One huge entry dominates the polar factor of the raw momentum; clipped at the
    # 0.9-quantile it no longer does — the step equals msign of the clamped matrix.
    p = _params([(20, 30)], dtype=torch.float64)[0]
    _set_grads([p], 6)
    p.grad[3, 4] = 1e3
    G = p.grad.clone()
    before = p.detach().clone()
    Root([p], lr=1.0, momentum=0.0, nesterov=False, weight_decay=0.0, adjust_lr=None,
         compute_dtype=None).step()
    bound = torch.quantile(G.abs().flatten().float(), 0.9).double() + 1e-9
    expected = msign(G.clamp(-bound, bound), steps=5)
    torch.testing.assert_close(before - p.detach(), expected, atol=1e-6, rtol=0)


def test_per_shape_schedule_is_used_for_that_shape_only():
    sched = polar_schedule(6, lower=1e-3)
    a, b = _params([(8, 12), (12, 12)], dtype=torch.float64)
    ref_a, ref_b = _clone([a, b])
    for ps in ([a, b], [ref_a, ref_b]):
        _set_grads(ps, 8)
    Muon([a, b], lr=1.0, momentum=0.0, weight_decay=0.0, adjust_lr=None, compute_dtype=None,
         shape_schedules={(8, 12): sched}).step()
    Muon([ref_a], lr=1.0, momentum=0.0, weight_decay=0.0, adjust_lr=None, compute_dtype=None,
         schedule=sched).step()
    Muon([ref_b], lr=1.0, momentum=0.0, weight_decay=0.0, adjust_lr=None,
         compute_dtype=None).step()
    torch.testing.assert_close(a, ref_a, atol=0, rtol=0)
    torch.testing.assert_close(b, ref_b, atol=0, rtol=0)


def test_state_dict_round_trip_is_exact_and_loads_without_unpickling():
    def make(params):
        return Muon([{"params": params[:2]}, {"params": params[2:], "algorithm": "adamw",
                                              "lr": 3e-3}], lr=0.02)

    a = _params([(8, 4), (3,), (6, 6)])
    b = _clone(a)
    opt_a = make(a)
    for k in range(2):
        _set_grads(a, k)
        opt_a.step()
    buffer = io.BytesIO()
    torch.save(opt_a.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    for p, q in zip(a, b, strict=True):
        q.data.copy_(p.data)
    opt_b = make(b)
    opt_b.load_state_dict(state)
    for k in range(2, 4):
        _set_grads(a, k)
        _set_grads(b, k)
        opt_a.step()
        opt_b.step()
    for p, q in zip(a, b, strict=True):
        torch.testing.assert_close(p, q, atol=0, rtol=0)


def test_works_with_lr_scheduler():
    p = _params([(4, 4)])[0]
    opt = Muon([p], lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    _set_grads([p], 0)
    opt.step()
    sched.step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)


def test_a_failed_parameter_costs_the_others_nothing():
    # A NaN gradient spoils its own parameter only (as in torch's optimizers): the batched
    # call keeps the other matrices of the same shape finite and equal to a separate step.
    a = _params([(6, 6)] * 3, dtype=torch.float64)
    b = _clone(a)
    _set_grads(a, 2)
    _set_grads(b, 2)
    a[1].grad[0, 0] = float("nan")
    Muon(a, lr=0.1, compute_dtype=None).step()
    Muon([b[0], b[2]], lr=0.1, compute_dtype=None).step()
    torch.testing.assert_close(a[0], b[0], atol=0, rtol=0)
    torch.testing.assert_close(a[2], b[2], atol=0, rtol=0)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"lr": -1.0}, ValueError, "lr must lie in"),
        ({"momentum": 1.0}, ValueError, "momentum must lie in"),
        ({"weight_decay": -0.1}, ValueError, "weight_decay must lie in"),
        ({"nesterov": 1}, TypeError, "nesterov must be True or False"),
        ({"norm": "nuclear"}, ValueError, "norm must be one of"),
        ({"precondition": "jacobi"}, ValueError, "precondition must be one of"),
        ({"compute_dtype": torch.float16}, ValueError, "compute_dtype must be one of"),
        ({"adjust_lr": "sqrt"}, ValueError, "adjust_lr must be one of"),
        ({"norm": "sign", "adjust_lr": "original"}, ValueError, "spectral norm"),
        ({"schedule": "fast"}, ValueError, "schedule must be one of"),
        ({"schedule": [(4.0098, -7.0585, 2.4635), (3.4585, -5.5479, 2.5959),
                       (2.7573, -3.2939, 1.4254), (2.7215, -3.0494, 1.3169)]},
         ValueError, "negative values"),
        ({"clip_quantile": 0.0}, ValueError, "clip_quantile must lie in"),
        ({"shape_schedules": [(8, 8)]}, TypeError, "shape_schedules must be a dict"),
    ],
)
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        Muon(_params([(4, 4)]), **kwargs)


def test_vector_in_a_muon_group_and_bad_algorithm():
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        Muon([{"params": _params([(4,)]), "algorithm": "muon"}])
    with pytest.raises(ValueError, match="algorithm must be one of"):
        Muon([{"params": _params([(4, 4)]), "algorithm": "sgd"}])
    with pytest.raises(ValueError, match=r"betas\[1\] must lie in"):
        Muon(_params([(4,)]), betas=(0.9, 1.0))


def test_step_traces_into_one_graph():
    # No graph break anywhere in a step (Muon and AdamW groups): fullgraph=True raises on one.
    # The eager backend checks the tracing without needing a compiler.
    params = _params([(16, 8)] * 2 + [(4, 2, 3), (5,)])
    opt = Muon(params, lr=0.02)
    _set_grads(params, 0)
    opt.step()
    expected = [p.detach().clone() for p in params]
    state = {k: {n: t.clone() for n, t in v.items()} for k, v in opt.state.items()}
    _set_grads(params, 1)
    opt.step()
    eager = [p.detach().clone() for p in params]
    for p, e in zip(params, expected, strict=True):
        p.data.copy_(e)
    for k, v in state.items():
        opt.state[k] = v
    _set_grads(params, 1)
    torch.compile(opt.step, fullgraph=True, backend="eager")()
    for p, e in zip(params, eager, strict=True):
        # Traced, scalar constants may round once differently: one float32 ulp at most.
        torch.testing.assert_close(p.detach(), e, atol=0, rtol=1.2e-7)


def test_zero_learning_rate_leaves_parameters_unchanged():
    params = _params([(6, 4), (4,)])
    before = [p.detach().clone() for p in params]
    opt = Muon(params, lr=0.0)
    _set_grads(params, 0)
    opt.step()
    for p, b in zip(params, before, strict=True):
        torch.testing.assert_close(p.detach(), b, atol=0, rtol=0)


def test_schedule_unstable_in_bfloat16_is_refused_but_fine_in_float64():
    pure = polar_schedule(5, lower=1e-3, safety=0.0)
    with pytest.raises(ValueError, match=r"unstable in torch\.bfloat16"):
        Muon(_params([(8, 8)]), schedule=pure)
    Muon(_params([(8, 8)]), schedule=pure, compute_dtype=torch.float64)
    Muon(_params([(8, 8)]), schedule=polar_schedule(5, lower=1e-3))  # safety 0.01: accepted


def test_dcls_layers_route_positions_to_adamw():
    import diffnum.interp as di

    layer = di.Dcls2d(3, 4, kernel_count=5, dilated_kernel_size=7, padding=3)
    opt = Muon(di.parameter_groups(layer, 1e-2, position_lr_scale=5.0))
    by_algorithm = {}
    for group in opt.param_groups:
        by_algorithm.setdefault(group["algorithm"], []).extend(group["params"])
    assert any(p is layer.weight for p in by_algorithm["muon"])
    assert any(p is layer.P for p in by_algorithm["adamw"])
    assert not any(p is layer.P for p in by_algorithm["muon"])
    layer(torch.randn(1, 3, 9, 9)).square().mean().backward()
    opt.step()
