"""Shared test fixtures."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load_benchmark(name: str):
    """benchmarks/<name>.py as a module (the benchmarks are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(f"{name}_bench", BENCHMARKS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.fixture
def one_torch_thread():
    """Small tensors: one torch thread is faster and kinder to the shared cores."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def e2fif_checkpoint(tmp_path_factory):
    """A random-init e2fif x4 packed checkpoint (stands in for pretrained weights)."""
    import torch

    from bsr_cli.checkpoint import save_checkpoint
    from bsr_cli.models import create_model

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "e2fif_x4.safetensors"
    save_checkpoint(create_model("e2fif", 4).eval(), path, {"model": "e2fif", "scale": 4})
    return path


@pytest.fixture
def interrupt_training(monkeypatch):
    """interrupt_training(n): `bsr train`'s step raises KeyboardInterrupt after n steps (a crash mid-run; the
    state on disk is the last --save-every one); interrupt_training(None) restores the real step."""
    from bsr_cli import train as T

    real = T.train_step

    def arm(n):
        if n is None:
            monkeypatch.setattr(T, "train_step", real)
            return
        calls = {"n": 0}

        def step(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > n:
                raise KeyboardInterrupt
            return real(*args, **kwargs)

        monkeypatch.setattr(T, "train_step", step)

    return arm
