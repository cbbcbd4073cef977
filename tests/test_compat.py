"""What jaxconv finds out about the installed jax: the audit's fast-compile options."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxconv import check
from jaxconv._src import compat


def test_fast_compile_options_are_the_candidates_this_xla_accepts():
    options = compat.fast_compile_options()
    assert set(options) <= set(compat.FAST_COMPILE_CANDIDATES)
    assert all(compat.FAST_COMPILE_CANDIDATES[k] == v for k, v in options.items())
    # The optimisation level exists in every XLA jaxconv supports; it is the option that
    # matters most for compile time.
    assert options.get("xla_backend_optimization_level") == 0
    # Each option kept compiles and computes; each one left out is refused by this XLA.
    out = jax.jit(lambda x: x * 2 + 1, compiler_options=options)(jnp.arange(3.0))
    np.testing.assert_array_equal(out, [1.0, 3.0, 5.0])
    for name, value in compat.FAST_COMPILE_CANDIDATES.items():
        if name not in options:
            assert not compat._compiles_with({name: value})


def test_an_unknown_option_is_detected_not_raised():
    assert not compat._compiles_with({"xla_no_such_option_in_any_release": True})


def test_the_audit_says_which_compile_path_it_took(capsys):
    assert check.main(["--n", "1", "--seed", "3", "--dtype", "float32"]) == 0
    out = capsys.readouterr().out.splitlines()
    line = next(line for line in out if line.startswith("jax "))
    assert line.startswith(f"jax {jax.__version__} on {jax.default_backend()}; fast compile: ")
    for name in compat.fast_compile_options():
        assert name in line
    for name in set(compat.FAST_COMPILE_CANDIDATES) - set(compat.fast_compile_options()):
        assert f"{name}" in line and "not in this XLA" in line
