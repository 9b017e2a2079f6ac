"""How tuning studies are named: one tag per problem (B4-H16-N4096-D128-causal-bf16, what the
plots parse back) and one study name per command, which is what makes resuming work."""

from __future__ import annotations

from einsim.problem import Problem


def problem_tag(problem: Problem) -> str:
    heads = f"H{problem.q_heads}" + (f"-KV{problem.kv_heads}" if problem.kv_heads != problem.q_heads else "")
    mask = "causal" if problem.causal else "full"
    if problem.window is not None:
        mask += f"-w{problem.window[0]}.{problem.window[1]}"
    q = f"-Q{problem.q_len}" if problem.q_len != problem.kv_len else ""
    dv = f"-DV{problem.v_head_dim}" if problem.v_head_dim != problem.head_dim else ""
    return f"B{problem.batch}-{heads}{q}-N{problem.kv_len}-D{problem.head_dim}{dv}-{mask}-{problem.dtype}"


def default_study_name(kernel: str, problem: Problem, target: str, *, dry_run: bool = False,
                       exhaustive: bool = False) -> str:
    """The same command always names the same study, which is what makes resuming work."""
    name = f"{kernel}/{target}/{problem_tag(problem)}"
    if dry_run:
        name += "/dry-run"
    if exhaustive:
        name += "/exhaustive"
    return name
