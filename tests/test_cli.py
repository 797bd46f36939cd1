"""`saimp`: one command whose subcommands are the modules' own entry points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from src.cli import COMMANDS, main
from src.core.errors import run_cli

REPO = Path(__file__).resolve().parents[1]


def test_help_lists_every_subcommand(capsys):
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in ("synthetic", "prepare", "train", "evaluate", "plot"):
        assert f"  {name} " in out
    assert main([]) == 2  # no command: the same list, and a usage exit code


def test_unknown_subcommand_is_one_line(capsys):
    assert run_cli(main, ["trian"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        "error: unknown command 'trian'; choose one of "
        + ", ".join(COMMANDS)
        + " (see saimp --help)"
    ]


def test_subcommand_help_names_itself_saimp(capsys):
    for name in COMMANDS:
        try:
            main([name, "--help"])
        except SystemExit as done:
            assert done.code == 0
        assert capsys.readouterr().out.startswith(f"usage: saimp {name} ")


def test_the_console_script_is_installed():
    script = Path(sys.executable).with_name("saimp")
    result = subprocess.run(
        [str(script), "evaluate", "--checkpoint", "nowhere.pth"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: --checkpoint: nowhere.pth not found")
