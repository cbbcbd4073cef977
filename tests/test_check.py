"""The gradient audit: passes on jaxconv, and catches deliberately wrong backward rules."""

from __future__ import annotations

import functools
import importlib.util
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv import check
from jaxconv._src.geometry import LAYOUTS, conv_geometry

# Ho = 5 > kh = 3 and Wo = 8 > kw = 2, stride 2 on H: the wrong rules below all matter here.
CONFIG = check.AuditConfig(
    x_shape=(2, 3, 9, 8),
    w_shape=(4, 3, 3, 2),
    stride=(2, 1),
    padding="SAME",
    dilation=(1, 2),
    groups=1,
    layout="NCHW",
)
SUMMARY = re.compile(r"^(\d+) passed, (\d+) failed$")


def _conv_with_rules(*, grad_input=None, grad_kernel=None):
    """conv2d (NCHW, groups 1) whose custom_vjp uses the given rules instead of jaxconv's."""
    grad_input = grad_input or jaxconv.conv2d_grad_input
    grad_kernel = grad_kernel or jaxconv.conv2d_grad_kernel

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
    def conv(x, w, b, cfg):
        return jaxconv.conv2d(x, w, b, **dict(cfg))

    def fwd(x, w, b, cfg):
        return conv(x, w, b, cfg), (x, w)

    def bwd(cfg, residuals, g):
        x, w = residuals
        cfg = dict(cfg)
        dx = grad_input(g, w, x.shape, **cfg)
        dw = grad_kernel(x, g, w.shape, **cfg)
        return dx, dw, jaxconv.conv2d_grad_bias(g, layout=cfg["layout"])

    conv.defvjp(fwd, bwd)
    return lambda x, w, b, **cfg: conv(x, w, b, tuple(sorted(cfg.items())))


def _dx_unrotated_kernel(g, w, x_shape, **cfg):
    """Full correlation of ∂L/∂Z with W itself instead of rot180(W)."""
    return jaxconv.conv2d_grad_input(g, jnp.flip(w, (2, 3)), x_shape, **cfg)


def _dw_ignoring_stride(x, g, w_shape, **cfg):
    """dW[o, i, a, b] = Σ g[n, o, r, c]·x_pad[n, i, r + a·dh, c + b·dw]: the stride forgotten."""
    geom = conv_geometry("test", x.shape, w_shape, **cfg)
    (lo_h, hi_h), (lo_w, hi_w) = geom.padding
    x_pad = jnp.pad(x, ((0, 0), (0, 0), (lo_h, hi_h), (lo_w, hi_w)))
    (kh, kw), (dh, dw), (ho, wo) = geom.kernel_hw, geom.dilation, geom.out_hw
    rows = [
        [
            jnp.einsum("nord,nird->oi", g, x_pad[:, :, a * dh : a * dh + ho, b * dw : b * dw + wo])
            for b in range(kw)
        ]
        for a in range(kh)
    ]
    return jnp.stack([jnp.stack(row, -1) for row in rows], -2)


def _dw_seed_slip(x, g, w_shape, **cfg):
    """Eqs. 7–8 as printed in the seed: sums over r < k1, c < k2 instead of the outputs."""
    kh, kw = w_shape[2:]
    ho, wo = g.shape[2:]
    mask = (jnp.arange(ho)[:, None] < kh) & (jnp.arange(wo)[None, :] < kw)
    return jaxconv.conv2d_grad_kernel(x, g * mask, w_shape, **cfg)


BROKEN = {
    "dX-unrotated-kernel": ("dX", dict(grad_input=_dx_unrotated_kernel)),
    "dW-ignores-stride": ("dW", dict(grad_kernel=_dw_ignoring_stride)),
    "dW-seed-slip": ("dW", dict(grad_kernel=_dw_seed_slip)),
}


def test_jaxconv_passes_with_tiny_errors():
    before = jax.config.jax_enable_x64
    result = check.compare(CONFIG, dtype="float64")
    assert jax.config.jax_enable_x64 == before
    assert result.passed
    assert result.references == ("naive", "lax", "fd")
    # Every plan jaxconv.supported lists: the plain rules, the GEMM and shallow families; no
    # Winograd (a 3×2 kernel), no depthwise (C/G = 3), chunks of one image of the two.
    assert result.plans == jaxconv.supported(
        conv_geometry("t", CONFIG.x_shape, CONFIG.w_shape, **CONFIG.kwargs)
    )
    assert len(result.plans) >= 5 and len(result.errors) == 9 * len(result.plans)
    assert {e.plan for e in result.errors} == {str(p) for p in result.plans}
    assert max(e.max_rel for e in result.errors if e.reference != "fd") < 1e-12
    assert result.error("fd", "dX").max_rel < 1e-8
    # The relative error is max|manual − ref| / max|ref|.
    manual, auto = result.manual["dW"], result.automatic["lax"]["dW"]
    expected = np.max(np.abs(manual - auto)) / np.max(np.abs(auto))
    default = str(
        jaxconv.choose(conv_geometry("t", CONFIG.x_shape, CONFIG.w_shape, **CONFIG.kwargs))
    )
    got = result.error("lax", "dW", plan=default).max_rel
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-300)
    assert result.error("lax", "dW").max_rel >= got  # the largest over the plans


def test_the_correct_rules_through_the_injection_pass():
    assert check.compare(CONFIG, conv=_conv_with_rules()).passed


@pytest.mark.parametrize("name", list(BROKEN))
def test_a_wrong_rule_is_caught(name):
    grad, rules = BROKEN[name]
    result = check.compare(CONFIG, conv=_conv_with_rules(**rules))
    assert not result.passed
    failing = {(e.reference, e.grad) for e in result.errors if not e.passed}
    assert failing == {("naive", grad), ("lax", grad), ("fd", grad)}
    assert all(e.max_rel > 1e-2 for e in result.errors if not e.passed)


def test_cli_passes_and_prints_the_summary_last(capsys):
    assert check.main(["--n", "4", "--seed", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == "4 passed, 0 failed"
    rows = [line for line in lines if re.match(r"^\s+\d+ (PASS|FAIL) ", line)]
    assert len(rows) == 4 and all(" PASS " in row for row in rows)
    assert any(line.startswith("worst dW vs fd") for line in lines)


def test_cli_fails_on_a_wrong_rule(capsys):
    conv = _conv_with_rules(grad_kernel=_dw_seed_slip)
    # The injected conv is 2-D: the audit draws 2-D configurations only.
    assert check.main(["--n", "3", "--seed", "1", "--ranks", "2"], conv=conv) == 1
    lines = capsys.readouterr().out.splitlines()
    passed, failed = map(int, SUMMARY.match(lines[-1]).groups())
    assert passed + failed == 3 and failed >= 1
    assert sum(" FAIL " in line for line in lines) == failed
    assert any(line.startswith("worst dW vs naive") and "FAILED" in line for line in lines)


def test_float32_mode_and_plot(tmp_path, capsys):
    path = tmp_path / "audit.png"
    assert check.main(["--n", "3", "--seed", "5", "--dtype", "float32", "--plot", str(path)]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "3 passed, 0 failed"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = check.compare(CONFIG, dtype="float32")
    assert result.passed
    assert result.manual["dW"].dtype == np.float32
    assert result.automatic["lax"]["dX"].dtype == np.float32
    assert 0 < result.error("lax", "dW").max_rel < 1e-5  # float32 rounding, not float64's


def _form_taken(config) -> str:
    """The ∂L/∂X form jaxconv takes for `config` on the CPU."""
    return jaxconv.choose(config.geometry, "cpu").grad_input


def test_random_configs_are_valid_and_varied():
    rng = np.random.default_rng(0)
    configs = [check.random_config(rng) for _ in range(300)]
    forms = {c.padding if isinstance(c.padding, str) else type(c.padding).__name__ for c in configs}
    assert forms == {"VALID", "SAME", "SAME_LOWER", "int", "tuple"}
    explicit = [c.padding for c in configs if isinstance(c.padding, tuple)]
    assert any(isinstance(p[0], tuple) and p[0][0] != p[0][1] for p in explicit)  # asymmetric
    assert any(min(np.ravel(p)) < 0 for p in explicit)  # cropping
    assert {c.layout for c in configs} == {"NCHW", "NHWC"}
    assert {c.groups for c in configs} >= {1, 2, 3, 4}
    assert {s for c in configs for s in c.stride} == {1, 2, 3}
    assert {d for c in configs for d in c.dilation} == {1, 2, 3}
    assert {c.x_shape[0] for c in configs} == {1, 2, 3}
    assert any(c.x_shape[2] != c.x_shape[3] for c in configs if c.layout == "NCHW")
    assert {_form_taken(c) for c in configs} == {"depthwise", "shallow", "gemm-rows", "winograd"}
    # Whatever the form chosen, the audit runs every supported plan: Winograd's ∂L/∂W and
    # chunked plans among them.
    listed = [
        (c, p)
        for c in configs
        for p in jaxconv.supported(conv_geometry("t", c.x_shape, c.w_shape, **c.kwargs))
    ]
    assert any(p.grad_kernel == "winograd" for _, p in listed)
    assert any(p.chunks_as_state and p.forward_chunk < c.x_shape[0] for c, p in listed)
    assert any((p.grad_kernel_chunk or 9) < c.x_shape[0] for c, p in listed)
    for c in configs:  # jaxconv and XLA agree that each output is non-empty
        x = jax.ShapeDtypeStruct(c.x_shape, jnp.float32)
        w = jax.ShapeDtypeStruct(c.w_shape, jnp.float32)
        shape = jax.eval_shape(functools.partial(jaxconv.conv2d, **c.kwargs), x, w).shape
        assert shape == c.output_shape and min(shape) > 0
        assert (
            jax.eval_shape(functools.partial(jaxconv.conv2d_xla, **c.kwargs), x, w).shape == shape
        )


def test_torch_comparison(capsys):
    pytest.importorskip("torch")
    for dtype, bound in (("float64", 1e-12), ("float32", 1e-5)):
        result = check.compare(CONFIG, dtype=dtype, use_torch=True)
        torch_errors = [e for e in result.errors if e.reference == "torch"]
        assert len(torch_errors) == 3 * len(result.plans)
        assert all(e.max_rel < bound for e in torch_errors)
    # Negative and asymmetric padding go through F.pad.
    cropped = check.AuditConfig(
        (1, 7, 6, 2), (2, 3, 2, 4), padding=((-1, 2), (0, -2)), layout="NHWC"
    )
    assert check.compare(cropped, use_torch=True).error("torch", "dX").max_rel < 1e-12
    assert check.main(["--n", "1", "--torch"]) == 0
    assert "torch (max abs/max rel)" in capsys.readouterr().out


def _never_called(*args, **kwargs):
    raise AssertionError("the audit ran despite a usage error")


def _usage_error(argv, capsys) -> str:
    """main(argv) must exit 2 before auditing anything; returns its error line."""
    with pytest.raises(SystemExit) as info:
        check.main(argv, conv=_never_called)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert "auditing" not in captured.out
    return captured.err.splitlines()[-1]


def test_torch_requested_but_missing_is_a_usage_error(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` raises ImportError
    line = _usage_error(["--n", "1", "--torch"], capsys)
    assert line.startswith("python -m jaxconv.check: error: --torch: PyTorch is not importable")


@pytest.mark.parametrize(
    "plot, message",
    [
        ("missing/audit.png", "--plot {p}: {tmp}/missing does not exist"),
        ("afile/audit.png", "--plot {p}: {tmp}/afile is not a directory"),
        ("adir", "--plot {p} is a directory; name a file, such as {tmp}/adir/audit.png"),
        ("audit.pdf", "--plot {p}: the figure is a PNG; name a .png file"),
    ],
)
def test_a_bad_plot_path_fails_before_the_audit(tmp_path, capsys, plot, message):
    (tmp_path / "afile").write_text("")
    (tmp_path / "adir").mkdir()
    path = str(tmp_path / plot)
    line = _usage_error(["--n", "1", "--plot", path], capsys)
    assert line == "python -m jaxconv.check: error: " + message.format(p=path, tmp=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"]


def test_plot_without_suffix_gets_png_and_prints_the_path_written(tmp_path, capsys):
    target = tmp_path / "audit"
    assert check.main(["--n", "1", "--dtype", "float32", "--plot", str(target)]) == 0
    assert f"wrote {target}.png" in capsys.readouterr().out.splitlines()
    assert (tmp_path / "audit.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not target.exists()


def test_every_plan_is_audited_and_a_failing_plan_is_named(capsys):
    # A Winograd geometry of two images: its plans include Winograd's ∂L/∂W, whole and in
    # chunks of one image with the forward's chunks as loop state.
    config = check.AuditConfig((2, 6, 7, 6), (4, 6, 3, 3), padding="SAME")
    result = check.compare(config)
    plans = [p for p in result.plans if p.grad_kernel == "winograd"]
    assert {p.grad_kernel_chunk for p in plans} >= {None, 1}
    assert any(p.chunks_as_state for p in plans)
    for p in plans:
        assert result.error("lax", "dW", plan=str(p)).passed
        assert result.error("fd", "dX", plan=str(p)).max_rel < 1e-8
    assert result.failing_plans == ()
    assert check.main(["--n", "2", "--seed", "0"]) == 0
    out = capsys.readouterr().out
    counts = re.search(r"audited (\d+) plans over 2 configurations: (.*)", out)
    assert counts and int(counts.group(1)) >= 8 and "grad_kernel plain 2" in counts.group(2)


def test_bad_arguments():
    with pytest.raises(ValueError, match="`dtype` must be one of"):
        check.compare(CONFIG, dtype="float16")
    with pytest.raises(ValueError, match="`conv` or `plans`, not both"):
        check.compare(CONFIG, conv=jaxconv.conv2d, plans=[jaxconv.Plan()])
    with pytest.raises(SystemExit) as info:
        check.main(["--n", "0"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        check.main(["--seed", "-1"], conv=_never_called)
    assert info.value.code == 2


# --- Every rank and complex dtypes. --------------------------------------------------------


def test_random_configs_of_every_rank_are_valid_and_varied():
    rng = np.random.default_rng(1)
    for rank in (1, 3):
        configs = [check.random_config(rng, rank) for _ in range(60)]
        assert {c.layout for c in configs} == set(LAYOUTS[rank])
        assert {len(c.stride) for c in configs} == {len(c.dilation) for c in configs} == {rank}
        assert {_form_taken(c) for c in configs} == {"depthwise", "shallow", "gemm-rows"}
        for c in configs:  # jaxconv and XLA agree that each output is non-empty
            x = jax.ShapeDtypeStruct(c.x_shape, jnp.float32)
            w = jax.ShapeDtypeStruct(c.w_shape, jnp.float32)
            shape = jax.eval_shape(functools.partial(jaxconv.conv, **c.kwargs), x, w).shape
            assert shape == c.output_shape and min(shape) > 0
            xla = jax.eval_shape(functools.partial(jaxconv.conv_xla, **c.kwargs), x, w).shape
            assert xla == shape


def test_two_dimensional_draws_are_those_of_the_audit_before_every_rank():
    # The 2-D configurations (and so every seed's audit) did not change with the ranks.
    rng = np.random.default_rng(0)
    first = check.random_config(rng, 2)
    assert first == check.AuditConfig(
        first.x_shape,
        first.w_shape,
        first.stride,
        first.padding,
        first.dilation,
        first.groups,
        first.layout,
    )
    assert check.random_config(np.random.default_rng(0)) == first  # rank 2 is the default


@pytest.mark.parametrize("dtype", ["complex128", "complex64"])
def test_complex_gradients_pass_and_are_jax_s_convention(dtype):
    config = check.AuditConfig((2, 3, 7), (4, 3, 3), stride=(2,), padding="SAME", layout="NCW")
    result = check.compare(
        config, dtype=dtype, use_torch=importlib.util.find_spec("torch") is not None
    )
    assert result.passed and result.dtype == dtype
    assert np.iscomplexobj(result.manual["dW"]) and result.manual["dW"].dtype == np.dtype(dtype)
    bound = 1e-12 if dtype == "complex128" else 1e-5
    assert max(e.max_rel for e in result.errors if e.reference != "fd") < bound
    # JAX's convention is the transpose, not the conjugate transpose: the conjugate of the
    # hand-derived ∂L/∂W is not the automatic one.
    manual, auto = result.manual["dW"], result.automatic["lax"]["dW"]
    assert np.max(np.abs(np.conj(manual) - auto)) > 1e-2 * np.max(np.abs(auto))


def test_a_wrong_rule_is_caught_in_complex_arithmetic():
    # A conjugated ∂L/∂W (PyTorch's convention in JAX) fails against every reference.
    def conjugated(x, g, w_shape, **cfg):
        return jnp.conj(jaxconv.conv2d_grad_kernel(x, g, w_shape, **cfg))

    result = check.compare(
        CONFIG, dtype="complex128", conv=_conv_with_rules(grad_kernel=conjugated)
    )
    failing = {(e.reference, e.grad) for e in result.errors if not e.passed}
    assert failing == {("naive", "dW"), ("lax", "dW"), ("fd", "dW")}


def test_cli_audits_every_rank_and_says_so(capsys):
    assert check.main(["--n", "3", "--seed", "2", "--dtype", "complex128"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "auditing 3 configurations, complex128, seed 2, ranks 1-D, 2-D, 3-D"
    assert "ranks audited: 1-D 1, 2-D 1, 3-D 1; dtype complex128" in lines
    layouts = [line.split("| ")[-1].split()[0] for line in lines if re.match(r"^\s+\d+ PASS", line)]
    assert [len(layout) - 2 for layout in layouts] == [1, 2, 3]


def test_cli_refuses_bad_ranks(capsys):
    for ranks in ("4", "1,x", ""):
        with pytest.raises(SystemExit) as exit_info:
            check.main(["--ranks", ranks], conv=_never_called)
        assert exit_info.value.code == 2
        assert "--ranks must be a comma-separated list of 1, 2 and 3" in capsys.readouterr().err
