"""Power et al. Fig. 3: a t-SNE projection of the output layer, one point per element (the unembedding row
that scores it as the answer), coloured by the structure the paper describes.

- In S5 (their left panel) the clusters are cosets of the subgroup ⟨(0,3)(1,4), (1,2)(3,4)⟩ (a dihedral group
  of order 10) "or one of its conjugates". Which conjugate, and whether left (gH) or right (Hg) cosets, is
  read off the weights, not assumed: each of the 12 partitions is scored by the share of the rows' variance
  that its cosets' means explain (R², in the full d_model space, before any projection), and the best is
  drawn, beside the same score for random partitions of the same sizes as the chance level.
- Mod p (their right panel) each element is coloured by its residue mod 8, and a line joins x to x + 8,
  as theirs does.

t-SNE needs scikit-learn (`uv sync --extra tsne`); its layout depends on its seed, the scores do not.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import numpy as np

from grokking.errors import GrokkingError
from grokking.evaluate import load_run_state, model_from_checkpoint
from grokking.operations import get_operation, s5_permutations
from grokking.plot import plt, save_figure
from grokking.rundir import RunDir
from grokking.tasks import load_task

PAPER_SUBGROUP = ((3, 4, 2, 0, 1), (0, 2, 1, 4, 3))  # (0,3)(1,4) and (1,2)(3,4), as images of 0..4
STEP = 8  # the right panel's lines join x and x + 8; the colours are x mod 8
RANDOM_PARTITIONS = 200


def output_rows(run: RunDir) -> tuple[np.ndarray, dict[str, Any]]:
    """The unembedding rows of the elements (the answers) of a run's last checkpoint, and what the run had
    reached there."""
    config = run.read_config()
    if not run.latest_path.is_file():
        raise GrokkingError(f"{run.path} has no checkpoints/latest.pt; train it (or continue it) first")
    state = load_run_state(run.latest_path, config)
    data = load_task(config)
    model = model_from_checkpoint(state, config, data)
    rows = model.unembed.weight.detach()[: data.dataset.n_classes].double().numpy()
    metrics = run.read_metrics()
    last = metrics[-1] if metrics else {}
    return rows, {"step": int(state["step"]), "val_acc": last.get("val_acc"), "config": config}


def explained(rows: np.ndarray, labels: np.ndarray) -> float:
    """R²: the share of the rows' variance around their mean that their classes' means explain."""
    centred = rows - rows.mean(0)
    between = sum((labels == k).sum() * np.sum(centred[labels == k].mean(0) ** 2) for k in np.unique(labels))
    return float(between / np.sum(centred**2))


def _generated(generators: list[tuple[int, ...]]) -> set[tuple[int, ...]]:
    group = {tuple(range(5))}
    frontier = set(group)
    while frontier:
        frontier = {tuple(g[i] for i in h) for g in generators for h in frontier} - group
        group |= frontier
    return group


def s5_partitions() -> list[tuple[str, np.ndarray]]:
    """Every coset partition of S5 by a conjugate of the paper's subgroup: (name, coset label of element i)."""
    perms = [tuple(int(v) for v in row) for row in s5_permutations()]
    index = {perm: i for i, perm in enumerate(perms)}
    compose = lambda a, b: tuple(a[b[i]] for i in range(5))  # noqa: E731  (a·b)(i) = a(b(i)), as operations.py
    inverse = lambda a: tuple(int(v) for v in np.argsort(a))  # noqa: E731
    subgroup = _generated(list(PAPER_SUBGROUP))
    conjugates = {frozenset(compose(compose(g, h), inverse(g)) for h in subgroup) for g in perms}
    partitions = []
    for number, conjugate in enumerate(sorted(conjugates, key=sorted)):
        for side in ("left", "right"):
            labels = np.full(len(perms), -1)
            for coset_number, g in enumerate(perms):
                if labels[index[g]] >= 0:
                    continue
                coset = [compose(g, h) if side == "left" else compose(h, g) for h in conjugate]
                labels[[index[c] for c in coset]] = coset_number
            _, labels = np.unique(labels, return_inverse=True)
            coset = "gH" if side == "left" else "Hg"
            partitions.append((f"{side} cosets {coset} of H = conjugate {number} of the paper's subgroup", labels))
    return partitions


def best_partition(rows: np.ndarray, seed: int = 0) -> dict[str, Any]:
    """The coset partition that explains the most of the output layer, with every partition's R² and the
    R² of random partitions of the same sizes."""
    scored = [(explained(rows, labels), name, labels) for name, labels in s5_partitions()]
    score, name, labels = max(scored, key=lambda item: item[0])
    rng = np.random.default_rng(seed)
    chance = [explained(rows, rng.permutation(labels)) for _ in range(RANDOM_PARTITIONS)]
    return {
        "partition": name,
        "labels": labels,
        "r2": score,
        "r2_all_partitions": sorted(s for s, _, _ in scored),
        "r2_random_mean": float(np.mean(chance)),
        "r2_random_max": float(np.max(chance)),
    }


def tsne(rows: np.ndarray, seed: int = 0) -> np.ndarray:
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise GrokkingError("the t-SNE projection needs scikit-learn: uv sync --extra tsne") from None
    perplexity = min(30.0, (len(rows) - 1) / 3)
    return TSNE(2, perplexity=perplexity, init="pca", random_state=seed).fit_transform(rows)


def projection(run_dir: Path, seed: int = 0) -> dict[str, Any]:
    """The 2-D t-SNE of a run's output layer and its colouring: cosets in S5, residues mod 8 mod p."""
    run = RunDir(run_dir)
    rows, reached = output_rows(run)
    config = reached.pop("config")
    operation = get_operation(config.operation)
    points = tsne(rows, seed)
    result: dict[str, Any] = {
        "run_dir": str(run.path),
        "task": operation.describe(config.p),
        **reached,
        "points": points.round(4).tolist(),
        "tsne_seed": seed,
    }
    if operation.group_size:
        partition = best_partition(rows, seed)
        result["colour"] = partition.pop("partition")
        result["labels"] = partition.pop("labels").tolist()
        result.update(partition)
    else:
        result["colour"] = f"x mod {STEP}; lines join x and x + {STEP}"
        result["labels"] = [x % STEP for x in range(len(rows))]
        result["r2"] = explained(rows, np.array(result["labels"]))
    return result


def projection_figure(panels: list[dict[str, Any]], title: str, path: Path) -> Path:
    """The panels of `projection` side by side, each titled with its task, step, accuracy and colouring."""
    fig, axes = plt.subplots(1, len(panels), figsize=(6.2 * len(panels), 6.2), squeeze=False)
    for ax, panel in zip(axes[0], panels):
        points, labels = np.array(panel["points"]), np.array(panel["labels"])
        cmap = plt.get_cmap("tab20" if labels.max() >= 10 else "tab10")
        if "r2_random_mean" not in panel:  # mod p: x joined to x + STEP
            n = len(points)
            for x in range(n):
                ax.plot(*points[[x, (x + STEP) % n]].T, color="gray", linewidth=0.5, alpha=0.5, zorder=1)
        ax.scatter(*points.T, c=[cmap(k % cmap.N) for k in labels], s=28, zorder=2, linewidths=0)
        accuracy = "" if panel["val_acc"] is None else f", val acc {panel['val_acc']:.1%}"
        score = f"R² of the colouring {panel['r2']:.2f}"
        if "r2_random_mean" in panel:
            score += f" (random partitions of the same sizes: {panel['r2_random_mean']:.2f})"
        text = f"{panel['task']} · step {panel['step']:,}{accuracy}\ncolour: {panel['colour']}\n{score}"
        ax.set_title(textwrap.fill(text, 60, replace_whitespace=False), fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(textwrap.fill(title, 110), fontsize=10)
    return save_figure(fig, path)
