"""Helpers shared by the test folders."""

from __future__ import annotations

import socket
import tempfile
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def service_state_dir(prefix: str) -> Path:
    """A state directory the embedded PostgreSQL can use: it runs as its own user when the tests run
    as root, so the directory must be reachable by others (pytest's tmp dirs are 0700)."""
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/var/tmp"))
    path.chmod(0o755)
    return path
