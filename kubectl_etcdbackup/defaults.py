"""What the engine, the command line, the Kubernetes objects and the chart share: said once here (the chart's
values and schema are checked against these by tests/test_chart.py)."""

from typing import Any

VERIFY_MODES = ("hash", "status", "restore")  # how much is checked before a snapshot counts (default: status)
DEFAULT_VERIFY = "status"
APP_NAME = "etcd-backup"  # app.kubernetes.io/name, the Helm chart's name, and the default object name
DEFAULT_NAMESPACE = "etcd-backup"  # where `install` puts things and every command looks for them
NONROOT_ID = 65532  # the image's unprivileged user (uid and gid); the exporter and readers run as it
AWS_CREDENTIAL_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")  # env vars = Secret keys
ETCD_NAMESPACE = "kube-system"  # where kubeadm (and k3s/RKE2) run the etcd pods
ETCD_SELECTOR = "component=etcd"
APISERVER_SELECTOR = "component=kube-apiserver"

# Where each Kubernetes distribution keeps etcd's client certificate, and how it labels the nodes that run
# etcd (the chart's `distribution` values and ManifestOptions.distribution; tests/test_chart.py checks both).
# kubeadm: /etc/kubernetes/pki/etcd, label value ""; k3s and RKE2: the supervisor's etcd client certificate
# under <data-dir>/server/tls/etcd and the label value "true".
CONTROL_PLANE_LABEL = "node-role.kubernetes.io/control-plane"
ETCD_CLIENT_PORT = 2379
HOST_IP_ENDPOINT = f"https://$(HOST_IP):{ETCD_CLIENT_PORT}"  # a pod without hostNetwork: its node's etcd
_CP_TOLERATION = {"key": CONTROL_PLANE_LABEL, "operator": "Exists", "effect": "NoSchedule"}
_ADDONS_TOLERATION = {"key": "CriticalAddonsOnly", "operator": "Exists"}  # k3s/RKE2's usual server taint
DISTRIBUTIONS: dict[str, dict[str, Any]] = {
    "kubeadm": {"pki_dir": "/etc/kubernetes/pki/etcd", "ca_file": "ca.crt", "cert_file": "healthcheck-client.crt",
                "key_file": "healthcheck-client.key", "endpoints": ["https://127.0.0.1:2379"],
                "node_selector": {CONTROL_PLANE_LABEL: ""}, "tolerations": [_CP_TOLERATION]},
    "k3s": {"pki_dir": "/var/lib/rancher/k3s/server/tls/etcd", "ca_file": "server-ca.crt", "cert_file": "client.crt",
            "key_file": "client.key", "endpoints": ["https://127.0.0.1:2379"],
            "node_selector": {CONTROL_PLANE_LABEL: "true"}, "tolerations": [_CP_TOLERATION, _ADDONS_TOLERATION]},
    "rke2": {"pki_dir": "/var/lib/rancher/rke2/server/tls/etcd", "ca_file": "server-ca.crt",
             "cert_file": "client.crt", "key_file": "client.key", "endpoints": ["https://127.0.0.1:2379"],
             "node_selector": {CONTROL_PLANE_LABEL: "true"}, "tolerations": [_CP_TOLERATION, _ADDONS_TOLERATION]},
}
DEFAULT_DISTRIBUTION = "kubeadm"
# etcd.clientCertSecret: the Secret's keys (cert-manager's names) and where the pods see them
CLIENT_CERT_KEYS = ("ca.crt", "tls.crt", "tls.key")
CLIENT_CERT_DIR = "/etc/etcdbackup/etcd"
