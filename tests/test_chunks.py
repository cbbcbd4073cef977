"""evaluation/chunks.py: a loop over chunks of images gives what one pass over the batch gives."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from jaxconv._src.evaluation import chunks


def _per_image(a, b):
    return jnp.cumsum(a, axis=1) * b[:, ::-1]  # per image, not per element


@pytest.mark.parametrize("size", [None, 1, 2, 3, 5, 7])
def test_map_over_images_matches_one_pass(size):
    a, b = (jnp.arange(5 * 4 * 3, dtype=jnp.float32).reshape(5, 4, 3) + k for k in (0, 7))
    expected = np.asarray(_per_image(a, b))
    for as_state in (False, True):
        got = chunks.map_over_images(_per_image, (a, b), size, chunk_as_state=as_state)
        np.testing.assert_array_equal(np.asarray(got), expected)


@pytest.mark.parametrize("size", [None, 1, 2, 3, 5])
def test_sum_over_images_matches_one_sum(size):
    a = jnp.arange(5 * 4, dtype=jnp.float32).reshape(5, 4)
    got = chunks.sum_over_images(lambda a: jnp.sum(a**2, axis=0), (a,), size)
    np.testing.assert_array_equal(np.asarray(got), np.sum(np.asarray(a) ** 2, axis=0))


def test_split_images_leaves_the_remainder():
    a = jnp.arange(7 * 2).reshape(7, 2)
    stacked, rest = chunks.split_images((a,), 3)
    assert stacked[0].shape == (2, 3, 2)
    np.testing.assert_array_equal(rest[0], a[6:])
    assert chunks.split_images((a,), 7)[1] is None


@pytest.mark.parametrize("by_chunk", [False, True])
def test_map_channels_last_returns_the_callers_layout(by_chunk):
    a = jnp.arange(5 * 3 * 4 * 2, dtype=jnp.float32).reshape(5, 3, 4, 2)  # NCHW
    seen = []

    def form(chunk):  # (n, H, W, C) in, (n, H, W, C) out
        seen.append(chunk.shape)
        return chunk * jnp.arange(1.0, 4.0)

    got = chunks.map_channels_last(form, a, "NCHW", 2, transpose_by_chunk=by_chunk)
    np.testing.assert_array_equal(got, a * jnp.arange(1.0, 4.0)[:, None, None])
    assert all(shape[1:] == (4, 2, 3) for shape in seen)


@pytest.mark.parametrize("shards, size", [(2, 1), (2, 2), (3, 2), (4, 1), (2, 3)])
def test_chunks_of_every_part_give_the_one_pass_result(shards, size):
    # 12 images in `shards` parts; sizes that leave a rest in each part too.
    a, b = (jnp.arange(12 * 4 * 3, dtype=jnp.float32).reshape(12, 4, 3) + k for k in (0, 7))
    expected = np.asarray(_per_image(a, b))
    for as_state in (False, True):
        got = chunks.map_over_images(_per_image, (a, b), size, as_state, shards)
        np.testing.assert_array_equal(np.asarray(got), expected)
    total = chunks.sum_over_images(lambda a: jnp.sum(a**2, axis=0), (a,), size, shards)
    np.testing.assert_array_equal(np.asarray(total), np.sum(np.asarray(a) ** 2, axis=0))


def test_split_images_takes_each_chunk_from_every_part():
    a = jnp.arange(10)  # two parts of 5: chunks of 2 from each, and one image left in each
    stacked, rest = chunks.split_images((a,), 2, shards=2)
    np.testing.assert_array_equal(stacked[0], [[0, 1, 5, 6], [2, 3, 7, 8]])
    np.testing.assert_array_equal(rest[0], [4, 9])
