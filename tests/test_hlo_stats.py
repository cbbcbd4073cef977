"""benchmarks/hlo_stats.py: flops, loops and collectives read from compiled HLO, against
counts worked out by hand for programs whose work is known."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
from jax import lax

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import hlo_stats


def _hlo(fn, *args) -> str:
    return jax.jit(fn).lower(*args).compile().as_text()


def test_a_dot_counts_two_flops_per_multiply_add():
    a, b = jnp.ones((8, 5), jnp.float32), jnp.ones((5, 3), jnp.float32)
    assert hlo_stats.contraction_flops(_hlo(jnp.dot, a, b)) == 2 * 8 * 5 * 3


def test_a_loop_body_counts_once_per_trip_and_nested_loops_multiply():
    a = jnp.ones((16, 16), jnp.float32)

    def inner(x):
        return lax.fori_loop(0, 3, lambda i, y: jnp.tanh(y @ a), x)

    def outer(x):
        return lax.fori_loop(0, 4, lambda i, y: inner(y) + 1.0, x)

    hlo = _hlo(outer, a)
    assert sorted(hlo_stats.while_trip_counts(hlo)) == [3, 4]
    assert hlo_stats.contraction_flops(hlo) == 4 * 3 * 2 * 16**3


def test_a_convolution_counts_its_window_and_input_channels():
    x, w = jnp.ones((2, 3, 9, 9), jnp.float32), jnp.ones((4, 3, 3, 3), jnp.float32)
    hlo = _hlo(lambda x, w: lax.conv_general_dilated(x, w, (1, 1), "VALID"), x, w)
    assert hlo_stats.contraction_flops(hlo) == 2 * (2 * 4 * 7 * 7) * (3 * 3 * 3)


HLO_WITH_AN_ALL_REDUCE_IN_A_LOOP = """\
HloModule m

%sum (a: f32[], b: f32[]) -> f32[] {
  %a = f32[] parameter(0)
  %b = f32[] parameter(1)
  ROOT %add = f32[] add(%a, %b)
}

%body (p: (s32[], f32[64])) -> (s32[], f32[64]) {
  %p = (s32[], f32[64]{0}) parameter(0)
  %v = f32[64]{0} get-tuple-element(%p), index=1
  %r = f32[64]{0} all-reduce(%v), replica_groups={}, to_apply=%sum
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %t = (s32[], f32[64]{0}) tuple(%i, %r)
}

%cond (p: (s32[], f32[64])) -> pred[] {
  %p = (s32[], f32[64]{0}) parameter(0)
  ROOT %c = pred[] constant(true)
}

ENTRY %main (x: f32[64]) -> f32[64] {
  %x = f32[64]{0} parameter(0)
  %g = f32[32]{0} all-gather(%x), dimensions={0}
  %z = s32[] constant(0)
  %t = (s32[], f32[64]{0}) tuple(%z, %x)
  %w = (s32[], f32[64]{0}) while(%t), condition=%cond, body=%body, \
backend_config={"known_trip_count":{"n":"5"}}
  ROOT %o = f32[64]{0} get-tuple-element(%w), index=1
}
"""


def test_collectives_count_with_their_loops_and_bytes():
    found = hlo_stats.collectives(HLO_WITH_AN_ALL_REDUCE_IN_A_LOOP)
    assert sorted((c.kind, c.bytes, c.times) for c in found) == [
        ("all-gather", 32 * 4, 1),
        ("all-reduce", 64 * 4, 5),
    ]


def test_scope_costs_tell_the_passes_and_forms_apart():
    # A conv's forward and both gradients, each by the form its plan names: every
    # instruction of the module is counted once, under its pass and form or outside.
    import jaxconv

    x, w = jnp.ones((2, 6, 6, 3)), jnp.ones((3, 3, 3, 4))
    plan = jaxconv.Plan(forward="gemm-rows", grad_input="shallow", grad_kernel="gemm-taps")

    def loss(x, w):
        return jnp.sum(jaxconv.conv2d(x, w, layout="NHWC", plan=plan) ** 2)

    hlo = _hlo(jax.grad(loss, argnums=(0, 1)), x, w)
    costs = hlo_stats.scope_costs(hlo, hlo_stats.FORM_SCOPE)
    assert set(costs) - {hlo_stats.OUTSIDE} == {
        "forward gemm-rows",
        "grad_input shallow",
        "grad_kernel gemm-taps",
    }
    computations, _ = hlo_stats.parse(hlo)
    every = [i for instructions in computations.values() for i in instructions]
    assert sum(c["instructions"] for c in costs.values()) == len(every)
    assert sum(c["fusions"] for c in costs.values()) == sum(i.op == "fusion" for i in every)
    assert list(costs.values()) == sorted(costs.values(), key=lambda c: -c["instructions"])
    dots = [i for i in every if i.op == "dot"]
    assert dots and all("jaxconv." in i.rest for i in dots)  # no GEMM is left outside


def test_scope_costs_give_a_fused_computation_the_scope_of_its_fusion():
    a = jnp.ones((64,), jnp.float32)

    def fn(a):
        with jax.named_scope("layer_one"):
            return jnp.tanh(a * 2.0 + 1.0)

    hlo = _hlo(fn, a)
    costs = hlo_stats.scope_costs(hlo, re.compile(r"\blayer_(\w+)"))
    computations, _ = hlo_stats.parse(hlo)
    fused = [n for n in computations if "fused" in n or "fusion" in n]
    assert fused  # XLA fused the elementwise chain
    in_fused = sum(len(computations[n]) for n in fused)
    assert costs["one"]["instructions"] >= in_fused  # parameters included
    assert costs["one"]["fusions"] == 1
