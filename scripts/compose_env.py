#!/usr/bin/env python3
"""Writes the docker-compose stack's secrets into ``.env`` (or the path given), once.

docker-compose.yaml has no default for a secret and refuses to start without them. This script
generates strong values for the ones missing from the file and keeps every line already there, so
running it again changes nothing; the file is readable by its owner only (0600).

    python3 scripts/compose_env.py            # ./.env beside docker-compose.yaml
    python3 scripts/compose_env.py other.env
"""

from __future__ import annotations

import base64
import os
import secrets
import sys
from collections.abc import Callable
from pathlib import Path

GENERATORS: dict[str, Callable[[], str]] = {
    # signs the API's JWTs: whoever knows it can mint a token for any user
    "AIRFLOW_JWT_SECRET": lambda: secrets.token_urlsafe(48),
    # Airflow's Fernet key (32 url-safe base64 bytes): encrypts connection passwords and variables
    "AIRFLOW_FERNET_KEY": lambda: base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    # the metadata database's password; url-safe, as it sits inside connection URLs
    "POSTGRES_PASSWORD": lambda: secrets.token_urlsafe(24),
    # the first Airflow user's password (FAB auth manager; AIRFLOW_ADMIN_USERNAME, default admin)
    "AIRFLOW_ADMIN_PASSWORD": lambda: secrets.token_urlsafe(18),
    # Flower's basic auth (the flower profile), user:password
    "FLOWER_BASIC_AUTH": lambda: f"flower:{secrets.token_urlsafe(24)}",
}


def _defined(text: str) -> set[str]:
    names = set()
    for line in text.splitlines():
        name, sep, value = line.strip().partition("=")
        if sep and not name.startswith("#") and value.strip():
            names.add(name.strip())
    return names


def write_env(path: Path) -> list[str]:
    """Add the secrets ``path`` lacks (an empty value counts as lacking); the names added."""
    text = path.read_text() if path.exists() else ""
    missing = [name for name in GENERATORS if name not in _defined(text)]
    if missing:
        lines = [line for line in text.splitlines() if line.strip().partition("=")[0].strip() not in missing]
        lines += [f"{name}={GENERATORS[name]()}" for name in missing]
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write("\n".join(lines) + "\n")
    os.chmod(path, 0o600)
    return missing


def main(argv: list[str]) -> int:
    path = Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[1] / ".env"
    added = write_env(path)
    print(f"{path}: " + (f"generated {', '.join(added)}" if added else "every secret already set; nothing changed"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
