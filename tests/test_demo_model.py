"""The demo CNN: shapes, and identical outputs whichever convolution runs it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv.demo import model

# Compiled once per image size, whatever the key: op by op, every random draw of
# init_params would compile its own program (seconds each on a CPU).
init_params = jax.jit(model.init_params, static_argnums=1)


@pytest.mark.parametrize("size, n_params", [(8, 6), (28, 8)])
def test_shapes(size, n_params):
    params = init_params(jax.random.key(0), size)
    assert len(jax.tree_util.tree_leaves(params)) == n_params
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
    images = jnp.zeros((3, 1, size, size), jnp.float32)
    assert jax.jit(model.apply)(params, images).shape == (3, 10)


def test_max_pool_by_hand():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # NHWC
    np.testing.assert_array_equal(model.max_pool_2x2(x)[0, :, :, 0], [[5.0, 7.0], [13.0, 15.0]])


@pytest.mark.parametrize("size", [8, 28])
def test_impls_agree(size):
    params = init_params(jax.random.key(1), size)
    images = jnp.asarray(np.random.default_rng(2).random((4, 1, size, size)), jnp.float32)
    labels = jnp.array([0, 1, 2, 3], jnp.int32)
    value_and_grad = jax.jit(jax.value_and_grad(model.loss_fn), static_argnums=3)
    outputs = {
        name: value_and_grad(params, images, labels, conv)
        for name, conv in model.CONV_IMPLS.items()
    }
    loss, grads = outputs["lax"]
    for name in ("jaxconv", "reference"):
        other_loss, other_grads = outputs[name]
        np.testing.assert_allclose(other_loss, loss, rtol=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(other_grads), jax.tree_util.tree_leaves(grads)):
            assert float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) < 1e-4
