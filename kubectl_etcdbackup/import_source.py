"""A foreign snapshot file opened as the raw etcd snapshot it holds, layer by layer: gpg (the real `gpg` binary, the
passphrase read from a file, never argv), zip (one member, as k3s/RKE2 compress) and gzip (Python), each layer told
by its content. Nothing is written but gpg's throwaway home directory.

Decoding failures become one-line errors. When gpg fails, its reason (wrong passphrase, tampered or truncated file)
is the error, not what the layers inside made of its partial output.
"""

from __future__ import annotations

import gzip
import io
import shutil
import subprocess
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import BinaryIO, cast

from .errors import EtcdBackupError, FormatError, IntegrityError, ToolError, TruncatedError, UsageError
from .import_detect import DB, GPG, SNIFF_BYTES, ZIP, sniff

CHUNK = 1 << 20
GPG_EXIT_TIMEOUT = 60.0  # gpg has written everything; it only has to check and exit
_DECODE_ERRORS = (OSError, EOFError, zlib.error, zipfile.BadZipFile)  # BadGzipFile is an OSError


class _Prefixed(io.RawIOBase):
    """`head` (bytes already read to sniff the kind), then the rest of `rest`."""

    def __init__(self, head: bytes, rest: BinaryIO):
        self._head = head
        self._rest = rest

    def readable(self) -> bool:
        return True

    def readinto(self, b: memoryview) -> int:  # type: ignore[override]
        data = self._head[:len(b)] if self._head else self._rest.read(len(b))
        self._head = self._head[len(data):]
        b[:len(data)] = data
        return len(data)


class _Gpg:
    """`gpg --decrypt FILE` with a throwaway home (no keyring, no agent), its stderr kept for the error."""

    def __init__(self, path: Path, passphrase_file: str, home: Path):
        binary = shutil.which("gpg")
        if binary is None:
            raise ToolError("gpg is not installed; it is needed to decrypt gpg files")
        home.mkdir(mode=0o700)
        self._stderr = open(home / "stderr", "w+b")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [binary, "--homedir", str(home), "--batch", "--no-tty", "--quiet", "--no-autostart",
             "--pinentry-mode", "loopback", "--no-symkey-cache", "--passphrase-file", passphrase_file,
             "--decrypt", "--", str(path)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr)
        assert self.proc.stdout is not None
        self.stdout = cast(BinaryIO, self.proc.stdout)

    def failure(self) -> str:
        """"" when gpg exited 0, else why it failed. Reads what gpg still writes (its verdict on a tampered or
        truncated file comes only at the end), then waits for its exit, bounded."""
        while self.stdout.read(CHUNK):
            pass
        try:
            code = self.proc.wait(GPG_EXIT_TIMEOUT)
        except subprocess.TimeoutExpired:
            return f"gpg did not exit within {GPG_EXIT_TIMEOUT:.0f} s"
        if code == 0:
            return ""
        self._stderr.seek(0)
        lines = [ln.strip() for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        line = next((ln for key in ("decryption failed", "manipulated") for ln in lines if key in ln),
                    lines[0] if lines else f"exit code {code}")
        hint = "wrong passphrase?" if "Bad session key" in line else "a truncated or damaged file?"
        return f"gpg could not decrypt it: {line.removeprefix('gpg: ')} ({hint})"

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.stdout.close()
        self._stderr.close()


class ForeignSnapshot:
    """Open `path` as a raw etcd snapshot stream. Use as a context manager; read with chunks().

    kinds: the layers found, outermost first, ending in "db" (e.g. ["gpg", "gzip", "db"]). gpg and zip are read
    only as the outermost layer (gpg reads the file itself; zip needs to seek), gzip at any depth.
    """

    def __init__(self, path: Path, passphrase_file: str | None, gpg_home: Path):
        self.path = path
        self.kinds: list[str] = []
        self._stack = ExitStack()
        self._gpg: _Gpg | None = None
        try:
            self._stream = self._open(passphrase_file, gpg_home)
        except BaseException as e:
            error = self._translate(e) if isinstance(e, (*_DECODE_ERRORS, EtcdBackupError)) else None
            self._stack.close()
            if error is None:
                raise
            raise error from None

    def __enter__(self) -> ForeignSnapshot:
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _open(self, passphrase_file: str | None, gpg_home: Path) -> BinaryIO:
        f: BinaryIO = self._stack.enter_context(open(self.path, "rb"))  # noqa: SIM115 - the stack closes it
        while True:
            head = f.read(SNIFF_BYTES)
            kind = sniff(head, self.path.name)
            self.kinds.append(kind)
            if kind in (GPG, ZIP) and len(self.kinds) > 1:
                raise FormatError(f"{kind} data inside {self.kinds[-2]} is not supported: unpack the outer layer "
                                  "first")
            if kind == GPG:
                if passphrase_file is None:
                    raise UsageError("the file is gpg-encrypted: give its passphrase with --passphrase-file")
                self._gpg = _Gpg(self.path, passphrase_file, gpg_home)
                self._stack.callback(self._gpg.close)
                f = self._gpg.stdout
            elif kind == ZIP:
                f = self._stack.enter_context(_zip_member(self._stack.enter_context(_open_zip(self.path))))
            else:
                f = io.BufferedReader(_Prefixed(head, f), CHUNK)
                if kind == DB:
                    return f
                f = self._stack.enter_context(gzip.GzipFile(fileobj=f, mode="rb"))  # type: ignore[assignment]

    def chunks(self) -> Iterator[bytes]:
        """The raw snapshot bytes; the end is reached only when every layer ended cleanly (gpg exited 0)."""
        try:
            while data := self._stream.read(CHUNK):
                yield data
        except _DECODE_ERRORS as e:
            raise self._translate(e) from None
        failure = self._gpg.failure() if self._gpg else ""
        if failure:
            raise IntegrityError(failure)

    def _translate(self, e: BaseException) -> EtcdBackupError:
        """One line for the operator; gpg's own failure first: the layers inside only saw its partial output."""
        failure = self._gpg.failure() if self._gpg else ""
        if failure:
            return IntegrityError(failure)
        if isinstance(e, EtcdBackupError):
            return e
        if isinstance(e, EOFError):
            return TruncatedError("the compressed data ends early: the file is truncated")
        if isinstance(e, zlib.error | zipfile.BadZipFile | gzip.BadGzipFile):
            layer = next((k for k in reversed(self.kinds) if k != DB), "compressed")
            return IntegrityError(f"corrupt {layer} data: {e}")
        assert isinstance(e, OSError)
        return EtcdBackupError(f"cannot read {self.path}: {e.strerror or e}")


def _open_zip(path: Path) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(path)
    except zipfile.BadZipFile:
        raise TruncatedError("not a complete zip file: its directory is missing (truncated?)") from None


def _zip_member(zf: zipfile.ZipFile) -> BinaryIO:
    """The one file in a zip (as k3s/RKE2 write `etcd-snapshot-*.zip`); its CRC is checked at its end."""
    files = [i for i in zf.infolist() if not i.is_dir()]
    if len(files) != 1:
        raise FormatError(f"the zip holds {len(files)} files; a snapshot zip holds exactly one")
    if files[0].flag_bits & 0x1:
        raise FormatError("the zip is password-protected: unpack it first")
    return zf.open(files[0])  # type: ignore[return-value]
