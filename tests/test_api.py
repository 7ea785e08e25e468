"""The Python API for notebooks: load a run, read it, draw it into an Axes; and `plot --watch`."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import matplotlib.pyplot as plt
import pytest
import torch

import grokking
from grokking.errors import GrokkingError
from grokking.plot import watch_runs
from grokking.rundir import RunDir
from grokking.train import train

from .conftest import TINY


@pytest.fixture(scope="module")
def run_path(tmp_path_factory):
    path = tmp_path_factory.mktemp("api") / "run"
    train(TINY.replace(steps=20), path)
    return path


def test_a_run_loads_with_its_config_metrics_summary_and_checkpoints(run_path):
    run = grokking.load_run(run_path)
    assert run.config == RunDir(run_path).read_config() and run.config.p == TINY.p
    assert [r["step"] for r in run.metrics] == [1, 2, 4, 8, 10, 20]
    assert run.summary["steps_done"] == 20
    assert run.checkpoints == [1, 2, 4, 8, 16, 20]
    model = run.model()
    assert not model.training
    data = run.data()
    with torch.no_grad():
        accuracy = (model(data.val_inputs).argmax(-1) == data.val_targets).float().mean().item()
    assert accuracy == pytest.approx(run.metrics[-1]["val_acc"], abs=1e-6)
    with pytest.raises(GrokkingError, match="no checkpoint at step 3"):
        run.model(step=3)


def test_the_metrics_as_a_dataframe_when_pandas_is_there(run_path):
    pandas = pytest.importorskip("pandas")
    frame = grokking.load_run(run_path).dataframe()
    assert isinstance(frame, pandas.DataFrame) and list(frame.index) == [1, 2, 4, 8, 10, 20]
    assert frame.loc[20, "val_acc"] == grokking.load_run(run_path).metrics[-1]["val_acc"]


def test_the_standard_figures_draw_into_a_given_axes(run_path):
    fig, (top, bottom) = plt.subplots(2)
    grokking.draw_run(top, run_path, "accuracy")
    grokking.draw_run(bottom, grokking.load_run(run_path).dir, "loss")
    steps, values = top.lines[1].get_data()  # validation accuracy
    assert list(steps) == [1, 2, 4, 8, 10, 20] and values[-1] == grokking.load_run(run_path).metrics[-1]["val_acc"]
    assert bottom.get_yscale() == "log" and top.get_xscale() == "log"
    with pytest.raises(grokking.GrokkingError, match="kind must be one of"):
        grokking.draw_run(top, run_path, "weights")
    plt.close(fig)


def test_importing_the_package_api_names_is_lazy():
    loaded = "print('matplotlib' in sys.modules)"
    code = f"import sys, grokking; {loaded}; grokking.RunConfig; {loaded}"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]
    assert grokking.GrokkingError is GrokkingError  # the one error class a notebook catches


def test_watch_redraws_while_a_run_trains_and_stops_when_it_stops(run_path, tmp_path, monkeypatch):
    run = RunDir(run_path)
    monkeypatch.setattr(RunDir, "training_process", lambda self: 12345 if not finished.is_set() else None)
    finished = threading.Event()
    draws = []
    threading.Timer(0.3, finished.set).start()
    started = time.monotonic()
    paths = watch_runs([run.path], tmp_path / "out", 0.05, drew=draws.append)
    assert finished.is_set() and time.monotonic() - started >= 0.3
    assert len(draws) >= 2  # drawn while it trained, and once more after
    assert paths == [tmp_path / "out" / "accuracy.png", tmp_path / "out" / "loss.png"]
