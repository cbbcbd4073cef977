"""Compiles jaxconv and XLA's convolution on several forced host devices and prints, as JSON,
what tests/test_sharded.py checks: per-device HLO figures and the largest differences.

    XLA_FLAGS=--xla_force_host_platform_device_count=4 python tests/sharding_probe.py GROUP

GROUP: "data" (data parallel: a deep conv's forward+backward and the demo's train step),
"tensor" (output-channel-sharded kernels, alone and on a 2×2 mesh) or "values" (results
under shard_map, pmap, Auto and Explicit axes, against XLA and one device).
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hlo_stats

import jaxconv
from jaxconv.demo import model, train

DEVICES = jax.device_count()
DEEP = dict(x=(256, 32, 26, 26), w=(64, 32, 3, 3), padding=1)


def xla_conv(x, w, b=None, *, padding=0, layout="NCHW", out_sharding=None):
    dn = ("NCHW", "OIHW", "NCHW") if layout == "NCHW" else ("NHWC", "HWIO", "NHWC")
    z = lax.conv_general_dilated(
        x, w, (1, 1), [(padding, padding)] * 2, dimension_numbers=dn, out_sharding=out_sharding
    )
    if b is not None:
        z = z + (b[:, None, None] if layout == "NCHW" else b)
    return z


def jaxconv_conv(x, w, b=None, *, padding=0, layout="NCHW", out_sharding=None):
    return jaxconv.conv2d(x, w, b, padding=padding, layout=layout, out_sharding=out_sharding)


IMPLS = {"jaxconv": jaxconv_conv, "xla": xla_conv}


def make_mesh(shape, names, kind: str):
    types = (AxisType.Explicit if kind == "explicit" else AxisType.Auto,) * len(names)
    return jax.make_mesh(shape, names, axis_types=types)


def one_device_mesh():
    return jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])


def normal(seed, shape, scale=1.0):
    """Seeded normal float32 operands, drawn by NumPy: jax.random's generator would compile
    (seconds on a CPU) for every shape."""
    values = np.random.default_rng(seed).standard_normal(shape) * scale
    return jnp.asarray(values, jnp.float32)


def arrays(x_shape, w_shape, layout="NCHW"):
    x, w = normal(0, x_shape), normal(1, w_shape, 0.1)
    if layout == "NHWC":
        x, w = jnp.transpose(x, (0, 2, 3, 1)), jnp.transpose(w, (2, 3, 1, 0))
    return x, w


def conv_value_and_grad(conv, padding, layout):
    def loss(x, w):
        return jnp.sum(jnp.tanh(conv(x, w, padding=padding, layout=layout)))

    return jax.value_and_grad(loss, argnums=(0, 1))


def compile_on(fn, mesh, args, specs):
    """fn compiled for args placed by `specs` on `mesh` (None: one device, no mesh)."""
    if mesh is None:
        with jax.set_mesh(one_device_mesh()):
            return jax.jit(fn).lower(*args).compile()
    placed = [jax.device_put(a, NamedSharding(mesh, s)) for a, s in zip(args, specs)]
    with jax.set_mesh(mesh):
        if mesh.axis_types[0] == AxisType.Explicit:
            return jax.jit(fn).lower(*placed).compile()
        shardings = tuple(NamedSharding(mesh, s) for s in specs)
        return jax.jit(fn, in_shardings=shardings).lower(*args).compile()


def data_parallel() -> dict:
    out: dict = {"devices": DEVICES}
    for layout in ("NCHW",):  # the tensor-parallel group has NHWC
        x, w = arrays(DEEP["x"], DEEP["w"], layout)
        per_device = x[: x.shape[0] // DEVICES]
        for impl, conv in IMPLS.items():
            fn = conv_value_and_grad(conv, DEEP["padding"], layout)
            case = {"single": hlo_stats.summary(compile_on(fn, None, (x, w), None))}
            case["per_device_batch"] = hlo_stats.summary(
                compile_on(fn, None, (per_device, w), None)
            )
            for kind in ("auto", "explicit"):
                mesh = make_mesh((DEVICES,), ("data",), kind)
                compiled = compile_on(fn, mesh, (x, w), (P("data"), P()))
                case[kind] = hlo_stats.summary(compiled)
            out[f"conv {layout} {impl}"] = case

    # The demo's own step (train.make_train_step), on Auto and on Explicit axes.
    params = model.init_params(jax.random.key(0), 28, 10)
    optimizer = train.make_optimizer(1e-3)
    opt_state = optimizer.init(params)
    images = normal(2, (256, 1, 28, 28))
    labels = jnp.arange(256, dtype=jnp.int32) % 10
    local = 256 // DEVICES
    for impl, name in (("jaxconv", "jaxconv"), ("xla", "lax")):
        conv = model.CONV_IMPLS[name]
        case = {}
        for label, mesh, n in (
            ("single", one_device_mesh(), 256),
            ("per_device_batch", one_device_mesh(), local),
            ("auto", make_mesh((DEVICES,), ("data",), "auto"), 256),
            ("explicit", make_mesh((DEVICES,), ("data",), "explicit"), 256),
        ):
            step = train.make_train_step(conv, optimizer, mesh)
            # Placed as the demo places them (train.replicate, train.shard_batch).
            state = jax.device_put((params, opt_state), NamedSharding(mesh, P()))
            batch = jax.device_put((images[:n], labels[:n]), NamedSharding(mesh, P("data")))
            with jax.set_mesh(mesh):
                compiled = step.lower(*state, *batch).compile()
            case[label] = hlo_stats.summary(compiled)
        out[f"demo step {impl}"] = case
    return out


def max_rel(got, want) -> float:
    """The largest |got − want| over max |want|, over the leaves of two trees."""
    pairs = zip(jax.tree.leaves(got), jax.tree.leaves(want))
    return max(
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / (np.max(np.abs(np.asarray(b))) or 1))
        for a, b in pairs
    )


def tensor_parallel() -> dict:
    out: dict = {}
    meshes = {  # name: mesh shape, axis names, layout, x's spec, w's spec, Z's spec
        "model 4": ((DEVICES,), ("model",), "NCHW", P(), P("model"), P(None, "model")),
        "data×model 2×2": (
            (2, 2),
            ("data", "model"),
            "NHWC",
            P("data"),
            P(None, None, None, "model"),
            P("data", None, None, "model"),
        ),
    }
    for name, (shape, names, layout, x_spec, w_spec, z_spec) in meshes.items():
        x, w = arrays((32, 32, 26, 26), (64, 32, 3, 3), layout)
        for kind in ("auto", "explicit"):
            mesh = make_mesh(shape, names, kind)
            results, case = {}, {}
            for impl, conv in IMPLS.items():
                spec = z_spec if kind == "explicit" else None
                conv = functools.partial(conv, padding=1, layout=layout)

                def fn(x, w, conv=conv, spec=spec):
                    def loss(x, w):
                        return jnp.sum(jnp.tanh(conv(x, w, out_sharding=spec)))

                    return jax.value_and_grad(loss, argnums=(0, 1))(x, w)

                compiled = compile_on(fn, mesh, (x, w), (x_spec, w_spec))
                case[impl] = hlo_stats.summary(compiled)
                placed = [
                    jax.device_put(a, NamedSharding(mesh, s)) for a, s in ((x, x_spec), (w, w_spec))
                ]
                results[impl] = compiled(*placed)
                if kind == "explicit":
                    # XLA's conv needs to be told; jaxconv's places Z as the operands say.
                    natural = spec if impl == "xla" else None
                    with jax.set_mesh(mesh):
                        z = jax.jit(lambda x, w, c=conv, s=natural: c(x, w, out_sharding=s))(
                            *placed
                        )
                        whole = jax.jit(lambda x, w, c=conv: c(x, w, out_sharding=P()))(*placed)
                    case[impl]["out_spec"] = str(jax.typeof(z).sharding.spec)
                    case[impl]["asked_replicated_spec"] = str(jax.typeof(whole).sharding.spec)
            case["max_rel_vs_xla"] = max_rel(results["jaxconv"], results["xla"])
            out[f"{name} {layout} {kind}"] = case
    return out


def values() -> dict:
    """Largest relative differences of jaxconv under each placement from XLA's convolution
    with autodiff on one device."""
    out: dict = {}
    x, w = arrays((32, 32, 12, 12), (64, 32, 3, 3))
    b = jnp.arange(64, dtype=jnp.float32) / 64
    cases = {"deep": (x, w), "shallow": (x[:, :1], w[:4, :1]), "depthwise": (x, w[:32, :1])}
    for name, (xc, wc) in cases.items():
        groups = xc.shape[1] // wc.shape[1]
        bc = b[: wc.shape[0]]

        def loss(x, w, b, conv, groups=groups):
            if conv == "jaxconv":
                z = jaxconv.conv2d(x, w, b, padding=1, groups=groups)
            else:
                z = (
                    lax.conv_general_dilated(x, w, (1, 1), [(1, 1)] * 2, feature_group_count=groups)
                    + b[:, None, None]
                )
            return jnp.sum(jnp.tanh(z) ** 2)

        grad = jax.value_and_grad(loss, argnums=(0, 1, 2))
        single = jax.jit(grad, static_argnums=3)(xc, wc, bc, "xla")
        impl = "jaxconv"
        results = {}
        for kind in ("auto", "explicit"):
            mesh = make_mesh((DEVICES,), ("data",), kind)

            def per_device(x, w, b, impl=impl, grad=grad):
                # w and b are the same on every device: their cotangents arrive summed.
                value, (dx, dw, db) = grad(x, w, b, impl)
                return lax.psum(value, "data"), dx, dw, db

            placed = [
                jax.device_put(a, NamedSharding(mesh, s))
                for a, s in ((xc, P("data")), (wc, P()), (bc, P()))
            ]
            mapped = jax.shard_map(
                per_device,
                mesh=mesh,
                in_specs=(P("data"), P(), P()),
                out_specs=(P(), P("data"), P(), P()),
            )
            results[f"shard_map {kind}"] = jax.jit(mapped)(*placed)
            with jax.set_mesh(mesh):
                results[f"jit {kind}"] = jax.jit(grad, static_argnums=3)(*placed, impl)

        def pmapped(x, w, b, impl=impl, grad=grad):
            value, (dx, dw, db) = grad(x, w, b, impl)
            return lax.psum(value, "i"), dx, lax.psum(dw, "i"), lax.psum(db, "i")

        split = xc.reshape(DEVICES, -1, *xc.shape[1:])
        value, dx, dw, db = jax.pmap(pmapped, axis_name="i", in_axes=(0, None, None))(split, wc, bc)
        results["pmap"] = (value[0], dx.reshape(xc.shape), dw[0], db[0])
        out[name] = {k: max_rel(v, single) for k, v in results.items()}

    # conv_transpose2d and the public gradient functions, batch-sharded on Explicit axes.
    mesh = make_mesh((DEVICES,), ("data",), "explicit")
    xt = normal(3, (8, 64, 6, 6))

    def transpose_loss(x, w):
        return jnp.sum(jnp.tanh(jaxconv.conv_transpose2d(x, w, stride=2, padding=1)))

    def gradient_functions(x, w, g):
        return (
            jaxconv.conv2d_grad_input(g, w, x.shape, padding=1),
            jaxconv.conv2d_grad_kernel(x, g, w.shape, padding=1),
        )

    g = normal(4, (32, 64, 12, 12))
    transpose_grad = jax.value_and_grad(transpose_loss, argnums=(0, 1))
    single = (jax.jit(transpose_grad)(xt, w), jax.jit(gradient_functions)(x, w, g))
    placed = [
        jax.device_put(a, NamedSharding(mesh, s))
        for a, s in ((xt, P("data")), (w, P()), (x, P("data")), (g, P("data")))
    ]
    with jax.set_mesh(mesh):
        sharded = (
            jax.jit(transpose_grad)(placed[0], placed[1]),
            jax.jit(gradient_functions)(placed[2], placed[1], placed[3]),
        )
    out["conv_transpose2d and gradient functions, explicit"] = max_rel(sharded, single)
    return out


if __name__ == "__main__":
    groups = {"data": data_parallel, "tensor": tensor_parallel, "values": values}
    print(json.dumps(groups[sys.argv[1]]()))
