"""SIGTERM and SIGINT end a run at any stage: promptly, non-zero, one line, no child left."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from harness_support import ROOT, SMALL, bench_cmd, processes_mentioning

#: How long a signalled run may take to end (a busy shared machine included).
PROMPT = 10.0


def wait_for(path: Path, proc: subprocess.Popen[str], limit: float = 30.0) -> None:
    deadline = time.monotonic() + limit
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"the run never wrote its ready file: {proc.communicate()[1]}")
        time.sleep(0.005)


@pytest.mark.parametrize(
    ("sig", "workers", "stage"),
    [
        (signal.SIGTERM, 2, "set-up"),
        (signal.SIGINT, 1, "set-up"),
        (signal.SIGTERM, 1, "mid-run"),
        (signal.SIGINT, 2, "mid-run"),
        (signal.SIGTERM, 2, "mid-run"),
    ],
)
def test_a_signal_ends_a_long_run(tmp_path: Path, sig: int, workers: int, stage: str) -> None:
    ready = tmp_path / "run.ready"
    proc = subprocess.Popen(
        bench_cmd(
            *SMALL,
            "--worker-threads",
            str(workers),
            "--duration-seconds",
            "3600",
            "--ready-file",
            str(ready),
        ),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # its own group, so that the cleanup below reaches every worker
    )
    try:
        # The ready file is written once the signal handlers are in place, before the
        # workers start: signalling at once hits the set-up.
        wait_for(ready, proc)
        if stage == "mid-run":
            time.sleep(1.5)
            assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(sig)  # this process only, not its group
        _, err = proc.communicate(timeout=PROMPT)  # a run that does not end fails here
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
    assert proc.returncode != 0, err
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("bytes-handoff-bench: error: "), err
    assert "interrupt" in lines[0], err
    assert processes_mentioning(str(ready)) == []
