"""bsr: binary neural network (1-bit) image super-resolution."""
import os

__version__ = "0.1.0"

# OpenMP threads (the bitpack kernel's and torch's, one libgomp) sleep when idle instead of spinning. libgomp
# reads this once, when torch or the kernel first loads it, so it is set here, before either is imported; a
# value the user set wins. Measured 2026-12-04 on the 2-vCPU AMD EPYC Zen 4 (AVX-512 VPOPCNTDQ, no AMX),
# ebsr-light x4 LR 128x128 on bitpack, 2 threads: with two other busy processes 126 ms passive vs 312-467 ms
# default spinning; quiet, 47-51 ms vs 47-76 ms (and 79-85 vs 95-151 ms CPU); 1 thread quiet 79-82 vs 76-80 ms.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
