"""Detached service processes with a pid file and a log file each, and readiness waits."""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from customer_pipelines.private_files import OWNER_ONLY_UMASK, open_private, private_dir, write_private


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie child still answers kill(0); treat it as gone
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def read_pid(pidfile: Path) -> int | None:
    try:
        pid = int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    return pid if pid_alive(pid) else None


def spawn(name: str, argv: Sequence[str], *, run_dir: Path, env: Mapping[str, str], cwd: Path | None = None) -> int:
    """Start ``argv`` in its own session (so stopping it stops its children), logging to
    ``<run_dir>/<name>.log``; returns its pid, also written to ``<run_dir>/<name>.pid``. The process
    runs with umask 077: whatever it creates is its owner's only."""
    private_dir(run_dir)
    log_path = run_dir / f"{name}.log"
    log = open_private(log_path, "ab")
    proc = subprocess.Popen(
        list(argv),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=dict(env),
        cwd=cwd,
        start_new_session=True,
        umask=OWNER_ONLY_UMASK,
    )
    log.close()
    write_private(run_dir / f"{name}.pid", str(proc.pid))
    return proc.pid


def stop(name: str, run_dir: Path, *, timeout: float = 20.0) -> bool:
    """SIGTERM the process group, then SIGKILL what is left after ``timeout``; True if it was running."""
    pidfile = run_dir / f"{name}.pid"
    pid = read_pid(pidfile)
    if pid is None:
        pidfile.unlink(missing_ok=True)
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline and pid_alive(pid):
            time.sleep(0.2)
        if not pid_alive(pid):
            break
    pidfile.unlink(missing_ok=True)
    return True


def http_ok(url: str, timeout: float = 2.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


def wait_until(check, *, timeout: float, what: str, log_file: Path | None = None, interval: float = 0.3) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(interval)
    tail = ""
    if log_file and log_file.exists():
        tail = "\n" + "\n".join(log_file.read_text(errors="replace").splitlines()[-30:])
    raise TimeoutError(f"{what} not ready after {timeout:.0f}s{tail}")


# --- Who listens on a port: /proc/net/tcp{,6} (the listening sockets) and /proc/<pid>/fd (whose). ---

_LISTEN = "0A"


class PortError(RuntimeError):
    """A port of the stack is taken, or answered by a process the stack did not start."""


@dataclass(frozen=True)
class Listener:
    address: ipaddress.IPv4Address | ipaddress.IPv6Address
    port: int
    inode: int

    @property
    def is_loopback(self) -> bool:
        mapped = getattr(self.address, "ipv4_mapped", None)
        return self.address.is_loopback or bool(mapped and mapped.is_loopback)


def _address(hex_address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    # The kernel prints each 32-bit word of the address in host (little-endian) order.
    raw = bytes.fromhex(hex_address)
    words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return ipaddress.ip_address(words)


def listeners(port: int | None = None) -> list[Listener]:
    """The machine's listening TCP sockets (IPv4 and IPv6), of ``port`` if given."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:  # no IPv6 on this machine
            continue
        for line in lines:
            fields = line.split()
            local, state, inode = fields[1], fields[3], int(fields[9])
            hex_address, hex_port = local.split(":")
            if state == _LISTEN and (port is None or int(hex_port, 16) == port):
                found.append(Listener(_address(hex_address), int(hex_port, 16), inode))
    return found


def socket_owners(inodes: set[int]) -> dict[int, set[int]]:
    """For each socket inode, the pids holding it open (those whose fds this user may read)."""
    owners: dict[int, set[int]] = {inode: set() for inode in inodes}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = list((proc / "fd").iterdir())
        except OSError:  # gone, or another user's
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inode = int(target[8:-1])
                if inode in owners:
                    owners[inode].add(int(proc.name))
    return owners


def parent_pid(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return int(fh.read().rsplit(") ", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def descends_from(pid: int, ancestor: int) -> bool:
    """``pid`` is ``ancestor`` or one of its descendants."""
    seen: set[int] = set()
    current: int | None = pid
    while current and current not in seen:
        if current == ancestor:
            return True
        seen.add(current)
        current = parent_pid(current)
    return False


def ensure_port_free(port: int, what: str) -> None:
    """Raise :class:`PortError` naming ``port`` if anything listens on it (on any address): the stack
    would otherwise talk to that process as if it were its own ``what``."""
    taken = listeners(port)
    if taken:
        owners = socket_owners({t.inode for t in taken})
        pids = sorted({pid for t in taken for pid in owners[t.inode]})
        by = f"pid {', '.join(map(str, pids))}" if pids else "a process of another user"
        raise PortError(
            f"port {port} (for the {what}) is already taken by {by}, listening on "
            f"{', '.join(sorted({str(t.address) for t in taken}))}: stop it, or give the stack another port"
        )


def verify_listener(port: int, pid: int, what: str) -> None:
    """Raise :class:`PortError` unless every socket listening on ``port`` belongs to ``pid`` (the
    process the stack started) or its descendants: only then may the stack trust what answers there
    (and send it the admin password)."""
    taken = listeners(port)
    if not taken:
        raise PortError(f"port {port}: nothing listens there, though the {what} (pid {pid}) answered on it")
    owners = socket_owners({t.inode for t in taken})
    strangers = sorted(str(t.address) for t in taken if not any(descends_from(owner, pid) for owner in owners[t.inode]))
    if strangers:
        raise PortError(
            f"port {port} is answered by a process the stack did not start (listening on {', '.join(strangers)}), "
            f"not by its {what} (pid {pid}): stop that process, or give the stack another port"
        )
