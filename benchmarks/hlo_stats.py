"""What a compiled XLA program does per device: its collectives, loops and contraction flops.

Read from the optimised HLO text (`jax.jit(f).lower(...).compile().as_text()`), where shapes
are per device once the program is partitioned. Every instruction counts as many times as it
runs: a while loop's body and condition its known trip count times, nested loops the product.
`cost_analysis()` counts a loop body once, whatever its trip count, so its "flops" undercount
looped programs (jaxconv's chunk loops); `contraction_flops` does not.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator

COLLECTIVES = ("all-reduce", "all-gather", "reduce-scatter", "all-to-all", "collective-permute")
_BYTES = {"pred": 1, "s8": 1, "u8": 1, "f16": 2, "bf16": 2, "s16": 2, "u16": 2}
_BYTES |= {"f32": 4, "s32": 4, "u32": 4, "f64": 8, "s64": 8, "u64": 8, "c64": 8, "c128": 16}

_HEADER = re.compile(r"^(ENTRY )?%?([\w.\-]+) \(.*\) -> .* \{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (.*?) ([a-z][\w\-]*)\((.*)$")
_SHAPE = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_CALLEES = re.compile(r"\b(condition|body|calls|to_apply)=%([\w.\-]+)")
_CALLEE_LISTS = re.compile(r"\b(?:branch_computations|called_computations)=\{([^}]*)\}")
_TRIP_COUNT = re.compile(r'"known_trip_count":\{"n":"(\d+)"\}')
_OP_NAME = re.compile(r'op_name="([^"]*)"')
# jaxconv traces each pass in the scope `jaxconv.<pass>.<form>` (evaluate.form_scope).
FORM_SCOPE = re.compile(r"\bjaxconv\.(forward|grad_input|grad_kernel)\.([\w-]+)")
OUTSIDE = "outside any scope"


@dataclasses.dataclass(frozen=True)
class Instruction:
    name: str
    type: str
    op: str
    rest: str  # operands and attributes


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective instruction: its kind, the bytes of its result, and how often it runs."""

    kind: str
    bytes: int
    times: int


def shapes(type_text: str) -> list[tuple[str, tuple[int, ...]]]:
    """(dtype, dims) of every array in an HLO type (one array, or a tuple of them)."""
    return [
        (dtype, tuple(int(d) for d in dims.split(",") if d))
        for dtype, dims in _SHAPE.findall(type_text)
    ]


def type_bytes(type_text: str) -> int:
    """Bytes of every array in an HLO type."""
    return sum(_BYTES.get(dtype, 4) * math.prod(dims) for dtype, dims in shapes(type_text))


def parse(hlo: str) -> tuple[dict[str, list[Instruction]], str]:
    """(computation name -> its instructions, the entry computation's name)."""
    computations: dict[str, list[Instruction]] = {}
    entry, current = "", None
    for line in hlo.splitlines():
        header = _HEADER.match(line)
        if header:
            current = header.group(2)
            computations[current] = []
            if header.group(1):
                entry = current
            continue
        match = _INSTRUCTION.match(line)
        if match and current is not None:
            computations[current].append(Instruction(*match.groups()))
    return computations, entry


def _callees(instruction: Instruction) -> Iterator[str]:
    for _, name in _CALLEES.findall(instruction.rest):
        yield name
    for names in _CALLEE_LISTS.findall(instruction.rest):
        yield from re.findall(r"%([\w.\-]+)", names)


def times_run(computations: dict[str, list[Instruction]], entry: str) -> dict[str, int]:
    """How many times each computation runs per execution of the program."""
    times = dict.fromkeys(computations, 0)
    times[entry] = 1
    # HLO text defines every computation before its callers: walk callers first.
    for name in reversed(list(computations)):
        for instruction in computations[name]:
            trips = 1
            if instruction.op == "while":
                found = _TRIP_COUNT.search(instruction.rest)
                trips = int(found.group(1)) if found else 1
            for callee in _callees(instruction):
                if callee in times:
                    times[callee] += times[name] * trips
    return times


def while_trip_counts(hlo: str) -> list[int]:
    """The known trip count of every while loop (0 where XLA does not know it)."""
    counts = []
    for instructions in parse(hlo)[0].values():
        for instruction in instructions:
            if instruction.op == "while":
                found = _TRIP_COUNT.search(instruction.rest)
                counts.append(int(found.group(1)) if found else 0)
    return counts


def collectives(hlo: str) -> list[Collective]:
    """Every collective of the program (async ones by their start)."""
    computations, entry = parse(hlo)
    times = times_run(computations, entry)
    found = []
    for name, instructions in computations.items():
        for instruction in instructions:
            kind = instruction.op.removesuffix("-start")
            if kind in COLLECTIVES and times[name]:
                found.append(Collective(kind, type_bytes(instruction.type), times[name]))
    return found


def _operand_shapes(instruction: Instruction, shape_of: dict[str, tuple[int, ...]]):
    operands = instruction.rest.split(")", 1)[0]
    return [shape_of.get(name, ()) for name in re.findall(r"%([\w.\-]+)", operands)]


def _flops(instruction: Instruction, shape_of: dict[str, tuple[int, ...]]) -> int:
    out = math.prod(shapes(instruction.type)[0][1])
    operands = _operand_shapes(instruction, shape_of)
    if instruction.op == "dot":
        found = re.search(r"lhs_contracting_dims=\{([\d,]*)\}", instruction.rest)
        dims = [int(d) for d in found.group(1).split(",") if d] if found else []
        return 2 * out * math.prod(operands[0][d] for d in dims)
    labels = re.search(r"dim_labels=\w+_(\w+)->", instruction.rest)
    rhs = operands[1]
    out_features = rhs[labels.group(1).index("o")] if labels else 1
    return 2 * out * math.prod(rhs) // max(1, out_features)


def contraction_flops(hlo: str) -> int:
    """2 · multiply-adds of every dot and convolution, times the runs of its computation."""
    computations, entry = parse(hlo)
    times = times_run(computations, entry)
    shape_of = {
        i.name: shapes(i.type)[0][1]
        for instructions in computations.values()
        for i in instructions
        if shapes(i.type)
    }
    return sum(
        _flops(i, shape_of) * times[name]
        for name, instructions in computations.items()
        for i in instructions
        if i.op in ("dot", "convolution") and times[name]
    )


def summary(compiled) -> dict:
    """Per-device figures of a compiled program (`jax.stages.Compiled`)."""
    hlo = compiled.as_text()
    found = collectives(hlo)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return {
        "contraction_flops": contraction_flops(hlo),
        "cost_analysis_flops": float(cost.get("flops", 0.0)),
        "collectives": sorted({c.kind for c in found}),
        "collective_count": sum(c.times for c in found),
        "collective_bytes": sum(c.bytes * c.times for c in found),
        "all_gathers": sum(c.times for c in found if c.kind == "all-gather"),
        "trip_counts": sorted(while_trip_counts(hlo)),
    }


def scope_costs(hlo: str, scope: re.Pattern) -> dict[str, dict[str, int]]:
    """Instructions and fusions of an optimised module, by the innermost match of `scope` in
    each instruction's op name (its groups joined with spaces). An instruction with no op
    name (a fused computation's parameters, say) takes the scope of the instruction that
    calls its computation; `OUTSIDE` is for what no scope reaches.

    Every instruction counts once, wherever it is (fused computations and loop bodies
    included, as XLA compiles each once), as does every fusion instruction.

    Returns:
      {scope: {"instructions": n, "fusions": m}}, the largest first.
    """
    computations, _ = parse(hlo)
    caller_key: dict[str, str] = {}
    costs: dict[str, dict[str, int]] = {}
    # HLO text defines every computation before its callers: walk callers first.
    for name in reversed(list(computations)):
        for instruction in computations[name]:
            op_name = _OP_NAME.search(instruction.rest)
            found = list(scope.finditer(op_name.group(1))) if op_name else []
            if found:
                key = " ".join(found[-1].groups() or (found[-1].group(0),))
            else:
                key = caller_key.get(name, OUTSIDE)
            for callee in _callees(instruction):
                caller_key.setdefault(callee, key)
            cost = costs.setdefault(key, {"instructions": 0, "fusions": 0})
            cost["instructions"] += 1
            cost["fusions"] += instruction.op == "fusion"
    return dict(sorted(costs.items(), key=lambda kv: -kv[1]["instructions"]))
