"""`completion bash|zsh|fish`: the shell completion script."""

from __future__ import annotations

from typing import Annotated

import typer

from . import render

PROG = "kubectl-etcdbackup"
COMPLETE_VAR = "_KUBECTL_ETCDBACKUP_COMPLETE"
SHELLS = ("bash", "zsh", "fish")


def register(app: typer.Typer) -> None:
    app.command("completion")(completion_cmd)
    app.command("__complete", hidden=True, context_settings={"ignore_unknown_options": True,
                                                             "allow_extra_args": True})(complete_cmd)


def enable_shells() -> None:
    """Register the shells whose completion requests the program answers (typer does it only for its own
    --install-completion, which a kubectl plugin does not offer)."""
    from typer._completion_classes import completion_init

    completion_init()


def completion_cmd(shell: Annotated[str, typer.Argument(help="bash, zsh or fish", metavar="SHELL")]) -> None:
    """Print the completion script for a shell, e.g. `source <(kubectl-etcdbackup completion bash)`. For
    `kubectl etcdbackup <TAB>` (kubectl 1.26+), also put an executable `kubectl_complete-etcdbackup` on PATH that
    runs `kubectl-etcdbackup __complete "$@"`."""
    from typer._completion_shared import get_completion_script

    from ..errors import UsageError

    if shell not in SHELLS:
        raise UsageError(f"unsupported shell {shell!r} (use {', '.join(SHELLS)})")
    render.out(get_completion_script(prog_name=PROG, complete_var=COMPLETE_VAR, shell=shell))


def complete_cmd(ctx: typer.Context) -> None:
    """kubectl's plugin completion protocol (cobra's): the words so far, the last one being completed; prints one
    candidate per line, then `:4` (no file completion)."""
    from typer._completion_classes import BashComplete

    words = list(ctx.args)
    incomplete = words.pop() if words else ""
    for item in BashComplete(ctx.find_root().command, {}, PROG, COMPLETE_VAR).get_completions(words, incomplete):
        render.out(item.value)
    render.out(":4")
