"""The gradient audit CLI: passes on jaxconv, and catches a deliberately wrong rule."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv import check


def _broken_conv(which: str):
    """conv2d whose custom_vjp has one deliberately wrong rule."""

    @functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
    def conv(x, w, b, cfg):
        return jaxconv.conv2d(x, w, b, **dict(cfg))

    def fwd(x, w, b, cfg):
        return conv(x, w, b, cfg), (x, w)

    def bwd(cfg, res, g):
        x, w = res
        cfg = dict(cfg)
        layout = cfg["layout"]
        dx = jaxconv.conv2d_grad_input(g, w, x.shape, **cfg)
        if which == "dW-ignores-stride":
            cfg_w = dict(cfg, stride=1)
            try:
                dw = jaxconv.conv2d_grad_kernel(x, g, w.shape, **cfg_w)
            except ValueError:  # shapes disagree without the stride: any wrong value will do
                dw = jaxconv.conv2d_grad_kernel(x, g, w.shape, **cfg) * 1.5
        else:
            dw = jaxconv.conv2d_grad_kernel(x, g, w.shape, **cfg)
        if which == "dX-unrotated-kernel":
            w_flipped = jnp.flip(w, (2, 3) if layout == "NCHW" else (0, 1))
            dx = jaxconv.conv2d_grad_input(g, w_flipped, x.shape, **cfg)
        db = jaxconv.conv2d_grad_bias(g, layout=layout)
        return dx, dw, db

    conv.defvjp(fwd, bwd)
    return lambda x, w, b, **cfg: conv(x, w, b, tuple(sorted(cfg.items())))


CONFIG = check.AuditConfig(
    x_shape=(2, 3, 9, 8),
    w_shape=(4, 3, 3, 2),
    stride=(2, 1),
    padding="SAME",
    dilation=(1, 2),
    groups=1,
    layout="NCHW",
)


def test_jaxconv_passes_with_tiny_errors():
    result = check.compare(CONFIG, dtype="float64")
    assert result.passed
    assert {e.reference for e in result.errors} == {"reference", "lax", "fd"}
    assert max(e.max_rel for e in result.errors if e.reference != "fd") < 1e-12


@pytest.mark.parametrize("which", ["dW-ignores-stride", "dX-unrotated-kernel"])
def test_a_wrong_rule_is_caught(which):
    result = check.compare(CONFIG, conv=_broken_conv(which))
    assert not result.passed
    failing = {(e.reference, e.grad) for e in result.errors if not e.passed}
    grad = "dW" if which.startswith("dW") else "dX"
    assert {("reference", grad), ("lax", grad), ("fd", grad)} <= failing
    assert all(e.passed for e in result.errors if e.grad == "db")


def test_cli_exit_codes_and_summary(capsys, monkeypatch):
    assert check.main(["--n", "4", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "4 passed, 0 failed" in out.splitlines()
    broken = _broken_conv("dX-unrotated-kernel")
    original_run = check.run
    monkeypatch.setattr(check, "run", lambda n, **kw: original_run(n, **{**kw, "conv": broken}))
    assert check.main(["--n", "3", "--seed", "1"]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert (
        "FAIL" in "\n".join(lines)
        and lines[-1].endswith("failed")
        and lines[-1] != "3 passed, 0 failed"
    )


def test_float32_mode_and_plot(tmp_path):
    results = check.run(3, seed=5, dtype="float32")
    assert all(r.passed for r in results)
    assert all(r.manual["dW"].dtype == np.float32 for r in results)
    path = tmp_path / "audit.png"
    check.plot(results, str(path))
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_random_configs_are_valid_and_varied():
    rng = np.random.default_rng(0)
    configs = [check.random_config(rng) for _ in range(200)]
    kinds = {
        type(c.padding).__name__ if not isinstance(c.padding, str) else c.padding for c in configs
    }
    assert kinds == {"VALID", "SAME", "SAME_LOWER", "int", "tuple"}
    assert {c.layout for c in configs} == {"NCHW", "NHWC"}
    assert {c.groups for c in configs} >= {1, 2, 3}
    for c in configs:  # every configuration resolves to a non-empty output
        x = jax.ShapeDtypeStruct(c.x_shape, jnp.float32)
        w = jax.ShapeDtypeStruct(c.w_shape, jnp.float32)
        assert jax.eval_shape(functools.partial(jaxconv.conv2d, **c.kwargs), x, w).size > 0


def test_torch_comparison():
    pytest.importorskip("torch")
    result = check.compare(CONFIG, use_torch=True)
    torch_errors = [e for e in result.errors if e.reference == "torch"]
    assert len(torch_errors) == 3 and all(e.max_rel < 1e-12 for e in torch_errors)
