"""What JAX tells a computation, while it is traced, about the devices its arrays live on.

Three cases, as JAX has them:
- Explicit mesh axes (`jax.make_mesh`'s default): an array's type carries its sharding;
  `explicit_specs` reads it, per axis of the array.
- Manual axes (inside `jax.shard_map` or `jax.pmap`): arrays are one device's shard already;
  `varying_axes` says over which manual axes an array differs from device to device, which
  the types of a loop's state and of a custom_vjp's cotangents must respect.
- Auto axes, or no mesh: the type says nothing, and XLA places the arrays after tracing;
  `auto_batch_shards` says over how many devices a batch may be split.
"""

from __future__ import annotations

import jax
from jax import lax

AxisNames = tuple[str, ...]


def varying_axes(a) -> frozenset[str]:
    """The manual mesh axes over which `a`, an array or its abstract value, varies (empty
    outside `jax.shard_map`)."""
    manual = getattr(
        a if isinstance(a, jax.core.ShapedArray) else jax.typeof(a), "manual_axis_type", None
    )
    return frozenset(getattr(manual, "varying", ()))


def varying_over(x: jax.Array, axes: frozenset[str]) -> jax.Array:
    """`x`, made to vary over every manual axis of `axes` it does not vary over yet."""
    missing = axes - varying_axes(x)
    return lax.pcast(x, tuple(sorted(missing)), to="varying") if missing else x


def varying_like(x: jax.Array, *like: jax.Array) -> jax.Array:
    """`x`, made to vary over every manual axis that any of `like` varies over: a loop state
    that starts from zeros, or a cotangent that must have its primal's type."""
    return varying_over(x, frozenset().union(*(varying_axes(a) for a in like)))


def in_manual_context() -> bool:
    """Whether the trace runs per device (`jax.shard_map`, `jax.pmap`): arrays are shards."""
    return bool(jax.sharding.get_abstract_mesh().manual_axes)


def values_are_local() -> bool:
    """Whether every array of the trace is whole on one device, or is each device's shard
    (`in_manual_context`): a value made from one element of an array needs no communication."""
    return in_manual_context() or _devices() == 1


def _devices() -> int:
    """The devices of the context mesh, or of the process's JAX where there is none."""
    mesh = jax.sharding.get_abstract_mesh()
    return mesh.size if not mesh.empty else jax.device_count()


def _names(entry) -> AxisNames:
    if entry is None:
        return ()
    return (entry,) if isinstance(entry, str) else tuple(entry)


def explicit_specs(*arrays: jax.Array):
    """(mesh, per array a tuple of axis names per dimension) when some array is sharded over
    Explicit mesh axes, else None. Every array's unsharded dimension has ()."""
    found = None
    for a in arrays:
        sharding = jax.typeof(a).sharding
        mesh = getattr(sharding, "mesh", None)
        if mesh is None or mesh.empty or not mesh.explicit_axes:
            continue
        if any(_names(entry) for entry in sharding.spec):
            found = mesh
            break
    if found is None:
        return None
    specs = []
    for a in arrays:
        spec = tuple(jax.typeof(a).sharding.spec)
        spec += (None,) * (a.ndim - len(spec))
        specs.append(tuple(_names(entry) for entry in spec))
    return found, tuple(specs)


def auto_batch_shards(batch: int) -> int:
    """Over how many devices XLA may split a batch of `batch` images that the trace cannot
    see the placement of: every device of the context mesh, or of the process's JAX, when
    they divide the batch, else 1.

    Chunk loops lay each of these parts out on its own (`chunks.split_images`), so a
    batch split over that many devices compiles to per-device loops; on fewer devices it is
    as correct, with larger chunks.
    """
    if in_manual_context():
        return 1
    devices = _devices()
    return devices if devices > 1 and batch % devices == 0 else 1


def cotangent_like(ct: jax.Array, primal: jax.Array) -> jax.Array:
    """A custom_vjp cotangent with its primal's type inside `jax.shard_map`: summed over the
    manual axes the primal does not vary over (the transpose of using one value on every
    device), made varying over those it varies over."""
    extra = varying_axes(ct) - varying_axes(primal)
    if extra:
        ct = lax.psum(ct, tuple(sorted(extra)))
    return varying_like(ct, primal)
