"""Training throughput: our `train()` beside a plain PyTorch loop and Lightning's `Trainer`.

    python -m bench.throughput              # full run (under 10 minutes on 2 cores)
    python -m bench.throughput --quick      # smoke run (about 1 minute)
    python -m bench.throughput --configs 3x5:fp32 64x1:bf16 --repeats 7

Every contender trains the same model (SAIMP: 16 features, seq 64, d_model 64, 4 heads,
2 layers, d_ff 128, dropout 0.1), from the same initial weights, with the same optimizer
(AdamW, lr 1e-3, weight decay 1e-4) and loss (CrossEntropyLoss, class weights
1/10/10/20), on the same data: in-memory random tensors cut into batches beforehand, so
that no loader is measured (the loader has its own benchmark, `bench.loader`). The
train() contenders get AdamW as the trainer builds it (`build_optimizer`: torch's fused
kernel), the others `torch.optim.AdamW(...)` as a user writes it (a loop over tensors on
CPU); the report gives both step times, and `--optimizer same` gives train() the user's.

Contenders:

- plain, loss/K: a hand-written minimal loop (mean loss / K, an optimizer step every K
  micro-batches; no logging, no checkpoints). The anchor of every ratio.
- plain, exact: the same loop and micro-batches with the exact normaliser (each
  micro-batch's sum of weighted losses over the window's sum of class weights, found from
  the labels before the first backward pass): what exact accumulation costs by itself.
- plain, 1 pass/window: the plain loop with each window's micro-batches joined into one
  forward pass (K > 1 only): the most that `auto` can reach on this model.
- train(), pinned: our `train()` with everything on: exact accumulation, the run's hooks
  (console lines written to a console file and to the run's log, as `saimp train` does,
  the JSONL/PNG writer), a `last` checkpoint every `--ckpt-every` windows (the
  default, 500, is more than an epoch here, so none falls inside the training time),
  validation, best and last checkpoints at the epoch's end; one forward pass per loader
  batch (`micro_batch` = the batch size B, as `--micro-batch B`).
- train(), auto: the same with `micro_batch="auto"` (the whole window in one pass).
- Lightning: `Trainer` with `accumulate_grad_batches=K`, progress bar, logger,
  checkpointing and model summary off, over `DataLoader(batches, batch_size=None)`;
  `precision="bf16-mixed"` for bf16. It scales the loss by 1/K (not exact).

bf16 is CPU autocast to bfloat16 for every contender (`precision="bf16"` in train()).

How it measures. This machine shares its cores (other work, and in a VM its neighbours):
its speed drifts by tens of percent for seconds at a time, so contenders measured one
after the other disagree by more than the differences sought. Here the contenders run in
long-lived worker processes, one each (each with its own OpenMP team, as a real run has;
threads in one process would make their OpenMP teams fight), and take turns: one runs at
a time and hands over at the first window boundary after holding the turn for
TIME_SLICE_S, so all of them train through the same seconds of the machine's life.
Contenders move to another worker every round, so that a process's own luck (where its
memory landed) does not stick to one contender.

A contender's training time is the time it held the turn between its first batch and
the end of its last window: for train(), from the first batch it reads to the end of its
last window, with its per-window logging (and a `last` checkpoint when one falls due);
for Lightning, from
its first batch to `on_train_epoch_end`. Set-up, validation and end-of-epoch work run in
turn too but are counted apart, as a fixed cost per epoch. A handover costs the next
contender a few ms (its OpenMP worker and vCPU wake up), about 2% of a slice, alike for
all, so absolute figures sit slightly below a lone process's.

Each configuration starts with a warm-up (every worker runs every contender once on two
windows), then runs rounds, the order of turns rotated between rounds: before each it
waits (within `--max-wait`) for the rest of the machine to quiet down, and it keeps the
`--repeats` least disturbed rounds of at most `--repeats` + max(2, repeats // 2). The
table gives the median samples/s and the median of the per-round ratios to
"plain, loss/K", then the spread of those ratios. The report also times one `last`
checkpoint, one AdamW step of each kind, and the start-up of `--help` beside
`import torch`, and checks the targets of the speed issue.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import multiprocessing
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from src.config import build_config
from src.modelling.model import SAIMP, SAIMPConfig
from src.modelling.training import components

ROOT = Path(__file__).resolve().parents[1]
MODEL = SAIMPConfig(
    n_features=16, seq_len=64, d_model=64, n_heads=4, n_layers=2, d_ff=128, dropout=0.1
)
TRAINER_CFG = build_config()  # the `quick` preset, as `saimp train` runs
CLASS_WEIGHTS = TRAINER_CFG.train.class_weights  # 1/10/10/20
LR, WEIGHT_DECAY = TRAINER_CFG.train.lr, TRAINER_CFG.train.weight_decay  # 1e-3, 1e-4
VAL_SAMPLES = 256
QUIET_CORES = 0.3
"""A round is quiet when the rest of the machine used at most this many cores meanwhile;
disturbed rounds are run again (a few at most) and the quietest are kept."""
TIME_SLICE_S = 0.25
"""A contender hands over at the first window boundary after holding the turn this long.
A handover costs the next contender a few ms (its OpenMP worker and vCPU wake up), so
slices, not single windows, keep that cost a small and equal share for everyone."""
DEFAULT_SETUPS = ("3x5:fp32", "64x1:fp32", "3x5:bf16", "64x1:bf16")

PLAIN = "plain, loss/K"
EXACT = "plain, exact"
ONE_PASS = "plain, 1 pass/window"
PINNED = "train(), pinned"
AUTO = "train(), auto"
LIGHTNING = "Lightning"
CONTENDERS = (PLAIN, EXACT, ONE_PASS, PINNED, AUTO, LIGHTNING)
CONTENDER_KEYS = dict(
    zip(("plain", "exact", "one-pass", "pinned", "auto", "lightning"), CONTENDERS, strict=True)
)

TORCH_IMPORT = "python -c 'import torch'"
HELP = "python -m src.modelling.train --help"
PL_IMPORT = "python -c 'import pytorch_lightning'"


@dataclass(frozen=True)
class Setup:
    """One configuration: samples per micro-batch, accumulation steps, precision."""

    batch: int
    steps: int
    precision: str  # "fp32" or "bf16"

    @classmethod
    def parse(cls, text: str) -> Setup:
        shape, _, precision = text.partition(":")
        batch, _, steps = shape.partition("x")
        if precision not in ("fp32", "bf16") or not (batch.isdigit() and steps.isdigit()):
            raise argparse.ArgumentTypeError(f"expected BATCHxSTEPS:fp32|bf16, got {text!r}")
        if int(batch) < 1 or int(steps) < 1:
            raise argparse.ArgumentTypeError(f"batch and steps must be >= 1, got {text!r}")
        return cls(int(batch), int(steps), precision)

    @property
    def name(self) -> str:
        return f"{self.batch} x {self.steps}, {self.precision}"

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast("cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()


class Batches(list):
    """The pre-cut batches; like the streaming dataset, it knows its batch size (for auto)."""

    def __init__(self, items: list[Any], batch_size: int) -> None:
        super().__init__(items)
        self.batch_size = batch_size


def windows_per_epoch(setup: Setup, samples: int) -> int:
    """Whole windows of `steps` batches of `batch` samples making about `samples` in all."""
    return max(1, round(samples / (setup.batch * setup.steps)))


def make_batches(setup: Setup, samples: int, seed: int = 0) -> Batches:
    """`windows_per_epoch` windows of `steps` batches of `batch` random samples."""
    n = windows_per_epoch(setup, samples) * setup.steps
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, setup.batch, MODEL.seq_len, MODEL.n_features, generator=g)
    y = torch.randint(0, len(CLASS_WEIGHTS), (n, setup.batch), generator=g)
    return Batches([(x[i].clone(), y[i].clone()) for i in range(n)], setup.batch)


def windows_of(batches: list[Any], steps: int) -> list[list[Any]]:
    return [batches[i : i + steps] for i in range(0, len(batches), steps)]


def fresh_model() -> SAIMP:
    torch.manual_seed(0)  # the same initial weights for every contender
    return SAIMP(MODEL)


def class_weights() -> torch.Tensor:
    return torch.tensor(CLASS_WEIGHTS, dtype=torch.float32)


def adamw(module: nn.Module) -> torch.optim.AdamW:
    """AdamW as a user writes it: torch's default kernel (a loop over tensors on CPU)."""
    return torch.optim.AdamW(module.parameters(), lr=LR, weight_decay=WEIGHT_DECAY)


def trainer_adamw(module: nn.Module) -> torch.optim.AdamW:
    """AdamW as `saimp train` builds it (`build_optimizer`: fused)."""
    return components.build_optimizer(TRAINER_CFG, module)


# -- taking turns ----------------------------------------------------------------------------


class Baton:
    """Contender processes take turns in a cyclic order, one running at a time.

    Shared between processes: one semaphore per contender (released to give it the turn),
    and which contenders are done with the round.
    """

    def __init__(self, mp: Any, n: int) -> None:
        self.sems = [mp.Semaphore(0) for _ in range(n)]
        self.done = mp.Array("b", n)

    def next_after(self, me: int, order: list[int]) -> int | None:
        with self.done.get_lock():
            i = order.index(me)
            following = order[i + 1 :] + order[: i + 1]
            return next((c for c in following if not self.done[c]), None)


class Lane:
    """One contender's side of the baton, in its own process: waits for its turn, hands it
    over at window boundaries and at the end, and adds up the time it held the turn
    (`held`) and, of that, the time its clock ran (`trained`)."""

    def __init__(self, baton: Baton, me: int, order: list[int]) -> None:
        self.baton, self.me, self.order = baton, me, order
        self.parent = os.getppid()
        self.trained = self.held = 0.0
        self._clock: float | None = None
        self._turn_started = 0.0

    def wait(self) -> None:
        while not self.baton.sems[self.me].acquire(timeout=1.0):
            if os.getppid() != self.parent:  # the coordinator is gone
                os._exit(1)
        self._turn_started = time.perf_counter()

    def on(self) -> None:
        if self._clock is None:
            self._clock = time.perf_counter()

    def off(self) -> None:
        if self._clock is not None:
            self.trained += time.perf_counter() - self._clock
            self._clock = None

    def _release(self) -> bool:
        """Give the turn to the next contender not done; False if that is this one."""
        nxt = self.baton.next_after(self.me, self.order)
        self.held += time.perf_counter() - self._turn_started
        if nxt is None or nxt == self.me:
            self._turn_started = time.perf_counter()
            return False
        self.baton.sems[nxt].release()
        return True

    def boundary(self) -> None:
        """A window boundary: hand over if this turn has lasted a time slice."""
        if time.perf_counter() - self._turn_started >= TIME_SLICE_S:
            self.switch()

    def switch(self) -> None:
        running = self._clock is not None
        self.off()
        if self._release():
            self.wait()
        if running:
            self.on()

    def finish(self) -> None:
        self.off()
        with self.baton.done.get_lock():
            self.baton.done[self.me] = 1
        self._release()


class TurnBatches(Batches):
    """The batches as an iterable that starts the clock at the first batch, hands over the
    turn before the first batch of every later window, and stops the clock when it is
    exhausted (train() asks for the next window right after finishing the last one)."""

    def __init__(self, batches: Batches, steps: int, lane: Lane) -> None:
        super().__init__(batches, batches.batch_size)
        self.steps, self.lane = steps, lane

    def __iter__(self) -> Iterator[Any]:
        for i, batch in enumerate(list.__iter__(self)):
            if i == 0:
                self.lane.on()
            elif i % self.steps == 0:
                self.lane.boundary()
            yield batch
        self.lane.off()


class TurnDataset(torch.utils.data.Dataset):
    """The batches as a map-style dataset for Lightning's DataLoader, with the same turns
    (Lightning fetches one batch ahead, so it hands over one batch early)."""

    def __init__(self, batches: Batches, steps: int, lane: Lane) -> None:
        self.batches, self.steps, self.lane = batches, steps, lane

    def __len__(self) -> int:
        return len(self.batches)

    def __getitem__(self, i: int) -> Any:
        if i == 0:
            self.lane.on()
        elif i % self.steps == 0:
            self.lane.boundary()
        return self.batches[i]


@dataclass
class Context:
    """What the contenders share within one run."""

    tmp: Path
    val: list[Any]
    trainer_optimizer: bool = True
    """train() contenders use the optimizer the trainer builds (fused AdamW), not `adamw`."""
    ckpt_every: dict[Setup, int] = field(default_factory=dict)
    notes: set[str] = field(default_factory=set)


# -- contenders: each trains one epoch over `batches` and returns the samples trained ------

Runner = Callable[[Batches, Setup, Context, Lane], int]


class PlainStep:
    """One optimizer step of the plain loop over a window of micro-batches.

    `exact=False`: the textbook mean loss / K per micro-batch. `exact=True`: each
    micro-batch's sum of weighted losses over the window's sum of class weights, found
    from the labels before the first backward pass (the gradient of one batch holding the
    whole window). `one_pass=True`: the window joined into one batch, mean loss.
    """

    def __init__(self, setup: Setup, *, exact: bool = False, one_pass: bool = False) -> None:
        self.setup, self.exact, self.one_pass = setup, exact, one_pass
        self.model = fresh_model()
        self.model.train()
        self.opt = adamw(self.model)
        self.w = class_weights()
        self.w64 = self.w.double()
        self.loss_fn = nn.CrossEntropyLoss(weight=self.w)

    def __call__(self, window: list[Any]) -> int:
        setup, model = self.setup, self.model
        if self.one_pass and len(window) > 1:
            window = [(torch.cat([b[0] for b in window]), torch.cat([b[1] for b in window]))]
        k = 1 if self.one_pass else setup.steps
        if self.exact:
            norm = float(sum(self.w64[y].sum() for _, y in window))
        samples = 0
        for x, y in window:
            with setup.autocast():
                logits = model(x)  # (B, n_classes)
            if self.exact:
                loss = F.cross_entropy(logits.float(), y, weight=self.w, reduction="sum") / norm
            else:
                loss = self.loss_fn(logits.float(), y) / k
            loss.backward()
            samples += len(y)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        return samples


def plain(**kind: bool) -> Runner:
    def run(batches: Batches, setup: Setup, ctx: Context, lane: Lane) -> int:
        step = PlainStep(setup, **kind)
        samples = 0
        lane.on()
        for i, window in enumerate(windows_of(batches, setup.steps)):
            if i:
                lane.boundary()
            samples += step(window)
        lane.off()
        return samples

    return run


def ours(micro_batch: str) -> Runner:
    """Our `train()` (its `Trainer`), one epoch, with the hooks and files of `saimp train`."""

    def run(batches: Batches, setup: Setup, ctx: Context, lane: Lane) -> int:
        from src.config import TrainConfig
        from src.core.logs import log_file, setup_console
        from src.modelling.observability.console import ConsoleHooks
        from src.modelling.observability.run_files import RunFilesHooks, RunPaths
        from src.modelling.train import CheckpointManager, Trainer

        model = fresh_model()
        opt = trainer_adamw(model) if ctx.trainer_optimizer else adamw(model)
        scheduler = components.build_scheduler(TRAINER_CFG, opt)
        config = TrainConfig(
            accumulation_steps=setup.steps,
            precision=setup.precision,
            log_every=100,
            micro_batch=str(setup.batch) if micro_batch == "pinned" else micro_batch,
        )
        with tempfile.TemporaryDirectory(dir=ctx.tmp) as d:
            paths = RunPaths.in_dir(Path(d) / "logs")
            # As `saimp train` runs: console lines through logging, and the run's log file
            # (the console is a file here).
            setup_console()
            with (
                open(Path(d) / "console.txt", "w", buffering=1, encoding="utf-8") as console,
                contextlib.redirect_stdout(console),
                contextlib.redirect_stderr(console),
                log_file(paths.log),
            ):
                hooks = RunFilesHooks(paths, torch.device("cpu"), console=ConsoleHooks())
                checkpoints = CheckpointManager(
                    Path(d) / "best.pth",
                    sidecar={"bench": "throughput"},
                    fingerprint={"bench": "throughput"},
                    every_windows=ctx.ckpt_every[setup],
                )
                try:
                    state = (
                        Trainer(
                            model,
                            components.build_loss(TRAINER_CFG),
                            opt,
                            scheduler,
                            config=config,
                            checkpoints=checkpoints,
                            hooks=hooks,
                            device="cpu",
                        )
                        .fit(TurnBatches(batches, setup.steps, lane), ctx.val, 1)
                        .state
                    )
                finally:
                    hooks.close()
        if micro_batch == "auto" and state.micro_batch != setup.batch * setup.steps:
            ctx.notes.add(f"auto ran {state.micro_batch} samples per pass at {setup.name}")
        return state.history[-1]["train_samples"]

    return run


def lightning(batches: Batches, setup: Setup, ctx: Context, lane: Lane) -> int:
    import pytorch_lightning as pl

    class Module(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = fresh_model()
            self.loss_fn = nn.CrossEntropyLoss(weight=class_weights())

        def training_step(self, batch: Any, batch_idx: int) -> torch.Tensor:
            x, y = batch
            return self.loss_fn(self.model(x).float(), y)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return adamw(self)

    class StopClock(pl.Callback):
        def on_train_epoch_end(self, trainer: Any, module: Any) -> None:
            lane.off()

    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        accumulate_grad_batches=setup.steps,
        precision="bf16-mixed" if setup.precision == "bf16" else "32-true",
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        logger=False,
        num_sanity_val_steps=0,
        callbacks=[StopClock()],
        default_root_dir=ctx.tmp,
    )
    data = TurnDataset(batches, setup.steps, lane)
    loader = torch.utils.data.DataLoader(data, batch_size=None, shuffle=False)
    trainer.fit(Module(), train_dataloaders=loader)
    return len(batches) * setup.batch


def quiet_lightning() -> None:
    for name in ("pytorch_lightning", "lightning", "lightning.pytorch", "lightning_fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(pytorch_)?lightning.*")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")


RUNNERS: dict[str, Runner] = {
    PLAIN: plain(),
    EXACT: plain(exact=True),
    ONE_PASS: plain(one_pass=True),
    PINNED: ours("pinned"),
    AUTO: ours("auto"),
    LIGHTNING: lightning,
}


# -- measuring -----------------------------------------------------------------------------


@dataclass
class Round:
    """One round: every contender trained one epoch, window by window in turns."""

    samples: dict[str, int]
    trained: dict[str, float]
    held: dict[str, float]
    foreign: float = 0.0
    """Cores the rest of the machine used meanwhile (other processes, hypervisor steal)."""

    def samples_per_s(self, name: str) -> float:
        return self.samples[name] / self.trained[name]

    @property
    def quiet(self) -> bool:
        return not self.foreign > QUIET_CORES


class ForeignLoad:
    """Cores the rest of the machine used while a block ran: /proc/stat busy time (steal
    included) minus that of this process and the workers. NaN where /proc is missing."""

    def __init__(self, pids: list[int]) -> None:
        import psutil

        self.procs = [psutil.Process(pid) for pid in [os.getpid(), *pids]]
        self.cores = math.nan

    @staticmethod
    def _busy() -> float | None:
        try:
            fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]
        except OSError:
            return None
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields)
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")

    def _ours(self) -> float:
        return sum(sum(p.cpu_times()[:4]) for p in self.procs)

    def __enter__(self) -> ForeignLoad:
        self._start = (time.perf_counter(), self._busy(), self._ours())
        return self

    def __exit__(self, *exc: object) -> None:
        wall0, busy0, ours0 = self._start
        busy = self._busy()
        if busy is not None and busy0 is not None:
            wall = time.perf_counter() - wall0
            self.cores = max(0.0, (busy - busy0) - (self._ours() - ours0)) / wall


class NoLane:
    """The lane of a warm-up run: no turns, no clock."""

    trained = held = 0.0

    def on(self) -> None: ...
    def off(self) -> None: ...
    def boundary(self) -> None: ...


def worker_main(
    slot: int, conn: Any, baton: Baton, threads: int, tmp: str, trainer_optimizer: bool
) -> None:
    """A worker process: runs contenders' epochs on command until it receives None."""
    devnull = open(os.devnull, "w")  # noqa: SIM115  (Lightning's tips; errors go to conn)
    sys.stdout = sys.stderr = devnull
    torch.set_num_threads(threads)
    quiet_lightning()
    g = torch.Generator().manual_seed(2)
    val = [
        (
            torch.randn(64, MODEL.seq_len, MODEL.n_features, generator=g),
            torch.randint(0, len(CLASS_WEIGHTS), (64,), generator=g),
        )
        for _ in range(VAL_SAMPLES // 64)
    ]
    ctx = Context(Path(tmp), val, trainer_optimizer)
    while (command := conn.recv()) is not None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # Lightning's handler may linger
        kind, names, setup, samples, order, ckpt_every = command
        ctx.ckpt_every[setup] = ckpt_every
        batches = make_batches(setup, samples, seed=1)
        lane: Lane | NoLane = NoLane() if kind == "warm" else Lane(baton, slot, order)
        if kind == "run":
            conn.send("ready")
            lane.wait()
        try:
            n = sum(RUNNERS[name](batches, setup, ctx, lane) for name in names)
            reply: tuple[Any, ...] = ("ok", n, lane.trained, sorted(ctx.notes))
        except BaseException:
            reply = ("error", traceback.format_exc())
        finally:
            if isinstance(lane, Lane):
                lane.finish()
        if torch.get_num_threads() != threads:
            ctx.notes.add(f"{names} changed torch's threads to {torch.get_num_threads()} (reset)")
            torch.set_num_threads(threads)
        conn.send((*reply, lane.held) if reply[0] == "ok" else reply)


class Workers:
    """Long-lived worker processes (each with its own OpenMP team, as a real run has) that
    run the contenders in turns. Contenders move from worker to worker between rounds, so
    that a process's own luck (where its memory landed, which core it got) does not stick
    to one contender."""

    def __init__(
        self, n: int, threads: int, tmp: Path, max_wait_s: float, trainer_optimizer: bool
    ) -> None:
        mp = multiprocessing.get_context("spawn")
        self.baton = Baton(mp, n)
        self.procs = []
        self.conns = []
        self.notes: set[str] = set()
        self.max_wait_s = max_wait_s
        self.waited_s = 0.0
        for slot in range(n):
            parent, child = mp.Pipe()
            proc = mp.Process(
                target=worker_main,
                args=(slot, child, self.baton, threads, str(tmp), trainer_optimizer),
                name=f"bench-worker-{slot}",
                daemon=True,
            )
            proc.start()
            self.procs.append(proc)
            self.conns.append(parent)

    def _recv(self, slot: int, timeout: float = 900.0) -> Any:
        if not self.conns[slot].poll(timeout):
            raise RuntimeError(f"worker {slot}: no answer within {timeout:.0f} s")
        reply = self.conns[slot].recv()
        if isinstance(reply, tuple) and reply[0] == "error":
            raise RuntimeError(f"worker {slot} failed:\n{reply[1]}")
        return reply

    def warm(self, setup: Setup, names: list[str], samples: int, ckpt_every: int) -> None:
        """Every worker runs every contender once, one worker at a time (first-call costs,
        lazy imports, the allocator, oneDNN's kernel caches)."""
        for slot, conn in enumerate(self.conns):
            conn.send(("warm", names, setup, samples, [], ckpt_every))
            self._recv(slot)

    def wait_for_quiet(self) -> None:
        """Before a round: while the rest of the machine is busy, wait (within the run's
        budget of `max_wait_s`)."""
        while self.max_wait_s > 0:
            with ForeignLoad([p.pid for p in self.procs]) as load:
                time.sleep(1.0)
            if not load.cores > QUIET_CORES:
                return
            print(
                f"  waiting: the rest of the machine uses {load.cores:.1f} cores",
                file=sys.stderr,
                flush=True,
            )
            time.sleep(min(5.0, self.max_wait_s))
            self.max_wait_s -= 6.0
            self.waited_s += 6.0

    def round(
        self, setup: Setup, samples: int, order: list[str], slots: dict[str, int], ckpt_every: int
    ) -> Round:
        """Contender `name` runs on worker `slots[name]`; turns go in `order`."""
        turns = [slots[name] for name in order]
        with self.baton.done.get_lock():
            for slot in range(len(self.conns)):
                self.baton.done[slot] = 0 if slot in turns else 1
        for name, slot in slots.items():
            self.conns[slot].send(("run", [name], setup, samples, turns, ckpt_every))
        for slot in turns:
            if self._recv(slot) != "ready":
                raise RuntimeError(f"worker {slot} did not get ready")
        with ForeignLoad([p.pid for p in self.procs]) as load:
            self.baton.sems[turns[0]].release()
            replies = {name: self._recv(slot) for name, slot in slots.items()}
        self.notes |= {note for r in replies.values() for note in r[3]}
        return Round(
            {n: r[1] for n, r in replies.items()},
            {n: r[2] for n, r in replies.items()},
            {n: r[4] for n, r in replies.items()},
            load.cores,
        )

    def close(self) -> None:
        for conn, proc in zip(self.conns, self.procs, strict=True):
            with contextlib.suppress(OSError):
                conn.send(None)
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()


@dataclass
class Result:
    setup: Setup
    contenders: list[str]
    steps: int
    rounds: list[Round]
    """The rounds kept."""
    rounds_run: int
    normaliser_us: float | None = None

    def values(self, name: str) -> list[float]:
        return [r.samples_per_s(name) for r in self.rounds if name in r.samples]

    def ratios(self, name: str) -> list[float]:
        return self.paired(name, PLAIN)

    def paired(self, name: str, other: str) -> list[float]:
        """Per-round speed of `name` over `other` (both trained through the same seconds)."""
        return [
            r.samples_per_s(name) / r.samples_per_s(other)
            for r in self.rounds
            if name in r.samples and other in r.samples
        ]

    def median(self, name: str) -> float | None:
        values = self.values(name)
        return statistics.median(values) if values else None

    def ratio(self, name: str) -> float | None:
        values = self.ratios(name)
        return statistics.median(values) if values else None

    def ms_per_step(self, name: str) -> list[float]:
        return [r.trained[name] / self.steps * 1e3 for r in self.rounds if name in r.trained]

    def fixed_seconds(self, name: str) -> float | None:
        """Median time a contender held the turn outside its training time (set-up,
        validation, end-of-epoch checkpoints and PNG, Trainer set-up and teardown)."""
        values = [r.held[name] - r.trained[name] for r in self.rounds if name in r.held]
        return statistics.median(values) if values else None


def normaliser_microseconds(setup: Setup) -> float:
    """What train() computes from a window's labels before its first forward pass:
    `WindowLoss.normaliser` of each micro-batch, summed on the host (timeit, best of 5)."""
    from src.modelling.training.exact_loss import WindowLoss

    window_loss = WindowLoss(nn.CrossEntropyLoss(weight=class_weights()))
    labels = [y for _, y in make_batches(setup, setup.batch * setup.steps)]  # one window
    best = min(
        timeit.repeat(
            lambda: sum(float(window_loss.normaliser(y)) for y in labels), number=200, repeat=5
        )
    )
    return best / 200 * 1e6


def measure(
    setup: Setup,
    contenders: list[str],
    workers: Workers,
    samples: int,
    repeats: int,
    ckpt_every: int,
) -> Result:
    contenders = [c for c in contenders if not (c == ONE_PASS and setup.steps == 1)]
    n_steps = windows_per_epoch(setup, samples)
    workers.warm(setup, contenders, 2 * setup.batch * setup.steps, ckpt_every)
    rounds: list[Round] = []
    most = repeats + max(2, repeats // 2)
    while len(rounds) < most and sum(r.quiet for r in rounds) < repeats:
        r = len(rounds)
        shift = r % len(contenders)
        order = contenders[shift:] + contenders[:shift]
        # Each round every contender moves to the next worker, and turns rotate too.
        slots = {c: (i + r) % len(workers.conns) for i, c in enumerate(contenders)}
        workers.wait_for_quiet()
        this = workers.round(setup, samples, order, slots, ckpt_every)
        rounds.append(this)
        print(
            f"  {setup.name}, round {r + 1} (other load {this.foreign:.2f} cores): "
            + ", ".join(f"{c} {this.samples_per_s(c):,.0f}" for c in contenders),
            file=sys.stderr,
            flush=True,
        )
    # The `repeats` least disturbed rounds, in the order they ran.
    kept = sorted(sorted(rounds, key=lambda r: r.foreign)[:repeats], key=rounds.index)
    normaliser = normaliser_microseconds(setup) if EXACT in contenders else None
    return Result(setup, contenders, n_steps, kept, len(rounds), normaliser)


def optimizer_step_ms(rounds: int = 7, steps: int = 100) -> dict[str, float]:
    """Median ms of one AdamW step on the bench model: the plain loop's (`adamw`) beside the
    trainer's (`trainer_adamw`), alternated round by round."""
    builders = {"plain loop's AdamW": adamw, "trainer's AdamW (fused)": trainer_adamw}
    optimizers = {}
    for name, make in builders.items():
        model = fresh_model()
        for param in model.parameters():
            param.grad = torch.randn_like(param)
        optimizers[name] = make(model)
    times: dict[str, list[float]] = {name: [] for name in builders}
    for _ in range(rounds):
        for name, opt in optimizers.items():
            opt.step()  # warm
            t = time.perf_counter()
            for _ in range(steps):
                opt.step()
            times[name].append((time.perf_counter() - t) / steps)
    return {name: statistics.median(v) * 1e3 for name, v in times.items()}


def last_checkpoint_ms(tmp: Path, repeats: int = 9) -> float:
    """Median time of writing one `last` checkpoint as train() does (model, AdamW state,
    RNG; written to a temporary file, fsynced, then renamed)."""
    from src.modelling.checkpointing.best import plain_state_dict
    from src.modelling.checkpointing.last import save_training_state
    from src.modelling.checkpointing.rng import capture_rng

    model = fresh_model()
    opt = adamw(model)
    model(torch.randn(2, MODEL.seq_len, MODEL.n_features)).sum().backward()
    opt.step()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        save_training_state(
            tmp / "last.pth",
            {"model": plain_state_dict(model), "optimizer": opt.state_dict(), "rng": capture_rng()},
        )
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e3


def time_commands(commands: dict[str, list[str]], runs: int) -> dict[str, list[float]]:
    """Wall time of each command in a fresh process, the commands alternated run by run."""
    times: dict[str, list[float]] = {name: [] for name in commands}
    names = list(commands)
    for r in range(runs):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:
            t = time.perf_counter()
            subprocess.run(commands[name], cwd=ROOT, check=True, capture_output=True)
            times[name].append(time.perf_counter() - t)
    return times


# -- report ----------------------------------------------------------------------------------


def machine_info(threads: int) -> str:
    cpu, bf16 = platform.processor() or "unknown CPU", ""
    with contextlib.suppress(OSError):
        cpuinfo = Path("/proc/cpuinfo").read_text()
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line
        ]
        cpu = names[0] if names else cpu
        bf16 = next((f for f in ("amx_bf16", "avx512_bf16") if f in cpuinfo), "")
    try:
        import pytorch_lightning as pl

        pl_version = pl.__version__
    except ImportError:
        pl_version = "not installed"
    return (
        f"{cpu}, {os.cpu_count()} cores{f' ({bf16})' if bf16 else ''}, {platform.system()}; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"pytorch-lightning {pl_version}; torch threads {threads}"
    )


def report(
    results: list[Result],
    cli_times: dict[str, list[float]] | None,
    ckpt_every: int,
    save_ms: float,
    adamw_ms: dict[str, float],
    notes: set[str],
    threads: int,
    args: argparse.Namespace,
    load: tuple[tuple[float, ...], tuple[float, ...]],
    minutes: float,
) -> str:
    out = io.StringIO()
    w = out.write
    contenders = [c for c in CONTENDERS if any(c in r.contenders for r in results)]
    w(f"\nMachine: {machine_info(threads)}\n")
    w(
        "Load average (1, 5, 15 min): at start "
        + ", ".join(f"{v:.2f}" for v in load[0])
        + "; at end "
        + ", ".join(f"{v:.2f}" for v in load[1])
        + f"; the run took {minutes:.1f} min\n"
    )
    w(
        f"Model: SAIMP, seq {MODEL.seq_len} x {MODEL.n_features} features, d_model "
        f"{MODEL.d_model}, {MODEL.n_heads} heads, {MODEL.n_layers} layers, d_ff {MODEL.d_ff}, "
        f"dropout {MODEL.dropout}; AdamW; weighted CrossEntropyLoss. Per configuration: "
        f"about {args.samples:,} training samples per contender and round; a warm-up (every "
        f"worker runs every contender once), then {args.repeats} rounds in which the "
        f"contenders take turns in time slices of {TIME_SLICE_S} s.\n"
        "train(): log_every 100, console lines to a console file and the run log, JSONL + "
        f"PNG, a `last` checkpoint every {ckpt_every} windows (the default; inside the "
        "training time when one falls due), best and last checkpoints at the epoch's end.\n\n"
    )

    w(f"Training samples/s, median over rounds (ratio to {PLAIN}):\n\n")
    w("| contender | " + " | ".join(r.setup.name for r in results) + " |\n")
    w("|---" + "|---:" * len(results) + "|\n")
    for c in contenders:
        cells = []
        for r in results:
            m, ratio = r.median(c), r.ratio(c)
            cells.append(f"{m:,.0f} ({ratio:.2f})" if m and ratio else "-")
        w(f"| {c} | " + " | ".join(cells) + " |\n")
    w(
        "| rounds kept / run | "
        + " | ".join(f"{len(r.rounds)} / {r.rounds_run}" for r in results)
        + " |\n| other load in kept rounds, cores (max) | "
        + " | ".join(f"{max(x.foreign for x in r.rounds):.2f}" for r in results)
        + " |\n"
    )
    w(
        f"\nratio: median over rounds of contender / {PLAIN}, trained through the same "
        "seconds (turns in time slices).\n"
    )

    w("\nSpread of the per-round ratios (min-max):\n\n")
    w("| contender | " + " | ".join(r.setup.name for r in results) + " |\n")
    w("|---" + "|---" * len(results) + "|\n")
    for c in contenders:
        if c == PLAIN:
            continue
        cells = []
        for r in results:
            ratios = r.ratios(c)
            cells.append(f"{min(ratios):.2f}-{max(ratios):.2f}" if ratios else "-")
        w(f"| {c} | " + " | ".join(cells) + " |\n")

    exact = [r for r in results if EXACT in r.contenders and PLAIN in r.contenders]
    if exact:
        w(
            "\nExact accumulation vs loss/K, per optimizer step (plain loops, same "
            "micro-batches):\n\n"
            "| config | steps | loss/K ms/step | exact ms/step | exact - loss/K | "
            "exact / loss/K | normaliser alone |\n|---|---:|---:|---:|---:|---:|---:|\n"
        )
        for r in exact:
            naive, ex = r.ms_per_step(PLAIN), r.ms_per_step(EXACT)
            diff = statistics.median(e - n for e, n in zip(ex, naive, strict=True))
            ratio = statistics.median(e / n for e, n in zip(ex, naive, strict=True))
            w(
                f"| {r.setup.name} | {r.steps} | {statistics.median(naive):.2f} | "
                f"{statistics.median(ex):.2f} | {diff:+.2f} ms | {ratio:.3f} | "
                f"{r.normaliser_us:.0f} us |\n"
            )
        w(
            "Differences and ratios: medians of per-round values. Normaliser alone: what "
            "train() computes from a window's labels before its first forward pass "
            "(`WindowLoss.normaliser` per micro-batch, summed on the host; timeit).\n"
        )

    fixed = [c for c in (PINNED, AUTO, LIGHTNING) if c in contenders]
    if fixed:
        w(
            "\nFixed cost per epoch outside the training time, median s (train(): set-up, "
            f"validation of {VAL_SAMPLES} samples, best and last checkpoints, epoch record, "
            "PNG; Lightning: Trainer set-up and teardown):\n\n"
        )
        w("| contender | " + " | ".join(r.setup.name for r in results) + " |\n")
        w("|---" + "|---:" * len(results) + "|\n")
        for c in fixed:
            cells = []
            for r in results:
                s = r.fixed_seconds(c)
                cells.append(f"{s:.2f}" if s is not None else "-")
            w(f"| {c} | " + " | ".join(cells) + " |\n")

    if PINNED in contenders:
        shares = []
        for r in results:
            step_ms = statistics.median(r.ms_per_step(PINNED))
            shares.append(f"{r.setup.name} {save_ms / (ckpt_every * step_ms) * 100:.2f}%")
        w(
            f"\nOne `last` checkpoint (model, AdamW state, RNG; fsynced, renamed) takes "
            f"{save_ms:.1f} ms; one every {ckpt_every} windows costs train(), pinned: "
            + ", ".join(shares)
            + " of its training time.\n"
        )

    w(
        "\nOne AdamW step on this model, median ms (alternated): "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in adamw_ms.items())
        + ". train() contenders use "
        + (
            "the trainer's (as `saimp train` does); the others the plain loop's.\n"
            if args.optimizer == "trainer"
            else "the plain loop's, like every contender (--optimizer same).\n"
        )
    )

    if cli_times:
        base = statistics.median(cli_times[TORCH_IMPORT])
        w(f"\nStart-up, fresh process, median of {args.cli_runs} runs (commands alternated):\n\n")
        w("| command | median s | over `import torch` |\n|---|---:|---:|\n")
        for name, values in cli_times.items():
            m = statistics.median(values)
            w(f"| `{name}` | {m:.2f} | {m - base:+.2f} |\n")

    w("\nTargets:\n")
    for line in targets(results, cli_times):
        w(f"- {line}\n")
    for note in sorted(notes):
        w(f"- note: {note}\n")
    return out.getvalue()


def targets(results: list[Result], cli_times: dict[str, list[float]] | None) -> list[str]:
    lines = []
    for r in results:
        name = r.setup.name
        pinned, auto, light = r.ratio(PINNED), r.ratio(AUTO), r.ratio(LIGHTNING)
        if pinned is not None:
            goal = 0.97 if r.setup.steps == 1 else 0.95
            verdict = "met" if pinned >= goal else "MISSED"
            lines.append(f"{name}: train() pinned {pinned:.2f} of plain (>= {goal}): {verdict}")
        for label, mine in ((PINNED, pinned), (AUTO, auto)):
            if mine is not None and light is not None:
                verdict = "met" if mine >= light else "MISSED"
                vs = r.paired(label, LIGHTNING)
                lines.append(
                    f"{name}: {label} {mine:.2f} vs Lightning {light:.2f}: {verdict} (per round, "
                    f"{label} / Lightning: median {statistics.median(vs):.2f}, "
                    f"{min(vs):.2f}-{max(vs):.2f})"
                )
        if r.setup.steps == 1 and pinned is not None and auto is not None:
            # With K = 1 both run the same micro-batch: their gap is this run's noise.
            same = r.paired(AUTO, PINNED)
            lines.append(
                f"{name}: noise floor: {AUTO} / {PINNED} (the same work at K = 1) per round: "
                f"median {statistics.median(same):.2f}, {min(same):.2f}-{max(same):.2f}"
            )
        if auto is not None and r.setup.steps > 1:
            verdict = "met" if auto >= 1.5 else "MISSED"
            ceiling = r.ratio(ONE_PASS)
            extra = f" (the plain loop in one pass per window: {ceiling:.2f})" if ceiling else ""
            lines.append(f"{name}: train() auto {auto:.2f} x plain (>= 1.5): {verdict}{extra}")
    if cli_times:
        over = statistics.median(cli_times[HELP]) - statistics.median(cli_times[TORCH_IMPORT])
        verdict = "met" if over <= 0.3 else "MISSED"
        lines.append(f"--help {over:+.2f} s over import torch (<= 0.3 s): {verdict}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--quick", action="store_true", help="a short smoke run")
    p.add_argument(
        "--configs",
        nargs="+",
        type=Setup.parse,
        metavar="BxK:PREC",
        help=f"configurations (default: {' '.join(DEFAULT_SETUPS)})",
    )
    p.add_argument(
        "--contenders",
        nargs="+",
        choices=list(CONTENDER_KEYS),
        default=list(CONTENDER_KEYS),
        help="which to run (default: all; the plain loop is always run, as the anchor)",
    )
    p.add_argument("--samples", type=int, help="samples per contender and round (1500; quick 300)")
    p.add_argument("--repeats", type=int, help="measured rounds, at least 3 (5; quick 3)")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (2)")
    p.add_argument(
        "--ckpt-every",
        type=int,
        default=TRAINER_CFG.train.checkpoint_every_windows,
        help="train(): a `last` checkpoint every N windows (default: the config's, %(default)s)",
    )
    p.add_argument(
        "--optimizer",
        choices=("trainer", "same"),
        default="trainer",
        help="train()'s optimizer: the one the trainer builds (fused AdamW; default), or the "
        "plain loop's AdamW, to see the loop's own cost",
    )
    p.add_argument("--cli-runs", type=int, help="runs of each start-up command (5; quick 2)")
    p.add_argument("--no-cli", action="store_true", help="skip the start-up timing")
    p.add_argument(
        "--max-wait",
        type=float,
        default=240.0,
        help="seconds the whole run may wait for the rest of the machine to quiet down "
        "before rounds (%(default)s)",
    )
    args = p.parse_args(argv)
    setups = args.configs or [Setup.parse(s) for s in DEFAULT_SETUPS]
    args.samples = args.samples or (300 if args.quick else 1500)
    args.repeats = args.repeats or (3 if args.quick else 5)
    args.cli_runs = args.cli_runs or (2 if args.quick else 5)
    if args.repeats < 3:
        p.error("--repeats must be at least 3")
    torch.set_num_threads(args.threads)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # close the workers on the way out
    started = time.perf_counter()

    chosen = {CONTENDER_KEYS[key] for key in args.contenders} | {PLAIN}
    contenders = [c for c in CONTENDERS if c in chosen]
    notes: set[str] = set()
    if LIGHTNING in contenders:
        try:
            import pytorch_lightning  # noqa: F401  (imported before any measurement)
        except ImportError:
            contenders.remove(LIGHTNING)
            notes.add("Lightning left out: install it with pip install -e '.[bench]'")

    load_start = os.getloadavg()
    cli_times = None
    if not args.no_cli:
        py = sys.executable
        commands = {
            TORCH_IMPORT: [py, "-c", "import torch"],
            HELP: [py, "-m", "src.modelling.train", "--help"],
        }
        if LIGHTNING in contenders:
            commands[PL_IMPORT] = [py, "-c", "import pytorch_lightning"]
        print(f"start-up timing, {args.cli_runs} runs each", file=sys.stderr, flush=True)
        cli_times = time_commands(commands, args.cli_runs)

    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="saimp_throughput_") as tmp:
        print("starting one worker process per contender", file=sys.stderr, flush=True)
        pool = Workers(
            len(contenders), args.threads, Path(tmp), args.max_wait, args.optimizer == "trainer"
        )
        try:
            for setup in setups:
                windows = windows_per_epoch(setup, args.samples)
                print(f"{setup.name}: {windows} windows per epoch", file=sys.stderr, flush=True)
                results.append(
                    measure(setup, contenders, pool, args.samples, args.repeats, args.ckpt_every)
                )
        finally:
            pool.close()
        notes |= pool.notes
        if pool.waited_s:
            notes.add(f"waited {pool.waited_s:.0f} s in all for other work to finish")
        save_ms = last_checkpoint_ms(Path(tmp))
    adamw_ms = optimizer_step_ms()
    minutes = (time.perf_counter() - started) / 60
    print(
        report(
            results,
            cli_times,
            args.ckpt_every,
            save_ms,
            adamw_ms,
            notes,
            args.threads,
            args,
            (load_start, os.getloadavg()),
            minutes,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
