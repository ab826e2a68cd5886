"""Child processes for the run tools: one process group each, stopped for sure.

:class:`Child` starts a command in its own session with its output in files,
and stops its whole process group (SIGTERM, then SIGKILL) however the run
ends; :func:`raise_on_termination` turns SIGTERM/SIGHUP into
``KeyboardInterrupt`` so that cleanup runs. Used by the split runs and by the
fault soak's service process.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import stat
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import IO

from .errors import BenchError
from .output_paths import open_output

__all__ = ["Child", "RunError", "last_line", "raise_on_termination", "taskset_prefix"]


class RunError(RuntimeError):
    """A bench run failed; ``str()`` is one line naming the run and its log."""


def last_line(path: Path, limit: int = 300) -> str:
    """The last non-empty line of a log file (for one-line error messages)."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    for line in reversed(text.splitlines()):
        if line.strip():
            return line.strip()[:limit]
    return ""


class Child:
    """A child process in its own process group with stdout/stderr in files.

    The files are opened as ``output_paths.open_output`` does: never through a symlink.
    """

    def __init__(
        self,
        name: str,
        argv: Sequence[str],
        stdout_path: Path | None,
        stderr_path: Path,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.stdout_path = stdout_path
        self.stderr_path = stderr_path
        files: list[IO[bytes]] = []
        try:
            out: IO[bytes] | int = subprocess.DEVNULL
            if stdout_path is not None:
                out = open_output(stdout_path, f"the {name}'s output")
                files.append(out)
            err = open_output(stderr_path, f"the {name}'s log")
            files.append(err)
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
                env=env,
            )
        except BenchError as exc:
            raise RunError(f"cannot start {name}: {exc}") from exc
        except OSError as exc:
            raise RunError(f"cannot start {name} ({self.argv[0]}): {exc.strerror or exc}") from exc
        finally:
            for fh in files:
                fh.close()

    @property
    def pid(self) -> int:
        return self.proc.pid

    def poll(self) -> int | None:
        return self.proc.poll()

    def wait(self, timeout: float) -> int | None:
        """The exit status, or ``None`` if still running after ``timeout`` seconds."""
        try:
            return self.proc.wait(timeout=max(timeout, 0.0))
        except subprocess.TimeoutExpired:
            return None

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)

    def kill_group(self, grace: float = 3.0) -> None:
        """SIGTERM the whole group, then SIGKILL whatever is left."""
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            if self.wait(grace) is None:
                self.signal_group(signal.SIGKILL)
                self.wait(5.0)
        # Grandchildren may outlive the leader (worker processes): sweep the group.
        self.signal_group(signal.SIGKILL)

    def drop_empty_stderr(self) -> None:
        """Remove the log if it is an empty regular file (never a device it went to)."""
        with contextlib.suppress(OSError):
            st = self.stderr_path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_size == 0:
                self.stderr_path.unlink()


def raise_on_termination() -> None:
    """Turn SIGTERM and SIGHUP into ``KeyboardInterrupt`` so cleanup code runs.

    Children run in their own sessions (so a terminal's Ctrl-C reaches only the
    orchestrator, which then stops them in order); without this, a plain
    ``kill`` of the orchestrator would leave them running.
    """

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, handler)


def taskset_prefix(cores: str | None) -> list[str]:
    if not cores:
        return []
    if shutil.which("taskset") is None:
        raise RunError("--service-cores/--driver-cores need taskset, which is not installed")
    return ["taskset", "-c", cores]
