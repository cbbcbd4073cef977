"""Training steps of real networks: ResNet-18 and a MobileNetV2-style network on 32×32 inputs,
with jaxconv, with XLA's convolution and in eager PyTorch; compile time and memory of each step.

    python benchmarks/bench_networks.py [--networks resnet18,mobilenetv2] [--steps 7]
        [--compiles 3] [--json out.json] [--quick]

Each network is one model definition (`resnet18`, `mobilenet_v2`) over a few operations
(`Ops`). With `jax_ops(jaxconv_conv)` and `jax_ops(xla_conv)` only the convolution differs:
`jaxconv.conv2d` against `jax.lax.conv_general_dilated`, both channels-last (NHWC) with HWIO
kernels. `torch_ops()` runs the same definition in eager PyTorch: `F.conv2d` on
`torch.channels_last` activations (faster than contiguous NCHW on this CPU). Normalisation is
batch norm with the batch's statistics (biased variance, eps 1e-5), in jnp on the JAX side and
`F.batch_norm` on PyTorch's; the optimizer is Adam (optax, torch.optim); float32, batch 128 by
default, the JAX steps jit-compiled. All three start from the same parameters and batch.

Before anything is timed, one step's loss and gradients of the jaxconv model are compared
with the XLA model's, and PyTorch's loss with theirs: an implementation that disagrees is not
timed. Steps are then interleaved round-robin, each timed step after `--warm` untimed steps of
the same implementation (as in bench_train.py). Compile time is trace, lower and XLA compile
of a fresh step with the caches cleared, `--compiles` times (median, min–max; wall time, and
the process's CPU time beside it); temporary memory is the compiled program's
`memory_analysis().temp_size_in_bytes`; HLO ops and fusions count the instructions and the
fusions (XLA:CPU compiles each fusion to a kernel of its own) of the optimised module. The
demo's train step (jaxconv.demo, 28×28) is compiled the same way, and that step is then timed
by bench_train.py.
"""

from __future__ import annotations

import argparse
import functools
import os
import re
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import hlo_stats
import jax
import jax.numpy as jnp
import numpy as np
import optax
from bench_conv import compile_stats, run_meta, write_json

import jaxconv

Params = Any  # nested dicts and lists of arrays: a pytree
EPS = 1e-5  # batch norm's, PyTorch's default
LR = 1e-3
IMPLS = ("jaxconv", "lax", "torch")
CHECK_RTOL = 1e-9  # float64: the same sums in another order
FIRST_LOSS_RTOL = 1e-5  # float32: the first step's loss, before any update


class Ops(NamedTuple):
    """The operations a network is written in, one set per framework.

    conv(x, w, stride, groups) pads by k // 2 on every side (w as that framework's kernels:
    HWIO or OIHW); norm(x, scale, offset) is batch norm with the batch's statistics; pool(x)
    the mean over positions, (N, C); dense(x, w, b) is x·w + b.
    """

    conv: Callable[..., Any]
    norm: Callable[..., Any]
    relu: Callable[..., Any]
    relu6: Callable[..., Any]
    pool: Callable[..., Any]
    dense: Callable[..., Any]


# --- The networks, for any `Ops`. ------------------------------------------------------------


class ResBlock(NamedTuple):
    """A basic block: 3×3 (stride s) → BN → ReLU → 3×3 → BN, plus the input (or, where the
    shape changes, a 1×1 stride-s convolution of it and BN); ReLU."""

    cin: int
    cout: int
    stride: int


class InvertedResidual(NamedTuple):
    """MobileNetV2's block: 1×1 expand (where hidden > cin) → 3×3 depthwise (stride s) → 1×1
    project, BN after each, ReLU6 after the first two; plus the input where the shape stays."""

    cin: int
    hidden: int
    cout: int
    stride: int


def resnet18_spec(widths: tuple[int, ...] = (64, 128, 256, 512), blocks: int = 2) -> tuple:
    """ResNet-18 for 32×32 inputs: a 3×3 stem, then stages of `blocks` basic blocks, the first
    of every stage but the first at stride 2 with a 1×1 stride-2 shortcut convolution.

    Args:
      widths: channels of the stages (the stem has the first stage's).
      blocks: basic blocks per stage.

    Returns:
      (stem width, the `ResBlock`s).
    """
    layers, cin = [], widths[0]
    for i, cout in enumerate(widths):
        for j in range(blocks):
            layers.append(ResBlock(cin, cout, 2 if i > 0 and j == 0 else 1))
            cin = cout
    return widths[0], tuple(layers)


# MobileNetV2's (expansion t, channels c, blocks n, stride s). For 32×32 inputs the stem and the
# second stage keep stride 1, as in the usual CIFAR variant: 32 → 16 → 8 → 4 positions a side.
MOBILENET_V2 = (
    (1, 16, 1, 1),
    (6, 24, 2, 1),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def mobilenet_v2_spec(
    config: tuple[tuple[int, int, int, int], ...] = MOBILENET_V2, stem: int = 32, last: int = 1280
) -> tuple:
    """A MobileNetV2-style network for 32×32 inputs: a 3×3 stem, inverted residual blocks,
    a last 1×1 convolution.

    Args:
      config: (t, c, n, s) per stage, as `MOBILENET_V2`.
      stem: the stem's channels.
      last: the last 1×1 convolution's channels.

    Returns:
      (stem width, the `InvertedResidual`s, last width).
    """
    layers, cin = [], stem
    for t, c, n, s in config:
        for j in range(n):
            layers.append(InvertedResidual(cin, cin * t, c, s if j == 0 else 1))
            cin = c
    return stem, tuple(layers), last


def _conv_bn(ops: Ops, p: Params, x, stride: int = 1, groups: int = 1):
    """Convolution (padding k // 2), then batch norm."""
    return ops.norm(ops.conv(x, p["w"], stride, groups), p["scale"], p["offset"])


def resnet18(spec: tuple, params: Params, x, ops: Ops):
    """Logits of ResNet-18 (`resnet18_spec`) for a batch of images, as `ops` takes them."""
    _, blocks = spec
    x = ops.relu(_conv_bn(ops, params["stem"], x))
    for block, p in zip(blocks, params["blocks"]):
        y = ops.relu(_conv_bn(ops, p["conv1"], x, block.stride))
        y = _conv_bn(ops, p["conv2"], y)
        shortcut = _conv_bn(ops, p["shortcut"], x, block.stride) if "shortcut" in p else x
        x = ops.relu(y + shortcut)
    return ops.dense(ops.pool(x), params["head"]["w"], params["head"]["b"])


def mobilenet_v2(spec: tuple, params: Params, x, ops: Ops):
    """Logits of the MobileNetV2-style network (`mobilenet_v2_spec`) for a batch of images."""
    _, blocks, _ = spec
    x = ops.relu6(_conv_bn(ops, params["stem"], x))
    for block, p in zip(blocks, params["blocks"]):
        y = ops.relu6(_conv_bn(ops, p["expand"], x)) if "expand" in p else x
        y = ops.relu6(_conv_bn(ops, p["depthwise"], y, block.stride, block.hidden))
        y = _conv_bn(ops, p["project"], y)
        x = y + x if block.stride == 1 and block.cin == block.cout else y
    x = ops.relu6(_conv_bn(ops, params["last"], x))
    return ops.dense(ops.pool(x), params["head"]["w"], params["head"]["b"])


def _conv_params(rng: np.random.Generator, k: int, cin: int, cout: int) -> dict:
    """A He-initialised (k, k, cin, cout) kernel (HWIO), BN scale 1 and offset 0; float32."""
    w = rng.standard_normal((k, k, cin, cout)) * np.sqrt(2.0 / (k * k * cin))
    ones, zeros = np.ones(cout, np.float32), np.zeros(cout, np.float32)
    return {"w": w.astype(np.float32), "scale": ones, "offset": zeros}


def _head(rng: np.random.Generator, features: int, classes: int) -> dict:
    w = rng.standard_normal((features, classes)) / np.sqrt(features)
    return {"w": w.astype(np.float32), "b": np.zeros(classes, np.float32)}


def init_resnet18(spec: tuple, classes: int = 10, seed: int = 0) -> Params:
    """NumPy parameters of `resnet18(spec, ...)` for 3-channel images, kernels HWIO."""
    rng = np.random.default_rng(seed)
    stem, blocks = spec
    params: dict = {"stem": _conv_params(rng, 3, 3, stem), "blocks": []}
    for b in blocks:
        p = {"conv1": _conv_params(rng, 3, b.cin, b.cout)}
        p["conv2"] = _conv_params(rng, 3, b.cout, b.cout)
        if b.stride != 1 or b.cin != b.cout:
            p["shortcut"] = _conv_params(rng, 1, b.cin, b.cout)
        params["blocks"].append(p)
    params["head"] = _head(rng, blocks[-1].cout, classes)
    return params


def init_mobilenet_v2(spec: tuple, classes: int = 10, seed: int = 0) -> Params:
    """NumPy parameters of `mobilenet_v2(spec, ...)`; a depthwise kernel is (3, 3, 1, hidden)."""
    rng = np.random.default_rng(seed)
    stem, blocks, last = spec
    params: dict = {"stem": _conv_params(rng, 3, 3, stem), "blocks": []}
    for b in blocks:
        p = {}
        if b.hidden != b.cin:
            p["expand"] = _conv_params(rng, 1, b.cin, b.hidden)
        p["depthwise"] = _conv_params(rng, 3, 1, b.hidden)
        p["project"] = _conv_params(rng, 1, b.hidden, b.cout)
        params["blocks"].append(p)
    params["last"] = _conv_params(rng, 1, blocks[-1].cout, last)
    params["head"] = _head(rng, last, classes)
    return params


class Network(NamedTuple):
    """A network: its name, spec, forward `apply(spec, params, x, ops)` and NumPy parameters."""

    name: str
    spec: tuple
    apply: Callable[..., Any]
    params: Params


NETWORKS = ("resnet18", "mobilenetv2")


def build_network(name: str, quick: bool = False) -> Network:
    """The network `name` ("resnet18" or "mobilenetv2"); `quick`: a few narrow blocks with
    every kind of layer (the smoke test's)."""
    if name == "resnet18":
        spec = resnet18_spec((4, 8), 1) if quick else resnet18_spec()
        return Network(name, spec, resnet18, init_resnet18(spec))
    if name == "mobilenetv2":
        if quick:  # no expansion, then stride 2 and stride 1 with the residual
            spec = mobilenet_v2_spec(((1, 4, 1, 1), (2, 8, 2, 2)), stem=4, last=16)
        else:
            spec = mobilenet_v2_spec()
        return Network(name, spec, mobilenet_v2, init_mobilenet_v2(spec))
    raise ValueError(f"unknown network {name!r}; expected one of {NETWORKS}")


def batch(size: int, image: int, classes: int = 10, seed: int = 0) -> tuple:
    """Seeded random (images (N, H, W, 3) float32, labels (N,) int32)."""
    rng = np.random.default_rng(seed)
    images = rng.standard_normal((size, image, image, 3)).astype(np.float32)
    return images, rng.integers(0, classes, size).astype(np.int32)


def cross_entropy(logits, labels) -> Any:
    """Mean softmax cross-entropy, for JAX arrays."""
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=1))


# --- JAX. ------------------------------------------------------------------------------------


def _same(w_hwio: jax.Array) -> tuple[tuple[int, int], tuple[int, int]]:
    k = w_hwio.shape[0] // 2
    return ((k, k), (k, k))


# Each convolution is traced in a scope naming its layer kind, so that a compiled step's
# instructions can be counted layer by layer (`hlo_stats.scope_costs`).
LAYER_SCOPE = re.compile(r"\blayer_(\w+)")


def layer_scope(x: jax.Array, w: jax.Array, stride: int, groups: int) -> str:
    """`layer_<k>x<k>_<C>to<O>_s<stride>_g<groups>_<H>px`, for x (N, H, W, C), w HWIO."""
    k, _, _, o = w.shape
    return f"layer_{k}x{k}_{x.shape[-1]}to{o}_s{stride}_g{groups}_{x.shape[1]}px"


def jaxconv_conv(x: jax.Array, w: jax.Array, stride: int, groups: int) -> jax.Array:
    """`jaxconv.conv2d`, channels-last: x (N, H, W, C), w HWIO, padding k // 2."""
    with jax.named_scope(layer_scope(x, w, stride, groups)):
        return jaxconv.conv2d(x, w, stride=stride, padding=_same(w), groups=groups, layout="NHWC")


def xla_conv(x: jax.Array, w: jax.Array, stride: int, groups: int) -> jax.Array:
    """XLA's convolution, `jax.lax.conv_general_dilated`, on `jaxconv_conv`'s arrays."""
    with jax.named_scope(layer_scope(x, w, stride, groups)):
        return jax.lax.conv_general_dilated(
            x,
            w,
            (stride, stride),
            _same(w),
            dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )


def jnp_batch_norm(x: jax.Array, scale: jax.Array, offset: jax.Array) -> jax.Array:
    """Batch norm of (N, H, W, C) with the batch's mean and biased variance."""
    mean = jnp.mean(x, axis=(0, 1, 2))
    var = jnp.mean(jnp.square(x - mean), axis=(0, 1, 2))
    return (x - mean) * jax.lax.rsqrt(var + EPS) * scale + offset


def jax_ops(conv: Callable[..., jax.Array]) -> Ops:
    """The JAX operations with the convolution `conv` (`jaxconv_conv` or `xla_conv`)."""
    return Ops(
        conv=conv,
        norm=jnp_batch_norm,
        relu=jax.nn.relu,
        relu6=jax.nn.relu6,
        pool=lambda x: jnp.mean(x, axis=(1, 2)),
        dense=lambda x, w, b: x @ w + b,
    )


JAX_CONVS = {"jaxconv": jaxconv_conv, "lax": xla_conv}


def jax_loss(net: Network, conv: Callable[..., jax.Array]) -> Callable:
    """loss(params, images, labels) of `net` with the convolution `conv`."""
    ops = jax_ops(conv)

    def loss(params, images, labels):
        return cross_entropy(net.apply(net.spec, params, images, ops), labels)

    return loss


def jax_train_step(net: Network, conv: Callable[..., jax.Array]) -> Callable:
    """A fresh jit-compiled Adam step: step(params, opt_state, images, labels) ->
    (params, opt_state, loss)."""
    loss_fn, optimizer = jax_loss(net, conv), optax.adam(LR)

    def step(params, opt_state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return jax.jit(step)


def jax_state(net: Network) -> list:
    """[params, opt_state] of a JAX step, from the network's NumPy parameters."""
    params = jax.tree_util.tree_map(jnp.asarray, net.params)
    # One compiled program: op by op, each leaf's zeros would compile on its own.
    return [params, jax.jit(optax.adam(LR).init)(params)]


def one_step_gradients(net: Network, conv: Callable[..., jax.Array], images, labels) -> tuple:
    """(loss, gradients) of one batch at the initial parameters (in the images' dtype)."""
    params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, images.dtype), net.params)
    return jax.jit(jax.value_and_grad(jax_loss(net, conv)))(params, images, labels)


def demo_step(impl: str, batch_size: int) -> tuple[Callable[[], Callable], tuple]:
    """(make a fresh demo train step, its arguments), for conv implementation `impl`."""
    from jaxconv.demo import model, train

    config = train.TrainConfig(batch_size=batch_size, impl=impl)
    state = train.init_state(config, 28, 10)
    mesh = train.make_mesh()
    rng = np.random.default_rng(0)
    images = rng.random((batch_size, 1, 28, 28), np.float32)
    labels = rng.integers(0, 10, batch_size).astype(np.int32)
    x, y = train.shard_batch(mesh, images, labels)

    def make() -> Callable:
        conv = model.CONV_IMPLS[impl]
        return train.make_train_step(conv, train.make_optimizer(config.lr), mesh)

    params, opt_state = train.replicate(mesh, (state.params, state.opt_state))
    return make, (params, opt_state, x, y)


# --- PyTorch. --------------------------------------------------------------------------------


def torch_ops() -> Ops:
    """The PyTorch operations: NCHW tensors (channels_last in memory), OIHW kernels."""
    import torch
    import torch.nn.functional as F

    def conv(x, w, stride, groups):
        return F.conv2d(x, w, stride=stride, padding=w.shape[2] // 2, groups=groups)

    def norm(x, scale, offset):
        return F.batch_norm(x, None, None, scale, offset, training=True, eps=EPS)

    return Ops(
        conv=conv,
        norm=norm,
        relu=torch.relu,
        relu6=F.relu6,
        pool=lambda x: x.mean(dim=(2, 3)),
        dense=lambda x, w, b: x @ w + b,
    )


def torch_params(params: Params) -> Params:
    """The NumPy parameters as PyTorch leaf tensors that require gradients; kernels OIHW,
    channels_last."""
    import torch

    def leaf(a: np.ndarray):
        if a.ndim == 4:
            t = torch.from_numpy(a.transpose(3, 2, 0, 1).copy())
            t = t.contiguous(memory_format=torch.channels_last)
        else:
            t = torch.from_numpy(a.copy())
        return t.requires_grad_(True)

    return jax.tree_util.tree_map(leaf, params)


def torch_step(net: Network, images: np.ndarray, labels: np.ndarray) -> Callable | None:
    """A closure that runs one eager PyTorch Adam step on the batch and returns its loss;
    None without PyTorch."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    ops, params = torch_ops(), torch_params(net.params)
    leaves = jax.tree_util.tree_leaves(params)
    optimizer = torch.optim.Adam(leaves, lr=LR)
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).copy())
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.from_numpy(labels.astype(np.int64))

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = F.cross_entropy(net.apply(net.spec, params, x, ops), y)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def torch_loss64(net: Network, images: np.ndarray, labels: np.ndarray) -> float | None:
    """PyTorch's float64 loss at the initial parameters, or None without PyTorch."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        return None
    params = jax.tree_util.tree_map(lambda t: t.detach().double(), torch_params(net.params))
    x = torch.from_numpy(images.transpose(0, 3, 1, 2).astype(np.float64))
    with torch.no_grad():
        logits = net.apply(net.spec, params, x, torch_ops())
        return float(F.cross_entropy(logits, torch.from_numpy(labels.astype(np.int64))))


# --- Measurement. ----------------------------------------------------------------------------


def relative_errors(got: Params, expected: Params, floor: float = 1e-3) -> list[float]:
    """max|got − expected| / max(max|expected|, floor · the largest |expected| of any leaf),
    for each pair of leaves.

    The floor: some gradients are zero but for rounding (the offset of a batch norm whose
    output only reaches the next batch norm through a convolution, which removes it); their
    float32 noise, compared with itself, would read as large relative errors.
    """
    # NumPy: in JAX, each leaf's shape would compile its own small programs.
    got = [np.asarray(a) for a in jax.tree_util.tree_leaves(got)]
    expected = [np.asarray(b) for b in jax.tree_util.tree_leaves(expected)]
    scale = floor * max(float(np.max(np.abs(b))) for b in expected)
    return [
        float(np.max(np.abs(a - b))) / max(float(np.max(np.abs(b))), scale, 1e-30)
        for a, b in zip(got, expected)
    ]


def check(net: Network, size: int, with_torch: bool = True) -> dict:
    """jaxconv's loss and gradients against XLA's, PyTorch's loss against XLA's: one batch of
    `size` images at the initial parameters, in float64 (where the sums' order leaves ~1e-15;
    in float32 these deep networks' gradients differ by ~1e-3 between any two correct
    implementations, XLA's and PyTorch's included). `with_torch=False` leaves PyTorch out
    even where it is installed (`--no-torch`).

    Returns:
      {"loss": {impl: float64 loss}, "loss_rel_err": {impl: against lax}, "grad_rel_err":
      the largest of `relative_errors(jaxconv's, lax's)`, "ok": {impl: within CHECK_RTOL}}.
    """
    images, labels = batch(size, 32, seed=1)
    with jax.enable_x64(True):
        x, y = jnp.asarray(images, jnp.float64), jnp.asarray(labels)
        ours, grads = one_step_gradients(net, jaxconv_conv, x, y)
        ref, ref_grads = one_step_gradients(net, xla_conv, x, y)
        grad_err = max(relative_errors(grads, ref_grads))
        losses = {"jaxconv": float(ours), "lax": float(ref)}
    torch_loss = torch_loss64(net, images, labels) if with_torch else None
    if torch_loss is not None:
        losses["torch"] = torch_loss
    loss_err = {k: abs(v - losses["lax"]) / abs(losses["lax"]) for k, v in losses.items()}
    ok = {k: e <= CHECK_RTOL for k, e in loss_err.items()}
    ok["jaxconv"] = ok["jaxconv"] and grad_err <= CHECK_RTOL
    return {"loss": losses, "loss_rel_err": loss_err, "grad_rel_err": grad_err, "ok": ok}


def time_steps(runners: dict[str, Callable], steps: int, warm: int) -> dict[str, list[float]]:
    """Seconds of `steps` timed runs of each runner, round-robin, each after `warm` untimed
    runs of the same runner (two warm-up runs each first)."""
    for run in runners.values():
        for _ in range(2):
            run()
    times: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(steps):
        for name, run in runners.items():
            for _ in range(warm):
                run()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return times


def jax_runner(net: Network, compiled: Callable, images, labels) -> Callable:
    """A closure running the compiled step of `net` once, carrying its state; returns the
    step's loss."""
    state = jax_state(net)
    x, y = jnp.asarray(images), jnp.asarray(labels)

    def run() -> float:
        state[0], state[1], loss = compiled(state[0], state[1], x, y)
        return float(loss)

    return run


def summary(seconds: list[float]) -> dict:
    """Median, min and max of a list of seconds."""
    return {"median": statistics.median(seconds), "min": min(seconds), "max": max(seconds)}


def first_losses(runners: dict[str, Callable]) -> dict:
    """Each runner's first step, whose loss is at the initial parameters: {"loss": {impl:
    loss}, "rel_err": {impl: relative difference from lax's}, "ok": {impl: within
    FIRST_LOSS_RTOL}}."""
    losses = {impl: run() for impl, run in runners.items()}
    ref = losses.get("lax", next(iter(losses.values())))
    rel_err = {k: abs(v - ref) / abs(ref) for k, v in losses.items()}
    ok = {k: e <= FIRST_LOSS_RTOL for k, e in rel_err.items()}
    for impl in (k for k, good in ok.items() if not good):
        print(f"  {impl}: first-step loss {losses[impl]} differs from {ref}", flush=True)
    return {"loss": losses, "rel_err": rel_err, "ok": ok}


def measure_network(net: Network, args: argparse.Namespace) -> dict:
    """The check, then compile times and memory, then steps/s, of one network."""
    checked = check(net, args.check_batch_size, with_torch="torch" in args.impls)
    for impl, good in checked["ok"].items():
        if not good:
            print(f"  {net.name} {impl}: WRONG ({checked}); not timed", flush=True)
    images, labels = batch(args.batch_size, 32)
    step_args = (*jax_state(net), jnp.asarray(images), jnp.asarray(labels))
    compiles, runners = {}, {}
    for impl, conv in JAX_CONVS.items():
        make = functools.partial(jax_train_step, net, conv)
        compiles[impl], compiled = compile_stats(make, step_args, args.compiles)
        compiles[impl].update(program_costs(compiled.as_text()))
        if impl in args.impls and checked["ok"][impl]:
            runners[impl] = jax_runner(net, compiled, images, labels)
    if "torch" in args.impls and checked["ok"].get("torch"):
        t_step = torch_step(net, images, labels)
        if t_step is not None:
            runners["torch"] = t_step
    first = first_losses(runners)
    times = time_steps(runners, args.steps, args.warm)
    return {
        "check": checked,
        "first_step": first,
        "steps": {impl: summary(ts) for impl, ts in times.items()},
        "compile": compiles,
    }


def program_costs(hlo: str) -> dict[str, dict]:
    """{"forms": instructions and fusions by jaxconv pass and form, "layers": by layer kind}
    of a compiled step's optimised HLO (`hlo_stats.scope_costs`)."""
    return {
        "forms": hlo_stats.scope_costs(hlo, hlo_stats.FORM_SCOPE),
        "layers": hlo_stats.scope_costs(hlo, LAYER_SCOPE),
    }


def measure_demo(args: argparse.Namespace) -> dict:
    """Compile time and memory of the demo's train step, jaxconv and lax."""
    from jaxconv.demo import train

    out = {}
    with jax.set_mesh(train.make_mesh()):  # as the demo traces and runs its step
        for impl in JAX_CONVS:
            make, step_args = demo_step(impl, args.demo_batch_size)
            out[impl], compiled = compile_stats(make, step_args, args.compiles)
            out[impl].update(program_costs(compiled.as_text()))
    return out


def targets(result: dict) -> list[dict]:
    """The issue's network targets, each with its measured value and whether it is met."""
    out = []

    def add(target: str, value: float, met: bool) -> None:
        out.append({"target": target, "value": value, "met": met})

    for name, r in result["networks"].items():
        steps = r["steps"]
        if "jaxconv" in steps:
            for ref in ("lax", "torch"):
                if ref in steps:
                    ratio = steps[ref]["median"] / steps["jaxconv"]["median"]
                    add(f"{name} steps/s ≥ 1.0× {ref}", ratio, ratio >= 1.0)
        ours, xla = r["compile"]["jaxconv"], r["compile"]["lax"]
        ratio = statistics.median(ours["total_s"]) / statistics.median(xla["total_s"])
        add(f"{name} compile time ≤ 1.5× lax", ratio, ratio <= 1.5)
        ratio = ours["temp_bytes"] / max(1, xla["temp_bytes"])
        add(f"{name} temporary memory ≤ 1.0× lax", ratio, ratio <= 1.0)
    if "demo" in result:
        ours, xla = result["demo"]["jaxconv"], result["demo"]["lax"]
        ratio = statistics.median(ours["total_s"]) / statistics.median(xla["total_s"])
        add("demo step compile time ≤ 1.5× lax", ratio, ratio <= 1.5)
        ratio = ours["temp_bytes"] / max(1, xla["temp_bytes"])
        add("demo step temporary memory ≤ 1.0× lax", ratio, ratio <= 1.0)
    return out


def print_network(name: str, r: dict, batch_size: int) -> None:
    """The network's table: steps/s (median, min–max) and ratios; compile times; memory."""
    steps = r["steps"]
    print(f"\n{name}, batch {batch_size}")
    for impl, s in steps.items():
        ratios = ""
        if impl == "jaxconv":
            for ref in [k for k in steps if k != "jaxconv"]:
                ratios += f"  steps/s ×{ref} {steps[ref]['median'] / s['median']:5.2f}"
        print(
            f"  {impl:8s} {1 / s['median']:7.3f} steps/s [{1 / s['max']:6.3f}–{1 / s['min']:6.3f}]"
            f"  {1e3 * s['median']:8.1f} ms/step" + ratios,
            flush=True,
        )
    print_compile(r["compile"])
    print_costs(r["compile"])


def print_costs(compiles: dict) -> None:
    """HLO instructions and fusions of each step by layer kind (jaxconv and XLA side by side)
    and, for jaxconv, by pass and form."""
    if not all("layers" in c for c in compiles.values()):
        return
    impls = list(compiles)
    layers = list(compiles[impls[0]]["layers"])
    if layers != [hlo_stats.OUTSIDE]:  # the demo's model has no layer scopes
        print("  HLO instructions / fusions by layer kind: " + " | ".join(impls))
    for layer in layers if layers != [hlo_stats.OUTSIDE] else []:
        cells = [compiles[i]["layers"].get(layer, {"instructions": 0, "fusions": 0}) for i in impls]
        text = " | ".join(f"{c['instructions']:6d} / {c['fusions']:4d}" for c in cells)
        print(f"    {layer:34s} {text}")
    if "jaxconv" in compiles:
        print("  jaxconv HLO instructions / fusions by pass and form:")
        for form, c in compiles["jaxconv"]["forms"].items():
            print(f"    {form:34s} {c['instructions']:6d} / {c['fusions']:4d}")


def print_compile(compiles: dict) -> None:
    """Median trace / lower / compile / total seconds, temporary memory and HLO ops."""
    for impl, c in compiles.items():
        med = {k: statistics.median(c[k]) for k in ("trace_s", "lower_s", "compile_s", "total_s")}
        print(
            f"  {impl:8s} compile {med['total_s']:6.2f} s [{min(c['total_s']):5.2f}–"
            f"{max(c['total_s']):5.2f}] (trace {med['trace_s']:.2f}, lower {med['lower_s']:.2f},"
            f" XLA {med['compile_s']:.2f})  temp {c['temp_bytes'] / 2**20:8.1f} MiB"
            f"  {c['hlo_ops']:6d} HLO ops, {c['fusions']:5d} fusions",
            flush=True,
        )


def print_targets(found: list[dict]) -> None:
    print("\nTargets:")
    for t in found:
        print(f"  {'MET    ' if t['met'] else 'NOT MET'}  {t['target']}: {t['value']:.2f}")


def run(args: argparse.Namespace) -> dict:
    """Runs the benchmark; returns {"meta", "networks", "demo", "targets"}."""
    result: dict = {"networks": {}}
    for name in args.networks:
        net = build_network(name, args.quick)
        result["networks"][name] = measure_network(net, args)
        print_network(name, result["networks"][name], args.batch_size)
    if not args.no_demo:
        result["demo"] = measure_demo(args)
        print(f"\ndemo train step, batch {args.demo_batch_size}")
        print_compile(result["demo"])
        print_costs(result["demo"])
    result["meta"] = run_meta(args, ceiling=0.0)
    del result["meta"]["gemm_ceiling_gflops"]  # no GEMM ceiling measured here
    result["meta"].update(batch_size=args.batch_size, steps=args.steps, compiles=args.compiles)
    result["targets"] = targets(result)
    print_targets(result["targets"])
    return result


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--networks", default=",".join(NETWORKS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=7, help="timed steps per implementation")
    parser.add_argument(
        "--warm", type=int, default=1, help="untimed steps before each timed one (module doc)"
    )
    parser.add_argument("--compiles", type=int, default=3, help="fresh compiles per step")
    parser.add_argument(
        "--check-batch-size", type=int, default=16, help="images of the float64 check"
    )
    parser.add_argument("--demo-batch-size", type=int, default=128)
    parser.add_argument("--no-demo", action="store_true", help="skip the demo step's compile")
    parser.add_argument("--impls", default=",".join(IMPLS), help="implementations to time")
    parser.add_argument("--no-torch", action="store_true", help="skip PyTorch even if present")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: narrow networks, batch 8, 2 steps, 1 compile, demo batch 8, check 4",
    )
    parser.add_argument("--json", help="also write the results to this file")
    args = parser.parse_args(argv)
    args.networks = args.networks.split(",")
    args.impls = [
        i for i in args.impls.split(",") if i in IMPLS and not (args.no_torch and i == "torch")
    ]
    if args.quick:
        args.batch_size, args.steps, args.compiles, args.demo_batch_size = 8, 2, 1, 8
        args.warm, args.check_batch_size = 0, 4
    args.repeats = args.steps  # for run_meta
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = run(args)
    write_json(result, args.json)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
