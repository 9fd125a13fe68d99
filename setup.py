"""Build the optional C extension `bsr_cli.bitpack._kernel` (metadata lives in pyproject.toml).

The extension is optional: if no C compiler (or no OpenMP) is available the package still installs, and
`--backend bitpack` reports a one-line error. OpenMP is tried first, then a single-threaded build.
"""
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


class OptionalBuildExt(build_ext):
    """build_ext that retries without OpenMP and never fails the install."""

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
            return
        except Exception as exc:  # noqa: BLE001 - compiler errors come in many types
            self.warn(f"bitpack: build with OpenMP failed ({exc}); retrying single-threaded")
        ext.extra_compile_args = [a for a in ext.extra_compile_args if a != "-fopenmp"]
        ext.extra_link_args = [a for a in ext.extra_link_args if a != "-fopenmp"]
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001
            self.warn(f"bitpack: C extension not built ({exc}); `--backend bitpack` will be unavailable")

    def run(self):
        try:
            super().run()
        except Exception as exc:  # noqa: BLE001 - e.g. no compiler at all
            self.warn(f"bitpack: C extension not built ({exc}); `--backend bitpack` will be unavailable")


setup(
    ext_modules=[
        Extension(
            "bsr_cli.bitpack._kernel",
            sources=["bsr_cli/bitpack/_kernel.c"],
            # -fno-trapping-math: lets GCC if-convert the epilogue's leaky-ReLU selects without AVX-512 masks (the
            # AVX2 and portable paths ran that loop scalar: 10 ms vs 1.4 per 64->64 conv at 128x128). It changes no
            # value (rounding is untouched; only FP-exception flags, which nothing reads, may differ).
            extra_compile_args=["-O3", "-fno-trapping-math", "-fopenmp", "-std=c11"],
            extra_link_args=["-fopenmp"],
            libraries=["m"],
        )
    ],
    cmdclass={"build_ext": OptionalBuildExt},
)
