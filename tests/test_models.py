"""Every registered model builds at x2/x3/x4 and maps an odd-sized (N,3,H,W) to (N,3,sH,sW)."""
import pytest
import torch
from torch import nn

from bsr_cli.errors import BsrError
from bsr_cli.models import create_model, get_model_info, list_models
from bsr_cli.nn.binary_conv import BinaryConv2d

torch.set_num_threads(1)

CORE = ["srresnet-fp", "ma2019-bwn", "e2fif", "bbcu-l", "bbcu-m", "ebsr-baseline", "ebsr-light", "ebsr-sq",
        "scales", "scales-c40", "abnn-both-spatial-se"]
BIG = {"ebsr", "scales-swinir", "bibert-swinir"}


def test_registry_has_every_seed_model():
    names = set(list_models())
    assert set(CORE) | BIG <= names
    abnn = {n for n in names if n.startswith("abnn-")}
    assert {"abnn-base", "abnn-base-residual", "abnn-rescale-pre-se", "abnn-rescale-post-global",
            "abnn-single-spatial", "abnn-dual-se-spatial", "abnn-both-global-global"} <= abnn
    assert len(abnn) == 2 + 3 * 3 + 6 + 9


@pytest.mark.parametrize("name", sorted(list_models()))
def test_forward_shape_all_scales(name):
    h, w = (37, 53) if name in CORE else (13, 11)
    x = torch.rand(1, 3, h, w)
    for scale in (2, 3, 4):
        model = create_model(name, scale).eval()
        assert model.scale == scale
        for part in ("head", "body", "upsampler", "tail"):
            assert isinstance(getattr(model, part), nn.Module)
        with torch.no_grad():
            y = model(x)
        assert y.shape == (1, 3, scale * h, scale * w), (name, scale)
        assert torch.isfinite(y).all()
    # every 1-bit conv is a BinaryConv2d (the contract profiling and packing rely on); the FP twin has none
    n_bin = sum(isinstance(m, BinaryConv2d) for m in model.modules())
    if get_model_info(name).binarized.startswith("nothing"):  # srresnet-fp and the light FP references
        assert n_bin == 0
    else:
        assert n_bin >= 32, (name, n_bin, get_model_info(name).binarized)


@pytest.mark.parametrize("name", ["ebsr-light", "bbcu-l", "scales", "abnn-both-spatial-se"])
def test_train_step_autocast_bf16_channels_last(name):
    model = create_model(name, 2).to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 12, 12).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = (model(x).float() - 0.5).abs().mean()
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


def test_unknown_model_suggests_closest_names():
    with pytest.raises(BsrError, match="ebsr-light"):
        create_model("ebsr-ligth", 4)


def test_unsupported_scale_is_a_clear_error():
    with pytest.raises(BsrError, match=r"does not support scale x8 \(supported: x2, x3, x4\)"):
        create_model("bbcu-l", 8)


@pytest.mark.parametrize("name,scale,params", [("fsrcnn", 4, 24683), ("espcn", 4, 37200), ("espcn", 2, 26796)])
def test_light_fp_references_have_their_paper_shapes(name, scale, params):
    """FSRCNN(56, 12, 4) and ESPCN with RGB in/out: parameter counts follow from the papers' layer lists
    (FSRCNN: 3*56*25+56 + 56*12+12 + 4*(12*12*9+12) + 12*56+56 + 56*3*81+3 + PReLU slopes 56+12*5+56)."""
    model = create_model(name, scale)
    assert sum(p.numel() for p in model.parameters()) == params
    if name == "fsrcnn":
        assert 3 * 56 * 25 + 56 + 56 * 12 + 12 + 4 * (12 * 12 * 9 + 12) + 12 * 56 + 56 + 56 * 3 * 81 + 3 + 56 + 12 * 5 + 56 == params
