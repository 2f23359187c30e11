"""The command line. `main` turns expected errors into one line on stderr and a non-zero exit."""

from __future__ import annotations

import signal
import sys
import threading

import typer

from .. import __version__
from ..errors import EtcdBackupError
from .agent import agent_app
from .k8s import catalog_cmd, get_cmd, install_cmd, list_cmd, manifests_cmd, now_cmd, restore_cmd, status_cmd
from .snapshots import keygen_cmd, prune_cmd, quickstart_cmd, verify_cmd

# rich_markup_mode=None: plain, kubectl-like help, and usage errors end in one "Error: ..." line.
app = typer.Typer(name="kubectl-etcdbackup", no_args_is_help=True, pretty_exceptions_enable=False,
                  rich_markup_mode=None, add_completion=False,
                  help="Safe, fast and boring etcd backup and restore (kubectl etcdbackup ...).")
agent_app.command("catalog")(catalog_cmd)
app.add_typer(agent_app, name="agent")
snapshot_app = typer.Typer(help="Work with single snapshot files.", no_args_is_help=True)
snapshot_app.command("get")(get_cmd)
app.add_typer(snapshot_app, name="snapshot")
app.command("list")(list_cmd)
app.command("verify")(verify_cmd)
app.command("prune")(prune_cmd)
app.command("restore")(restore_cmd)
app.command("keygen")(keygen_cmd)
app.command("quickstart")(quickstart_cmd)
# in a cluster (they also take --kubeconfig, --context, -n)
app.command("manifests")(manifests_cmd)
app.command("install")(install_cmd)
app.command("now")(now_cmd)
app.command("status")(status_cmd)


@app.command("version")
def version_cmd() -> None:
    """Print the version."""
    print(__version__)


def _terminate(signum: int, _frame: object) -> None:
    # Kubernetes stops a Job with SIGTERM: unwind so partial uploads are aborted and temp files removed.
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _terminate)
    try:
        # Standalone mode: typer reports usage errors itself (exit 2) and exits with each command's code.
        app(args=argv, prog_name="kubectl-etcdbackup", standalone_mode=True)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except EtcdBackupError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
