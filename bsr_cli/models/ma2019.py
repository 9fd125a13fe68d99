"""Ma et al. 2019, "Efficient super resolution using binarized neural network" (CVPRW): binary weights with a
learnable per-filter scale in the residual blocks only; activations stay full precision."""
from __future__ import annotations

from torch import nn

from bsr_cli.models.registry import register_model
from bsr_cli.models.srresnet import edsr_baseline
from bsr_cli.nn.binary_conv import BinaryConv2d
from bsr_cli.nn.quantizers import LearnableScaleSign


@register_model(
    "ma2019-bwn",
    paper="Ma et al. 2019 (CVPRW)",
    family="ma2019",
    binarized="residual-block weights (activations FP)",
)
def ma2019_bwn(scale: int) -> nn.Module:
    """SRResNet with binary-weight residual blocks (Ma 2019 §3.2-3.3): every conv inside the 16 residual blocks
    is a `BinaryConv2d(input_quantizer=None, weight_quantizer=LearnableScaleSign)` (alpha_o trained, Eq. 4);
    head, post-body conv, upsampler and tail stay FP.

    Choice: the backbone is our FP twin `srresnet-fp` (EDSR-baseline: no BN, ReLU) rather than the SRGAN
    SRResNet with BN/PReLU and 9x9 head/tail that Ma used, so that every model in bsr shares one FP reference.
    Binary params = 32 x 36,864 = 1,179,648, as Ma Table 4 (SRResNet 16 blocks)."""

    def make_conv(cin, cout):
        return BinaryConv2d(cin, cout, 3, input_quantizer=None, weight_quantizer=LearnableScaleSign(cout), bias=True)

    return edsr_baseline(scale, make_body_conv=make_conv)
