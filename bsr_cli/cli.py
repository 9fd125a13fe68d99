"""The `bsr` command line: registers one typer command per module in `bsr_cli.commands`.

Every command raises `BsrError` for user-facing failures; `main` turns those (and Ctrl-C) into a one-line
message on stderr and the error's exit code (`bsr_cli.errors`: 0 ok, 1 some inputs failed, 2 usage,
3 network/download), never a traceback. No Python warning reaches the terminal: `main` silences them unless
the interpreter was started with `-W` (developers who want to see them).
"""
from __future__ import annotations

import importlib
import sys
import warnings

import typer

from bsr_cli.errors import BsrError

app = typer.Typer(
    name="bsr",
    help="Binary neural network (1-bit) image super-resolution: upscale, eval, export, profile, train.",
    no_args_is_help=True,
    epilog="Exit codes: 0 ok; 1 some inputs failed (each listed once); 2 usage error; "
           "3 network or download failure (unreachable, checksum mismatch, offline with a file missing).",
    add_completion=False,
    pretty_exceptions_enable=False,
)



def _version(value: bool) -> None:
    if value:
        from bsr_cli import __version__

        print(f"bsr {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Binary neural network (1-bit) image super-resolution."""


# command name -> module in bsr_cli.commands (each defines `command`)
COMMANDS = {
    "upscale": "upscale",
    "eval": "eval",
    "export": "export",
    "profile": "profile",
    "train": "train",
    "download": "download",
    "models": "models",
}


def _register() -> None:
    for name, module in COMMANDS.items():
        mod = importlib.import_module(f"bsr_cli.commands.{module}")
        app.command(name)(mod.command)


_register()


def main(argv: list[str] | None = None) -> int:
    """Console-script entry point: runs the command with Python warnings silenced (see the module docstring)."""
    with warnings.catch_warnings():
        if not sys.warnoptions:
            warnings.simplefilter("ignore")
        return _run(argv)


def _run(argv: list[str] | None) -> int:
    try:
        rv = app(args=argv, standalone_mode=False)
    except BsrError as exc:
        print(f"bsr: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("bsr: interrupted", file=sys.stderr)
        return 130
    except SystemExit as exc:  # typer/click exits (e.g. --help)
        return int(exc.code or 0) if not isinstance(exc.code, str) else 1
    except Exception as exc:  # click's usage errors, Exit and Abort (typer vendors click)
        kind = type(exc).__name__
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # ClickException / UsageError
            exc.show(file=sys.stderr)
            return exc.exit_code
        if kind == "Exit":
            return getattr(exc, "exit_code", 0)
        if kind == "Abort":
            print("bsr: aborted", file=sys.stderr)
            return 1
        raise
    return rv if isinstance(rv, int) else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
