"""Redis for the local stack's Celery broker: the ``redis-server`` of the machine's packages (Debian's
``redis-server``; scripts/install.sh installs it), on 127.0.0.1 only, with a generated password, no
persistence (a broker's queue is rebuilt by Airflow's scheduler, which re-queues what it lost)."""

from __future__ import annotations

import secrets
import shutil
from urllib.parse import quote

from customer_pipelines.local.processes import ensure_port_free, read_pid, spawn, stop, wait_until
from customer_pipelines.private_files import private_dir, write_private
from customer_pipelines.settings import Settings

NAME = "redis"


class RedisMissing(RuntimeError):
    """No ``redis-server`` on this machine."""


def _password(settings: Settings) -> str:
    path = private_dir(settings.state_dir / "redis") / "password"
    if not path.exists():
        write_private(path, secrets.token_urlsafe(24))
    return path.read_text().strip()


def url(settings: Settings) -> str:
    """The broker URL Airflow's Celery components use: ``CP_REDIS_URL``, or the stack's own Redis."""
    if settings.redis_url:
        return settings.redis_url
    return f"redis://:{quote(_password(settings), safe='')}@127.0.0.1:{settings.redis_port}/0"


def _answers(settings: Settings) -> bool:
    """Whether our Redis answers PING with our password."""
    import redis

    try:
        return bool(redis.Redis.from_url(url(settings), socket_timeout=2).ping())
    except redis.RedisError:
        return False


def start(settings: Settings, *, timeout: float = 30) -> None:
    """Start the stack's Redis unless ``CP_REDIS_URL`` names one or it runs already."""
    run_dir = settings.state_dir / "run"
    if settings.redis_url or read_pid(run_dir / f"{NAME}.pid") is not None:
        return
    server = shutil.which("redis-server") or shutil.which("redis-server", path="/usr/sbin:/usr/bin")
    if server is None:
        raise RedisMissing(
            "the CeleryExecutor stack needs Redis: install Debian's redis-server (scripts/install.sh does) "
            "or set CP_REDIS_URL to a Redis of yours"
        )
    ensure_port_free(settings.redis_port, "Redis")
    data = private_dir(settings.state_dir / "redis")
    # The password in a file of its own (0600), not on the command line every user can read.
    config = data / "redis.conf"
    write_private(
        config,
        "\n".join(
            [
                "bind 127.0.0.1",
                f"port {settings.redis_port}",
                f"requirepass {_password(settings)}",
                'save ""',
                "appendonly no",
                f"dir {data}",
                "",
            ]
        ),
    )
    spawn(NAME, [server, str(config)], run_dir=run_dir, env={"PATH": "/usr/bin:/bin"})
    wait_until(lambda: _answers(settings), timeout=timeout, what="Redis", log_file=run_dir / f"{NAME}.log")


def stop_redis(settings: Settings) -> bool:
    return stop(NAME, settings.state_dir / "run")
