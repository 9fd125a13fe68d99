"""bitpack: compiled XNOR-popcount backend for the binary convs of the zoo (inference only).

`convert_model(model)` returns a copy whose binary convs run on the C kernel (`_kernel.c`);
`bitpack_available()` says whether the kernel was built and which ISA it will use.
"""
from bsr_cli.bitpack.kernel import bitpack_available

__all__ = ["bitpack_available", "convert_model"]


def convert_model(model, threads=None, float_precision="fp32"):
    """See `bsr_cli.bitpack.backend.convert_model`."""
    from bsr_cli.bitpack.backend import convert_model as _convert

    return _convert(model, threads, float_precision)
