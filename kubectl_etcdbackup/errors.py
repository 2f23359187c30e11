"""Error types. Each carries a one-line message meant for an operator; the CLI prints it and exits non-zero."""


class EtcdBackupError(Exception):
    """Base class: an expected failure with a clear one-line message."""

    exit_code = 1


class UsageError(EtcdBackupError):
    """The command line or configuration is wrong."""

    exit_code = 2


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


class RestoreRefused(EtcdBackupError):
    """A restore would overwrite or disturb data; nothing was changed."""
