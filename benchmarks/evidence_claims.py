"""The papers' claims, each with its measurement and verdict, from the result records of
benchmarks/evidence.py; the README's headline table; AROMA's stop analysis and knob guide.

Verdicts (per task, at this scale): "confirmed"; "refuted at this scale" (the opposite measured: a real
difference the other way, or a share far off the paper's); "not confirmed at this scale" (no real
difference either way); "not testable here" (with why); "pending" (with the runs still missing).
A difference is real when |difference of means| > 2 standard errors, both sides with >= 2 seeds;
single-seed comparisons are "indicative". Written by ``python benchmarks/evidence_tables.py``.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import commonsense_tables
from evidence import (
    CONFIRM,
    DATA,
    LR_FACTORS,
    RESETS,
    SENSITIVITY,
    STOP,
    STOP_LR,
    plan,
    probe_tries,
    waits_for,
)
from evidence_records import (
    by_cell,
    compared,
    difference,
    fmt,
    grid_choice,
    param_columns,
    params_at,
    score,
    sora_stages,
)
from time_claim import PAPER as PAPER_TIME_SHARE
from time_claim import RESULTS as TIME_RESULTS

from aroma_peft.units import fmt_params

Records = list[dict[str, Any]]
TASKS = ("mrpc", "sst2")
NAMES = {
    "aroma": "AROMA",
    "lora_r8": "LoRA r=8",
    "lora_r1": "LoRA r=1",
    "lora_r16": "LoRA r=16",
    "sora": "SoRA",
    "adalora": "AdaLoRA r=8",
    "adalora_r1": "AdaLoRA r=1",
    "adalora_r16": "AdaLoRA r=16",
    "relora": "ReLoRA",
    "full": "full fine-tuning",
    "bitfit": "BitFit",
    "adapterh": "AdapterH",
    "adapterp": "AdapterP",
}
STOP_PAIRS = {  # family -> (variant at the planned 1,500 steps, variant at twice that)
    "linear lr (default)": ("", "steps3000"),
    "constant lr": ("constlr", "constlr-steps3000"),
    "outer criterion per unit of lr": ("outerlr", "outerlr-steps3000"),
}
TASK_NAMES = {"mrpc": "MRPC", "sst2": "SST-2", "cola": "CoLA", "rte": "RTE"}
MODEL_NAMES = {"mpnet": "MPNet-base"}  # a run's other model, by its name in the run id
PARAM_SHARE = 1.5 * 0.13  # claim 2 holds up to 1.5 x the paper's share of LoRA r=8's parameters
STOP_SHARE = 0.9  # the stop step: when this share of the modules had finished
TIME_TOLERANCE = 0.05  # a share within 5 points of the paper's confirms the time claim
STOP_MOVE = 150  # steps (10% of the planned 1,500): a stop that moves more follows the planned total
EARLY_STOP_PATIENCE = (3, 5)  # evaluations (of every 100 steps) replayed in early_stop_rows


# --- small helpers ------------------------------------------------------------------------------------
def scores(records: Records, task: str, label: str) -> list[float]:
    return [s for s in map(score, by_cell(records).get((task, label), [])) if s is not None]


def missing(records: Records, keep: Callable[[Any], bool]) -> list[str]:
    """Ids of planned runs matching ``keep`` that have no result yet."""
    done = {r["id"] for r in records}
    return [run.id for run in plan() if keep(run) and run.id not in done]


def pending_text(ids: list[str]) -> str:
    shown = ", ".join(f"`{i}`" for i in ids[:3]) + (f" and {len(ids) - 3} more" if len(ids) > 3 else "")
    return f"pending: {len(ids)} run(s) missing ({shown})"


def compare(records: Records, task: str, a: str, b: str) -> tuple[str, str] | None:
    """'+1.2 (2 SE 0.8, 3 vs 3 seeds)' and its kind (real / within / indicative), or None."""
    sa, sb = scores(records, task, a), scores(records, task, b)
    if not sa or not sb:
        return None
    diff, se, kind = difference(sa, sb)
    spread = "one seed" if se is None else f"2 SE {2 * se:.1f}"
    return f"{diff:+.1f} ({spread}; {len(sa)} vs {len(sb)} seeds)", kind


def tuned(records: Records, task: str, label: str) -> dict[str, Any] | None:
    """The seed-0 run at the lr its grid chose, once the grid (default x 1/3, 1, 3) is complete."""
    runs = [
        r
        for r in records
        if r["task"] == task and r["label"] == label and r["seed"] == 0 and not r["variant"]
    ]
    complete = len({round(r["lr_factor"], 3) for r in runs}) == 1 + len(LR_FACTORS)
    return grid_choice(runs) if complete else None


def compare_tuned(records: Records, task: str, label: str) -> tuple[float, str, str] | None:
    """AROMA minus a baseline: the difference, its kind and where the baseline stood. A one-seed
    baseline whose complete lr grid chose a non-default lr is taken at that lr (the same grid for
    every method; AROMA's grid keeps its default); every other baseline at its default lr."""
    mine, theirs = scores(records, task, "aroma"), scores(records, task, label)
    run = tuned(records, task, label)
    at = ""
    if run is not None and run["lr_factor"] != 1.0 and len(theirs) <= 1:
        theirs, at = [score(run)], f"at its grid's lr {run['lr']:.2g}, "
    if not mine or not theirs:
        return None
    diff, _, kind = difference(mine, theirs)
    return diff, kind, at


def beats_verdict(kind: str, text: str) -> str:
    """The verdict on 'A beats B' from a comparison."""
    diff = float(text.split(" ")[0])
    if kind == "real":
        return "confirmed" if diff > 0 else "refuted at this scale"
    if kind == "within the seed spread":
        return "not confirmed at this scale (within the seed spread)"
    return "indicative only (one seed): " + ("ahead" if diff > 0 else "behind")


def seed_spread(records: Records, task: str) -> float | None:
    """The sample std of AROMA's default runs over seeds on ``task`` (None below 2 seeds)."""
    values = scores(records, task, "aroma")
    return statistics.stdev(values) if len(values) > 1 else None


def span(values: list[int]) -> str:
    low, high = min(values), max(values)
    return f"{low}" if low == high else f"{low}-{high}"


# --- claims -------------------------------------------------------------------------------------------
def claim_beats(records: Records, a: str, b: str, groups: tuple[str, ...] = ("g1",)) -> tuple[str, str]:
    """Per task: A - B and the verdict; pending while either side lacks its seeds."""
    parts, verdicts = [], []
    for task in TASKS:
        lacking = missing(
            records,
            lambda r, t=task: r.group in groups and r.task == t and r.label in (a, b) and r.lr_factor == 1.0,
        )
        found = compare(records, task, a, b)
        if found is None or lacking:
            so_far = [
                f"{NAMES[x]} {fmt(scores(records, task, x))} ({len(scores(records, task, x))} seed(s))"
                for x in (a, b)
                if scores(records, task, x)
            ]
            parts.append(
                f"{TASK_NAMES[task]}: {pending_text(lacking)}"
                + (f"; so far {', '.join(so_far)}" if so_far else "")
            )
            verdicts.append(f"{TASK_NAMES[task]}: pending")
            continue
        parts.append(f"{TASK_NAMES[task]}: {NAMES[a]} - {NAMES[b]} {found[0]}")
        verdicts.append(f"{TASK_NAMES[task]}: {beats_verdict(found[1], found[0])}")
    return "; ".join(parts), "; ".join(verdicts)


def param_share(records: Records, label: str, key: str = "mean") -> dict[str, float]:
    """Per task: the method's mean adapter parameters at ``key`` (``params_at``) over LoRA r=8's."""
    cells, shares = by_cell(records), {}
    for task in TASKS:
        ours = [params_at(r, key) for r in cells.get((task, label), []) if not r.get("diverged")]
        lora = [
            r["adapter_params"]["mean"] for r in cells.get((task, "lora_r8"), []) if not r.get("diverged")
        ]
        if ours and lora:
            shares[task] = statistics.fmean(ours) / statistics.fmean(lora)
    return shares


def claim_params(records: Records) -> tuple[str, str]:
    """AROMA's adapter parameters (initial / mean / end) and its mean share of LoRA r=8's: confirmed
    at most PARAM_SHARE (1.5 x the paper's 13%)."""
    cells, parts, verdicts = by_cell(records), [], []
    shares = param_share(records, "aroma")
    for task in TASKS:
        runs = [r for r in cells.get((task, "aroma"), []) if not r.get("diverged")]
        p = (
            [
                fmt_params(statistics.fmean(r["adapter_params"][k] for r in runs))
                for k in ("start", "mean", "end")
            ]
            if runs
            else []
        )
        if not runs or task not in shares:
            lacking = missing(records, lambda r, t=task: r.id in (f"{t}-aroma-s0", f"{t}-lora_r8-s0"))
            so_far = f"; so far AROMA {' / '.join(p)} (initial / mean / end)" if runs else ""
            parts.append(f"{TASK_NAMES[task]}: {pending_text(lacking)}{so_far}")
            verdicts.append(f"{TASK_NAMES[task]}: pending")
            continue
        parts.append(
            f"{TASK_NAMES[task]}: AROMA {' / '.join(p)} (initial / mean / end), "
            f"{100 * shares[task]:.1f}% of LoRA r=8's on average"
        )
        verdicts.append(
            f"{TASK_NAMES[task]}: "
            + ("confirmed" if shares[task] <= PARAM_SHARE else "refuted at this scale")
        )
    return "; ".join(parts), "; ".join(verdicts) + " (the share; the metric at that share is claim 1)"


def claim_against(records: Records, labels: tuple[str, ...], groups: tuple[str, ...]) -> tuple[str, str]:
    """AROMA against several baselines: every difference, and one verdict per task."""
    parts, verdicts = [], []
    for task in TASKS:
        rows, kinds, lacking = [], [], []
        for label in labels:
            lacking += missing(
                records,
                lambda r, t=task, lab=label: (
                    r.task == t and r.label == lab and r.group in groups and r.lr_factor == 1.0
                ),
            )
            found = compare_tuned(records, task, label)
            if found is None:
                continue
            diff, kind, at = found
            rows.append(f"{NAMES[label]} {diff:+.1f} ({at}{kind})")
            kinds.append((diff, kind))
        text = f"{TASK_NAMES[task]}: AROMA - " + (", ".join(rows) if rows else "none yet")
        if lacking:
            parts.append(f"{text}; {pending_text(lacking)}")
            verdicts.append(f"{TASK_NAMES[task]}: pending")
            continue
        parts.append(text)
        if any(k == "real" and d < 0 for d, k in kinds):
            verdicts.append(f"{TASK_NAMES[task]}: refuted at this scale (a baseline really ahead)")
        elif all(k == "real" and d > 0 for d, k in kinds):
            verdicts.append(f"{TASK_NAMES[task]}: confirmed")
        elif all(k.startswith("indicative") for _, k in kinds):
            ahead = sum(d > 0 for d, _ in kinds)
            verdicts.append(
                f"{TASK_NAMES[task]}: indicative only (one seed): AROMA ahead of {ahead} of {len(kinds)}"
            )
        else:
            verdicts.append(
                f"{TASK_NAMES[task]}: not confirmed at this scale (no real lead over every baseline)"
            )
    return "; ".join(parts), "; ".join(verdicts)


def variant_runs(
    records: Records, variants: tuple[str, ...], task: str = "mrpc"
) -> dict[str, dict[str, Any]]:
    return {
        r["variant"]: r
        for r in records
        if r["label"] == "aroma"
        and r["task"] == task
        and r["seed"] == 0
        and r["lr_factor"] == 1.0
        and r["variant"] in variants
        and not r.get("diverged")
    }


def variant_scores(records: Records, variant: str, task: str) -> list[float]:
    """AROMA's report-half scores over seeds of one variant at the default lr."""
    found = (
        score(r)
        for r in records
        if r["label"] == "aroma" and r["task"] == task and r["lr_factor"] == 1.0 and r["variant"] == variant
    )
    return [s for s in found if s is not None]


def claim_reset(records: Records) -> tuple[str, str]:
    found = variant_runs(records, ("", *RESETS))
    if len(found) < 1 + len(RESETS):
        return pending_text(
            missing(records, lambda r: r.id in ("mrpc-aroma-s0", *(f"mrpc-aroma-{v}-s0" for v in RESETS)))
        ), "pending"
    names = {"": "prune 99.9%", "reset_zero": "zero", "reset_none": "none"}
    text = ", ".join(f"{names[v]}: {score(r):.1f}, rank {r['total_rank_end']}" for v, r in found.items())
    spread = seed_spread(records, "mrpc") or 0.0
    top = max(score(r) for r in found.values())
    best = [names[v] for v, r in found.items() if score(r) >= top - spread]
    tie = f" (within AROMA's seed spread, {spread:.1f}, of each other)" if len(best) > 1 else ""
    paper = "as the paper's" if names[""] in best else "not the paper's prune 99.9%"
    return f"MRPC seed 0: {text}", f"indicative only (one seed): best {' and '.join(best)}{tie}; {paper}"


def rank_ratios(records: Records, label: str) -> list[float]:
    return [
        r["effective_rank_sum"] / r["rank_sum"]
        for r in compared(records)
        if r["label"] == label and r.get("rank_sum")
    ]


def ratio_text(name: str, ratios: list[float], pending: str = "") -> str:
    """'AROMA 89% (6 runs)', or the method's pending note."""
    if not ratios:
        return f"{name}: pending{pending}"
    return f"{name} {100 * statistics.fmean(ratios):.0f}% ({len(ratios)} run{'s' if len(ratios) > 1 else ''})"


def claim_effective_rank(records: Records) -> tuple[str, str]:
    """Confirmed when AROMA's ratio is at least 85% and 20 points above AdaLoRA's (paper: 96%, 50%);
    indicative only while either method has a single run."""
    aroma, adalora = rank_ratios(records, "aroma"), rank_ratios(records, "adalora")
    text = f"{ratio_text('AROMA', aroma)}, {ratio_text('AdaLoRA', adalora, ' (g3)')}"
    text += (
        " (mean over runs and tasks of sum of effective ranks / sum of ranks; figure: "
        "[fig3_effective_rank.png](results/fig3_effective_rank.png))"
    )
    if not aroma or not adalora:
        return text, "pending"
    mean_aroma = statistics.fmean(aroma)
    ok = mean_aroma >= 0.85 and mean_aroma - statistics.fmean(adalora) >= 0.2
    verdict = "confirmed" if ok else "refuted at this scale"
    return text, verdict if min(len(aroma), len(adalora)) > 1 else f"indicative only (one run): {verdict}"


def claim_time(results: Path = TIME_RESULTS) -> tuple[str, str]:
    """AROMA's whole-run training time as a share of LoRA r=8's and AdaLoRA's, from the quiet-machine
    runs of benchmarks/time_claim.py (the longest budget measured)."""
    found = sorted(results.glob("*.json"), key=lambda p: json.loads(p.read_text())["steps"])
    if not found:
        return "pending: `python benchmarks/time_claim.py` (whole runs on a quiet machine)", "pending"
    result = json.loads(found[-1].read_text())
    parts, verdicts = [], []
    for label, paper in PAPER_TIME_SHARE.items():
        share = result["aroma_share"][label]
        parts.append(f"{share:.0%} of {NAMES[label]}'s (paper {paper:.1%})")
        if share <= paper + TIME_TOLERANCE:
            verdicts.append(f"{NAMES[label]}: confirmed")
        elif share < 1:
            verdicts.append(f"{NAMES[label]}: faster, by less (the share: refuted at this scale)")
        else:
            verdicts.append(f"{NAMES[label]}: refuted at this scale")
    runs = result["runs"]["aroma"]
    text = (
        f"MRPC, {result['steps']} planned steps per method (AROMA ran {runs['steps']}), whole runs "
        f"one after another on a quiet machine: AROMA's training time is {', '.join(parts)} "
        f"([table](../benchmarks/results/time/{found[-1].stem}.md), `{result['command']}`); per step "
        "while every module trains: the README's speed table"
    )
    return text, "; ".join(verdicts)


def claim_trajectory(records: Records) -> tuple[str, str]:
    runs = [r for r in compared(records) if r["label"] == "aroma" and not r.get("diverged")]
    if not runs:
        return "pending: no AROMA run finished", "pending"
    zero = sum(r["adapter_params"]["end"] == 0 for r in runs)
    stops = [stop_step(r) for r in runs]
    exact = (
        ""
        if all(e for _, e in stops)
        else " (from the evaluations, every 100 steps, where a run lacks its finish events)"
    )
    text = (
        f"{len(runs)} AROMA run(s): total rank grows from 0 to {span([r['total_rank_end'] for r in runs])}; "
        f"adapter parameters reach 0 in {zero} of them; {int(100 * STOP_SHARE)}% of the modules finished "
        f"by step {span([s for s, _ in stops])} of {runs[0]['planned_steps']}{exact} (figures: "
        "[docs/results/](results/), `fig1_*.png`)"
    )
    if zero < len(runs):
        return text, "refuted at this scale"
    return text, "confirmed (the shape; when it stops is claim 11)"


def claim_sora(records: Records) -> tuple[str, str]:
    text, verdict = claim_beats(records, "sora", "lora_r8")
    shares = param_share(records, "sora", "end")
    if shares:
        text += "; SoRA's pruned parameters: " + ", ".join(
            f"{TASK_NAMES[t]} {100 * s:.0f}% of LoRA r=8's" for t, s in shares.items()
        )
    return text + "; " + sora_tradeoff_text(records), verdict


def sora_tradeoff_text(records: Records) -> str:
    """The scheduler runs in one line per task: rank and dev metric at the first and last stage, and
    the sparsest stage still within 1 point of the first stage's dev metric."""
    stages, parts = sora_stages(records), []
    for task in TASKS:
        rows = stages.get(task)
        if not rows:
            lacking = missing(records, lambda r, t=task: r.id == f"{t}-sora-sched-s0")
            parts.append(f"{TASK_NAMES[task]} {pending_text(lacking)}")
            continue
        first, last = rows[0], rows[-1]
        kept = [st for st in rows if st["generalization"] >= first["generalization"] - 0.01]
        parts.append(
            f"{TASK_NAMES[task]} rank {first['active_rank']} -> {last['active_rank']}, dev "
            f"{100 * first['generalization']:.1f} -> {100 * last['generalization']:.1f}; within 1 point of "
            f"stage 0 down to rank {min(st['active_rank'] for st in kept)}"
        )
    where = "[docs/results/glue.md](results/glue.md)"
    return f"trade-off (xi 0 -> 1e-3 in 7 stages, {where}): " + "; ".join(parts)


COMMONSENSE_ROWS = ("lora_r8", "aroma_r1", "aroma_r8", "sora")


def curves_text(rows: Records, names: dict[str, str]) -> tuple[str, bool]:
    """The curves group (longer runs on one set): each run's test average, starred when every set is
    above its majority class; and whether an adapter (not full fine-tuning) is among the starred."""
    curves = [r for r in rows if r["group"] == "curves" and r["evaluation"].get("loglik")]
    if not curves:
        return "", False
    marked = [
        (r, all(s["above_majority"] for s in r["evaluation"]["loglik"]["sets"].values())) for r in curves
    ]
    runs = [
        f"{names.get(r['label'], r['label'])} lr {r['lr']:g} {r['evaluation']['loglik']['average']:.1f}"
        + ("*" if above else "")
        for r, above in marked
    ]
    test = curves[0]["evaluation"]["loglik"]
    text = f"; longer runs on {', '.join(test['sets'])} ({curves[0].get('steps', '?')} steps, majority class "
    text += f"{test['majority_average']:.1f}, * above it): " + ", ".join(runs)
    return text, any(above for r, above in marked if r["label"] != "full")


def claim_commonsense(rows: Records) -> tuple[str, str]:
    """The commonsense table's rows (SmolLM2-135M, one seed each, benchmarks/commonsense_table.py):
    log-likelihood averages against the untrained model and the majority class, and AROMA - LoRA r=8."""
    names = commonsense_tables.NAMES | {"base": "untrained"}
    found = {
        r["label"]: r["evaluation"]["loglik"]
        for r in rows
        if r["group"] == "table" and r["evaluation"].get("loglik")
    }
    where = "([docs/results/commonsense.md](results/commonsense.md))"
    lacking = [f"cs-{label}" for label in COMMONSENSE_ROWS if label not in found]
    if not found:
        return f"SmolLM2-135M: {pending_text(lacking)} {where}", "pending"
    first = next(iter(found.values()))
    text = f"SmolLM2-135M, loglik, average of {len(first['sets'])} sets (majority class "
    text += f"{first['majority_average']:.1f}): "
    text += ", ".join(f"{names[label]} {found[label]['average']:.1f}" for label in names if label in found)
    above = {
        label: [n for n, st in ev["sets"].items() if st["above_majority"]] for label, ev in found.items()
    }
    shown = [f"{names[label]} on {', '.join(sets)}" for label, sets in above.items() if sets]
    text += "; above the majority class: " + ("; ".join(shown) or "no row on any set")
    longer, adapter_above_in_longer = curves_text(rows, names)
    text += longer
    if lacking:
        return f"{text}; {pending_text(lacking)} {where}", "pending"
    lora = found["lora_r8"]["average"]
    text += "; " + ", ".join(
        f"{names[a]} - LoRA r=8 {found[a]['average'] - lora:+.1f}" for a in ("aroma_r1", "aroma_r8")
    )
    if not any(above[label] for label in COMMONSENSE_ROWS):
        verdict = "not testable here (no trained row is above the majority class on any set"
        if longer and not adapter_above_in_longer:
            verdict += ", nor any adapter in the longer runs"
        return f"{text} {where}", verdict + ")"
    return f"{text} {where}", "indicative only (one seed)"


def claim_more_tasks(records: Records, data_dir: Path = DATA) -> tuple[str, str]:
    """Group 5, one seed each: per probed task, AROMA against LoRA r=8, LoRA r=1 and SoRA at the lr at
    which LoRA r=8's probe learned the task (the default, else the grid's x 1/3); "not testable here"
    where the probe stayed at the majority class at both."""
    by_id, runs = {r["id"]: r for r in records}, plan()
    parts, verdicts = [], []
    for first in (run for run in runs if run.group == "g5" and not waits_for(run)):
        name = TASK_NAMES[first.task] + (f" ({MODEL_NAMES[first.model_name]})" if first.model_name else "")
        tried = []
        for probe, found, learned, why in probe_tries(first, runs, by_id, data_dir):
            if found is None:
                parts.append(
                    f"{name}: {'; '.join([*tried, pending_text([probe.id])])} (LoRA r=8, probing the task)"
                )
                verdicts.append(f"{name}: pending")
                break
            if learned:
                text, verdict = gated_comparison([probe, *(r for r in runs if r.gate == probe.id)], by_id)
                if tried:  # the fallback learned: say at which lr, and by how much
                    tried.append(f"at lr {found['lr']:.2g} it did ({why})")
                parts.append(f"{name}: {'; '.join([*tried, text])}")
                verdicts.append(f"{name}: {verdict}")
                break
            tried.append(
                f"LoRA r=8 did not learn it at lr {found['lr']:.2g} in {found['steps']:,} steps ({why})"
            )
        else:
            parts.append(f"{name}: {'; '.join(tried)}")
            verdicts.append(f"{name}: not testable here (LoRA r=8 stays at the majority class at both lrs)")
    return "; ".join(parts), "; ".join(verdicts)


def gated_comparison(group: list[Any], by_id: dict[str, dict[str, Any]]) -> tuple[str, str]:
    """A learned probe and the runs it gates: each one's score, then AROMA minus each other's."""
    scored = {run.label: score(by_id[run.id]) for run in group if run.id in by_id}
    text = ", ".join(
        f"{NAMES[lab]} " + ("diverged" if s is None else f"{s:.1f}") for lab, s in scored.items()
    )
    lacking = [run.id for run in group if run.id not in by_id]
    if lacking:
        return f"{text}; {pending_text(lacking)}", "pending"
    if scored["aroma"] is None:
        return text, "refuted at this scale (AROMA diverged)"
    diffs = {lab: scored["aroma"] - s for lab, s in scored.items() if lab != "aroma" and s is not None}
    text += "; AROMA - " + ", ".join(f"{NAMES[lab]} {d:+.1f}" for lab, d in diffs.items())
    ahead = sum(d > 0 for d in diffs.values())
    return text, f"indicative only (one seed): AROMA ahead of {ahead} of {len(diffs)}"


# --- AROMA's stop -------------------------------------------------------------------------------------
def stop_step(record: dict[str, Any]) -> tuple[int, bool]:
    """The step by which STOP_SHARE of the modules had finished, and whether it is exact (from the
    finish events) rather than the first evaluation step at which the share was reached."""
    steps = record.get("finish_steps")
    if steps:
        return steps[math.ceil(STOP_SHARE * len(steps)) - 1], True
    traj = record["trajectory"]
    modules = max(p.get("finished_modules") or 0 for p in traj) or 1
    step = next(
        (p["step"] for p in traj if (p.get("finished_modules") or 0) >= STOP_SHARE * modules), record["steps"]
    )
    return step, False


def stop_rows(records: Records) -> tuple[str, list[tuple[str, str, str]]]:
    """Markdown table of the stop runs and, per task x family, (task, family, verdict)."""
    rows = [
        "| task | schedule / criterion | planned | stop step (90% of modules) | all finished | final | "
        "selected eval | selected - final | seed spread |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    for task in TASKS:
        spread = seed_spread(records, task)
        runs = variant_runs(records, tuple(v for pair in STOP_PAIRS.values() for v in pair), task)
        for family, (short, long) in STOP_PAIRS.items():
            pair = [runs.get(short), runs.get(long)]
            for r in filter(None, pair):
                step, exact = stop_step(r)
                last = max(r.get("finish_steps") or [r["steps"]])
                rows.append(
                    f"| {task} | {family} | {r['planned_steps']} | {step}{'' if exact else ' (by eval)'} "
                    f"({100 * step / r['planned_steps']:.0f}%) | {last} | {score(r, 'final_report'):.1f} | "
                    f"{score(r):.1f} | {score(r) - score(r, 'final_report'):.1f} | "
                    f"{'-' if spread is None else f'{spread:.1f}'} |"
                )
            if None in pair:
                ids = [f"{task}-aroma{'-' + v if v else ''}-s0" for v in (short, long)]
                verdicts.append((task, family, pending_text([i for i, r in zip(ids, pair) if r is None])))
                continue
            s1, s2 = stop_step(pair[0])[0], stop_step(pair[1])[0]
            gap = score(pair[1]) - score(pair[1], "final_report")
            verdicts.append((task, family, stop_verdict(s1, s2, gap, spread)))
            # the same pair under early stopping (replayed): a stop that follows the held-out metric
            stops = [early_stop_at(r, EARLY_STOP_PATIENCE[0]) for r in pair]
            if None not in stops:
                s1, s2 = stops[0]["step"], stops[1]["step"]
                gap = score(pair[1]) - stops[1]["report"]
                name = f"{family} + early stopping (patience {EARLY_STOP_PATIENCE[0]}, replayed)"
                verdicts.append((task, name, stop_verdict(s1, s2, gap, spread)))
    return "\n".join(rows) + "\n", verdicts


def stop_verdict(s1: int, s2: int, gap: float, spread: float | None) -> str:
    """The stop question's verdict on one pair: stop steps with the planned total and twice it, and how
    far the longer run's metric at its end lies below its best, the evaluation chosen on the selection
    half (reported on the other half: the maximum over the report half would select on it)."""
    if s2 - s1 > STOP_MOVE:
        return f"the stop moves with the planned total ({s1} -> {s2})"
    if spread is None:
        return f"the stop stays ({s1} -> {s2}); final vs best: pending (needs AROMA's seeds)"
    if gap <= spread:
        return (
            f"right: the stop stays ({s1} -> {s2}) and the final metric is within the seed spread of the "
            "selected evaluation's"
        )
    return (
        f"the stop stays ({s1} -> {s2}) but the final metric is {gap:.1f} below the selected evaluation's "
        f"(spread {spread:.1f})"
    )


def early_stop_at(record: dict[str, Any], patience: int) -> dict[str, Any] | None:
    """Where ``--early-stopping-patience`` would have stopped the run, replayed on its logged
    evaluations with the trainer's own rule: the step and the report-half metric there (None: never)."""
    from aroma_peft.train.results import early_stop_reason

    main = record["main_metric"]
    evals = [{"step": p["step"], "select": {main: p["select"]}} for p in record["trajectory"]]
    for k in range(len(evals) - 1):  # the last evaluation is the run's end: no stop there
        if early_stop_reason(evals[: k + 1], main, patience, 0.0):
            return {"step": evals[k]["step"], "report": 100 * record["trajectory"][k]["report"]}
    return None


def early_stop_rows(records: Records) -> str:
    """Markdown: early stopping on the selection half replayed on every finished seed-0 run of a task
    (patience 3 and 5 evaluations), beside the run's selected and final report-half metric."""
    rows = [
        "| run | planned | selected (step) | final | patience 3: stop step, report | patience 5: stop step, "
        "report |",
        "|---|---|---|---|---|---|",
    ]
    runs = [r for r in records if r["seed"] == 0 and r.get("trajectory") and r["lr_factor"] == 1.0]
    for r in sorted(runs, key=lambda r: (r["task"], r["label"] != "aroma", r["label"], r["id"])):
        cells = []
        for patience in EARLY_STOP_PATIENCE:
            at = early_stop_at(r, patience)
            cells.append("never" if at is None else f"{at['step']}, {at['report']:.1f}")
        chosen = r.get("selected") or {}
        rows.append(
            f"| `{r['id']}` | {r['planned_steps']} | {score(r):.1f} ({chosen.get('step', '-')}) "
            f"| {score(r, 'final_report'):.1f} | {' | '.join(cells)} |"
        )
    return "\n".join(rows) + "\n"


def claim_stop(records: Records) -> tuple[str, str]:
    _, verdicts = stop_rows(records)
    text = "; ".join(f"{TASK_NAMES[t]} {f}: {v}" for t, f, v in verdicts)
    right = [f"{TASK_NAMES[t]} {f}" for t, f, v in verdicts if v.startswith("right")]
    if all(v.startswith("pending") for _, _, v in verdicts):
        return text, "pending"
    waiting = sum(v.startswith("pending") for _, _, v in verdicts)
    verdict = "confirmed for: " + ", ".join(right) if right else "not confirmed at this scale (so far)"
    return text + " ([docs/results/aroma.md](results/aroma.md))", verdict + (
        f"; {waiting} of {len(verdicts)} task x stop pairs pending" if waiting else ""
    )


CLAIMS: list[tuple[str, str, Callable[[Records], tuple[str, str]]]] = [
    (
        "AROMA beats LoRA r=8 on GLUE (Table 2)",
        "average 88.49 vs 85.43",
        lambda r: claim_beats(r, "aroma", "lora_r8"),
    ),
    ("... with about 13% of LoRA r=8's trainable parameters (Table 2)", "13%", claim_params),
    (
        "AROMA against LoRA r=1, SoRA, AdaLoRA, ReLoRA, full fine-tuning (Table 2)",
        "per-task rows of Table 2",
        lambda r: claim_against(r, ("lora_r1", "sora", "adalora", "relora", "full"), ("g1", "g3")),
    ),
    (
        "Table 2's other baselines: BitFit, AdapterH, AdapterP; LoRA r=16, AdaLoRA r=1 / r=16",
        "per-task rows of Table 2",
        lambda r: claim_against(
            r, ("bitfit", "adapterh", "adapterp", "lora_r16", "adalora_r1", "adalora_r16"), ("g3",)
        ),
    ),
    (
        "Optimizer reset ablation (Table 4): prune 99.9% / zero / none, final ranks and metric",
        "Table 4",
        claim_reset,
    ),
    (
        "Effective-rank ratio of the learned updates (Fig. 3)",
        "AROMA about 96%, AdaLoRA about 50%",
        claim_effective_rank,
    ),
    (
        "Training time against LoRA r=8 and AdaLoRA (Table 5)",
        "76% of LoRA r=8's, 28.5% of AdaLoRA's",
        lambda r: claim_time(),
    ),
    ("Rank grows and parameters fall to zero during a run (Fig. 1)", "Fig. 1", claim_trajectory),
    ("SoRA beats LoRA with about 70% of its parameters", "about 70%", claim_sora),
    (
        "Commonsense reasoning (Table 3): AROMA against LoRA r=8 on a LLaMA-family decoder",
        "Table 3 (LLaMA3-8B)",
        lambda r: claim_commonsense(commonsense_tables.load(commonsense_tables.RESULTS)),
    ),
    (
        "AROMA's stop: given twice the steps it needs, the stop step does not move and the final "
        "metric is within the seed spread of the best",
        "-",
        claim_stop,
    ),
    (
        "Table 2 beyond MRPC and SST-2: AROMA against LoRA r=8, LoRA r=1 and SoRA on CoLA (MiniLM) and "
        "RTE (MPNet-base), where a 1,500-step LoRA r=8 run learns the task",
        "per-task rows of Table 2",
        claim_more_tasks,
    ),
]


def claims_table(records: Records) -> str:
    rows = ["| # | claim (paper) | paper's number | our measurement | verdict |", "|---|---|---|---|---|"]
    for i, (claim, paper, measure) in enumerate(CLAIMS, 1):
        text, verdict = measure(records)
        rows.append(f"| {i} | {claim} | {paper} | {text} | {verdict} |")
    return "\n".join(rows) + "\n"


# --- the README's headline table ----------------------------------------------------------------------
def readme_table(records: Records) -> str:
    cells = by_cell(records)
    rows = [
        "| task | method | seeds | dev metric, report half (mean ± std) | vs LoRA r=8 | adapter params "
        "initial / mean / end | total rank (end) | lr grid's choice (seed 0): lr, report half |",
        "|---|---|---|---|---|---|---|---|",
    ]
    grids = {(run.task, run.label) for run in plan() if run.lr_factor != 1.0 and not waits_for(run)}
    for task in sorted({t for t, _ in cells}):
        first = next(iter(r for (t, _), runs in cells.items() if t == task for r in runs))
        majority = first["majority"].get(first["main_metric"])
        if majority is not None:
            rows.append(f"| {task} | majority class | - | {100 * majority:.1f} | | | | |")
        for label in NAMES:
            runs = [r for r in cells.get((task, label), []) if not r.get("diverged")]
            if not runs:
                continue
            vs = compare(records, task, label, "lora_r8") if label != "lora_r8" else None
            vs_text = f"{vs[0].split(' (')[0]} ({vs[1].replace(' (', ', ').rstrip(')')})" if vs else ""
            params = " / ".join(param_columns(runs))
            ranks = [r["total_rank_end"] for r in runs if r.get("total_rank_end") is not None]
            chosen = tuned(records, task, label)
            grid = "pending" if (first["task"], label) in grids else "not in the plan"
            grid = f"{chosen['lr']:.2g}, {score(chosen):.1f}" if chosen else grid
            factor = runs[0]["lr_factor"]
            if factor != 1.0:  # group 5's fallback: LoRA r=8's probe learned the task only at this lr
                grid += f" (all at x {factor:.2g} of the default: LoRA r=8 did not learn at x 1)"
            rows.append(
                f"| {task} | {NAMES[label]} | {len(runs)} | {fmt([score(r) for r in runs])} | {vs_text} | "
                f"{params} | {span(ranks) if ranks else '-'} | {grid} |"
            )
    if len(rows) == 2:
        return "No run of the plan has finished yet.\n"
    return "\n".join(rows) + "\n"


# --- AROMA's knobs ------------------------------------------------------------------------------------
KNOBS = {  # knob -> (variants of the plan, what the method's mechanics imply: read from the code)
    "eps_in": (
        ("eps_in0.05", "eps_in0.2"),
        "a piece ends when ||b a|| grows by less than eps_in per check; a piece that grows "
        "steadily for k steps grows by about check_interval / k per check, so eps_in 0.1 with "
        "checks every 10 steps ends pieces after about 100 steps: a smaller eps_in makes longer, "
        "larger pieces (fewer, at the same budget)",
    ),
    "eps_out": (
        ("eps_out2.5e-3", "eps_out1e-2"),
        "a module finishes when a new piece is smaller than eps_out relative to the weight; a "
        "piece's size scales with the lr it was trained with (Adam), so under a decaying lr "
        "eps_out also decides how far into the decay the modules stop (measured in the stop "
        "question: without the decay, `--lr-schedule constant` or `--outer-criterion lr`, MRPC's "
        "pieces stayed at 2-7x the default 5e-3 for 3,000 steps and no module stopped, so to end a "
        "run where it stops improving use `--early-stopping-patience`)",
    ),
    "t_in": (
        ("t_in100", "t_in400"),
        "the longest a piece may train; it binds only when the inner criterion does not end the piece first",
    ),
    "check interval": (
        ("check5", "check20"),
        "sets the inner criterion's time scale together with eps_in (see eps_in): doubling it roughly "
        "doubles a piece's length",
    ),
    "lora_alpha": (
        ("alpha2", "alpha8"),
        "the scale s = alpha / r multiplies every piece: with Adam the factors move at the lr whatever "
        "s, so s scales each piece's contribution and its outer ratio like the lr does",
    ),
    "rewarmup": (
        ("rewarmup0", "rewarmup100"),
        "the lr ramps up over this many steps after every new piece: with the default 50, a piece"
        " of about 100 steps trains its first half at a reduced lr; while its lr rises a piece keeps"
        " growing past the inner criterion, so a longer re-warmup makes fewer, longer pieces at the"
        " same budget; 0 starts each piece at the full lr on a freshly pruned Adam state",
    ),
}


def knob_guide(records: Records) -> str:
    """Per knob: what the mechanics imply (from the code), then what the g4 runs measured (MRPC, seed 0)."""
    base = variant_runs(records, ("",)).get("")
    spread = seed_spread(records, "mrpc")
    # One seed against one seed: the difference's SE is sqrt(2) x the seed std; real beyond 2 SE.
    threshold = None if spread is None else 2 * math.sqrt(2) * spread
    lines = [
        "Each knob: what the method's mechanics imply (read from the code, not measured), then what the "
        "sensitivity runs measured (MRPC, seed 0, report half, against the defaults' seed 0; one seed "
        "against one, so a change is real only beyond 2 SE of their difference, 2 x sqrt(2) x the std of "
        "AROMA's seeds"
        + (f" = {threshold:.1f} points" if threshold is not None else ", not yet known")
        + "; one seed per setting: indicative).",
        "",
    ]
    measured = variant_runs(records, tuple(SENSITIVITY))
    for knob, (variants, mechanics) in KNOBS.items():
        lines.append(f"- **{knob}**. Mechanics: {mechanics}.")
        found = [(v, measured[v]) for v in variants if v in measured]
        if base is None or not found:
            lines.append(
                "  Measured: "
                + pending_text(
                    missing(records, lambda r, vs=variants: r.variant in vs or r.id == "mrpc-aroma-s0")
                )
                + "."
            )
            continue
        parts = [f"default {score(base):.1f} (rank {base['total_rank_end']})"]
        for v, r in found:
            diff = score(r) - score(base)
            verdict = "" if threshold is None else (" real" if abs(diff) > threshold else " within the noise")
            setting = ", ".join(f"{k} {x:g}" for k, x in SENSITIVITY[v].items())
            parts.append(
                f"{setting}: {score(r):.1f} ({diff:+.1f}{verdict}; rank {r['total_rank_end']}, "
                f"mean params {fmt_params(r['adapter_params']['mean'])})"
            )
        lines.append("  Measured: " + "; ".join(parts) + ".")
        lines += [f"  {text}" for v in variants if v in CONFIRM for text in [confirmation(records, v)]]
    grid = [
        r
        for r in records
        if r["label"] == "aroma" and r["task"] == "mrpc" and r["seed"] == 0 and not r["variant"]
    ]
    lines.append(
        "- **lr**. Mechanics: Adam moves each factor by about the lr per step, so the lr sets every "
        "piece's size and, through eps_out, when modules finish."
    )
    if len({r["lr_factor"] for r in grid}) > 1:
        cells = ", ".join(
            f"{r['lr']:.2g}: {score(r):.1f} (rank {r.get('total_rank_end')})"
            for r in sorted(grid, key=lambda r: r["lr"])
            if not r.get("diverged")
        )
        lines.append(f"  Measured (MRPC, seed 0): {cells}.")
    else:
        lines.append(
            f"  Measured: {pending_text(missing(records, lambda r: r.id.startswith('mrpc-aroma-lr')))}."
        )
    return "\n".join(lines) + "\n"


def confirmation(records: Records, variant: str) -> str:
    """A setting that beat the defaults on one seed, on three seeds of MRPC and SST-2 against the
    defaults' three: a default changes only on a real gain on one task without a real loss on the other."""
    setting = ", ".join(f"{k} {x:g}" for k, x in SENSITIVITY[variant].items())
    lacking = missing(records, lambda r: r.variant == variant and (r.seed > 0 or r.task != "mrpc"))
    parts, real = [], []
    for task in TASKS:
        mine, base = variant_scores(records, variant, task), scores(records, task, "aroma")
        if len(mine) < 2 or len(base) < 2:
            continue
        diff, se, kind = difference(mine, base)
        if kind == "real":
            real.append(diff)
        parts.append(
            f"{TASK_NAMES[task]} {fmt(mine)} against the defaults' {fmt(base)} "
            f"({diff:+.1f}, 2 SE {2 * se:.1f}; {len(mine)} vs {len(base)} seeds: {kind})"
        )
    head = f"Seeds and SST-2 for {setting}: "
    if lacking:
        return head + "; ".join([*parts, pending_text(lacking)]) + "."
    better = real and min(real) > 0
    return head + "; ".join(parts) + f": {'a better default' if better else 'not a better default'}."


STOP_VARIANTS = ("", *STOP, *STOP_LR)
