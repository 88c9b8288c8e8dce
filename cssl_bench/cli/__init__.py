"""``cssl-bench`` command line. Thin commands: parse, call one function below, print with rich.

Errors caused by input (``UserError``, bad options) print one line and exit non-zero (2 for unknown
names and option values); ``--debug`` shows the traceback of unexpected errors.
"""

from __future__ import annotations

import os
import re
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # before torch is imported anywhere

import click  # noqa: E402
import typer  # noqa: E402

try:  # typer >= 0.20 vendors its own click: catch both families of exceptions
    from typer._click import exceptions as _tce  # type: ignore
except ImportError:  # pragma: no cover
    _tce = click.exceptions

_NoArgs = (click.exceptions.NoArgsIsHelpError, getattr(_tce, "NoArgsIsHelpError", click.exceptions.NoArgsIsHelpError))
_Usage = (click.exceptions.UsageError, _tce.UsageError)
_ClickExc = (click.exceptions.ClickException, _tce.ClickException)
_Abort = (click.exceptions.Abort, typer.Abort, KeyboardInterrupt)
_Exit = (click.exceptions.Exit, typer.Exit)

from cssl_bench import UserError  # noqa: E402
from cssl_bench.cli import commands  # noqa: E402,F401  (registers the commands)
from cssl_bench.cli.app import app  # noqa: E402

_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def _unwrap_worker_error(text: str) -> tuple[str | None, str]:
    """(exception type name, message) of an error that torch's DataLoader re-raised from a worker process:
    its message is "Caught X in DataLoader worker process N." plus the worker's formatted traceback, whose
    last line is ``module.X: the original message``. (None, text) for any other message."""
    if _WORKER_TRACEBACK not in text:
        return None, text
    last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), "")
    m = re.match(r"([A-Za-z_][\w.]*)(?::\s?(.*))?$", last)
    if not m:
        return None, last.strip()
    return m.group(1).rsplit(".", 1)[-1], (m.group(2) or "").strip()


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    if debug:
        args.remove("--debug")
    try:
        rv = app(args=args, prog_name="cssl-bench", standalone_mode=False)
    except UserError as e:
        if debug:
            raise
        _, msg = _unwrap_worker_error(str(e))  # a UserError of a DataLoader worker: its one line, not the traceback
        print(f"error: {msg}", file=sys.stderr)
        sys.exit(e.exit_code)
    except _NoArgs as e:
        print(e.ctx.get_help() if e.ctx else str(e))
        sys.exit(0)
    except _Usage as e:
        msg = e.format_message().replace("\n", " ")
        print(
            f"error: {msg} (see 'cssl-bench {e.ctx.command_path.split(' ', 1)[1] + ' ' if e.ctx and ' ' in e.ctx.command_path else ''}--help')",
            file=sys.stderr,
        )
        sys.exit(2)
    except _ClickExc as e:
        print(f"error: {e.format_message()}", file=sys.stderr)
        sys.exit(e.exit_code)
    except _Abort:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except _Exit as e:
        sys.exit(e.exit_code)
    except Exception as e:  # noqa: BLE001
        if debug:
            raise
        name, text = _unwrap_worker_error(str(e))
        first = text.splitlines()[0][:200] if text else ""
        print(f"error: {name or type(e).__name__}: {first} (run with --debug for the traceback)", file=sys.stderr)
        sys.exit(1)
    if isinstance(rv, int) and rv:
        if rv == 130:  # typer (standalone_mode=False) returns Ctrl-C as exit code 130, silently
            print("interrupted", file=sys.stderr)
        sys.exit(rv)
