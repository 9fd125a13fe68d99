"""Tests of `bsr train`: the loss falls, resume is exact, patches are aligned, bad input is one-line errors."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bsr_cli import train as T
from bsr_cli.cli import main
from bsr_cli.protocol import bicubic_downscale_uint8

BSD400 = Path(__file__).resolve().parents[1] / ".." / "shared" / "datasets" / "train" / "BSD400"

# A tiny, fast recipe: 20 iterations of 4 LR patches of 8 px at x4 (HR 32), fp32 for determinism.
FAST = ["--batch-size", "4", "--patch-size", "8", "--lr", "1e-3", "--warmup", "0", "--precision", "fp32",
        "--threads", "1", "--seed", "0", "--val-every", "0", "--log-every", "5"]


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    """Six 120x120 training images: crops of BSD400 when ../shared is there, else smooth synthetic images."""
    d = tmp_path_factory.mktemp("train")
    files = sorted(BSD400.glob("*.jpg"))[:6] if BSD400.is_dir() else []
    rng = np.random.default_rng(1)
    for i in range(6):
        if files:
            img = np.asarray(Image.open(files[i]).convert("RGB"))[100:220, 100:220]
        else:
            low = rng.random((8, 8, 3))
            img = np.asarray(Image.fromarray((low * 255).astype(np.uint8)).resize((120, 120), Image.BICUBIC))
        Image.fromarray(np.ascontiguousarray(img)).save(d / f"img{i}.png")
    return d


def _state_info(run: Path) -> dict:
    return T.read_state_info(run / T.STATE_FILE)


@pytest.fixture(scope="module")
def run20(train_dir, tmp_path_factory) -> Path:
    """`bsr train --model ebsr-light --scale 4 --iters 20` (no validation), straight through."""
    out = tmp_path_factory.mktemp("run20")
    rc = main(["train", "--model", "ebsr-light", "--scale", "4", "--iters", "20", "--train-dir", str(train_dir),
               "--out", str(out), "--save-every", "10", *FAST])
    assert rc == 0
    return out


@pytest.mark.timeout(600)
def test_train_20_iters_loss_falls(run20):
    info = _state_info(run20)
    losses = info["losses"]
    assert info["step"] == 20 and len(losses) == 20
    first, last = float(np.mean(losses[:5])), float(np.mean(losses[-5:]))
    assert last < 0.8 * first, (first, last)
    # the packed final checkpoint carries the recipe
    from bsr_cli.checkpoint import read_metadata

    meta = read_metadata(run20 / "final.safetensors")
    assert meta["model"] == "ebsr-light" and meta["scale"] == 4
    assert meta["training"]["iterations"] == 20 and meta["training"]["batch"] == 4
    assert meta["training"]["patch_hr"] == 32 and meta["training"]["precision"] == "fp32"
    assert json.loads((run20 / "summary.json").read_text())["final"].endswith("final.safetensors")


@pytest.mark.timeout(600)
def test_resume_after_interrupt_is_exact(run20, train_dir, tmp_path, interrupt_training):
    """Interrupt at step 13 (state saved at 10), resume to 20: step 20 and the same losses as straight through."""
    out = tmp_path / "run"
    interrupt_training(13)
    args = ["train", "--model", "ebsr-light", "--scale", "4", "--iters", "20", "--train-dir", str(train_dir),
            "--out", str(out), "--save-every", "10", *FAST]
    assert main(args) == 130
    assert _state_info(out)["step"] == 10
    assert main(args) == 2  # an existing run is not overwritten without --resume
    interrupt_training(None)
    assert main([*args, "--resume"]) == 0
    info = _state_info(out)
    assert info["step"] == 20
    np.testing.assert_allclose(info["losses"], _state_info(run20)["losses"], rtol=0, atol=1e-6)


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_patch_pairs_are_aligned(scale):
    """Interior of each LR patch == protocol bicubic of its HR patch (same flips/rotations on both)."""
    rng = np.random.default_rng(scale)
    hr = rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)  # noise: any misalignment shows at once
    sampler = T.PatchSampler([T.make_pair(hr, scale)], scale, patch_size=12)
    lr_b, hr_b = sampler.sample(16, rng)
    assert lr_b.shape == (16, 12, 12, 3) and hr_b.shape == (16, 12 * scale, 12 * scale, 3)
    m = 2  # the bicubic kernel reaches 2 LR pixels: beyond that the patch edge (symmetric padding) matters
    for lp, hp in zip(lr_b, hr_b):
        ref = bicubic_downscale_uint8(np.ascontiguousarray(hp), scale)
        diff = np.abs(ref[m:-m, m:-m].astype(int) - lp[m:-m, m:-m].astype(int))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.99
    # a shifted HR patch does not match: the check above can fail
    lp, hp = sampler.crop(0, 3, 4)
    _, hp_shift = sampler.crop(0, 3, 5)
    ref = bicubic_downscale_uint8(np.ascontiguousarray(hp_shift), scale)
    assert np.abs(ref[m:-m, m:-m].astype(int) - lp[m:-m, m:-m].astype(int)).mean() > 10


def test_lr_schedule_and_durations():
    cfg = T.TrainConfig("m", 4, ".", ".", iters=100, lr=1e-3, warmup=0)
    assert T.lr_at(cfg, 0, 0.0) == pytest.approx(1e-3)
    assert T.lr_at(cfg, 50, 0.5) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5))
    assert T.lr_at(cfg, 100, 1.0) == pytest.approx(1e-5)
    step = T.TrainConfig("m", 4, ".", ".", iters=100, lr=1e-3, warmup=10, schedule="step")
    assert T.lr_at(step, 4, 0.04) == pytest.approx(0.5e-3)  # warm-up 5/10
    assert T.lr_at(step, 60, 0.6) == pytest.approx(0.5e-3) and T.lr_at(step, 80, 0.8) == pytest.approx(0.25e-3)
    assert T.parse_duration("30m") == 1800 and T.parse_duration("1h30m") == 5400 and T.parse_duration("90") == 90
    with pytest.raises(T.BsrError):
        T.parse_duration("soon")


def test_compiled_training_step_matches_eager():
    """--compile: the torch.compile'd training step (forward with STE quantizers, L1, backward, Adam) gives the
    eager losses and parameters in fp32 (a 2-block, 16-channel E2FIF, 4 steps); `auto` compiles only long
    single-process runs."""
    import copy

    from bsr_cli.models.e2fif import e2fif

    torch.manual_seed(0)
    base = e2fif(4, channels=16, n_blocks=2).train()
    g = torch.Generator().manual_seed(0)
    batches = [(torch.rand(4, 3, 12, 12, generator=g), torch.rand(4, 3, 48, 48, generator=g)) for _ in range(4)]
    runs = []
    for compiled in (False, True):
        m = copy.deepcopy(base)
        opt = torch.optim.Adam(m.parameters(), lr=1e-3, betas=T.ADAM_BETAS)
        net = torch.compile(m) if compiled else m
        losses = [T.train_step(net, opt, lr, hr, torch.device("cpu"), "fp32") for lr, hr in batches]
        runs.append((losses, [p.detach().clone() for p in m.parameters()]))
    (le, pe), (lc, pc) = runs
    assert le[-1] < le[0] and lc == pytest.approx(le, rel=1e-5)
    assert max(float((a - b).abs().max()) for a, b in zip(pe, pc)) < 1e-3
    cfg = lambda **kw: T.TrainConfig("e2fif", 4, ".", ".", **kw)  # noqa: E731
    assert T.compile_wanted(cfg(time_budget=3300), False)[0] and T.compile_wanted(cfg(iters=5000), False)[0]
    assert not T.compile_wanted(cfg(iters=20), False)[0] and not T.compile_wanted(cfg(iters=5000), True)[0]
    assert T.compile_wanted(cfg(iters=20, compile="on"), False)[0]
    assert not T.compile_wanted(cfg(time_budget=3300, compile="off"), False)[0]
    with pytest.raises(T.BsrError, match="--compile"):
        cfg(iters=1, compile="maybe").check()


def test_init_from_x4_copies_head_and_body(tmp_path):
    from bsr_cli.checkpoint import save_checkpoint
    from bsr_cli.models import create_model

    torch.manual_seed(0)
    x4 = create_model("ebsr-light", 4)
    save_checkpoint(x4, tmp_path / "x4.safetensors", {"model": "ebsr-light", "scale": 4})
    torch.manual_seed(1)
    x2 = create_model("ebsr-light", 2)
    copied, skipped, _ = T.init_from_checkpoint(x2, tmp_path / "x4.safetensors", create_model, "ebsr-light")
    assert any(k.startswith("head.") for k in copied) and any(k.startswith("body.") for k in copied)
    assert skipped and all(k not in copied for k in skipped)
    for key in copied:
        if key.startswith("head."):
            assert torch.equal(x2.state_dict()[key], x4.state_dict()[key])
    b2 = [m.binarized_weight() for m in x2.modules() if hasattr(m, "binarized_weight")]
    b4 = [m.binarized_weight() for m in x4.modules() if hasattr(m, "binarized_weight")]
    assert b2 and all(torch.allclose(a, b, rtol=1e-5, atol=0) for a, b in zip(b2, b4))


def test_bad_input_is_one_line_error(tmp_path, capsys, train_dir):
    assert main(["train", "--model", "no-such-net", "--iters", "1", "--train-dir", str(train_dir)]) == 2
    assert "unknown model 'no-such-net'" in capsys.readouterr().err
    assert main(["train", "--model", "ebsr-light", "--iters", "1", "--train-dir", str(tmp_path / "nope"),
                 "--out", str(tmp_path / "o1")]) == 2
    assert "training folder not found" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["train", "--model", "ebsr-light", "--iters", "1", "--train-dir", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "o2")]) == 2
    err = capsys.readouterr().err
    assert "no images" in err and len(err.strip().splitlines()) == 1
    assert main(["train", "--model", "ebsr-light", "--train-dir", str(train_dir), "--out", str(tmp_path / "o3")]) == 2
    assert "--iters and/or --time-budget" in capsys.readouterr().err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.timeout(600)
def test_torchrun_two_cpu_processes(run20, train_dir, tmp_path):
    """`torchrun --nproc-per-node 2 -m bsr_cli train` on 127.0.0.1 (gloo): the loss falls, rank 0 alone writes, and
    the packed checkpoint holds the same tensors as a single-process run's and loads the same way."""
    import os
    import subprocess
    import sys

    from bsr_cli.checkpoint import load_checkpoint, load_into
    from bsr_cli.models import create_model

    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node", "2",
           "--master-addr", "127.0.0.1", "--master-port", str(_free_port()), "-m", "bsr_cli", "train",
           "--model", "ebsr-light", "--scale", "4", "--iters", "20", "--train-dir", str(train_dir), "--out", str(out),
           "--save-every", "10", *FAST]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=500)
    assert proc.returncode == 0, proc.stderr[-2000:]
    info = _state_info(out)
    first, last = float(np.mean(info["losses"][:5])), float(np.mean(info["losses"][-5:]))
    assert info["step"] == 20 and last < 0.8 * first, (first, last)
    assert "2 processes (global batch 8)" in (out / "train.log").read_text()
    ddp, meta = load_checkpoint(out / "final.safetensors")
    single, _ = load_checkpoint(run20 / "final.safetensors")
    assert sorted(ddp) == sorted(single) and meta["training"]["iterations"] == 20
    model = create_model("ebsr-light", 4)
    load_into(model, out / "final.safetensors")
    with torch.no_grad():
        y = model.eval()(torch.rand(1, 3, 10, 12))
    assert y.shape == (1, 3, 40, 48) and torch.isfinite(y).all()


@pytest.mark.timeout(300)
def test_sigterm_saves_the_current_step(train_dir, tmp_path):
    """SIGTERM mid-run: the step in progress finishes, the state is saved at that step, exit 130; --resume
    continues to the end."""
    import os
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "term"
    args = ["-m", "bsr_cli", "train", "--model", "ebsr-light", "--scale", "4", "--iters", "100000",
            "--train-dir", str(train_dir), "--out", str(out), *FAST, "--save-every", "100000"]
    proc = subprocess.Popen([sys.executable, *args], env=dict(os.environ, OMP_NUM_THREADS="1"),
                            stderr=subprocess.PIPE, text=True)
    log = out / "train.log"
    deadline = time.time() + 200
    while time.time() < deadline and not (log.exists() and "step 10/" in log.read_text()):
        time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=120) == 130
    step = _state_info(out)["step"]
    assert step >= 10 and f"stopped at step {step}" in log.read_text()


def test_a_stage_from_a_training_state_records_the_earlier_stage(run20, train_dir, tmp_path):
    """--init-from <state.safetensors> of the same model: the new checkpoint's recipe chains the run the state
    belongs to (its recipe travels in the state), and totals both stages."""
    from bsr_cli.checkpoint import read_metadata

    assert _state_info(run20)["recipe"]["iterations"] == 20
    out = tmp_path / "stage2"
    rc = main(["train", "--model", "ebsr-light", "--scale", "4", "--iters", "3", "--train-dir", str(train_dir),
               "--out", str(out), "--init-from", str(run20 / T.STATE_FILE), *FAST])
    assert rc == 0
    rec = read_metadata(out / "final.safetensors")["training"]
    assert rec["iterations"] == 3 and rec["previous_stage"]["iterations"] == 20 and rec["total_iterations"] == 23
    assert rec["time_budget_s"] is None


@pytest.mark.timeout(600)
def test_a_resumed_stage_keeps_its_source_and_earlier_stages(run20, train_dir, tmp_path, interrupt_training):
    """A stage started with --init-from, stopped and continued with --resume alone (as scripts/lane.sh does): the
    state and the final checkpoint still name the source and chain the earlier stage (a resume once dropped both,
    so the manifest lost srresnet-fp-x4's seven earlier stages)."""
    from bsr_cli.checkpoint import read_metadata

    out = tmp_path / "stage2"
    args = ["train", "--model", "ebsr-light", "--scale", "4", "--iters", "12", "--train-dir", str(train_dir),
            "--out", str(out), "--save-every", "5", *FAST]
    interrupt_training(7)
    assert main([*args, "--init-from", str(run20 / T.STATE_FILE)]) == 130
    interrupt_training(None)
    assert main([*args, "--resume"]) == 0
    for rec in (_state_info(out)["recipe"], read_metadata(out / "final.safetensors")["training"]):
        assert rec["init_from"] == f"{run20.name}/{T.STATE_FILE}"
        assert rec["iterations"] == 12 and rec["previous_stage"]["iterations"] == 20 and rec["total_iterations"] == 32


def test_cached_teacher_targets_are_the_whole_image_output_cropped_like_hr():
    """--teacher-targets image: the teacher runs once per training image; a batch's targets are the patches of those
    outputs at the HR patches' places, with the same flip/rotation; the random draws are those of a batch
    without targets (so runs and resumes see the same patches)."""
    from bsr_cli.models import create_model
    from bsr_cli.train_data import dihedral

    rng = np.random.default_rng(0)
    pairs = [T.make_pair(rng.integers(0, 256, (48 + 4 * i, 40, 3), dtype=np.uint8), 4) for i in range(3)]
    sampler = T.PatchSampler(pairs, 4, patch_size=6)
    torch.manual_seed(0)
    teacher = create_model("fsrcnn", 4).eval()
    targets = T.teacher_image_targets(teacher, sampler, torch.device("cpu"), "fp32")
    sampler.set_targets(targets)
    lr_a, hr_a = sampler.sample(5, np.random.default_rng(3))
    lr_b, hr_b, tg = sampler.sample(5, np.random.default_rng(3), with_targets=True)
    assert np.array_equal(lr_a, lr_b) and np.array_equal(hr_a, hr_b) and tg.shape == hr_b.shape == (5, 24, 24, 3)
    draw = np.random.default_rng(3)  # replay the draws: image, y, x, transform
    for k in range(5):
        i = int(draw.integers(3))
        h, w = pairs[i][0].shape[:2]
        y, x, t = int(draw.integers(h - 5)), int(draw.integers(w - 5)), int(draw.integers(8))
        with torch.no_grad():
            full = teacher(torch.from_numpy(pairs[i][0]).permute(2, 0, 1)[None].float() / 255).clamp(0, 1)
        want = dihedral(full[0].permute(1, 2, 0).numpy()[4 * y : 4 * y + 24, 4 * x : 4 * x + 24], t)
        np.testing.assert_allclose(tg[k].astype(np.float32), want, atol=1e-3)  # float16 storage
    with pytest.raises(ValueError, match="one HR-size target"):
        sampler.set_targets(targets[:2])


@pytest.mark.timeout(600)
@pytest.mark.parametrize("mode", ["image", "patch"])
def test_distilled_run_records_its_teacher_targets(train_dir, tmp_path, mode):
    from bsr_cli.checkpoint import read_metadata

    out = tmp_path / mode
    rc = main(["train", "--model", "ebsr-light", "--scale", "4", "--iters", "4", "--train-dir", str(train_dir),
               "--out", str(out), "--teacher", "srresnet-fp", "--teacher-targets", mode, *FAST])
    assert rc == 0
    teacher = read_metadata(out / "final.safetensors")["training"]["teacher"]
    assert teacher == {"model": "srresnet-fp", "weight": 1.0, "loss": "L1 to outputs", "targets": mode}
    assert ("computed once" in (out / "train.log").read_text()) == (mode == "image")


def test_bad_teacher_targets_is_one_line(train_dir, tmp_path, capsys):
    rc = main(["train", "--model", "ebsr-light", "--scale", "4", "--iters", "4", "--train-dir", str(train_dir),
               "--out", str(tmp_path / "x"), "--teacher", "srresnet-fp", "--teacher-targets", "both", *FAST])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "--teacher-targets" in err[0] and not (tmp_path / "x").exists()
