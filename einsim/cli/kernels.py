"""`einsim kernels list|show NAME|compile FILE`: the Triton kernels einsim has, the cascade each
implements, its config knobs, and (for a shape) its default config, shared memory and search
space; `compile` turns a cascade into its fused kernels and says what it made of it. Needs no
torch or triton: it reads the registry, the resource models and the generated source only."""

from __future__ import annotations

import argparse
import dataclasses

from einsim.cli.output import add_wide_argument, print_json
from einsim.text import fit_text, render_table
from einsim.cli.problem_args import add_problem_arguments, kernel_problem_from_args

DEFAULT_SHAPE = "1,16,16384,128"


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("kernels", help="list the Triton kernels or show one's configs")
    actions = parser.add_subparsers(dest="kernels_action", metavar="ACTION")
    listing = actions.add_parser("list", help="every kernel, with its cascade and config knobs")
    listing.add_argument("--json", action="store_true", help="print JSON")
    add_wide_argument(listing)
    listing.set_defaults(handler=_list)
    show = actions.add_parser("show", help="one kernel's default config, resources and search "
                                           "space for a shape")
    show.add_argument("name", help="kernel name (einsim kernels list)")
    add_problem_arguments(show)  # without --shape or --model: DEFAULT_SHAPE
    show.add_argument("--json", action="store_true", help="print JSON")
    add_wide_argument(show)
    show.set_defaults(handler=_show)
    compile_ = actions.add_parser(
        "compile", help="compile a softmax-attention cascade to fused forward/backward kernels",
        description="Recognise the cascade's softmax-attention form, generate its Triton kernels "
        "(written to the compile cache, $EINSIM_COMPILE_DIR or ~/.cache/einsim/compiled) and "
        "register them; prints the score, its derivative, the mask and how tiles are skipped.")
    compile_.add_argument("cascade", help="cascade YAML file or library name (einsim cascades list)")
    compile_.add_argument("--show-source", action="store_true", help="print the generated module")
    compile_.add_argument("--json", action="store_true", help="print JSON")
    add_wide_argument(compile_)
    compile_.set_defaults(handler=_compile)
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
                           [list(r.values()) for r in rows], shrink=["description", "cascade"],
                           drop=["config", "knobs"]))
        print("(einsim kernels show NAME: one kernel's knobs, default config and search space)")
    return 0


def _show(args: argparse.Namespace) -> int:
    from einsim.kernels.limits import DeviceLimits
    from einsim.kernels.registry import get_kernel
    from einsim.units import format_bytes

    spec = get_kernel(args.name)
    # B,H,N,D means self-attention, except for decode, whose N is the KV-cache length and which
    # takes one query row per step (as `einsim autotune --kernel decode` does)
    problem = kernel_problem_from_args(args, default_shape=DEFAULT_SHAPE, decode=args.name in ("decode", "decode-paged"))
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
    print(fit_text(f"{spec.name} ({spec.direction}, cascade {spec.cascade}): {spec.description}", "  "))
    print(fit_text(f"  problem        {result['problem']}", " " * 17))
    print(f"  knobs          {_fields(spec.config_type)}")
    print(fit_text(f"  default config {default}", " " * 17))
    print(f"  shared memory  {result['default_shared_memory_bytes']} bytes per program "
          f"(H100 allows {limits.shared_memory_per_block})")
    print(f"  search space   {len(space)} configs that fit an H100")
    print(f"  work           {result['flops'] / 1e12:.4g} TFLOP over visible pairs, "
          f"{format_bytes(result['min_bytes'])} compulsory HBM traffic")
    return 0


def _compile(args: argparse.Namespace) -> int:
    from einsim.kernels.compiler import compile as compile_cascade
    from einsim.kernels.compiler.registry import kernel_stem
    from einsim.kernels.compiler.source_cache import write_source

    compiled = compile_cascade(args.cascade)
    generated, form = compiled.generated, compiled.form
    path = write_source(generated.source, generated.digest)
    stem = kernel_stem(compiled)
    roles = form.roles
    result = {
        "cascade": compiled.cascade.name, "source": compiled.cascade.source,
        "kernels": [f"{stem}-fwd", f"{stem}-bwd"],
        "q": form.q, "k": form.k, "v": form.v, "output": form.output,
        "ranks": {"batch": roles.batch, "heads": roles.head, "kv_heads": roles.kv_head,
                  "queries": roles.query, "keys": roles.key, "head_dim": roles.head_dim,
                  "value_dim": roles.value_dim},
        "score": str(form.score), "score_derivative": generated.score_derivative,
        "mask": [f.text for f in form.mask], "tile_skipping": generated.mask_mode,
        "extra_inputs": {n: list(compiled.cascade.inputs[n]) for n in compiled.extra_inputs},
        "symbols": list(generated.symbols), "generated_file": str(path),
    }
    if args.json:
        if args.show_source:
            result["generated_source"] = generated.source
        print_json(result)
        return 0
    if args.show_source:
        print(generated.source)
        return 0
    ranks = result["ranks"]
    skipping = {"ranges": "tile ranges from the mask's affine bounds (masked edges, unmasked middle)",
                "blocks": "a block mask built on the GPU from the element mask"}[generated.mask_mode]

    def say(line: str) -> None:
        print(fit_text(line, " " * 17))

    say(f"{result['cascade']} ({result['source']}): softmax attention, compiled")
    say(f"  kernels        {', '.join(result['kernels'])}")
    say(f"  inputs         {form.q} (queries), {form.k} (keys), {form.v} (values)"
        + "".join(f", {n}[{', '.join(r)}]" for n, r in result["extra_inputs"].items()))
    say(f"  ranks          batch {ranks['batch']}, heads {ranks['heads']}"
        + (f" (key/value heads {ranks['kv_heads']})" if ranks["kv_heads"] != ranks["heads"] else "")
        + f", queries {ranks['queries']}, keys {ranks['keys']}, head dim {ranks['head_dim']}, "
        f"value dim {ranks['value_dim']}")
    say(f"  score S        {result['score']}   (QK = scale * Q.K, scale 1/sqrt(head dim) by default)")
    say(f"  dS/dQK         {result['score_derivative']}")
    say(f"  mask           {' and '.join(result['mask']) or '(none)'}")
    say(f"  tile skipping  {skipping}")
    if result["symbols"]:
        say(f"  symbols        {', '.join(result['symbols'])} (keyword arguments of the call)")
    say(f"  generated      {path}  (--show-source prints it)")
    return 0
