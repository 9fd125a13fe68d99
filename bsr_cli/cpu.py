"""What this CPU offers that changes which float path is fastest (read from /proc/cpuinfo, Linux)."""
from __future__ import annotations

import re
from pathlib import Path


def cpu_has_native_bf16() -> bool:
    """True when /proc/cpuinfo lists AMX-BF16 or AVX512-BF16 (oneDNN then runs bf16 convs natively; without them
    bf16 autocast is emulated and measured ~6x slower than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return bool(re.search(r"\b(amx_bf16|avx512_bf16)\b", flags))
