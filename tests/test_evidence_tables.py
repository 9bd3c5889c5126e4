"""benchmarks/evidence_tables.py on hand-written result records: mean ± std over seeds, the 2-SE rule,
the learning-rate grid's choice on the selection half, AROMA's stop table, what the plan lacks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_evidence import load_script


@pytest.fixture(scope="module")
def tables():  # noqa: ANN201
    load_script("evidence")  # evidence_tables imports the plan from it
    return load_script("evidence_tables")


def record(label: str, seed: int, value: float, **extra) -> dict:  # noqa: ANN003
    base = {
        "id": f"mrpc-{label}-s{seed}",
        "task": "mrpc",
        "model": "all-MiniLM-L6-v2",
        "label": label,
        "method": label.split("_")[0],
        "variant": "",
        "seed": seed,
        "lr": 1e-3,
        "lr_factor": 1.0,
        "main_metric": "accuracy",
        "majority": {"accuracy": 0.68, "f1": 0.81},
        "diverged": None,
        "steps": 1500,
        "planned_steps": 1500,
        "stopped_early": False,
        "selected": {"accuracy": value, "step": 700, "selection": value + 0.01},
        "final_report": {"accuracy": value - 0.01, "step": 1500},
        "adapter_params": {"start": 41472, "mean": 60000.0, "end": 0},
        "total_rank_end": 40,
        "rank_sum": 40,
        "effective_rank_sum": 38.0,
        "trajectory": [{"step": 100, "select": 0.7, "report": value, "adapter_params": 1, "total_rank": 0}],
        "time_per_step_s": 1.0,
        "machine": {"cpu": "AMD EPYC", "cpu_count": 2, "torch_threads": 1},
    }
    return base | extra


def test_headline_mean_std_and_baseline(tables):
    runs = [record("aroma", s, v, train_loss_end=0.1 * s) for s, v in enumerate((0.80, 0.82, 0.84))]
    rows = tables.headline(runs[:2] + [runs[2] | {"train_loss_end": None}]).splitlines()
    assert rows[2].startswith(
        "| mrpc | aroma | 3 | 82.0 ± 2.0 | 81.0 ± 2.0 | 68.0 | 41.5k / 60.0k / 0 | 40.0 ± 0.0 |"
    )
    assert "| 0.95 | 0.050 (2) |" in rows[2]  # the loss: mean over the runs that recorded it


def test_real_difference_only_beyond_two_standard_errors(tables):
    far = [record("aroma", s, v) for s, v in enumerate((0.80, 0.81, 0.82))]
    far += [record("lora_r8", s, v) for s, v in enumerate((0.70, 0.71, 0.72))]
    assert "| mrpc | aroma - lora_r8 | +10.0 | 1.6 | real |" in tables.comparisons(far)
    near = [record("aroma", s, v) for s, v in enumerate((0.70, 0.80, 0.75))]
    near += [record("lora_r8", s, v) for s, v in enumerate((0.72, 0.78, 0.76))]
    assert "within the seed spread" in tables.comparisons(near)
    single = [record("aroma", 0, 0.8), record("lora_r8", 0, 0.7)]
    assert "indicative (one seed)" in tables.comparisons(single)


def test_lr_grid_chooses_on_the_selection_half(tables):
    runs = [
        record(
            "lora_r8", 0, 0.90, lr=3.3e-4, lr_factor=1 / 3, selected={"accuracy": 0.90, "selection": 0.70}
        ),
        record("lora_r8", 0, 0.80, selected={"accuracy": 0.80, "selection": 0.85}),
        record("lora_r8", 0, 0.0, lr=3e-3, lr_factor=3.0, diverged="diverged at step 9"),
    ]
    row = tables.lr_grid(runs).splitlines()[2]
    assert row == "| mrpc | lora_r8 | 0.00033: 70.0 / 90.0; 0.001: 85.0 / 80.0 **chosen**; 0.003: diverged |"


def test_lr_grid_breaks_a_tie_towards_the_default_lr(tables):
    """The seeds run at the default: a tie on the selection half must not move the choice off it."""
    tie = {"accuracy": 0.80, "selection": 0.85}
    runs = [
        record("lora_r8", 0, 0.80, lr=3e-3, lr_factor=3.0, selected=tie | {"accuracy": 0.75}),
        record("lora_r8", 0, 0.80, selected=tie),
        record("lora_r8", 0, 0.80, lr=3.3e-4, lr_factor=1 / 3, selected=tie | {"accuracy": 0.70}),
    ]
    row = tables.lr_grid(runs).splitlines()[2]
    assert "0.001: 85.0 / 80.0 **chosen**" in row
    assert row.count("**chosen**") == 1


def test_stop_table_and_pending_runs(tables, tmp_path):
    runs = [
        record("aroma", 0, 0.8, stopped_early=True, steps=1450, first_module_finished_at=1200),
        record("aroma", 0, 0.8, variant="steps3000", planned_steps=3000, stopped_early=True, steps=2900),
    ]
    text = tables.aroma_table(runs, ("", "steps3000"))
    assert (
        "| mrpc | default | 1500 | 1200 (80%) | 1450 (97%) |" in text
        and "| mrpc | steps3000 | 3000 | - | 2900 (97%) |" in text
    )
    cola = record("aroma", 0, 0.3, task="cola", id="cola-aroma-s0")  # no variant ran on CoLA: no row
    assert "| cola |" not in tables.aroma_table([*runs, cola], ("", "steps3000"))
    for r in runs:
        (tmp_path / f"{r['id']}{r['variant']}.json").write_text(json.dumps(r))
    out = tmp_path / "docs"
    assert tables.main(["--results-dir", str(tmp_path), "--out-dir", str(out), "--docs"]) == 0
    glue = (out / "glue.md").read_text()
    assert "1 of 141 planned runs finished." in glue and "- g1: 23 pending" in glue
    assert "| mrpc | linear lr (default) | 3000 | 2900 (by eval) (97%) |" in (out / "aroma.md").read_text()
    assert Path(out / "lr_grid.md").read_text().count("No grid finished yet") == 1


# --- claims, verdicts, generated blocks, figures ----------------------------------------------------------
@pytest.fixture(scope="module")
def claims(tables):  # noqa: ANN201
    return load_script("evidence_claims")


def seeds(label: str, values: tuple[float, ...], task: str = "mrpc") -> list[dict]:
    return [
        record(label, s, v, id=f"{task}-{label}-s{s}", task=task, group="g1") for s, v in enumerate(values)
    ]


def test_claim_verdicts_follow_the_two_se_rule_and_name_what_is_missing(claims):
    ahead = seeds("aroma", (0.80, 0.81, 0.82)) + seeds("lora_r8", (0.70, 0.71, 0.72))
    text, verdict = claims.claim_beats(ahead, "aroma", "lora_r8")
    assert "MRPC: AROMA - LoRA r=8 +10.0 (2 SE 1.6; 3 vs 3 seeds)" in text
    assert verdict.startswith("MRPC: confirmed; SST-2: pending")
    assert "`sst2-aroma-s0`" in text  # what SST-2 still lacks, by run id
    behind = seeds("aroma", (0.70, 0.71, 0.72)) + seeds("lora_r8", (0.80, 0.81, 0.82))
    assert claims.claim_beats(behind, "aroma", "lora_r8")[1].startswith("MRPC: refuted at this scale")
    near = seeds("aroma", (0.70, 0.80, 0.75)) + seeds("lora_r8", (0.72, 0.78, 0.76))
    assert (
        "MRPC: not confirmed at this scale (within the seed spread)"
        in claims.claim_beats(near, "aroma", "lora_r8")[1]
    )
    partial = seeds("aroma", (0.80, 0.81)) + seeds("lora_r8", (0.70, 0.71, 0.72))
    text, verdict = claims.claim_beats(partial, "aroma", "lora_r8")
    assert verdict.startswith("MRPC: pending") and "`mrpc-aroma-s2`" in text and "so far AROMA 80.5" in text


def test_claim_parameter_share_against_lora_r8(claims):
    runs = seeds("aroma", (0.8,), "mrpc") + [
        record(
            "lora_r8", 0, 0.8, group="g1", adapter_params={"start": 331776, "mean": 331776.0, "end": 331776}
        )
    ]
    text, verdict = claims.claim_params(runs)
    assert "MRPC: AROMA 41.5k / 60.0k / 0 (initial / mean / end), 18.1% of LoRA r=8's on average" in text
    assert verdict.startswith("MRPC: confirmed; SST-2: pending")


def test_sora_counts_the_pruned_lora_it_ships(tables, claims):
    """SoRA trains every rank (its adapter parameters stay flat) and ships the non-zero gates' LoRA."""
    dense = {"start": 332064, "mean": 332064.0, "end": 332064}
    lora = {"start": 331776, "mean": 331776.0, "end": 331776}
    runs = [
        record("sora", 0, 0.8, group="g1", adapter_params=dense, adapter_params_pruned=118656),
        record("lora_r8", 0, 0.78, group="g1", adapter_params=lora),
    ]
    assert "SoRA's pruned parameters: MRPC 36% of LoRA r=8's" in claims.claim_sora(runs)[0]
    assert "| 332.1k / 332.1k / 118.7k (pruned) |" in tables.headline(runs)
    assert "| 331.8k / 331.8k / 331.8k |" in tables.headline(runs)


def test_sora_tradeoff_table_figure_and_claim(tables, claims, tmp_path):
    """The scheduler run's stage ends become a table, a figure and the claim's trade-off sentence."""
    ends = [(0, 0.0, 288, 0.95, 0.80), (1, 5e-4, 150, 0.93, 0.795), (2, 1e-3, 40, 0.85, 0.75)]
    stages = [
        {"stage": i, "xi": xi, "active_rank": rank, "memorization": mem, "generalization": gen,
         "memorization_ratio": mem / 0.95, "generalization_ratio": gen / 0.80}
        for i, xi, rank, mem, gen in ends
    ]  # fmt: skip
    sched = record("sora", 0, 0.8, id="mrpc-sora-sched-s0", variant="sched", summary={"stages": stages})
    table = tables.sora_tradeoff([sched])
    assert "| mrpc | 1 | 0.0005 | 150 | 93.0 | 79.5 | 0.994 |" in table
    assert tables.sora_tradeoff([record("sora", 0, 0.8)]) == ""  # group 1's run has no stages
    text = claims.sora_tradeoff_text([sched])
    assert "MRPC rank 288 -> 40, dev 80.0 -> 75.0; within 1 point of stage 0 down to rank 150" in text
    assert "SST-2 pending: 1 run(s) missing (`sst2-sora-sched-s0`)" in text
    assert [p.name for p in tables.figures([sched], tmp_path)] == ["fig_sora_tradeoff.png"]


def test_stop_verdict_moves_or_stays(claims):
    def stop(variant: str, planned: int, finish: list[int], final: float) -> dict:
        return record(
            "aroma",
            0,
            0.8,
            variant=variant,
            planned_steps=planned,
            steps=max(finish),
            finish_steps=finish,
            id=f"mrpc-aroma-{variant}-s0",
            final_report={"accuracy": final, "step": max(finish)},
        )

    spread = seeds("aroma", (0.78, 0.80, 0.82))  # std 2.0 points
    moving = [stop("constlr", 1500, [1400] * 36, 0.8), stop("constlr-steps3000", 3000, [2850] * 36, 0.8)]
    staying = [
        stop("outerlr", 1500, [900] * 36, 0.8),
        stop("outerlr-steps3000", 3000, [950] * 35 + [3000], 0.795),
    ]
    table, verdicts = claims.stop_rows(spread + moving + staying)
    found = {(t, f): v for t, f, v in verdicts}
    assert found[("mrpc", "constant lr")] == "the stop moves with the planned total (1400 -> 2850)"
    assert found[("mrpc", "outer criterion per unit of lr")].startswith("right: the stop stays (900 -> 950)")
    assert found[("mrpc", "linear lr (default)")].startswith(
        "pending: 1 run(s) missing (`mrpc-aroma-steps3000-s0`)"
    )
    assert "| mrpc | outer criterion per unit of lr | 3000 | 950 (32%) | 3000 |" in table
    text, verdict = claims.claim_stop(spread + moving + staying)
    assert verdict == "confirmed for: MRPC outer criterion per unit of lr; 4 of 6 task x stop pairs pending"


def test_stop_verdict_under_early_stopping_replays_the_pair(claims):
    def run(variant: str, planned: int, selects: list[float]) -> dict:
        trajectory = [{"step": 100 * (i + 1), "select": v, "report": v} for i, v in enumerate(selects)]
        return record(
            "aroma",
            0,
            0.8,
            variant=variant,
            planned_steps=planned,
            trajectory=trajectory,
            id=f"mrpc-aroma-{variant}-s0",
            finish_steps=[planned] * 36,
            selected={"accuracy": 0.85, "step": 700, "selection": 0.85},  # chosen on the other half
        )

    short = run("constlr", 1500, [0.7, 0.8, 0.79, 0.78, 0.77, 0.8])
    long = run("constlr-steps3000", 3000, [0.7, 0.75, 0.8, 0.79, 0.78, 0.77, 0.85])
    spread = seeds("aroma", (0.78, 0.80, 0.82))
    found = {(t, f): v for t, f, v in claims.stop_rows(spread + [short, long])[1]}
    assert found[("mrpc", "constant lr")] == "the stop moves with the planned total (1500 -> 3000)"
    # patience 3: stops at 500 and at 600; the longer run's report there is 77.0 against the 85.0 of the
    # evaluation its selection half chose (not the report half's own maximum)
    assert found[("mrpc", "constant lr + early stopping (patience 3, replayed)")] == (
        "the stop stays (500 -> 600) but the final metric is 8.0 below the selected evaluation's (spread 2.0)"
    )


def test_tables_script_rewrites_generated_blocks_and_draws_figures(tables, tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    runs = seeds("aroma", (0.80, 0.81, 0.82)) + seeds("lora_r8", (0.70, 0.71, 0.72))
    longer = {"variant": "steps3000", "id": "mrpc-aroma-steps3000-s0", "planned_steps": 3000}
    runs.append(record("aroma", 0, 0.8, finish_steps=[2800, 2900], steps=3000, **longer))
    for r in runs:
        (results / f"{r['id']}.json").write_text(json.dumps(r))
    readme, repro = tmp_path / "README.md", tmp_path / "reproduction.md"
    block = lambda name: f"{tables.start_marker(name)}\nstale\n{tables.end_marker(name)}\n"  # noqa: E731
    readme.write_text("# intro\n\n" + block("headline") + "\n## after\n")
    repro.write_text("# claims\n" + block("claims") + "middle\n" + block("knobs"))
    out = tmp_path / "docs"
    argv = ["--results-dir", str(results), "--out-dir", str(out), "--docs", str(readme), str(repro)]
    assert tables.main(argv) == 0
    text = readme.read_text()
    assert text.startswith("# intro\n\n") and text.endswith("## after\n") and "stale" not in text
    assert "| mrpc | majority class | - | 68.0 |" in text
    assert "| mrpc | AROMA | 3 | 81.0 ± 1.0 | +10.0 (real) | 41.5k / 60.0k / 0 |" in text
    assert "| mrpc | LoRA r=8 | 3 | 71.0 ± 1.0 |" in text
    claims_text = repro.read_text()
    assert "| 1 | AROMA beats LoRA r=8" in claims_text and "MRPC: confirmed; SST-2: pending" in claims_text
    assert "middle\n" in claims_text and "- **eps_in**. Mechanics:" in claims_text
    assert tables.main(argv) == 0 and readme.read_text() == text  # idempotent
    for name in ("fig1_mrpc.png", "fig_stop_mrpc.png", "fig3_effective_rank.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    readme.write_text("no blocks here\n")
    with pytest.raises(SystemExit, match="README.md holds no generated block"):
        tables.main(argv)


def test_claim_against_one_seed_baselines_is_indicative(claims):
    runs = seeds("aroma", (0.80, 0.81, 0.82)) + [
        record("bitfit", 0, 0.70, group="g3"),
        record("adapterh", 0, 0.90, group="g3"),
    ]
    text, verdict = claims.claim_against(runs, ("bitfit", "adapterh"), ("g3",))
    assert text.startswith("MRPC: AROMA - BitFit +11.0 (indicative (one seed)), AdapterH -9.0")
    assert verdict == "MRPC: indicative only (one seed): AROMA ahead of 1 of 2; SST-2: pending"
    runs.append(record("lora_r1", 0, 0.95, group="g1"))  # a baseline with fewer seeds than planned
    assert claims.claim_against(runs, ("lora_r1",), ("g1",))[1].startswith("MRPC: pending")


def test_claim_against_takes_a_one_seed_baseline_at_its_complete_grids_lr(claims):
    """Every method gets the same lr grid: once a one-seed baseline's grid is complete and chose a
    non-default lr, AROMA is compared against that run; an unfinished grid keeps the default."""
    runs = seeds("aroma", (0.80, 0.81, 0.82)) + [record("bitfit", 0, 0.80, group="g3")]
    high = record("bitfit", 0, 0.86, lr=3e-3, lr_factor=3.0, selected={"accuracy": 0.86, "selection": 0.90})
    low = record(
        "bitfit", 0, 0.70, lr=3.3e-4, lr_factor=1 / 3, selected={"accuracy": 0.70, "selection": 0.70}
    )
    half = claims.claim_against([*runs, high], ("bitfit",), ("g3",))[0]
    assert half.startswith("MRPC: AROMA - BitFit +1.0 (indicative (one seed))")
    whole = claims.claim_against([*runs, high, low], ("bitfit",), ("g3",))[0]
    assert whole.startswith("MRPC: AROMA - BitFit -5.0 (at its grid's lr 0.003, indicative (one seed))")
    default_wins = [*runs, high | {"selected": {"accuracy": 0.86, "selection": 0.5}}, low]
    assert claims.claim_against(default_wins, ("bitfit",), ("g3",))[0].startswith(
        "MRPC: AROMA - BitFit +1.0 (indicative"
    )
    assert claims.readme_table([*runs, high, low]).splitlines()[-1].endswith("| 0.003, 86.0 |")
    assert claims.readme_table([*runs, high]).splitlines()[-1].endswith("| pending |")


def test_claim_time_from_the_quiet_whole_runs(claims, tmp_path):
    assert claims.claim_time(tmp_path)[1] == "pending"
    result = {
        "steps": 345,
        "command": "python benchmarks/time_claim.py --steps 345 --threads 2",
        "runs": {"aroma": {"steps": 300}},
        "aroma_share": {"lora_r8": 0.78, "adalora": 0.9},
        "paper_share": {"lora_r8": 0.76, "adalora": 0.285},
    }
    (tmp_path / "mrpc-345steps.json").write_text(json.dumps(result))
    text, verdict = claims.claim_time(tmp_path)
    assert "78% of LoRA r=8's (paper 76.0%), 90% of AdaLoRA r=8's (paper 28.5%)" in text
    assert "(AROMA ran 300)" in text and "mrpc-345steps.md" in text
    assert verdict == "LoRA r=8: confirmed; AdaLoRA r=8: faster, by less (the share: refuted at this scale)"


def test_early_stopping_replays_the_trainers_rule(claims):
    trajectory = [
        {"step": 100 * (i + 1), "select": s, "report": s - 0.01}
        for i, s in enumerate([0.7, 0.8, 0.79, 0.8, 0.78])
    ]
    run = record("lora_r8", 0, 0.8, trajectory=trajectory)
    assert claims.early_stop_at(run, 2) == {"step": 400, "report": pytest.approx(79.0)}  # 0.79, 0.8 <= 0.8
    assert claims.early_stop_at(run, 3) is None  # the last evaluation is the run's own end
    assert "| `mrpc-lora_r8-s0` | 1500 | 80.0 (700) | 79.0 | never | never |" in claims.early_stop_rows([run])


def test_time_claim_shares_and_table(tables):
    timing = load_script("time_claim")
    row = {
        "steps": 345,
        "stopped_early": False,
        "train_time_s": 300.0,
        "time_per_epoch_s": 100.0,
        "time_per_step_s": 0.87,
        "final": {"accuracy": 0.73},
        "load_average": {"before": [0.5, 0, 0], "after": [2.0, 0, 0]},
        "machine": {"cpu": "AMD EPYC", "cpu_count": 2, "torch_threads": 2, "torch": "2.13.0+cpu"},
    }
    rows = {"aroma": row, "lora_r8": row | {"train_time_s": 400.0}, "adalora": row | {"train_time_s": 600.0}}
    assert timing.shares(rows) == {"lora_r8": 0.75, "adalora": 0.5}
    result = {"steps": 345, "command": "python benchmarks/time_claim.py", "runs": rows}
    table = timing.markdown(result | {"aroma_share": timing.shares(rows)})
    assert "| LoRA r=8 | 345 (no) | 400 | 100.0 | 0.870 | 75% | 76.0% | 0.50 / 2.00 | 73.0 |" in table


def commonsense_row(label: str, average: float, above: tuple[str, ...] = ()) -> dict:
    sets = {n: {"accuracy": average, "above_majority": n in above} for n in ("ARC-Easy", "BoolQ")}
    loglik = {"average": average, "majority_average": 45.0, "sets": sets}
    return {"label": label, "group": "table", "evaluation": {"loglik": loglik}}


def test_commonsense_claim_pending_indicative_or_not_testable(claims):
    """Claim 10 comes from the commonsense table's rows: pending while rows are missing, not testable
    while no trained row beats the majority class, indicative (one seed) once one does."""
    rows = [commonsense_row("base", 33.0), commonsense_row("lora_r8", 44.0)]
    text, verdict = claims.claim_commonsense(rows)
    assert verdict == "pending" and "untrained 33.0, LoRA r=8 44.0" in text and "`cs-aroma_r1`" in text
    rows += [commonsense_row(label, 45.0) for label in ("aroma_r1", "aroma_r8", "sora")]
    text, verdict = claims.claim_commonsense(rows)
    assert verdict.startswith("not testable here") and "AROMA r=1 - LoRA r=8 +1.0" in text
    rows[2] = commonsense_row("aroma_r1", 50.0, above=("ARC-Easy",))
    text, verdict = claims.claim_commonsense(rows)
    assert verdict == "indicative only (one seed)" and "AROMA r=1 on ARC-Easy" in text


def test_commonsense_claim_names_the_longer_runs_that_leave_the_majority_class(claims):
    """The curves group (longer runs on one set) joins claim 10: each run's test average, starred when
    every set is above its majority class."""
    rows = [commonsense_row(label, 40.0) for label in ("base", "lora_r8", "aroma_r1", "aroma_r8", "sora")]
    full = commonsense_row("full", 50.0, above=("ARC-Easy", "BoolQ")) | {
        "group": "curves",
        "lr": 2e-4,
        "steps": 1000,
    }
    lora = commonsense_row("lora_r8", 41.0) | {"group": "curves", "lr": 2e-3, "steps": 1000}
    text, verdict = claims.claim_commonsense([*rows, lora, full])
    assert "longer runs on ARC-Easy, BoolQ (1000 steps, majority class 45.0" in text
    assert "LoRA r=8 lr 0.002 41.0, full fine-tuning lr 0.0002 50.0*" in text
    assert verdict.endswith("nor any adapter in the longer runs)")
    assert "longer runs" not in claims.claim_commonsense(rows)[0]
    lora_above = commonsense_row("lora_r8", 50.0, above=("ARC-Easy", "BoolQ")) | {
        "group": "curves",
        "lr": 2e-3,
    }
    assert "nor any adapter" not in claims.claim_commonsense([*rows, lora_above, full])[1]


def test_effective_rank_claim_is_indicative_on_one_adalora_run(claims):
    aroma = [record("aroma", s, 0.8, effective_rank_sum=36.0) for s in range(3)]  # 90% of rank 40
    one = [record("adalora", 0, 0.8, effective_rank_sum=20.0)]  # 50%
    text, verdict = claims.claim_effective_rank(aroma + one)
    assert text.startswith("AROMA 90% (3 runs), AdaLoRA 50% (1 run)")
    assert verdict == "indicative only (one run): confirmed"
    two = one + [record("adalora", 1, 0.8, effective_rank_sum=38.0)]  # mean 72.5%: too close to AROMA
    assert claims.claim_effective_rank(aroma + two)[1] == "refuted at this scale"
    assert claims.claim_effective_rank(aroma)[1] == "pending"


def test_machine_note_names_each_machine_once():
    """Records whose machines differ only in fields the note does not show (the kernel set) read as one."""
    records = load_script("evidence_records")
    machine = {"cpu": "AMD EPYC", "cpu_count": 2, "torch_threads": 1}
    rows = [{"machine": machine}, {"machine": machine | {"cpu_capability": "AVX512"}}, {"machine": None}]
    assert (
        records.machine_note(rows)
        == "Machine: AMD EPYC, 2 cores, 1 torch thread (shared with other jobs: times are noisy)."
    )


def test_reset_ablation_names_every_variant_within_the_seed_spread_of_the_best(claims):
    """Table 4's claim (prune 99.9% best): a tie within AROMA's seed spread is a tie, not a winner."""
    seeds = [record("aroma", s, v) for s, v in ((0, 0.80), (1, 0.81), (2, 0.79))]  # spread 1.0 point
    zero = record("aroma", 0, 0.805, variant="reset_zero", id="mrpc-aroma-reset_zero-s0")
    none = record("aroma", 0, 0.77, variant="reset_none", id="mrpc-aroma-reset_none-s0")
    text, verdict = claims.claim_reset([*seeds, zero, none])
    assert "none: 77.0" in text and "zero: 80.5" in text and "prune 99.9%: 80.0" in text
    assert verdict == (
        "indicative only (one seed): best prune 99.9% and zero (within AROMA's seed spread, 1.0, of each "
        "other); as the paper's"
    )
    zero["selected"]["accuracy"] = 0.83
    assert claims.claim_reset([*seeds, zero, none])[1] == (
        "indicative only (one seed): best zero; not the paper's prune 99.9%"
    )


def test_knob_guide_calls_a_one_seed_change_real_only_beyond_two_standard_errors(claims):
    """One seed against one: 2 SE of the difference is 2 x sqrt(2) x AROMA's seed std (here 2.8)."""
    seeds = [record("aroma", s, v) for s, v in ((0, 0.80), (1, 0.81), (2, 0.79))]  # std 1.0 point
    near = record("aroma", 0, 0.82, variant="eps_out2.5e-3", id="mrpc-aroma-eps_out2.5e-3-s0")
    far = record("aroma", 0, 0.77, variant="check5", id="mrpc-aroma-check5-s0")
    guide = claims.knob_guide([*seeds, near, far])
    assert "= 2.8 points" in guide
    assert "eps_out 0.0025: 82.0 (+2.0 within the noise;" in guide
    assert "check_interval 5: 77.0 (-3.0 real;" in guide


def test_knob_confirmation_changes_a_default_only_on_a_real_gain_without_a_real_loss(claims):
    """rewarmup100 on three seeds of MRPC and SST-2 against the defaults' three seeds."""

    def runs(task: str, variant: str, values: tuple[float, ...]) -> list[dict]:
        name = f"-{variant}" if variant else ""
        return [
            record("aroma", s, v, task=task, variant=variant, id=f"{task}-aroma{name}-s{s}")
            for s, v in enumerate(values)
        ]

    base = runs("mrpc", "", (0.80, 0.81, 0.79)) + runs("sst2", "", (0.85, 0.84, 0.86))
    gain = runs("mrpc", "rewarmup100", (0.83, 0.84, 0.82))
    half = claims.knob_guide(base + gain[:1])
    assert "Seeds and SST-2 for rewarmup_steps 100: pending: 5 run(s) missing" in half
    flat = claims.knob_guide(base + gain + runs("sst2", "rewarmup100", (0.85, 0.845, 0.855)))
    assert "MRPC 83.0 ± 1.0 against the defaults' 80.0 ± 1.0 (+3.0, 2 SE 1.6; 3 vs 3 seeds: real)" in flat
    assert flat.rstrip().splitlines()[-3].endswith(": a better default.")
    worse = claims.knob_guide(base + gain + runs("sst2", "rewarmup100", (0.80, 0.81, 0.79)))
    assert "SST-2 80.0 ± 1.0 against the defaults' 85.0 ± 1.0 (-5.0, 2 SE 1.6; 3 vs 3 seeds: real)" in worse
    assert ": not a better default." in worse


def test_costs_block_times_the_finished_runs_and_estimates_what_is_left(tables):
    runs = [
        record("aroma", 0, 0.8, wall_time_s=1800.0),
        record("aroma", 1, 0.8, wall_time_s=3600.0),
        record("aroma", 2, 0.8, wall_time_s=9000.0, planned_steps=3000, id="mrpc-aroma-steps3000-s0"),
    ]
    lines = tables.costs(runs).splitlines()
    assert lines[0] == (
        "- MRPC (all-MiniLM-L6-v2): 2 runs of 1,500 steps, 30 to 60 minutes, median 45; "
        "2.40 s per planned step (median of all 3 runs)"
    )
    # g1: 10 MRPC runs pending at 1 h each; its 12 SST-2 runs have no timed SST-2 run to go by
    assert lines[1].startswith("- Left with 3 of ")
    assert "g1: about 10.0 h of one core + 12 run(s) of a task or model not yet timed; " in lines[1]


def test_more_tasks_claim_waits_for_the_probe_and_skips_a_task_it_did_not_learn(tables, claims):
    """Group 5: CoLA's probe learned (Matthews well above 0), so AROMA is compared with each gated run
    once all are in; RTE's probe sits at the majority class at the default lr, so RTE gets a probe at
    the grid's lower lr, and is not testable here when that one does not learn either."""

    def run(task: str, label: str, value: float, metric: str, majority: float, lr: str = "") -> dict:
        model = "-mpnet" if task == "rte" else ""
        return record(
            label,
            0,
            value,
            id=f"{task}{model}-{label}{lr}-s0",
            task=task,
            group="g5",
            main_metric=metric,
            majority={metric: majority},
            selected={metric: value, "selection": value, "step": 700},
        )

    assert claims.claim_more_tasks([])[1] == "CoLA: pending; RTE (MPNet-base): pending"
    cola = [run("cola", "lora_r8", 0.30, "matthews", 0.0), run("cola", "aroma", 0.25, "matthews", 0.0)]
    rte = [run("rte", "lora_r8", 0.51, "accuracy", 0.5)]
    text, verdict = claims.claim_more_tasks(cola + rte)
    assert text.startswith("CoLA: LoRA r=8 30.0, AROMA 25.0; pending: 2 run(s) missing")
    assert "RTE (MPNet-base): LoRA r=8 did not learn it at lr 0.001 in 1,500 steps (accuracy 0.510" in text
    assert "pending: 1 run(s) missing (`rte-mpnet-lora_r8-lr0.33x-s0`)" in text
    assert verdict == "CoLA: pending; RTE (MPNet-base): pending"
    left = tables.pending(cola + rte)
    assert "- g5: 6 pending (cola-lora_r1-s0, cola-sora-s0, rte-mpnet-lora_r8-lr0.33x-s0, " in left
    assert "- g5: `rte-mpnet-sora-s0` skipped: its probe rte-mpnet-lora_r8-s0 did not learn (accuracy" in left
    assert "- g5: `cola-aroma-lr0.33x-s0` skipped: cola-lora_r8-s0 learned the task at its lr" in left
    assert "7 skipped (ruled out by their probes' results)" in tables.costs(cola + rte)
    rte.append(run("rte", "lora_r8", 0.50, "accuracy", 0.5, "-lr0.33x") | {"lr": 3.3e-4, "lr_factor": 1 / 3})
    verdict = claims.claim_more_tasks(cola + rte)[1]
    assert verdict.endswith(
        "RTE (MPNet-base): not testable here (LoRA r=8 stays at the majority class at both lrs)"
    )
    assert "- g5: 2 pending (cola-lora_r1-s0, cola-sora-s0)" in tables.pending(cola + rte)
    lower = {"lr": 3.3e-4, "lr_factor": 1 / 3}
    rte[1] = run("rte", "lora_r8", 0.66, "accuracy", 0.5, "-lr0.33x") | lower
    text, verdict = claims.claim_more_tasks(cola + rte)
    assert "did not learn it at lr 0.001 in 1,500 steps (accuracy 0.510 against majority class 0.500" in text
    assert "; at lr 0.00033 it did (accuracy 0.660 against majority class 0.500" in text
    assert "); LoRA r=8 66.0; pending: 3 run(s) missing (`rte-mpnet-aroma-lr0.33x-s0`" in text
    assert verdict.endswith("RTE (MPNet-base): pending")
    rte += [
        run("rte", m, v, "accuracy", 0.5, "-lr0.33x") | lower
        for m, v in [("aroma", 0.70), ("lora_r1", 0.6), ("sora", 0.72)]
    ]
    text, verdict = claims.claim_more_tasks(cola + rte)
    assert (
        "LoRA r=8 66.0, AROMA 70.0, LoRA r=1 60.0, SoRA 72.0; "
        "AROMA - LoRA r=8 +4.0, LoRA r=1 +10.0, SoRA -2.0" in text
    )
    assert verdict.endswith("RTE (MPNet-base): indicative only (one seed): AROMA ahead of 2 of 3")
    # the headline compares RTE at the lr its probe learned at, not the default probe's collapse
    rte_rows = [line for line in claims.readme_table(rte).splitlines() if line.startswith("| rte")]
    assert [row.split(" | ")[1:3] for row in rte_rows[1:]] == [
        ["AROMA", "1"],
        ["LoRA r=8", "1"],
        ["LoRA r=1", "1"],
        ["SoRA", "1"],
    ]
    assert "| 66.0 |  |" in rte_rows[2] and rte_rows[2].endswith("LoRA r=8 did not learn at x 1) |")
    assert "rte runs at x 0.33 of its default lr" in "\n".join(tables.lr_note(rte))
    assert tables.lr_note(cola) == []
    assert [(r["label"], r["lr_factor"]) for r in tables.stop_runs(rte, "rte")] == [("aroma", 1 / 3)]
    assert tables.fig1_tasks(cola + rte) == ["cola", "rte"]
    assert "- g5: 2 pending (cola-lora_r1-s0, cola-sora-s0)" in tables.pending(cola + rte)
    cola += [run("cola", "lora_r1", 0.20, "matthews", 0.0), run("cola", "sora", 0.28, "matthews", 0.0)]
    text, verdict = claims.claim_more_tasks(cola + rte)
    assert "AROMA - LoRA r=8 -5.0, LoRA r=1 +5.0, SoRA -3.0" in text
    assert verdict.startswith("CoLA: indicative only (one seed): AROMA ahead of 1 of 3;")
    assert claims.readme_table(cola).splitlines()[2].startswith("| cola | majority class | - | 0.0 |")
    assert claims.readme_table(cola).splitlines()[3].endswith("| not in the plan |")  # g5 has no lr grid
