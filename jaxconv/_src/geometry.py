"""Geometry of a 2-D convolution: argument validation, padding, output shape.

This is the one place where a call's operands and configuration are checked and resolved,
for `conv2d`, its gradients, `conv_transpose2d` and the naive reference. Every other module
receives a `ConvGeometry` and never recomputes padding or output sizes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Literal, TypeGuard

import jax
import jax.numpy as jnp
import numpy as np

Layout = Literal["NCHW", "NHWC"]
IntOrPair = int | Sequence[int]
PaddingLike = str | int | Sequence[int] | Sequence[Sequence[int]]
Pads = tuple[tuple[int, int], tuple[int, int]]

LAYOUTS = ("NCHW", "NHWC")
PADDING_STRINGS = ("VALID", "SAME", "SAME_LOWER")


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """A fully resolved convolution: every size the forward and backward rules need.

    Sizes are per spatial axis, ordered (height, width). Hashable, so it can be a static
    argument of `jax.jit` and a non-differentiable argument of `jax.custom_vjp`.

    Attributes:
      layout: "NCHW" (kernel OIHW) or "NHWC" (kernel HWIO), as given by the caller.
      input_rank: rank of the caller's `x`: 2 (H, W), 3 (one image) or 4 (a batch).
      batch: N, the images in the batch (1 for an unbatched input).
      in_channels: C.
      out_channels: O.
      groups: G; the kernel has C // G input channels.
      in_hw: (H, W) of the input.
      kernel_hw: (kh, kw).
      stride: (sh, sw).
      dilation: (dh, dw), the kernel dilation.
      padding: ((lo_h, hi_h), (lo_w, hi_w)); negative values crop.
      out_hw: (Ho, Wo).
      input_dilation: (lh, lw), the input's dilation (l − 1 zeros between its entries, as
        `lax.conv_general_dilated`'s `lhs_dilation`); (1, 1) for `conv2d`.
    """

    layout: Layout
    input_rank: int
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_hw: tuple[int, int]
    kernel_hw: tuple[int, int]
    stride: tuple[int, int]
    dilation: tuple[int, int]
    padding: Pads
    out_hw: tuple[int, int]
    input_dilation: tuple[int, int] = (1, 1)

    @property
    def dilated_kernel_hw(self) -> tuple[int, int]:
        """Extent of the kernel once its taps sit `dilation` apart: d·(k-1)+1."""
        return per_axis(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_hw))

    @property
    def dilated_in_hw(self) -> tuple[int, int]:
        """(H, W) of the input after its dilation: (n − 1)·l + 1, or 0 for an empty axis."""
        return per_axis(_dilated(n, d) for n, d in zip(self.in_hw, self.input_dilation))

    @property
    def padded_hw(self) -> tuple[int, int]:
        """(H, W) after dilating and padding (or cropping) the input."""
        return per_axis(n + lo + hi for n, (lo, hi) in zip(self.dilated_in_hw, self.padding))

    @property
    def window_extent_hw(self) -> tuple[int, int]:
        """Rows and columns one tap's strided window spans in the padded input: (Ho−1)·s+1."""
        return per_axis((n - 1) * s + 1 for n, s in zip(self.out_hw, self.stride))

    @property
    def is_empty(self) -> bool:
        """Whether every sum of the rules is empty: no output (N, O, Ho or Wo is 0) or no
        term per output (C/G = 0). Then Z is the bias alone and ∂L/∂X, ∂L/∂W are zeros."""
        return 0 in (self.batch, self.out_channels, *self.out_hw, self.in_channels)

    def per_device(self, batch_shards: int = 1, out_channel_shards: int = 1) -> ConvGeometry:
        """The convolution one device computes when the batch is split into `batch_shards`
        equal parts and the output channels (of a one-group kernel) into
        `out_channel_shards`."""
        return dataclasses.replace(
            self,
            batch=self.batch // batch_shards,
            out_channels=self.out_channels // out_channel_shards,
        )

    @property
    def flops(self) -> int:
        """Multiply-adds ×2 of the forward pass for one image: 2·O·Ho·Wo·(C/G)·kh·kw."""
        c_per_group = self.in_channels // self.groups
        return (
            2 * self.out_channels * math.prod(self.out_hw) * c_per_group * math.prod(self.kernel_hw)
        )

    def output_shape(self, batch_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of Z in the caller's layout and rank, for the given leading batch dims."""
        if self.input_rank == 2:
            return self.out_hw
        if self.layout == "NCHW":
            return (*batch_shape, self.out_channels, *self.out_hw)
        return (*batch_shape, *self.out_hw, self.out_channels)


def per_axis(values: Iterable[int]) -> tuple[int, int]:
    """Two per-axis values, (height, width), as a pair."""
    h, w = values
    return (h, w)


def per_axis_pads(values: Iterable[tuple[int, int]]) -> Pads:
    """Two per-axis (lo, hi) pairs as `Pads`."""
    h, w = values
    return (h, w)


def _dilated(n: int, dilation: int) -> int:
    return (n - 1) * dilation + 1 if n else 0


def is_int(value: object) -> TypeGuard[int | np.integer]:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def normalize_pair(op: str, name: str, value: IntOrPair, *, minimum: int | None) -> tuple[int, int]:
    """An int or a pair of ints as a pair, each checked to be ≥ `minimum` (if given).

    Raises:
      TypeError: `value` is not an int or a pair of ints.
      ValueError: an entry is below `minimum`.
    """
    if is_int(value):
        pair = (int(value), int(value))
    elif (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(is_int(v) for v in value)
    ):
        pair = per_axis(int(v) for v in value)
    else:
        raise TypeError(f"{op}: `{name}` must be an int or a pair of ints, got {value!r}.")
    if minimum is not None and min(pair) < minimum:
        raise ValueError(f"{op}: `{name}` must be >= {minimum}, got {value!r}.")
    return pair


def spatial_pair(op: str, name: str, value, default: int | None = None) -> tuple[int, int]:
    """A per-spatial-dimension argument as `jax.lax` takes it, two ints >= 1 in a sequence
    (None: `default` on both, where there is one)."""
    if value is None and default is not None:
        return (default, default)
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != 2:
        raise TypeError(
            f"{op}: `{name}` must be a sequence of two ints (one per spatial dimension), "
            f"got {value!r}."
        )
    return normalize_pair(op, name, tuple(value), minimum=1)


def resolve_padding(
    op: str,
    padding: PaddingLike,
    in_hw: tuple[int, int],
    dilated_kernel_hw: tuple[int, int],
    stride: tuple[int, int],
) -> Pads:
    """Turns any accepted `padding` into explicit ((lo_h, hi_h), (lo_w, hi_w)).

    "SAME" and "SAME_LOWER" follow `jax.lax`: out = ceil(in / stride), total padding
    max((out − 1)·stride + dilated_kernel − in, 0), the odd unit going to the high side
    for "SAME" and to the low side for "SAME_LOWER".

    Raises:
      ValueError: unknown padding string.
      TypeError: a padding that is none of: str, int, pair of ints, pair of (lo, hi) pairs.
    """
    if isinstance(padding, str):
        mode = normalize_string(op, "padding", padding, PADDING_STRINGS)
        if mode == "VALID":
            return ((0, 0), (0, 0))
        if mode in ("SAME", "SAME_LOWER"):
            pads = []
            for n, k_dil, s in zip(in_hw, dilated_kernel_hw, stride):
                total = max((-(-n // s) - 1) * s + k_dil - n, 0)
                small, large = total // 2, total - total // 2
                pads.append((small, large) if mode == "SAME" else (large, small))
            return per_axis_pads(pads)
    if is_int(padding):
        return ((int(padding), int(padding)), (int(padding), int(padding)))
    if isinstance(padding, Sequence) and len(padding) == 2:
        if all(is_int(p) for p in padding):
            return per_axis_pads((int(p), int(p)) for p in padding if is_int(p))
        pairs = [
            p
            for p in padding
            if isinstance(p, Sequence)
            and not isinstance(p, str)
            and len(p) == 2
            and all(is_int(v) for v in p)
        ]
        if len(pairs) == 2:
            return per_axis_pads((int(lo), int(hi)) for lo, hi in pairs)
    raise TypeError(
        f"{op}: malformed `padding` {padding!r}; expected one of {PADDING_STRINGS}, an int, "
        "a pair of ints or ((lo_h, hi_h), (lo_w, hi_w))."
    )


def check_floating(op: str, name: str, dtype) -> None:
    """Raises TypeError unless `dtype` is a real floating dtype."""
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{op}: `{name}` must have a real floating dtype, got {np.dtype(dtype)}.")


def normalize_string(op: str, name: str, value, choices: tuple[str, ...]) -> str:
    """`value` as the one of `choices` it names. Every string argument of jaxconv follows
    this one rule: any letter case is accepted ("nchw", "Same", "REFLECT").

    Raises:
      TypeError: `value` is not a string.
      ValueError: it names none of `choices`.
    """
    if not isinstance(value, str):
        raise TypeError(f"{op}: `{name}` must be a string, one of {choices}; got {value!r}.")
    for choice in choices:
        if value.lower() == choice.lower():
            return choice
    raise ValueError(f"{op}: `{name}` must be one of {choices} (any case), got {value!r}.")


def normalize_layout(op: str, layout) -> Layout:
    """`layout` as "NCHW" or "NHWC"; raises naming it otherwise."""
    return normalize_string(op, "layout", layout, LAYOUTS)  # type: ignore[return-value]


def check_shape(op: str, name: str, shape) -> tuple[int, ...]:
    """A shape argument (`x_shape`, `w_shape`) as a tuple of ints >= 0.

    Raises:
      TypeError: not a sequence of ints (bools, floats and None are not sizes).
      ValueError: a negative size.
    """
    if isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence):
        raise TypeError(f"{op}: `{name}` must be a tuple of ints, got {shape!r}.")
    if not all(is_int(n) for n in shape):
        raise TypeError(f"{op}: `{name}` must be a tuple of ints, got {tuple(shape)!r}.")
    if any(n < 0 for n in shape):
        raise ValueError(f"{op}: `{name}` must have sizes >= 0, got {tuple(shape)}.")
    return tuple(int(n) for n in shape)


def as_array(op: str, name: str, value) -> jax.Array:
    """An array argument as a JAX array, or a TypeError that names it.

    Strings, None, dicts, sets and ragged nestings are not arrays; `jnp.asarray` would say so
    without naming the argument.
    """
    if isinstance(value, (str, bytes, dict, set, frozenset)) or value is None:
        raise TypeError(f"{op}: `{name}` must be an array, got {type(value).__name__} {value!r}.")
    try:
        return jnp.asarray(value)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{op}: `{name}` is not an array ({error}).") from None


def _promote_shapes(
    op: str, x_name: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], layout: Layout
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(x_shape, w_shape) as batched 4-D shapes in `layout`."""
    if len(x_shape) not in (2, 3, 4):
        raise ValueError(
            f"{op}: `{x_name}` must be 2-D (H, W), 3-D (one image) or 4-D (a batch), "
            f"got shape {x_shape}."
        )
    expected_w_ndim = 2 if len(x_shape) == 2 else 4
    if len(w_shape) != expected_w_ndim:
        w_form = (
            "(kh, kw)"
            if expected_w_ndim == 2
            else ("(O, C//groups, kh, kw)" if layout == "NCHW" else "(kh, kw, C//groups, O)")
        )
        raise ValueError(
            f"{op}: `{x_name}` of shape {x_shape} is {len(x_shape)}-D, so `w` must be "
            f"{expected_w_ndim}-D {w_form}; got `w` of shape {w_shape}."
        )
    if len(x_shape) == 2:
        # The seed's case: one image, one channel, one kernel.
        x4 = (1, 1, *x_shape) if layout == "NCHW" else (1, *x_shape, 1)
        w4 = (1, 1, *w_shape) if layout == "NCHW" else (*w_shape, 1, 1)
        return x4, w4
    return (x_shape if len(x_shape) == 4 else (1, *x_shape)), tuple(w_shape)


def conv_geometry(
    op: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    stride: IntOrPair,
    padding: PaddingLike,
    dilation: IntOrPair,
    groups: int,
    layout: Layout,
    x_name: str = "x",
    input_dilation: IntOrPair = 1,
) -> ConvGeometry:
    """Validates a convolution's shapes and configuration and resolves its geometry.

    Args:
      op: name of the public function, used to start every error message.
      x_shape: shape of the input in `layout`: (H, W), 3-D or 4-D.
      w_shape: shape of the kernel: (kh, kw) with 2-D x, else OIHW (NCHW) or HWIO (NHWC).
      stride, padding, dilation, groups, layout: as in `jaxconv.conv2d`.
      x_name: what to call the input in messages.
      input_dilation: the input's dilation (`lax.conv_general_dilated`'s `lhs_dilation`),
        an int or a pair; with one above 1, `padding` must be explicit (as in lax).

    Returns:
      The resolved `ConvGeometry`.

    Raises:
      ValueError, TypeError: with the offending argument named and its value or shape shown.
    """
    layout = normalize_layout(op, layout)
    x_shape, w_shape = check_shape(op, x_name, x_shape), check_shape(op, "w_shape", w_shape)
    x4, w4 = _promote_shapes(op, x_name, x_shape, w_shape, layout)
    stride2 = normalize_pair(op, "stride", stride, minimum=1)
    dilation2 = normalize_pair(op, "dilation", dilation, minimum=1)
    input_dilation2 = normalize_pair(op, "lhs_dilation", input_dilation, minimum=1)
    groups = check_groups(op, groups)

    if layout == "NCHW":
        _, c, h, w = x4
        o, c_per_group, kh, kw = w4
        w_form = "(O, C//groups, kh, kw)"
    else:
        _, h, w, c = x4
        kh, kw, c_per_group, o = w4
        w_form = "(kh, kw, C//groups, O)"
    if min(kh, kw) < 1:
        raise ValueError(
            f"{op}: the kernel's spatial sizes must be >= 1; got `w` of shape "
            f"{tuple(w_shape)} {w_form}."
        )
    if c % groups:
        raise ValueError(
            f"{op}: `groups` (={groups}) must divide the input channels C (={c}) "
            f"of `{x_name}` with shape {tuple(x_shape)}."
        )
    if o % groups:
        raise ValueError(
            f"{op}: `groups` (={groups}) must divide the output channels O (={o}) "
            f"of `w` with shape {tuple(w_shape)} {w_form}."
        )
    if c_per_group * groups != c:
        raise ValueError(
            f"{op}: channel mismatch: `{x_name}` of shape {tuple(x_shape)} ({layout}) has "
            f"C={c} channels, but `w` of shape {tuple(w_shape)} {w_form} expects "
            f"C//groups × groups = {c_per_group} × {groups} = {c_per_group * groups}."
        )

    dilated = (dilation2[0] * (kh - 1) + 1, dilation2[1] * (kw - 1) + 1)
    if isinstance(padding, str) and input_dilation2 != (1, 1):
        raise ValueError(
            f"{op}: `padding` {padding!r} is a string, but with `lhs_dilation` "
            f"{input_dilation2} it must be explicit ((lo, hi) pairs), as in jax.lax."
        )
    pads = resolve_padding(op, padding, (h, w), dilated, stride2)
    in_hw = (_dilated(h, input_dilation2[0]), _dilated(w, input_dilation2[1]))
    out_hw = []
    for axis, n, (lo, hi), k_dil, s in zip(("height", "width"), in_hw, pads, dilated, stride2):
        padded = n + lo + hi
        if padded < 0:
            raise ValueError(
                f"{op}: `padding` {pads} crops more than the input: the padded input {axis} "
                f"would be {padded} (= {n} + {lo} + {hi})."
            )
        # As in XLA, a padded input smaller than the dilated kernel has no output rows.
        out_hw.append(max(0, (padded - k_dil) // s + 1))

    return ConvGeometry(
        layout=layout,
        input_rank=len(x_shape),
        batch=x4[0],
        in_channels=c,
        out_channels=o,
        groups=groups,
        in_hw=(h, w),
        kernel_hw=(kh, kw),
        stride=stride2,
        dilation=dilation2,
        padding=pads,
        out_hw=per_axis(out_hw),
        input_dilation=input_dilation2,
    )


def conv2d_geometry(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    stride: IntOrPair = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrPair = 1,
    groups: int = 1,
    layout: Layout = "NCHW",
) -> ConvGeometry:
    """The resolved geometry of `conv2d(x, w, ...)` for operands of these shapes, as
    `jaxconv.choose` and `jaxconv.supported` take it.

    Args:
      x_shape, w_shape: the shapes of `conv2d`'s x and w.
      stride, padding, dilation, groups, layout: as in `conv2d`.

    Returns:
      The `ConvGeometry`.

    Raises:
      ValueError, TypeError: as `conv2d` would, naming the argument.

    Examples:
      >>> import jaxconv
      >>> geom = jaxconv.conv2d_geometry((8, 3, 32, 32), (16, 3, 3, 3), stride=2, padding="SAME")
      >>> geom.out_hw, geom.padding
      ((16, 16), ((0, 1), (0, 1)))
    """
    return conv_geometry(
        "conv2d_geometry",
        tuple(x_shape),
        tuple(w_shape),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )


def conv_transpose_geometry(
    op: str,
    in_hw: tuple[int, int],
    kernel_hw: tuple[int, int],
    *,
    stride: tuple[int, int],
    padding: tuple[int, int],
    output_padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[tuple[int, int], Pads]:
    """Output size of a transposed convolution and the padding of the conv it is the ∂L/∂X of.

    H_out = (H − 1)·s − 2p + d·(k − 1) + output_padding + 1 (PyTorch). A `conv2d` of an
    H_out-row input with padding (p, p − output_padding) has exactly H output rows (its
    padded input, (H − 1)·s + d·(k − 1) + 1 rows, ends where its last window does), so the
    transposed conv is that conv's ∂L/∂X. Rows past the last window, present only when
    output_padding > p, are cropped by that conv and so come out zero.

    Args:
      op: name of the public function, for messages.
      in_hw, kernel_hw, stride, padding, output_padding, dilation: normalised pairs, padding
        and output_padding already checked to be >= 0.

    Returns:
      ((H_out, W_out), ((p_h, p_h − op_h), (p_w, p_w − op_w))).

    Raises:
      ValueError: output_padding not smaller than max(stride, dilation), or an empty output.
    """
    out_hw = []
    for axis, n, k, s, p, extra, d in zip(
        ("height", "width"), in_hw, kernel_hw, stride, padding, output_padding, dilation
    ):
        if extra >= max(s, d):
            raise ValueError(
                f"{op}: `output_padding` {output_padding} must be smaller than max(`stride`, "
                f"`dilation`) on each axis; {axis}: output_padding {extra}, stride {s}, "
                f"dilation {d}."
            )
        size = (n - 1) * s - 2 * p + d * (k - 1) + extra + 1
        if size < 0:  # 0 is an empty output, as a conv's can be
            raise ValueError(
                f"{op}: `padding` {padding} crops more than the output has: {axis} "
                f"(H−1)·stride − 2·padding + dilation·(k−1) + output_padding + 1 = "
                f"({n}−1)·{s} − 2·{p} + {d}·({k}−1) + {extra} + 1 = {size}."
            )
        out_hw.append(size)
    pads = per_axis_pads((p, p - extra) for p, extra in zip(padding, output_padding))
    return per_axis(out_hw), pads


def check_bias(op: str, b, geom: ConvGeometry) -> None:
    """Raises unless `b` is None or a floating array of shape (O,)."""
    if b is None:
        return
    check_floating(op, "b", b.dtype)
    if tuple(b.shape) != (geom.out_channels,):
        raise ValueError(
            f"{op}: `b` must have shape (O,) = ({geom.out_channels},), got {tuple(b.shape)}."
        )


def check_cotangent(op: str, g_shape: tuple[int, ...], geom: ConvGeometry, forward: str) -> None:
    """Raises unless ∂L/∂Z has the shape of the forward output for this geometry, batch
    included; `forward` names the forward's operands in the message."""
    g_shape = tuple(g_shape)
    expected = geom.output_shape((geom.batch,) if geom.input_rank == 4 else ())
    if g_shape != expected:
        raise ValueError(
            f"{op}: `g` must have the shape {expected} of the output of the conv of {forward}, "
            f"got {g_shape}."
        )


def check_operands(op: str, a_name: str, a, b_name: str, b) -> None:
    """Raises TypeError unless `a` and `b` have the same real floating dtype."""
    check_floating(op, a_name, a.dtype)
    check_floating(op, b_name, b.dtype)
    if a.dtype != b.dtype:
        raise TypeError(
            f"{op}: `{a_name}` and `{b_name}` must have the same dtype, "
            f"got {a.dtype} and {b.dtype}."
        )


def check_groups(op: str, groups) -> int:
    """`groups` as an int >= 1; raises TypeError or ValueError naming it."""
    if not is_int(groups):
        raise TypeError(f"{op}: `groups` must be an int, got {groups!r}.")
    if groups < 1:
        raise ValueError(f"{op}: `groups` must be >= 1, got {groups}.")
    return int(groups)


def resolve_conv2d(
    op: str,
    x,
    w,
    b,
    *,
    stride: IntOrPair,
    padding: PaddingLike,
    dilation: IntOrPair,
    groups: int,
    layout: Layout,
) -> ConvGeometry:
    """Validates the operands and configuration of a `conv2d` call; returns its geometry.

    Args:
      op: name of the public function, used to start every error message.
      x, w, b: the input, kernel and optional bias (arrays).
      stride, padding, dilation, groups, layout: as in `jaxconv.conv2d`.

    Raises:
      ValueError, TypeError: with the offending argument named and its value or shape shown.
    """
    check_operands(op, "x", x, "w", w)
    geom = conv_geometry(
        op,
        x.shape,
        w.shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )
    check_bias(op, b, geom)
    return geom


def resolve_conv_transpose2d(
    op: str,
    x,
    w,
    b,
    *,
    stride: IntOrPair,
    padding: IntOrPair,
    output_padding: IntOrPair,
    dilation: IntOrPair,
    groups: int,
    layout: Layout,
    padding_mode: str,
) -> ConvGeometry:
    """Validates a `conv_transpose2d` call; returns the geometry of the conv it is the ∂L/∂X
    of (its input: the transposed conv's output; its output: `x`).

    Raises:
      ValueError, TypeError: naming the argument and showing its value or the shapes.
    """
    layout = normalize_layout(op, layout)
    if not isinstance(padding_mode, str) or padding_mode.lower() != "zeros":
        raise ValueError(
            f"{op}: only `padding_mode`='zeros' is supported for a transposed convolution "
            f"(as in PyTorch), got {padding_mode!r}."
        )
    check_operands(op, "x", x, "w", w)
    if x.ndim not in (2, 3, 4):
        raise ValueError(
            f"{op}: `x` must be 2-D (H, W), 3-D (one image) or 4-D (a batch), "
            f"got shape {tuple(x.shape)}."
        )
    w_forms = {"NCHW": "(C_in, C_out//groups, kh, kw)", "NHWC": "(kh, kw, C_out//groups, C_in)"}
    w_form = "(kh, kw)" if x.ndim == 2 else w_forms[layout]
    w_ndim = 2 if x.ndim == 2 else 4
    if w.ndim != w_ndim:
        raise ValueError(
            f"{op}: `x` of shape {tuple(x.shape)} is {x.ndim}-D, so `w` must be {w_ndim}-D "
            f"{w_form}; got `w` of shape {tuple(w.shape)}."
        )
    stride2 = normalize_pair(op, "stride", stride, minimum=1)
    dilation2 = normalize_pair(op, "dilation", dilation, minimum=1)
    padding2 = normalize_pair(op, "padding", padding, minimum=0)
    output_padding2 = normalize_pair(op, "output_padding", output_padding, minimum=0)
    groups = check_groups(op, groups)

    batch = x.shape[:1] if x.ndim == 4 else ()
    if x.ndim == 2:
        (h, wd), (kh, kw), c_in, c_in_w, c_out_per_group = x.shape, w.shape, 1, 1, 1
    elif layout == "NCHW":
        (c_in, h, wd), (c_in_w, c_out_per_group, kh, kw) = x.shape[-3:], w.shape
    else:
        (h, wd, c_in), (kh, kw, c_out_per_group, c_in_w) = x.shape[-3:], w.shape
    if min(kh, kw) < 1:
        raise ValueError(
            f"{op}: the kernel's spatial sizes must be >= 1; got `w` of shape "
            f"{tuple(w.shape)} {w_form}."
        )
    if c_in % groups:
        raise ValueError(
            f"{op}: `groups` (={groups}) must divide the input channels C_in (={c_in}) "
            f"of `x` with shape {tuple(x.shape)}."
        )
    if c_in_w != c_in:
        raise ValueError(
            f"{op}: channel mismatch: `x` of shape {tuple(x.shape)} ({layout}) has "
            f"C_in={c_in} channels, but `w` of shape {tuple(w.shape)} {w_form} has "
            f"C_in={c_in_w}."
        )
    c_out = c_out_per_group * groups
    if b is not None:
        check_floating(op, "b", b.dtype)
        if tuple(b.shape) != (c_out,):
            raise ValueError(
                f"{op}: `b` must have shape (C_out,) = ({c_out},) (C_out//groups × groups = "
                f"{c_out_per_group} × {groups}), got {tuple(b.shape)}."
            )

    out_hw, conv_padding = conv_transpose_geometry(
        op,
        (h, wd),
        (kh, kw),
        stride=stride2,
        padding=padding2,
        output_padding=output_padding2,
        dilation=dilation2,
    )
    if x.ndim == 2:
        out_shape = out_hw
    elif layout == "NCHW":
        out_shape = (*batch, c_out, *out_hw)
    else:
        out_shape = (*batch, *out_hw, c_out)
    return conv_geometry(
        op,
        out_shape,
        w.shape,
        stride=stride2,
        padding=conv_padding,
        dilation=dilation2,
        groups=groups,
        layout=layout,
        x_name="output",
    )


__all__ = [
    "ConvGeometry",
    "as_array",
    "check_bias",
    "check_cotangent",
    "check_floating",
    "check_groups",
    "check_operands",
    "check_shape",
    "conv2d_geometry",
    "conv_geometry",
    "conv_transpose_geometry",
    "is_int",
    "normalize_layout",
    "normalize_pair",
    "normalize_string",
    "resolve_conv2d",
    "resolve_conv_transpose2d",
    "resolve_padding",
    "spatial_pair",
]
