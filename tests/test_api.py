"""The public surface: what the README's API tables name is importable, ``__all__`` is honest."""

from __future__ import annotations

import asyncio
import builtins
import importlib.metadata
import importlib.resources
import pickle
import subprocess
import sys

import pytest
import uvloop

import bytes_handoff
from bytes_handoff import (
    BufferIOError,
    ByteBudgetExceeded,
    HandoffBufferError,
    HandoffError,
    LimitExceeded,
    SplitOutOfBounds,
    WriteBackpressure,
    WriteClosed,
    WriteError,
    WriteIOError,
)

#: Every name the README's API tables and adapter section promise.
README_NAMES = [
    "HandoffBuffer",
    "HandoffBufferConfig",
    "WriteHandoff",
    "WriteHandoffConfig",
    "WriteTicket",
    "BackpressureReason",
    "HandoffError",
    "HandoffBufferError",
    "LimitExceeded",
    "SplitOutOfBounds",
    "BufferIOError",
    "WriteError",
    "WriteClosed",
    "ByteBudgetExceeded",
    "WriteIOError",
    "WriteBackpressure",
    "DuplexStream",
    "duplex_pair",
    "register_reader",
    "register_writer",
    "ByteReader",
    "ByteWriter",
]


@pytest.mark.parametrize("name", README_NAMES)
def test_spec_name_is_exported(name: str) -> None:
    assert name in bytes_handoff.__all__
    assert getattr(bytes_handoff, name) is not None


def test_all_lists_only_existing_unique_names() -> None:
    exported = bytes_handoff.__all__
    assert len(exported) == len(set(exported))
    missing = [name for name in exported if not hasattr(bytes_handoff, name)]
    assert missing == []


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from bytes_handoff import *", namespace)
    namespace.pop("__builtins__")
    assert sorted(namespace) == sorted(bytes_handoff.__all__)


def test_version_matches_installed_distribution() -> None:
    assert bytes_handoff.__version__ == importlib.metadata.version("bytes-handoff")


def test_package_is_marked_typed() -> None:
    assert importlib.resources.files("bytes_handoff").joinpath("py.typed").is_file()


def test_core_imports_only_the_standard_library() -> None:
    script = (
        "import sys\n"
        "before = set(sys.modules)\n"
        "import bytes_handoff\n"
        "new = {m.split('.')[0] for m in set(sys.modules) - before}\n"
        "print(sorted(new - set(sys.stdlib_module_names) - {'bytes_handoff'}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    ("error", "family"),
    [
        (LimitExceeded, HandoffBufferError),
        (SplitOutOfBounds, HandoffBufferError),
        (BufferIOError, HandoffBufferError),
        (WriteClosed, WriteError),
        (ByteBudgetExceeded, WriteError),
        (WriteIOError, WriteError),
        (WriteBackpressure, WriteError),
        (HandoffBufferError, HandoffError),
        (WriteError, HandoffError),
    ],
)
def test_error_hierarchy(error: type[Exception], family: type[Exception]) -> None:
    assert issubclass(error, family)
    assert issubclass(error, HandoffError)


def test_read_side_base_is_not_the_builtin() -> None:
    assert not issubclass(HandoffBufferError, builtins.BufferError)


def test_star_import_leaves_the_builtin_buffer_error_alone() -> None:
    namespace: dict[str, object] = {}
    exec("from bytes_handoff import *", namespace)
    assert "BufferError" not in namespace
    exec(
        "try:\n    raise BufferError(1)\nexcept BufferError as e:\n    caught = type(e)", namespace
    )
    assert namespace["caught"] is builtins.BufferError


@pytest.mark.parametrize("module", ["bytes_handoff", "bytes_handoff.errors"])
def test_old_buffer_error_name_is_a_deprecated_alias(module: str) -> None:
    mod = importlib.import_module(module)
    with pytest.warns(DeprecationWarning, match="HandoffBufferError"):
        old = mod.BufferError
    assert old is HandoffBufferError
    with pytest.warns(DeprecationWarning):
        exec(f"from {module} import BufferError as imported", {})
    with pytest.raises(AttributeError, match="no attribute 'NoSuchName'"):
        _ = mod.NoSuchName


@pytest.mark.parametrize(
    "error",
    [
        LimitExceeded(attempted=5, limit=4),
        SplitOutOfBounds(requested=9, available=3),
        ByteBudgetExceeded(attempted=70, limit=64),
        BufferIOError(ConnectionResetError(104, "reset")),
        WriteIOError(BrokenPipeError(32, "pipe")),
    ],
    ids=type,
)
def test_errors_survive_pickling_with_their_numbers(error: HandoffError) -> None:
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is type(error)
    assert str(clone) == str(error)
    assert {k: repr(v) for k, v in vars(clone).items() if k != "__cause__"} == {
        k: repr(v) for k, v in vars(error).items() if k != "__cause__"
    }


@pytest.mark.asyncio
async def test_async_tests_run_on_the_loop_named_in_their_id(
    request: pytest.FixtureRequest,
) -> None:
    loop = asyncio.get_running_loop()
    if request.node.name.endswith("[uvloop]"):
        assert isinstance(loop, uvloop.Loop)
    else:
        assert request.node.name.endswith("[asyncio]")
        assert isinstance(loop, asyncio.SelectorEventLoop)
