"""Collision-free TCP port choice between concurrent bench runs on one host.

The kernel hands out a free port when a socket binds port 0; the socket is then
closed so the service can bind it, which leaves a window in which a concurrent
run could be handed the same port. Every run therefore also holds an exclusive
``flock`` on ``<lock_dir>/<port>.lock`` for as long as it uses the port; a port
whose lock is taken is skipped and another one is drawn. Lock files are never
deleted (deleting a lock file races with a process about to lock it); they are
empty and one per port at most.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import tempfile
from pathlib import Path
from types import TracebackType

DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "bytes-handoff-ports"


class PortError(RuntimeError):
    """No free, unlocked port could be reserved."""


class PortReservation:
    """A port and the lock that keeps other runs off it; release() or use ``with``."""

    def __init__(self, host: str, port: int, fd: int, lock_path: Path) -> None:
        self.host = host
        self.port = port
        self.lock_path = lock_path
        self._fd: int | None = fd

    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def held(self) -> bool:
        return self._fd is not None

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def __enter__(self) -> PortReservation:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"PortReservation({self.addr!r}, held={self.held})"


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _bindable(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def try_lock_port(port: int, lock_dir: Path | None = None) -> int | None:
    """The fd of an exclusive lock on ``port``'s lock file, or ``None`` if taken."""
    directory = lock_dir or DEFAULT_LOCK_DIR
    directory.mkdir(parents=True, exist_ok=True)
    fd = os.open(directory / f"{port}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    return fd


def reserve_port(
    host: str = "127.0.0.1", lock_dir: Path | None = None, attempts: int = 200
) -> PortReservation:
    """Reserve one free port on ``host`` for this process (see module docstring)."""
    directory = lock_dir or DEFAULT_LOCK_DIR
    try:
        for _ in range(attempts):
            port = _free_port(host)
            fd = try_lock_port(port, directory)
            if fd is None:
                continue
            if not _bindable(host, port):
                os.close(fd)
                continue
            return PortReservation(host, port, fd, directory / f"{port}.lock")
    except OSError as exc:
        raise PortError(f"cannot reserve a port on {host}: {exc}") from exc
    raise PortError(f"no free unlocked port on {host} after {attempts} attempts")


def reserve_ports(
    count: int, host: str = "127.0.0.1", lock_dir: Path | None = None
) -> list[PortReservation]:
    """``count`` distinct reservations (released together if one fails)."""
    held: list[PortReservation] = []
    try:
        while len(held) < count:
            held.append(reserve_port(host, lock_dir))
    except BaseException:
        for reservation in held:
            reservation.release()
        raise
    return held
