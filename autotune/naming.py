"""How tuning studies are named: one tag per problem (B4-H16-N4096-D128-causal-bf16), written by
problem_tag and read back by problem_from_tag (the plots find a study's problem so), and one study
name per command, which is what makes resuming work."""

from __future__ import annotations

import re

from einsim.errors import ConfigError
from einsim.problem import Problem


def problem_tag(problem: Problem) -> str:
    """B4-H16-N4096-D128-causal-bf16 (-KVn, -Qn, -DVn, -wL.R where they differ from the plain case)."""
    heads = f"H{problem.q_heads}" + (f"-KV{problem.kv_heads}" if problem.kv_heads != problem.q_heads else "")
    mask = "causal" if problem.causal else "full"
    if problem.window is not None:
        mask += f"-w{problem.window[0]}.{problem.window[1]}"
    q = f"-Q{problem.q_len}" if problem.q_len != problem.kv_len else ""
    dv = f"-DV{problem.v_head_dim}" if problem.v_head_dim != problem.head_dim else ""
    return f"B{problem.batch}-{heads}{q}-N{problem.kv_len}-D{problem.head_dim}{dv}-{mask}-{problem.dtype}"


_TAG = re.compile(
    r"B(?P<batch>\d+)-H(?P<heads>\d+)(?:-KV(?P<kv>\d+))?(?:-Q(?P<q>\d+))?-N(?P<n>\d+)-D(?P<d>\d+)"
    r"(?:-DV(?P<dv>\d+))?-(?P<mask>full|causal)(?:-w(?P<left>\d+)\.(?P<right>\d+))?-(?P<dtype>\w+)$")


def problem_from_tag(tag: str) -> Problem:
    """The Problem problem_tag wrote (B4-H16-N4096-D128-causal-bf16): what the plots read back."""
    match = _TAG.match(tag)
    if not match:
        raise ConfigError(f"not an einsim problem tag: {tag!r}")
    g = match.groupdict()
    n = int(g["n"])
    return Problem(
        batch=int(g["batch"]), q_heads=int(g["heads"]), kv_heads=int(g["kv"] or g["heads"]),
        q_len=int(g["q"] or n), kv_len=n, head_dim=int(g["d"]), causal=g["mask"] == "causal",
        window=(int(g["left"]), int(g["right"])) if g["left"] is not None else None, dtype=g["dtype"],
        v_head_dim=int(g["dv"]) if g["dv"] else None)


def default_study_name(kernel: str, problem: Problem, target: str, *, dry_run: bool = False,
                       exhaustive: bool = False) -> str:
    """The same command always names the same study, which is what makes resuming work."""
    name = f"{kernel}/{target}/{problem_tag(problem)}"
    if dry_run:
        name += "/dry-run"
    if exhaustive:
        name += "/exhaustive"
    return name
