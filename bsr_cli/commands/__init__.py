"""One module per CLI command; each exposes a function `command` that typer registers in `bsr_cli.cli`."""
