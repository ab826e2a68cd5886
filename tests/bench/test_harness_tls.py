"""``--tls``: both legs TLS, per implementation and mode, integrated, split and through the
wrapper; the refusals and the missing ``openssl`` in one line each."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from harness_support import (
    SMALL,
    assert_ok,
    assert_one_line_error,
    bench_cmd,
    run_cli,
    run_script,
)

from bytes_handoff_bench.certs import make_certificate
from bytes_handoff_bench.errors import UsageError
from bytes_handoff_bench.harness.cli import config_from_args
from bytes_handoff_bench.harness.implementations import IMPLEMENTATIONS
from bytes_handoff_bench.names import (
    TLS_MODES,
    Implementation,
    TlsMode,
    Transport,
    implementations_for,
    tls_refusal,
)
from bytes_handoff_bench.tools.artifacts import parse_kv_file, read_runs_csv

ROOT = Path(__file__).resolve().parents[2]
HARNESS = ROOT / "bench" / "run-stream-harness.sh"
TCP = ["--transport", "tcp"]
SERVICE_ADDRS = ["--service-addr", "127.0.0.1:0", "--sink-addr", "127.0.0.1:9"]

#: (implementation, mode) of every TLS form the harness has.
FORMS = [
    (impl, mode) for impl in implementations_for(Transport.TCP) for mode in TLS_MODES.get(impl, ())
]


def assert_tls_keys(out: dict[str, str], mode: str, *, negotiated: bool = True) -> None:
    assert out["tls"] == "true" and out["tls_mode"] == mode, out
    if negotiated:  # where clients and sinks ran: integrated, tcp-driver
        assert out["tls_version"].startswith("TLSv1."), out
        assert out["tls_cipher"], out


# -- which implementation runs which mode ---------------------------------------------------------


def test_every_registered_implementation_says_what_tls_means_for_it() -> None:
    assert set(TLS_MODES) <= set(IMPLEMENTATIONS)
    for impl in Implementation:
        refusals = {mode: tls_refusal(impl, mode) for mode in TlsMode}
        assert (None in refusals.values()) == (impl in TLS_MODES), impl
    # The protocol path and floor take ssl=; streams too; start_tls() is the library's alone.
    assert implementations_for(Transport.TCP, TlsMode.STARTTLS) == [Implementation.HANDOFF_PROTOCOL]
    assert Implementation.HANDOFF not in implementations_for(Transport.TCP, TlsMode.ACCEPT)
    assert Implementation.HANDOFF_SPLICE not in implementations_for(Transport.TCP, TlsMode.ACCEPT)


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--tls-mode", "accept"], "--tls-mode needs --tls"),
        (["--tls-cert", "c.pem", "--tls-key", "k.pem"], "--tls-cert needs --tls"),
        (["--tls", "--tls-cert", "c.pem"], "--tls-cert and --tls-key go together"),
        (
            ["--tls", "--role", "tcp-service", *SERVICE_ADDRS],
            "must share one certificate",
        ),
    ],
)
def test_tls_flags_are_checked_with_the_others(args: list[str], needle: str) -> None:
    with pytest.raises(UsageError, match=needle):
        config_from_args([*TCP, "--implementation", "floor", *args])


# -- refused in one line -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--implementation", "handoff"], "raw sockets (recv_into, sendmsg), which carry no TLS"),
        (["--implementation", "handoff_splice"], "ciphertext spliced from one to the other"),
        (
            ["--implementation", "manual_protocol", "--tls-mode", "starttls"],
            "only handoff_protocol has it; manual_protocol runs --tls-mode accept",
        ),
        (["--implementation", "floor", "--tls-mode", "starttls"], "has no --tls-mode starttls"),
    ],
)
def test_an_implementation_without_that_tls_form_is_refused_in_one_line(
    args: list[str], needle: str
) -> None:
    proc = subprocess.run(
        bench_cmd(*TCP, *SMALL, "--tls", *args), capture_output=True, text=True, check=False
    )
    assert needle in assert_one_line_error(proc, "bytes-handoff-bench")
    assert proc.stdout == ""


def test_tls_on_the_duplex_transport_is_refused() -> None:
    run = run_cli("--tls", "--implementation", "manual_vec")
    assert run.rc == 2 and "--tls needs --transport tcp" in run.stderr


def without_openssl(tmp_path: Path) -> dict[str, str]:
    """An environment whose PATH has what the bench scripts use, and no openssl."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "basename", "taskset"):
        for folder in os.environ.get("PATH", "").split(os.pathsep):
            found = Path(folder) / tool
            if found.is_file() and os.access(found, os.X_OK):
                (bin_dir / tool).symlink_to(found)
                break
    assert not (bin_dir / "openssl").exists()
    return {**os.environ, "PATH": str(bin_dir)}


def test_the_harness_without_openssl_says_so_in_one_line(tmp_path: Path) -> None:
    proc = subprocess.run(
        bench_cmd(*TCP, *SMALL, "--implementation", "floor", "--tls"),
        env=without_openssl(tmp_path),
        capture_output=True,
        text=True,
        check=False,
    )
    line = assert_one_line_error(proc, "bytes-handoff-bench")
    assert "the openssl command is not on PATH" in line and "--tls-cert" in line


def test_the_wrapper_without_openssl_says_so_in_one_line(tmp_path: Path) -> None:
    results = tmp_path / "results"
    proc = subprocess.run(
        ["bash", str(HARNESS), *TCP, "--implementation", "floor", "--tls", "--results-dir",
         str(results)],
        env={**without_openssl(tmp_path), "PYTHON": sys.executable},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert "the openssl command is not on PATH" in assert_one_line_error(proc)
    assert not results.exists()


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--implementation", "handoff", "--tls"], "--implementation handoff reads and writes"),
        (
            ["--implementation", "handoff_protocol,raw_copy", "--tls", "--tls-mode", "starttls"],
            "raw_copy has no --tls-mode starttls",
        ),
        (["--tls-mode", "both"], "--tls-mode needs --tls"),
        (["--transport", "duplex", "--tls"], "--tls needs --transport tcp"),
        (["--implementation", "floor,nope"], "'nope' is not one of all"),
    ],
)
def test_the_wrapper_refuses_before_any_run(tmp_path: Path, args: list[str], needle: str) -> None:
    proc = run_script(HARNESS, "--transport", "tcp", *args, "--results-dir", str(tmp_path))
    assert needle in assert_one_line_error(proc)
    assert list(tmp_path.iterdir()) == []


# -- runs that verify --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize(("implementation", "mode"), FORMS)
def test_an_integrated_tls_run_verifies(implementation: str, mode: str, loop: str) -> None:
    run = run_cli(
        *TCP, *SMALL,
        "--implementation", implementation,
        "--tls", "--tls-mode", mode,
        "--scenario", "coalesced",
        "--loop", loop,
    )  # fmt: skip
    assert_ok(run, iterations=1)  # the sink decrypted and checked every byte, exact count
    assert_tls_keys(run.out, mode)
    assert run.out["tls_certificate"] == "generated"


@pytest.mark.slow
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
@pytest.mark.parametrize("completion", ["fire_and_forget", "ticket"])
def test_starttls_fragmented_verifies_in_both_styles(completion: str, loop: str) -> None:
    """64-byte TLS records, the callback style's router starting after the upgrade."""
    run = run_cli(
        *TCP, *SMALL,
        "--implementation", "handoff_protocol",
        "--tls", "--tls-mode", "starttls",
        "--completion", completion,
        "--loop", loop,
    )  # fmt: skip
    assert_ok(run, iterations=1)
    assert_tls_keys(run.out, "starttls")


@pytest.mark.slow
def test_the_made_certificate_is_removed_and_a_plain_run_says_tls_false(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    for tls in (["--tls"], []):
        proc = subprocess.run(
            bench_cmd(*TCP, *SMALL, "--implementation", "raw_protocol", *tls),
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr
        assert ("tls=true" if tls else "tls=false") in proc.stdout.splitlines()
        assert ("tls_mode=accept" in proc.stdout) == bool(tls)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_a_given_certificate_serves_a_split_run(tmp_path: Path) -> None:
    from harness_support import run_split

    cert, key = make_certificate(tmp_path)
    tls = ["--tls", "--tls-mode", "starttls", "--tls-cert", str(cert), "--tls-key", str(key)]
    split = run_split(tmp_path, [*SMALL, "--implementation", "handoff_protocol", *tls])
    assert_ok(split.driver)
    assert split.service_rc == 0, split.service_err
    assert_tls_keys(split.driver.out, "starttls")
    assert_tls_keys(split.service, "starttls", negotiated=False)
    assert split.driver.out["tls_certificate"] == split.service["tls_certificate"] == "given"


@pytest.mark.slow
def test_a_split_tls_run_through_the_wrapper_verifies_both_modes(tmp_path: Path) -> None:
    proc = run_script(
        HARNESS,
        *SMALL,
        "--service-cores", "0",
        "--driver-cores", "1",
        "--implementation", "handoff_protocol,manual_protocol",
        "--tls", "--tls-mode", "both",
        "--scenario", "coalesced",
        "--runs", "1",
        "--results-dir", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (base,) = tmp_path.iterdir()
    assert base.name.startswith("stream_tcp_all_coalesced_ticket_tls-both_")
    cells = {
        "handoff_protocol+accept": "accept",
        "handoff_protocol+starttls": "starttls",
        "manual_protocol+accept": "accept",
    }
    assert {p.name for p in base.iterdir() if p.is_dir()} == set(cells)
    for label, mode in cells.items():
        driver = parse_kv_file(base / label / "handoff-run-1.txt")
        service = parse_kv_file(base / label / "service-run-1.txt")
        assert driver["verified"] == "true" and driver["verification"] == "content"
        assert driver["implementation"] == label.partition("+")[0]
        assert_tls_keys(driver, mode)
        assert_tls_keys(service, mode, negotiated=False)
        (row,) = read_runs_csv(base / label / "runs.csv")
        assert row["tls_mode"] == mode and row["service_tls_mode"] == mode
    assert not list(base.rglob("*.pem"))  # the run's certificate and key are gone
    assert "handoff_protocol+starttls" in proc.stdout and "[" in proc.stdout  # the table


@pytest.mark.slow
def test_all_with_tls_runs_each_implementation_that_has_it(tmp_path: Path) -> None:
    proc = run_script(
        HARNESS, *SMALL, *TCP, "--implementation", "all", "--tls", "--runs", "1",
        "--results-dir", str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (base,) = tmp_path.iterdir()
    ran = {p.name for p in base.iterdir() if p.is_dir()}
    assert ran == {str(i) for i in implementations_for(Transport.TCP, TlsMode.ACCEPT)}
    for name in ran:
        assert_tls_keys(parse_kv_file(base / name / "handoff-run-1.txt"), "accept")
