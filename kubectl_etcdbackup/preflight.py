"""Pre-flight checks before a backup: what will break backups soon, said while they still work. Nothing here fails
a run; every finding is a warning (and, for certificates, an expiry time for the metrics).

- every member: answers, has a leader, reports no errors; the cluster's alarms (NOSPACE with the db size against
  the quota, read from the member's own /metrics);
- the client certificate, its key and the CA bundle: readable, the key matching the certificate, none expiring
  within CERT_WARN_DAYS;
- each member's server certificate as it presents it in the TLS handshake (with the client certificate), expiring
  within CERT_WARN_DAYS.

(The store's room for the next snapshot is checked by the backup run itself, which prunes first when short.)
"""

from __future__ import annotations

import socket
import ssl
import urllib.request
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import urlparse

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from .errors import EtcdBackupError
from .etcd._proto import rpc_pb2, rpc_pb2_grpc
from .etcd.client import EndpointStatus, EtcdClient, TLSFiles
from .etcd.rpc import RpcError, describe
from .output import human_bytes

CERT_WARN_DAYS = 30
_ALARM_NAMES = {1: "NOSPACE", 2: "CORRUPT"}  # etcd's AlarmType (this proto predates CORRUPT)


@dataclass(frozen=True)
class CertExpiry:
    name: str  # "client", "ca", "ca#2", "server 10.0.0.1:2379"
    subject: str
    not_after: datetime


@dataclass
class PreflightReport:
    warnings: list[str] = field(default_factory=list)
    certs: list[CertExpiry] = field(default_factory=list)
    alarms: list[str] = field(default_factory=list)  # "NOSPACE on member 8e9e05c52164694d"


def run_preflight(endpoints: list[str], tls: TLSFiles | None, timeout: float, *, now: datetime | None = None,
                  warn_days: int = CERT_WARN_DAYS) -> PreflightReport:
    report = PreflightReport()
    now = now or datetime.now(UTC)
    if tls is not None:
        _check_tls_files(tls, report)
    statuses: dict[str, EndpointStatus] = {}
    for endpoint in endpoints:
        status = _check_member(endpoint, tls, timeout, report)
        if status is not None:
            statuses[status.member_id] = status
        if tls is not None or endpoint.startswith("https://"):
            _check_server_cert(endpoint, tls, timeout, report)
    if statuses:
        _check_alarms(statuses, tls, timeout, report)
    report.warnings += [w for cert in report.certs if (w := expiry_warning(cert, now, warn_days))]
    return report


def expiry_warning(cert: CertExpiry, now: datetime, warn_days: int = CERT_WARN_DAYS) -> str:
    """Why the certificate needs renewing (expired, or ending within warn_days), or ""."""
    if cert.not_after <= now:
        return f"{cert.name} certificate ({cert.subject}) expired on {cert.not_after:%Y-%m-%d %H:%M} UTC"
    if cert.not_after <= now + timedelta(days=warn_days):
        days = (cert.not_after - now).total_seconds() / 86400
        return (f"{cert.name} certificate ({cert.subject}) expires in {days:.1f} days, on "
                f"{cert.not_after:%Y-%m-%d %H:%M} UTC: renew it before backups stop")
    return ""


def _read(path: str, what: str, report: PreflightReport) -> bytes | None:
    try:
        return Path(path).read_bytes()
    except OSError as e:
        report.warnings.append(f"cannot read {what} {path}: {e.strerror}")
        return None


def _expiry(name: str, cert: x509.Certificate) -> CertExpiry:
    return CertExpiry(name, cert.subject.rfc4514_string(), cert.not_valid_after_utc)


def _check_tls_files(tls: TLSFiles, report: PreflightReport) -> None:
    client: x509.Certificate | None = None
    if tls.cert and (data := _read(tls.cert, "client certificate", report)) is not None:
        try:
            client = x509.load_pem_x509_certificates(data)[0]
            report.certs.append(_expiry("client", client))
        except ValueError:
            report.warnings.append(f"client certificate {tls.cert} is not a PEM certificate")
    if tls.key and (data := _read(tls.key, "client key", report)) is not None:
        try:
            key = serialization.load_pem_private_key(data, None)
        except (ValueError, TypeError) as e:
            report.warnings.append(f"client key {tls.key} cannot be loaded: {str(e).splitlines()[0]}")
        else:
            if client is not None and _public(key.public_key()) != _public(client.public_key()):
                report.warnings.append(f"client key {tls.key} does not match the certificate {tls.cert}")
    if tls.cacert and (data := _read(tls.cacert, "CA bundle", report)) is not None:
        try:
            cas = x509.load_pem_x509_certificates(data)
        except ValueError:
            report.warnings.append(f"CA bundle {tls.cacert} holds no PEM certificate")
            return
        report.certs += [_expiry("ca" if i == 0 else f"ca#{i + 1}", ca) for i, ca in enumerate(cas)]


def _public(key: object) -> bytes:
    return key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                            serialization.PublicFormat.SubjectPublicKeyInfo)


def _host_port(endpoint: str) -> tuple[str, int]:
    u = urlparse(endpoint if "://" in endpoint else f"//{endpoint}")
    return u.hostname or "", u.port or 2379


def _check_member(endpoint: str, tls: TLSFiles | None, timeout: float, report: PreflightReport,
                  ) -> EndpointStatus | None:
    try:
        with EtcdClient(endpoint, tls, timeout) as client:
            status = client.status()
    except EtcdBackupError as e:
        report.warnings.append(f"member {endpoint} is not usable: {e}")
        return None
    errors = [e for e in status.errors if "alarm" not in e.lower()]  # alarms are reported once, below
    if status.leader == "0":
        errors.append("no leader")
    if errors:
        report.warnings.append(f"member {endpoint} is unhealthy: {', '.join(errors)}")
    return status


def _check_server_cert(endpoint: str, tls: TLSFiles | None, timeout: float, report: PreflightReport) -> None:
    try:
        report.certs.append(server_certificate(endpoint, tls, timeout))
    except EtcdBackupError as e:
        report.warnings.append(str(e))


def server_certificate(endpoint: str, tls: TLSFiles | None, timeout: float) -> CertExpiry:
    """The certificate the member presents in a TLS handshake (not trusted here: only its dates are read; the
    backup itself checks trust). The client certificate, when given, is offered, as etcd with client-cert-auth
    requires one; without one (`status`, on a workstation) the certificate is read from a TLS 1.2 handshake, where
    the server sends it in the clear before it asks for the client's (and then refuses us).
    Raises EtcdBackupError with the reason when there is none to read."""
    host, port = _host_port(endpoint)
    if tls is None or not (tls.cert and tls.key):
        try:
            der = _server_cert_in_the_clear(host, port, timeout)
        except (OSError, ssl.SSLError, ValueError) as e:
            raise EtcdBackupError(f"cannot read the server certificate of {endpoint}: {e}") from None
        return _expiry(f"server {host}:{port}", x509.load_der_x509_certificate(der))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        if tls is not None and tls.cert and tls.key:
            ctx.load_cert_chain(tls.cert, tls.key)
        with socket.create_connection((host, port), timeout=timeout) as sock, \
                ctx.wrap_socket(sock, server_hostname=host) as conn:
            presented = conn.getpeercert(binary_form=True)
    except (OSError, ssl.SSLError) as e:
        raise EtcdBackupError(f"cannot read the server certificate of {endpoint}: {e}") from None
    if not presented:
        raise EtcdBackupError(f"cannot read the server certificate of {endpoint}: none presented")
    return _expiry(f"server {host}:{port}", x509.load_der_x509_certificate(presented))


def _server_cert_in_the_clear(host: str, port: int, timeout: float) -> bytes:
    """The server's (leaf) certificate from the plaintext Certificate message of a TLS 1.2 handshake, whether or not
    the handshake then succeeds."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=host)
    received = b""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        for _ in range(64):  # a handful of round trips at most
            try:
                tls.do_handshake()
            except ssl.SSLWantReadError:
                pass
            except ssl.SSLError:
                der = _certificate_message(received)
                if der:
                    return der
                raise
            if data := outgoing.read():
                sock.sendall(data)
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
            incoming.write(chunk)
            if der := _certificate_message(received):
                return der
    raise ValueError("the server sent no certificate")


def _certificate_message(data: bytes) -> bytes | None:
    """The first certificate of the Certificate handshake message in plaintext TLS records, once complete."""
    handshake, i = b"", 0
    while i + 5 <= len(data) and data[i] == 22:  # handshake records (plaintext until ChangeCipherSpec)
        length = int.from_bytes(data[i + 3:i + 5], "big")
        handshake += data[i + 5:i + 5 + length]
        i += 5 + length
    j = 0
    while j + 4 <= len(handshake):
        kind, length = handshake[j], int.from_bytes(handshake[j + 1:j + 4], "big")
        body = handshake[j + 4:j + 4 + length]
        if len(body) < length:
            return None
        if kind == 11 and len(body) >= 6:  # Certificate: 3-byte list length, 3-byte cert length, DER
            first = int.from_bytes(body[3:6], "big")
            return body[6:6 + first] if len(body) >= 6 + first else None
        j += 4 + length
    return None


def _check_alarms(statuses: dict[str, EndpointStatus], tls: TLSFiles | None, timeout: float,
                  report: PreflightReport) -> None:
    """The cluster's alarms, asked of the first member that answers."""
    for status in statuses.values():
        try:
            with EtcdClient(status.endpoint, tls, timeout) as client:
                resp = rpc_pb2_grpc.MaintenanceStub(client.channel).Alarm(
                    rpc_pb2.AlarmRequest(action=rpc_pb2.AlarmRequest.GET), timeout=timeout)
        except RpcError as e:
            report.warnings.append(f"cannot read alarms from {status.endpoint}: {describe(e, timeout)}")
            continue
        for alarm in resp.alarms:
            name = _ALARM_NAMES.get(alarm.alarm, str(alarm.alarm))
            member = format(alarm.memberID, "x")
            report.alarms.append(f"{name} on member {member}")
            report.warnings.append(_alarm_warning(name, member, statuses.get(member), tls, timeout))
        return


def _alarm_warning(name: str, member: str, status: EndpointStatus | None, tls: TLSFiles | None,
                   timeout: float) -> str:
    where = f"member {member}" + (f" ({status.endpoint})" if status else "")
    if name != "NOSPACE":
        return f"etcd alarm {name} on {where}"
    if status is None:
        return f"etcd alarm NOSPACE on {where}: the cluster accepts no writes until space is freed"
    quota = backend_quota(status.endpoint, tls, timeout)
    of_quota = f" of its quota {human_bytes(quota)}" if quota else ""
    return (f"etcd alarm NOSPACE on {where}: db {human_bytes(status.db_size)}{of_quota} "
            f"({human_bytes(status.db_size_in_use)} in use); the cluster accepts no writes until it is compacted, "
            f"defragmented and the alarm disarmed")


def backend_quota(endpoint: str, tls: TLSFiles | None, timeout: float) -> int | None:
    """etcd_server_quota_backend_bytes from the member's /metrics on its client URL; None when unknown."""
    host, port = _host_port(endpoint)
    secure = endpoint.startswith("https://") or (tls is not None and bool(tls.cacert or tls.cert))
    ctx = None
    if secure:
        ctx = ssl.create_default_context(cafile=tls.cacert if tls else None)
        ctx.check_hostname = False
        if tls is not None and tls.cert and tls.key:
            ctx.load_cert_chain(tls.cert, tls.key)
    url = f"{'https' if secure else 'http'}://{host}:{port}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=ctx) as resp:  # noqa: S310 - an etcd URL
            for line in resp.read().decode(errors="replace").splitlines():
                if line.startswith("etcd_server_quota_backend_bytes "):
                    return int(float(line.split()[1]))
    except (OSError, ValueError, ssl.SSLError):
        return None
    return None
