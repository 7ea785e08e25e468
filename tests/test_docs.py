"""The READMEs against the committed runs: the results table's steps are those in the run dirs'
metrics, README_CN.md carries the same numbers as README.md, no README command writes into
runs/examples/, and README.md stays a front door."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from grokking.rundir import RunDir, grokking_steps

ROOT = Path(__file__).parents[1]
EXAMPLES = ROOT / "runs" / "examples"
READMES = [ROOT / "README.md", ROOT / "README_CN.md"]
RECORD = EXAMPLES / "README.md"

PAPER_LATE_OPENAI = "paper_late_openai/div_p97_paper_late_s0"

# README's results rows whose seeds all reached val ≥ 99 % at some evaluation: the committed run dirs
# each row summarizes.
GROKKED_ROWS = {
    "quick": ["div_p47_quick_s0"],
    "paper_wd, the preset": [f"paper_wd_parity/div_p97_paper_wd_s{seed}" for seed in range(5)],
    "paper_wd, earlier split and warmup": [f"paper_wd_preset/div_p97_paper_wd_s{seed}" for seed in range(5)],
    "paper_wd, task tokens, full batches": [f"paper_wd_openai/div_p97_paper_wd_s{seed}" for seed in range(5)],
    "paper_wd, pre-LN": [f"paper_wd_seeds/div_p97_paper_wd_s{seed}" for seed in range(5)],
    "nanda_add": ["add_p113_nanda_add_s0"],
    "paper_late, openai's model": [PAPER_LATE_OPENAI],
}


def steps_span(steps: list[int]) -> str:
    """[1300, 1800, 1500] -> '1,300–1,800'; [200] -> '200'."""
    low, high = min(steps), max(steps)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def results_cells(run_dirs: list[str]) -> str:
    """The row's 'train ≥ 99 % | val ≥ 99 %' cells, computed from the run dirs' metrics."""
    steps = [grokking_steps(RunDir(EXAMPLES / name).require_metrics()) for name in run_dirs]
    memorized = [s["memorization_step"] for s in steps]
    generalized = [s["generalization_step"] for s in steps]
    assert None not in memorized and None not in generalized, run_dirs
    return f"| {steps_span(memorized)} | {steps_span(generalized)} |"


@pytest.mark.parametrize("readme", READMES, ids=lambda path: path.name)
@pytest.mark.parametrize("row", GROKKED_ROWS)
def test_the_results_table_gives_the_committed_steps(readme, row):
    assert results_cells(GROKKED_ROWS[row]) in readme.read_text(encoding="utf-8")


def paper_late_openai_report(path: Path) -> str:
    """Where a document reports the paper_late run on openai's model: its results row in a README,
    its section in the record."""
    text = path.read_text(encoding="utf-8")
    if path == RECORD:
        section = text[text.index("### paper_late on openai's model, seed 0") :]
        return section[: section.index("\n## ")]
    return next(line for line in text.splitlines() if line.startswith("| `paper_late` | openai"))


@pytest.mark.parametrize("document", [*READMES, RECORD], ids=lambda path: str(path.relative_to(ROOT)))
def test_the_paper_late_openai_run_is_reported_at_its_last_committed_evaluation(document):
    run = RunDir(EXAMPLES / PAPER_LATE_OPENAI)
    metrics = run.require_metrics()
    report = paper_late_openai_report(document)
    assert f"{metrics[-1]['step']:,}" in report
    assert f"{metrics[-1]['val_acc']:.1%}".replace("%", " %") in report


@pytest.mark.parametrize(
    "folder", ["paper_wd_parity", "paper_wd_preset", "paper_wd_vocab_only", "paper_wd_openai", "paper_wd_openai_bf16"]
)
def test_the_records_seed_tables_give_the_committed_steps(folder):
    text = RECORD.read_text(encoding="utf-8")
    section = text[text.index(f"`runs/examples/{folder}`") :]
    section = section[: section.index("\n#")]
    for seed in range(5):
        steps = grokking_steps(RunDir(EXAMPLES / folder / f"div_p97_paper_wd_s{seed}").require_metrics())
        row = next(line for line in section.splitlines() if line.startswith(f"| {seed} |"))
        assert f"{steps['memorization_step']:,}" in row and f"{steps['generalization_step']:,}" in row, row


def test_readme_cn_carries_the_same_numbers_as_readme():
    def numbers(path: Path) -> set[str]:
        return set(re.findall(r"\d[\d,.]*\d|\d", path.read_text(encoding="utf-8")))

    english, chinese = (numbers(path) for path in READMES)
    assert english - chinese == set(), "numbers in README.md missing from README_CN.md"
    assert chinese - english == set(), "numbers in README_CN.md missing from README.md"


@pytest.mark.parametrize("readme", READMES, ids=lambda path: path.name)
def test_no_readme_command_writes_into_the_committed_examples(readme):
    writes = re.compile(r"--(out-dir|run-dir|out)[ =]runs/examples")
    lines = readme.read_text(encoding="utf-8").splitlines()
    assert [line for line in lines if "grokking " in line and writes.search(line)] == []


def test_readme_is_a_front_door_of_at_most_16_kb():
    assert len((ROOT / "README.md").read_bytes()) <= 16 * 1024
