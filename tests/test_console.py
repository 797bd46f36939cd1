"""The hooks interface, the documented console lines, memory figures and the fan-out."""

from __future__ import annotations

import re
import time

import pytest
import torch

from src.core.logs import setup_console
from src.modelling.observability.console import ConsoleHooks
from src.modelling.observability.hooks import FanoutHooks, Hooks
from src.modelling.observability.memory import Throughput, memory_lines, memory_usage

RAM_LINE = re.compile(r"^   \[RAM\] \d+\.\d GB / \d+\.\d GB$")


def test_console_lines_keep_the_documented_shape(capsys):
    setup_console()
    log = ConsoleHooks(torch.device("cpu"))
    log.epoch_start(1, 15, None)
    log.batch(1, 0, 1.38, 1 / 3, samples=3)
    log.epoch_start(2, 15, 120)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "[EPOCH] Epoch 1/15"
    assert out[1] == "   Batch    0 | Loss: 1.3800 | Acc: 33.33%"
    assert RAM_LINE.match(out[2]), out[2]
    assert out[3] == "[EPOCH] Epoch 2/15 (120 batches)"
    assert len(out) == 4  # no VRAM line on the CPU


def test_memory_usage_on_the_cpu():
    m = memory_usage(torch.device("cpu"))
    assert 0 < m["ram_gb"] <= m["ram_total_gb"]
    assert m["vram_gb"] is None and m["vram_total_gb"] is None
    assert memory_lines()[0] == f"[RAM] {m['ram_gb']:.1f} GB / {m['ram_total_gb']:.1f} GB"


def test_throughput():
    t = Throughput()
    assert t.per_second is None
    t.add(100)
    time.sleep(0.01)
    assert 0 < t.per_second < 100 / 0.01 + 1


class Recorder(Hooks):
    def __init__(self, name: str, calls: list, fail_close: bool = False) -> None:
        self.name, self.calls, self.fail_close = name, calls, fail_close

    def batch(self, epoch, batch_idx, loss, acc, **extra):
        self.calls.append((self.name, "batch", batch_idx, extra))

    def checkpoint_saved(self, path, record=None):
        self.calls.append((self.name, "ckpt", path))

    def close(self):
        self.calls.append((self.name, "close"))
        if self.fail_close:
            raise OSError(f"{self.name} failed")


def test_fanout_passes_every_hook_in_order_and_closes_all():
    calls: list = []
    log = FanoutHooks([Recorder("a", calls, fail_close=True), Recorder("b", calls)])
    log.batch(1, 5, 0.5, 0.5, lr=0.1)
    log.checkpoint_saved("x.pth", {"epoch": 1})
    with pytest.raises(OSError, match="a failed"):
        log.close()
    assert calls == [
        ("a", "batch", 5, {"lr": 0.1}),
        ("b", "batch", 5, {"lr": 0.1}),
        ("a", "ckpt", "x.pth"),
        ("b", "ckpt", "x.pth"),
        ("a", "close"),
        ("b", "close"),  # closed even though "a" failed
    ]


def test_silent_hooks_accept_every_hook():
    log = Hooks()
    log.log_params({"a": 1})
    log.epoch_start(1, 1, None)
    log.phase_start("train", 3)
    log.batch(1, 0, 1.0, 0.5, samples=2)
    log.progress("train", 1, 2, loss=1.0)
    log.checkpoint_saved("p")
    log.epoch_end({})
    log.close()
