"""`grokking analyze`: Fourier bases, spectrum, progress measures and ablation, on synthetic data and a grokked run."""

from __future__ import annotations

import itertools
import json
import math
import shutil

import pytest
import torch
from typer.testing import CliRunner

from grokking import main
from grokking.analysis import nanda
from grokking.analysis.figures import LOSS_FLOOR, progress_figure, wrapped
from grokking.analysis.fourier import embedding_spectrum, fourier_basis, primitive_root
from grokking.analysis.progress import AnswerGrid, gini
from grokking.analysis.sharpness import sharpness
from grokking.config import RunConfig, resolve
from grokking.errors import GrokkingError
from grokking.losses import answer_loss
from grokking.model import build_model
from grokking.plot import load_curves
from grokking.rundir import RunDir
from grokking.tasks import build_dataset, load_task
from grokking.train import train

from .conftest import TINY, torch_threads, tree_checksums

runner = CliRunner()

# Groks within the test's time on 2 CPU cores (found by experiment): validation accuracy about 96 % at
# step 400, by when weight decay has left a handful of frequencies in the embedding.
GROKS = TINY.replace(
    preset="analysis_test",
    operation="add",
    p=31,
    train_frac=0.7,
    steps=400,
    lr=5e-3,
    weight_decay=2.0,
    d_model=64,
    eval_every=100,
    checkpoint_every=400,
    snapshot_every=400,
    batch_size=336,  # floor(673 / 2): the batch its thresholds were set with
)


def wave(basis, frequency: int, phase: float) -> torch.Tensor:
    """cos(2π·frequency·k/m + phase) over the group indices k."""
    return torch.cos(2 * math.pi * frequency * torch.arange(basis.m) / basis.m + phase)


@pytest.mark.parametrize(
    ("operation", "p", "frequencies"),
    [("add", 23, [3, 7, 10]), ("sub", 24, [1, 12]), ("div", 29, [2, 5, 13]), ("mul", 31, [4, 9, 15])],
)
def test_a_synthetic_embedding_gives_back_its_frequencies(operation, p, frequencies):
    basis = fourier_basis(operation, p)
    generator = torch.Generator().manual_seed(0)
    d = 16
    on_group = sum(
        torch.outer(wave(basis, f, 0.0), torch.randn(d, generator=generator))
        + torch.outer(wave(basis, f, math.pi / 2), torch.randn(d, generator=generator))
        for f in frequencies
    )
    embedding = torch.randn(p, d, generator=generator) * 3  # row 0 stays random: outside a discrete-log basis
    embedding[basis.residues] = on_group + 1e-3 * torch.randn(basis.m, d, generator=generator)
    spectrum = embedding_spectrum(embedding, basis)
    assert sorted(spectrum.key_frequencies(0.9)) == sorted(frequencies)
    assert sorted(spectrum.key_frequencies(0.9999)) == sorted(frequencies)
    assert spectrum.key_frequencies(0.01) == spectrum.ranked()[:1]
    others = [f for f in range(1, basis.n_frequencies + 1) if f not in frequencies]
    assert spectrum.energy[torch.tensor(others) - 1].sum() < 1e-4 * spectrum.energy.sum()
    info = spectrum.to_json(0.9)
    assert info["basis"] == ("discrete_log" if operation in ("mul", "div") else "Z_p")
    assert (info["zero_embedding_norm"] is None) == (operation in ("add", "sub"))


@pytest.mark.parametrize("p", [3, 5, 7, 11, 23, 31, 47, 97])
def test_discrete_log_is_a_bijection_onto_a_primitive_root_s_powers(p):
    basis = fourier_basis("div", p)
    g = basis.generator
    assert g == primitive_root(p)
    assert sorted(basis.residues.tolist()) == list(range(1, p))
    assert basis.residues.tolist() == [pow(g, k, p) for k in range(p - 1)]
    assert torch.equal(basis.index_of[basis.residues], torch.arange(p - 1)) and basis.index_of[0] == -1
    assert all(pow(g, k, p) != 1 for k in range(1, p - 1))  # order p-1: g generates the group
    assert all(any(pow(h, k, p) == 1 for k in range(1, p - 1)) for h in range(2, g))  # and is the smallest


@pytest.mark.parametrize(("operation", "p"), [("add", 23), ("sub", 24), ("div", 29), ("mul", 31)])
def test_the_basis_is_orthonormal(operation, p):
    matrix = fourier_basis(operation, p).matrix
    assert torch.allclose(matrix @ matrix.T, torch.eye(len(matrix)), atol=1e-5)


def test_gini_of_one_hot_and_uniform():
    n = 10
    assert gini(torch.ones(n)) == pytest.approx(0.0, abs=1e-12)
    assert gini(torch.eye(n)[3]) == pytest.approx((n - 1) / n)
    assert gini(torch.tensor([0.0, 1.0])) == pytest.approx(0.5)
    assert 0 < gini(torch.arange(1.0, 11.0)) < 0.5


@pytest.mark.parametrize(("operation", "p"), [("add", 13), ("sub", 13), ("div", 13), ("mul", 11)])
def test_the_logit_component_along_x_plus_y_minus_c_is_exact(operation, p):
    basis = fourier_basis(operation, p)
    dataset = build_dataset(operation, p)
    grid = AnswerGrid.build(basis, dataset)
    logits = torch.randn(len(dataset.targets), p, generator=torch.Generator().manual_seed(1))
    structured = 5 * wave(basis, 2, 0.3)[grid.argument]  # 5·cos(w_2(x ± y − c) + 0.3) on the group
    logits[grid.rows[:, None], grid.classes[None, :]] = structured
    assert torch.allclose(grid.component(logits, basis.rows_of([2])), structured, atol=1e-4)
    assert grid.component(logits, basis.rows_of([1, 3])).abs().max() < 1e-4
    assert len(grid.rows) == (p * p if basis.generator is None else (p - 1) ** 2)
    answers = basis.index_of[dataset.targets[grid.rows]]
    assert torch.equal(
        grid.argument[torch.arange(len(grid.rows)), answers], torch.zeros(len(grid.rows), dtype=torch.long)
    )


@pytest.mark.parametrize(("operation", "p", "message"), [
    ("s5_mul", 5, "S5"), ("s5_conj", 5, "S5"), ("sq_sum", 23, "no Fourier basis"), ("mul", 10, "prime"),
])  # fmt: skip
def test_operations_without_a_fourier_basis_are_refused(operation, p, message):
    with pytest.raises(GrokkingError, match=message):
        fourier_basis(operation, p)


def nanda_task(operation: str, p: int, **overrides) -> tuple:
    config = TINY.replace(operation=operation, p=p, **overrides)
    data = load_task(config)
    return config, data, nanda.GroupTable.build(fourier_basis(operation, p), data)


def synthetic_logits(
    table, amplitudes: dict[int, float], noise: float, seed: int = 0, apart: bool = False, bias: float = 3.0
) -> tuple:
    """Logits [rows of the table, p] that are Σ A_w cos(2πw(a + b − c)/p) + a bias per class (the clean part) plus
    Gaussian noise, at the table's rows; and that clean part as class logits [p², p] in the table's order.
    `apart`: the noise has no part along the directions cos/sin(w(a+b)) of the w in `amplitudes`, and no mean."""
    basis, generator = table.basis, torch.Generator().manual_seed(seed)
    m = basis.m
    k = torch.arange(m, dtype=torch.float64)
    argument = (k[:, None, None] + basis.y_sign * k[None, :, None] - k[None, None, :]).reshape(m * m, m)
    clean = sum(a * torch.cos(2 * math.pi * w * argument / m) for w, a in amplitudes.items())
    clean = clean + bias * torch.randn(m, generator=generator, dtype=torch.float64)  # a bias per class
    logits = torch.zeros(int(table.rows.max()) + 1, basis.p + 2, dtype=torch.float64)  # 2 columns past the answers
    perturbation = noise * torch.randn(m * m, m, generator=generator, dtype=torch.float64)
    if apart:
        perturbation = nanda.excluded_logits(perturbation, nanda.trig_directions(basis, list(amplitudes)))
        perturbation -= perturbation.mean(dim=0, keepdim=True)
    logits[table.rows[:, None], basis.residues[None, :]] = clean + perturbation
    return logits, clean


def accuracy(logits: torch.Tensor, targets: torch.Tensor) -> float:
    return (logits.argmax(dim=1) == targets).double().mean().item()


def test_nanda_directions_are_theirs():
    """cos(w(x+y)) and sin(w(x+y)) over the table as their helpers build them from the 1-D Fourier basis."""
    basis = fourier_basis("add", 13)
    one_d = basis.matrix.double()
    for w in (1, 4, 6):
        c, s = one_d[2 * w - 1], one_d[2 * w]
        theirs = torch.stack([
            (torch.outer(c, c) - torch.outer(s, s)).flatten() / math.sqrt(2),
            (torch.outer(s, c) + torch.outer(c, s)).flatten() / math.sqrt(2),
        ])  # fmt: skip
        assert torch.allclose(nanda.trig_directions(basis, [w]), theirs, atol=1e-6)
    directions = nanda.trig_directions(basis, [1, 2, 3, 6])
    assert torch.allclose(directions @ directions.T, torch.eye(8, dtype=torch.float64), atol=1e-9)
    assert len(nanda.trig_directions(fourier_basis("add", 12), [6])) == 1  # sin(π(x+y)) vanishes


@pytest.mark.parametrize(("operation", "p"), [("add", 23), ("sub", 23), ("mul", 23)])
def test_the_restricted_loss_is_the_loss_of_the_clean_part(operation, p):
    _, _, table = nanda_task(operation, p)
    key = [2, 5, 9]
    logits, clean = synthetic_logits(table, {w: 2.0 for w in key}, noise=2.0, apart=True)
    table_logits = table.class_logits(logits)
    restricted = nanda.restricted_logits(table_logits, nanda.trig_directions(table.basis, key))
    assert torch.allclose(restricted, clean, atol=1e-9)  # the noise is gone, the per-class bias is back
    losses = nanda.frequency_losses(table_logits, table, key)
    clean_loss, noisy_loss = nanda.cross_entropy(clean, table.targets), nanda.cross_entropy(table_logits, table.targets)
    assert losses["restricted_loss"] == pytest.approx(clean_loss, abs=1e-9)
    assert noisy_loss > clean_loss + 0.5  # so the noise was removed, not just small
    # without their bias correction (the mean over inputs added back) the loss is not the clean part's
    projected = nanda.project(table.class_logits(logits), nanda.trig_directions(table.basis, key))
    assert abs(nanda.cross_entropy(projected, table.targets) - clean_loss) > 0.5
    # restricting to other frequencies keeps nothing of the answer
    other = nanda.frequency_losses(table.class_logits(logits), table, [1, 3])
    assert other["restricted_loss"] > clean_loss + 1.0
    # with noise in every direction, the restricted loss is still about that of the clean part
    logits, clean = synthetic_logits(table, {w: 4.0 for w in key}, noise=1.0, seed=1)
    losses = nanda.frequency_losses(table.class_logits(logits), table, key)
    assert losses["restricted_loss"] == pytest.approx(nanda.cross_entropy(clean, table.targets), rel=0.1)


def test_excluding_a_key_frequency_destroys_accuracy_and_a_non_key_one_does_not():
    _, _, table = nanda_task("add", 23)
    train = table.is_train
    logits, _ = synthetic_logits(table, {4: 10.0}, noise=0.02, bias=0.02)  # runner-up: 10·cos(2π/23) below
    table_logits = table.class_logits(logits)
    baseline = nanda.cross_entropy(table_logits[train], table.targets[train])
    assert accuracy(table_logits, table.targets) == 1.0
    without_key = nanda.excluded_logits(table_logits, nanda.trig_directions(table.basis, [4]))
    without_other = nanda.excluded_logits(table_logits, nanda.trig_directions(table.basis, [7]))
    assert accuracy(without_key[train], table.targets[train]) < 0.2
    assert accuracy(without_other[train], table.targets[train]) == 1.0
    assert nanda.frequency_losses(table_logits, table, [7])["excluded_loss"] == pytest.approx(baseline, abs=0.02)
    # with three key frequencies, removing one raises the train loss; removing all three destroys the answer
    logits, _ = synthetic_logits(table, {2: 4.0, 5: 4.0, 9: 4.0}, noise=0.1, bias=0.1)
    losses = nanda.frequency_losses(table.class_logits(logits), table, [2, 5, 9])
    baseline = nanda.cross_entropy(table.class_logits(logits)[train], table.targets[train])
    assert all(v > 3 * baseline for v in losses["excluded_loss_per_frequency"].values())
    assert list(losses["excluded_loss_per_frequency"]) == ["2", "5", "9"]
    assert losses["excluded_loss"] > max(losses["excluded_loss_per_frequency"].values()) > baseline
    assert losses["excluded_loss"] > math.log(23) - 0.3  # about chance


@pytest.mark.parametrize(("operation", "p"), [("add", 17), ("sub", 17), ("div", 19)])
def test_a_neuron_is_assigned_its_frequency(operation, p):
    basis = fourier_basis(operation, p)
    m, s = basis.m, basis.y_sign
    k = torch.arange(m, dtype=torch.float64)
    a, b = k[:, None], k[None, :]

    def wave(w: int, t: torch.Tensor, phase: float = 0.0) -> torch.Tensor:
        return torch.cos(2 * math.pi * w * t / m + phase)

    neurons = [
        wave(3, a + s * b),  # cos(w(x+y)): quadratic terms of w = 3 alone
        wave(5, a) + 0.5 * wave(5, b, 1.0) + 0.2,  # linear terms of w = 5 and a constant
        wave(2, a + s * b) + 0.6 * wave(5, a + s * b),  # w = 2 explains 1/1.36 = 74 %: under Nanda's 85 %
        wave(1, a + s * b) + wave(7, a + s * b),  # two frequencies: half each
        torch.full((m, m), 0.7),  # dead (constant)
    ]
    clusters = nanda.neuron_clusters(torch.stack(neurons, dim=-1), basis)
    assert clusters.frequency.tolist() == [3, 5, 2, clusters.frequency[3].item(), 0]
    assert clusters.frequency[3].item() in (1, 7)
    explained = clusters.explained.tolist()
    assert explained[0] == pytest.approx(1.0, abs=1e-6) and explained[1] == pytest.approx(1.0, abs=1e-6)
    assert explained[2] == pytest.approx(1 / 1.36, abs=1e-6) and explained[2] < nanda.CLUSTER_THRESHOLD
    assert explained[3] == pytest.approx(0.5, abs=1e-6) and explained[4] == 0.0
    assert clusters.key_frequencies() == [3, 5] and clusters.counts() == {3: 1, 5: 1}
    info = clusters.to_json()
    assert info["dead_neurons"] == 1 and info["unclustered_neurons"] == 2 and 2 in info["argmax_frequencies"]


@pytest.mark.parametrize(("operation", "p"), [("add", 23), ("div", 23)])
def test_gini_of_fourier_norms_one_hot_and_flat(operation, p):
    basis = fourier_basis(operation, p)
    n = basis.m
    single = torch.zeros(p, 8)
    single[basis.residues] = torch.outer(basis.matrix[2 * 3 - 1], torch.randn(8))  # one Fourier component
    assert nanda.gini(nanda.fourier_norms(single, basis)) == pytest.approx((n - 1) / n, abs=1e-6)
    flat = torch.zeros(p, n)
    flat[basis.residues] = basis.matrix.T  # every component of norm 1
    assert nanda.gini(nanda.fourier_norms(flat, basis)) == pytest.approx(0.0, abs=1e-6)


def test_the_grids_find_x_and_y_with_the_end_token():
    config, data, table = nanda_task("add", 7, end_token=True, logits="vocab")
    x, y = nanda.operands(data.dataset)
    assert torch.equal((x + y) % 7, data.dataset.targets)
    assert data.layout.equals == data.dataset.inputs.shape[1] - 2
    assert torch.equal(table.targets, (torch.arange(49) // 7 + torch.arange(49) % 7) % 7)
    grid = AnswerGrid.build(table.basis, data.dataset)
    assert len(grid.rows) == 49


@pytest.mark.parametrize(
    ("operation", "overrides", "neurons"),
    [
        ("add", {}, True),
        ("mul", {}, True),
        ("add", {"end_token": True, "logits": "vocab", "n_layers": 2}, True),
        ("add", {"model": "mlp"}, False),
    ],
)
def test_nanda_measures_of_any_model_never_crash(operation, overrides, neurons):
    config, data, table = nanda_task(operation, 11, **overrides)
    basis = table.basis
    model = build_model(data.layout, config)
    setup = nanda.NandaSetup.build(basis, data, model, config.layer_norm)
    assert (setup.neurons_reason is None) == neurons
    model.eval()
    with torch.no_grad():
        row = setup.measures(model, data, model(data.dataset.inputs), [1, 2])
    assert all(math.isfinite(row[k]) for k in ("restricted_loss", "excluded_loss", "gini_W_E"))
    assert (row["gini_W_L"] is None) == (not neurons) and (row["neurons_clustered_frac"] is None) == (not neurons)
    assert len(setup.table.rows) == (100 if operation == "mul" else 121)
    assert ("discrete log" in setup.notes[0]) == (operation == "mul")


@pytest.fixture(scope="module")
def grokked(tmp_path_factory) -> tuple[RunDir, dict]:
    """A small addition model trained until it groks, analyzed once through the CLI."""
    run = RunDir(tmp_path_factory.mktemp("analysis") / "add")
    # This model is too small to gain from threads, and loses much to them on a busy CPU.
    with torch_threads(1):
        train(GROKS, run)
        result = runner.invoke(main, ["analyze", "--run-dir", str(run.path), "--json"])
    assert result.exit_code == 0, result.output
    return run, json.loads(result.stdout)


@pytest.mark.slow
def test_a_grokked_model_has_a_few_key_frequencies(grokked):
    _, results = grokked
    spectrum = results["spectrum"]
    assert spectrum["step"] == GROKS.steps and spectrum["basis"] == "Z_p"
    assert 1 <= len(spectrum["key_frequencies"]) <= 5
    assert spectrum["key_energy_share"] >= 0.9


@pytest.mark.slow
def test_removing_key_frequencies_hurts_far_more_than_random_ones(grokked):
    ablation = grokked[1]["ablation"]
    assert ablation["baseline_val_acc"] > 0.9
    assert ablation["k"] == len(grokked[1]["spectrum"]["key_frequencies"])
    assert len(ablation["random_draws"]) == 5
    assert all(not set(d["frequencies"]) & set(ablation["key_removed"]) for d in ablation["random_draws"])
    assert len({tuple(d["frequencies"]) for d in ablation["random_draws"]}) == 5  # five different draws
    assert ablation["key_drop"] > 0.5 > ablation["random_mean_drop"] + 0.3


@pytest.mark.slow
def test_progress_measures_track_the_circuit(grokked):
    run, results = grokked
    rows = results["progress"]["checkpoints"]
    assert [r["step"] for r in rows] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 400]
    first, last = rows[0], rows[-1]
    assert last["fourier_gini_variant"] > first["fourier_gini_variant"] + 0.2  # the embedding became sparse
    assert last["weight_norm"] < first["weight_norm"]
    assert last["restricted_loss_variant"] < 1.0 < last["excluded_loss_variant"]  # the key frequencies do the work
    assert last["excluded_loss_variant"] > 5 * run.read_metrics()[-1]["train_loss"]


@pytest.mark.slow
def test_nanda_measures_of_a_grokked_run(grokked):
    run, results = grokked
    progress = results["progress"]
    rows, neurons = progress["checkpoints"], progress["nanda"]["neurons"]
    first, last = rows[0], rows[-1]
    # key frequencies from the neuron clusters of the last checkpoint, among those of the embedding's energy
    assert progress["key_frequencies"] == neurons["key_frequencies"] == last["key_frequencies_neurons"]
    assert 1 <= len(progress["key_frequencies"]) <= 5
    assert set(progress["key_frequencies"]) <= set(progress["key_frequencies_variant"])
    assert progress["key_frequencies_source"].startswith("neurons")
    assert sum(neurons["cluster_sizes"].values()) == round(last["neurons_clustered_frac"] * neurons["n_neurons"])
    assert first["neurons_clustered_frac"] == 0 < last["neurons_clustered_frac"]
    # the restricted loss falls and the excluded loss stays high above the train loss
    assert last["restricted_loss"] < first["restricted_loss"] - 1.0
    assert last["excluded_loss"] > 3 * run.read_metrics()[-1]["train_loss"]
    assert set(last["excluded_loss_per_frequency"]) == {str(f) for f in progress["key_frequencies"]}
    assert all(v > run.read_metrics()[-1]["train_loss"] for v in last["excluded_loss_per_frequency"].values())
    # sparsity in Fourier space: W_E's Gini is the variant's definition; W_L's grows too
    assert all(r["gini_W_E"] == pytest.approx(r["fourier_gini_variant"], abs=1e-5) for r in rows)
    assert last["gini_W_L"] > first["gini_W_L"] + 0.2
    assert progress["nanda"]["not_computed"] == {} and "exactly" in progress["nanda"]["scope"]
    names = set(progress["measures"])
    assert {"restricted_loss", "excluded_loss", "gini_W_E", "gini_W_L", "restricted_loss_variant"} <= names
    assert set(last) - {"step", "weight_norm"} <= names


@pytest.mark.slow
def test_analyze_writes_json_and_figures(grokked):
    run, results = grokked
    for name in ("spectrum", "progress", "ablation"):
        assert json.loads((run.path / "analysis" / f"{name}.json").read_text()) == results[name]
        png = (run.path / "figures" / f"{name}.png").read_bytes()
        assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000


@pytest.mark.slow
def test_the_progress_figure_floors_zero_losses_and_skips_missing_measures(grokked, tmp_path):
    run, results = grokked
    rows = [dict(r) for r in results["progress"]["checkpoints"]]
    rows[-1]["restricted_loss"] = 0.0  # exactly zero: must not break the log axis
    rows[-2]["excluded_loss_variant"] = 1e-30
    for r in rows:
        r["gini_W_L"] = r["neurons_clustered_frac"] = None  # as for the MLP baseline
    path = progress_figure(load_curves(run), rows, "test", tmp_path / "progress.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert LOSS_FLOOR > 0


def test_wrapped_keeps_the_line_breaks_a_title_has():
    # a run's label has two lines (task · preset · seed, then the non-default settings); wrapping
    # a title made of it must not run them together
    title = wrapped("Fourier ablation · x/y mod 97 · paper_late · seed 0\nlast_batch=drop, vocab=task", 90)
    assert title.splitlines() == ["Fourier ablation · x/y mod 97 · paper_late · seed 0", "last_batch=drop, vocab=task"]
    assert wrapped("a " * 40, 20).count("\n") == 3


@pytest.mark.slow
def test_step_chooses_the_checkpoint(grokked, tmp_path):
    run = shutil.copytree(grokked[0].path, tmp_path / "run")
    with torch_threads(1):
        result = runner.invoke(
            main, ["analyze", "--run-dir", str(run), "--step", "256", "--top-k", "2", "--draws", "2"]
        )
    assert result.exit_code == 0, result.output
    assert "step 256" in result.stdout
    ablation = json.loads((run / "analysis" / "ablation.json").read_text())
    assert ablation["step"] == 256 and ablation["k"] == 2 and len(ablation["random_draws"]) == 2


def s5_run(tmp_path) -> str:
    run = RunDir(tmp_path / "s5")
    run.write_config(RunConfig(operation="s5_mul"), {})
    return str(run.path)


@pytest.mark.slow
@pytest.mark.parametrize(("args", "message"), [
    (lambda run, tmp: ["--run-dir", s5_run(tmp)], "no Fourier basis is implemented for the S5"),
    (lambda run, tmp: ["--run-dir", str(tmp / "absent")], "does not exist"),
    (lambda run, tmp: ["--run-dir", run, "--step", "3"], "no checkpoint at step 3"),
    (lambda run, tmp: ["--run-dir", run, "--energy", "1.5"], "--energy"),
    (lambda run, tmp: ["--run-dir", run, "--top-k", "0"], "--top-k"),
])  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(grokked, tmp_path, args, message):
    run = str(grokked[0].path)
    before = tree_checksums(grokked[0].path)
    result = runner.invoke(main, ["analyze", *args(run, tmp_path)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], result.stderr
    assert "Traceback" not in result.output
    assert tree_checksums(grokked[0].path) == before


def test_sharpness_is_the_largest_rise_in_the_box_relative_to_the_loss(tiny):
    """Keskar's ε-sharpness: checked against a brute-force search of every corner of a 3-dimensional box
    (the loss is nearly linear in so small a box, so its maximum is at a corner)."""
    config = resolve(tiny)
    data = load_task(config)
    model = build_model(data.layout, config)
    result = sharpness(model, data, config, subspace=3, epsilon=1e-2, seed=1)
    assert result == sharpness(model, data, config, subspace=3, epsilon=1e-2, seed=1)  # seeded
    start = result["train_loss"]
    names = [n for n, _ in model.named_parameters()]
    x0 = torch.cat([p.detach().flatten() for p in model.parameters()])
    directions = torch.rand(3, len(x0), generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 2 - 1
    directions /= directions.norm(dim=1, keepdim=True)
    lift = torch.linalg.pinv(directions).float()
    bound = 1e-2 * ((directions @ x0.double()).abs() + 1).float()
    corners = []
    for signs in itertools.product((-1.0, 1.0), repeat=3):
        shifted = x0 + lift @ (bound * torch.tensor(signs))
        weights, offset = {}, 0
        for name, p in zip(names, model.parameters()):
            weights[name] = shifted[offset : offset + p.numel()].view(p.shape)
            offset += p.numel()
        with torch.no_grad():
            logits = torch.func.functional_call(model, weights, (data.train_inputs,), {"scored": True})
        corners.append(answer_loss(logits, data.train_targets, config).item())
    best = (max(corners) - start) / (1 + start) * 100
    assert best > 0 and result["sharpness"] == pytest.approx(best, rel=0.05)
    assert sharpness(model, data, config, subspace=3, epsilon=1e-1, seed=1)["sharpness"] > 5 * result["sharpness"]
