"""python -m k8s_fake [--port N]  (from tests/): run the fake API server until Ctrl-C."""

from .server import main

main()
