"""Equinox layers computed by jaxconv: `Conv2d` and `ConvTranspose2d`.

Each subclasses Equinox's layer of the same name, so the constructor, the initialisation
(the same key gives the same weights), the fields and the weight layout (O, C/groups, kh, kw)
are Equinox's own; only `__call__` differs, running `jaxconv.conv2d` /
`jaxconv.conv_transpose2d` and so jaxconv's hand-derived gradients. As in Equinox, a layer
takes one unbatched image (C, H, W); `jax.vmap` it over a batch.

This is the only jaxconv module that imports Equinox (`pip install equinox`); `import jaxconv`
does not.

Examples:
  >>> import jax
  >>> import jaxconv.equinox
  >>> conv = jaxconv.equinox.Conv2d(3, 8, 3, padding="SAME", key=jax.random.key(0))
  >>> conv.weight.shape, conv(jax.numpy.ones((3, 16, 16))).shape
  ((8, 3, 3, 3), (8, 16, 16))
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jax import lax

from jaxconv._src.convolution import conv2d
from jaxconv._src.transpose import conv_transpose2d

__all__ = ["Conv2d", "ConvTranspose2d"]


def _check_unbatched(layer: str, x: jax.Array) -> None:
    if x.ndim != 3:
        raise ValueError(
            f"jaxconv.equinox.{layer}: the input must be one image of shape (C, H, W), as in "
            f"Equinox (jax.vmap the layer over a batch), got shape {tuple(x.shape)}."
        )


class Conv2d(eqx.nn.Conv2d):
    """`equinox.nn.Conv2d`, computed by `jaxconv.conv2d`.

    Same constructor arguments, initialisation and fields as Equinox's layer (in_channels,
    out_channels, kernel_size, stride, padding, dilation, groups, use_bias, padding_mode,
    dtype, key); `padding_mode` 'REFLECT', 'REPLICATE' and 'CIRCULAR' are jaxconv's
    `padding_mode`s, which need each padding < the input size ('REFLECT') or <= it
    ('CIRCULAR'), where Equinox's `jnp.pad` would wrap or reflect more than once.
    """

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None) -> jax.Array:
        """`x` of shape (in_channels, H, W) to (out_channels, H_out, W_out); `key` is
        ignored, as in Equinox."""
        del key
        _check_unbatched("Conv2d", x)
        bias = None if self.bias is None else self.bias.reshape(-1)  # Equinox keeps (O, 1, 1)
        return conv2d(
            x,
            self.weight,
            bias,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            padding_mode=self.padding_mode,  # type: ignore[arg-type]  # Equinox checked it
        )


class ConvTranspose2d(eqx.nn.ConvTranspose2d):
    """`equinox.nn.ConvTranspose2d`, computed by `jaxconv.conv_transpose2d`.

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
            self.kernel_size, self.stride, self.output_padding, self.dilation, range(2)
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
        """`x` of shape (in_channels, H, W) to (out_channels, H_out, W_out); `key` is
        ignored, as in Equinox."""
        del key
        _check_unbatched("ConvTranspose2d", x)
        padding_t = self._padding_t()
        if self.padding_mode == "CIRCULAR":
            # As Equinox: whole strides of the padding wrap the input around, the rest pads.
            wrap = [(lo // s, hi // s) for (lo, hi), s in zip(padding_t, self.stride)]
            x = jnp.pad(x, [(0, 0), *wrap], mode="wrap")
            padding_t = tuple((lo % s, hi % s) for (lo, hi), s in zip(padding_t, self.stride))

        groups, (o, i, kh, kw) = self.groups, self.weight.shape
        w = self.weight.reshape(groups, o // groups, i, kh, kw).swapaxes(1, 2)
        w = jnp.flip(w.reshape(groups * i, o // groups, kh, kw), (2, 3))  # PyTorch's layout

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
        y = conv_transpose2d(
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
        return y if bias is None else y + bias[:, None, None]
