"""Architecture switches, the MLP baseline and the nanda_add preset."""

from __future__ import annotations

import json
import math
import random

import matplotlib.pyplot as plt
import pytest
import torch
from typer.testing import CliRunner

from grokking import main
from grokking.config import ARCHITECTURES, PRESETS, RunConfig, resolve
from grokking.errors import GrokkingError
from grokking.layout import Layout
from grokking.model import MLP, build_model
from grokking.optim import learning_rate
from grokking.plot import chance_line
from grokking.rundir import RunDir
from grokking.tasks import build_dataset, load_task
from grokking.train import train

from .conftest import TINY_FLAGS


def test_without_the_op_token_sequences_are_x_y_equals():
    data = build_dataset("add", 7, op_token=False)
    assert data.inputs.shape == (49, 3) and data.vocab_size == 8
    assert data.inputs[10].tolist() == [1, 3, 7] and data.targets[10].item() == 4


def test_nanda_add_is_nandas_setup():
    """As their transformers.py: gen_train_test's split (random.seed(0); random.shuffle(pairs);
    int(0.3 · 12769) = 3830 training pairs), full batch, one layer, no attention biases (W_Q, W_K, W_V,
    W_O only; b_in and b_out in the MLP), 114 logits (d_vocab = p + 1), warmup from lr 0, 50,000 epochs."""
    config = resolve(PRESETS["nanda_add"])
    assert (config.operation, config.p, config.train_frac, config.steps) == ("add", 113, 0.3, 50_000)
    pairs = [(i, j) for i in range(113) for j in range(113)]
    random.seed(0)
    random.shuffle(pairs)
    data = load_task(config)
    assert config.batch_size == data.n_train == len(pairs[:3830])  # full batch
    x, y = data.dataset.inputs[data.train_indices, 0], data.dataset.inputs[data.train_indices, 1]
    assert set(zip(x.tolist(), y.tolist())) == set(pairs[:3830])
    assert (config.n_layers, config.d_model, config.n_heads, config.hidden_width) == (1, 128, 4, 512)
    assert not config.layer_norm and not config.op_token and config.activation == "relu" and config.init == "nanda"
    assert (config.optimizer, config.lr, config.weight_decay, config.beta2) == ("adamw", 1e-3, 1.0, 0.98)
    assert learning_rate(config, 1) == 0.0 and learning_rate(config, 11) == 1e-3
    model = build_model(data.layout, config)
    assert isinstance(model.blocks[0].ln1, torch.nn.Identity)
    assert isinstance(model.blocks[0].mlp.activation, torch.nn.ReLU) and model.blocks[0].mlp.w_in.out_features == 512
    assert model.position_embedding.num_embeddings == 3 and model.unembed.out_features == 114
    biases = [name for name, _ in model.named_parameters() if name.endswith("bias")]
    assert biases == ["blocks.0.mlp.0.bias", "blocks.0.mlp.2.bias"]


def test_nanda_init_scales_every_matrix_by_the_width_and_zeroes_biases():
    config = RunConfig(p=97, d_model=128, init="nanda")
    model = build_model(Layout.of(97), config)
    params = dict(model.named_parameters())
    for name in ("token_embedding.weight", "blocks.0.attn.qkv.weight", "blocks.1.mlp.2.weight"):
        assert params[name].std().item() == pytest.approx(128**-0.5, rel=0.05)
    assert params["unembed.weight"].std().item() == pytest.approx(97**-0.5, rel=0.05)
    assert not params["blocks.0.mlp.0.bias"].any()
    assert torch.equal(params["blocks.0.ln1.weight"], torch.ones(128))  # LayerNorm keeps its identity start
    default = build_model(Layout.of(97), config.replace(init="default"))
    assert default.token_embedding.weight.std().item() == pytest.approx(1.0, rel=0.05)


def test_mlp_sees_only_x_and_y():
    config = RunConfig(model="mlp", p=11, d_model=8, n_layers=2, d_mlp=32)
    data = build_dataset("add", 11)
    model = build_model(data.layout, config)
    assert isinstance(model, MLP) and model(data.inputs).shape == (121, 11)
    changed = data.inputs.clone()
    changed[:, 1] = 0  # the op token is not an input of the MLP
    torch.testing.assert_close(model(changed), model(data.inputs))
    assert [m.out_features for m in model.hidden if isinstance(m, torch.nn.Linear)] == [32, 32]


def test_old_run_configs_load_with_the_defaults_they_trained_with():
    old = {k: v for k, v in RunConfig().to_dict().items() if k not in ("model", "layer_norm", "grokfast", "loss")}
    assert RunConfig.from_dict(old) == RunConfig()


@pytest.mark.parametrize(
    "flags",
    [
        ["--model", "mlp", "--n-layers", "2", "--d-mlp", "64"],
        ["--no-op-token", "--no-layer-norm", "--activation", "relu", "--batch-size", "0"],
        ["--arch", "openai", "--split-seed", "3"],
    ],
    ids=["mlp", "nanda-switches", "openai"],
)
def test_variants_train_plot_and_eval_end_to_end(tmp_path, flags):
    runner = CliRunner()
    run_dir = tmp_path / "run"
    result = runner.invoke(main, ["train", *TINY_FLAGS, "--op", "add", *flags, "--run-dir", str(run_dir)])
    assert result.exit_code == 0, result.output
    config = json.loads((run_dir / "config.json").read_text())["config"]
    assert config["model"] == ("mlp" if "mlp" in flags else "transformer")
    assert runner.invoke(main, ["plot", "--run-dir", str(run_dir)]).exit_code == 0
    evaluated = runner.invoke(main, ["eval", "--run-dir", str(run_dir), "--json"])
    assert evaluated.exit_code == 0
    final = json.loads(evaluated.stdout)[-1]
    assert final["val_acc"] == pytest.approx(json.loads((run_dir / "summary.json").read_text())["final_val_acc"])


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--model", "rnn"], "unknown --model 'rnn'"),
        (["--grokfast", "fir"], "unknown --grokfast 'fir'"),
        (["--loss-dtype", "float16"], "unknown --loss-dtype"),
        (["--grokfast-alpha", "1.5"], "--grokfast-alpha must be in [0, 1)"),
        (["--batch-size", "-2"], "--batch-size must be a count, a fraction in (0, 1), or -1"),
        (["--arch", "gpt2"], "unknown --arch 'gpt2'; choose one of openai, prenorm"),
        (["--norm-position", "middle"], "unknown --norm-position 'middle'"),
        (["--end-token"], "add --logits vocab"),
    ],
)
def test_bad_variant_flags_fail_in_one_line(tmp_path, flags, message):
    result = CliRunner().invoke(main, ["train", *TINY_FLAGS, *flags, "--run-dir", str(tmp_path / "run")])
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output
    assert not (tmp_path / "run").exists()


def test_paper_presets_run_openais_model_and_arch_switches_it_back(tmp_path):
    def dry_run(*flags):
        result = CliRunner().invoke(main, ["train", *flags, "--out-dir", str(tmp_path), "--dry-run"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)["config"]

    openai = dry_run("--preset", "paper_wd")
    assert {k: openai[k] for k in ARCHITECTURES["openai"]} == ARCHITECTURES["openai"]
    assert openai["split_seed"] == 0  # openai/grok fixes the split
    prenorm = dry_run("--preset", "paper_wd", "--arch", "prenorm")
    assert {k: prenorm[k] for k in ARCHITECTURES["prenorm"]} == ARCHITECTURES["prenorm"]
    mixed = dry_run("--preset", "paper_late", "--arch", "prenorm", "--norm-position", "post", "--no-bias")
    assert (mixed["norm_position"], mixed["bias"], mixed["activation"]) == ("post", False, "gelu")
    assert dry_run("--preset", "quick")["norm_position"] == "pre"
    assert list(tmp_path.iterdir()) == []


def test_stablemax_computes_in_float64_unless_told_as_prieto_et_al(tiny):
    assert resolve(tiny.replace(loss="stablemax")).loss_dtype == "float64"
    assert resolve(tiny.replace(loss="stablemax", loss_dtype="float32")).loss_dtype == "float32"
    assert resolve(tiny).loss_dtype == "float32"


@pytest.mark.parametrize("eps", [1e-25, 1e-30])
def test_prietos_tiny_adam_epsilons_train(tmp_path, tiny, eps):
    summary = train(tiny.replace(eps=eps, loss="stablemax", steps=20), tmp_path / "run")
    records = RunDir(tmp_path / "run").read_metrics()
    assert summary["steps_done"] == 20 and all(math.isfinite(r["train_loss"]) for r in records)
    assert records[-1]["train_loss"] < records[0]["train_loss"]


def test_the_chance_line_is_one_over_the_number_of_answers():
    for operation, n in (("div", 97), ("s5_mul", 120)):
        fig, ax = plt.subplots()
        chance_line(ax, RunConfig(operation=operation))
        assert ax.lines[0].get_ydata()[0] == pytest.approx(1 / n)
        plt.close(fig)


def test_end_token_needs_vocabulary_logits_and_a_transformer(tiny):
    with pytest.raises(GrokkingError, match="--logits vocab"):
        tiny.replace(end_token=True).validate()
    with pytest.raises(GrokkingError, match="transformer options"):
        tiny.replace(model="mlp", logits="vocab").validate()
