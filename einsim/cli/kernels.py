"""`einsim kernels list|show NAME`: the Triton kernels einsim has, the cascade each implements,
its config knobs, and (for a shape) its default config, shared memory and search space. Needs no
torch or triton: it reads the registry and the resource models only."""

from __future__ import annotations

import argparse
import dataclasses

from einsim.cli.output import print_json, render_table
from einsim.cli.problem_args import add_problem_arguments, kernel_problem_from_args

DEFAULT_SHAPE = "1,16,16384,128"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("kernels", help="list the Triton kernels or show one's configs")
    actions = parser.add_subparsers(dest="kernels_action", metavar="ACTION")
    listing = actions.add_parser("list", help="every kernel, with its cascade and config knobs")
    listing.add_argument("--json", action="store_true", help="print JSON")
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="one kernel's default config, resources and search "
                                           "space for a shape")
    show.add_argument("name", help="kernel name (einsim kernels list)")
    add_problem_arguments(show)  # without --shape or --model: DEFAULT_SHAPE
    show.add_argument("--json", action="store_true", help="print JSON")
    show.set_defaults(handler=_show)
    parser.set_defaults(handler=lambda args: (parser.print_help(), 2)[1])


def _fields(config_type) -> str:
    return ", ".join(f.name for f in dataclasses.fields(config_type))


def _list(args: argparse.Namespace) -> int:
    from einsim.kernels.registry import KERNELS

    rows = [{"name": spec.name, "cascade": spec.cascade, "pass": spec.direction,
             "config": spec.config_type.__name__, "knobs": _fields(spec.config_type),
             "description": spec.description}
            for spec in sorted(KERNELS.values(), key=lambda s: s.name)]
    if args.json:
        print_json(rows)
    else:
        print(render_table(["name", "cascade", "pass", "config", "knobs", "description"],
                           [list(r.values()) for r in rows]))
    return 0


def _show(args: argparse.Namespace) -> int:
    from einsim.kernels.limits import DeviceLimits
    from einsim.kernels.registry import get_kernel

    spec = get_kernel(args.name)
    # B,H,N,D means self-attention, except for decode, whose N is the KV-cache length and which
    # takes one query row per step (as `einsim autotune --kernel decode` does)
    problem = kernel_problem_from_args(args, default_shape=DEFAULT_SHAPE, decode=args.name == "decode")
    limits = DeviceLimits.h100()
    default = spec.resolve_config(None, problem, limits)
    space = spec.search_space(problem)
    result = {
        "name": spec.name, "cascade": spec.cascade, "pass": spec.direction,
        "description": spec.description, "problem": problem.describe(),
        "default_config": default,
        "default_shared_memory_bytes": spec.shared_memory_bytes(default, problem),
        "default_fits_h100": not spec.config_reasons(default, problem, limits),
        "search_space_size": len(space), "flops": spec.flops(problem),
        "min_bytes": spec.min_bytes(problem),
    }
    if args.json:
        print_json(result)
        return 0
    print(f"{spec.name} ({spec.direction}, cascade {spec.cascade}): {spec.description}")
    print(f"  problem        {result['problem']}")
    print(f"  default config {default}")
    print(f"  shared memory  {result['default_shared_memory_bytes']} bytes per program "
          f"(H100 allows {limits.shared_memory_per_block})")
    print(f"  search space   {len(space)} configs that fit an H100")
    print(f"  work           {result['flops'] / 1e12:.4g} TFLOP over visible pairs, "
          f"{result['min_bytes'] / 1e9:.4g} GB compulsory HBM traffic")
    return 0
