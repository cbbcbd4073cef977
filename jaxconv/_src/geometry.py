"""Geometry of a convolution of any supported rank: argument validation, padding, output shape.

This is the one place where a call's operands and configuration are checked and resolved,
for `conv1d`, `conv2d`, `conv3d`, `conv`, their gradients, the transposed convolutions and the
naive reference. Every other module receives a `ConvGeometry` and never recomputes padding or
output sizes. Sizes are per spatial axis, in the order of the layout's letters: (W,) in 1-D,
(H, W) in 2-D, (D, H, W) in 3-D.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import TypeGuard

import jax
import jax.numpy as jnp
import numpy as np

Layout = str  # one of LAYOUTS[rank]: "NCW", "NWC", "NCHW", "NHWC", "NCDHW" or "NDHWC"
IntOrPair = int | Sequence[int]
IntOrTuple = int | Sequence[int]
PaddingLike = str | int | Sequence[int] | Sequence[Sequence[int]]
Pads = tuple[tuple[int, int], ...]

SPATIAL_RANKS = (1, 2, 3)
SPATIAL_LETTERS = {1: "W", 2: "HW", 3: "DHW"}
# Channels first, then channels last, for each number of spatial axes.
LAYOUTS = {n: (f"NC{s}", f"N{s}C") for n, s in SPATIAL_LETTERS.items()}
PADDING_STRINGS = ("VALID", "SAME", "SAME_LOWER")
_AXIS_NAMES = {"W": "width", "H": "height", "D": "depth"}
EXAMPLE_NAMES = {1: "one signal", 2: "one image", 3: "one volume"}
_COUNT_WORDS = {1: "one", 2: "two", 3: "three"}
_TUPLE_WORDS = {1: "a tuple of one int", 2: "a pair of ints", 3: "a triple of ints"}


def spatial_rank_of(layout: Layout) -> int:
    """The number of spatial axes of a layout string: len(layout) − 2."""
    return len(layout) - 2


def is_channels_first(layout: Layout) -> bool:
    """Whether the layout puts the channels right after the batch ("NCW", "NCHW", "NCDHW")."""
    return layout[1] == "C"


def axis_names(rank: int) -> tuple[str, ...]:
    """Names of the spatial axes in messages: ("width",), ("height", "width"), ..."""
    return tuple(_AXIS_NAMES[c] for c in SPATIAL_LETTERS[rank])


def spatial_form(rank: int) -> str:
    """The spatial shape in messages: "(W,)", "(H, W)", "(D, H, W)"."""
    return _tuple_form(list(SPATIAL_LETTERS[rank]))


def kernel_form(layout: Layout, *, transposed: bool = False) -> str:
    """The kernel's shape in messages: "(O, C//groups, kh, kw)" or "(kh, kw, C//groups, O)"
    for a convolution; (C_in, C_out//groups, ...) and (..., C_out//groups, C_in) for a
    transposed one."""
    taps = ", ".join("k" + c.lower() for c in SPATIAL_LETTERS[spatial_rank_of(layout)])
    outer, inner = ("C_in", "C_out//groups") if transposed else ("O", "C//groups")
    if is_channels_first(layout):
        return f"({outer}, {inner}, {taps})"
    return f"({taps}, {inner}, {outer})"


@dataclasses.dataclass(frozen=True)
class ConvGeometry:
    """A fully resolved convolution: every size the forward and backward rules need.

    Sizes are per spatial axis, in the layout's order ((H, W) in 2-D). Hashable, so it can be
    a static argument of `jax.jit` and a non-differentiable argument of `jax.custom_vjp`.

    Attributes:
      layout: the caller's layout for this rank: "NCW"/"NWC" (kernels OIW/WIO),
        "NCHW"/"NHWC" (OIHW/HWIO) or "NCDHW"/"NDHWC" (OIDHW/DHWIO).
      input_rank: rank of the caller's `x`: the spatial rank n (one channel, no batch), n + 1
        (one example) or n + 2 (a batch).
      batch: N, the examples in the batch (1 for an unbatched input).
      in_channels: C.
      out_channels: O.
      groups: G; the kernel has C // G input channels.
      in_size: the input's spatial sizes, (H, W) in 2-D.
      kernel_size: the kernel's spatial sizes, (kh, kw) in 2-D.
      stride: one per spatial axis.
      dilation: the kernel dilation, one per spatial axis.
      padding: a (lo, hi) pair per spatial axis; negative values crop.
      out_size: the output's spatial sizes, (Ho, Wo) in 2-D.
      input_dilation: the input's dilation per spatial axis (l − 1 zeros between its entries,
        as `lax.conv_general_dilated`'s `lhs_dilation`); all 1 for `conv2d`.
    """

    layout: Layout
    input_rank: int
    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    padding: Pads
    out_size: tuple[int, ...]
    input_dilation: tuple[int, ...]

    @property
    def spatial_rank(self) -> int:
        """The number of spatial axes: 1, 2 or 3."""
        return len(self.in_size)

    @property
    def in_hw(self) -> tuple[int, ...]:
        """`in_size` under its 2-D name."""
        return self.in_size

    @property
    def kernel_hw(self) -> tuple[int, ...]:
        """`kernel_size` under its 2-D name."""
        return self.kernel_size

    @property
    def out_hw(self) -> tuple[int, ...]:
        """`out_size` under its 2-D name."""
        return self.out_size

    @property
    def dilated_kernel_size(self) -> tuple[int, ...]:
        """Extent of the kernel once its taps sit `dilation` apart: d·(k−1)+1 per axis."""
        return tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))

    @property
    def dilated_in_size(self) -> tuple[int, ...]:
        """The input's sizes after its dilation: (n − 1)·l + 1, or 0 for an empty axis."""
        return tuple(_dilated(n, d) for n, d in zip(self.in_size, self.input_dilation))

    @property
    def padded_size(self) -> tuple[int, ...]:
        """The input's sizes after dilating and padding (or cropping) it."""
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.dilated_in_size, self.padding))

    @property
    def window_extent(self) -> tuple[int, ...]:
        """How far one tap's strided window spans in the padded input: (out−1)·s+1 per axis."""
        return tuple((n - 1) * s + 1 for n, s in zip(self.out_size, self.stride))

    @property
    def is_empty(self) -> bool:
        """Whether every sum of the rules is empty: no output (N, O or an output size is 0) or
        no term per output (C/G = 0). Then Z is the bias alone and ∂L/∂X, ∂L/∂W are zeros."""
        return 0 in (self.batch, self.out_channels, *self.out_size, self.in_channels)

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
        """Multiply-adds ×2 of the forward pass for one example: 2·O·∏out·(C/G)·∏k."""
        c_per_group = self.in_channels // self.groups
        return (
            2
            * self.out_channels
            * math.prod(self.out_size)
            * c_per_group
            * math.prod(self.kernel_size)
        )

    def output_shape(self, batch_shape: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of Z in the caller's layout and rank, for the given leading batch dims."""
        if self.input_rank == self.spatial_rank:
            return self.out_size
        if is_channels_first(self.layout):
            return (*batch_shape, self.out_channels, *self.out_size)
        return (*batch_shape, *self.out_size, self.out_channels)


def _dilated(n: int, dilation: int) -> int:
    return (n - 1) * dilation + 1 if n else 0


def is_int(value: object) -> TypeGuard[int | np.integer]:
    """A Python or NumPy integer, not a bool."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def _is_ints(value: object, n: int) -> bool:
    return (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == n
        and all(is_int(v) for v in value)
    )


def normalize_tuple(
    op: str, name: str, value: IntOrTuple, rank: int, *, minimum: int | None
) -> tuple[int, ...]:
    """An int, or one int per spatial axis, as a `rank`-tuple, each checked ≥ `minimum`.

    Raises:
      TypeError: `value` is neither an int nor `rank` ints.
      ValueError: an entry is below `minimum`.
    """
    if is_int(value):
        values = (int(value),) * rank
    elif _is_ints(value, rank):
        values = tuple(int(v) for v in value)  # type: ignore[union-attr]
    else:
        what = _TUPLE_WORDS.get(rank, f"a tuple of {rank} ints")
        raise TypeError(f"{op}: `{name}` must be an int or {what}, got {value!r}.")
    if minimum is not None and min(values) < minimum:
        raise ValueError(f"{op}: `{name}` must be >= {minimum}, got {value!r}.")
    return values


def normalize_pair(op: str, name: str, value: IntOrPair, *, minimum: int | None) -> tuple[int, int]:
    """`normalize_tuple` for two spatial axes."""
    h, w = normalize_tuple(op, name, value, 2, minimum=minimum)
    return (h, w)


def spatial_tuple(op: str, name: str, value, rank: int, default: int | None = None):
    """A per-spatial-dimension argument as `jax.lax` takes it: `rank` ints >= 1 in a sequence
    (None: `default` on each axis, where there is one)."""
    if value is None and default is not None:
        return (default,) * rank
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence) or len(value) != rank:
        count = _COUNT_WORDS.get(rank, str(rank))
        raise TypeError(
            f"{op}: `{name}` must be a sequence of {count} int{'s' * (rank != 1)} (one per "
            f"spatial dimension), got {value!r}."
        )
    return normalize_tuple(op, name, tuple(value), rank, minimum=1)


def _tuple_form(entries: list[str]) -> str:
    return f"({entries[0]},)" if len(entries) == 1 else "(" + ", ".join(entries) + ")"


def _explicit_pads_form(rank: int) -> str:
    return _tuple_form([f"(lo_{c.lower()}, hi_{c.lower()})" for c in SPATIAL_LETTERS[rank]])


def bare_kernel_form(rank: int) -> str:
    """The kernel of a spatial-only input in messages: "(kw,)", "(kh, kw)", "(kd, kh, kw)"."""
    return _tuple_form(["k" + c.lower() for c in SPATIAL_LETTERS[rank]])


def resolve_padding(
    op: str,
    padding: PaddingLike,
    in_size: tuple[int, ...],
    dilated_kernel_size: tuple[int, ...],
    stride: tuple[int, ...],
) -> Pads:
    """Turns any accepted `padding` into one explicit (lo, hi) pair per spatial axis.

    "SAME" and "SAME_LOWER" follow `jax.lax`: out = ceil(in / stride), total padding
    max((out − 1)·stride + dilated_kernel − in, 0), the odd unit going to the high side
    for "SAME" and to the low side for "SAME_LOWER". Otherwise: an int for every side, one
    int per axis for both its sides, or one (lo, hi) pair per axis.

    Raises:
      ValueError: unknown padding string.
      TypeError: a padding that is none of the accepted forms for this many axes.
    """
    rank = len(in_size)
    if isinstance(padding, str):
        mode = normalize_string(op, "padding", padding, PADDING_STRINGS)
        if mode == "VALID":
            return ((0, 0),) * rank
        pads = []
        for n, k_dil, s in zip(in_size, dilated_kernel_size, stride):
            total = max((-(-n // s) - 1) * s + k_dil - n, 0)
            small, large = total // 2, total - total // 2
            pads.append((small, large) if mode == "SAME" else (large, small))
        return tuple(pads)
    if is_int(padding):
        return ((int(padding), int(padding)),) * rank
    if isinstance(padding, Sequence) and not isinstance(padding, str) and len(padding) == rank:
        if all(is_int(p) for p in padding):
            return tuple((int(p), int(p)) for p in padding if is_int(p))
        if all(_is_ints(p, 2) for p in padding):
            return tuple((int(lo), int(hi)) for lo, hi in padding)  # type: ignore[misc]
    per_axis = "a pair of ints" if rank == 2 else _TUPLE_WORDS.get(rank, f"{rank} ints")
    raise TypeError(
        f"{op}: malformed `padding` {padding!r}; expected one of {PADDING_STRINGS}, an int, "
        f"{per_axis} or {_explicit_pads_form(rank)}."
    )


def dtype_kind(dtype) -> str:
    """ "floating", "complex" or "integer" (signed or unsigned): the kinds of dtype jaxconv
    computes, as lax does; "other" for anything else (bool, strings, ...)."""
    for kind, parent in (
        ("floating", jnp.floating),
        ("complex", jnp.complexfloating),
        ("integer", jnp.integer),
    ):
        if jnp.issubdtype(dtype, parent):
            return kind
    return "other"


def check_floating(op: str, name: str, dtype) -> None:
    """Raises TypeError unless `dtype` is a real floating dtype."""
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{op}: `{name}` must have a real floating dtype, got {np.dtype(dtype)}.")


def check_dtype(op: str, name: str, dtype) -> None:
    """Raises TypeError unless `dtype` is a floating, complex or integer dtype."""
    if dtype_kind(dtype) == "other":
        raise TypeError(
            f"{op}: `{name}` must have a floating, complex or integer dtype, got {np.dtype(dtype)}."
        )


def check_preferred_element_type(op: str, dtype, preferred) -> jnp.dtype:
    """`preferred` (lax's `preferred_element_type`) as a dtype, checked as lax checks it for
    operands of `dtype`: integers may ask for a wider integer or a floating dtype, floating
    for a wider floating one, complex for a wider complex one.

    Raises:
      TypeError: naming the argument and both dtypes.
    """
    try:
        preferred = jnp.dtype(preferred)
    except TypeError:
        raise TypeError(f"{op}: `preferred_element_type` is not a dtype: {preferred!r}.") from None
    kind, wanted = dtype_kind(dtype), dtype_kind(preferred)
    allowed = {"integer": ("integer", "floating"), "floating": ("floating",)}.get(kind, (kind,))
    if wanted not in allowed:
        raise TypeError(
            f"{op}: `preferred_element_type` {preferred} does not fit operands of dtype "
            f"{np.dtype(dtype)}: as in lax, integer operands take an integer or floating one, "
            "floating a floating one, complex a complex one."
        )
    if preferred.itemsize < np.dtype(dtype).itemsize:
        raise TypeError(
            f"{op}: `preferred_element_type` {preferred} is narrower than the operands' "
            f"{np.dtype(dtype)} (lax refuses it too)."
        )
    return preferred


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


def normalize_layout(op: str, layout, rank: int | None = 2) -> Layout:
    """`layout` as one of `LAYOUTS[rank]` (any rank's where `rank` is None); raises naming it."""
    choices = LAYOUTS[rank] if rank is not None else sum(LAYOUTS.values(), ())
    return normalize_string(op, "layout", layout, choices)


def check_rank(op: str, name: str, rank: int, shape: tuple[int, ...]) -> int:
    """`rank` (spatial axes) if jaxconv computes it; raises naming the operand otherwise."""
    if rank not in SPATIAL_RANKS:
        raise ValueError(
            f"{op}: `{name}` of shape {shape} has {rank} spatial dimensions; jaxconv computes "
            f"convolutions of {', '.join(map(str, SPATIAL_RANKS[:-1]))} or {SPATIAL_RANKS[-1]} "
            "spatial dimensions."
        )
    return rank


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


def check_input_rank(op: str, x_name: str, x_shape: tuple[int, ...], rank: int) -> None:
    """Raises unless an input of `rank` spatial axes has rank n (one channel, no batch), n + 1
    (one example) or n + 2 (a batch)."""
    if len(x_shape) not in (rank, rank + 1, rank + 2):
        raise ValueError(
            f"{op}: `{x_name}` must be {rank}-D {spatial_form(rank)}, {rank + 1}-D "
            f"({EXAMPLE_NAMES[rank]}) or {rank + 2}-D (a batch), got shape {x_shape}."
        )


def batched_shapes(
    op: str, x_name: str, x_shape: tuple[int, ...], w_shape: tuple[int, ...], layout: Layout
) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """(x_shape, w_shape) as batched shapes in `layout`: n + 2 axes each.

    The seed's case, an n-D input without channels and an n-D kernel, gets one channel, one
    output channel and a batch of one.
    """
    rank = spatial_rank_of(layout)
    check_input_rank(op, x_name, x_shape, rank)
    bare = len(x_shape) == rank
    expected_w_ndim = rank if bare else rank + 2
    if len(w_shape) != expected_w_ndim:
        w_form = bare_kernel_form(rank) if bare else kernel_form(layout)
        raise ValueError(
            f"{op}: `{x_name}` of shape {x_shape} is {len(x_shape)}-D, so `w` must be "
            f"{expected_w_ndim}-D {w_form}; got `w` of shape {w_shape}."
        )
    if bare:
        if is_channels_first(layout):
            return (1, 1, *x_shape), (1, 1, *w_shape)
        return (1, *x_shape, 1), (*w_shape, 1, 1)
    return (x_shape if len(x_shape) == rank + 2 else (1, *x_shape)), tuple(w_shape)


def conv_geometry(
    op: str,
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    stride: IntOrTuple,
    padding: PaddingLike,
    dilation: IntOrTuple,
    groups: int,
    layout: Layout,
    x_name: str = "x",
    input_dilation: IntOrTuple = 1,
    rank: int | None = 2,
) -> ConvGeometry:
    """Validates a convolution's shapes and configuration and resolves its geometry.

    Args:
      op: name of the public function, used to start every error message.
      x_shape: shape of the input in `layout`: spatial only, one example, or a batch.
      w_shape: shape of the kernel: spatial only with a spatial-only x, else (O, C//G, *k)
        for a channels-first layout or (*k, C//G, O) for a channels-last one.
      stride, padding, dilation, groups: as in `jaxconv.conv`.
      layout: one of `LAYOUTS[rank]`, any letter case.
      x_name: what to call the input in messages.
      input_dilation: the input's dilation (`lax.conv_general_dilated`'s `lhs_dilation`),
        an int or one per axis; with one above 1, `padding` must be explicit (as in lax).
      rank: the spatial rank the calling function computes (the layouts it accepts), or
        None for any rank jaxconv computes, read off the layout.

    Returns:
      The resolved `ConvGeometry`.

    Raises:
      ValueError, TypeError: with the offending argument named and its value or shape shown.
    """
    layout = normalize_layout(op, layout, rank)
    n = spatial_rank_of(layout)
    x_shape, w_shape = check_shape(op, x_name, x_shape), check_shape(op, "w_shape", w_shape)
    x_b, w_b = batched_shapes(op, x_name, x_shape, w_shape, layout)
    strides = normalize_tuple(op, "stride", stride, n, minimum=1)
    dilations = normalize_tuple(op, "dilation", dilation, n, minimum=1)
    input_dilations = normalize_tuple(op, "lhs_dilation", input_dilation, n, minimum=1)
    groups = check_groups(op, groups)

    w_form = kernel_form(layout)
    if is_channels_first(layout):
        c, in_size = x_b[1], x_b[2:]
        o, c_per_group, kernel_size = w_b[0], w_b[1], w_b[2:]
    else:
        c, in_size = x_b[-1], x_b[1:-1]
        o, c_per_group, kernel_size = w_b[-1], w_b[-2], w_b[:-2]
    if min(kernel_size) < 1:
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

    dilated = tuple(d * (k - 1) + 1 for d, k in zip(dilations, kernel_size))
    if isinstance(padding, str) and input_dilations != (1,) * n:
        raise ValueError(
            f"{op}: `padding` {padding!r} is a string, but with `lhs_dilation` "
            f"{input_dilations} it must be explicit ((lo, hi) pairs), as in jax.lax."
        )
    pads = resolve_padding(op, padding, in_size, dilated, strides)
    out_size = []
    for axis, size, d, (lo, hi), k_dil, s in zip(
        axis_names(n), in_size, input_dilations, pads, dilated, strides
    ):
        padded = _dilated(size, d) + lo + hi
        if padded < 0:
            raise ValueError(
                f"{op}: `padding` {pads} crops more than the input: the padded input {axis} "
                f"would be {padded} (= {_dilated(size, d)} + {lo} + {hi})."
            )
        # As in XLA, a padded input smaller than the dilated kernel has no output rows.
        out_size.append(max(0, (padded - k_dil) // s + 1))

    return ConvGeometry(
        layout=layout,
        input_rank=len(x_shape),
        batch=x_b[0],
        in_channels=c,
        out_channels=o,
        groups=groups,
        in_size=tuple(in_size),
        kernel_size=tuple(kernel_size),
        stride=strides,
        dilation=dilations,
        padding=pads,
        out_size=tuple(out_size),
        input_dilation=input_dilations,
    )


def public_geometry(
    op: str,
    rank: int,
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout | None = None,
) -> ConvGeometry:
    """The geometry of a call of `rank` spatial axes, as `conv{rank}d_geometry` takes it
    (`layout` None: channels first)."""
    return conv_geometry(
        op,
        tuple(x_shape),
        tuple(w_shape),
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=LAYOUTS[rank][0] if layout is None else layout,
        rank=rank,
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
      >>> geom.out_size, geom.padding
      ((16, 16), ((0, 1), (0, 1)))
    """
    return public_geometry(
        "conv2d_geometry",
        2,
        x_shape,
        w_shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )


def conv1d_geometry(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout = "NCW",
) -> ConvGeometry:
    """The resolved geometry of `conv1d(x, w, ...)`, as `conv2d_geometry` is `conv2d`'s.

    Examples:
      >>> import jaxconv
      >>> jaxconv.conv1d_geometry((8, 16, 100), (32, 16, 5), padding="SAME").out_size
      (100,)
    """
    return public_geometry(
        "conv1d_geometry",
        1,
        x_shape,
        w_shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )


def conv3d_geometry(
    x_shape: Sequence[int],
    w_shape: Sequence[int],
    *,
    stride: IntOrTuple = 1,
    padding: PaddingLike = "VALID",
    dilation: IntOrTuple = 1,
    groups: int = 1,
    layout: Layout = "NCDHW",
) -> ConvGeometry:
    """The resolved geometry of `conv3d(x, w, ...)`, as `conv2d_geometry` is `conv2d`'s.

    Examples:
      >>> import jaxconv
      >>> jaxconv.conv3d_geometry((2, 4, 8, 16, 16), (8, 4, 3, 3, 3), stride=2).out_size
      (3, 7, 7)
    """
    return public_geometry(
        "conv3d_geometry",
        3,
        x_shape,
        w_shape,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        layout=layout,
    )


def conv_transpose_geometry(
    op: str,
    in_size: tuple[int, ...],
    kernel_size: tuple[int, ...],
    *,
    stride: tuple[int, ...],
    padding: tuple[int, ...],
    output_padding: tuple[int, ...],
    dilation: tuple[int, ...],
) -> tuple[tuple[int, ...], Pads]:
    """Output size of a transposed convolution and the padding of the conv it is the ∂L/∂X of.

    H_out = (H − 1)·s − 2p + d·(k − 1) + output_padding + 1 (PyTorch), per axis. A conv of an
    H_out-row input with padding (p, p − output_padding) has exactly H output rows (its
    padded input, (H − 1)·s + d·(k − 1) + 1 rows, ends where its last window does), so the
    transposed conv is that conv's ∂L/∂X. Rows past the last window, present only when
    output_padding > p, are cropped by that conv and so come out zero.

    Args:
      op: name of the public function, for messages.
      in_size, kernel_size, stride, padding, output_padding, dilation: one int per spatial
        axis, padding and output_padding already checked to be >= 0.

    Returns:
      (out_size, ((p, p − output_padding) per axis)).

    Raises:
      ValueError: output_padding not smaller than max(stride, dilation), or an empty output.
    """
    out_size = []
    for axis, n, k, s, p, extra, d in zip(
        axis_names(len(in_size)), in_size, kernel_size, stride, padding, output_padding, dilation
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
        out_size.append(size)
    pads = tuple((p, p - extra) for p, extra in zip(padding, output_padding))
    return tuple(out_size), pads


def check_bias_dtype(op: str, b, x_dtype) -> None:
    """Raises unless the bias `b` has a dtype of the kind of the operands' `x_dtype`
    (floating, complex or integer; any floating width for a floating x)."""
    check_dtype(op, "b", b.dtype)
    if dtype_kind(b.dtype) != dtype_kind(x_dtype):
        raise TypeError(
            f"{op}: `b` of dtype {b.dtype} does not fit `x` of dtype {np.dtype(x_dtype)}: "
            "the bias must be of the same kind (floating, complex or integer)."
        )


def check_bias(op: str, b, geom: ConvGeometry, x_dtype) -> None:
    """Raises unless `b` is None or an array of shape (O,) of a dtype `check_bias_dtype`
    takes."""
    if b is None:
        return
    check_bias_dtype(op, b, x_dtype)
    if tuple(b.shape) != (geom.out_channels,):
        raise ValueError(
            f"{op}: `b` must have shape (O,) = ({geom.out_channels},), got {tuple(b.shape)}."
        )


def check_cotangent(op: str, g_shape: tuple[int, ...], geom: ConvGeometry, forward: str) -> None:
    """Raises unless ∂L/∂Z has the shape of the forward output for this geometry, batch
    included; `forward` names the forward's operands in the message."""
    g_shape = tuple(g_shape)
    batched = geom.input_rank == geom.spatial_rank + 2
    expected = geom.output_shape((geom.batch,) if batched else ())
    if g_shape != expected:
        raise ValueError(
            f"{op}: `g` must have the shape {expected} of the output of the conv of {forward}, "
            f"got {g_shape}."
        )


def check_operands(op: str, a_name: str, a, b_name: str, b) -> None:
    """Raises TypeError unless `a` and `b` have the same dtype, floating, complex or integer
    (lax refuses mixed dtypes too; promoting one would change what its gradient is)."""
    check_dtype(op, a_name, a.dtype)
    check_dtype(op, b_name, b.dtype)
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


def resolve_conv(
    op: str,
    x,
    w,
    b,
    *,
    stride: IntOrTuple,
    padding: PaddingLike,
    dilation: IntOrTuple,
    groups: int,
    layout: Layout,
    rank: int | None = 2,
) -> ConvGeometry:
    """Validates the operands and configuration of a convolution call; returns its geometry.

    Args:
      op: name of the public function, used to start every error message.
      x, w, b: the input, kernel and optional bias (arrays).
      stride, padding, dilation, groups, layout: as in `jaxconv.conv`.
      rank: the spatial rank of `op`, or None for the rank of `layout`.

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
        rank=rank,
    )
    check_bias(op, b, geom, x.dtype)
    return geom


def resolve_conv_transpose(
    op: str,
    x,
    w,
    b,
    *,
    stride: IntOrTuple,
    padding: IntOrTuple,
    output_padding: IntOrTuple,
    dilation: IntOrTuple,
    groups: int,
    layout: Layout,
    padding_mode: str,
    rank: int,
) -> ConvGeometry:
    """Validates a transposed convolution call (`conv_transpose{rank}d`); returns the geometry
    of the conv it is the ∂L/∂X of (its input: the transposed conv's output; its output: `x`).

    Raises:
      ValueError, TypeError: naming the argument and showing its value or the shapes.
    """
    layout = normalize_layout(op, layout, rank)
    if not isinstance(padding_mode, str) or padding_mode.lower() != "zeros":
        raise ValueError(
            f"{op}: only `padding_mode`='zeros' is supported for a transposed convolution "
            f"(as in PyTorch), got {padding_mode!r}."
        )
    check_operands(op, "x", x, "w", w)
    x_shape, w_shape = tuple(x.shape), tuple(w.shape)
    check_input_rank(op, "x", x_shape, rank)
    bare = x.ndim == rank
    w_form = bare_kernel_form(rank) if bare else kernel_form(layout, transposed=True)
    w_ndim = rank if bare else rank + 2
    if w.ndim != w_ndim:
        raise ValueError(
            f"{op}: `x` of shape {x_shape} is {x.ndim}-D, so `w` must be {w_ndim}-D "
            f"{w_form}; got `w` of shape {w_shape}."
        )
    strides = normalize_tuple(op, "stride", stride, rank, minimum=1)
    dilations = normalize_tuple(op, "dilation", dilation, rank, minimum=1)
    paddings = normalize_tuple(op, "padding", padding, rank, minimum=0)
    output_paddings = normalize_tuple(op, "output_padding", output_padding, rank, minimum=0)
    groups = check_groups(op, groups)

    batch = x_shape[:1] if x.ndim == rank + 2 else ()
    if bare:
        in_size, kernel_size, c_in, c_in_w, c_out_per_group = x_shape, w_shape, 1, 1, 1
    elif is_channels_first(layout):
        c_in, in_size = x_shape[-rank - 1], x_shape[-rank:]
        c_in_w, c_out_per_group, kernel_size = w_shape[0], w_shape[1], w_shape[2:]
    else:
        c_in, in_size = x_shape[-1], x_shape[-rank - 1 : -1]
        c_in_w, c_out_per_group, kernel_size = w_shape[-1], w_shape[-2], w_shape[:-2]
    if min(kernel_size) < 1:
        raise ValueError(
            f"{op}: the kernel's spatial sizes must be >= 1; got `w` of shape {w_shape} {w_form}."
        )
    if c_in % groups:
        raise ValueError(
            f"{op}: `groups` (={groups}) must divide the input channels C_in (={c_in}) "
            f"of `x` with shape {x_shape}."
        )
    if c_in_w != c_in:
        raise ValueError(
            f"{op}: channel mismatch: `x` of shape {x_shape} ({layout}) has "
            f"C_in={c_in} channels, but `w` of shape {w_shape} {w_form} has "
            f"C_in={c_in_w}."
        )
    c_out = c_out_per_group * groups
    if b is not None:
        check_bias_dtype(op, b, x.dtype)
        if tuple(b.shape) != (c_out,):
            raise ValueError(
                f"{op}: `b` must have shape (C_out,) = ({c_out},) (C_out//groups × groups = "
                f"{c_out_per_group} × {groups}), got {tuple(b.shape)}."
            )

    out_size, conv_padding = conv_transpose_geometry(
        op,
        tuple(in_size),
        tuple(kernel_size),
        stride=strides,
        padding=paddings,
        output_padding=output_paddings,
        dilation=dilations,
    )
    if bare:
        out_shape = out_size
    elif is_channels_first(layout):
        out_shape = (*batch, c_out, *out_size)
    else:
        out_shape = (*batch, *out_size, c_out)
    return conv_geometry(
        op,
        out_shape,
        w_shape,
        stride=strides,
        padding=conv_padding,
        dilation=dilations,
        groups=groups,
        layout=layout,
        x_name="output",
        rank=rank,
    )


__all__ = [
    "EXAMPLE_NAMES",
    "LAYOUTS",
    "SPATIAL_RANKS",
    "ConvGeometry",
    "as_array",
    "axis_names",
    "bare_kernel_form",
    "batched_shapes",
    "check_bias",
    "check_bias_dtype",
    "check_cotangent",
    "check_dtype",
    "check_floating",
    "check_groups",
    "check_input_rank",
    "check_operands",
    "check_preferred_element_type",
    "check_rank",
    "check_shape",
    "conv1d_geometry",
    "conv2d_geometry",
    "conv3d_geometry",
    "conv_geometry",
    "conv_transpose_geometry",
    "dtype_kind",
    "is_channels_first",
    "is_int",
    "kernel_form",
    "normalize_layout",
    "normalize_pair",
    "normalize_string",
    "normalize_tuple",
    "public_geometry",
    "resolve_conv",
    "resolve_conv_transpose",
    "resolve_padding",
    "spatial_rank_of",
    "spatial_tuple",
]
