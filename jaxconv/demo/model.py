"""The demo's CNN: two convolutions, ReLU, 2×2 max pooling and dense layers.

The convolution is a parameter, so the same model and parameters run with jaxconv's
hand-derived rules, the naive reference, or XLA's convolution.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import jaxconv

ConvFn = Callable[..., jax.Array]
Params = dict[str, dict[str, jax.Array]]

CONV_IMPLS: dict[str, ConvFn] = {
    "jaxconv": jaxconv.conv2d,
    "reference": jaxconv.conv2d_reference,
    "lax": jaxconv.conv2d_xla,
}


def architecture(image_size: int) -> dict:
    """Layer sizes for an image side: small for 8×8 digits, larger for 28×28 MNIST.

    Returns:
      dict with conv channels, conv padding, and dense hidden width (0: no hidden layer).
    """
    if image_size <= 16:
        return dict(channels=(16, 32), padding="SAME", hidden=0)
    return dict(channels=(32, 64), padding="VALID", hidden=128)


def _conv_out(size: int, padding: str) -> int:
    return size if padding == "SAME" else size - 2


def init_params(key: jax.Array, image_size: int, num_classes: int = 10) -> Params:
    """He-initialised float32 parameters.

    Args:
      key: PRNG key.
      image_size: side of the square, single-channel input images.
      num_classes: outputs of the last layer.

    Returns:
      {"conv1": {"w": (C1, 1, 3, 3), "b"}, "conv2": {"w": (C2, C1, 3, 3), "b"},
       ["hidden": {"w", "b"},] "out": {"w", "b"}}
    """
    arch = architecture(image_size)
    c1, c2 = arch["channels"]
    side = _conv_out(_conv_out(image_size, arch["padding"]), arch["padding"]) // 2
    features = c2 * side * side
    keys = jax.random.split(key, 4)

    def he(key, shape, fan_in):
        return jax.random.normal(key, shape, jnp.float32) * jnp.sqrt(2.0 / fan_in)

    params = {
        "conv1": {"w": he(keys[0], (c1, 1, 3, 3), 9), "b": jnp.zeros((c1,), jnp.float32)},
        "conv2": {"w": he(keys[1], (c2, c1, 3, 3), 9 * c1), "b": jnp.zeros((c2,), jnp.float32)},
    }
    if arch["hidden"]:
        hidden = arch["hidden"]
        params["hidden"] = {
            "w": he(keys[2], (features, hidden), features),
            "b": jnp.zeros((hidden,), jnp.float32),
        }
        features = hidden
    params["out"] = {
        "w": he(keys[3], (features, num_classes), features) / jnp.sqrt(2.0),
        "b": jnp.zeros((num_classes,), jnp.float32),
    }
    return params


def max_pool_2x2(x: jax.Array) -> jax.Array:
    """2×2 max pooling with stride 2 of (N, H, W, C); H and W must be even."""
    n, h, w, c = x.shape
    # A reshape, not lax.reduce_window, whose gradient is 35× slower on a CPU. Under Explicit
    # mesh axes jax needs to be told the split batch stays split.
    sharding = jax.typeof(x).sharding
    split = None
    if not sharding.mesh.empty and sharding.mesh.explicit_axes:
        split = NamedSharding(sharding.mesh, P(sharding.spec[0] if sharding.spec else None))
    windows = jnp.reshape(x, (n, h // 2, 2, w // 2, 2, c), out_sharding=split)
    return windows.max(axis=(2, 4))


def apply(params: Params, images: jax.Array, conv: ConvFn = jaxconv.conv2d) -> jax.Array:
    """Logits of the CNN.

    The kernels are stored OIHW (as PyTorch's); the activations run channels-last ("NHWC"),
    which spares a layout transpose around every convolution.

    Args:
      params: from `init_params`.
      images: (N, 1, H, W) float32.
      conv: a function with `jaxconv.conv2d`'s signature.

    Returns:
      (N, num_classes) logits.
    """
    padding = architecture(images.shape[-1])["padding"]

    def conv_relu(x, layer):
        w_hwio = params[layer]["w"].transpose(2, 3, 1, 0)
        return jax.nn.relu(conv(x, w_hwio, params[layer]["b"], padding=padding, layout="NHWC"))

    x = images.transpose(0, 2, 3, 1)  # one channel: a reshape, no data moves
    x = conv_relu(conv_relu(x, "conv1"), "conv2")
    x = max_pool_2x2(x).reshape(images.shape[0], -1)
    if "hidden" in params:
        x = jax.nn.relu(x @ params["hidden"]["w"] + params["hidden"]["b"])
    return x @ params["out"]["w"] + params["out"]["b"]


def loss_fn(
    params: Params, images: jax.Array, labels: jax.Array, conv: ConvFn = jaxconv.conv2d
) -> jax.Array:
    """Mean softmax cross-entropy of the batch."""
    logits = apply(params, images, conv)
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))
