"""conv2d_xla: conv2d's arguments, XLA's convolution."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

import jaxconv
from tests.helpers import rel_err


@pytest.mark.parametrize(
    "cfg",
    [
        dict(stride=np.int64(2), dilation=np.int32(1), groups=np.int64(2), padding=np.int64(1)),
        dict(stride=(np.int64(2), 1), padding=((np.int64(1), 0), (0, np.int32(2)))),
        dict(padding="same", layout="nchw"),
    ],
)
def test_takes_what_conv2d_takes(cfg):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal((2, 4, 9, 8)))
    w = jnp.asarray(rng.standard_normal((6, 4 // int(cfg.get("groups", 1)), 3, 3)))
    assert rel_err(jaxconv.conv2d_xla(x, w, **cfg), jaxconv.conv2d(x, w, **cfg)) <= 1e-12
