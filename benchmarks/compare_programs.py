"""Whether a change of jaxconv changed the programs it compiles: this checkout against a git rev.

    python benchmarks/compare_programs.py REV [--workloads ABCDEFGHIJ] [--layouts NCHW,NHWC]
                                              [--passes fwd,fwd+bwd,dX,dW] [--repeats 20]

jaxconv at REV is unpacked beside this checkout's under another package name, so both load in
one process. For every workload, layout and pass of `bench_conv.py` it prints whether the two
trace the same jaxpr and the same `dot_general`s (shapes, dimension numbers, loop trip counts:
`bench_gemms.program_dots`), then times the two interleaved (`bench_conv.time_interleaved`)
and prints new/old. Exit status 1 if any jaxpr differs.
"""

from __future__ import annotations

import argparse
import importlib
import io
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import jax
import numpy as np
from bench_conv import PASSES, WORKLOADS, jax_programs, time_interleaved, workload_operands
from bench_gemms import program_dots

import jaxconv

ROOT = Path(__file__).resolve().parents[1]
OLD = "jaxconv_at_rev"


def load_rev(rev: str, into: Path):
    """jaxconv as it was at `rev`, importable as `OLD`."""
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev, "jaxconv"],
        check=True,
        capture_output=True,
    ).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    (into / "jaxconv").rename(into / OLD)
    for path in (into / OLD).rglob("*.py"):
        text = re.sub(r"\bjaxconv\b(?=[._ ])", OLD, path.read_text())
        path.write_text(text)
    sys.path.insert(0, str(into))
    return importlib.import_module(OLD)


def dots(fn, args) -> list[tuple]:
    """The program's dot_generals: operand shapes, dimension numbers and trip counts."""
    jaxpr = jax.make_jaxpr(fn)(*args).jaxpr
    return [
        (
            tuple(v.aval.shape for v in d.eqn.invars),
            d.eqn.params["dimension_numbers"],
            d.times,
        )
        for d in program_dots(jaxpr)
    ]


def _jaxpr_text(fn, args) -> str:
    """The jaxpr's text with the names of functions (which a rename changes, and with them
    the line wrapping) replaced: the equations must not differ."""
    text = str(jax.make_jaxpr(fn)(*args)).replace(OLD, "jaxconv")
    text = re.sub(r"\b(name|fwd|bwd|jaxpr)=\w+", r"\1=_", text)
    text = re.sub(r"\blet \w+ = \{", "let _ = {", text)
    text = re.sub(r"\s+", " ", text)
    return re.sub(r"\[ ", "[", re.sub(r" \]", "]", text))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("rev", help="the git revision to compare against, e.g. main or a hash")
    two_d = [n for n in WORKLOADS if len(WORKLOADS[n]) == 3 and len(WORKLOADS[n][0]) == 4]
    parser.add_argument("--workloads", default="".join(two_d), help="2-D ones: A–J")
    parser.add_argument("--layouts", default="NCHW,NHWC")
    parser.add_argument("--passes", default=",".join(PASSES))
    parser.add_argument("--repeats", type=int, default=20, help="timed runs per measurement")
    parser.add_argument("--warm", type=int, default=1, help="untimed runs before each timed one")
    args = parser.parse_args(argv)
    changed = 0
    with tempfile.TemporaryDirectory() as tmp:
        old = load_rev(args.rev, Path(tmp))
        here = Path(jaxconv.__file__).parent
        print(f"jaxconv of {here} against jaxconv at {args.rev}; jax {jax.__version__}")
        for name in args.workloads:
            for layout in args.layouts.split(","):
                x_np, w_np, cfg = workload_operands(name, layout)
                x, w = jax.numpy.asarray(x_np), jax.numpy.asarray(w_np)
                cfg = dict(cfg, layout=layout)
                new_programs = jax_programs(jaxconv.conv2d, x, w, cfg)
                old_programs = _old_programs(old, x, w, cfg)
                for pass_ in args.passes.split(","):
                    (fn_new, a_new), (fn_old, a_old) = new_programs[pass_], old_programs[pass_]
                    same_jaxpr = _jaxpr_text(fn_new, a_new) == _jaxpr_text(fn_old, a_old)
                    same_dots = dots(fn_new, a_new) == dots(fn_old, a_old)
                    changed += not same_jaxpr
                    times = time_interleaved(
                        {
                            "new": lambda f=fn_new, a=a_new: f(*a),
                            "old": lambda f=fn_old, a=a_old: f(*a),
                        },
                        args,
                    )
                    ratio = float(np.median(times["new"]) / np.median(times["old"]))
                    print(
                        f"{name} {layout:4} {pass_:7} jaxpr {'same' if same_jaxpr else 'DIFFERS'}"
                        f"  dot_generals {'same' if same_dots else 'DIFFER'}"
                        f"  new/old {ratio:.3f}"
                    )
    print(f"{changed} programs differ")
    return 1 if changed else 0


def _old_programs(old, x, w, cfg):
    """bench_conv.jax_programs of the old package's conv2d and gradient functions."""
    import bench_conv

    saved = bench_conv.jaxconv
    bench_conv.jaxconv = old
    try:
        return jax_programs(old.conv2d, x, w, cfg)
    finally:
        bench_conv.jaxconv = saved


if __name__ == "__main__":
    sys.exit(main())
