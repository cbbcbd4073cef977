"""Equinox layers computed by jaxconv: `Conv`, `Conv1d`, `Conv2d`, `Conv3d`, `ConvTranspose`,
`ConvTranspose1d`, `ConvTranspose2d` and `ConvTranspose3d`.

Each subclasses Equinox's layer of the same name, so the constructor, the initialisation
(the same key gives the same weights), the fields and the weight layout (O, C/groups, *k)
are Equinox's own; only `__call__` differs, running `jaxconv.conv` /
`jaxconv.conv_transpose{1,2,3}d` and so jaxconv's hand-derived gradients. As in Equinox, a
layer takes one unbatched example (C, *spatial); `jax.vmap` it over a batch. `Conv` and
`ConvTranspose` take `num_spatial_dims` 1, 2 or 3.

This is the only jaxconv module that imports Equinox (`pip install equinox`); `import jaxconv`
does not.

Examples:
  >>> import jax
  >>> import jaxconv.equinox
  >>> conv = jaxconv.equinox.Conv2d(3, 8, 3, padding="SAME", key=jax.random.key(0))
  >>> conv.weight.shape, conv(jax.numpy.ones((3, 16, 16))).shape
  ((8, 3, 3, 3), (8, 16, 16))
  >>> jaxconv.equinox.Conv1d(3, 8, 5, key=jax.random.key(0))(jax.numpy.ones((3, 20))).shape
  (8, 16)
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src.convolution import conv
from jaxconv._src.geometry import EXAMPLE_NAMES, LAYOUTS, check_rank, spatial_form
from jaxconv._src.transpose import conv_transpose1d, conv_transpose2d, conv_transpose3d

__all__ = [
    "Conv",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
]

_TRANSPOSED = {1: conv_transpose1d, 2: conv_transpose2d, 3: conv_transpose3d}


def _check_unbatched(layer, x: jax.Array) -> int:
    """The layer's spatial rank; raises unless `x` is one example (C, *spatial)."""
    name = type(layer).__name__
    n = check_rank(f"jaxconv.equinox.{name}", "num_spatial_dims", layer.num_spatial_dims, ())
    if x.ndim != n + 1:
        shape = f"(C, {spatial_form(n)[1:-1].rstrip(',')})"
        raise ValueError(
            f"jaxconv.equinox.{name}: the input must be {EXAMPLE_NAMES[n]} of shape {shape}, "
            f"as in Equinox (jax.vmap the layer over a batch), got shape {tuple(x.shape)}."
        )
    return n


class Conv(eqx.nn.Conv):
    """`equinox.nn.Conv`, computed by `jaxconv.conv`, for `num_spatial_dims` 1, 2 or 3.

    Same constructor arguments, initialisation and fields as Equinox's layer (num_spatial_dims,
    in_channels, out_channels, kernel_size, stride, padding, dilation, groups, use_bias,
    padding_mode, dtype, key); `padding_mode` 'REFLECT', 'REPLICATE' and 'CIRCULAR' are
    jaxconv's `padding_mode`s, which need each padding < the input size ('REFLECT') or <= it
    ('CIRCULAR'), where Equinox's `jnp.pad` would wrap or reflect more than once.
    """

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """`x` of shape (in_channels, *spatial) to (out_channels, *spatial_out); `key` is
        ignored, as in Equinox."""
        del key
        n = _check_unbatched(self, x)
        bias = None if self.bias is None else self.bias.reshape(-1)  # Equinox keeps (O, 1, ...)
        return conv(
            x,
            self.weight,
            bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            layout=LAYOUTS[n][0],
            padding_mode=self.padding_mode,  # type: ignore[arg-type]  # Equinox checked it
        )


class Conv1d(eqx.nn.Conv1d, Conv):
    """`equinox.nn.Conv1d`, computed by `jaxconv.conv`: `Conv` with one spatial axis."""

    __call__ = Conv.__call__


class Conv2d(eqx.nn.Conv2d, Conv):
    """`equinox.nn.Conv2d`, computed by `jaxconv.conv`: `Conv` with two spatial axes."""

    __call__ = Conv.__call__


class Conv3d(eqx.nn.Conv3d, Conv):
    """`equinox.nn.Conv3d`, computed by `jaxconv.conv`: `Conv` with three spatial axes."""

    __call__ = Conv.__call__


class ConvTranspose(eqx.nn.ConvTranspose):
    """`equinox.nn.ConvTranspose`, computed by `jaxconv.conv_transpose{1,2,3}d`.

    Same constructor arguments, initialisation and fields as Equinox's layer (adding
    output_padding; padding_mode 'ZEROS' or 'CIRCULAR'). Equinox's convention differs from
    PyTorch's, which `conv_transpose2d` follows, and `__call__` maps one onto the other:

    - the weight: Equinox's (C_out, C_in/groups, kh, kw) is the kernel of a convolution of
      the stride-dilated input, unflipped; PyTorch's is (C_in, C_out/groups, kh, kw), used
      flipped. Per group, the two feature axes swap and the spatial axes flip.
    - the padding: Equinox's `padding` is that of the forward convolution this transposes,
      'SAME'/'SAME_LOWER'/'VALID' or per-side pairs, and `output_padding` adds rows at the
      high end, or for 'SAME' removes them. Both come down to how many rows of the full
      transposed output are cut at each end; PyTorch's symmetric `padding` and
      `output_padding` cut that where they can, and a slice (or zero rows) does the rest.
    """

    def _crops(self, padding_t: tuple[tuple[int, int], ...]) -> list[tuple[int, int]]:
        """Rows cut from each end of the full transposed output (negative: zero rows added),
        from the dilated input's padding `padding_t` (full output: d·(k − 1) on each side)."""
        return [
            (d * (k - 1) - lo, d * (k - 1) - hi)
            for (lo, hi), k, d in zip(padding_t, self.kernel_size, self.dilation)
        ]

    def _padding_t(self) -> tuple[tuple[int, int], ...]:
        """The dilated input's padding, as Equinox computes it (arXiv:1603.07285, rel. 14)."""
        pads = []
        for k, s, a, d, axis in zip(
            self.kernel_size,
            self.stride,
            self.output_padding,
            self.dilation,
            range(len(self.kernel_size)),
        ):
            if self.padding == "VALID":
                lo = hi = 0
            elif isinstance(self.padding, str):  # SAME, SAME_LOWER
                # output_padding is part of the total here; below 0, the rest adds rows.
                total = d * (k - 1) - s + a + 1
                a, total = max(-total, 0), max(total, 0)
                lo = (total + (self.padding == "SAME_LOWER")) // 2
                hi = total - lo
            else:
                lo, hi = self.padding[axis]
            pads.append((d * (k - 1) - lo, d * (k - 1) - hi + a))
        return tuple(pads)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """`x` of shape (in_channels, *spatial) to (out_channels, *spatial_out); `key` is
        ignored, as in Equinox."""
        del key
        n = _check_unbatched(self, x)
        padding_t = self._padding_t()
        if self.padding_mode == "CIRCULAR":
            # As Equinox: whole strides of the padding wrap the input around, the rest pads.
            wrap = [(lo // s, hi // s) for (lo, hi), s in zip(padding_t, self.stride)]
            x = jnp.pad(x, [(0, 0), *wrap], mode="wrap")
            padding_t = tuple((lo % s, hi % s) for (lo, hi), s in zip(padding_t, self.stride))

        groups, (o, i, *k) = self.groups, self.weight.shape
        w = self.weight.reshape(groups, o // groups, i, *k).swapaxes(1, 2)
        spatial = tuple(range(2, n + 2))
        w = jnp.flip(w.reshape(groups * i, o // groups, *k), spatial)  # PyTorch's layout

        padding, output_padding, rest = [], [], []
        for (lo, hi), s, d in zip(self._crops(padding_t), self.stride, self.dilation):
            if lo >= 0 and 0 <= lo - hi < max(s, d):  # PyTorch cuts lo and lo − output_padding
                p, extra, left = lo, lo - hi, (0, 0)
            else:
                p = max(0, min(lo, hi))
                extra, left = 0, (lo - p, hi - p)
            padding.append(p)
            output_padding.append(extra)
            rest.append(left)

        bias = None if self.bias is None else self.bias.reshape(-1)
        exact = all(r == (0, 0) for r in rest)
        y = _TRANSPOSED[n](
            x,
            w,
            bias if exact else None,
            stride=self.stride,
            padding=tuple(padding),
            output_padding=tuple(output_padding),
            dilation=self.dilation,
            groups=groups,
        )
        if exact:
            return y
        # lax.pad with negative widths cuts rows, with positive ones adds zeros.
        y = lax.pad(y, jnp.zeros((), y.dtype), [(0, 0, 0), *((-lo, -hi, 0) for lo, hi in rest)])
        return y if bias is None else y + bias.reshape(-1, *(1,) * n)


class ConvTranspose1d(eqx.nn.ConvTranspose1d, ConvTranspose):
    """`equinox.nn.ConvTranspose1d`, computed by `jaxconv.conv_transpose1d`."""

    __call__ = ConvTranspose.__call__


class ConvTranspose2d(eqx.nn.ConvTranspose2d, ConvTranspose):
    """`equinox.nn.ConvTranspose2d`, computed by `jaxconv.conv_transpose2d`."""

    __call__ = ConvTranspose.__call__


class ConvTranspose3d(eqx.nn.ConvTranspose3d, ConvTranspose):
    """`equinox.nn.ConvTranspose3d`, computed by `jaxconv.conv_transpose3d`."""

    __call__ = ConvTranspose.__call__
