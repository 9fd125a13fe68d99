"""Packed checkpoints: bit order, bit-exact round trip per weight quantizer, size vs Eq. 7, no pickle."""
from __future__ import annotations

import json
import pickle
import struct
import warnings

import pytest
import torch
from torch import nn

from bsr_cli.checkpoint import (
    FORMAT_VERSION,
    binary_convs,
    load_checkpoint,
    load_into,
    pack_signs,
    save_checkpoint,
    unpack_signs,
)
from bsr_cli.errors import BsrError

bc = pytest.importorskip("bsr_cli.nn.binary_conv")
q = pytest.importorskip("bsr_cli.nn.quantizers")

C = 32


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class StandIn(nn.Module):
    """A small model following the model contract: FP head/tail, binary body, pixel-shuffle upsampler."""

    def __init__(self, weight_quantizer, blocks: int = 8, scale: int = 2, bn: bool = False):
        super().__init__()
        self.scale = scale
        self.head = nn.Conv2d(3, C, 3, padding=1)
        self.body = nn.ModuleList(
            bc.BinaryConv2d(C, C, 3, input_quantizer=q.RSign(C), weight_quantizer=weight_quantizer())
            for _ in range(blocks)
        )
        self.norm = nn.BatchNorm2d(C) if bn else nn.Identity()
        self.upsampler = nn.Sequential(nn.Conv2d(C, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))
        self.tail = nn.Identity()

    def forward(self, x):
        h = self.head(x)
        for conv in self.body:
            h = h + conv(h)
        return self.tail(self.upsampler(self.norm(h)))


QUANTIZERS = {
    "MeanAbsSign": q.MeanAbsSign,
    "LearnableScaleSign": lambda: q.LearnableScaleSign(C),
    "PlainSign": q.PlainSign,
}


def _trained(make, **kw) -> StandIn:
    """A stand-in whose parameters are all perturbed (as after training), in eval mode."""
    torch.manual_seed(0)
    model = StandIn(make, **kw)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def test_pack_signs_bit_order():
    # row 0: -1, 2, 0, -3, 1, 1, 1, 1 | -5  -> bits 1001 0000 | 1000 0000 (bit 1 = negative, 0 -> +1, MSB first)
    w = torch.tensor([[-1.0, 2, 0, -3, 1, 1, 1, 1, -5]]).view(1, 1, 3, 3)
    bits = pack_signs(w)
    assert bits.dtype == torch.uint8
    assert bits.tolist() == [[0b10010000, 0b10000000]]
    assert unpack_signs(bits, (1, 1, 3, 3)).flatten().tolist() == [-1, 1, 1, -1, 1, 1, 1, 1, -1]


@pytest.mark.parametrize("quantizer", list(QUANTIZERS))
def test_round_trip_is_bit_exact(tmp_path, quantizer):
    model = _trained(QUANTIZERS[quantizer], bn=True)
    x = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x)
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"model": "stand-in", "scale": 2})

    fresh = StandIn(QUANTIZERS[quantizer], bn=True).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "differs in the last bit" warning, no fp32 fallback
        load_into(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(x), y)
        for name, conv in binary_convs(model).items():
            assert torch.equal(binary_convs(fresh)[name].binarized_weight(), conv.binarized_weight()), name
    state, meta = load_checkpoint(path)
    kinds = {info["kind"] for info in meta["packed"].values()}
    assert kinds == ({"scale"} if quantizer == "MeanAbsSign" else {"sign"})
    assert len(meta["packed"]) == 8
    assert all(k + ".bits" in state for k in meta["packed"])
    assert "body.0.weight" not in state  # the latent weight is not stored
    assert state["norm.num_batches_tracked"].dtype == torch.int64
    assert all(t.dtype in (torch.float32, torch.uint8, torch.int64) for t in state.values())


def test_mean_abs_needs_exact_reconstruction(tmp_path):
    """latent = alpha * sign is NOT enough for mean|W| (float32 rounding); load_into must still be exact."""
    model = _trained(QUANTIZERS["MeanAbsSign"])
    conv = model.body[0]
    bw = conv.binarized_weight().detach()
    naive = conv.weight_quantizer(bw.clone())  # alpha * sign as latent
    assert not torch.equal(naive, bw), "this seed should exercise the refinement"
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"model": "stand-in", "scale": 2})
    fresh = StandIn(QUANTIZERS["MeanAbsSign"]).eval()
    load_into(fresh, path)
    assert torch.equal(fresh.body[0].binarized_weight(), bw)


def test_save_leaves_model_unchanged(tmp_path):
    model = _trained(QUANTIZERS["MeanAbsSign"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    save_checkpoint(model, tmp_path / "m.safetensors", {"scale": 2})
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_size_close_to_eq7(tmp_path):
    model = _trained(QUANTIZERS["MeanAbsSign"])
    bi = sum(c.weight.numel() for c in binary_convs(model).values())
    fp = sum(p.numel() for p in model.parameters()) - bi
    eq7_bytes = (fp + bi / 32) * 4
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"model": "stand-in", "scale": 2,
                                                                 "config": {"channels": C, "blocks": 8}})
    size = path.stat().st_size
    assert bi == 8 * C * C * 9
    assert size <= 1.3 * eq7_bytes, (size, eq7_bytes)
    # and far below an fp32 dump of the same model
    assert size < 0.25 * (fp + bi) * 4


def test_metadata_is_json(tmp_path):
    model = _trained(QUANTIZERS["PlainSign"])
    recipe = {"data": "BSD400", "iterations": 20, "hours": 0.01, "device": "cpu"}
    path = save_checkpoint(model, tmp_path / "m.safetensors",
                           {"model": "stand-in", "scale": 2, "config": {"blocks": 8}, "recipe": recipe})
    _, meta = load_checkpoint(path)
    assert meta["model"] == "stand-in" and meta["scale"] == 2 and meta["recipe"] == recipe
    assert meta["format"] == "bsr-packed" and meta["format_version"] == FORMAT_VERSION
    from bsr_cli import __version__

    assert meta["bsr_version"] == __version__
    # the raw header: 8-byte little-endian length, then JSON whose __metadata__ values are JSON strings
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    assert json.loads(header["__metadata__"]["recipe"]) == recipe


def test_loading_never_unpickles(tmp_path, monkeypatch):
    model = _trained(QUANTIZERS["MeanAbsSign"])
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"scale": 2})

    def boom(*a, **k):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", boom)
    monkeypatch.setattr(pickle, "load", boom)
    monkeypatch.setattr(torch, "load", boom)
    load_into(StandIn(QUANTIZERS["MeanAbsSign"]).eval(), path)


def test_non_binary_quantizer_falls_back_to_fp32(tmp_path):
    class Round8(nn.Module):  # low-bit, not binary: cannot be rebuilt from signs
        def forward(self, w):
            return torch.round(w * 8) / 8

    model = _trained(Round8)
    x = torch.rand(1, 3, 8, 8)
    with pytest.warns(UserWarning, match="stored as float32"):
        path = save_checkpoint(model, tmp_path / "m.safetensors", {"scale": 2})
    state, meta = load_checkpoint(path)
    assert meta["packed"] == {} and state["body.0.weight"].dtype == torch.float32
    fresh = StandIn(Round8).eval()
    load_into(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))


def test_mismatches_are_one_line_errors(tmp_path):
    model = _trained(QUANTIZERS["PlainSign"])
    path = save_checkpoint(model, tmp_path / "m.safetensors", {"model": "stand-in", "scale": 2})
    with pytest.raises(BsrError, match="x2 checkpoint") as e1:
        load_into(StandIn(QUANTIZERS["PlainSign"], scale=4), path)
    with pytest.raises(BsrError, match="does not fit") as e2:
        load_into(StandIn(QUANTIZERS["PlainSign"], blocks=4), path)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(BsrError) as e3:
        load_into(model, bad)
    for e in (e1, e2, e3):
        assert "\n" not in str(e.value)
