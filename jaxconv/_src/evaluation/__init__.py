"""How the rules of `rules.py` are evaluated: fast forms, chunking, and the plan that picks them.

- `plan`: the `Plan`, `choose(geometry, platform)` and `supported(geometry)`.
- `evaluate`: runs a rule by the form a plan names (`forward`, `grad_input`, `grad_kernel`).
- `gemm`, `winograd`, `shallow`: the forms; `chunks`: a few images at a time;
  `complex_parts`: a complex pass as three real ones.
- `sharded`: each pass on the devices its operands live on; `mesh`: what JAX says of them.
"""
