"""Error types and the one exit-code table. Each error carries a one-line message meant for an operator; the CLI
prints it (`error: ...`) and exits with the error's code."""

from enum import IntEnum


class ExitCode(IntEnum):
    """What `kubectl etcdbackup` exits with (listed in `--help`)."""

    OK = 0
    FAILED = 1  # the operation failed (etcd, store, Kubernetes API, integrity...)
    USAGE = 2  # bad command line or configuration; nothing was done
    DEGRADED = 3  # it ran, and found backups stale, the last drill failed or stale, or etcd unhealthy (`status`...)
    INTERRUPTED = 130  # Ctrl-C


EXIT_CODES_HELP = ("Exit codes: 0 ok, 1 failed, 2 usage error, 3 backups stale, restore drill failed or stale, or "
                   "etcd unhealthy (status, agent monitor), 130 interrupted.")


class EtcdBackupError(Exception):
    """Base class: an expected failure with a clear one-line message."""

    exit_code: int = ExitCode.FAILED


class UsageError(EtcdBackupError):
    """The command line or configuration is wrong."""

    exit_code = ExitCode.USAGE


class Degraded(EtcdBackupError):
    """A check ran and found a problem: backups stale or missing, or an etcd member unhealthy."""

    exit_code = ExitCode.DEGRADED


class FormatError(EtcdBackupError):
    """A stored snapshot is not a valid container: bad magic, unknown version, corrupt frame."""


class TruncatedError(FormatError):
    """A stored snapshot ends before its authenticated final frame."""


class IntegrityError(EtcdBackupError):
    """A checksum or authentication tag does not match: corruption or the wrong key."""


class EncryptionKeyError(EtcdBackupError):
    """The encryption key is missing, unreadable or malformed."""


class StoreError(EtcdBackupError):
    """The store (directory or S3 bucket) cannot be read or written."""


class SnapshotNotFound(StoreError):
    """No snapshot with that id (or no snapshot at all) in the store."""


class EtcdUnavailable(EtcdBackupError):
    """No etcd endpoint answered in time."""


class ToolError(EtcdBackupError):
    """An etcd tool (etcdutl/etcdctl) is missing or failed."""


class Refused(EtcdBackupError):
    """The operation would lose or disturb data; nothing was changed."""


class RestoreRefused(Refused):
    """A restore would overwrite or disturb data; nothing was changed."""
