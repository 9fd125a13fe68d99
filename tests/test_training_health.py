"""Training keeps what it learned (issue #12): packed -> --init-from keeps signs at trainable magnitudes, a
stop/continue cycle flips binary weights and equals a straight run, and every binary conv of the zoo gets a
gradient above Adam's eps at init."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from bsr_cli import train as T
from bsr_cli.checkpoint import binary_convs, load_into, save_checkpoint
from bsr_cli.cli import main
from bsr_cli.models import create_model, list_models
from bsr_cli.nn.attention import OPEN_MAP, SEAttention

ADAM_EPS = 1e-8  # torch.optim.Adam's default, which bsr train uses
FAST = ["--batch-size", "4", "--patch-size", "8", "--lr", "1e-3", "--warmup", "0", "--precision", "fp32",
        "--threads", "1", "--seed", "0", "--val-every", "0", "--log-every", "5", "--save-every", "10"]


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    """Four 96x96 smooth synthetic RGB images (enough texture for an L1 gradient)."""
    from PIL import Image

    d = tmp_path_factory.mktemp("health_train")
    rng = np.random.default_rng(3)
    for i in range(4):
        low = (rng.random((12, 12, 3)) * 255).astype(np.uint8)
        Image.fromarray(low).resize((96, 96), Image.BICUBIC).save(d / f"img{i}.png")
    return d


def _latents(model) -> dict[str, torch.Tensor]:
    return {k: c.weight.detach().clone() for k, c in binary_convs(model).items()}


@pytest.mark.parametrize("name", ["e2fif", "ma2019-bwn", "bbcu-l"])
def test_packed_init_from_keeps_signs_inside_ste_window(name, tmp_path):
    """Packed -> load_into(latents="trainable"): every sign kept, |W| strictly inside (0, 1), never +-1, and the
    binarized weights (what forward uses) unchanged. "exact" loading (inference) still gives +-1 for sign layers."""
    torch.manual_seed(0)
    trained = create_model(name, 4)
    with torch.no_grad():  # a trained-looking model: latents spread over the STE window
        for conv in binary_convs(trained).values():
            conv.weight.copy_(torch.randn_like(conv.weight) * 0.3)
    save_checkpoint(trained, tmp_path / "p.safetensors", {"model": name, "scale": 4})
    torch.manual_seed(1)
    fresh = create_model(name, 4)
    init_mean = float(np.mean([float(c.weight.detach().abs().mean()) for c in binary_convs(fresh).values()]))
    meta = load_into(fresh, tmp_path / "p.safetensors", latents="trainable")
    assert meta["latents_restored"]["layers"] == 32
    if name != "bbcu-l":  # sign-only layers take the init magnitude; mean|W| layers (bbcu-l) keep their alpha
        assert meta["latents_restored"]["mean_abs"] == pytest.approx(init_mean, rel=0.05)
    src, dst = binary_convs(trained), binary_convs(fresh)
    for key, conv in dst.items():
        w = conv.weight.detach()
        assert torch.equal(w < 0, src[key].weight.detach() < 0), key  # every sign kept
        assert float(w.abs().max()) < 0.96 and float(w.abs().min()) > 0, key  # inside the STE window, not 0
        torch.testing.assert_close(conv.binarized_weight(), src[key].binarized_weight(), rtol=1e-5, atol=0)
    exact = create_model(name, 4)
    load_into(exact, tmp_path / "p.safetensors")
    if name == "e2fif":  # PlainSign: the exact reconstruction is +-1, which the trainable one must not be
        assert all(float(c.weight.detach().abs().min()) == 1.0 for c in binary_convs(exact).values())


@pytest.mark.timeout(600)
def test_e2fif_stop_continue_flips_and_matches_straight_run(train_dir, tmp_path, interrupt_training):
    """e2fif, 20 iterations straight vs interrupted at 13 (state saved at 10) and resumed: identical losses and
    latents, and binary weights flip in the resumed half. Then a new stage from the packed final file
    (--init-from) flips weights too (with +-1 latents it flipped none)."""
    base = ["train", "--model", "e2fif", "--scale", "4", "--iters", "20", "--train-dir", str(train_dir), *FAST]
    straight, cut = tmp_path / "straight", tmp_path / "cut"
    assert main([*base, "--out", str(straight)]) == 0
    interrupt_training(13)
    assert main([*base, "--out", str(cut)]) == 130
    interrupt_training(None)
    assert T.read_state_info(cut / T.STATE_FILE)["step"] == 10
    assert main([*base, "--out", str(cut), "--resume"]) == 0
    a, b = T.read_state_info(straight / T.STATE_FILE), T.read_state_info(cut / T.STATE_FILE)
    np.testing.assert_allclose(a["losses"], b["losses"], rtol=0, atol=1e-6)
    (step, frac), = b["flips"]  # resumed at 10, flips counted from there to 20
    assert step == 20 and frac > 0.001
    sa, sb = T.load_file(str(straight / T.STATE_FILE)), T.load_file(str(cut / T.STATE_FILE))
    for key in sa:
        if key.startswith(("model.", "opt.")):
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-7)
    stage2 = tmp_path / "stage2"
    assert main(["train", "--model", "e2fif", "--scale", "4", "--iters", "10", "--train-dir", str(train_dir),
                 "--init-from", str(straight / "final.safetensors"), "--out", str(stage2), *FAST]) == 0
    (_, frac2), = T.read_state_info(stage2 / T.STATE_FILE)["flips"]
    assert frac2 > 0.001
    log = (stage2 / "train.log").read_text()
    assert "restored at init magnitude" in log and "32 binary convs" in log


def test_attention_maps_start_open():
    se = SEAttention(64)
    x = torch.randn(2, 64, 8, 8)
    m = se.attention_map(x)
    assert float(m.detach().mean()) == pytest.approx(OPEN_MAP, abs=0.02)


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", [n for n in list_models() if n != "ebsr"] + ["ebsr"])
def test_every_binary_conv_gets_a_gradient_above_adam_eps_at_init(name):
    """At init, on a fixed batch, with bsr train's loss (L1 on 0..255): the mean |dL/dW| of every binary conv
    exceeds Adam's eps (issue #12: abnn's SE maps at 0.5 left 15 of 33 convs below it; bbcu-l's k=130
    alignment left all of them at ~7e-10 with L1 on [0, 1])."""
    torch.manual_seed(0)
    model = create_model(name, 4)
    convs = binary_convs(model)
    if not convs:
        pytest.skip(f"{name} has no binary conv")
    g = torch.Generator().manual_seed(0)
    lr, hr = torch.rand(1, 3, 12, 12, generator=g), torch.rand(1, 3, 48, 48, generator=g)
    T.pixel_l1(model(lr), hr).backward()
    grads = {k: float(c.weight.grad.abs().mean()) if c.weight.grad is not None else 0.0 for k, c in convs.items()}
    low = {k: v for k, v in grads.items() if v <= ADAM_EPS}
    assert not low, f"{len(low)} of {len(grads)} binary convs below Adam's eps: {sorted(low.items())[:3]}"


def test_fp_weight_warmup_switch():
    """--fp-weight-iters: while off, every binary conv uses its latent weight as is (E2FIF's binary-activation-
    only stage); on again, the binarized weight (+-1 for e2fif) is back. Nothing of it reaches the state dict."""
    torch.manual_seed(0)
    model = create_model("e2fif", 4)
    keys = set(model.state_dict())
    T.set_weight_binarization(model, False)
    conv = next(iter(binary_convs(model).values()))
    assert torch.equal(conv.binarized_weight(), conv.weight)
    T.set_weight_binarization(model, True)
    assert torch.equal(conv.binarized_weight().abs(), torch.ones_like(conv.weight))
    assert set(model.state_dict()) == keys


@pytest.mark.timeout(300)
def test_new_stage_from_a_training_state_keeps_latents_and_adam_moments(train_dir, tmp_path):
    """--init-from state.safetensors of the same model: latents copied exactly (not re-packed) and Adam's
    moments continued, so a stage hand-off loses neither."""
    first = tmp_path / "first"
    assert main(["train", "--model", "e2fif", "--scale", "4", "--iters", "10", "--train-dir", str(train_dir),
                 "--out", str(first), *FAST]) == 0
    saved = T.load_file(str(first / T.STATE_FILE))
    cfg = T.TrainConfig("e2fif", 4, str(train_dir), str(tmp_path / "second"), iters=5, batch_size=4, patch_size=8,
                        precision="fp32", threads=1, val_every=0, init_from=str(first / T.STATE_FILE))
    run = T.TrainingRun(cfg, create_model)
    params = dict(run.model.named_parameters())
    for name, p in params.items():
        assert torch.equal(p.detach(), saved[f"model.{name}"]), name
    order = list(params)
    with_moments = [i for i, name in enumerate(order) if f"opt.{i}.exp_avg" in saved]
    assert len(with_moments) == len(order)
    for i in with_moments:
        st = run.optimizer.state[params[order[i]]]
        assert torch.equal(st["exp_avg_sq"], saved[f"opt.{i}.exp_avg_sq"])
        assert float(st["step"]) == 10
    assert "Adam moments of" in (tmp_path / "second" / "train.log").read_text()
    run.log.close()
