"""Flags people can guess (issue 13 item 6): -m/--model on every model command, choice lists that --help shows,
--threads on eval, and `bsr --help` without importing torch."""
from __future__ import annotations

import subprocess
import sys

import pytest

from bsr_cli.cli import main


def test_help_does_not_import_torch():
    code = ("import sys; from bsr_cli.cli import main; rc = main(['--help']);"
            "print(rc, 'torch' in sys.modules, 'numpy' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "0 False False"


@pytest.mark.parametrize("command,choices", [
    ("upscale", ["<auto|torch|onnx|bitpack>", "<auto|png|jpg|jpeg|webp>", "<bicubic|model>", "-m,-n", "--reference"]),
    ("eval", ["<auto|torch|onnx|bitpack>", "-m", "--threads"]),
    ("profile", ["auto|torch|onnx|bitpack", "<flops|macs>", "-m", "--threads"]),
    ("export", ["-m,-n", "--threads"]),
])
def test_help_lists_choices_and_short_model_flag(command, choices, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich wraps help to the terminal width
    assert main([command, "--help"]) == 0
    text = capsys.readouterr().out
    for c in choices:
        assert c in text, (command, c)


def test_bad_choice_is_a_usage_error(capsys):
    assert main(["profile", "--convention", "bops"]) == 2
    assert "'bops' is not one of 'flops', 'macs'" in capsys.readouterr().err
    assert main(["upscale", "x.png", "--backend", "gpu"]) == 2
    assert "'gpu' is not one of 'auto', 'torch', 'onnx', 'bitpack'" in capsys.readouterr().err


def test_openmp_threads_wait_passively_unless_the_user_says_otherwise():
    """import bsr_cli sets OMP_WAIT_POLICY=PASSIVE before torch loads libgomp (2.5-3.7x faster bitpack on a busy
    machine, docs/backend.md); a value the user set is kept."""
    import os
    import subprocess
    import sys

    code = "import bsr_cli, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "PASSIVE"
    out = subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "ACTIVE"
