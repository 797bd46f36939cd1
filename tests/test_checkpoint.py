"""Checkpoint files: atomic writes, weights-only reads, refusal of unsafe or broken files."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import pytest
import torch

from src.modelling.checkpointing.atomic import CheckpointError, atomic_save_torch, safe_load
from src.modelling.checkpointing.best import load_state_dict_file
from src.modelling.checkpointing.last import (
    last_path_for,
    load_training_state,
    previous_path,
    save_training_state,
)


class RunsCode:
    """Unpickling this calls os.system: what a malicious checkpoint would do."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch notes the odd file
def test_a_pickle_that_would_run_code_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    with open(path, "wb") as fh:
        torch.save({"weight": torch.zeros(2), "payload": RunsCode(marker)}, fh)
    with pytest.raises(CheckpointError, match="pickle") as err:
        safe_load(path)
    assert not marker.exists()
    # The cause in full, not torch's advice cut mid-word.
    assert "(Trying to load unsupported GLOBAL posix.system whose module posix is blocked);" in (
        str(err.value)
    )
    # A raw pickle file (not even a torch zip) is refused the same way.
    raw = tmp_path / "raw.pth"
    raw.write_bytes(pickle.dumps(RunsCode(marker)))
    with pytest.raises(CheckpointError):
        safe_load(raw)
    assert not marker.exists()


def test_truncated_and_foreign_files_are_refused(tmp_path):
    good = tmp_path / "good.pth"
    atomic_save_torch({"w": torch.ones(1000)}, good)
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a torch file"):
        safe_load(truncated)
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(CheckpointError):
        safe_load(text)
    not_weights = tmp_path / "list.pth"
    atomic_save_torch([1, 2, 3], not_weights)
    with pytest.raises(CheckpointError, match="state_dict"):
        load_state_dict_file(not_weights)
    with pytest.raises(CheckpointError, match="not found"):
        safe_load(tmp_path / "missing.pth")


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "best.pth"
    atomic_save_torch({"w": torch.ones(3)}, path)
    before = path.read_bytes()

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_save_torch({"w": Unsaveable()}, path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["best.pth"]  # no temp file left


def test_a_damaged_last_falls_back_to_the_previous_one(tmp_path, caplog):
    last = tmp_path / "saimp_last.pth"
    save_training_state(last, {"loop": {"epoch": 1}})
    save_training_state(last, {"loop": {"epoch": 2}})
    assert previous_path(last).exists()
    state, source = load_training_state(last)
    assert state["loop"]["epoch"] == 2 and source == last
    last.write_bytes(last.read_bytes()[:100])  # damaged after the fact
    state, source = load_training_state(last)
    assert state["loop"]["epoch"] == 1 and source == previous_path(last)
    assert "falling back" in caplog.text


def test_last_path_sits_beside_the_best():
    assert last_path_for(Path("data/saimp_best.pth")) == Path("data/saimp_last.pth")
    assert last_path_for(Path("m/model.pth")) == Path("m/model_last.pth")


def test_an_atomic_write_gets_the_mode_of_any_new_file(tmp_path):
    import stat

    mask = os.umask(0o022)
    try:
        atomic_save_torch({"w": torch.ones(1)}, tmp_path / "m.pth")
        assert stat.S_IMODE((tmp_path / "m.pth").stat().st_mode) == 0o644
    finally:
        os.umask(mask)
