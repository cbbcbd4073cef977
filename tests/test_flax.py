"""Flax: `nnx.Conv` and `linen.Conv` with `conv_general_dilated=jaxconv.conv_general_dilated`
give the stock layers' outputs, gradients and training steps; `nnx.ConvTranspose`, which calls
`lax.conv_transpose` with no hook to replace it, is reproduced by `jaxconv.conv_transpose`
applied to its parameters.

Float32 throughout (this process has float64 on: every dtype is given), compared by
max|a − b| / max|b| ≤ 1e-5.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from tests.helpers import jit_fast_compile, rel_err

flax = pytest.importorskip("flax", reason="flax is a test extra: pip install -e '.[test]'")
optax = pytest.importorskip("optax")
from flax import linen, nnx  # noqa: E402

TOL = 1e-5
F32 = jnp.float32


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), F32)


def _assert_trees_close(ours, theirs, what):
    leaves, tree = jax.tree_util.tree_flatten_with_path(theirs)
    assert jax.tree_util.tree_structure(ours) == tree, what
    for (path, b), a in zip(leaves, jax.tree_util.tree_leaves(ours)):
        assert a.dtype == b.dtype == F32, (what, path)
        err = rel_err(a, b)
        assert err <= TOL, f"{what} {jax.tree_util.keystr(path)}: {err:.2e}"


def _compare_nnx(stock, ours, x):
    """Outputs and gradients (parameters and input) of <cotangent, layer(x)>, both layers in
    one compiled program."""
    g_stock, p_stock = nnx.split(stock)
    g_ours, p_ours = nnx.split(ours)
    same = jax.tree.map(lambda a, b: bool(jnp.array_equal(a, b)), p_ours, p_stock)
    assert all(jax.tree.leaves(same)), "initial parameters"  # same Rngs, same draw

    @jit_fast_compile
    def both(p_stock, p_ours, x):
        out = []
        for graph, params in ((g_stock, p_stock), (g_ours, p_ours)):
            y, vjp = jax.vjp(lambda p, x, graph=graph: nnx.merge(graph, p)(x), params, x)
            out.append((y, *vjp(_normal(1, y.shape))))
        return out

    (y_stock, *d_stock), (y_ours, *d_ours) = both(p_stock, p_ours, x)
    _assert_trees_close(y_ours, y_stock, "output")
    _assert_trees_close(d_ours, d_stock, "gradient")
    return y_ours


# nnx.Conv keyword arguments: strides, dilations, groups and every padding form flax takes
# (CIRCULAR and REFLECT flax pads itself, then passes VALID).
NNX_CONV_CASES = {
    "same": dict(padding="SAME"),
    "valid-strided": dict(padding="VALID", strides=(2, 1)),
    "explicit-groups": dict(padding=((1, 2), (0, 1)), feature_group_count=2),
    "int-padding-input-dilation": dict(padding=1, input_dilation=2, strides=2),
    "circular-strided": dict(padding="CIRCULAR", strides=2),
    "reflect-dilated": dict(padding="REFLECT", kernel_dilation=(2, 1)),
    "depthwise-dilated": dict(padding="SAME", strides=2, kernel_dilation=2, feature_group_count=4),
    "precision-preferred-no-bias": dict(
        padding="SAME", precision="highest", preferred_element_type=F32, use_bias=False
    ),
}


@pytest.mark.parametrize("case", NNX_CONV_CASES)
def test_nnx_conv(case):
    kwargs = NNX_CONV_CASES[case]
    make = lambda **extra: nnx.Conv(4, 8, (3, 3), rngs=nnx.Rngs(0), **kwargs, **extra)  # noqa: E731
    stock, ours = make(), make(conv_general_dilated=jaxconv.conv_general_dilated)
    x = _normal(0, (2, 9, 8, 4))
    y = _compare_nnx(stock, ours, x)
    assert y.shape == stock(x).shape


def test_nnx_conv_unbatched_and_extra_batch_dimensions():
    # flax adds or flattens the batch axis around the call; jaxconv sees one 4-D batch.
    make = lambda **extra: nnx.Conv(3, 5, (3, 3), padding="SAME", rngs=nnx.Rngs(0), **extra)  # noqa: E731
    layer, ours = make(), make(conv_general_dilated=jaxconv.conv_general_dilated)
    for shape in [(7, 6, 3), (2, 3, 7, 6, 3)]:
        x = _normal(0, shape)
        assert rel_err(ours(x), layer(x)) <= TOL


# (kernel_size, input shape, nnx.Conv keyword arguments) of one and three spatial axes: flax's
# int kernel_size (1-D), its CAUSAL padding (flax pads, then passes VALID), groups, dilations.
NNX_RANK_CASES = {
    "1d-causal": (5, (2, 17, 4), dict(padding="CAUSAL")),
    "1d-strided-depthwise": (
        (4,),
        (2, 16, 4),
        dict(padding="SAME", strides=2, feature_group_count=4),
    ),
    "1d-dilated-explicit": ((3,), (3, 12, 4), dict(padding=((2, 1),), kernel_dilation=2)),
    "3d-same": ((3, 3, 3), (2, 5, 6, 5, 4), dict(padding="SAME")),
    "3d-groups-dilated": (
        (2, 3, 2),
        (1, 6, 5, 6, 4),
        dict(padding=((1, 0), (1, 1), (0, 1)), kernel_dilation=(1, 2, 1), feature_group_count=2),
    ),
    "3d-strided-circular": (
        (3, 2, 2),
        (2, 4, 5, 6, 4),
        dict(padding="CIRCULAR", strides=(1, 2, 2)),
    ),
}


@pytest.mark.parametrize("case", NNX_RANK_CASES)
def test_nnx_conv_of_one_and_three_axes(case):
    kernel_size, shape, kwargs = NNX_RANK_CASES[case]
    make = lambda **extra: nnx.Conv(4, 8, kernel_size, rngs=nnx.Rngs(0), **kwargs, **extra)  # noqa: E731
    stock, ours = make(), make(conv_general_dilated=jaxconv.conv_general_dilated)
    y = _compare_nnx(stock, ours, _normal(0, shape))
    assert y.ndim == len(shape)


# nnx.ConvTranspose(...) keyword arguments; the layer calls lax.conv_transpose itself.
NNX_TRANSPOSE_CASES = {
    "same-strided": dict(strides=2, padding="SAME"),
    "valid-dilated": dict(strides=(2, 1), padding="VALID", kernel_dilation=(1, 2)),
    "explicit": dict(strides=3, padding=((2, 1), (0, 2))),
    "same-transpose-kernel": dict(strides=2, padding="SAME", transpose_kernel=True),
    "valid-transpose-kernel-no-bias": dict(
        strides=(1, 2), padding="VALID", transpose_kernel=True, use_bias=False
    ),
}


def _jaxconv_conv_transpose(layer, x):
    """What `layer(x)` computes (flax's non-CIRCULAR path), by `jaxconv.conv_transpose`."""
    n = x.ndim - 2
    per_axis = lambda v: (1,) * n if v is None else (v,) * n if isinstance(v, int) else tuple(v)  # noqa: E731
    y = jaxconv.conv_transpose(
        x,
        layer.kernel[...],
        per_axis(layer.strides),
        layer.padding,
        rhs_dilation=per_axis(layer.kernel_dilation),
        transpose_kernel=layer.transpose_kernel,
        precision=layer.precision,
    )
    return y if layer.bias is None else y + layer.bias[...]


class _Transpose(nnx.ConvTranspose):
    """An nnx.ConvTranspose run by jaxconv: the stock layer's constructor and parameters,
    jaxconv's call."""

    def __call__(self, x):
        return _jaxconv_conv_transpose(self, x)


@pytest.mark.parametrize("case", NNX_TRANSPOSE_CASES)
def test_nnx_conv_transpose_by_jaxconv_conv_transpose(case):
    kwargs = NNX_TRANSPOSE_CASES[case]
    make = lambda cls: cls(4, 6, (3, 2), rngs=nnx.Rngs(0), **kwargs)  # noqa: E731
    _compare_nnx(make(nnx.ConvTranspose), make(_Transpose), _normal(0, (2, 5, 4, 4)))


@pytest.mark.parametrize(
    "kernel_size, shape, kwargs",
    [
        ((4,), (2, 7, 4), dict(strides=4, padding="SAME")),  # an upsampling vocoder layer
        ((3,), (2, 6, 4), dict(strides=2, padding="VALID", transpose_kernel=True)),
        ((3, 2, 3), (1, 3, 4, 3, 4), dict(strides=2, padding="SAME")),
        ((2, 2, 2), (2, 3, 3, 2, 4), dict(strides=(1, 2, 2), padding=((1, 0), (0, 1), (1, 1)))),
    ],
)
def test_nnx_conv_transpose_of_one_and_three_axes(kernel_size, shape, kwargs):
    make = lambda cls: cls(4, 6, kernel_size, rngs=nnx.Rngs(0), **kwargs)  # noqa: E731
    _compare_nnx(make(nnx.ConvTranspose), make(_Transpose), _normal(0, shape))


class _NnxModel(nnx.Module):
    """conv (stride 2) → relu → transposed conv (stride 2): two conv layers."""

    def __init__(self, jaxconv_layers: bool, rngs: nnx.Rngs):
        extra = dict(conv_general_dilated=jaxconv.conv_general_dilated) if jaxconv_layers else {}
        self.down = nnx.Conv(3, 6, (3, 3), strides=2, padding="SAME", rngs=rngs, **extra)
        transpose = _Transpose if jaxconv_layers else nnx.ConvTranspose
        self.up = transpose(6, 2, (3, 3), strides=2, padding="SAME", rngs=rngs)

    def __call__(self, x):
        return self.up(jax.nn.relu(self.down(x)))


def _train(loss, params, steps=3):
    # SGD, not Adam: Adam's first steps are lr·sign(g), which would turn float32 rounding of
    # a near-zero gradient into a full step; SGD's updates differ as the gradients do.
    tx = optax.sgd(0.05, momentum=0.9)

    @jit_fast_compile
    def step(params, state):
        grads = jax.grad(loss)(params)
        updates, state = tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state

    state = tx.init(params)
    for _ in range(steps):
        params, state = step(params, state)
    return params


class _NnxModel1d(nnx.Module):
    """A 1-D sequence model's layers: causal depthwise conv → pointwise conv → upsampling
    transposed conv (stride 2)."""

    def __init__(self, jaxconv_layers: bool, rngs: nnx.Rngs):
        extra = dict(conv_general_dilated=jaxconv.conv_general_dilated) if jaxconv_layers else {}
        self.short = nnx.Conv(3, 3, 4, padding="CAUSAL", feature_group_count=3, rngs=rngs, **extra)
        self.mix = nnx.Conv(3, 6, 1, rngs=rngs, **extra)
        transpose = _Transpose if jaxconv_layers else nnx.ConvTranspose
        self.up = transpose(6, 2, (4,), strides=2, padding="SAME", rngs=rngs)

    def __call__(self, x):
        return self.up(jax.nn.relu(self.mix(self.short(x))))


class _NnxModel3d(nnx.Module):
    """A 3-D encoder-decoder: conv (stride 2) → relu → transposed conv (stride 2)."""

    def __init__(self, jaxconv_layers: bool, rngs: nnx.Rngs):
        extra = dict(conv_general_dilated=jaxconv.conv_general_dilated) if jaxconv_layers else {}
        self.down = nnx.Conv(3, 4, (3, 3, 3), strides=2, padding="SAME", rngs=rngs, **extra)
        transpose = _Transpose if jaxconv_layers else nnx.ConvTranspose
        self.up = transpose(4, 2, (2, 2, 2), strides=2, padding="SAME", rngs=rngs)

    def __call__(self, x):
        return self.up(jax.nn.relu(self.down(x)))


@pytest.mark.parametrize(
    "model, shape",
    [(_NnxModel, (4, 8, 8, 3)), (_NnxModel1d, (4, 16, 3)), (_NnxModel3d, (2, 4, 6, 4, 3))],
)
def test_nnx_training_steps_match(model, shape):
    x = _normal(0, shape)
    target = _normal(1, model(False, nnx.Rngs(0))(x).shape)
    final = []
    for jaxconv_layers in (False, True):
        graph, params = nnx.split(model(jaxconv_layers, nnx.Rngs(0)))
        loss = lambda p, graph=graph: jnp.mean((nnx.merge(graph, p)(x) - target) ** 2)  # noqa: E731
        trained = _train(loss, params)
        first = next(iter(params))  # the first layer's kernel moved: it did train
        assert rel_err(trained[first]["kernel"][...], params[first]["kernel"][...]) > 1e-3
        final.append(trained)
    _assert_trees_close(final[1], final[0], "trained parameters")


def _linen_cases():
    cgd = dict(conv_general_dilated=jaxconv.conv_general_dilated)
    # The attribute flax keeps for new code: a class (any callable) returning the function.
    cls = dict(conv_general_dilated_cls=lambda: jaxconv.conv_general_dilated)
    return {"conv_general_dilated": cgd, "conv_general_dilated_cls": cls}


@pytest.mark.parametrize("hook", ["conv_general_dilated", "conv_general_dilated_cls"])
def test_linen_conv(hook):
    kwargs = dict(features=6, kernel_size=(3, 3), strides=(2, 1), padding=((1, 0), (2, 1)))
    kwargs.update(feature_group_count=2, kernel_dilation=(1, 2))
    stock, ours = linen.Conv(**kwargs), linen.Conv(**kwargs, **_linen_cases()[hook])
    x = _normal(0, (2, 9, 8, 4))
    params = stock.init(jax.random.key(0), x)
    assert jax.tree.map(jnp.shape, ours.init(jax.random.key(0), x)) == jax.tree.map(
        jnp.shape, params
    )

    @jit_fast_compile
    def both(params, x):
        out = []
        for module in (stock, ours):
            y, vjp = jax.vjp(lambda p, x, module=module: module.apply(p, x), params, x)
            out.append((y, *vjp(_normal(1, y.shape))))
        return out

    (y_stock, *d_stock), (y_ours, *d_ours) = both(params, x)
    _assert_trees_close(y_ours, y_stock, "output")
    _assert_trees_close(d_ours, d_stock, "gradient")


class _LinenModel(linen.Module):
    hook: dict

    @linen.compact
    def __call__(self, x):
        x = linen.Conv(6, (3, 3), strides=2, padding="SAME", **self.hook)(x)
        return linen.Conv(2, (3, 3), padding="CIRCULAR", **self.hook)(jax.nn.relu(x))


@pytest.mark.parametrize(
    "kernel_size, shape, padding",
    [
        (3, (2, 11, 4), "CAUSAL"),
        ((3,), (2, 11, 4), ((1, 2),)),
        ((2, 3, 3), (2, 4, 6, 5, 4), "SAME"),
    ],
)
def test_linen_conv_of_one_and_three_axes(kernel_size, shape, padding):
    kwargs = dict(features=6, kernel_size=kernel_size, padding=padding, feature_group_count=2)
    stock = linen.Conv(**kwargs)
    ours = linen.Conv(**kwargs, conv_general_dilated=jaxconv.conv_general_dilated)
    x = _normal(0, shape)
    params = stock.init(jax.random.key(0), x)

    @jit_fast_compile
    def both(params, x):
        out = []
        for module in (stock, ours):
            y, vjp = jax.vjp(lambda p, x, module=module: module.apply(p, x), params, x)
            out.append((y, *vjp(_normal(1, y.shape))))
        return out

    (y_stock, *d_stock), (y_ours, *d_ours) = both(params, x)
    _assert_trees_close(y_ours, y_stock, "output")
    _assert_trees_close(d_ours, d_stock, "gradient")


def test_linen_training_steps_match():
    x, target = _normal(0, (4, 8, 8, 3)), _normal(1, (4, 4, 4, 2))
    params = _LinenModel({}).init(jax.random.key(0), x)
    final = []
    for hook in ({}, _linen_cases()["conv_general_dilated"]):
        model = _LinenModel(hook)
        loss = lambda p, model=model: jnp.mean((model.apply(p, x) - target) ** 2)  # noqa: E731
        final.append(_train(loss, params))
    kernel = lambda p: p["params"]["Conv_0"]["kernel"]  # noqa: E731
    assert rel_err(kernel(final[0]), kernel(params)) > 1e-3  # it did train
    _assert_trees_close(final[1], final[0], "trained parameters")
