"""benchmarks/speed/module_overhead.py on a tiny shape: a table row per shape naming the path
``folds()`` picks, and ``folds`` restored after the script forced each path."""

from __future__ import annotations

import sys

import torch
from test_evidence import load_script

from aroma_peft.tuners.aroma import layer


def test_module_overhead_table_row_and_folds_restored(capsys, monkeypatch):
    script = load_script("speed/module_overhead")
    chosen = layer.folds
    monkeypatch.setattr(sys, "argv", ["module_overhead.py", "6:5x4", "--threads", "1"])
    script.main()
    assert layer.folds is chosen  # the forced paths did not leak into the library
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| 6 |")]
    assert len(rows) == 1
    cells = [c.strip() for c in rows[0].strip("|").split("|")]
    assert cells[:2] == ["6", "5x4"] and all(c.endswith("x") for c in cells[3:5])
    assert cells[5] == ("fold" if layer.folds(torch.empty(6, 4), torch.empty(5, 4)) else "unfold")
