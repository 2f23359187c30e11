"""`keygen`: a new encryption key, or a rotated keyring file."""

from __future__ import annotations

from typing import Annotated

import typer

from ..errors import UsageError
from . import render


def register(app: typer.Typer) -> None:
    app.command("keygen")(keygen_cmd)


def keygen_cmd(
    rotate: Annotated[str | None, typer.Option(
        "--rotate", metavar="KEY_FILE", help="put a new key first in this keyring file (mode 0600), keeping the "
        "older ones to open the snapshots they sealed; then update the Secret from the file")] = None,
    keep: Annotated[int | None, typer.Option(min=1, help="with --rotate: keep only the newest N old keys")] = None,
) -> None:
    """Print a new random encryption key (base64) for the key Secret, or rotate a keyring file."""
    from ..keys import generate_key, rotate_key_file

    if rotate is None:
        if keep is not None:
            raise UsageError("--keep needs --rotate")
        render.out(generate_key())
        return
    new_id, old_ids = rotate_key_file(rotate, keep)
    render.note(f"{rotate}: new key {new_id} seals from now on; older keys kept to open old snapshots: "
                f"{', '.join(old_ids) or 'none'}")
