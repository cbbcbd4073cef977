"""Each pass evaluated where its operands live: on one device, or on each device's shard.

`forward`, `grad_input` and `grad_kernel` run a pass by its plan (`evaluate.on_platform`).
- Operands sharded over Explicit mesh axes (`mesh.explicit_specs`): the pass runs inside
  `jax.shard_map` over the mesh, each device on its part of the batch (data parallel) and of
  the output channels of a one-group kernel (tensor parallel), with the plan chosen for that
  part. A sum over a split axis, the batch in ∂L/∂W and the output channels in ∂L/∂X, ends in
  one psum. Other dimensions are gathered first.
- Inside `jax.shard_map` or `jax.pmap` (manual axes): arrays are shards; as on one device.
- Otherwise (Auto axes, one device): on the whole arrays, the chunk loops cut per the devices
  XLA may split the batch over (`mesh.auto_batch_shards`), plans chosen for one part.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from jaxconv._src import layout as lay
from jaxconv._src.evaluation import evaluate as ev
from jaxconv._src.evaluation import mesh
from jaxconv._src.evaluation.evaluate import Auto
from jaxconv._src.evaluation.mesh import AxisNames
from jaxconv._src.evaluation.plan import Plan
from jaxconv._src.geometry import ConvGeometry

# run(geometry, shards, *operands): a pass on operands of that geometry.
Run = Callable[..., jax.Array]


def _entry(names: AxisNames):
    return names if names else None


def _images_spec(layout: str, batch: AxisNames, channels: AxisNames) -> P:
    entries: list = [None] * len(layout)
    entries[0], entries[lay.channel_axis(layout)] = _entry(batch), _entry(channels)
    return P(*entries)


def _kernel_spec(layout: str, out_channels: AxisNames) -> P:
    return P(*(None,) * (len(layout) - 1), _entry(out_channels))


def _split(the_mesh, names: AxisNames, size: int, taken: AxisNames = ()) -> AxisNames:
    """`names` without axes in `taken`, or () where their devices do not divide `size`."""
    names = tuple(n for n in names if n not in taken)
    return names if size % _count(the_mesh, names) == 0 else ()


def _count(the_mesh, names: AxisNames) -> int:
    return math.prod(the_mesh.shape[n] for n in names)


def _on_shards(
    the_mesh, body: Callable, operands, in_specs, out_spec: P, summed: AxisNames = ()
) -> jax.Array:
    """body on each device's shards, after moving the operands to `in_specs`. body sums
    over the `summed` axes with `_sum`, which skips those of one device: then the types,
    which would want a psum there, go unchecked."""
    placed = tuple(
        jax.sharding.reshard(a, NamedSharding(the_mesh, spec))
        for a, spec in zip(operands, in_specs)
    )
    checked = all(the_mesh.shape[n] > 1 for n in summed)
    mapped = jax.shard_map(
        body, mesh=the_mesh, in_specs=tuple(in_specs), out_specs=out_spec, check_vma=checked
    )
    return mapped(*placed)


def _sum(the_mesh, a: jax.Array, names: AxisNames) -> jax.Array:
    """psum over those of `names` with more than one device (a sum over one device is the
    value itself, and no all-reduce)."""
    names = tuple(n for n in names if the_mesh.shape[n] > 1)
    return lax.psum(a, names) if names else a


def _evaluate(geom: ConvGeometry, plan, precision, evaluation: Callable, shards: int, *arrays):
    def run(p: Plan, *arrays: jax.Array) -> jax.Array:
        return evaluation(*arrays, geom, p, shards=shards)

    return ev.on_platform(plan, geom, precision, run, *arrays, shards=shards)


def forward(
    x: jax.Array,
    w: jax.Array,
    geom: ConvGeometry,
    plan: Plan | Auto,
    precision: str | None,
    *,
    backward_follows: bool = False,
) -> jax.Array:
    """Z (`evaluate.forward`) from batched x in `geom.layout` and an HWIO kernel.

    Returns:
      (N, O, *out) or (N, *out, O), in the accumulation dtype.
    """

    def evaluation(x, w, geom, p, shards):
        return ev.forward(x, w, geom, p, backward_follows=backward_follows, shards=shards)

    placed = mesh.explicit_specs(x, w)
    if placed is None:
        shards = mesh.auto_batch_shards(geom.batch)
        return _evaluate(geom, plan, precision, evaluation, shards, x, w)
    the_mesh, (x_spec, w_spec) = placed
    batch = _split(the_mesh, x_spec[0], geom.batch)
    out = _split(the_mesh, w_spec[-1], geom.out_channels, batch) if geom.groups == 1 else ()
    part = geom.per_device(_count(the_mesh, batch), _count(the_mesh, out))

    def body(x, w):
        return _evaluate(part, plan, precision, evaluation, 1, x, w)

    in_specs = (_images_spec(geom.layout, batch, ()), _kernel_spec(geom.layout, out))
    return _on_shards(the_mesh, body, (x, w), in_specs, _images_spec(geom.layout, batch, out))


def grad_input(
    g: jax.Array, w: jax.Array, geom: ConvGeometry, plan: Plan | Auto, precision: str | None
) -> jax.Array:
    """∂L/∂X (`evaluate.grad_input`) from batched ∂L/∂Z in `geom.layout` and an HWIO kernel.

    Returns:
      (N, C, *in) or (N, *in, C), in the accumulation dtype.
    """
    placed = mesh.explicit_specs(g, w)
    if placed is None:
        shards = mesh.auto_batch_shards(geom.batch)
        return _evaluate(geom, plan, precision, ev.grad_input, shards, g, w)
    the_mesh, (g_spec, w_spec) = placed
    batch = _split(the_mesh, g_spec[0], geom.batch)
    out = _split(the_mesh, w_spec[-1], geom.out_channels, batch) if geom.groups == 1 else ()
    part = geom.per_device(_count(the_mesh, batch), _count(the_mesh, out))

    def body(g, w):
        dx = _evaluate(part, plan, precision, ev.grad_input, 1, g, w)
        return _sum(the_mesh, dx, out)  # eq. 31 sums over every output channel

    in_specs = (_images_spec(geom.layout, batch, out), _kernel_spec(geom.layout, out))
    out_spec = _images_spec(geom.layout, batch, ())
    return _on_shards(the_mesh, body, (g, w), in_specs, out_spec, summed=out)


def grad_kernel(
    x: jax.Array, g: jax.Array, geom: ConvGeometry, plan: Plan | Auto, precision: str | None
) -> jax.Array:
    """∂L/∂W (`evaluate.grad_kernel`) from batched x and ∂L/∂Z in `geom.layout`.

    Returns:
      (*k, C//G, O), in the accumulation dtype.
    """
    placed = mesh.explicit_specs(x, g)
    if placed is None:
        shards = mesh.auto_batch_shards(geom.batch)
        return _evaluate(geom, plan, precision, ev.grad_kernel, shards, x, g)
    the_mesh, (x_spec, g_spec) = placed
    batch = _split(the_mesh, x_spec[0], geom.batch)
    channel = g_spec[lay.channel_axis(geom.layout)]
    out = _split(the_mesh, channel, geom.out_channels, batch) if geom.groups == 1 else ()
    part = geom.per_device(_count(the_mesh, batch), _count(the_mesh, out))

    def body(x, g):
        dw = _evaluate(part, plan, precision, ev.grad_kernel, 1, x, g)
        return _sum(the_mesh, dw, batch)  # eq. 30 sums over every image

    in_specs = (_images_spec(geom.layout, batch, ()), _images_spec(geom.layout, batch, out))
    return _on_shards(
        the_mesh, body, (x, g), in_specs, _kernel_spec(geom.layout, out), summed=batch
    )
