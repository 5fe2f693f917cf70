"""benchmarks/gpu_suite.py: the one-call GPU benchmark suite, run here with --tiny on the CPU (no timing thresholds)."""
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from benchmarks import gpu_suite

ROOT = Path(__file__).resolve().parents[1]
MAY_BE_ZERO = {"accuracy", "reward", "episode"}   # sanity numbers of tiny trainings, and an index


def run_suite(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "benchmarks.gpu_suite", "--tiny", "--out", str(out), *extra],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)


def read(out: Path) -> tuple[str, dict]:
    return (out / "gpu_suite.md").read_text(), json.loads((out / "gpu_suite.json").read_text())


def summary_rows(md: str) -> dict:
    """section -> status, from the summary table at the top of gpu_suite.md."""
    rows = {}
    for line in md.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0] in gpu_suite.SECTIONS:
            rows[cells[0]] = cells[1]
    return rows


def measured_numbers(rows: list[dict]):
    for row in rows:
        if "not_run" in row:
            continue
        for key, value in row.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                yield key, value


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_suite")
    proc = run_suite(out)
    return proc, out


def test_tiny_suite_writes_a_row_per_section_with_positive_numbers(tiny):
    proc, out = tiny
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    md, report = read(out)
    assert summary_rows(md) == {name: "ok" for name in gpu_suite.SECTIONS}
    assert list(report["sections"]) == list(gpu_suite.SECTIONS)
    for name, section in report["sections"].items():
        assert section["status"] == "ok", (name, section.get("traceback"))
        assert section["seconds"] > 0 and math.isfinite(section["seconds"])
        assert section["rows"], name
        numbers = list(measured_numbers(section["rows"]))
        assert numbers, name
        for key, value in numbers:
            assert math.isfinite(value), (name, key, value)
            assert value >= 0 if key in MAY_BE_ZERO else value > 0, (name, key, value)
    training = report["sections"]["training"]["rows"]
    assert {(r["path"][:3], r["precision"]) for r in training} == {("(a)", "fp32"), ("(b)", "fp32"), ("(b)", "bf16"),
                                                                    ("(c)", "fp32"), ("(c)", "bf16")}
    search = report["sections"]["search"]
    assert len(search["rows"]) == 2 and search["extrapolation"]["per_7_epoch_episode_s"] > 0
    assert "extrapolat" in md.lower()
    assert [r["K"] for r in report["sections"]["dqn"]["rows"]] == [2, 4]
    assert report["sections"]["device"]["info"]["cpu_cores"] >= 1
    assert "## Child training" in md and "## Batched DQN" in md


def test_a_failing_section_is_reported_and_the_others_still_run(tmp_path):
    # one section forced to fail, one given a bad argument (no DQN runs: dqn_batched refuses an empty batch)
    proc = run_suite(tmp_path, "--fail-section", "training", "--dqn-ks", "0")
    assert proc.returncode == 1, proc.stdout[-4000:] + proc.stderr[-4000:]
    md, report = read(tmp_path)
    status = summary_rows(md)
    assert status["device"] == "ok" and status["search"] == "ok"
    assert status["training"] == "failed: ForcedFailure: forced by --fail-section training"
    assert status["dqn"].startswith("failed: ParameterError: runs must be a non-empty list")
    assert "\n" not in report["sections"]["dqn"]["status"]
    assert report["sections"]["search"]["rows"]


class FakeBudget(gpu_suite.Budget):
    """Plenty of time until the section has measured something, then none: the budget logic without a clock."""

    def __init__(self, out: dict):
        super().__init__(60.0)
        self.out = out

    def left(self) -> float:
        return 0.0 if any("seconds" in r for r in self.out.get("rows", [])) else 1e6


def test_a_section_out_of_budget_reports_what_it_measured():
    s = gpu_suite.settings_from(gpu_suite.build_parser().parse_args(["--tiny", "--out", "unused", "--dqn-ks", "2", "3", "4"]))
    out = {}
    gpu_suite.section_dqn(s, FakeBudget(out), out)
    measured = [r for r in out["rows"] if "seconds" in r]
    assert [r["K"] for r in measured] == [2]
    assert [r["K"] for r in out["rows"] if "not_run" in r] == [3, 4]
    assert all("budget" in r["not_run"] for r in out["rows"] if "not_run" in r)
    assert out["partial"] and "1 of 3 batches measured" in out["summary"]


def test_hard_limit_interrupts_a_measurement():
    start = time.perf_counter()
    with pytest.raises(gpu_suite.OverBudget):
        with gpu_suite.hard_limit(0.2):
            while time.perf_counter() - start < 30:
                time.sleep(0.01)
    with gpu_suite.hard_limit(5.0):     # a block that ends in time is left alone, and the timer is cleared
        pass


def test_section_budgets_parse():
    assert gpu_suite.parse_budgets(["90", "dqn=200"], tiny=False) == {"device": 90.0, "training": 90.0,
                                                                      "search": 90.0, "dqn": 200.0}
    with pytest.raises(SystemExit, match="unknown section"):
        gpu_suite.parse_budgets(["gpu=3"], tiny=False)
    with pytest.raises(SystemExit, match="> 0"):
        gpu_suite.parse_budgets(["0"], tiny=True)
