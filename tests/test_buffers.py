"""evaluation/buffers.py: exact zeros computed from a loop's operands."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv._src.evaluation import chunks
from jaxconv._src.evaluation.buffers import zeros_after
from tests.helpers import before_argument


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.float64, jnp.complex64, jnp.int32])
def test_zeros_are_exact_whatever_the_operand_holds(dtype):
    with jax.enable_x64(True):
        like = np.array([[np.inf, 1.0], [np.nan, 2.0], [-np.inf, 3.0], [-5.0, 4.0]])
        if jnp.issubdtype(dtype, jnp.integer):
            like = np.array([[-7, 1], [0, 2], [9, 3], [-5, 4]])
        like = jnp.asarray(like, dtype)
        for batch_axes, shape in ((0, (3, 2)), (1, (4, 3, 2)), (2, (4, 2, 5))):
            zeros = zeros_after(like, shape, dtype, batch_axes)
            assert zeros.shape == shape and zeros.dtype == dtype
            got = np.asarray(zeros)
            assert np.all(got == 0), (batch_axes, got)
            if not jnp.issubdtype(dtype, jnp.integer):  # +0, not −0
                assert not np.any(np.signbit(np.real(got))), batch_axes


def _operand_consumers(jaxpr):
    return {str(v) for eqn in jaxpr.eqns for v in eqn.invars}


def test_zeros_are_computed_from_the_operand_not_a_constant():
    like = jnp.ones((4, 3))
    jaxpr = jax.make_jaxpr(lambda a: zeros_after(a, (4, 7), jnp.float32))(like).jaxpr
    assert str(jaxpr.invars[0]) in _operand_consumers(jaxpr)
    assert not any(e.primitive.name == "broadcast_in_dim" and not e.invars for e in jaxpr.eqns)


def test_a_chunk_loops_output_buffer_comes_from_its_chunks():
    # The loop's initial output is computed from the stacked chunks, so XLA cannot make it
    # before them (module doc of buffers.py).
    a = jnp.arange(6 * 4, dtype=jnp.float32).reshape(6, 4)
    jaxpr = jax.make_jaxpr(lambda a: chunks.map_over_images(lambda c: c * 2, (a,), 2))(a)
    loops = [e for e in jaxpr.jaxpr.eqns if e.primitive.name in ("scan", "while")]
    assert len(loops) == 1
    carried = loops[0].invars
    broadcasts = [e for e in jaxpr.jaxpr.eqns if e.primitive.name == "broadcast_in_dim"]
    outputs = {str(v) for e in broadcasts for v in e.outvars}
    assert outputs & {str(v) for v in carried}, "the output buffer is not a broadcast of data"
    for e in broadcasts:
        assert e.invars and type(e.invars[0]).__name__ != "Literal", e
    np.testing.assert_array_equal(
        chunks.map_over_images(lambda c: c * 2, (a,), 2), np.asarray(a) * 2
    )


def test_a_chunked_sum_starts_after_its_last_operand():
    # ∂L/∂W sums over (x, ∂L/∂Z): zeros made from x would exist from the forward on and be
    # held across the step's peak; made from the cotangent they come in the backward.
    x, g = jnp.ones((6, 4)), jnp.ones((6, 3))
    fn = lambda x, g: chunks.sum_over_images(lambda a, b: a.T @ b, (x, g), 2)  # noqa: E731
    assert not before_argument(fn, (x, g), 1, "broadcast_in_dim")
    np.testing.assert_array_equal(fn(x, g), np.full((4, 3), 6.0))
