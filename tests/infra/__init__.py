"""Reusable test infrastructure: real etcd clusters (3.5 and 3.4), throwaway TLS certs, real-HTTP S3 (moto).

Everything listens on 127.0.0.1 on ports below 32768 (outside the kernel's ephemeral range), every wait is
bounded and every process started here is stopped (explicitly, via atexit, and via PDEATHSIG if pytest dies).
"""
