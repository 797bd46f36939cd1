"""`saimp tune`: a search space checked up front, and a study that survives SIGKILL."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest

from src.config import Config, build_config
from src.core.errors import UserError
from src.modelling.tuning.space import BUILTIN, load_space
from tests.test_train_cli import ENV, SMALL

SPACE = """
[train.lr]
low = 1e-4
high = 3e-2
log = true

[train.class_weights]
choices = [[1, 10, 10, 20], [1, 2, 2, 4]]
"""


def test_the_builtin_space_is_what_the_original_project_tuned():
    names = [p.name for p in load_space(None, Config())]
    assert names == list(BUILTIN)
    assert {"train.lr", "train.weight_decay", "train.class_weights", "model.dropout"} <= set(names)


def test_class_weight_choices_may_be_lists_or_balanced(tmp_path):
    path = tmp_path / "space.toml"
    path.write_text('[train.class_weights]\nchoices = [[1, 10, 10, 20], "balanced"]\n')
    [param] = load_space(path, Config())
    assert param.choices == ("1,10,10,20", "balanced")  # scalars, as Optuna wants them
    bad = tmp_path / "bad.toml"
    bad.write_text('[train.class_weights]\nchoices = ["balancd"]\n')
    with pytest.raises(UserError, match=r"value 'balancd' is not valid: train.class_weights"):
        load_space(bad, Config())


@pytest.mark.parametrize(
    "text, message",
    [
        ("[train.lrr]\nlow = 1\nhigh = 2\n", "unknown setting train.lrr"),
        ("[train.lr]\nlow = 0.1\nhigh = 0.01\n", "needs low < high"),
        ("[train.lr]\nlow = 0\nhigh = 0.1\nlog = true\n", "log = true needs low > 0"),
        ("[model.d_model]\nchoices = [32, 30]\n", "value 30 is not valid"),
        ("[train.precision]\nlow = 1\nhigh = 2\n", "is not a number; give choices"),
        ("[train.lr]\nlow = 1e-4\n", "needs low and high, or choices"),
        ("[train.lr]\nlow = 1e-4\nhigh = 1e-3\nsteps = 2\n", "unknown keys ['steps']"),
    ],
)
def test_a_bad_space_is_one_error_naming_the_key(tmp_path, text, message):
    path = tmp_path / "space.toml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_space(path, Config())
    assert str(err.value).startswith(f"--space {path}: ") and message in str(err.value)


def tune(out: Path, lake: Path, *extra: str) -> list[str]:
    space = out.parent / "space.toml"
    space.write_text(SPACE)
    return [
        sys.executable, "-m", "src.modelling.tune", "--data-dir", str(lake),
        "--trials", "4", "--epochs", "2", "--space", str(space), "--out", str(out),
        "--study", "canary", *SMALL, "--checkpoint-every-windows", "none", *extra,
    ]  # fmt: skip


def trials_of(out: Path) -> list:
    import optuna
    import sqlalchemy.exc

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    try:  # read only: never race the search creating its tables
        storage = optuna.storages.RDBStorage(
            f"sqlite:///{out / 'study.db'}", skip_table_creation=True
        )
        study = optuna.load_study(study_name="canary", storage=storage)
    except (KeyError, RuntimeError, sqlalchemy.exc.SQLAlchemyError):  # not there yet
        return []
    return study.get_trials(deepcopy=False)


def running_trials(out: Path) -> list[int]:
    """Numbers of the RUNNING trials, read straight from Optuna's SQLite tables: cheap
    enough to poll every 50 ms (a tiny trial runs for about 1.5 s; loading the study
    through Optuna each time could miss it)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{out / 'study.db'}?mode=ro", uri=True, timeout=1) as db:
            rows = db.execute("SELECT number FROM trials WHERE state = 'RUNNING'").fetchall()
    except sqlite3.Error:  # not there yet, or being created
        return []
    return [int(r[0]) for r in rows]


@pytest.mark.slow
def test_a_killed_study_finishes_with_the_same_trials_and_its_best_toml_trains(tmp_path, tiny_lake):
    whole = tmp_path / "whole" / "out"
    whole.parent.mkdir()
    done = subprocess.run(tune(whole, tiny_lake), cwd=tmp_path, env=ENV, capture_output=True,
                          text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == str(whole / "best.toml")
    reference = {t.number: (t.state.name, t.params) for t in trials_of(whole)}
    assert len(reference) == 4

    killed = tmp_path / "killed" / "out"
    killed.parent.mkdir()
    proc = subprocess.Popen(tune(killed, tiny_lake), cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:  # SIGKILL once trial 3 (number 2) is under way
        if (killed / "study.db").exists() and 2 in running_trials(killed):
            break
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = subprocess.run(tune(killed, tiny_lake), cwd=tmp_path, env=ENV, capture_output=True,
                           text=True, timeout=600)  # fmt: skip
    assert again.returncode == 0, again.stderr
    trials = trials_of(killed)
    finished = [t for t in trials if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(finished) == 4
    assert [t.number for t in trials if t.state.name == "FAIL"] == [2]  # killed, run again
    assert [(t.state.name, t.params) for t in finished] == list(reference.values())
    best, ref_best = (
        tomllib.loads((killed / "best.toml").read_text()),
        tomllib.loads((whole / "best.toml").read_text()),
    )
    assert best["train"] == ref_best["train"]

    # best.toml trains, and the best model's sidecar records how many trials were run.
    cfg = build_config(config_file=killed / "best.toml")
    assert cfg.train.select_metric == "val_macro_f1"
    run = subprocess.run(
        [sys.executable, "-m", "src.modelling.train", "--config", str(killed / "best.toml"),
         "--data-dir", str(tiny_lake), "--epochs", "1", "--checkpoint", "b/best.pth",
         "--logs-dir", "b/logs", "--runs-dir", "b/runs"],
        cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    best_trial = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    import json

    sidecar = json.loads(Path(best_trial.user_attrs["checkpoint"]).with_suffix(".json").read_text())
    assert sidecar["tuning"]["trials"] == 4 and sidecar["tuning"]["trial"] == best_trial.number
    for name in ("trials.csv", "history.png"):
        assert (killed / name).stat().st_size > 0


@pytest.mark.slow
def test_two_trial_processes_share_the_study_and_stop_at_exactly_n(tmp_path, tiny_lake):
    out = tmp_path / "out"
    cmd = tune(out, tiny_lake, "--jobs", "2")
    cmd[cmd.index("--trials") + 1] = "3"
    cmd[cmd.index("--epochs") + 1] = "1"
    done = subprocess.run(cmd, cwd=tmp_path, env=ENV, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr
    trials = trials_of(out)
    assert [t.state.name for t in trials].count("COMPLETE") + [t.state.name for t in trials].count(
        "PRUNED"
    ) == 3
    assert len(trials) == 3  # no trial beyond the requested number, none failed
    assert len({t.user_attrs["pid"] for t in trials}) == 2  # two processes did the work
