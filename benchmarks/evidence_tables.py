"""The tables of docs/results/ from benchmarks/results/*.json (the runs of benchmarks/evidence.py).

    python benchmarks/evidence_tables.py            # docs/results/*.md and *.png, README, reproduction.md

Writes docs/results/{glue,lr_grid,aroma}.md, the figures docs/results/fig1_<task>.png,
fig_stop_<task>.png, fig3_effective_rank.png and fig_sora_tradeoff.png, and the generated blocks (between
``<!-- generated: NAME ... -->`` and ``<!-- end generated: NAME -->``) of README.md (headline) and
docs/reproduction.md (claims, knobs).

Metrics are x100, on the report half of dev at the evaluation best on the selection half (SoRA's
protocol: the halves are a fixed seed-42 split). Mean ± sample std over seeds; a difference of two
methods is called real only when |difference of means| > 2 standard errors (both with >= 2 seeds);
single-seed rows are indicative only. Rows list only finished runs; what the plan still lacks is
listed under the tables.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from evidence import (
    COMMON,
    RESETS,
    SENSITIVITY,
    STEPS,
    hours_left,
    left_to_run,
    plan,
    remaining_hours,
    skip_reason,
)
from evidence_claims import (
    STOP_VARIANTS,
    TASK_NAMES,
    claims_table,
    early_stop_rows,
    knob_guide,
    readme_table,
    stop_rows,
)
from evidence_records import (
    RESULTS,
    ROOT,
    by_cell,
    compared,
    difference,
    fmt,
    grid_choice,
    load,
    machine_note,
    param_columns,
    score,
    sora_stages,
)

from aroma_peft.units import fmt_params

DOCS = ROOT / "docs" / "results"
PAIRS = (
    ("aroma", "lora_r8"),
    ("aroma", "lora_r1"),
    ("aroma", "sora"),
    ("sora", "lora_r8"),
    ("lora_r1", "lora_r8"),
)


def headline(records: list[dict[str, Any]]) -> str:
    """Per task x method: report-half metric over seeds, majority baseline, parameters, ranks, time."""
    rows = [
        "| task | method | seeds | selected (report half) | final (report half) | majority | adapter params "
        "initial / mean / end | total rank end | eff. rank / rank | train loss, last 10% | stopped early | "
        "s/step |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (task, label), runs in sorted(by_cell(records).items()):
        ok = [r for r in runs if not r.get("diverged")]
        diverged = len(runs) - len(ok)
        majority = runs[0]["majority"].get(runs[0]["main_metric"])  # none for a regression task
        params = param_columns(ok)
        ranks = [r["total_rank_end"] for r in ok if r.get("total_rank_end") is not None]
        ratio = [r["effective_rank_sum"] / r["rank_sum"] for r in ok if r.get("rank_sum")]
        losses = [r["train_loss_end"] for r in ok if r.get("train_loss_end") is not None]
        stopped = sum(bool(r["stopped_early"]) for r in ok)
        steps = [r["steps"] for r in ok if r["stopped_early"]]
        stop_text = f"{stopped}/{len(ok)}" + (f" (at {min(steps)}-{max(steps)})" if steps else "")
        rows.append(
            f"| {task} | {label} | {len(ok)}{f' (+{diverged} diverged)' if diverged else ''} | "
            f"{fmt([score(r) for r in ok])} | {fmt([score(r, 'final_report') for r in ok])} | "
            f"{'-' if majority is None else f'{100 * majority:.1f}'} | {' / '.join(params)} | "
            f"{fmt(ranks) if ranks else '-'} | "
            f"{f'{statistics.fmean(ratio):.2f}' if ratio else '-'} | "
            f"{f'{statistics.fmean(losses):.3f} ({len(losses)})' if losses else '-'} | {stop_text} | "
            f"{fmt([r['time_per_step_s'] for r in ok]) if ok else '-'} |"
        )
    return "\n".join(rows) + "\n" if len(rows) > 2 else ""


def comparisons(records: list[dict[str, Any]]) -> str:
    cells = by_cell(records)
    rows = ["| task | A - B | difference (x100) | 2 SE | verdict |", "|---|---|---|---|---|"]
    for task in sorted({t for t, _ in cells}):
        for a, b in PAIRS:
            sa = [s for s in map(score, cells.get((task, a), [])) if s is not None]
            sb = [s for s in map(score, cells.get((task, b), [])) if s is not None]
            if sa and sb:
                diff, se, verdict = difference(sa, sb)
                two_se = "-" if se is None else f"{2 * se:.1f}"
                rows.append(f"| {task} | {a} - {b} | {diff:+.1f} | {two_se} | {verdict} |")
    return "\n".join(rows) + "\n" if len(rows) > 2 else ""


def lr_grid(records: list[dict[str, Any]]) -> str:
    """Every learning rate tried (seed 0, no variant): selection-half and report-half metric; the
    chosen one (``grid_choice``) is marked."""
    grid: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r["seed"] == 0 and not r["variant"]:
            grid[(r["task"], r["label"])].append(r)
    rows = ["| task | method | lr: selection half / report half |", "|---|---|---|"]
    for (task, label), runs in sorted(grid.items()):
        if len({r["lr_factor"] for r in runs}) < 2:
            continue
        chosen = grid_choice(runs)
        cells = []
        for r in sorted(runs, key=lambda r: r["lr"]):
            if r.get("diverged"):
                cells.append(f"{r['lr']:.3g}: diverged")
                continue
            mark = " **chosen**" if r is chosen else ""
            cells.append(f"{r['lr']:.3g}: {100 * r['selected']['selection']:.1f} / {score(r):.1f}{mark}")
        rows.append(f"| {task} | {label} | {'; '.join(cells)} |")
    return "\n".join(rows) + "\n" if len(rows) > 2 else ""


def aroma_table(records: list[dict[str, Any]], variants: tuple[str, ...]) -> str:
    """AROMA variants beside its defaults (seed 0) on the tasks they ran: where it stopped, its ranks
    and metrics."""
    rows = [
        "| task | variant | planned steps | first module finished | stopped at | selected | "
        "best report-half eval | final | total rank end | adapter params mean |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    chosen = [
        r
        for r in records
        if r["label"] == "aroma" and r["seed"] == 0 and r["lr_factor"] == 1.0 and r["variant"] in variants
    ]
    varied = {r["task"] for r in chosen if r["variant"]}
    chosen = [r for r in chosen if r["task"] in varied]
    for r in sorted(chosen, key=lambda r: (r["task"], variants.index(r["variant"]))):
        if r.get("diverged"):
            rows.append(
                f"| {r['task']} | {r['variant'] or 'default'} | {r['planned_steps']} | diverged ||||||"
            )
            continue
        best = max(p["report"] for p in r["trajectory"] if p["report"] is not None)
        stop = f"{r['steps']} ({100 * r['steps'] / r['planned_steps']:.0f}%)" if r["stopped_early"] else "-"
        first = r.get("first_module_finished_at")
        first = f"{first} ({100 * first / r['planned_steps']:.0f}%)" if first else "-"
        rows.append(
            f"| {r['task']} | {r['variant'] or 'default'} | {r['planned_steps']} | {first} | {stop} | "
            f"{score(r):.1f} | "
            f"{100 * best:.1f} | {score(r, 'final_report'):.1f} | {r['total_rank_end']} | "
            f"{fmt_params(r['adapter_params']['mean'])} |"
        )
    return "\n".join(rows) + "\n" if len(rows) > 2 else ""


def sora_tradeoff(records: list[dict[str, Any]]) -> str:
    """SoRA's sparsity against its metric: per xi stage, the active rank (of r_max x modules) and the
    best memorisation (1,000 training examples) and generalisation (full dev) metric of the stage."""
    rows = [
        "| task | stage | xi | active rank | memorisation | generalisation | generalisation / stage 0 |",
        "|---|---|---|---|---|---|---|",
    ]
    for task, stages in sorted(sora_stages(records).items()):
        for st in stages:
            rows.append(
                f"| {task} | {st['stage']} | {st['xi']:.2g} | {st['active_rank']} | "
                f"{100 * st['memorization']:.1f} | {100 * st['generalization']:.1f} | "
                f"{st['generalization_ratio']:.3f} |"
            )
    return "\n".join(rows) + "\n" if len(rows) > 2 else ""


def pending(records: list[dict[str, Any]]) -> str:
    """What the plan still lacks, per group, and the gated runs it skips for good (``skip_reason``)."""
    finished = {r["id"]: r for r in records}
    missing: dict[str, list[str]] = defaultdict(list)
    planned = plan()
    for run in left_to_run(planned, finished):
        missing[run.group].append(run.id)
    lines = [f"{sum(r.id in finished for r in planned)} of {len(planned)} planned runs finished."]
    lines += [
        f"- {group}: {len(ids)} pending ({', '.join(ids[:4])}{', ...' if len(ids) > 4 else ''})"
        for group, ids in missing.items()
    ]
    skipped = [(run, skip_reason(run, finished)) for run in planned if run.id not in finished]
    lines += [f"- {run.group}: `{run.id}` skipped: {why}" for run, why in skipped if why]
    return "\n".join(lines) + "\n"


def costs(records: list[dict[str, Any]]) -> str:
    """Wall minutes of the finished full-budget runs per task and model, and the hours of one core the
    plan's pending runs need at the median seconds per planned step of all its finished runs of that
    task and model (``remaining_hours``, as ``evidence.py --dry-run``)."""
    per: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        if r.get("wall_time_s"):
            per[(r["task"], r["model"])].append(r)
    lines = []
    for (task, model), runs in sorted(per.items()):
        minutes = [r["wall_time_s"] / 60 for r in runs if r["planned_steps"] == STEPS]
        rate = statistics.median(r["wall_time_s"] / r["planned_steps"] for r in runs)
        whole = (
            f"{len(minutes)} runs of {STEPS:,} steps, {min(minutes):.0f} to {max(minutes):.0f} minutes, "
            f"median {statistics.median(minutes):.0f}; "
            if minutes
            else ""
        )
        lines.append(
            f"- {TASK_NAMES[task]} ({model}): {whole}{rate:.2f} s per planned step "
            f"(median of all {len(runs)} runs)"
        )
    planned = plan()
    finished = {r["id"]: r for r in records}
    done = sum(run.id in finished for run in planned)
    skipped = len(planned) - done - len(left_to_run(planned, finished))
    lines.append(
        f"- Left with {done} of {len(planned)} planned runs done"
        + (f" and {skipped} skipped (ruled out by their probes' results)" if skipped else "")
        + ", at these medians: "
        + ("; ".join(hours_left(remaining_hours(planned, finished))) or "nothing")
    )
    return "\n".join(lines) + "\n"


SOURCE = (
    "Generated by `python benchmarks/evidence_tables.py` from `benchmarks/results/*.json` "
    "(the runs of `benchmarks/evidence.py`; see docs/reproduction.md for the protocol)."
)

EARLY = (
    "`--early-stopping-patience N` stops a run once N evaluations (here every 100 steps) have not beaten "
    "the best selection-half metric before them. Training up to the stop does not depend on it (the "
    "evaluations draw no random numbers), so each row below replays the trainer's own rule "
    "(`early_stop_reason`) on the run's logged evaluations: the step at which the run would have "
    "stopped and its report-half metric there. For AROMA the model saved at such a stop differs from "
    "the one evaluated there by the live pieces its final decision discards (each below eps_out of its "
    "weight), which the trainer evaluates again; the replay cannot."
)

SORA_NOTE = (
    "`mrpc-sora-sched-s0`, `sst2-sora-sched-s0`: SoRA's settings of group 1 (r_max 8, lambda 10) with "
    "xi rising linearly from 0 to 1e-3 in 7 equal stages of the same 1,500 steps (group 1 runs at a "
    "fixed 3e-4, the third stage's value). Each stage ends with memorisation (the metric on 1,000 "
    "training examples) and generalisation (the full dev set), as in the SoRA paper's study of its "
    "scheduler; the rank is what pruning keeps at that point."
)


def lr_note(records: list[dict[str, Any]]) -> list[str]:
    """Which headline cells do not run at their method's default lr, at which factor, and why."""
    moved = {task: runs[0]["lr_factor"] for (task, _), runs in by_cell(records).items()}
    moved = {task: factor for task, factor in sorted(moved.items()) if factor != 1.0}
    return [
        f"Every method of {task} runs at x {factor:.2g} of its default lr: LoRA r=8's probe did not learn "
        f"the task at the default and did at x {factor:.2g} (group 5's fallback, claim 12).\n"
        for task, factor in moved.items()
    ]


def documents(records: list[dict[str, Any]]) -> dict[str, str]:
    """File name -> Markdown."""
    intro = [SOURCE, "", machine_note(records), "", pending(records)]
    glue = [
        "# GLUE: methods at a shared budget",
        "",
        *intro,
        "## Headline",
        "",
        "Train loss, last 10%: the mean training loss over the last tenth of a run's steps (in brackets, "
        "how many runs recorded it); beside the dev metric it tells a method that under-fits at this "
        "budget from one that over-fits.",
        "",
        headline(records) or "No run finished yet.\n",
        *lr_note(records),
    ]
    diffs = comparisons(records)
    glue += ["## Differences", "", diffs or "No pair of methods with finished runs yet.\n"]
    glue += ["## Figures", ""] + [f"![Fig. 1-style, {t}](fig1_{t}.png)\n" for t in fig1_tasks(records)]
    glue += ["![Fig. 3](fig3_effective_rank.png)\n"] if any(r.get("rank_sum") for r in records) else []
    glue += ["## SoRA: sparsity against the metric (its sparsifying scheduler, seed 0)", "", SORA_NOTE, ""]
    tradeoff = sora_tradeoff(records)
    glue += [tradeoff or "No scheduler run finished yet.\n"]
    glue += ["![SoRA trade-off](fig_sora_tradeoff.png)\n"] if tradeoff else []
    grid = lr_grid(records)
    lr = [
        "# Learning-rate grid (seed 0; default x 1/3, 1, 3)",
        "",
        SOURCE,
        "",
        grid or "No grid finished yet.\n",
    ]
    stop_table, verdicts = stop_rows(records)
    aroma = ["# AROMA: its stop, optimizer resets and knobs (seed 0)", "", SOURCE, ""]
    aroma += ["## Stop: does the stop step follow the planned total or the schedule?", "", stop_table]
    aroma += [f"- {task.upper()}, {family}: {verdict}" for task, family, verdict in verdicts] + [""]
    aroma += [f"![When modules finish, {t}](fig_stop_{t}.png)\n" for t in stop_figure_tasks(records)]
    aroma += ["## Early stopping on the selection half, replayed on the logged evaluations", "", EARLY]
    aroma += ["", early_stop_rows(records)]
    for title, variants in (
        ("Optimizer reset ablation (prune 99.9% is the default)", ("", *RESETS)),
        ("Sensitivity (MRPC)", ("", *SENSITIVITY)),
    ):
        aroma += [f"## {title}", "", aroma_table(records, variants) or "No run finished yet.\n"]
    return {"glue.md": "\n".join(glue), "lr_grid.md": "\n".join(lr), "aroma.md": "\n".join(aroma)}


def blocks(records: list[dict[str, Any]]) -> dict[str, str]:
    """Generated block name -> Markdown, for the README and docs/reproduction.md."""
    note = f"\n{machine_note(records)} Generated by `python benchmarks/evidence_tables.py`.\n"
    return {
        "headline": readme_table(records) + note,
        "claims": claims_table(records),
        "knobs": knob_guide(records),
        "costs": costs(records),
    }


def start_marker(name: str) -> str:
    return f"<!-- generated: {name} (python benchmarks/evidence_tables.py) -->"


def end_marker(name: str) -> str:
    return f"<!-- end generated: {name} -->"


def replace_blocks(text: str, contents: dict[str, str], where: Path) -> str:
    """``text`` with every generated block it holds replaced; a file without any is refused."""
    found = 0
    for name, content in contents.items():
        start, end = start_marker(name), end_marker(name)
        if start not in text:
            continue
        if end not in text.split(start, 1)[1]:
            raise SystemExit(f"evidence_tables.py: error: {where}: {start!r} has no {end!r} after it")
        head, rest = text.split(start, 1)
        text = head + start + "\n" + content + rest[rest.index(end) :]
        found += 1
    if not found:
        raise SystemExit(
            f"evidence_tables.py: error: {where} holds no generated block ({start_marker('...')})"
        )
    return text


def figures(records: list[dict[str, Any]], out_dir: Path) -> list[Path]:
    """fig1_<task>.png (AROMA: adapter parameters, total rank and the report-half metric against the
    step, one line per run), fig_stop_<task>.png (when modules finish, per stop variant),
    fig_sora_tradeoff.png (SoRA's metric per scheduler stage against its rank) and
    fig3_effective_rank.png (effective rank / rank of every method)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from aroma_peft.report.figures import save

    written = []
    for task in fig1_tasks(records):
        runs = stop_runs(records, task)
        fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
        for r in sorted(runs, key=lambda r: (r["variant"], r["seed"])):
            steps = [0] + [p["step"] for p in r["trajectory"]]
            lr = "" if r["lr_factor"] == 1.0 else f" lr x {r['lr_factor']:.2g}"
            label = f"{r['variant'] or 'default'}{lr} s{r['seed']}"
            params = [r["adapter_params"]["start"]] + [p["adapter_params"] for p in r["trajectory"]]
            params[-1] = (
                r["adapter_params"]["end"] if r["trajectory"][-1]["step"] == r["steps"] else params[-1]
            )
            axes[0].plot(steps, [v / 1e3 for v in params], label=label)
            axes[1].plot(steps, [0] + [p["total_rank"] for p in r["trajectory"]], label=label)
            axes[2].plot(steps[1:], [100 * p["report"] for p in r["trajectory"]], label=label)
        majority = runs[0]["majority"].get(runs[0]["main_metric"])
        if majority is not None:
            axes[2].axhline(100 * majority, color="grey", linestyle="--", label="majority class")
        for ax, title in zip(
            axes, ("trainable adapter parameters (k)", "total rank", "dev metric, report half")
        ):
            ax.set_title(title)
            ax.set_xlabel("optimizer step")
        axes[2].legend(fontsize=7)
        model = "" if "MiniLM" in runs[0]["model"] else f" ({runs[0]['model']})"
        fig.suptitle(f"AROMA on {task.upper()}{model}: adapter parameters, total rank and dev metric per run")
        written.append(save(fig, out_dir / f"fig1_{task}.png"))
    for task in stop_figure_tasks(records):
        seed0 = [r for r in stop_runs(records, task) if r["seed"] == 0]
        written.append(save(stop_figure(seed0, plt), out_dir / f"fig_stop_{task}.png"))
    stages = sora_stages(records)
    if stages:
        fig, ax = plt.subplots(figsize=(6, 4))
        for task, rows in sorted(stages.items()):
            ranks = [st["active_rank"] for st in rows]
            for key, style in (("generalization", "-o"), ("memorization", "--x")):
                ax.plot(ranks, [100 * st[key] for st in rows], style, label=f"{task}, {key[:-5]}ation")
        ax.set_xlabel("active rank (sum over modules)")
        ax.set_ylabel("metric (x100), best of the stage")
        ax.invert_xaxis()  # left to right: the scheduler's stages, sparser and sparser
        ax.legend(fontsize=7)
        ax.set_title("SoRA: sparsity against the metric (xi rises stage by stage)")
        written.append(save(fig, out_dir / "fig_sora_tradeoff.png"))
    ranked = [r for r in compared(records) if r.get("rank_sum")]
    if ranked:
        cells: dict[tuple[str, str], list[float]] = defaultdict(list)
        for r in ranked:
            cells[(r["task"], r["label"])].append(r["effective_rank_sum"] / r["rank_sum"])
        fig, ax = plt.subplots(figsize=(max(4, 0.6 * len(cells)), 4.2))
        names = [f"{t} {lab}" for t, lab in sorted(cells)]
        ax.bar(names, [100 * statistics.fmean(cells[k]) for k in sorted(cells)])
        ax.tick_params(axis="x", labelrotation=60)  # long method names would overlap side by side
        ax.set_ylabel("effective rank / rank (%)")
        ax.set_ylim(0, 100)
        ax.set_title("Fig. 3: effective-rank ratio of the learned updates")
        written.append(save(fig, out_dir / "fig3_effective_rank.png"))
    return written


def stop_runs(records: list[dict[str, Any]], task: str) -> list[dict[str, Any]]:
    """AROMA's runs on ``task`` that did not diverge: its defaults (every seed, at the lr the headline
    compares, `compared`) and its stop variants (the sensitivity runs would crowd the figures)."""
    headline = {r["id"] for r in compared(records)}
    return [
        r
        for r in records
        if r["task"] == task and r["label"] == "aroma" and not r.get("diverged")
        and (r["id"] in headline or (r["variant"] in STOP_VARIANTS and r["lr_factor"] == 1.0))
    ]  # fmt: skip


def fig1_tasks(records: list[dict[str, Any]]) -> list[str]:
    """Tasks with an AROMA run for fig1_<task>.png: the ones that get (and glue.md links) the figure."""
    return [t for t in sorted({r["task"] for r in records if r["label"] == "aroma"}) if stop_runs(records, t)]


def stop_figure_tasks(records: list[dict[str, Any]]) -> list[str]:
    """Tasks with at least two stop variants finished on seed 0: the ones that get a stop figure."""
    tasks = sorted({r["task"] for r in records})
    return [t for t in tasks if len({r["variant"] for r in stop_runs(records, t) if r["seed"] == 0}) > 1]


def stop_figure(runs: list[dict[str, Any]], plt: Any) -> Any:
    """Modules finished against the share of the planned steps, beside each schedule's lr factor: if
    the stop follows the schedule, the curves of 1,500 and 3,000 planned steps coincide here."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for r in sorted(runs, key=lambda r: r["variant"]):
        planned = r["planned_steps"]
        if r.get("finish_steps"):  # one step per finished module
            steps = [0, *r["finish_steps"], r["steps"]]
            done = [0, *range(1, len(r["finish_steps"]) + 1), len(r["finish_steps"])]
        else:  # records from before finish_steps: the count at each evaluation
            steps = [0] + [p["step"] for p in r["trajectory"]]
            done = [0] + [p.get("finished_modules") or 0 for p in r["trajectory"]]
        ax.step([s / planned for s in steps], done, where="post", label=f"{r['variant'] or 'default'}")
    warm = COMMON["warmup_ratio"]
    twin = ax.twinx()
    twin.plot([0, warm, 1], [0, 1, 0], color="grey", linestyle="--", linewidth=1, label="linear lr")
    twin.plot([0, warm, 1], [0, 1, 1], color="grey", linestyle=":", linewidth=1, label="constant lr")
    twin.set_ylabel("lr / peak lr")
    twin.set_ylim(0, 1.05)
    ax.set_xlabel("optimizer step / planned steps")
    ax.set_ylabel("modules finished")
    ax.set_title(f"AROMA on {runs[0]['task'].upper()}: when modules finish (seed 0)")
    ax.legend(loc="upper left", fontsize=7)
    twin.legend(loc="center left", fontsize=7)
    return fig


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--results-dir", type=Path, default=RESULTS)
    parser.add_argument("--out-dir", type=Path, default=DOCS)
    parser.add_argument(
        "--docs",
        type=Path,
        nargs="*",
        default=[ROOT / "README.md", ROOT / "docs" / "reproduction.md"],
        help="files whose generated blocks (headline, claims, knobs) are rewritten",
    )
    args = parser.parse_args(argv)
    from aroma_peft.io import atomic_write

    records = load(args.results_dir)
    for name, text in documents(records).items():
        atomic_write(args.out_dir / name, lambda tmp, text=text: Path(tmp).write_text(text))
        print(f"wrote {args.out_dir / name}")
    for path in figures(records, args.out_dir):
        print(f"wrote {path}")
    contents = blocks(records)
    for path in args.docs:
        text = replace_blocks(path.read_text(), contents, path)
        atomic_write(path, lambda tmp, text=text: Path(tmp).write_text(text))
        print(f"updated {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
