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
    assert proc.returncode == 130, err  # as every program here: 130 when interrupted
    lines = err.strip().splitlines()
    assert "Traceback" not in err
    assert len(lines) == 1, err
    assert lines[0].startswith("bytes-handoff-bench: error: "), err
    assert "interrupt" in lines[0], err
    assert processes_mentioning(str(ready)) == []


#: Put on PYTHONPATH: the first import of the library tells the test, then sleeps, so that
#: the test's SIGINT lands while the harness's modules load.
SLOW_IMPORT = """\
import importlib.abc
import os
import sys
import time


class _Slow(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "bytes_handoff":
            sys.meta_path.remove(self)
            open(os.environ["BH_LOADING"], "w").close()
            time.sleep(30)
        return None


sys.meta_path.insert(0, _Slow())
"""


def test_a_sigint_while_the_modules_load_is_one_line_and_130(tmp_path: Path) -> None:
    (tmp_path / "sitecustomize.py").write_text(SLOW_IMPORT)
    loading = tmp_path / "loading"
    env = {
        **os.environ,
        "BH_LOADING": str(loading),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(tmp_path), os.environ.get("PYTHONPATH")])),
    }
    proc = subprocess.Popen(
        bench_cmd("--version"),
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        wait_for(loading, proc)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=PROMPT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert "Traceback" not in err, err
    assert err == "bytes-handoff-bench: error: interrupted\n"
    assert (proc.returncode, out) == (130, "")
