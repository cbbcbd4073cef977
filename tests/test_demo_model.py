"""The demo CNN: shapes, and identical outputs whichever convolution runs it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv.demo import model


@pytest.mark.parametrize("size, n_params", [(8, 6), (28, 8)])
def test_shapes(size, n_params):
    params = model.init_params(jax.random.key(0), size)
    assert len(jax.tree_util.tree_leaves(params)) == n_params
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(params))
    images = jnp.zeros((3, 1, size, size), jnp.float32)
    assert model.apply(params, images).shape == (3, 10)


def test_max_pool_by_hand():
    x = jnp.arange(16.0).reshape(1, 4, 4, 1)  # NHWC
    np.testing.assert_array_equal(model.max_pool_2x2(x)[0, :, :, 0], [[5.0, 7.0], [13.0, 15.0]])


@pytest.mark.parametrize("size", [8, 28])
def test_impls_agree(size):
    params = model.init_params(jax.random.key(1), size)
    images = jax.random.uniform(jax.random.key(2), (4, 1, size, size), jnp.float32)
    labels = jnp.array([0, 1, 2, 3], jnp.int32)
    outputs = {
        name: jax.value_and_grad(model.loss_fn)(params, images, labels, conv)
        for name, conv in model.CONV_IMPLS.items()
    }
    loss, grads = outputs["lax"]
    for name in ("jaxconv", "reference"):
        other_loss, other_grads = outputs[name]
        np.testing.assert_allclose(other_loss, loss, rtol=1e-5)
        for a, b in zip(jax.tree_util.tree_leaves(other_grads), jax.tree_util.tree_leaves(grads)):
            assert float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(b))) < 1e-4
