"""evaluation/winograd.py: F(2×2, 3×3) against the sums of eqs. 6 and 8 written out as loops.

On small integers in float64 every intermediate (halves included) is exact, so the tile
algebra must reproduce the loops exactly, not within a tolerance.
"""

from __future__ import annotations

import itertools

import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv._src.evaluation import winograd

# (N, Ho, Wo, C, O): whole tiles, an overhanging row and column, a single output.
SIZES = [(2, 4, 6, 3, 2), (1, 5, 3, 2, 4), (3, 1, 1, 1, 1)]


def _integer_operands(n, ho, wo, c, o):
    rng = np.random.default_rng(n * 1000 + ho * 100 + wo * 10 + c)
    t, u = winograd.tile_counts((ho, wo))
    x = rng.integers(-4, 5, (n, ho + 2, wo + 2, c)).astype(np.float64)
    x_pad = np.pad(x, ((0, 0), (0, 2 * t - ho), (0, 2 * u - wo), (0, 0)))  # the tile overhang
    w = rng.integers(-4, 5, (3, 3, c, o)).astype(np.float64)
    g = rng.integers(-4, 5, (n, ho, wo, o)).astype(np.float64)
    return x, x_pad, w, g, (t, u)


def _correlation_loops(x, w, ho, wo):
    """Eq. 6, stride 1: z[n, r, c, o] = Σ_{a, b, i} x[n, r + a, c + b, i]·w[a, b, i, o]."""
    z = np.zeros((x.shape[0], ho, wo, w.shape[3]))
    for r in range(ho):
        for c in range(wo):
            for a in range(3):
                for b in range(3):
                    z[:, r, c] += x[:, r + a, c + b] @ w[a, b]
    return z


def _kernel_grad_loops(x, g):
    """Eq. 8, stride 1: ∂L/∂w[a, b, i, o] = Σ_{n, r, c} x[n, r + a, c + b, i]·g[n, r, c, o]."""
    _, ho, wo, o = g.shape
    dw = np.zeros((3, 3, x.shape[3], o))
    for a in range(3):
        for b in range(3):
            window = x[:, a : a + ho, b : b + wo].reshape(-1, x.shape[3])
            dw[a, b] = window.T @ g.reshape(-1, o)
    return dw


@pytest.mark.parametrize("n, ho, wo, c, o", SIZES)
def test_correlate_equals_the_sums_exactly(n, ho, wo, c, o):
    x, x_pad, w, _, (t, u) = _integer_operands(n, ho, wo, c, o)
    z = winograd.correlate(jnp.asarray(x_pad), jnp.asarray(w), jnp.float64)
    assert z.shape == (n, 2 * t, 2 * u, o)
    np.testing.assert_array_equal(np.asarray(z)[:, :ho, :wo], _correlation_loops(x, w, ho, wo))


@pytest.mark.parametrize("n, ho, wo, c, o", SIZES)
def test_kernel_grad_equals_the_sums_exactly(n, ho, wo, c, o):
    x, x_pad, _, g, (t, u) = _integer_operands(n, ho, wo, c, o)
    g_pad = np.pad(g, ((0, 0), (0, 2 * t - ho), (0, 2 * u - wo), (0, 0)))  # zero on the overhang
    dw = winograd.kernel_grad(jnp.asarray(x_pad), jnp.asarray(g_pad), jnp.float64)
    np.testing.assert_array_equal(np.asarray(dw), _kernel_grad_loops(x, g))


def test_one_tile_by_hand():
    # One channel, w = 1 everywhere: each output is the sum of its 3×3 window of x = 0..15.
    x = np.arange(16.0).reshape(1, 4, 4, 1)
    z = winograd.correlate(jnp.asarray(x), jnp.ones((3, 3, 1, 1)), jnp.float32)
    # Window at (0, 0): 0+1+2 + 4+5+6 + 8+9+10 = 45. A step right adds 1 to each of its 9
    # entries (+9), a step down adds 4 to each (+36).
    np.testing.assert_array_equal(np.asarray(z)[0, :, :, 0], [[45, 54], [81, 90]])


@pytest.mark.parametrize("out_hw, expected", [((4, 6), (2, 3)), ((5, 1), (3, 1)), ((1, 2), (1, 1))])
def test_tile_counts(out_hw, expected):
    assert winograd.tile_counts(out_hw) == expected


def test_split_phases_is_strided_slicing_and_merge_phases_inverts_it():
    a = jnp.arange(2 * 6 * 6 * 3).reshape(2, 6, 6, 3)
    phases = winograd.split_phases(a, (2, 3))
    assert phases.shape == (12, 3, 2, 3)
    for n, rho, sigma in itertools.product(range(2), range(2), range(3)):
        np.testing.assert_array_equal(phases[n * 6 + rho * 3 + sigma], a[n, rho::2, sigma::3])
    np.testing.assert_array_equal(winograd.merge_phases(phases, (2, 3)), a)
    assert winograd.split_phases(a, (1, 1)) is a


@pytest.mark.parametrize(
    "out_hw, dilation, pads, expected",
    [
        ((5, 6), (1, 1), ((0, 0), (1, 1)), ((0, 1), (1, 1))),  # 5 rows -> 6, 6 columns whole
        ((9, 10), (2, 3), ((2, 2), (0, 0)), ((2, 5), (0, 2))),  # 9 -> 12 (2·2·3), 10 -> 12
    ],
)
def test_tile_aligned_rounds_outputs_up_to_whole_tiles_per_phase(out_hw, dilation, pads, expected):
    assert winograd.tile_aligned(pads, out_hw, dilation) == expected
