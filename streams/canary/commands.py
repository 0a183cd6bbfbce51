"""CLI commands of the canary: `flywheel canary start|stop|status`."""

from __future__ import annotations

import asyncio
import json

import click

from kernel.cli import RunFailure, UsageFailure, ctx


def _act(action: str, task_name: str, version: str | None, share: float | None, reason: str) -> None:
    from kernel.lifecycle import TransitionError
    from streams.promote.apply import apply
    from streams.promote.policy import PromotionError

    from .store import ensure_tables

    c = ctx()
    c.task(task_name)
    with c.store() as store:
        ensure_tables(store)
        try:
            d = asyncio.run(apply(store, c.settings.kafka, action, task_name, version, reason=reason, share=share))
        except (PromotionError, TransitionError) as exc:
            raise RunFailure(str(exc)) from None
    r = d.route
    if action == "canary_start":
        click.echo(f"{task_name}: {d.version} in canary beside {r.serving} on {r.canary_share * 100:.0f}% of live "
                   f"requests (revision {r.revision})")
        click.echo(f"`flywheel canary status --task {task_name}` shows the pairs and the judge's decisions")
    else:
        verb = "aborted (rejected)" if action == "canary_abort" else "stopped (back to approved)"
        click.echo(f"{task_name}: canary {d.version} {verb} (revision {r.revision}); {r.serving} keeps serving")


@click.group("canary")
def canary_group():
    """Shadow a candidate on live traffic and judge it on paired answers."""


@canary_group.command("start")
@click.option("--task", "task_name", required=True, help="Task name.")
@click.option("--model", "version", required=True, help="A gate-approved version to shadow the serving one.")
@click.option("--pct", type=float, default=None, help="Percent of live requests the candidate also answers "
                                                      "[default: the task's [canary] pct].")
@click.option("--reason", default="", help="Why (kept in the history).")
def start_cmd(task_name, version, pct, reason):
    """Put VERSION in canary: the worker's canary stage asks it too on a share of live requests."""
    from .config import canary_config

    if pct is None:
        pct = canary_config(ctx().task(task_name)).pct
    if not 0 < pct <= 100:
        raise UsageFailure(f"--pct must be above 0 and at most 100, got {pct}")
    _act("canary_start", task_name, version, pct / 100.0, reason)


@canary_group.command("stop")
@click.option("--task", "task_name", required=True, help="Task name.")
@click.option("--model", "version", default=None, help="The version in canary (checked if given).")
@click.option("--abort", is_flag=True, help="Reject the candidate (it cannot be put in canary again without "
                                            "a new gate approval).")
@click.option("--reason", default="", help="Why (kept in the history).")
def stop_cmd(task_name, version, abort, reason):
    """Take the canary off (approved again; with --abort: rejected). The serving version is untouched."""
    _act("canary_abort" if abort else "canary_stop", task_name, version, None, reason)


@canary_group.command("status")
@click.option("--task", "task_name", required=True, help="Task name.")
@click.option("--limit", type=int, default=10, show_default=True, help="Decisions to show.")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status_cmd(task_name, limit, as_json):
    """The canary of a task: its pairs per slice, the judge's verdict now and its stored decisions."""
    import time

    from serving import history

    from . import judge as J
    from .config import canary_config
    from .stage import verdict
    from .store import counts, decisions, ensure_tables, started_at

    c = ctx()
    cfg = canary_config(c.task(task_name))
    with c.store() as store:
        ensure_tables(store)
        history.ensure_table(store)
        cur = history.current(store, task_name)
        past = decisions(store, task_name, limit)
        now = None
        if cur is not None and cur.canary and cur.serving:
            per = counts(store, task_name, cur.canary, cur.serving)
            t0 = started_at(store, task_name, cur.canary)
            now = verdict(cfg, c.task(task_name), per, time.time() - t0 if t0 else 0.0)
    if as_json:
        click.echo(json.dumps({"task": task_name, "serving": cur.serving if cur else None,
                               "canary": cur.canary if cur else None,
                               "canary_share": cur.canary_share if cur else 0.0, "settings": cfg.to_dict(),
                               "now": None if now is None else {"outcome": now.outcome, "reason": now.reason,
                                                                "pairs": now.pairs, "evidence": now.evidence},
                               "decisions": [{**d, "evidence": json.loads(d["evidence"]), "decided_at": str(d["decided_at"])}
                                             for d in past]}, default=str))
        return
    click.echo(f"task {task_name}: serving {cur.serving if cur else '-'}; canary "
               + (f"{cur.canary} on {cur.canary_share * 100:.0f}% of live requests" if cur and cur.canary else "none"))
    click.echo(f"settings: pct {cfg.pct:g}, min_pairs {cfg.min_pairs}, min_duration {cfg.min_duration:g}s, "
               f"max_disagreement {cfg.max_disagreement:g}, slice_tolerance {cfg.slice_tolerance:g}, alpha {cfg.alpha:g}, "
               f"auto_promote {str(cfg.auto_promote).lower()}, auto_rollback {str(cfg.auto_rollback).lower()}")
    if now is not None:
        click.echo(f"judge now: {now.outcome.upper()} after {now.pairs} pairs: {now.reason}")
        click.echo(f"  {'slice':<16} {'pairs':>6} {'disagree':>8} {'rate':>6} {'errors':>6} {'teacher':>7} "
                   f"{'better':>6} {'worse':>6}  within bound")
        for name, e in now.evidence["slices"].items():
            click.echo(f"  {name if name != J.ALL else '(all)':<16} {e['pairs']:>6} {e['disagree']:>8} "
                       f"{e['disagreement_rate'] if e['disagreement_rate'] is not None else '-':>6} {e['errors']:>6} "
                       f"{e['teacher']:>7} {e['cand_better']:>6} {e['cand_worse']:>6}  "
                       f"{'yes' if e['fine'] else 'not yet'} (<= {e['bound']})")
    if past:
        click.echo("decisions (newest first):")
        for d in past:
            act = f" -> {d['action']}" if d["action"] != "none" else ""
            click.echo(f"  {str(d['decided_at'])[:19]}  {d['candidate_version']} vs {d['incumbent_version']}: "
                       f"{d['outcome']}{act} after {d['pairs']} pairs: {d['reason']}")
    elif now is None:
        click.echo(f"no canary decisions yet; start one with `flywheel canary start --task {task_name} --model VERSION`")


commands: list = [canary_group]
