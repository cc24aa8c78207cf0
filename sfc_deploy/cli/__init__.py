"""The ``sfc-deploy`` typer app. Thin: each sub-command parses options and calls the library.

Each command group lives in its own module with a ``register(app)`` function; :data:`COMMAND_MODULES`
lists them. Any :class:`~sfc_deploy.errors.SfcError` becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib


import typer
from typer.core import TyperGroup

from sfc_deploy.errors import SfcError

COMMAND_MODULES: tuple[str, ...] = (
    "sfc_deploy.cli.data",
    "sfc_deploy.cli.info",
    "sfc_deploy.cli.export",
    "sfc_deploy.cli.convert",
    "sfc_deploy.cli.train",
    "sfc_deploy.cli.eval",
    "sfc_deploy.cli.predict",
    "sfc_deploy.cli.bench",
)


class _Group(TyperGroup):
    """Turns typed errors into a one-line message and exit code 2, for every sub-command."""

    def invoke(self, ctx):  # noqa: D102
        try:
            return super().invoke(ctx)
        except SfcError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None


app = typer.Typer(
    name="sfc-deploy",
    cls=_Group,
    help="Selective Feature Compression: classify a whole video in one pass instead of 30-crop dense sampling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)



@app.callback()
def _root() -> None:
    """Selective Feature Compression: classify a whole video in one pass instead of 30-crop dense sampling."""


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit non-zero (for checks that only the CLI makes)."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


def main() -> None:
    """Console-script entry point."""
    app()
