"""`saimp predict` and the prediction API (`src.modelling.prediction`).

One small synthetic market (two symbols of 15-minute bars over two monthly files each,
with a missing bar, a longer gap and a gap across the file boundary in one symbol), its
lake, and a randomly initialised checkpoint with a real sidecar. The predictions are
checked against what evaluation computes for the same windows (through the training
loader), against the lake scan's own window count, and raw candles against the lake.
pandas is not a dependency: the tests use Arrow and numpy (the DataFrame test skips
without pandas).
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from src.config import Config, DataConfig, ModelConfig, PathsConfig, TrainConfig
from src.core import constants as C
from src.core.errors import run_cli
from src.data.dataloader import build_data
from src.data.features import WARMUP_BARS
from src.data.lake import run_lengths as lake_run_lengths
from src.data.lake import scan_lake
from src.data.normalize import Normalizer
from src.data.prepare import prepare_lake
from src.data.split import SplitBounds, iso, parse_date_ms
from src.data.synthetic import write_raw
from src.modelling.checkpointing.best import save_best, sidecar_path
from src.modelling.checkpointing.sidecar import sidecar_for
from src.modelling.evaluation.inference import eval_config, split_bounds_of
from src.modelling.predict import main
from src.modelling.prediction import load_model, predict
from src.modelling.prediction.calibration import apply_calibration
from src.modelling.prediction.windows import gather_windows, run_lengths, window_ends
from src.modelling.training import components

SEQ_LEN = 8
BAR_MS = 15 * 60_000
MAX_GAP_MS = 1.5 * BAR_MS
NAMES = list(C.CLASS_NAMES)
P_COLS = [f"p_{n}" for n in NAMES]
README = Path(__file__).resolve().parents[1] / "README.md"
FAR = SplitBounds(2**62, 2**62)  # no split: every complete window counts


# ---------------------------------------------------------------------------- fixtures


def _drop_rows(path: Path, drop: np.ndarray) -> None:
    table = pq.read_table(path)
    keep = np.ones(table.num_rows, bool)
    keep[drop] = False
    pq.write_table(table.filter(pa.array(keep)), path)


@pytest.fixture(scope="module")
def market(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("predict")
    raw = root / "raw"
    write_raw(raw, n_bars=4000, seed=11, bar_minutes=15, n_symbols=2)
    # SYNTH1: a missing bar (2 intervals > max_gap 1.5), a 10-bar gap, and the last 3
    # bars of January missing (a gap across the file boundary).
    jan = raw / "SYNTH1_2024-01.parquet"
    n_jan = pq.read_metadata(jan).num_rows
    _drop_rows(jan, np.r_[700, 1500:1510, n_jan - 3 : n_jan])
    lake = root / "lake"
    prepare_lake(raw, lake, row_group_rows=512, log=lambda _: None)
    cfg = Config(
        paths=PathsConfig(data_dir=lake, checkpoint=root / "ckpt" / "model.pth"),
        data=DataConfig(seq_len=SEQ_LEN, val_fraction=0.2, test_fraction=0.2),
        model=ModelConfig(d_model=8, n_heads=2, n_layers=1, d_ff=16, dropout=0.0),
        train=TrainConfig(batch_size=64),
    )
    data = build_data(cfg)
    torch.manual_seed(0)
    model = components.build_model(cfg, data.index.num_features)
    with torch.no_grad():  # varied predictions rather than one class everywhere
        model.head[-1].weight.mul_(30.0)
    save_best(model, cfg.paths.checkpoint, {**sidecar_for(cfg, data, model), "epoch": 2})
    return {"root": root, "raw": raw, "lake": lake, "checkpoint": cfg.paths.checkpoint}


@dataclass
class Preds:
    """A predictions table as numpy columns."""

    symbol: np.ndarray
    ms: np.ndarray
    p: np.ndarray
    """(N, 4) float32"""
    predicted: np.ndarray
    decision: np.ndarray

    @classmethod
    def of(cls, table: pa.Table) -> Preds:
        return cls(
            np.array(table.column("symbol").to_pylist(), dtype=object),
            table.column("timestamp").cast(pa.int64()).to_numpy(),
            np.stack([table.column(c).to_numpy() for c in P_COLS], axis=1),
            np.array(table.column("predicted").to_pylist(), dtype=object),
            np.array(table.column("decision").to_pylist(), dtype=object),
        )

    def __len__(self) -> int:
        return len(self.ms)

    def key_list(self) -> list[tuple[str, int]]:
        return list(zip(self.symbol.tolist(), self.ms.tolist(), strict=True))

    def at(self, keys: list[tuple[str, int]]) -> np.ndarray:
        """Row numbers of `keys`."""
        where = {k: i for i, k in enumerate(self.key_list())}
        return np.array([where[k] for k in keys], np.int64)


def run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = run_cli(main, argv)
    out, err = capsys.readouterr()
    return code, out, err


def source_args(market: dict, source: str) -> list[str]:
    flag = "--data-dir" if source == "lake" else "--raw-dir"
    return ["--checkpoint", str(market["checkpoint"]), flag, str(market[source])]


def cli_predict(market: dict, out: Path, capsys, *extra: str, source: str = "lake") -> Preds:
    code, stdout, err = run([*source_args(market, source), "--out", str(out), *extra], capsys)
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out)
    return Preds.of(pq.read_table(out))


@pytest.fixture(scope="module")
def full(market: dict, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Whole-data predictions from the lake and from the raw candles (and their files)."""
    out = tmp_path_factory.mktemp("full")
    found: dict = {}
    for source in ("lake", "raw"):
        path = out / f"{source}.parquet"
        assert run_cli(main, [*source_args(market, source), "--out", str(path)]) == 0
        found[source] = Preds.of(pq.read_table(path))
        found[f"{source}_path"] = path
    return found


def sidecar_of(market: dict) -> dict:
    return json.loads(sidecar_path(market["checkpoint"]).read_text())


def lake_rows(lake: Path) -> pa.Table:
    return pa.concat_tables(
        pq.read_table(p, columns=["timestamp", "symbol", "horizon_end"])
        for p in sorted(lake.glob("*.parquet"))
    )


# ---------------------------------------------------------------------------- windows


def test_run_lengths_break_at_gaps_and_non_finite_rows() -> None:
    ts = np.array([0, 1, 2, 4, 5, 6, 7, 8, 9], np.int64) * BAR_MS  # a missing bar at 3
    usable = np.ones(9, bool)
    assert run_lengths(ts, usable, MAX_GAP_MS).tolist() == [1, 2, 3, 1, 2, 3, 4, 5, 6]
    assert (
        run_lengths(ts, usable, MAX_GAP_MS).tolist() == lake_run_lengths(ts, 0, MAX_GAP_MS).tolist()
    )
    usable[5] = False
    assert run_lengths(ts, usable, MAX_GAP_MS).tolist() == [1, 2, 3, 1, 2, 0, 1, 2, 3]
    assert window_ends(ts, usable, seq_len=3, max_gap_ms=MAX_GAP_MS).tolist() == [2, 8]
    # A gap of exactly max_gap_bars intervals is not a break (the loader's rule: > only).
    assert run_lengths(np.array([0, 3, 4]), np.ones(3, bool), 3).tolist() == [1, 2, 3]


def test_gather_windows_copies_the_rows_ending_at_each_end() -> None:
    x = np.arange(30, dtype=np.float32).reshape(10, 3)
    w = gather_windows(x, np.array([2, 9]), 3)
    assert w.shape == (2, 3, 3) and w.flags.c_contiguous
    np.testing.assert_array_equal(w[0], x[0:3])
    np.testing.assert_array_equal(w[1], x[7:10])


# ---------------------------------------------------------------------------- parity


def evaluate_probabilities(market: dict, split: str) -> dict[tuple[str, int], np.ndarray]:
    """The split's windows and probabilities through evaluate's path: its config, the
    training loader in fixed order, the model in batches; by (symbol, ms)."""
    model, sidecar = load_model(market["checkpoint"])
    bounds = split_bounds_of(sidecar, sidecar_path(market["checkpoint"]))
    cfg = eval_config(sidecar, market["lake"], 64, bounds)
    data = build_data(cfg, splits=(split,), normalizer=Normalizer.from_dict(sidecar["normalizer"]))
    ds = getattr(data, split)
    ds.shuffle, ds.with_ids = False, True
    ids, logits = [], []
    with torch.no_grad():
        for x, _y, batch_ids in getattr(data, f"{split}_dl"):
            logits.append(model(x).float().numpy())
            ids.append(batch_ids.numpy())
    probs = apply_calibration(np.concatenate(logits), sidecar.get("calibration"))
    files = data.index.files
    ts_of = [
        pq.read_table(f.path, columns=["timestamp"]).column(0).cast(pa.int64()).to_numpy()
        for f in files
    ]
    out = {}
    for i, window_id in enumerate(np.concatenate(ids).tolist()):
        fi, row = divmod(window_id, 2**32)
        out[(files[fi].symbol, int(ts_of[fi][row]))] = probs[i]
    return out


def max_difference(got: Preds, want: dict[tuple[str, int], np.ndarray]) -> float:
    keys = list(want)
    return float(np.abs(got.p[got.at(keys)] - np.stack([want[k] for k in keys])).max())


def test_test_split_equals_evaluate(market: dict, tmp_path: Path, capsys) -> None:
    test_start = iso(sidecar_of(market)["split"]["test_start_ms"])
    got = cli_predict(market, tmp_path / "t.parquet", capsys, "--from", test_start)
    want = evaluate_probabilities(market, "test")
    assert len(want) > 100
    assert set(got.key_list()) == set(want)  # the test split purges nothing at its end
    assert max_difference(got, want) < 1e-6


def test_val_split_windows_are_the_range_less_the_purged(
    market: dict, tmp_path: Path, capsys
) -> None:
    s = sidecar_of(market)["split"]
    got = cli_predict(
        market,
        tmp_path / "v.parquet",
        capsys,
        "--from",
        iso(s["val_start_ms"]),
        "--to",
        iso(s["test_start_ms"]),
    )
    assert got.ms.min() >= s["val_start_ms"] and got.ms.max() < s["test_start_ms"]
    want = evaluate_probabilities(market, "val")
    assert set(want) <= set(got.key_list())
    assert max_difference(got, want) < 1e-6
    # The windows predict adds are exactly those whose label horizon crosses test_start.
    rows = lake_rows(market["lake"])
    horizon = dict(
        zip(
            zip(
                rows.column("symbol").to_pylist(),
                rows.column("timestamp").cast(pa.int64()).to_pylist(),
                strict=True,
            ),
            rows.column("horizon_end").cast(pa.int64()).to_pylist(),
            strict=True,
        )
    )
    extra = set(got.key_list()) - set(want)
    assert extra and all(horizon[k] >= s["test_start_ms"] for k in extra)
    purged = {k for k in got.key_list() if horizon[k] >= s["test_start_ms"]}
    assert extra == purged


def test_every_window_of_the_lake_once_and_none_across_a_gap(market: dict, full: dict) -> None:
    got = full["lake"]
    index = scan_lake(market["lake"], seq_len=SEQ_LEN, max_gap_bars=1.5, bounds=FAR)
    assert len(got) == int(index.units.windows.sum())  # the training loader's own count
    assert len(set(got.key_list())) == len(got)
    rows = lake_rows(market["lake"])
    symbols = np.array(rows.column("symbol").to_pylist(), dtype=object)
    all_ms = rows.column("timestamp").cast(pa.int64()).to_numpy()
    for symbol in ("SYNTH1", "SYNTH2"):
        ts = all_ms[symbols == symbol]
        ends = np.searchsorted(ts, got.ms[got.symbol == symbol])
        assert (ends >= SEQ_LEN - 1).all()
        steps = np.stack([ts[ends - k] - ts[ends - k - 1] for k in range(SEQ_LEN - 1)])
        assert steps.max() <= MAX_GAP_MS, symbol
    # SYNTH1's gaps cost it windows that SYNTH2 has
    assert (got.symbol == "SYNTH1").sum() < (got.symbol == "SYNTH2").sum()


def test_files_shorter_than_a_window_pass_their_rows_on(
    market: dict, full: dict, tmp_path: Path, capsys
) -> None:
    """SYNTH2's February cut into files of 3, 2, 4 rows and the rest: windows reach back
    over several files, whether the file before was just read or not (--from)."""
    lake = tmp_path / "lake"
    shutil.copytree(market["lake"], lake)
    feb = pq.read_table(lake / "SYNTH2_2024-02.parquet")
    (lake / "SYNTH2_2024-02.parquet").unlink()
    cuts = [0, 3, 5, 9, feb.num_rows]
    for k, (a, b) in enumerate(itertools.pairwise(cuts)):
        pq.write_table(feb.slice(a, b - a), lake / f"SYNTH2_2024-02-part{k}.parquet")
    first_ms = feb.column("timestamp").cast(pa.int64()).to_numpy()
    market = {**market, "lake": lake}
    whole = full["lake"]
    got = cli_predict(market, tmp_path / "all.parquet", capsys)
    assert got.key_list() == whole.key_list()
    assert np.abs(got.p - whole.p).max() < 1e-6
    start = iso(int(first_ms[10]))  # in the last part: its halo is in the three before
    got = cli_predict(market, tmp_path / "from.parquet", capsys, "--from", start)
    inside = whole.ms >= first_ms[10]
    assert got.key_list() == [k for k, i in zip(whole.key_list(), inside, strict=True) if i]
    assert np.abs(got.p - whole.p[inside]).max() < 1e-6
    # --latest when the last file has no complete window (2 rows after a missing bar):
    # the last window ends in the file before it.
    n = feb.num_rows
    pq.write_table(feb.slice(9, n - 12), lake / "SYNTH2_2024-02-part3.parquet")
    pq.write_table(feb.slice(n - 2), lake / "SYNTH2_2024-02-part9.parquet")
    latest = cli_predict(market, tmp_path / "latest.parquet", capsys, "--latest")
    want = [whole.key_list()[int(np.flatnonzero(whole.symbol == "SYNTH1")[-1])]]
    want.append(("SYNTH2", int(first_ms[n - 4])))
    assert latest.key_list() == want
    assert np.abs(latest.p - whole.p[whole.at(want)]).max() < 1e-6


def test_raw_candles_predict_what_the_lake_predicts(full: dict) -> None:
    lake, raw = full["lake"], full["raw"]
    keys = lake.key_list()
    assert set(keys) <= set(raw.key_list())
    at = raw.at(keys)
    assert np.abs(raw.p[at] - lake.p).max() < 1e-6
    assert (raw.decision[at] == lake.decision).all()
    # Raw candles also predict the last bars, which the lake cannot label (no horizon
    # ahead of them): the live use.
    for symbol in ("SYNTH1", "SYNTH2"):
        assert raw.ms[raw.symbol == symbol].max() > lake.ms[lake.symbol == symbol].max()


def test_a_date_range_of_raw_candles_is_those_rows_of_the_whole(
    market: dict, full: dict, tmp_path: Path, capsys
) -> None:
    whole = full["raw"]
    lo, hi = "2024-01-20T03:00", "2024-02-02"
    part = cli_predict(
        market, tmp_path / "r.parquet", capsys, "--from", lo, "--to", hi, source="raw"
    )
    lo_ms, hi_ms = parse_date_ms(lo, "lo"), parse_date_ms(hi, "hi")
    inside = (whole.ms >= lo_ms) & (whole.ms < hi_ms)
    assert len(part) > 0 and part.key_list() == [
        k for k, i in zip(whole.key_list(), inside, strict=True) if i
    ]
    assert np.abs(part.p - whole.p[inside]).max() < 1e-6


@pytest.mark.parametrize("source", ["raw", "lake"])
def test_latest_is_the_last_row_of_a_full_prediction(
    source: str, market: dict, full: dict, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "latest.parquet"
    code, stdout, err = run([*source_args(market, source), "--out", str(out), "--latest"], capsys)
    assert code == 0, err
    assert stdout.strip().splitlines()[-1] == str(out)
    assert len(re.findall(r"latency \d+\.\d ms", stdout)) == 2
    latest, whole = Preds.of(pq.read_table(out)), full[source]
    last = [int(np.flatnonzero(whole.symbol == s)[-1]) for s in ("SYNTH1", "SYNTH2")]
    assert latest.key_list() == [whole.key_list()[i] for i in last]
    assert np.abs(latest.p - whole.p[last]).max() < 1e-6


# ---------------------------------------------------------------------------- contract


@pytest.mark.parametrize("source", ["raw", "lake"])
def test_columns_dtypes_probabilities_and_argmax(source: str, full: dict) -> None:
    schema = pq.read_schema(full[f"{source}_path"])
    assert schema.names == ["timestamp", "symbol", *P_COLS, "predicted", "decision"]
    assert schema.field("timestamp").type == pa.timestamp("ms", tz="UTC")
    assert all(schema.field(c).type == pa.float32() for c in P_COLS)
    assert all(schema.field(c).type == pa.string() for c in ("symbol", "predicted", "decision"))
    got = full[source]
    assert got.p.dtype == np.float32
    assert (got.p >= 0).all() and (got.p <= 1).all()
    assert np.abs(got.p.sum(axis=1, dtype=np.float64) - 1).max() <= 4 * np.finfo(np.float32).eps
    assert (got.predicted == np.array(NAMES, dtype=object)[got.p.argmax(axis=1)]).all()
    assert (got.decision == got.predicted).all()  # no decision rule in the sidecar: argmax
    assert len(set(got.predicted)) >= 3, "the checks need varied predictions"
    order = np.lexsort((got.ms, got.symbol.astype(str)))
    assert (order == np.arange(len(got))).all()  # by symbol, then time


# ---------------------------------------------------------------------------- Python API


def raw_candles(market: dict) -> pa.Table:
    return pa.concat_tables(pq.read_table(p) for p in sorted(market["raw"].glob("*.parquet")))


def test_api_on_an_arrow_table_equals_the_command(market: dict, full: dict) -> None:
    model, sidecar = load_model(market["checkpoint"])
    table = predict(model, sidecar, raw_candles(market))
    got = Preds.of(table)
    assert table.schema == pq.read_schema(full["raw_path"]).remove_metadata()
    assert got.key_list() == full["raw"].key_list()
    assert np.abs(got.p - full["raw"].p).max() < 1e-6
    latest = Preds.of(predict(model, sidecar, raw_candles(market), latest=True, end="2024-02-01"))
    january = full["raw"].ms < parse_date_ms("2024-02-01", "end")
    for symbol, ms in latest.key_list():
        assert ms == full["raw"].ms[january & (full["raw"].symbol == symbol)].max()


def test_latest_looks_back_past_a_gap_at_the_end(market: dict) -> None:
    """The last 3 bars of SYNTH2 come after a missing bar: its last complete window ends
    before the gap, further back than the short tail --latest computes first."""
    candles = raw_candles(market)
    symbol = np.array(candles.column("symbol").to_pylist(), dtype=object)
    last2 = np.flatnonzero(symbol == "SYNTH2")
    keep = np.ones(candles.num_rows, bool)
    keep[last2[-4]] = False
    candles = candles.filter(pa.array(keep))
    model, sidecar = load_model(market["checkpoint"])
    whole = Preds.of(predict(model, sidecar, candles))
    latest = Preds.of(predict(model, sidecar, candles, latest=True))
    last = [int(np.flatnonzero(whole.symbol == s)[-1]) for s in ("SYNTH1", "SYNTH2")]
    assert latest.key_list() == [whole.key_list()[i] for i in last]
    assert np.abs(latest.p - whole.p[last]).max() < 1e-6
    ts2 = candles.column("timestamp").cast(pa.int64()).to_numpy()[symbol[keep] == "SYNTH2"]
    assert latest.ms[1] == ts2[-4]  # the bar before the gap


def test_a_failed_run_leaves_an_earlier_output_whole(market: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "p.parquet"
    out.write_bytes(b"an earlier output")
    code, _, err = run(
        [*source_args(market, "lake"), "--out", str(out), "--from", "2030-01-01"], capsys
    )
    assert code == 2 and "no complete window" in err
    assert out.read_bytes() == b"an earlier output"
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]  # no temporary left


def test_api_on_a_pandas_dataframe(market: dict, full: dict) -> None:
    pytest.importorskip("pandas")
    model, sidecar = load_model(market["checkpoint"])
    frame = raw_candles(market).to_pandas()
    got = Preds.of(predict(model, sidecar, frame.iloc[::-1].sort_values(["symbol", "timestamp"])))
    assert got.key_list() == full["raw"].key_list()
    assert np.abs(got.p - full["raw"].p).max() < 1e-6
    assert list(predict(model, sidecar, frame, latest=True).to_pandas().columns)[0] == "timestamp"


def readme_snippet() -> str:
    text = README.read_text()
    section = text[text.index("## Predictions") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_readme_snippet_runs(market: dict, capsys) -> None:
    code = readme_snippet()
    assert "load_model" in code and "predict(" in code
    for readme, here in (
        ("data/saimp_best.pth", str(market["checkpoint"])),
        ("data/raw/synthetic", str(market["raw"])),
        ("2024-05-01", "2024-02-01"),  # this market's dates
        ("2024-05-02", "2024-02-02"),
    ):
        assert readme in code
        code = code.replace(readme, here)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)  # the README's own code
    table, latest = namespace["table"], namespace["latest"]
    # 96 bars a day per symbol, less SYNTH1's first 7 of Feb 1 (the gap before them)
    assert table.num_rows == 2 * 96 - (SEQ_LEN - 1)
    assert table.column_names[:2] == ["timestamp", "symbol"]
    assert latest.column("symbol").to_pylist() == ["SYNTH1", "SYNTH2"]
    assert "p_SuperLong" in capsys.readouterr().out


# ---------------------------------------------------------------------------- errors


def _short_raw(tmp_path: Path) -> Path:
    raw = tmp_path / "short_raw"
    write_raw(raw, n_bars=WARMUP_BARS + SEQ_LEN - 1, seed=1, bar_minutes=15)
    return raw


@pytest.mark.parametrize(
    "case, needle",
    [
        ("too_little_history", f"has {WARMUP_BARS + SEQ_LEN - 1} bars"),
        ("lake_other_interval", "bar interval differs"),
        ("raw_other_interval", "1-minute bars"),
        ("raw_other_features", "not the ones computed from candles"),
        ("no_sidecar", "sidecar"),
        ("bad_from", "--from"),
        ("to_before_from", "must be after --from"),
        ("no_source", "--raw-dir"),
        ("empty_range", "no complete window"),
    ],
)
def test_user_errors_are_one_line_exit_2_and_write_nothing(
    case: str, needle: str, market: dict, tmp_path: Path, capsys
) -> None:
    ckpt = tmp_path / "model.pth"
    ckpt.write_bytes(market["checkpoint"].read_bytes())
    sidecar = sidecar_of(market)
    out = tmp_path / "out" / "p.parquet"
    argv = ["--checkpoint", str(ckpt), "--data-dir", str(market["lake"]), "--out", str(out)]
    if case == "too_little_history":
        argv[2:4] = ["--raw-dir", str(_short_raw(tmp_path))]
    elif case == "lake_other_interval":
        sidecar["bar_ms"] = 60_000
    elif case == "raw_other_interval":
        sidecar["bar_ms"] = 60_000
        argv[2:4] = ["--raw-dir", str(market["raw"])]
    elif case == "raw_other_features":  # a model of a lake with a feature renamed
        for names in (sidecar["features"], sidecar["normalizer"]["features"]):
            names[names.index("imbalance")] = "order_flow"
        argv[2:4] = ["--raw-dir", str(market["raw"])]
    elif case == "bad_from":
        argv += ["--from", "2024-13-45"]
    elif case == "to_before_from":
        argv += ["--from", "2024-02-01", "--to", "2024-01-01"]
    elif case == "no_source":
        del argv[2:4]
    elif case == "empty_range":
        argv += ["--from", "2030-01-01"]
    if case != "no_sidecar":
        sidecar_path(ckpt).write_text(json.dumps(sidecar))
    code, _, err = run(argv, capsys)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary left


def test_too_little_history_names_the_symbol_and_both_counts(
    market: dict, tmp_path: Path, capsys
) -> None:
    raw = _short_raw(tmp_path)
    code, _, err = run(
        [
            "--checkpoint",
            str(market["checkpoint"]),
            "--raw-dir",
            str(raw),
            "--out",
            str(tmp_path / "x.parquet"),
        ],
        capsys,
    )
    assert code == 2
    need = WARMUP_BARS + SEQ_LEN - 1
    assert f"symbol SYNTH has {need} bars" in err
    assert f"needs the {need} bars before the predicted one" in err and f"{need + 1} in all" in err
    # One bar more is enough: one window.
    write_raw(raw, n_bars=need + 1, seed=1, bar_minutes=15)
    got = cli_predict({**market, "short": raw}, tmp_path / "y.parquet", capsys, source="short")
    assert len(got) == 1


def test_latest_never_replaces_a_full_prediction_by_default(market: dict, capsys) -> None:
    args = ["--checkpoint", str(market["checkpoint"]), "--data-dir", str(market["lake"])]
    code, full_out, _ = run(args, capsys)
    code_latest, latest_out, _ = run([*args, "--latest"], capsys)
    assert code == code_latest == 0
    full, latest = Path(full_out.splitlines()[-1]), Path(latest_out.splitlines()[-1])
    assert full.name == "model_predictions.parquet" and latest.name == "model_latest.parquet"
    assert pq.read_metadata(full).num_rows > pq.read_metadata(latest).num_rows == 2
