"""bitpack backend: the XNOR-popcount kernel against PyTorch.

- the integer core (popcount identity, channel masking, zero-padding borders) is bit-exact, on every ISA path
  this CPU has;
- every binary-activation model of the zoo gives the reference output (max abs diff <= 1e-5) at odd sizes.

Model comparisons use weights whose scales are powers of two (alpha = 2^-6, activation alpha = 1/2): every
partial sum of +-alpha is then exact in float32, in PyTorch as in the kernel, so a difference can only be a bug,
not float rounding that flips a later sign. The reference runs on the same channels-last input so that its FP
convs take the same oneDNN path. Real (non-dyadic) scales are checked unit by unit on a shared input.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bsr_cli.bitpack import kernel

ok, why = kernel.bitpack_available()
pytestmark = pytest.mark.skipif(not ok, reason=f"bitpack extension not built: {why}")

from bsr_cli.errors import BsrError  # noqa: E402
from bsr_cli.models import create_model, get_model_info, list_models  # noqa: E402
from bsr_cli.nn.binary_conv import BinaryConv2d  # noqa: E402
from bsr_cli.nn.quantizers import ScaledSign  # noqa: E402
from bsr_cli.nn.rescaling import SpatialRescale  # noqa: E402

ISAS = kernel.supported_isas() if ok else []  # every path this CPU can run: 0 portable C, 1 AVX2, 2 AVX-512


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    """One thread for the reference and the kernel: on a shared 2-core box two spinning OpenMP threads can
    make this suite many times slower. Thread counts are tested on their own below."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _sign(t: torch.Tensor) -> torch.Tensor:
    return torch.where(t < 0, -1.0, 1.0).to(t.dtype)  # 0 -> +1, as every binarizer of the zoo


def _reference_conv(x, w):
    """conv of the sign maps, zero padding, in float64: exact integers."""
    return F.conv2d(_sign(x).double(), _sign(w).double(), padding=w.shape[-1] // 2)


# ------------------------------------------------------------------------------------------ integer core
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize(
    "n,c,o,k,h,w",
    [(2, 40, 40, 3, 5, 7), (1, 64, 64, 3, 9, 11), (1, 130, 72, 3, 6, 5), (1, 64, 3, 1, 4, 3), (1, 100, 17, 1, 3, 5),
     (1, 3, 8, 3, 1, 1), (1, 64, 64, 3, 2, 1), (1, 256, 48, 3, 4, 5), (1, 60, 180, 1, 3, 4), (1, 64, 256, 3, 3, 3)],
)
def test_popcount_core_bit_exact(isa, n, c, o, k, h, w):
    g = torch.Generator().manual_seed(c * 31 + o)
    x = torch.randn(n, c, h, w, generator=g)
    x[x.abs() < 0.3] = 0  # exact zeros must count as +1
    wt = torch.randn(o, c, k, k, generator=g)
    wt[wt.abs() < 0.2] = 0
    wbits, _ = kernel.pack_weight_signs(wt)
    y = kernel.binary_conv(x, wbits, o, k, torch.ones(o), torch.zeros(o), isa=isa, threads=2)
    assert torch.equal(y.double(), _reference_conv(x, wt))


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c,o,k", [(40, 40, 3), (64, 64, 3), (256, 40, 3), (256, 8, 1), (130, 16, 5)])
def test_every_bit_disagrees(isa, c, o, k):
    """x < 0 everywhere, weights > 0: every product is -1, so the output is -(valid taps) * C exactly. The AVX2
    path counts in bytes (at most 8 per tap-word) and must sum them before 31 tap-words: 3x3 with 256 channels has
    36 (up to 288 per byte), 5x5 with 130 channels 75. A missing flush shows here, not with random bits."""
    h, w = 6, 7
    x = -torch.ones(1, c, h, w)
    wbits, _ = kernel.pack_weight_signs(torch.ones(o, c, k, k))
    y = kernel.binary_conv(x, wbits, o, k, torch.ones(o), torch.zeros(o), isa=isa, threads=1)
    rows = torch.tensor([min(i + k // 2, h - 1) - max(i - k // 2, 0) + 1 for i in range(h)])
    cols = torch.tensor([min(j + k // 2, w - 1) - max(j - k // 2, 0) + 1 for j in range(w)])
    want = -(rows.view(-1, 1) * cols.view(1, -1) * c).float()
    assert torch.equal(y[0], want.expand(o, h, w))
    assert y[0, 0, h // 2, w // 2].item() == -k * k * c


@pytest.mark.parametrize("isa", ISAS)
def test_zero_padding_border_counts(isa):
    """All +1 inputs (x = 0) and weights: each output is the number of taps inside the image times C_in:
    4*64 at a corner, 6*64 on an edge, 9*64 inside, and 2*64 for a 1-pixel-wide image's ends."""
    x = torch.zeros(1, 64, 4, 5)
    wbits, _ = kernel.pack_weight_signs(torch.ones(8, 64, 3, 3))
    y = kernel.binary_conv(x, wbits, 8, 3, torch.ones(8), torch.zeros(8), isa=isa)[0, 0]
    assert y[0, 0] == 256 and y[0, 2] == 384 and y[2, 0] == 384 and y[1, 2] == 576 and y[3, 4] == 256
    y1 = kernel.binary_conv(torch.zeros(1, 64, 3, 1), wbits, 8, 3, torch.ones(8), torch.zeros(8), isa=isa)[0, 0]
    assert y1.flatten().tolist() == [128.0, 192.0, 128.0]
    # the same border case against torch's conv2d on sign inputs, with mixed signs (C = 40: masked word)
    g = torch.Generator().manual_seed(1)
    xs, ws = torch.randn(1, 40, 3, 4, generator=g), torch.randn(5, 40, 3, 3, generator=g)
    y2 = kernel.binary_conv(xs, kernel.pack_weight_signs(ws)[0], 5, 3, torch.ones(5), torch.zeros(5), isa=isa)
    assert torch.equal(y2.double(), _reference_conv(xs, ws))


@pytest.mark.parametrize("isa", ISAS)
def test_pack_bits(isa):
    """Channel c of pixel p lands in word c // 64, bit c % 64; bit = (x + shift < 0); high bits stay 0."""
    g = torch.Generator().manual_seed(2)
    x, shift = torch.randn(1, 70, 2, 3, generator=g), torch.randn(70, generator=g)
    words = kernel.pack_activations(x, shift, isa=isa).view(torch.uint64 if hasattr(torch, "uint64") else torch.int64)
    bits = (x + shift.view(1, -1, 1, 1) < 0).permute(0, 2, 3, 1)  # N H W C
    for c in range(128):
        got = (words[..., c // 64].to(torch.int64) >> (c % 64)) & 1 if hasattr(torch, "uint64") else \
            (words[..., c // 64] >> (c % 64)) & 1
        want = bits[..., c].to(torch.int64) if c < 70 else torch.zeros_like(got)
        assert torch.equal(got.to(torch.int64), want), c


def test_isa_paths_agree_on_real_scales():
    """The float outputs of every ISA path, with per-channel scale, bias and the whole fused epilogue, are the
    same bits: the paths differ only in how they count (an integer), the epilogue is the same C."""
    g = torch.Generator().manual_seed(4)
    for c, o in ((40, 40), (64, 64), (256, 64)):
        x, wt = torch.randn(2, c, 9, 13, generator=g), torch.randn(o, c, 3, 3, generator=g)
        wbits, _ = kernel.pack_weight_signs(wt)
        args = dict(shift=0.1 * torch.randn(c, generator=g), smap=torch.rand(2, 1, 9, 13, generator=g),
                    cmap=torch.rand(2, o, 1, 1, generator=g), scale2=torch.rand(o, generator=g),
                    bias2=torch.randn(o, generator=g), slope=torch.rand(o, generator=g),
                    post_bias=torch.randn(o, generator=g), residual=torch.randn(2, o, 9, 13, generator=g),
                    post_slope=torch.rand(o, generator=g))
        s, b = torch.rand(o, generator=g), torch.randn(o, generator=g)
        outs = [kernel.binary_conv(x, wbits, o, 3, s, b, isa=isa, threads=1, **args) for isa in ISAS]
        for y in outs[1:]:
            assert torch.equal(y, outs[0]), (c, o)


def test_isa_forced_by_environment(monkeypatch):
    """BSR_BITPACK_ISA names a path (read once at import into FORCED_ISA); calls without isa= use it, an explicit
    isa= wins, a level the CPU lacks makes bitpack unavailable with a one-line reason, a bad name too."""
    assert kernel._isa_from_env(None) == kernel._isa_from_env("") == kernel._isa_from_env("auto") == -1
    assert [kernel._isa_from_env(v) for v in ("generic", "AVX2", " avx512 ", "amx")] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="expected one of"):
        kernel._isa_from_env("sse4")
    calls = []
    real = kernel._kernel

    class Spy:
        def __getattr__(self, name):
            return getattr(real, name)

        def conv(self, *args):
            calls.append(args[23])  # the ISA level (optional arguments follow it)
            return real.conv(*args)

    monkeypatch.setattr(kernel, "_kernel", Spy())
    x, wbits = torch.randn(1, 64, 3, 3), kernel.pack_weight_signs(torch.randn(8, 64, 3, 3))[0]
    for forced in ISAS:
        monkeypatch.setattr(kernel, "FORCED_ISA", forced)
        assert kernel.bitpack_available() == (True, f"{kernel.ISA_NAMES[forced]} (forced by BSR_BITPACK_ISA; best here: "
                                              f"{kernel.ISA_NAMES[kernel.best_isa()]}), OpenMP") or not real.openmp()
        kernel.binary_conv(x, wbits, 8, 3, torch.ones(8), torch.zeros(8))
        kernel.binary_conv(x, wbits, 8, 3, torch.ones(8), torch.zeros(8), isa=0)
    assert calls == [v for f in ISAS for v in (f, 0)]
    monkeypatch.setattr(kernel, "FORCED_ISA", kernel.best_isa() + 1)
    ok_, why_ = kernel.bitpack_available()
    assert not ok_ and "BSR_BITPACK_ISA" in why_ and "\n" not in why_
    with pytest.raises(RuntimeError):
        kernel.binary_conv(x, wbits, 8, 3, torch.ones(8), torch.zeros(8))
    monkeypatch.setattr(kernel, "FORCED_ISA", -1)
    monkeypatch.setattr(kernel, "_ISA_ERROR", "BSR_BITPACK_ISA='sse4': expected one of auto, generic, avx2, avx512")
    assert kernel.bitpack_available() == (False, kernel._ISA_ERROR)


def test_threads_give_the_same_result():
    g = torch.Generator().manual_seed(3)
    x, wt = torch.randn(2, 64, 17, 9, generator=g), torch.randn(64, 64, 3, 3, generator=g)
    wbits, _ = kernel.pack_weight_signs(wt)
    s, b = torch.rand(64, generator=g), torch.randn(64, generator=g)
    outs = [kernel.binary_conv(x, wbits, 64, 3, s, b, threads=t) for t in (1, 2, 3)]
    assert torch.equal(outs[0], outs[1]) and torch.equal(outs[0], outs[2])


# ------------------------------------------------------------------------------------------ whole models
def _binary_act_convs(model):
    return [m for m in model.modules() if isinstance(m, BinaryConv2d) and m.input_quantizer is not None]


def _dyadic(model, g):
    """Binary weights +-2^-6 (random signs), activation alphas 1/2, random thresholds, BN stats that keep the
    residual stream O(1), random RPReLU shifts. Spatial re-scaling convs get zero weights and bias (map = 0.5
    exactly): the kernel sums their K*K*C products in another order than oneDNN, and a one-ulp difference in a
    map can flip a later sign that sits on its threshold; `test_spatial_map_matches_torch` checks that routine."""
    for m in model.modules():
        if type(m) is SpatialRescale and type(m.conv) is torch.nn.Conv2d:
            m.conv.weight.data.zero_()
            m.conv.bias.data.zero_()
        if isinstance(m, BinaryConv2d) and m.input_quantizer is not None:
            m.weight.data = 2.0**-6 * _sign(torch.randn(m.weight.shape, generator=g))
            if hasattr(m.weight_quantizer, "init_from"):
                m.weight_quantizer.init_from(m.weight)
            q = m.input_quantizer
            if isinstance(q, ScaledSign):
                q.alpha.data.fill_(0.5)
            if getattr(q, "beta", None) is not None:
                q.beta.data = 0.1 * torch.randn(q.beta.shape, generator=g)
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.data = 2 * torch.randn(m.running_mean.shape, generator=g)
            m.running_var.data = 2000 + 2000 * torch.rand(m.running_var.shape, generator=g)
    for name, p in model.named_parameters():
        if name.endswith(("gamma", "zeta")):
            p.data = 0.1 * torch.randn(p.shape, generator=g)


# the E2FIF-shaped networks at 37x53 x4; wide or attention-heavy ones smaller to keep the suite fast
_FULL_SIZE = {"e2fif", "ebsr-baseline", "ebsr-light", "scales", "scales-c40", "bbcu-l", "bbcu-m"}


@pytest.mark.parametrize("name", list_models() if ok else [])
def test_model_matches_reference(name):
    from bsr_cli.bitpack.backend import FusedBinaryUnit, convert_model, count_bitpack_convs

    scales = get_model_info(name).scales
    scale = 4 if name in _FULL_SIZE and 4 in scales else min(scales)
    torch.manual_seed(0)  # the FP layers' init: unseeded, about 1 run in 8 put a value on a sign threshold
    model = create_model(name, scale).eval()
    binary = _binary_act_convs(model)
    if not binary:
        pytest.skip(f"{name}: no binary-activation conv (FP or weight-only binary model)")
    g = torch.Generator().manual_seed(0)
    _dyadic(model, g)
    h, w = (37, 53) if name in _FULL_SIZE else (11, 13)
    x = torch.rand(1, 3, h, w, generator=g)
    with torch.no_grad():
        ref = model(x.contiguous(memory_format=torch.channels_last))
        fast = convert_model(model, threads=1)
        y = fast(x)
    assert fast.bitpack_skipped == [] and count_bitpack_convs(fast) == len(binary)
    assert not _binary_act_convs(fast)
    for part in ("head", "body", "upsampler", "tail"):
        assert hasattr(fast, part)
    if name in _FULL_SIZE - {"bbcu-m"}:  # every unit of these bodies runs with its epilogue fused
        assert sum(isinstance(m, FusedBinaryUnit) for m in fast.modules()) == len(binary)
    assert y.shape == ref.shape == (1, 3, scale * h, scale * w)
    assert (y - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("name", ["e2fif", "ebsr-light", "scales-c40", "bbcu-m"])
def test_model_matches_reference_on_every_isa(name, isa, monkeypatch):
    """Whole converted models with the path forced as BSR_BITPACK_ISA does (FORCED_ISA): 64, 40 and 64->256
    channel convs, against the reference within 1e-5 (dyadic weights, as test_model_matches_reference)."""
    from bsr_cli.bitpack.backend import convert_model

    monkeypatch.setattr(kernel, "FORCED_ISA", isa)
    torch.manual_seed(0)  # FP head/tail weights: fixed, so that no value sits on a threshold by chance
    model = create_model(name, 4).eval()
    g = torch.Generator().manual_seed(0)
    _dyadic(model, g)
    x = torch.rand(1, 3, 13, 17, generator=g)
    with torch.no_grad():
        ref = model(x.contiguous(memory_format=torch.channels_last))
        y = convert_model(model, threads=1)(x)
    assert (y - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("name", ["e2fif", "bbcu-l", "ebsr-light", "scales-c40"])
def test_units_with_real_scales(name):
    """Default (kaiming) init, so alpha = mean|W| is not a power of two: one fused unit of each family against
    the reference unit on the same NCHW input, and a whole block including the fused mid LeakyReLU."""
    from bsr_cli.bitpack.backend import convert_model

    torch.manual_seed(0)
    model = create_model(name, 4).eval()
    block = model.body[0]
    for m in block.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_var.fill_(500.0)
    c = block.unit1.conv.in_channels
    x = torch.randn(1, c, 19, 23)
    with torch.no_grad():
        fast = convert_model(block)
        # the converted unit1 also applies the block's mid activation (fused into its epilogue)
        assert (fast.unit1(x) - block.mid_act(block.unit1(x))).abs().max().item() <= 1e-5
        assert (fast(x) - block(x)).abs().max().item() <= 1e-5


def test_unavailable_kernel_is_a_one_line_error(monkeypatch):
    from bsr_cli.bitpack import backend

    monkeypatch.setattr(kernel, "_kernel", None)
    monkeypatch.setattr(kernel, "_IMPORT_ERROR", "No module named 'bsr_cli.bitpack._kernel'")
    assert kernel.bitpack_available()[0] is False
    with pytest.raises(BsrError) as exc:
        backend.convert_model(create_model("scales-c40", 2))
    assert "\n" not in str(exc.value) and "bitpack" in str(exc.value)


def test_tiling_probe_sees_through_the_kernel():
    """bsr's receptive-field probe follows torch ops; under it the converted model runs its PyTorch form, so
    the probe finds the same radius (34 LR px for SCALES: 1 head + 32 binary + 1 tail conv) and global means."""
    from bsr_cli import tiling
    from bsr_cli.bitpack.backend import convert_model

    net = create_model("scales-c40", 4).eval()
    ref, fast = tiling.probe_model(net), tiling.probe_model(convert_model(net, threads=1))
    assert fast.receptive_radius == ref.receptive_radius == 34.0
    assert fast.global_ops == ref.global_ops == ["adaptive_avg_pool2d"]


@pytest.mark.parametrize("channels,k", [(64, 3), (40, 1), (70, 3), (130, 3)])
def test_spatial_map_matches_torch(channels, k):
    """The kernel's spatial re-scaling map (EBSR Eq. 5: sigmoid of a k x k conv C -> 1) equals torch's within
    float rounding on every ISA path, at odd sizes, channel counts not a multiple of 64, and saturated logits."""
    g = torch.Generator().manual_seed(channels)
    conv = torch.nn.Conv2d(channels, 1, k, padding=k // 2)
    x = 3 * torch.randn(2, channels, 9, 7, generator=g)
    with torch.no_grad():
        ref = torch.sigmoid(conv(x))
        for isa in range(kernel.best_isa() + 1):
            got = kernel.spatial_map(x, conv.weight, float(conv.bias), threads=2, isa=isa)
            assert got.shape == (2, 1, 9, 7)
            assert (got - ref).abs().max().item() <= 1e-6
    z = torch.tensor([-200.0, -90.0, -20.0, 0.0, 1e-3, 5.0, 20.0, 90.0, 200.0])
    for isa in range(kernel.best_isa() + 1):
        got = kernel.spatial_map(z.repeat(2).view(1, 1, 1, -1), torch.ones(1, 1, 1, 1), 0.0, threads=1, isa=isa)
        assert torch.allclose(got.flatten(), torch.sigmoid(z.repeat(2)), rtol=1e-6, atol=1e-12)
        assert got.flatten()[3].item() == 0.5


@pytest.mark.parametrize("isa", ISAS)
def test_next_unit_spatial_map_computed_in_kernel_call(isa, monkeypatch):
    """A fused unit whose output goes straight into the next unit computes that unit's spatial map (EBSR Eq. 5) in
    its own kernel call, rows one behind the epilogue: the same floats as the separate pass, bit for bit, across
    band borders (2 threads, 37 rows), with random non-zero map weights; 31 of ebsr-light's 32 maps move."""
    from bsr_cli.bitpack.backend import BitpackSpatialRescale, FusedBinaryUnit, convert_model

    monkeypatch.setattr(kernel, "FORCED_ISA", isa)
    torch.manual_seed(0)
    model = create_model("ebsr-light", 4).eval()
    for m in model.modules():
        if type(m) is SpatialRescale:
            torch.nn.init.normal_(m.conv.weight, std=0.05)
    fast = convert_model(model, threads=2)
    units = [m for m in fast.modules() if isinstance(m, FusedBinaryUnit)]
    linked = [u.emit_spatial for u in units]
    assert sum(bool(s) for s in linked) == 31
    names = [n for n, m in fast.named_modules(remove_duplicate=False) if isinstance(m, BitpackSpatialRescale)]
    assert len(names) == 32  # each map module has one place in the tree (the link is not a second child)
    calls = []
    real = kernel.spatial_map
    monkeypatch.setattr(kernel, "spatial_map", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        fused = fast(x)
        n_fused = len(calls)
        for u in units:
            u.emit_spatial = ()
        separate = fast(x)
    assert (n_fused, len(calls) - n_fused) == (1, 32)
    assert torch.equal(fused, separate)


@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("c,o,k1,k2", [(64, 64, 3, 3), (40, 40, 3, 1), (64, 256, 1, 3), (100, 70, 3, 3)])
def test_packed_handoff_bit_identical(isa, c, o, k1, k2):
    """A call that packs its output for the next conv (pack_next, sign(y + shift2) right after the epilogue) and the
    next call that takes those rows (packed_input, no packing pass) give exactly the outputs of two plain calls, on
    every path, across band borders (2 threads, 37 rows) and partial words (C = 40, 70, 100)."""
    g = torch.Generator().manual_seed(c + o + k2)
    x = torch.randn(2, c, 37, 23, generator=g)
    w1, w2 = torch.randn(o, c, k1, k1, generator=g), torch.randn(o, o, k2, k2, generator=g)
    (b1, _), (b2, _) = kernel.pack_weight_signs(w1), kernel.pack_weight_signs(w2)
    sc, bias, shift2 = torch.rand(o, generator=g) + 0.5, torch.randn(o, generator=g), 0.1 * torch.randn(o, generator=g)
    for threads in (1, 2):
        y = kernel.binary_conv(x, b1, o, k1, sc, bias, isa=isa, threads=threads)
        z = kernel.binary_conv(y, b2, o, k2, sc, bias, shift=shift2, residual=y, isa=isa, threads=threads)
        rows = kernel.PackedRows(2, 37, 23, o, isa=isa)
        y2 = kernel.binary_conv(x, b1, o, k1, sc, bias, isa=isa, threads=threads, pack_next=(shift2, rows))
        z2 = kernel.binary_conv(y2, b2, o, k2, sc, bias, shift=shift2, residual=y2, isa=isa, threads=threads,
                                packed_input=rows)
        assert torch.equal(y2, y) and torch.equal(z2, z)
    with pytest.raises(ValueError, match="packed rows"):  # rows of another shape or path are refused
        kernel.binary_conv(y, b2, o, k2, sc, bias, isa=isa, packed_input=kernel.PackedRows(2, 36, 23, o, isa=isa))


@pytest.mark.parametrize("name, links", [("e2fif", 31), ("bbcu-l", 31), ("ebsr-light", 0)])
def test_units_with_fixed_thresholds_hand_on_packed_rows(name, links, monkeypatch):
    """Consecutive fused units whose next threshold is fixed (E2FIF's sign, BBCU's learned per-channel beta) keep
    the activations packed between calls: 31 of 32 calls skip packing; EBSR's threshold comes from its input, so it
    packs as before. Outputs are bit-identical to the unlinked network."""
    import copy

    from bsr_cli.bitpack.backend import FusedBinaryUnit, convert_model

    torch.manual_seed(0)
    ref = create_model(name, 4).eval()
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0)
    fast = convert_model(ref, threads=2)
    slow = copy.deepcopy(fast)
    for unit in slow.modules():
        if isinstance(unit, FusedBinaryUnit):
            unit.emit_packed = ()
    assert sum(bool(u.emit_packed) for u in fast.modules() if isinstance(u, FusedBinaryUnit)) == links
    given = []
    real = kernel.binary_conv
    monkeypatch.setattr(kernel, "binary_conv", lambda *a, **k: given.append(k.get("packed_input")) or real(*a, **k))
    x = torch.rand(1, 3, 37, 29, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = fast(x)
        assert sum(p is not None for p in given) == links
        assert torch.equal(a, slow(x))


def test_float_parts_in_bf16(monkeypatch):
    """--float-precision bf16 runs the FP parts after the body in bf16 autocast (e2fif: its upsampler; its tail is
    Identity, and the head stays fp32 because the body binarizes its output), with float32 outputs within a few
    grey levels of fp32; fp32 undoes it. auto (a rule, not a timing): bf16 only on a CPU with native bf16 and for
    a model with > 10 % of its twin's FLOPs in float (bbcu-l, not e2fif)."""
    from bsr_cli.backends import float_precision_for, load
    from bsr_cli.bitpack import backend as bb

    net = load("e2fif", 4, backend="torch", threads=1).model  # shipped weights (random ones amplify any rounding)
    fp32, bf16 = bb.convert_model(net, threads=1), bb.convert_model(net, threads=1, float_precision="bf16")
    assert [n for n in ("head", *bb.BF16_PARTS) if isinstance(getattr(bf16, n), bb.Bf16FloatPart)] == ["upsampler"]
    assert (fp32.float_precision, bf16.float_precision) == ("fp32", "bf16")
    x = torch.rand(1, 3, 24, 20, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        a, b = fp32(x), bf16(x)
        assert b.dtype == torch.float32 and 0 < float((a - b).abs().max()) < 4 / 255
        assert torch.equal(bb.set_float_precision(bf16, "fp32")(x), a)
    monkeypatch.setattr("bsr_cli.cpu.cpu_has_native_bf16", lambda: False)
    assert float_precision_for("bbcu-l", 4, "auto")[0] == "fp32"
    assert float_precision_for("bbcu-l", 4, "bf16")[0] == "bf16"
    monkeypatch.setattr("bsr_cli.cpu.cpu_has_native_bf16", lambda: True)
    assert float_precision_for("bbcu-l", 4, "auto")[0] == "bf16" and float_precision_for("e2fif", 4, "auto")[0] == "fp32"
    with pytest.raises(BsrError, match="unknown"):
        float_precision_for("e2fif", 4, "fp16")
    with pytest.raises(BsrError, match="unknown float precision"):
        bb.convert_model(net, float_precision="fp16")


@pytest.mark.parametrize("name, binary, on_kernel, matmuls", [
    ("srresnet-fp", 0, 0, 0), ("ma2019-bwn", 32, 0, 0), ("e2fif", 32, 32, 0), ("bbcu-m", 35, 35, 0),
    ("ebsr", 64, 64, 0), ("bibert-swinir", 100, 100, 48), ("scales-swinir", 100, 100, 48),
])
def test_kernel_coverage_is_what_convert_model_runs(name, binary, on_kernel, matmuls):
    """`bsr models --cost` says how much of each model the 1-bit kernel runs; convert_model agrees."""
    from bsr_cli.bitpack.backend import convert_model, count_bitpack_convs, kernel_coverage

    net = create_model(name, 4).eval()
    cov = kernel_coverage(net)
    assert (cov["binary"], cov["on_kernel"], cov["binary_matmuls"]) == (binary, on_kernel, matmuls)
    if on_kernel:
        assert count_bitpack_convs(convert_model(net, threads=1)) == on_kernel


def test_fused_units_hand_the_next_unit_their_channel_means():
    """The kernel sums each output row while it is in cache; the next unit's pooling branches take those means
    (31 of ebsr-light's 32 units: all but the first, whose input is the FP head's); outputs are unchanged."""
    import copy

    from bsr_cli.bitpack.backend import CachedGlobalMean, FusedBinaryUnit, convert_model

    torch.manual_seed(0)
    ref = create_model("ebsr-light", 4).eval()
    fast = convert_model(ref, threads=1)
    slow = copy.deepcopy(fast)
    for unit in slow.modules():
        if isinstance(unit, FusedBinaryUnit):
            unit.emit_means = False
    assert sum(isinstance(u, CachedGlobalMean) for u in fast.modules()) == 31
    assert sum(isinstance(u, FusedBinaryUnit) and u.emit_means for u in fast.modules()) == 31
    x = torch.rand(1, 3, 37, 53, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a, b, r = fast(x), slow(x), ref(x)
    assert float((a - b).abs().max()) < 1e-5 and float((a - r).abs().max()) < 1e-5
    rows = torch.zeros(1, 37, 64)
    conv = fast.body[0].unit1.conv
    feat = torch.randn(1, 64, 37, 53).contiguous(memory_format=torch.channels_last)
    y = kernel.binary_conv(feat, conv.wbits, 64, 3, conv.scale, conv.bias, row_sums=rows, threads=1)
    assert torch.allclose(rows.sum(1), y.sum((2, 3)), rtol=1e-5, atol=1e-3)


@pytest.mark.skipif(not ok or kernel.best_isa() < 3, reason="no AMX-INT8 path on this CPU")
def test_amx_tiles_made_once_per_layer():
    """The AMX path's weight tiles made once (amx_weight_tiles, kept by BitpackConv2d) give the same output as
    tiles made inside the call; tiles of other weights' shape are refused."""
    g = torch.Generator().manual_seed(5)
    x, wt = torch.randn(1, 40, 11, 19, generator=g), torch.randn(24, 40, 3, 3, generator=g)
    wbits, _ = kernel.pack_weight_signs(wt)
    tiles = kernel.amx_weight_tiles(wbits, 40, 24)
    assert tiles.numel() == 9 * 1 * 2 * 1024 and tiles.data_ptr() % 64 == 0
    args = (x, wbits, 24, 3, torch.rand(24, generator=g), torch.randn(24, generator=g))
    ref = kernel.binary_conv(*args, isa=2, threads=2)
    assert torch.equal(kernel.binary_conv(*args, isa=3, threads=2, amx_tiles=tiles), ref)
    assert torch.equal(kernel.binary_conv(*args, isa=3, threads=2), ref)
    with pytest.raises(ValueError, match="amx_tiles"):
        kernel.binary_conv(*args, isa=3, amx_tiles=tiles[:1024])
