"""bench/run-http-proxy-load.sh: bad flags are one line, and a short real load run works.

The real runs drive ``wrk`` and ``ab`` (Debian's ``wrk`` and ``apache2-utils``,
which ``scripts/check.sh`` installs) for one second each, direct to the
fixed-response upstream and through ``examples/http_proxy.py``, and read the
table the script prints.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from harness_support import assert_one_line_error, run_script

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "run-http-proxy-load.sh"


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return run_script(SCRIPT, *args, timeout=timeout)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--duration", "nan"), "argument --duration: expected a whole number from 1 to 3600"),
        (("--duration", "0"), "argument --duration: expected a whole number from 1 to 3600"),
        (("--connections", "1.5"), "argument --connections: expected a whole number"),
        (("--runs", "9" * 5000), "argument --runs: expected a whole number from 1 to 100"),
        (("--body-size", "-1"), "argument --body-size: expected a whole number from 0"),
        (("--loops", "trio"), "argument --loops: expected loops from asyncio, uvloop"),
        (("--loops", ","), "argument --loops: expected loops from asyncio, uvloop"),
        (("--proxy-core", "x"), "argument --proxy-core: expected a CPU list like 0 or 0-3,8"),
        (("--load-core", "4096"), "argument --load-core: CPU 4096 in '4096' is not available here"),
        (("--tool", "curl"), "argument --tool: invalid choice: 'curl'"),
        (("--frobnicate",), "unrecognized arguments: --frobnicate"),
    ],
)
def test_bad_flags_are_one_line_and_exit_2(args: tuple[str, ...], needle: str) -> None:
    proc = run(*args)
    line = assert_one_line_error(proc, "run-http-proxy-load.sh")
    assert needle in line, line
    assert proc.stdout == ""


def test_help_shows_every_default() -> None:
    proc = run("--help")
    assert proc.returncode == 0, proc.stderr
    for default in ("(default: wrk)", "(default: 10)", "(default: 32)", "(default: 1024)"):
        assert default in proc.stdout, proc.stdout


def rows(stdout: str) -> dict[tuple[str, str], list[str]]:
    """The summary table's rows, by (run, loop)."""
    table = stdout.split("\n\n")[1]
    out = {}
    for line in table.splitlines()[2:]:
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        out[(cells[0], cells[1])] = cells
    return out


@pytest.mark.parametrize("tool", ["wrk", "ab"])
def test_a_short_run_direct_and_through_the_proxy(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"needs {tool} (apt-get install wrk apache2-utils; scripts/check.sh does)")
    proc = run(
        *("--tool", tool, "--duration", "1", "--connections", "4", "--loops", "asyncio"),
        *("--proxy-core", "", "--load-core", ""),
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr)
    found = rows(proc.stdout)
    assert set(found) == {("direct #1", "-"), ("proxy #1", "asyncio")}, proc.stdout
    for (name, _loop), cells in found.items():
        requests_per_s = float(cells[2].replace(",", ""))
        assert requests_per_s > 0, cells
        # non-2xx and errors are the two columns before the proxy's CPU.
        assert cells[-3:-1] == ["0", "0"], cells
        proxy_cpu = cells[-1]
        if name.startswith("proxy"):
            assert 0 < float(proxy_cpu) <= os.cpu_count(), cells  # type: ignore[operator]
        else:
            assert proxy_cpu == "-"
    # Every run's command is printed, so it can be repeated by hand.
    assert re.search(rf"^proxy #1 asyncio: .*http_proxy\.py .*; {tool} ", proc.stdout, re.M)
