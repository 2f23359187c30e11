"""kubectl-etcdbackup: safe, fast and boring etcd backup and restore for Kubernetes."""

__version__ = "0.1.0"
