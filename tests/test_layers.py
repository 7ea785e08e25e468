"""The package's import graph follows DESIGN.md's layers: every import points down."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import grokking

PACKAGE = Path(grokking.__file__).parent

# Each module's layer; a module may import only modules of lower layers (and `grokking` itself, which
# holds just the version). The analysis/ subpackage is one unit whose modules import each other.
LAYERS = {
    "errors": 0,
    "operations": 1,
    "layout": 1,
    "processes": 1,
    "partition": 1,  # how a compiled step splits into forward and backward; loaded by device when compiling
    "config": 2,
    "device": 2,
    "roofline": 2,
    "tasks": 3,
    "model": 3,
    "losses": 3,
    "accelerators": 3,
    "optim": 3,
    "rundir": 3,
    "loggers": 4,
    "evaluate": 4,
    "overview": 4,
    "seeds": 4,
    "observer": 4,
    "train": 5,
    "plot": 5,
    "sweep": 6,
    "bench": 6,
    "analysis": 6,
    "api": 6,
    "paper_plots": 6,  # figures across many runs' records; beside analysis
    "display": 7,
    "slurm": 7,  # drives sweep's points on a cluster; beside display, which it does not need
    "reproduce": 7,  # recipes over sweep, drawn by paper_plots and analysis
    "cli": 8,
}
ENTRY_POINTS = {"__init__", "__main__"}  # they import the CLI (lazily), which is their job


def unit(module: str) -> str:
    """`grokking.analysis.fourier` -> `analysis`, `grokking.train` -> `train`."""
    return module.split(".")[1]


def imported_modules(path: Path) -> set[str]:
    """Every grokking module that a file imports, at the top or inside functions."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("grokking."))
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("grokking"):
            if node.module == "grokking":
                found.update(f"grokking.{alias.name}" for alias in node.names if alias.name != "__version__")
            else:
                found.add(node.module)
    return found


def test_every_module_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    units = {p.stem for p in PACKAGE.glob("*.py")} | packages
    assert units - ENTRY_POINTS == set(LAYERS)


def upward_imports(package: Path) -> list[str]:
    """Each import in the package's files that does not point down the layers."""
    wrong = []
    for path in sorted(package.rglob("*.py")):
        relative = path.relative_to(package)
        importer = relative.parts[0].removesuffix(".py")
        if importer in ENTRY_POINTS:
            continue
        for module in imported_modules(path):
            imported = unit(module)
            if imported != importer and LAYERS[imported] >= LAYERS[importer]:
                wrong.append(f"{relative} imports {module} (layer {LAYERS[imported]} >= {LAYERS[importer]})")
    return wrong


def test_imports_point_down():
    assert upward_imports(PACKAGE) == []


def test_the_layer_check_catches_an_upward_import(tmp_path):
    (tmp_path / "config.py").write_text("from grokking.train import train\n")
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "fourier.py").write_text("import grokking.analysis.nanda\nfrom grokking import cli\n")
    assert upward_imports(tmp_path) == [
        "analysis/fourier.py imports grokking.cli (layer 8 >= 6)",
        "config.py imports grokking.train (layer 5 >= 2)",
    ]


def test_importing_the_config_loads_no_cli_or_plotting_library():
    code = "import sys, grokking.config; print(sorted(m for m in ('typer', 'rich', 'matplotlib') if m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [["--help"], ["train", "--help"], ["train", "--preset", "paper_wd", "--dry-run"]])
def test_help_and_a_dry_run_load_neither_torch_nor_matplotlib(args):
    """They answer in under a second: the engine, the analysis and the plots load when a command works."""
    code = (
        "import sys\nfrom grokking.cli import run\ntry:\n    run(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print(sorted(m for m in ('torch', 'matplotlib') if m in sys.modules), file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=True)
    assert result.stderr.strip().splitlines()[-1] == "[]"
