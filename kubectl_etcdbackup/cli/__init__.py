"""The command line: `kubectl etcdbackup ...` (kubectl runs the `kubectl-etcdbackup` console script).

One module per command group (`*_cmd.py`), each thin: parse the options, call one use case, render its report.
`main` is the one place where errors become a line on stderr and an exit code (errors.ExitCode); `--traceback`
(anywhere on the line, or ETCDBACKUP_TRACEBACK=1) shows the Python traceback instead. Command modules import
the engine inside the commands, so `--help` and completion stay fast.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import traceback

import typer
from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from .. import __version__
from ..errors import EXIT_CODES_HELP, EtcdBackupError, ExitCode
from . import (
    agent_cmd,
    completion_cmd,
    delete_cmd,
    drill_cmd,
    import_cmd,
    install_cmd,
    keygen_cmd,
    list_cmd,
    now_cmd,
    pitr_cmd,
    prune_cmd,
    quickstart_cmd,
    restore_cmd,
    snapshot_cmd,
    status_cmd,
    stream_cmd,
    verify_cmd,
)

PROG = "kubectl etcdbackup"
CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 110}


def _version(value: bool) -> None:
    if value:
        print(f"kubectl-etcdbackup {__version__}")
        raise typer.Exit()


app = typer.Typer(name="kubectl-etcdbackup", no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, add_completion=False, context_settings=CONTEXT,
                  help="Safe, fast and boring etcd backup and restore.", epilog=EXIT_CODES_HELP)


@app.callback()
def _root(version: bool = typer.Option(False, "--version", callback=_version, is_eager=True,
                                       help="print the version and exit")) -> None:
    """Safe, fast and boring etcd backup and restore."""


@app.command("version")
def _version_cmd() -> None:
    """Print the version (just the number, for scripts; --version says the name too)."""
    print(__version__)


def _register() -> None:
    for module in (list_cmd, verify_cmd, prune_cmd, delete_cmd, restore_cmd, keygen_cmd, quickstart_cmd,
                   install_cmd, now_cmd, status_cmd, completion_cmd):
        module.register(app)
    snapshot_app = typer.Typer(help="Single snapshot files: download, import.", no_args_is_help=True,
                               context_settings=CONTEXT)
    snapshot_cmd.register(snapshot_app)
    import_cmd.register(snapshot_app)
    pitr_cmd.register(snapshot_app)
    app.add_typer(snapshot_app, name="snapshot")
    agent = typer.Typer(help="What runs in the cluster: scheduled backups, the metrics exporter, the monitor.",
                        no_args_is_help=True, context_settings=CONTEXT)
    agent_cmd.register(agent)
    stream_cmd.register(agent)
    drill_cmd.register(agent)
    app.add_typer(agent, name="agent")


_register()


def _terminate(signum: int, _frame: object) -> None:
    # Kubernetes stops a Job with SIGTERM: unwind so partial uploads are aborted and temp files removed.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    show_traceback = "--traceback" in args or os.environ.get("ETCDBACKUP_TRACEBACK") == "1"
    args = [a for a in args if a != "--traceback"]
    if completion_cmd.COMPLETE_VAR in os.environ:  # the shell asks for completions (see `completion`)
        completion_cmd.enable_shells()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        rc = typer.main.get_command(app).main(args=args, prog_name=PROG, complete_var=completion_cmd.COMPLETE_VAR,
                                              standalone_mode=False)  # a command's typer.Exit(n) returns n here
        return rc if isinstance(rc, int) else ExitCode.OK
    except typer.Exit as e:
        return e.exit_code
    except NoArgsIsHelpError as e:  # a group without its command: its help, as with -h
        print(e.ctx.get_help() if e.ctx else "")
        return ExitCode.OK
    except UsageError as e:  # one line, like kubectl: what is wrong and where help is
        where = e.ctx.command_path if e.ctx else PROG
        return _fail(f"{e.format_message()} (see '{where} -h')", ExitCode.USAGE, show_traceback)
    except ClickException as e:
        return _fail(e.format_message(), ExitCode.USAGE, show_traceback)
    except typer.Abort:
        return _fail("aborted", ExitCode.INTERRUPTED, show_traceback)
    except EtcdBackupError as e:
        return _fail(str(e), e.exit_code, show_traceback)
    except KeyboardInterrupt:
        return _fail("interrupted", ExitCode.INTERRUPTED, show_traceback)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (ExitCode.OK if e.code is None else ExitCode.FAILED)
    except ModuleNotFoundError as e:  # an install without the extra this command needs
        return _fail(f"this command needs the Python module {e.name}: install kubectl-etcdbackup[plugin] (the "
                     "krew archive has it)", ExitCode.FAILED, show_traceback)
    except Exception as e:  # noqa: BLE001 - a bug: one line unless --traceback
        return _fail(f"unexpected {type(e).__name__}: {e} (run again with --traceback to see where)",
                     ExitCode.FAILED, show_traceback)
    return ExitCode.OK


def _fail(message: str, code: int, show_traceback: bool) -> int:
    if show_traceback:
        traceback.print_exc()
    print(f"error: {message}", file=sys.stderr)
    return code


if __name__ == "__main__":
    sys.exit(main())
