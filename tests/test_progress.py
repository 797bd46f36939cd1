"""The progress bar: chosen on a terminal only, drawn on the console only, never garbled
by log lines, and with a total and an ETA (checked under a real pseudo-terminal)."""

from __future__ import annotations

import io
import logging
import os
import pty
import re
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest

from src.core.logs import log_file, setup_console
from src.modelling.observability.progress import BarHooks, is_terminal, use_bar
from tests.test_run_files import epoch_record

REPO = Path(__file__).resolve().parents[1]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_auto_shows_the_bar_on_a_terminal_of_rank_0_only(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    tty, pipe = FakeTerminal(), io.StringIO()
    assert use_bar("auto", True, tty)
    assert not use_bar("auto", True, pipe)
    assert not use_bar("auto", False, tty)
    assert use_bar("bar", True, pipe)
    assert not use_bar("lines", True, tty)
    monkeypatch.setenv("TERM", "dumb")
    assert not is_terminal(tty)
    with pytest.raises(ValueError, match="auto, bar or lines"):
        use_bar("fancy")


def drive_bar(bar: BarHooks, n: int = 40, delay: float = 0.0) -> None:
    bar.epoch_start(1, 3, n)
    bar.phase_start("train", n)
    for i in range(n):
        if delay:
            time.sleep(delay)
        if i % 10 == 0:
            bar.batch(1, i, 1.2, 0.4, samples=64)
        if i == n // 2:
            logging.getLogger("src.test").info("   [CKPT] a line while the bar runs")
        bar.progress("train", i + 1, 64, loss=1.2, acc=0.4, lr=1e-3)
    bar.phase_start("val", 10)
    for i in range(10):
        bar.progress("val", i + 1, 64)
    bar.epoch_end(epoch_record(1))
    bar.close()


def check_log(text: str) -> None:
    """The log holds the plain lines and nothing of the bar."""
    assert "\r" not in text and "ETA" not in text and "%|" not in text
    lines = text.splitlines()
    lines = lines[lines.index("[EPOCH] Epoch 1/3 (40 batches)") :]
    assert "   Batch    0 | Loss: 1.2000 | Acc: 40.00%" in lines
    assert "   Batch   30 | Loss: 1.2000 | Acc: 40.00%" in lines
    assert sum(line.startswith("   [RAM] ") for line in lines) == 4
    assert "   [CKPT] a line while the bar runs" in lines
    assert lines[-2].startswith("[EPOCH] Epoch 1 done in")


def test_the_bar_goes_to_the_console_and_the_lines_to_the_log(tmp_path, monkeypatch):
    tty = FakeTerminal()
    monkeypatch.setattr(sys, "stdout", tty)
    log = tmp_path / "run.txt"
    setup_console()
    with log_file(log):
        drive_bar(BarHooks(refresh_s=0))
    check_log(log.read_text())
    shown = tty.getvalue()
    assert "Epoch 1/3 train: 100%|" in shown and "40/40" in shown and "ETA" in shown
    assert "Epoch 1/3 val: 100%|" in shown and "10/10" in shown
    assert "loss 1.2000 | acc 40.0% |" in shown and "samples/s" in shown and "RAM " in shown
    # The info line was written on a cleared line, not after a half-drawn bar.
    before = shown[: shown.index("   [CKPT] a line")]
    assert before.endswith("\r")
    assert "   Batch " not in shown  # the bar replaces the batch lines on the console


def test_a_loader_without_length_gets_a_bar_without_eta():
    out = FakeTerminal()
    bar = BarHooks(stream=out, refresh_s=0)
    bar.phase_start("train", None)
    bar.progress("train", 3, 64, loss=1.0, acc=0.5)
    bar.close()
    assert "train: 3 batches [" in out.getvalue() and "ETA" not in out.getvalue()


CHILD = """
import sys
from pathlib import Path
from src.modelling.observability.progress import BarHooks, use_bar
from src.core.logs import log_file, setup_console
from tests.test_progress import drive_bar
setup_console()
with log_file(Path(sys.argv[1])):
    print("auto picks the bar:", use_bar("auto"), flush=True)
    drive_bar(BarHooks(refresh_s=0.05), delay=0.01)
"""


def run_in_pty(args: list[str], columns: int = 150, timeout: float = 30.0) -> str:
    """Run `args` with a pseudo-terminal as stdin/stdout/stderr; return all it drew."""
    import fcntl
    import termios

    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    env = {**os.environ, "TERM": "xterm", "COLUMNS": str(columns)}
    proc = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, cwd=REPO, env=env)
    os.close(slave)
    chunks = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        proc.wait(timeout=max(1.0, deadline - time.monotonic()))
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, b"".join(chunks).decode(errors="replace")
    return b"".join(chunks).decode("utf-8", errors="replace")


def frames(output: str) -> list[str]:
    """The successive states of the terminal line: what each carriage return redraws."""
    return [f.strip() for f in re.split(r"[\r\n]+", output) if f.strip()]


def test_bar_under_a_pseudo_terminal(tmp_path):
    log = tmp_path / "run.txt"
    out = run_in_pty([sys.executable, "-c", CHILD, str(log)])
    assert "auto picks the bar: True" in out
    train_frames = [f for f in frames(out) if f.startswith("Epoch 1/3 train:")]
    assert len(train_frames) >= 3, out  # redrawn as it goes
    midway = [f for f in train_frames if re.search(r"\| (\d+)/40 ", f) and "40/40" not in f]
    assert midway, train_frames
    # total, ETA (mm:ss), throughput, loss, accuracy and RAM on one line
    assert re.search(
        r"\d+/40 \[\d\d:\d\d elapsed, ETA \d\d:\d\d, .*batch/s, loss 1\.2000 \| acc 40\.0% \| "
        r"[\d,]+ samples/s \| RAM \d+\.\d/\d+\.\d GB\]",
        midway[-1],
    ), midway[-1]
    assert any(f.startswith("Epoch 1/3 val: 100%|") and "10/10" in f for f in frames(out))
    check_log(log.read_text())
