"""Each binarizer's forward and straight-through gradient against the paper's formula at chosen points."""
import pytest
import torch
from torch.nn import functional as F

from bsr_cli.nn import (
    ApproxSign,
    BinaryConv2d,
    LearnableScaleSign,
    LsqQuantizer,
    MeanAbsSign,
    PlainSign,
    RSign,
    ScaledSign,
    ScalesSign,
)

torch.set_num_threads(1)


def _grad(fn, x):
    x = x.clone().requires_grad_(True)
    y = fn(x)
    y.sum().backward()
    return y.detach(), x.grad


def test_approx_sign_forward_and_bbcu_eq6_gradient():
    x = torch.tensor([-1.5, -1.0, -0.5, -0.25, 0.0, 0.3, 0.9, 1.0, 1.2])
    y, g = _grad(ApproxSign(), x)
    assert y.tolist() == [-1, -1, -1, -1, 1, 1, 1, 1, 1]  # 0 -> +1
    # Eq. 6: 2+2x on [-1,0), 2-2x on [0,1), 0 elsewhere
    assert torch.allclose(g, torch.tensor([0.0, 0.0, 1.0, 1.5, 2.0, 1.4, 0.2, 0.0, 0.0]))


def test_rsign_threshold_gradient():
    q = RSign(2)
    with torch.no_grad():
        q.beta.copy_(torch.tensor([0.2, -0.5]))
    x = torch.tensor([[0.5, 0.5]]).view(1, 2, 1, 1).requires_grad_(True)
    y = q(x)
    y.sum().backward()
    assert y.flatten().tolist() == [1.0, 1.0]
    # u = x - beta = [0.3, 1.0]; d/dx = [1.4, 0]; d/dbeta = -d/dx
    assert torch.allclose(x.grad.flatten(), torch.tensor([1.4, 0.0]))
    assert torch.allclose(q.beta.grad, torch.tensor([-1.4, 0.0]))


# EBSR Eq. 3 / Eq. 4 by hand, alpha = 2, beta = 0.5:  u = (x - beta) / alpha
#   x     u      x_hat  dx    dbeta  dalpha
EBSR_POINTS = [
    (-2.0, -1.25, -2.0, 0.0, 0.0, -1.0),  # x <= beta - alpha: dalpha = -1
    (0.0, -0.25, -2.0, 1.5, -1.5, -0.625),  # -2u^2 - 2u - 1 = -0.125 + 0.5 - 1; dbeta = -2 - 2u
    (1.0, 0.25, 2.0, 1.5, -1.5, 0.625),  # 2u^2 - 2u + 1 = 0.125 - 0.5 + 1; dbeta = -2 + 2u
    (2.0, 0.75, 2.0, 0.5, -0.5, 0.625),  # 2(0.5625) - 1.5 + 1
    (3.5, 1.5, 2.0, 0.0, 0.0, 1.0),  # x > beta + alpha: dalpha = 1
]


@pytest.mark.parametrize("cls", [ScaledSign, ScalesSign])
@pytest.mark.parametrize("x0,u,xhat,dx,dbeta,dalpha", EBSR_POINTS)
def test_scaled_sign_ebsr_eq3_eq4(cls, x0, u, xhat, dx, dbeta, dalpha):
    q = cls(1)
    with torch.no_grad():
        q.alpha.fill_(2.0)
        q.beta.fill_(0.5)
    x = torch.tensor([x0]).view(1, 1, 1, 1).requires_grad_(True)
    y = q(x)
    y.sum().backward()
    assert y.item() == pytest.approx(xhat)
    assert x.grad.item() == pytest.approx(dx)
    assert q.beta.grad.item() == pytest.approx(dbeta)
    assert q.alpha.grad.item() == pytest.approx(dalpha)


def test_scaled_sign_token_channel_dim():
    q = ScaledSign(3, channel_dim=-1)
    with torch.no_grad():
        q.beta.copy_(torch.tensor([0.0, 10.0, -10.0]))
    y = q(torch.zeros(2, 5, 3))
    assert y[..., 0].eq(1).all() and y[..., 1].eq(-1).all() and y[..., 2].eq(1).all()


def test_mean_abs_sign_values_and_clamp_ste():
    w = torch.tensor([[0.5, -1.5, 0.0, 1.0], [-0.2, -0.2, 0.2, 0.6]]).view(2, 4, 1, 1)
    y, g = _grad(MeanAbsSign(), w)
    a0, a1 = 3.0 / 4, 1.2 / 4  # mean |W_o|
    assert torch.allclose(y.flatten(1), torch.tensor([[a0, -a0, a0, a0], [-a1, -a1, a1, a1]]))
    # gradient of clamp(W, -1, 1): 1 where |W| <= 1 (alpha detached, no alpha factor)
    assert g.flatten(1).tolist() == [[1.0, 0.0, 1.0, 1.0], [1.0, 1.0, 1.0, 1.0]]


def test_learnable_scale_sign_ma2019_eq4():
    q = LearnableScaleSign(2)
    w = torch.tensor([[0.5, -1.5, 0.0], [-0.3, 0.2, 0.9]]).view(2, 3, 1, 1)
    q.init_from(w)  # Eq. 3 init: mean |W_o|
    assert torch.allclose(q.alpha, torch.tensor([2.0 / 3, 1.4 / 3]))
    with torch.no_grad():
        q.alpha.copy_(torch.tensor([2.0, 3.0]))
    w = w.clone().requires_grad_(True)
    upstream = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]).view(2, 3, 1, 1)
    y = q(w)
    (y * upstream).sum().backward()
    assert torch.allclose(y.flatten(1), torch.tensor([[2.0, -2.0, 2.0], [-3.0, 3.0, 3.0]]))
    # dL/dalpha_o = sum g * sign(W): [1 - 2 + 3, -4 + 5 + 6]
    assert torch.allclose(q.alpha.grad, torch.tensor([2.0, 7.0]))
    # dL/dW = alpha_o * g where |W| <= 1
    assert torch.allclose(w.grad.flatten(1), torch.tensor([[2.0, 0.0, 6.0], [12.0, 15.0, 18.0]]))


def test_plain_sign_identity_ste():
    w = torch.tensor([-3.0, -0.1, 0.0, 2.5])
    y, g = _grad(PlainSign(), w)
    assert y.tolist() == [-1.0, -1.0, 1.0, 1.0]
    assert g.tolist() == [1.0, 1.0, 1.0, 1.0]


def test_lsq_levels_and_gradients():
    q = LsqQuantizer(4, signed=True, step_init=0.5)  # levels -8..7
    x = torch.tensor([-5.0, -0.3, 0.6, 10.0]).requires_grad_(True)
    y = q(x)
    y.sum().backward()
    assert y.tolist() == [-4.0, -0.5, 0.5, 3.5]
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 0.0]
    # ds = (Qn, round(v)-v, round(v)-v, Qp) * 1/sqrt(numel*Qp), v = x/s = (-10, -0.6, 1.2, 20)
    g = 1 / (4 * 7) ** 0.5
    assert q.step.grad.item() == pytest.approx((-8 + (-1 + 0.6) + (1 - 1.2) + 7) * g, rel=1e-5)


@pytest.mark.parametrize("wq", [MeanAbsSign(), LearnableScaleSign(6), PlainSign()])
def test_binarized_weight_two_values_per_output_channel(wq):
    torch.manual_seed(0)
    conv = BinaryConv2d(5, 6, 3, input_quantizer=ApproxSign(), weight_quantizer=wq)
    wb = conv.binarized_weight().detach()
    for o in range(6):
        vals = wb[o].unique()
        assert len(vals) == 2 and torch.isclose(vals[0], -vals[1])
    x = torch.randn(2, 5, 7, 9)
    expected = F.conv2d(torch.where(x >= 0, 1.0, -1.0), wb, padding=1)
    assert torch.allclose(conv(x), expected, atol=1e-5)


def test_fp_activation_binary_conv_keeps_inputs():
    conv = BinaryConv2d(3, 4, 3, input_quantizer=None, weight_quantizer=MeanAbsSign())
    x = torch.randn(1, 3, 5, 5)
    assert not conv.binary_activations
    assert torch.allclose(conv(x), F.conv2d(x, conv.binarized_weight(), padding=1), atol=1e-6)
