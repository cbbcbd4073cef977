"""Layout conversion: round trips and agreement between NCHW and NHWC."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from jaxconv._src import layout as lay


@pytest.mark.parametrize(
    "shape, layout, nhwc_shape",
    [
        ((5, 6), "NCHW", (1, 5, 6, 1)),
        ((3, 5, 6), "NCHW", (1, 5, 6, 3)),
        ((5, 6, 3), "NHWC", (1, 5, 6, 3)),
        ((2, 3, 5, 6), "NCHW", (2, 5, 6, 3)),
        ((2, 5, 6, 3), "NHWC", (2, 5, 6, 3)),
    ],
)
def test_input_round_trip(shape, layout, nhwc_shape):
    a = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
    nhwc = lay.to_nhwc(a, layout, len(shape))
    assert nhwc.shape == nhwc_shape
    np.testing.assert_array_equal(lay.from_nhwc(nhwc, layout, len(shape)), a)


@pytest.mark.parametrize(
    "shape, layout, batched_shape",
    [
        ((5, 6), "NCHW", (1, 1, 5, 6)),
        ((5, 6), "NHWC", (1, 5, 6, 1)),
        ((3, 5, 6), "NCHW", (1, 3, 5, 6)),
        ((2, 5, 6, 3), "NHWC", (2, 5, 6, 3)),
    ],
)
def test_batched_round_trip_keeps_the_layout(shape, layout, batched_shape):
    a = jnp.arange(np.prod(shape), dtype=jnp.float32).reshape(shape)
    batched = lay.to_batched(a, layout, len(shape))
    assert batched.shape == batched_shape
    np.testing.assert_array_equal(lay.from_batched(batched, layout, len(shape)), a)
    np.testing.assert_array_equal(
        lay.from_channels_last(lay.to_channels_last(batched, layout), layout), batched
    )


@pytest.mark.parametrize("layout", ["NCHW", "NHWC"])
def test_along_channels_scales_each_channel(layout):
    a = jnp.ones((2, 3, 4, 5)) if layout == "NCHW" else jnp.ones((2, 4, 5, 3))
    scaled = a * lay.along_channels(jnp.array([1.0, 2.0, 3.0]), layout)
    per_channel = jnp.sum(scaled, axis=(0, 2, 3) if layout == "NCHW" else (0, 1, 2))
    np.testing.assert_array_equal(per_channel, jnp.array([1.0, 2.0, 3.0]) * 40)
    assert lay.channel_axis(layout) == (1 if layout == "NCHW" else 3)
    assert set(lay.spatial_axes(layout)) | {0, lay.channel_axis(layout)} == {0, 1, 2, 3}
    assert set(lay.position_axes(layout)) == {0, *lay.spatial_axes(layout)}


def test_nchw_element_lands_in_nhwc_position():
    a = jnp.arange(2 * 3 * 4 * 5.0).reshape(2, 3, 4, 5)
    assert lay.to_nhwc(a, "NCHW", 4)[1, 2, 3, 0] == a[1, 0, 2, 3]
    w = jnp.arange(6 * 3 * 2 * 2.0).reshape(6, 3, 2, 2)  # OIHW
    assert lay.kernel_to_hwio(w, "NCHW", 4)[1, 0, 2, 5] == w[5, 2, 1, 0]
    np.testing.assert_array_equal(
        lay.hwio_to_kernel(lay.kernel_to_hwio(w, "NCHW", 4), "NCHW", 4), w
    )


def test_layouts_agree():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 4, 7, 6)))
    w = jnp.asarray(rng.standard_normal((6, 2, 3, 2)))
    cfg = dict(stride=2, padding="SAME", groups=2)
    z_nchw = jaxconv.conv2d(x, w, **cfg)
    z_nhwc = jaxconv.conv2d(x.transpose(0, 2, 3, 1), w.transpose(2, 3, 1, 0), layout="NHWC", **cfg)
    np.testing.assert_allclose(z_nhwc.transpose(0, 3, 1, 2), z_nchw, rtol=1e-13, atol=1e-13)
