"""The throwaway certificate of a ``--tls`` run, made with the ``openssl`` command.

A self-signed P-256 certificate for ``localhost`` and ``127.0.0.1`` (one day),
and its key, unencrypted: every TLS server of the run (the proxy and the sink)
presents it, and every TLS client (the driver's clients, the proxy towards the
sink) trusts it and nothing else. The harness makes one in a temporary folder
when it is given none and removes it afterwards; the stream wrapper makes one
in its run folder, gives both split processes its paths
(``--tls-cert``/``--tls-key``), and removes it after the runs.

Imports nothing of :mod:`.harness` or :mod:`.tools`, so both use it.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from .errors import BenchError, UsageError

__all__ = ["CERT_NAME", "KEY_NAME", "make_certificate", "openssl_command", "temporary_certificate"]

CERT_NAME = "tls-cert.pem"
KEY_NAME = "tls-key.pem"


def openssl_command() -> str:
    """The ``openssl`` program on ``PATH``; a one-line ``UsageError`` (exit 2) without it."""
    found = shutil.which("openssl")
    if found is None:
        raise UsageError(
            "--tls: the openssl command is not on PATH (it makes the run's self-signed"
            " certificate): install openssl, or give --tls-cert and --tls-key"
        )
    return found


def make_certificate(folder: Path) -> tuple[Path, Path]:
    """Write a self-signed certificate and its key into ``folder``; return their paths."""
    openssl = openssl_command()
    cert, key = folder / CERT_NAME, folder / KEY_NAME
    try:
        proc = subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
             "-nodes", "-days", "1", "-subj", "/CN=localhost", "-addext",
             "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise BenchError(f"--tls: cannot run {openssl} to make a certificate: {exc}") from exc
    if proc.returncode != 0 or not (cert.is_file() and key.is_file()):
        lines = proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"]
        raise BenchError(f"--tls: {openssl} could not make a certificate: {lines[-1]}")
    return cert, key


@contextlib.contextmanager
def temporary_certificate() -> Iterator[tuple[Path, Path]]:
    """A certificate and key in a new temporary folder, removed (with them) on the way out."""
    openssl_command()  # before the folder: a missing command is a usage error
    with tempfile.TemporaryDirectory(prefix="bytes-handoff-tls-") as folder:
        yield make_certificate(Path(folder))
