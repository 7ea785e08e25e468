"""`grokking analyze`: the spectrum, progress measures and ablation of a run, written into its run dir."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

from rich.progress import Progress
from torch import nn

from grokking.analysis.ablation import frequency_ablation
from grokking.analysis.figures import ablation_figure, listed, progress_figure, spectrum_figure
from grokking.analysis.fourier import fourier_basis, model_spectrum
from grokking.analysis.nanda import CLUSTER_THRESHOLD, MEASURES, SOURCE, NandaSetup
from grokking.analysis.progress import AnswerGrid, progress_measures
from grokking.analysis.sharpness import sharpness
from grokking.errors import GrokkingError
from grokking.evaluate import finite_weights, model_from_checkpoint, run_states
from grokking.plot import load_curves
from grokking.rundir import RunDir, atomic_write_json, check_targets
from grokking.tasks import load_task

RESULTS = ("spectrum", "progress", "ablation")  # each written to analysis/<name>.json and figures/<name>.png
GRID_NOTE = {
    False: "all rows of the table",
    True: "rows with x = 0 or y = 0 (answer 0, outside the multiplicative group) are left out; "
    "the logit of class 0 is kept as the model computed it",
}


def analyze_run(
    run_dir: Path,
    step: int | None = None,
    energy: float = 0.9,
    top_k: int | None = None,
    draws: int = 5,
    seed: int = 0,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Analyze the checkpoints of `run_dir`; write analysis/*.json and figures/*.png there and return the results.

    The spectrum, the ablation and the sharpness are of the checkpoint at `step` (default: the last); the
    progress measures cover every kept checkpoint, with the key frequencies of the last one.
    """
    run = RunDir(run_dir)
    config = run.read_config()
    json_paths = [run.analysis_dir / f"{name}.json" for name in RESULTS]
    figure_paths = [run.figures_dir / f"{name}.png" for name in RESULTS]
    check_targets([*json_paths, *figure_paths])
    basis = fourier_basis(config.operation, config.p)
    curves = load_curves(run)
    data = load_task(config)
    by_step = finite_states(run, run_states(run, config), step)
    final_step = max(by_step)
    step = final_step if step is None else step
    if step not in by_step:
        raise GrokkingError(f"no checkpoint at step {step} in {run.path}; kept steps: {', '.join(map(str, by_step))}")

    def model_at(at: int) -> nn.Module:
        return model_from_checkpoint(by_step[at], config, data)

    model = model_at(step)
    spectrum = model_spectrum(model, basis)
    ablation = frequency_ablation(model, data, config, spectrum, energy, top_k, draws, seed)
    final_model = model if step == final_step else model_at(final_step)
    final_spectrum = spectrum if step == final_step else model_spectrum(final_model, basis)
    final_key = final_spectrum.key_frequencies(energy)
    grid = AnswerGrid.build(basis, data.dataset)
    nanda = NandaSetup.build(basis, data, final_model, config.layer_norm)
    clusters = nanda.clusters(final_model, data)
    nanda_key = clusters.key_frequencies() if clusters is not None else []
    if nanda_key:
        key_source = (
            f"neurons of the step-{final_step:,} model: frequencies with a cluster of neurons "
            f"(≥ {clusters.threshold:.0%} of a neuron's variance), as Nanda et al."
        )
    else:
        why = nanda.neurons_reason or (
            f"no neuron of the step-{final_step:,} model has a frequency explaining ≥ {CLUSTER_THRESHOLD:.0%} "
            "of its variance"
        )
        key_source = f"embedding energy (the variant's key frequencies), because {why}"
        nanda_key = final_key
    task = progress.add_task("progress measures", total=len(by_step)) if progress is not None else None
    rows = []
    for at in by_step:
        at_model = final_model if at == final_step else model_at(at)
        measures = progress_measures(at_model, data, config, grid, basis, final_key, nanda, nanda_key)
        rows.append({"step": at, **measures})
        if progress is not None:
            progress.update(task, advance=1, description=f"checkpoint {at:,}")

    not_computed = {}
    if nanda.neurons_reason is not None:
        for name in ("gini_W_L", "neurons_clustered_frac", "key_frequencies_neurons"):
            not_computed[name] = nanda.neurons_reason
    header = {"operation": config.operation, "p": config.p, **basis.describe()}
    results = {
        "spectrum": {**header, "step": step, **spectrum.to_json(energy)},
        "progress": {
            **header,
            "key_frequencies": nanda_key,
            "key_frequencies_source": key_source,
            "key_frequencies_variant": final_key,
            "key_frequencies_variant_source": f"embedding energy: the fewest frequencies with {energy:.0%} of it",
            "key_frequencies_from_step": final_step,
            "nanda": {
                "source": SOURCE,
                "scope": nanda.notes[0],
                "notes": nanda.notes[1:],
                "rows_used": f"{len(nanda.table.rows)} rows (x, y in the group), {int(nanda.table.is_train.sum())} "
                "of them training rows",
                "neurons": clusters.to_json() if clusters is not None else {"reason": nanda.neurons_reason},
                "not_computed": not_computed,
            },
            "measures": MEASURES,
            "rows_used": GRID_NOTE[basis.generator is not None],
            "rows_left_out": len(data.dataset.targets) - len(grid.rows),
            "checkpoints": rows,
        },
        "ablation": {**header, "step": step, **ablation},
        "sharpness": {**header, "step": step, **sharpness(model, data, config, seed=seed)},
    }
    for path, name in zip(json_paths, RESULTS):
        atomic_write_json(path, results[name])
    title = f"{curves.label} · step {step:,}"
    spectrum_path, progress_path, ablation_path = figure_paths
    figures = [
        spectrum_figure(spectrum, energy, f"embedding spectrum · {title}", spectrum_path),
        progress_figure(curves, rows, progress_title(curves.label, nanda_key, final_key), progress_path),
        ablation_figure(ablation, f"Fourier ablation · {title}", ablation_path),
    ]
    results["files"] = [str(path) for path in json_paths + figures]
    return results


def finite_states(run: RunDir, by_step: dict[int, dict[str, Any]], step: int | None) -> dict[int, dict[str, Any]]:
    """The checkpoints whose weights are all finite. A diverged run saves NaN or infinite weights, which
    have no spectrum to show: they are left out with a warning naming them, and refused where asked for."""
    finite = {at: state for at, state in by_step.items() if finite_weights(state)}
    diverged = ", ".join(f"{at:,}" for at in by_step if at not in finite)
    if not diverged:
        return by_step
    if not finite:
        raise GrokkingError(
            f"every checkpoint of {run.path} has non-finite (NaN or infinite) weights: the run diverged before its "
            "first one; there is nothing to analyze, train it again (e.g. with a lower --lr)"
        )
    kept = ", ".join(f"{at:,}" for at in finite)
    if step is not None and step not in finite and step in by_step:
        raise GrokkingError(
            f"the step-{step:,} checkpoint of {run.path} has non-finite (NaN or infinite) weights: the run had "
            f"diverged; give --step with one of the steps whose weights are finite: {kept}"
        )
    warnings.warn(
        f"skipped the checkpoints of {run.path} with non-finite weights (the run diverged): {diverged}", stacklevel=2
    )
    return finite


def progress_title(label: str, nanda_key: list[int], variant_key: list[int]) -> str:
    """The progress figure's title: the run, and the key frequencies of each family of measures on
    a line of its own (a figure's width holds about 100 characters)."""
    return (
        f"progress measures · {label}\nkey frequencies of Nanda's measures: {listed(nanda_key)}\n"
        f"key frequencies of the variants (embedding energy): {listed(variant_key)}"
    )
