"""bsr: binary neural network (1-bit) image super-resolution."""

__version__ = "0.1.0"
