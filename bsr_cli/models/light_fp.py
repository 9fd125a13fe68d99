"""Light float SR networks a user would pick instead of a 1-bit one: the reference points of bsr's
quality-latency comparison (issue #17). RGB in / RGB out, as every bsr model (the papers train on Y).

* FSRCNN (Dong, Loy, Tang, ECCV 2016, "Accelerating the Super-Resolution Convolutional Neural Network"),
  FSRCNN(d=56, s=12, m=4): 5x5 feature extraction 3->56, 1x1 shrinking 56->12, four 3x3 mapping convs 12->12,
  1x1 expanding 12->56, each followed by PReLU, then a 9x9 deconvolution 56->3 with stride = scale.
* ESPCN (Shi et al., CVPR 2016, "Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
  Convolutional Neural Network"): 5x5 conv 3->64, tanh; 3x3 conv 64->32, tanh; 3x3 conv 32->3*s^2 and a
  sub-pixel (pixel shuffle) layer.
"""
from __future__ import annotations

from torch import nn

from bsr_cli.models.registry import register_model
from bsr_cli.models.srresnet import SRNet


def _conv(cin: int, cout: int, k: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, padding=k // 2)


@register_model("fsrcnn", paper="FSRCNN (Dong et al. 2016)", family="fp-light", binarized="nothing (full precision)")
def fsrcnn(scale: int, d: int = 56, s: int = 12, m: int = 4) -> nn.Module:
    """FSRCNN(56, 12, 4), RGB: 5x5 3->d PReLU | 1x1 d->s PReLU, m x (3x3 s->s PReLU), 1x1 s->d PReLU |
    9x9 deconvolution d->3, stride `scale` (padding 4, output padding scale-1, so the output is exactly s x)."""
    head = nn.Sequential(_conv(3, d, 5), nn.PReLU(d))
    body = [_conv(d, s, 1), nn.PReLU(s)]
    for _ in range(m):
        body += [_conv(s, s, 3), nn.PReLU(s)]
    body += [_conv(s, d, 1), nn.PReLU(d)]
    up = nn.ConvTranspose2d(d, 3, 9, stride=scale, padding=4, output_padding=scale - 1)
    return SRNet(scale, head, nn.Sequential(*body), up, nn.Identity(), mean_shift=False, global_skip=False)


@register_model("espcn", paper="ESPCN (Shi et al. 2016)", family="fp-light", binarized="nothing (full precision)")
def espcn(scale: int) -> nn.Module:
    """ESPCN, RGB: 5x5 3->64 tanh | 3x3 64->32 tanh | 3x3 32->3s^2 + PixelShuffle(s)."""
    head = nn.Sequential(_conv(3, 64, 5), nn.Tanh())
    body = nn.Sequential(_conv(64, 32, 3), nn.Tanh())
    up = nn.Sequential(_conv(32, 3 * scale * scale, 3), nn.PixelShuffle(scale))
    return SRNet(scale, head, body, up, nn.Identity(), mean_shift=False, global_skip=False)
