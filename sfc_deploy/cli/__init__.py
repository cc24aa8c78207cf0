"""The ``sfc-deploy`` typer app. Thin: each sub-command parses options and calls the library.

Each command group lives in its own module with a ``register(app)`` function; :data:`COMMAND_MODULES`
lists them. Every way a command can end is mapped here, once, to one line on stderr and a documented
exit code (:data:`EXIT_CODES`); the traceback of an unexpected error is printed only with ``--debug``
or ``SFC_DEPLOY_DEBUG=1``. SIGTERM is turned into an exit through ``finally`` clauses, so a command
killed mid-write leaves no partial output, exactly like SIGINT.
"""

from __future__ import annotations

import importlib
import os
import signal
import traceback

import typer
from typer.core import TyperGroup

try:  # typer >= 0.24 vendors its own click; older releases use the click package
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions

from sfc_deploy.common.atomic import terminate_as_exit
from sfc_deploy.common.text import one_line
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
    "sfc_deploy.cli.scale",
    "sfc_deploy.cli.serve",
)

#: the exit codes every command uses (README: "Exit codes")
EXIT_CODES = {
    0: "success",
    1: "a check failed (verify past a tolerance or an artifact that does not load)",
    2: "usage error or bad input (one line on stderr names the problem and the fix)",
    70: "unexpected internal error (a bug: rerun with --debug for the traceback and report it)",
    130: "interrupted (SIGINT / Ctrl-C); partial output removed",
    143: "terminated (SIGTERM); partial output removed",
}
MAX_MESSAGE = 600
_DEBUG = {"on": False}


def _error(message: object, code: int) -> typer.Exit:
    typer.echo(f"error: {one_line(message, MAX_MESSAGE)}", err=True)
    return typer.Exit(code)


def debug_enabled() -> bool:
    return _DEBUG["on"] or os.environ.get("SFC_DEPLOY_DEBUG", "") not in ("", "0")


class _Group(TyperGroup):
    """Maps every ending of every sub-command to one line and an exit code (see :data:`EXIT_CODES`)."""

    def invoke(self, ctx):  # noqa: D102
        try:
            with terminate_as_exit():
                return super().invoke(ctx)
        except SfcError as exc:
            raise _error(exc, 2) from None
        except click_exceptions.NoArgsIsHelpError:
            raise
        except click_exceptions.UsageError as exc:  # bad option values, range checks, unknown options
            where = f" (see {exc.ctx.command_path} --help)" if exc.ctx is not None else ""
            raise _error(f"{exc.format_message().rstrip('.')}{where}", 2) from None
        except (typer.Exit, typer.Abort):
            raise
        except KeyboardInterrupt:
            raise _error("interrupted; partial output removed", 130) from None
        except SystemExit as exc:
            if exc.code == 128 + signal.SIGTERM:
                raise _error("terminated (SIGTERM); partial output removed", 143) from None
            raise
        except Exception as exc:  # noqa: BLE001 - the boundary: nothing leaves as a traceback
            if debug_enabled():
                traceback.print_exc()
            raise _error(
                f"unexpected {type(exc).__name__}: {exc} (a bug in sfc-deploy: rerun with --debug for the traceback "
                "and report it)",
                70,
            ) from None


app = typer.Typer(
    name="sfc-deploy",
    cls=_Group,
    help="Selective Feature Compression: classify a whole video in one pass instead of 30-crop dense sampling.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    add_completion=False,
)


@app.callback()
def _root(
    debug: bool = typer.Option(False, "--debug", help="Print the traceback of an unexpected error (or set SFC_DEPLOY_DEBUG=1)."),
) -> None:
    """Selective Feature Compression: classify a whole video in one pass instead of 30-crop dense sampling.

    Exit codes: 0 success, 1 a check failed, 2 usage error or bad input, 70 internal error,
    130 interrupted, 143 terminated. Every error is one line on stderr.
    """
    _DEBUG["on"] = debug


for _module in COMMAND_MODULES:
    importlib.import_module(_module).register(app)


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error and exit non-zero (for checks that only the CLI makes)."""
    raise _error(message, code)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except KeyboardInterrupt:  # before a sub-command started (imports, parsing)
        typer.echo("error: interrupted", err=True)
        raise SystemExit(130) from None
