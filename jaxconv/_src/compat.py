"""What differs between the jax releases jaxconv supports, found out at run time.

jaxconv is tested on its oldest supported jax (0.10.2) and the newest release (0.12.x). Where
the two differ in something jaxconv uses, this module asks the installed jax instead of
assuming a version: today only the XLA options of the audit's fast compile, some of which
newer XLA builds no longer have.
"""

from __future__ import annotations

import functools

import jax

# Every configuration the audit draws is a new program on operands of a few hundred numbers,
# so compiling dominates; XLA's CPU backend at optimisation level 0, with its older emitters
# (where this XLA still has them), compiles several times faster and does the same arithmetic.
FAST_COMPILE_CANDIDATES = {
    "xla_cpu_use_fusion_emitters": False,
    "xla_backend_optimization_level": 0,
}


def _compiles_with(options: dict[str, object]) -> bool:
    try:
        jax.jit(lambda x: x + 1, compiler_options=options).lower(1.0).compile()
    except Exception as error:  # jaxlib raises its own type for an unknown option
        if "compile option" in str(error):
            return False
        raise
    return True


@functools.cache
def _fast_compile_options(backend: str) -> tuple[tuple[str, object], ...]:
    del backend  # the cache key: each backend's XLA knows its own options
    return tuple(
        (name, value)
        for name, value in FAST_COMPILE_CANDIDATES.items()
        if _compiles_with({name: value})
    )


def fast_compile_options() -> dict[str, object]:
    """The options of `FAST_COMPILE_CANDIDATES` that the default backend's XLA accepts, as
    `jax.jit(..., compiler_options=)` takes them; probed once per backend by compiling a
    one-operation program with each."""
    return dict(_fast_compile_options(jax.default_backend()))


def describe_fast_compile() -> str:
    """Which fast-compile options the audit and the sweeps run with, and which this XLA lacks."""
    used = fast_compile_options()
    missing = [name for name in FAST_COMPILE_CANDIDATES if name not in used]
    text = ", ".join(f"{k}={v}" for k, v in used.items()) or "none"
    if missing:
        text += f" ({', '.join(missing)}: not in this XLA, left out)"
    return f"fast compile: {text}"
