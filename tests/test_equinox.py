"""jaxconv.equinox: `Conv2d` and `ConvTranspose2d` are Equinox's layers (constructor,
initialisation, fields, unbatched input) computed by jaxconv, with the stock layers' outputs,
gradients and training steps.

Float32 throughout (this process has float64 on: every dtype is given), compared by
max|a − b| / max|b| ≤ 1e-5.
"""

from __future__ import annotations

import functools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from tests.helpers import jit_fast_compile, rel_err

eqx = pytest.importorskip("equinox", reason="equinox is a test extra: pip install -e '.[test]'")
optax = pytest.importorskip("optax")
import jaxconv.equinox as jeqx  # noqa: E402

TOL = 1e-5
F32 = jnp.float32


def _normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), F32)


def _assert_trees_close(ours, theirs, what):
    assert jax.tree.structure(ours) == jax.tree.structure(theirs), what
    leaves = jax.tree_util.tree_flatten_with_path(theirs)[0]
    for (path, b), a in zip(leaves, jax.tree.leaves(ours)):
        assert a.dtype == b.dtype == F32, (what, path)
        err = rel_err(a, b)
        assert err <= TOL, f"{what} {jax.tree_util.keystr(path)}: {err:.2e}"


def _compare(stock, ours, x):
    """Outputs and gradients (layer and input) of <cotangent, vmap(layer)(x)>, both layers
    in one compiled program; the layers' weights must be equal to begin with."""
    assert type(ours).__mro__[1] is type(stock)  # a subclass of the stock layer, no more
    for name in ("weight", "bias"):
        a, b = getattr(ours, name), getattr(stock, name)
        assert (a is None and b is None) or (a.shape == b.shape and bool(jnp.all(a == b))), name

    @jit_fast_compile
    def both(stock, ours, x):
        out = []
        for layer in (stock, ours):
            y, vjp = jax.vjp(lambda m, x: jax.vmap(m)(x), layer, x)
            out.append((y, *vjp(_normal(1, y.shape))))
        return out

    (y_stock, *d_stock), (y_ours, *d_ours) = both(stock, ours, x)
    _assert_trees_close(y_ours, y_stock, "output")
    # The layers' gradients are pytrees of one structure up to the class: compare leaves.
    _assert_trees_close(jax.tree.leaves(d_ours), jax.tree.leaves(d_stock), "gradient")
    return y_ours


def test_import_jaxconv_does_not_import_equinox():
    code = "import sys, jaxconv; assert 'equinox' not in sys.modules; print('ok')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr


# Conv2d(4, 6, kernel_size, ...) keyword arguments: every padding form and padding mode.
CONV_CASES = {
    "default": dict(kernel_size=3),
    "same-strided-groups": dict(kernel_size=(3, 2), stride=2, padding="SAME", groups=2),
    "same-lower-dilated": dict(kernel_size=3, padding="same_lower", dilation=(2, 1)),
    "valid-strided-no-bias": dict(
        kernel_size=(2, 3), stride=(1, 2), padding="VALID", use_bias=False
    ),
    "pairs": dict(kernel_size=3, padding=((2, 0), (1, 3)), stride=(2, 1)),
    "reflect-int": dict(kernel_size=3, padding=1, padding_mode="REFLECT"),
    "replicate-per-axis": dict(kernel_size=(3, 2), padding=(2, 1), padding_mode="replicate"),
    "circular-same-dilated": dict(
        kernel_size=3, padding="SAME", dilation=2, padding_mode="CIRCULAR"
    ),
}


@pytest.mark.parametrize("case", CONV_CASES)
def test_conv2d(case):
    kwargs = dict(dtype=F32, key=jax.random.key(3), **CONV_CASES[case])
    stock, ours = eqx.nn.Conv2d(4, 6, **kwargs), jeqx.Conv2d(4, 6, **kwargs)
    x = _normal(0, (2, 4, 9, 8))  # vmapped over 2 images of (C, H, W)
    assert _compare(stock, ours, x).shape == jax.vmap(stock)(x).shape


# ConvTranspose2d(4, 6, kernel_size, ...) keyword arguments. Equinox's padding is the forward
# conv's; which of them map onto PyTorch's symmetric padding and output_padding alone, and
# which need rows cut (or zero rows added) after, is in each comment (per axis, H/W).
TRANSPOSE_CASES = {
    "default": dict(kernel_size=3),  # exact
    "same-strided": dict(kernel_size=3, stride=2, padding="SAME"),  # cut 1 high row
    "same-lower-output-padding": dict(
        kernel_size=(3, 4), stride=(2, 3), padding="SAME_LOWER", output_padding=(1, 2)
    ),
    "valid-output-padding-dilated": dict(
        kernel_size=(2, 3), stride=2, padding="VALID", output_padding=1, dilation=(1, 2)
    ),  # exact, output_padding 1
    "pairs-zero-rows": dict(kernel_size=3, stride=2, padding=((2, 0), (0, 3)), output_padding=1),
    "int-groups-no-bias": dict(kernel_size=3, stride=(1, 2), padding=1, groups=2, use_bias=False),
    "circular-same": dict(kernel_size=3, stride=2, padding="SAME", padding_mode="CIRCULAR"),
    "circular-same-lower-groups": dict(
        kernel_size=(4, 3), stride=(3, 1), padding="SAME_LOWER", padding_mode="circular", groups=2
    ),
}


@pytest.mark.parametrize("case", TRANSPOSE_CASES)
def test_conv_transpose2d(case):
    kwargs = dict(dtype=F32, key=jax.random.key(4), **TRANSPOSE_CASES[case])
    stock, ours = eqx.nn.ConvTranspose2d(4, 6, **kwargs), jeqx.ConvTranspose2d(4, 6, **kwargs)
    x = _normal(0, (2, 4, 5, 6))
    assert _compare(stock, ours, x).shape == jax.vmap(stock)(x).shape


def test_each_transposed_padding_path_is_taken():
    # The cases above reach all three ways __call__ maps Equinox's padding: PyTorch's
    # padding/output_padding alone, then rows cut, then zero rows added.
    def rest(case):
        layer = jeqx.ConvTranspose2d(
            4, 6, dtype=F32, key=jax.random.key(0), **TRANSPOSE_CASES[case]
        )
        return layer._crops(layer._padding_t())

    assert rest("valid-output-padding-dilated") == [(0, -1), (0, -1)]  # output_padding 1
    assert rest("same-strided") == [(0, 1), (0, 1)]  # lo − hi < 0: cut one row after
    assert rest("pairs-zero-rows")[0] == (2, -1)  # lo − hi = 3 ≥ stride: one zero row


def test_initialisation_and_fields_are_equinox_s():
    key = jax.random.key(7)
    for stock_cls, ours_cls, extra in (
        (eqx.nn.Conv2d, jeqx.Conv2d, {}),
        (eqx.nn.ConvTranspose2d, jeqx.ConvTranspose2d, dict(output_padding=1)),
    ):
        kwargs = dict(kernel_size=(3, 2), stride=2, padding="SAME", groups=3, key=key, **extra)
        stock, ours = stock_cls(6, 9, **kwargs), ours_cls(6, 9, **kwargs)
        assert isinstance(ours, stock_cls) and ours.weight.shape == (9, 2, 3, 2)
        assert ours.bias.shape == (9, 1, 1)
        assert bool(jnp.all(ours.weight == stock.weight)) and bool(jnp.all(ours.bias == stock.bias))
        # The dtype follows JAX's default, as in Equinox (float64 in this test process).
        assert ours.weight.dtype == stock.weight.dtype == jnp.float64
        assert (ours.stride, ours.padding, ours.groups) == (stock.stride, stock.padding, 3)


@pytest.mark.parametrize("cls", [jeqx.Conv2d, jeqx.ConvTranspose2d])
def test_batched_input_is_refused_as_in_equinox(cls):
    layer = cls(2, 3, 3, dtype=F32, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"must be one image of shape \(C, H, W\).*\(1, 2, 5, 5\)"):
        layer(jnp.ones((1, 2, 5, 5), F32))


class _Model(eqx.Module):
    """conv (stride 2) → relu → transposed conv (stride 2): two conv layers."""

    down: eqx.nn.Conv2d
    up: eqx.nn.ConvTranspose2d

    def __init__(self, conv, transpose, key):
        k1, k2 = jax.random.split(key)
        self.down = conv(3, 6, 3, stride=2, padding="SAME", dtype=F32, key=k1)
        self.up = transpose(6, 2, 3, stride=2, padding=1, output_padding=1, dtype=F32, key=k2)

    def __call__(self, x):
        return self.up(jax.nn.relu(self.down(x)))


# --- One and three spatial axes, and Conv(num_spatial_dims=...). ---------------------------

# (stock class, jaxconv class, positional arguments after the channels, keyword arguments,
#  input shape of a batch of 2)
RANK_CASES = {
    "conv1d-same-strided-groups": (
        eqx.nn.Conv1d,
        jeqx.Conv1d,
        (5,),
        dict(stride=2, padding="SAME", groups=2),
        (2, 4, 17),
    ),
    "conv1d-causal-reflect": (
        eqx.nn.Conv1d,
        jeqx.Conv1d,
        (3,),
        dict(padding=((2, 0),), padding_mode="REFLECT"),
        (2, 4, 9),
    ),
    "conv3d-dilated": (
        eqx.nn.Conv3d,
        jeqx.Conv3d,
        ((3, 2, 2),),
        dict(padding=1, dilation=(1, 2, 1)),
        (2, 4, 5, 6, 5),
    ),
    "conv3d-circular": (
        eqx.nn.Conv3d,
        jeqx.Conv3d,
        (3,),
        dict(padding="SAME", padding_mode="CIRCULAR"),
        (2, 4, 4, 5, 4),
    ),
    "conv-num-spatial-dims-3": (
        functools.partial(eqx.nn.Conv, 3),
        functools.partial(jeqx.Conv, 3),
        (2,),
        dict(stride=2),
        (2, 4, 5, 5, 6),
    ),
    "transpose1d-vocoder": (
        eqx.nn.ConvTranspose1d,
        jeqx.ConvTranspose1d,
        (8,),
        dict(stride=4, padding=2),
        (2, 4, 5),
    ),
    "transpose1d-same-groups": (
        eqx.nn.ConvTranspose1d,
        jeqx.ConvTranspose1d,
        (4,),
        dict(stride=2, padding="SAME", groups=2),
        (2, 4, 6),
    ),
    "transpose3d-output-padding": (
        eqx.nn.ConvTranspose3d,
        jeqx.ConvTranspose3d,
        ((2, 3, 2),),
        dict(stride=2, padding=((1, 0), (1, 1), (0, 1)), output_padding=1),
        (2, 4, 3, 3, 2),
    ),
    "transpose-num-spatial-dims-1": (
        functools.partial(eqx.nn.ConvTranspose, 1),
        functools.partial(jeqx.ConvTranspose, 1),
        (3,),
        dict(stride=2, padding="SAME_LOWER"),
        (2, 4, 7),
    ),
}


@pytest.mark.parametrize("case", RANK_CASES)
def test_layers_of_one_and_three_axes(case):
    stock_cls, ours_cls, args, kwargs, shape = RANK_CASES[case]
    kwargs = dict(dtype=F32, key=jax.random.key(5), **kwargs)
    stock, ours = stock_cls(4, 6, *args, **kwargs), ours_cls(4, 6, *args, **kwargs)
    assert isinstance(ours, type(stock))
    x = _normal(0, shape)
    if not isinstance(ours_cls, functools.partial):
        y = _compare(stock, ours, x)
    else:  # Conv and ConvTranspose themselves: jaxconv's subclass sits between the two
        assert type(ours).__mro__[1] is type(stock)
        y = _compare_leaves(stock, ours, x)
    assert y.shape == jax.vmap(stock)(x).shape
    # jaxconv's rules run, not XLA's convolution.
    assert "conv_general_dilated" not in str(jax.make_jaxpr(jax.vmap(ours))(x))


def _compare_leaves(stock, ours, x):
    ys = [jax.vmap(layer)(x) for layer in (stock, ours)]
    grads = [
        jax.grad(lambda m, x: jnp.vdot(_normal(1, ys[0].shape), jax.vmap(m)(x)), (0, 1))(layer, x)
        for layer in (stock, ours)
    ]
    _assert_trees_close(ys[1], ys[0], "output")
    _assert_trees_close(jax.tree.leaves(grads[1]), jax.tree.leaves(grads[0]), "gradient")
    return ys[1]


@pytest.mark.parametrize(
    "cls, shape, message",
    [
        (jeqx.Conv1d, (1, 2, 5), r"must be one signal of shape \(C, W\).*\(1, 2, 5\)"),
        (jeqx.Conv3d, (2, 5, 5), r"must be one volume of shape \(C, D, H, W\).*\(2, 5, 5\)"),
        (jeqx.ConvTranspose3d, (1, 2, 5, 5, 5), r"one volume of shape \(C, D, H, W\)"),
    ],
)
def test_batched_input_of_every_rank_is_refused(cls, shape, message):
    layer = cls(2, 3, 2, dtype=F32, key=jax.random.key(0))
    with pytest.raises(ValueError, match=message):
        layer(jnp.ones(shape, F32))


def test_conv_of_four_spatial_axes_names_the_rank():
    layer = jeqx.Conv(4, 2, 3, 1, dtype=F32, key=jax.random.key(0))
    with pytest.raises(ValueError, match=r"`num_spatial_dims` of shape .* has 4 spatial dim"):
        layer(jnp.ones((2, 3, 3, 3, 3), F32))


class _Model1d(eqx.Module):
    """A vocoder-like stack: conv → relu → transposed conv (stride 4)."""

    down: eqx.nn.Conv1d
    up: eqx.nn.ConvTranspose1d

    def __init__(self, conv, transpose, key):
        k1, k2 = jax.random.split(key)
        self.down = conv(3, 6, 3, padding="SAME", dtype=F32, key=k1)
        self.up = transpose(6, 2, 8, stride=4, padding=2, dtype=F32, key=k2)

    def __call__(self, x):
        return self.up(jax.nn.relu(self.down(x)))


# (model, stock classes, jaxconv's, input shape) of each rank.
TRAINING = {
    1: (
        _Model1d,
        (eqx.nn.Conv1d, eqx.nn.ConvTranspose1d),
        (jeqx.Conv1d, jeqx.ConvTranspose1d),
        (4, 3, 16),
    ),
    2: (
        _Model,
        (eqx.nn.Conv2d, eqx.nn.ConvTranspose2d),
        (jeqx.Conv2d, jeqx.ConvTranspose2d),
        (4, 3, 8, 8),
    ),
    3: (
        _Model,
        (eqx.nn.Conv3d, eqx.nn.ConvTranspose3d),
        (jeqx.Conv3d, jeqx.ConvTranspose3d),
        (2, 3, 4, 6, 4),
    ),
}


@pytest.mark.parametrize("rank", TRAINING)
def test_training_steps_match(rank):
    model_cls, stock_classes, our_classes, shape = TRAINING[rank]
    x = _normal(0, shape)
    # SGD, not Adam: Adam's first steps are lr·sign(g), which would turn float32 rounding of
    # a near-zero gradient into a full step; SGD's updates differ as the gradients do.
    tx = optax.sgd(0.05, momentum=0.9)
    final = []
    for conv, transpose in (stock_classes, our_classes):
        model = model_cls(conv, transpose, jax.random.key(0))
        target = _normal(1, jax.vmap(model)(x).shape)

        @jit_fast_compile
        def step(model, state, target=target):
            grads = jax.grad(lambda m: jnp.mean((jax.vmap(m)(x) - target) ** 2))(model)
            updates, state = tx.update(grads, state, model)
            return eqx.apply_updates(model, updates), state

        trained, state = model, tx.init(model)
        for _ in range(3):
            trained, state = step(trained, state)
        assert rel_err(trained.down.weight, model.down.weight) > 1e-3  # it did train
        final.append(trained)
    stock, ours = final
    assert type(ours.up) is our_classes[1]
    _assert_trees_close(jax.tree.leaves(ours), jax.tree.leaves(stock), "trained parameters")
