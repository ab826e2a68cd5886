"""PROXY protocol headers: v1 and v2 parsed exactly off a ``HandoffBuffer`` (``None`` until
complete, bounded, nothing consumed on error), the bytes after the header left untouched,
round trips through the builders, and real clients (``curl --haproxy-protocol``)."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import os
import pickle
import shutil
import socket
import ssl
import subprocess
from collections.abc import Callable
from ipaddress import IPv4Address, IPv6Address
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from bytes_handoff import (
    NO_PROXY_HEADER,
    HandoffBuffer,
    HandoffBufferConfig,
    HandoffBufferError,
    HandoffError,
    HandoffProtocol,
    NoProxyHeader,
    ProxyCommand,
    ProxyFamily,
    ProxyHeader,
    ProxyHeaderError,
    ProxySSL,
    ProxyTLV,
    ProxyTransport,
    build_proxy_header_v1,
    build_proxy_header_v2,
    parse_proxy_header,
    start_handoff_server,
)
from bytes_handoff.proxy_protocol import V1_MAX_LEN, V2_MAX_LEN, V2_SIGNATURE, _crc32c

#: Bound on every wait inside a test: a hang fails fast instead of at the global timeout.
WAIT = 30.0
CURL = shutil.which("curl")
needs_curl = pytest.mark.skipif(CURL is None, reason="needs the curl binary (apt-get install curl)")
#: What a client sends after its header: it must come out of the buffer byte for byte.
TAIL = b"GET / HTTP/1.1\r\nHost: example\r\n\r\n"
SETTINGS = settings(max_examples=200, deadline=None, database=None)

Result = ProxyHeader | NoProxyHeader | ProxyHeaderError | None

#: The calls without their types: to pass keyword arguments from a dict, and wrong arguments.
loose_parse: Any = parse_proxy_header
loose_v1: Any = build_proxy_header_v1
loose_v2: Any = build_proxy_header_v2
IPAddress = IPv4Address | IPv6Address


def holding(data: bytes, max_len: int = 64 * 1024) -> HandoffBuffer:
    return HandoffBuffer.from_tail(data, HandoffBufferConfig(max_len))


def contents(buf: HandoffBuffer) -> bytes:
    with buf.peek() as view:
        return bytes(view)


def parse(buf: HandoffBuffer, **kwargs: object) -> Result:
    """The parser's answer; an error is returned, after checking that nothing was consumed."""
    before = contents(buf)
    try:
        result: Result = loose_parse(buf, **kwargs)
    except ProxyHeaderError as exc:
        assert contents(buf) == before
        return exc
    if not isinstance(result, ProxyHeader):
        assert contents(buf) == before  # None or NO_PROXY_HEADER: nothing consumed
    else:
        assert contents(buf) == before[result.header_len :]
    return result


def feed(proto: HandoffProtocol, data: bytes) -> None:
    """Hand ``data`` to ``proto`` the way the event loop does: into its buffer's spare room."""
    while data:
        view = proto.get_buffer(len(data))
        n = min(len(view), len(data))
        view[:n] = data[:n]
        proto.buffer_updated(n)
        data = data[n:]


def in_pieces(data: bytes, sizes: list[int], max_len: int = 64 * 1024, **kwargs: object) -> Result:
    """Feed ``data`` in pieces (sizes cycling) and parse after each: ``None`` means "more",
    so every answer before the last must be ``None``; the first other answer is returned
    once the rest of ``data`` is fed too (it must be in the buffer, untouched)."""
    proto = HandoffProtocol(HandoffBufferConfig(max_len, read_reserve=7))
    pos = i = 0
    while pos < len(data):
        piece = data[pos : pos + sizes[i % len(sizes)]]
        pos, i = pos + len(piece), i + 1
        feed(proto, piece)
        result = parse(proto.buffer, **kwargs)
        if result is not None:
            if isinstance(result, ProxyHeader):
                # Complete only once all of it is buffered: never a header from a prefix.
                assert pos >= result.header_len
                assert pos - len(piece) < result.header_len
            feed(proto, data[pos:])
            start = result.header_len if isinstance(result, ProxyHeader) else 0
            assert contents(proto.buffer) == data[start:]
            return result
    return None


def bytewise(data: bytes, max_len: int = 64 * 1024, **kwargs: object) -> tuple[int, Result]:
    """Feed one byte at a time; the byte count at the first answer that is not ``None``."""
    proto = HandoffProtocol(HandoffBufferConfig(max_len))
    for i in range(len(data)):
        feed(proto, data[i : i + 1])
        result = parse(proto.buffer, **kwargs)
        if result is not None:
            return i + 1, result
    return len(data), None


def tlv(kind: int, value: bytes) -> bytes:
    return bytes((kind,)) + len(value).to_bytes(2, "big") + value


def v2(ver_cmd: int, fam: int, body: bytes, length: int | None = None) -> bytes:
    """A hand-made version 2 header, its length field ``length`` or the body's."""
    size = len(body) if length is None else length
    return V2_SIGNATURE + bytes((ver_cmd, fam)) + size.to_bytes(2, "big") + body


def ssl_value(client: int, verify: int, *subs: tuple[int, bytes]) -> bytes:
    return bytes((client,)) + verify.to_bytes(4, "big") + b"".join(tlv(k, v) for k, v in subs)


INET_BLOCK = (
    bytes((10, 0, 0, 1, 10, 0, 0, 2)) + (1234).to_bytes(2, "big") + (443).to_bytes(2, "big")
)
INET6_BLOCK = IPv6Address("2001:db8::1").packed + IPv6Address("::1").packed + bytes((0, 1, 0, 2))
UNIX_BLOCK = b"/run/a.sock".ljust(108, b"\0") + b"\0abstract".ljust(108, b"\0")


# -- CRC32C ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "crc"),
    [
        (b"", 0),
        (b"123456789", 0xE3069283),  # the CRC catalogue's check value
        (bytes(32), 0x8A9136AA),  # RFC 3720 B.4
        (b"\xff" * 32, 0x62A8AB43),
        (bytes(range(32)), 0x46DD794E),
        (bytes(range(31, -1, -1)), 0x113FDB5C),
    ],
)
def test_crc32c_matches_the_published_check_values(data: bytes, crc: int) -> None:
    assert _crc32c(data) == crc


# -- version 1 ------------------------------------------------------------------------------------

FULL6 = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"

V1_VALID = [
    (
        b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n",
        "192.168.0.1",
        56324,
        "192.168.0.11",
        443,
    ),
    (
        b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 65535\r\n",
        "255.255.255.255",
        65535,
        "255.255.255.255",
        65535,
    ),
    (b"PROXY TCP4 0.0.0.0 0.0.0.0 0 0\r\n", "0.0.0.0", 0, "0.0.0.0", 0),
    (f"PROXY TCP6 {FULL6} {FULL6} 65535 65535\r\n".encode(), FULL6, 65535, FULL6, 65535),
    (b"PROXY TCP6 ::1 :: 1 2\r\n", "::1", 1, "::", 2),
    (
        b"PROXY TCP6 2001:0DB8:0000:0000:0000:0000:0000:0001 FE80::A 80 8080\r\n",
        "2001:db8::1",
        80,
        "fe80::a",
        8080,
    ),
    (
        b"PROXY TCP6 ::ffff:192.0.2.128 1:2:3:4:5:6:7:: 7 9\r\n",
        "::ffff:c000:280",
        7,
        "1:2:3:4:5:6:7:0",
        9,
    ),
    (
        b"PROXY TCP6 ::2:3:4:5:6:7:8 1:2:3:4:5:6:1.2.3.4 10 20\r\n",
        "0:2:3:4:5:6:7:8",
        10,
        "1:2:3:4:5:6:102:304",
        20,
    ),
]

V1_UNKNOWN = [
    b"PROXY UNKNOWN\r\n",
    f"PROXY UNKNOWN {FULL6} {FULL6} 65535 65535\r\n".encode(),  # the spec's longest line: 107
    b"PROXY UNKNOWN whatever \x00\xff\ttext, ignored\r\n",
]


@pytest.mark.parametrize(("line", "src", "sport", "dst", "dport"), V1_VALID)
def test_v1_tcp_line_is_parsed_and_the_tail_stays(
    line: bytes, src: str, sport: int, dst: str, dport: int
) -> None:
    buf = holding(line + TAIL)
    header = parse(buf)
    ip = ipaddress.ip_address
    assert header == ProxyHeader(
        version=1,
        command=ProxyCommand.PROXY,
        family=ProxyFamily.INET6 if b"TCP6" in line else ProxyFamily.INET,
        transport=ProxyTransport.STREAM,
        source=(ip(src), sport),
        destination=(ip(dst), dport),
        tlvs=(),
        header_len=len(line),
    )
    assert contents(buf) == TAIL
    assert bytewise(line + TAIL) == (len(line), header)  # None for every shorter prefix


@pytest.mark.parametrize("line", V1_UNKNOWN)
def test_v1_unknown_ignores_the_rest_of_its_line(line: bytes) -> None:
    buf = holding(line + TAIL)
    header = parse(buf)
    assert header == ProxyHeader(
        1, ProxyCommand.PROXY, ProxyFamily.UNSPEC, ProxyTransport.UNSPEC, None, None, (), len(line)
    )
    assert contents(buf) == TAIL
    assert bytewise(line + TAIL) == (len(line), header)


def test_the_spec_worst_case_line_is_107_bytes_and_one_more_is_refused_at_107() -> None:
    longest = V1_UNKNOWN[1]
    assert len(longest) == V1_MAX_LEN == 107
    too_long = longest.replace(b"65535\r\n", b"655350\r\n")
    at, result = bytewise(too_long + TAIL)
    assert at == 107  # refused without waiting for the 108th byte
    assert isinstance(result, ProxyHeaderError)
    assert "no CRLF in its first 107 bytes" in str(result)
    # All 108 bytes buffered at once: the same answer.
    assert "no CRLF in its first 107 bytes" in str(parse(holding(too_long)))


V1_MALFORMED = {
    "lowercase protocol": b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n",
    "no space after PROXY": b"PROXYTCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "two spaces after PROXY": b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "two spaces between fields": b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n",
    "space before CRLF": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n",
    "tab for a space": b"PROXY TCP4\t1.2.3.4 5.6.7.8 1 2\r\n",
    "LF only": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n",
    "CR only": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\rGET",
    "LF CR": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n\r",
    "CR CR LF": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\r\n",
    "CR inside the line": b"PROXY TCP4 1.2.3.4\r5.6.7.8 1 2\r\n",
    "port 65536": b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n",
    "port 99999": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",
    "port of 6 digits": b"PROXY TCP4 1.2.3.4 5.6.7.8 100000 2\r\n",
    "port with a leading zero": b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n",
    "port 00": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 00\r\n",
    "port with a plus": b"PROXY TCP4 1.2.3.4 5.6.7.8 +80 2\r\n",
    "negative port": b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n",
    "hex port": b"PROXY TCP4 1.2.3.4 5.6.7.8 0x50 2\r\n",
    "port with an exponent": b"PROXY TCP4 1.2.3.4 5.6.7.8 1e3 2\r\n",
    "non-ASCII digit in a port": "PROXY TCP4 1.2.3.4 5.6.7.8 \u0663 2\r\n".encode(),
    "port with a letter": b"PROXY TCP4 1.2.3.4 5.6.7.8 80a 2\r\n",
    "octet 256": b"PROXY TCP4 256.1.1.1 5.6.7.8 1 2\r\n",
    "three octets": b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n",
    "five octets": b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n",
    "octet with a leading zero": b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n",
    "last octet with a leading zero": b"PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n",
    "host name": b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n",
    "IPv6 in TCP4": b"PROXY TCP4 ::1 5.6.7.8 1 2\r\n",
    "IPv4 in TCP6": b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n",
    "IPv4 destination in TCP6": b"PROXY TCP6 ::1 1.2.3.4 1 2\r\n",
    "IPv6 scope id": b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n",
    "two double colons": b"PROXY TCP6 1::2::3 ::1 1 2\r\n",
    "five hex digits": b"PROXY TCP6 12345::1 ::1 1 2\r\n",
    "nine groups": b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n",
    "IPv4 tail with a leading zero": b"PROXY TCP6 ::ffff:01.2.3.4 ::1 1 2\r\n",
    "non-ASCII address": "PROXY TCP4 1.2.3.\u0664 5.6.7.8 1 2\r\n".encode(),
    "three fields": b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n",
    "five fields": b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n",
    "no fields": b"PROXY TCP4\r\n",
    "nothing after PROXY": b"PROXY\r\n",
    "only a space after PROXY": b"PROXY \r\n",
    "TCP5": b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n",
    "UDP4": b"PROXY UDP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "UNKNOWN glued to more": b"PROXY UNKNOWNX\r\n",
    "UNKNOWN in lowercase": b"PROXY unknown\r\n",
    "PROXY glued to more": b"PROXYX TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
}


@pytest.mark.parametrize("line", V1_MALFORMED.values(), ids=V1_MALFORMED.keys())
@pytest.mark.parametrize("required", [True, False])
def test_malformed_v1_line_raises_and_consumes_nothing(line: bytes, required: bool) -> None:
    result = parse(holding(line + TAIL), required=required)
    assert isinstance(result, ProxyHeaderError), result
    # Byte by byte: None for a while, then the same refusal, never a header.
    at, result = bytewise(line + TAIL, required=required)
    assert isinstance(result, ProxyHeaderError), result
    assert at <= len(line)


@pytest.mark.parametrize(
    ("line", "at"),
    [
        (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n", len(b"PROXY t")),
        (b"PROXYX", len(b"PROXYX")),
        (b"PROXY TCP4 1.2.3.04 5.6.7.8 1 2\r\n", len(b"PROXY TCP4 1.2.3.04")),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n", len(b"PROXY TCP4 1.2.3.4 5.6.7.8 65536")),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 080 2\r\n", len(b"PROXY TCP4 1.2.3.4 5.6.7.8 08")),
        (b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n", len(b"PROXY TCP4 1.2.3.4  ")),
        (b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n", len(b"PROXY TCP6 1.2.3.4 ")),
        (b"PROXY TCP6 12345", len(b"PROXY TCP6 12345")),
        (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", len(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ")),
        (b"PROXY TCP4 1.2.3.4\rX", len(b"PROXY TCP4 1.2.3.4\rX")),
    ],
)
def test_a_bad_v1_line_is_refused_at_its_first_wrong_byte(line: bytes, at: int) -> None:
    got, result = bytewise(line + TAIL)
    assert isinstance(result, ProxyHeaderError)
    assert got == at


def test_v1_error_messages_name_the_field_and_value() -> None:
    cases = {
        b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n": "source port b'65536'",
        b"PROXY TCP6 1.2.3.4 ::1 1 2\r\n": "TCP6 source address b'1.2.3.4' is not an IPv6",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\n": "bare LF at offset 30",
        b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n": "3 fields after the protocol, not 4",
        b"PROXY TCP4 1.2.3.4  5.6.7.8 1 2\r\n": "destination address is empty",
    }
    for line, message in cases.items():
        assert message in str(parse(holding(line)))


# -- version 2 ------------------------------------------------------------------------------------


def test_v2_header_seen_on_the_wire_from_haproxy() -> None:
    # HAProxy's `send-proxy-v2` before a curl request (TCP4 172.19.0.1:42578 -> 172.19.0.3:80).
    wire = bytes.fromhex("0d0a0d0a000d0a515549540a2111000cac130001ac130003a6520050") + TAIL
    buf = holding(wire)
    assert parse(buf) == ProxyHeader(
        version=2,
        command=ProxyCommand.PROXY,
        family=ProxyFamily.INET,
        transport=ProxyTransport.STREAM,
        source=(IPv4Address("172.19.0.1"), 42578),
        destination=(IPv4Address("172.19.0.3"), 80),
        tlvs=(),
        header_len=28,
    )
    assert contents(buf) == TAIL


V2Case = tuple[bytes, ProxyFamily, ProxyTransport, object, object]
V2_VALID: dict[str, V2Case] = {
    "TCP4": (
        v2(0x21, 0x11, INET_BLOCK),
        ProxyFamily.INET,
        ProxyTransport.STREAM,
        (IPv4Address("10.0.0.1"), 1234),
        (IPv4Address("10.0.0.2"), 443),
    ),
    "UDP4": (
        v2(0x21, 0x12, INET_BLOCK),
        ProxyFamily.INET,
        ProxyTransport.DGRAM,
        (IPv4Address("10.0.0.1"), 1234),
        (IPv4Address("10.0.0.2"), 443),
    ),
    "TCP6": (
        v2(0x21, 0x21, INET6_BLOCK),
        ProxyFamily.INET6,
        ProxyTransport.STREAM,
        (IPv6Address("2001:db8::1"), 1),
        (IPv6Address("::1"), 2),
    ),
    "UDP6": (
        v2(0x21, 0x22, INET6_BLOCK),
        ProxyFamily.INET6,
        ProxyTransport.DGRAM,
        (IPv6Address("2001:db8::1"), 1),
        (IPv6Address("::1"), 2),
    ),
    "UNIX stream": (
        v2(0x21, 0x31, UNIX_BLOCK),
        ProxyFamily.UNIX,
        ProxyTransport.STREAM,
        "/run/a.sock",
        "\0abstract",
    ),
    "UNIX datagram, unnamed peer": (
        v2(0x21, 0x32, bytes(108) + b"/run/b".ljust(108, b"\0")),
        ProxyFamily.UNIX,
        ProxyTransport.DGRAM,
        "",
        "/run/b",
    ),
    "UNIX path filling all 108 bytes, no NUL": (
        v2(0x21, 0x31, b"/" + b"p" * 107 + b"/q".ljust(108, b"\0")),
        ProxyFamily.UNIX,
        ProxyTransport.STREAM,
        "/" + "p" * 107,
        "/q",
    ),
    "UNIX path with garbage after its NUL": (
        v2(0x21, 0x31, b"/a\0junk".ljust(108, b"x") + b"/b".ljust(108, b"\0")),
        ProxyFamily.UNIX,
        ProxyTransport.STREAM,
        "/a",
        "/b",
    ),
    "PROXY UNSPEC": (v2(0x21, 0x00, b""), ProxyFamily.UNSPEC, ProxyTransport.UNSPEC, None, None),
    "PROXY UNSPEC with bytes to skip": (
        v2(0x21, 0x00, tlv(0xE0, b"x")),
        ProxyFamily.UNSPEC,
        ProxyTransport.UNSPEC,
        None,
        None,
    ),
    "LOCAL": (v2(0x20, 0x00, b""), ProxyFamily.UNSPEC, ProxyTransport.UNSPEC, None, None),
    "LOCAL with an INET block, skipped": (
        v2(0x20, 0x11, INET_BLOCK),
        ProxyFamily.INET,
        ProxyTransport.STREAM,
        None,
        None,
    ),
}


@pytest.mark.parametrize("case", V2_VALID.values(), ids=V2_VALID.keys())
def test_v2_header_is_parsed_and_the_tail_stays(case: V2Case) -> None:
    data, family, transport, source, destination = case
    buf = holding(data + TAIL)
    header = parse(buf)
    assert isinstance(header, ProxyHeader)
    command = ProxyCommand(data[12] & 0xF)
    assert (header.version, header.command, header.family, header.transport) == (
        2,
        command,
        family,
        transport,
    )
    assert (header.source, header.destination) == (source, destination)
    assert header.header_len == len(data)
    assert header.tlvs == (((0xE0, b"x"),) if data.endswith(tlv(0xE0, b"x")) else ())
    assert contents(buf) == TAIL
    assert bytewise(data + TAIL) == (len(data), header)


def test_v2_tlvs_come_in_order_with_helpers_for_the_registered_ones() -> None:
    ssl_tlv = ssl_value(
        0x07,
        0,
        (ProxyTLV.SSL_VERSION, b"TLSv1.3"),
        (ProxyTLV.SSL_CN, "bücher.example".encode()),
        (ProxyTLV.SSL_CIPHER, b"TLS_AES_128_GCM_SHA256"),
        (ProxyTLV.SSL_SIG_ALG, b"RSA-SHA256"),
        (ProxyTLV.SSL_KEY_ALG, b"RSA2048"),
        (0x28, b"\x30\x82 DER bytes"),  # a sub-type registered later: kept as bytes
    )
    tlvs = [
        (ProxyTLV.NOOP, b""),
        (ProxyTLV.ALPN, b"h2"),
        (ProxyTLV.AUTHORITY, "bücher.example".encode()),
        (ProxyTLV.UNIQUE_ID, bytes(range(128))),
        (ProxyTLV.SSL, ssl_tlv),
        (ProxyTLV.NETNS, b"blue"),
        (0xEA, b"\x01vpce-0123"),  # AWS's custom TLV: passed through
        (ProxyTLV.ALPN, b"second, ignored by the helper"),
    ]
    data = build_proxy_header_v2(("192.0.2.1", 5), ("192.0.2.2", 6), tlvs=tlvs, crc32c=True)
    header = parse(holding(data + TAIL))
    assert isinstance(header, ProxyHeader)
    crc = data[-4:]
    assert header.tlvs == (*[(int(k), v) for k, v in tlvs], (3, crc))
    assert header.alpn == b"h2"
    assert header.authority == "bücher.example"
    assert header.crc32c == int.from_bytes(crc, "big")
    assert header.unique_id == bytes(range(128))
    assert header.netns == "blue"
    assert header.tlv(0xEA) == b"\x01vpce-0123"
    assert header.tlv(0x99) is None
    assert header.ssl == ProxySSL(
        client=0x07,
        verify=0,
        tlvs=(
            (0x21, b"TLSv1.3"),
            (0x22, "bücher.example".encode()),
            (0x23, b"TLS_AES_128_GCM_SHA256"),
            (0x24, b"RSA-SHA256"),
            (0x25, b"RSA2048"),
            (0x28, b"\x30\x82 DER bytes"),
        ),
    )
    tls = header.ssl
    assert (tls.version, tls.cn, tls.cipher, tls.sig_alg, tls.key_alg) == (
        "TLSv1.3",
        "bücher.example",
        "TLS_AES_128_GCM_SHA256",
        "RSA-SHA256",
        "RSA2048",
    )
    assert tls.tlv(0x28) == b"\x30\x82 DER bytes"


def test_helpers_say_none_when_there_is_no_such_tlv() -> None:
    header = parse(holding(build_proxy_header_v2(("::1", 1), ("::2", 2))))
    assert isinstance(header, ProxyHeader)
    assert header.tlvs == ()
    none = (header.alpn, header.authority, header.crc32c, header.unique_id, header.ssl)
    assert none == (None,) * 5
    assert header.netns is None
    bare = ProxySSL(0, 1, ())
    assert (bare.version, bare.cn, bare.cipher, bare.sig_alg, bare.key_alg) == (None,) * 5


def test_tlvs_after_a_local_header_are_read() -> None:
    data = build_proxy_header_v2(
        command=ProxyCommand.LOCAL, tlvs=[(ProxyTLV.UNIQUE_ID, b"check-1")], crc32c=True
    )
    header = parse(holding(data))
    assert isinstance(header, ProxyHeader)
    assert (header.command, header.family, header.source, header.unique_id) == (
        ProxyCommand.LOCAL,
        ProxyFamily.UNSPEC,
        None,
        b"check-1",
    )


def crc_header() -> bytes:
    """A TCP6 header with TLVs of every registered kind and a CRC32C."""
    return build_proxy_header_v2(
        ("2001:db8::7", 40000),
        ("2001:db8::8", 443),
        tlvs=[
            (ProxyTLV.ALPN, b"http/1.1"),
            (ProxyTLV.AUTHORITY, b"example.com"),
            (ProxyTLV.SSL, ssl_value(1, 0, (ProxyTLV.SSL_VERSION, b"TLSv1.2"))),
            (ProxyTLV.NOOP, b"\0\0\0"),
        ],
        crc32c=True,
    )


def test_v2_truncated_at_every_length_waits_and_consumes_nothing() -> None:
    data = crc_header()
    for k in range(len(data)):
        buf = holding(data[:k])
        assert parse(buf) is None, k
        assert parse(buf, required=False) is None, k
        assert len(buf) == k
    assert isinstance(parse(holding(data)), ProxyHeader)
    at, header = bytewise(data + TAIL)
    assert at == len(data) and isinstance(header, ProxyHeader)


def test_any_single_byte_changed_in_a_crc32c_header_is_never_a_header() -> None:
    data = crc_header()
    crc_type = len(data) - 7  # the CRC32C TLV's own type byte, which the checksum cannot guard:
    assert data[crc_type] == ProxyTLV.CRC32C  # changed, it is some other TLV and nothing is checked
    for i in range(len(data)):
        for flip in (0x01, 0x80, 0xFF) if i != crc_type else ():
            changed = bytearray(data)
            changed[i] ^= flip
            result = parse(holding(bytes(changed)))
            # A longer length field waits for more bytes; everything else is refused.
            assert not isinstance(result, ProxyHeader), (i, flip)
            if result is None:
                assert i in (14, 15)


def crc_fixed(header: bytes) -> bytes:
    """``header`` (ending in a CRC32C TLV) with its checksum made right for its bytes."""
    zeroed = header[:-4] + bytes(4)
    return zeroed[:-4] + _crc32c(zeroed).to_bytes(4, "big")


V2_MALFORMED = {
    "version 1": (v2(0x11, 0x11, INET_BLOCK), "version 1, not 2"),
    "version 3": (v2(0x31, 0x11, INET_BLOCK), "version 3, not 2"),
    "version 0": (v2(0x01, 0x11, INET_BLOCK), "version 0, not 2"),
    "command 2": (v2(0x22, 0x11, INET_BLOCK), "command 2, not LOCAL or PROXY"),
    "command 15": (v2(0x2F, 0x11, INET_BLOCK), "command 15"),
    "family 4": (v2(0x21, 0x41, INET_BLOCK), "address family 4"),
    "family 15": (v2(0x21, 0xF1, INET_BLOCK), "address family 15"),
    "transport 3": (v2(0x21, 0x13, INET_BLOCK), "transport 3"),
    "transport 15": (v2(0x21, 0x1F, INET_BLOCK), "transport 15"),
    "INET block short": (v2(0x21, 0x11, INET_BLOCK[:11]), "INET address block needs 12 bytes"),
    "INET block empty": (v2(0x21, 0x11, b""), "needs 12 bytes, the header has 0"),
    "INET6 block short": (v2(0x21, 0x21, INET6_BLOCK[:35]), "INET6 address block needs 36"),
    "INET6 block of an INET header": (
        v2(0x21, 0x21, INET_BLOCK),
        "needs 36 bytes, the header has 12",
    ),
    "UNIX block short": (v2(0x21, 0x31, UNIX_BLOCK[:215]), "UNIX address block needs 216"),
    "LOCAL with a short block": (
        v2(0x20, 0x11, INET_BLOCK[:4]),
        "needs 12 bytes, the header has 4",
    ),
    "one stray byte after the block": (
        v2(0x21, 0x11, INET_BLOCK + b"\x04"),
        "1 stray bytes at offset 28",
    ),
    "two stray bytes": (v2(0x21, 0x11, INET_BLOCK + b"\x04\x00"), "2 stray bytes"),
    "TLV longer than the header": (
        v2(0x21, 0x11, INET_BLOCK + b"\x04\x00\x05abcd"),
        "says 5 bytes, 4 are left",
    ),
    "second TLV overruns": (
        v2(0x21, 0x00, tlv(1, b"h2") + b"\x02\xff\xff"),
        "says 65535 bytes, 0 are left",
    ),
    "CRC32C wrong": (build_proxy_header_v2(crc32c=True)[:-1] + b"\x00", "CRC32C mismatch"),
    "CRC32C of 3 bytes": (v2(0x21, 0x00, tlv(3, b"\0\0\0")), "CRC32C TLV of 3 bytes, not 4"),
    "CRC32C of 5 bytes": (v2(0x21, 0x00, tlv(3, bytes(5))), "CRC32C TLV of 5 bytes, not 4"),
    "two CRC32C TLVs": (
        crc_fixed(v2(0x21, 0x00, tlv(3, bytes(4)) + tlv(3, bytes(4)))),
        "second CRC32C TLV at offset 23",
    ),
    "UNIQUE_ID of 129 bytes": (
        v2(0x21, 0x00, tlv(5, bytes(129))),
        "UNIQUE_ID TLV of 129 bytes, more than 128",
    ),
    "SSL of 4 bytes": (
        v2(0x21, 0x00, tlv(0x20, bytes(4))),
        "SSL TLV at offset 16 has 4 bytes, fewer than 5",
    ),
    "SSL sub-TLV overruns": (
        v2(0x21, 0x00, tlv(0x20, bytes(5) + b"\x21\x00\x09TLS")),
        "SSL TLV at offset 16: TLV 0x21 at offset 24 says 9 bytes, 3 are left",
    ),
    "SSL stray byte": (
        v2(0x21, 0x00, tlv(0x20, bytes(5) + b"\x21")),
        "SSL TLV at offset 16 ends with 1 stray bytes at offset 24",
    ),
    "SSL version not ASCII": (
        v2(0x21, 0x00, tlv(0x20, ssl_value(1, 0, (0x21, b"TLSv\xc3\xa9")))),
        "SSL_VERSION TLV at offset 24 is not ascii: byte 0xc3 at 4",
    ),
    "SSL CN not UTF-8": (
        v2(0x21, 0x00, tlv(0x20, ssl_value(1, 0, (0x22, b"\xff")))),
        "SSL_CN TLV at offset 24 is not utf-8",
    ),
    "AUTHORITY not UTF-8": (
        v2(0x21, 0x00, tlv(2, b"example.\xc3")),
        "AUTHORITY TLV at offset 16 is not utf-8",
    ),
    "NETNS not ASCII": (
        v2(0x21, 0x00, tlv(0x30, "blå".encode())),
        "NETNS TLV at offset 16 is not ascii",
    ),
}


def answered_at(message: str, size: int) -> int:
    """How many bytes fed one at a time bring the error ``message`` about a ``size``-byte header."""
    if "version" in message or "command" in message:
        return 13
    if "family" in message or "transport" in message:
        return 14
    return size


@pytest.mark.parametrize("case", V2_MALFORMED.values(), ids=V2_MALFORMED.keys())
@pytest.mark.parametrize("required", [True, False])
def test_malformed_v2_header_raises_and_consumes_nothing(
    case: tuple[bytes, str], required: bool
) -> None:
    data, message = case
    result = parse(holding(data + TAIL), required=required)
    assert isinstance(result, ProxyHeaderError)
    assert message in str(result)
    at, result = bytewise(data + TAIL, required=required)
    assert isinstance(result, ProxyHeaderError)
    assert message in str(result)
    # The fixed part is checked as it arrives; the rest once the whole header is in.
    assert at == answered_at(message, len(data))


# -- signatures -----------------------------------------------------------------------------------

NOT_HEADERS = {
    "HTTP": b"GET / HTTP/1.1\r\n\r\n",
    "TLS ClientHello": b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",
    "SSH": b"SSH-2.0-OpenSSH_9.2\r\n",
    "lowercase proxy": b"proxy TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "space before PROXY": b" PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\n",
    "v2 signature with a wrong last byte": V2_SIGNATURE[:11] + b"\r" + bytes(4),
    "one CRLF then text": b"\r\nhello",
}


@pytest.mark.parametrize("data", NOT_HEADERS.values(), ids=NOT_HEADERS.keys())
def test_no_signature_raises_if_required_and_says_so_if_not(data: bytes) -> None:
    error = parse(holding(data))
    assert isinstance(error, ProxyHeaderError)
    assert str(error).startswith("no PROXY header: the connection starts with ")
    buf = holding(data)
    assert parse(buf, required=False) is NO_PROXY_HEADER
    assert contents(buf) == data  # left for the next parser


@pytest.mark.parametrize(
    ("signature", "name"), [(b"PROXY", "v1"), (V2_SIGNATURE, "v2")], ids=["v1", "v2"]
)
def test_a_wrong_byte_after_any_valid_prefix_of_a_signature(signature: bytes, name: str) -> None:
    for k in range(len(signature)):
        prefix = signature[:k]
        for required in (True, False):
            assert parse(holding(prefix), required=required) is None  # could still be one
        wrong = prefix + (b"X" if signature[k : k + 1] != b"X" else b"Y") + b" more"
        assert isinstance(parse(holding(wrong)), ProxyHeaderError)
        buf = holding(wrong)
        assert parse(buf, required=False) is NO_PROXY_HEADER, (name, k)
        assert contents(buf) == wrong
        # Fed byte by byte, the answer comes at the wrong byte.
        assert bytewise(wrong, required=False) == (k + 1, NO_PROXY_HEADER)


def test_an_empty_buffer_waits() -> None:
    assert parse(holding(b"")) is None
    assert parse(holding(b""), required=False) is None
    assert repr(NO_PROXY_HEADER) == "NO_PROXY_HEADER"


# -- bounds ---------------------------------------------------------------------------------------


def test_v2_longer_than_the_buffer_is_refused_once_its_length_is_known() -> None:
    fixed = v2(0x21, 0x00, b"", length=2000)
    for k in range(16):
        assert parse(holding(fixed[:k], max_len=1024)) is None
    error = parse(holding(fixed, max_len=1024))
    assert isinstance(error, ProxyHeaderError)
    assert str(error) == (
        "PROXY v2 header of 2016 bytes exceeds the limit (the buffer's max_len) of 1024"
    )


def test_max_header_len_caps_v2_below_the_buffer() -> None:
    data = build_proxy_header_v2(("1.2.3.4", 1), ("5.6.7.8", 2), tlvs=[(0xE0, bytes(100))])
    assert len(data) == 131
    error = parse(holding(data[:16]), max_header_len=130)
    assert isinstance(error, ProxyHeaderError)
    assert str(error) == "PROXY v2 header of 131 bytes exceeds the limit (max_header_len) of 130"
    assert isinstance(parse(holding(data), max_header_len=131), ProxyHeader)
    # A cap above the buffer's max_len: the buffer's bound is the one that holds.
    assert "(the buffer's max_len) of 100" in str(
        parse(holding(data[:16], max_len=100), max_header_len=10_000)
    )


def test_a_header_that_fills_the_buffer_exactly_is_parsed() -> None:
    data = build_proxy_header_v2(("1.2.3.4", 1), ("5.6.7.8", 2))
    buf = holding(data, max_len=len(data))
    assert isinstance(parse(buf), ProxyHeader)
    assert len(buf) == 0


def test_the_longest_v2_header_the_spec_allows() -> None:
    data = build_proxy_header_v2(
        ("1.2.3.4", 1),
        ("5.6.7.8", 2),
        tlvs=[(ProxyTLV.NOOP, bytes(0xFFFF - 12 - 3 - 7))],
        crc32c=True,
    )
    assert len(data) == V2_MAX_LEN == 16 + 0xFFFF
    buf = holding(data + TAIL, max_len=V2_MAX_LEN + len(TAIL))
    header = parse(buf)
    assert isinstance(header, ProxyHeader) and header.header_len == V2_MAX_LEN
    assert contents(buf) == TAIL
    with pytest.raises(ValueError, match="needs 65536 bytes after its fixed 16, more than 65535"):
        build_proxy_header_v2(tlvs=[(ProxyTLV.NOOP, bytes(0xFFFF - 2))])


def test_a_buffer_too_small_for_any_header_never_waits_on_its_full_buffer() -> None:
    error = parse(holding(V2_SIGNATURE[:10], max_len=10))
    assert isinstance(error, ProxyHeaderError)
    assert (
        str(error) == "PROXY header incomplete in 10 bytes, the limit (the buffer's max_len) is 10"
    )
    # v1: a 60-byte line in a 40-byte buffer is refused once 40 bytes are in.
    line = b"PROXY TCP6 2001:db8::1234:5678 2001:db8::9abc:def0 65535 443\r\n"
    at, result = bytewise(line, max_len=40)
    assert (at, str(result)) == (40, "PROXY v1 line has no CRLF in its first 40 bytes")


def test_max_header_len_caps_v1_too() -> None:
    line = b"PROXY TCP4 192.168.100.100 192.168.100.101 65535 65535\r\n"
    at, result = bytewise(line, max_header_len=30)
    assert (at, str(result)) == (30, "PROXY v1 line has no CRLF in its first 30 bytes")
    error = parse(holding(line), max_header_len=len(line) - 1)
    assert str(error) == f"PROXY v1 line of {len(line)} bytes exceeds the limit of {len(line) - 1}"
    assert isinstance(parse(holding(line), max_header_len=len(line)), ProxyHeader)


# -- arguments and errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (
            lambda: loose_parse(b"PROXY UNKNOWN\r\n"),
            TypeError,
            "buf must be a HandoffBuffer, got bytes",
        ),
        (
            lambda: loose_parse(holding(b""), required=1),
            TypeError,
            "required must be a bool, got int",
        ),
        (
            lambda: parse_proxy_header(holding(b""), max_header_len=0),
            ValueError,
            "max_header_len must be at least 1, got 0",
        ),
        (
            lambda: loose_parse(holding(b""), max_header_len=1.5),
            TypeError,
            "max_header_len must be an int",
        ),
        (
            lambda: parse_proxy_header(holding(b""), max_header_len=True),
            TypeError,
            "max_header_len must be an int, got bool",
        ),
    ],
)
def test_parse_checks_its_arguments(
    call: Callable[[], object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        call()


def test_proxy_header_error_is_a_handoff_error_and_a_value_error_that_pickles() -> None:
    assert issubclass(ProxyHeaderError, HandoffError)
    assert issubclass(ProxyHeaderError, ValueError)
    assert not issubclass(ProxyHeaderError, HandoffBufferError)
    error = parse(holding(b"PROXY TCP4 1.2.3.4 5.6.7.8 1 65536\r\n"))
    assert isinstance(error, ProxyHeaderError)
    clone = pickle.loads(pickle.dumps(error))
    assert (type(clone), str(clone)) == (ProxyHeaderError, str(error))


# -- builders -------------------------------------------------------------------------------------


def test_build_v1() -> None:
    assert build_proxy_header_v1() == b"PROXY UNKNOWN\r\n"
    assert build_proxy_header_v1(("192.0.2.1", 5), (IPv4Address("192.0.2.2"), 6)) == (
        b"PROXY TCP4 192.0.2.1 192.0.2.2 5 6\r\n"
    )
    assert build_proxy_header_v1(("2001:DB8:0::1", 0), ("::", 65535)) == (
        b"PROXY TCP6 2001:db8::1 :: 0 65535\r\n"
    )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"source": ("1.2.3.4", 1)}, ValueError, "give both source and destination, or neither"),
        ({"destination": ("1.2.3.4", 1)}, ValueError, "give both"),
        (
            {"source": ("1.2.3.4", 1), "destination": ("::1", 2)},
            ValueError,
            "source is IPv4 and destination IPv6",
        ),
        (
            {"source": ("1.2.3.4", 65536), "destination": ("1.2.3.4", 2)},
            ValueError,
            "source port must be in 0..65535, got 65536",
        ),
        (
            {"source": ("1.2.3.4", 1), "destination": ("1.2.3.4", -1)},
            ValueError,
            "destination port must be in 0..65535, got -1",
        ),
        (
            {"source": ("1.2.3.4", True), "destination": ("1.2.3.4", 2)},
            TypeError,
            "source port must be an int, got bool",
        ),
        (
            {"source": ("1.2.3.4", "80"), "destination": ("1.2.3.4", 2)},
            TypeError,
            "source port must be an int, got str",
        ),
        (
            {"source": ("example.com", 1), "destination": ("1.2.3.4", 2)},
            ValueError,
            "source host 'example.com' is not an IP address",
        ),
        ({"source": ("fe80::1%eth0", 1), "destination": ("::1", 2)}, ValueError, "has a scope id"),
        (
            {"source": (b"1.2.3.4", 1), "destination": ("1.2.3.4", 2)},
            TypeError,
            "source host must be a str or an ipaddress object, got bytes",
        ),
        (
            {"source": "1.2.3.4:1", "destination": ("1.2.3.4", 2)},
            TypeError,
            r"source must be a \(host, port\) tuple",
        ),
    ],
)
def test_build_v1_checks_its_arguments(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        loose_v1(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {
                "source": ("1.2.3.4", 1),
                "destination": ("1.2.3.4", 2),
                "command": ProxyCommand.LOCAL,
            },
            ValueError,
            "a LOCAL header carries no addresses",
        ),
        ({"command": 2}, ValueError, "2 is not a valid ProxyCommand"),
        ({"transport": 3}, ValueError, "3 is not a valid ProxyTransport"),
        ({"source": "/a", "destination": None}, ValueError, "give both"),
        (
            {"source": "/a", "destination": ("1.2.3.4", 2)},
            TypeError,
            "source and destination must both be UNIX paths",
        ),
        (
            {"source": "/" * 109, "destination": "/b"},
            ValueError,
            "source UNIX path of 109 bytes exceeds the 108",
        ),
        ({"source": "/a\0b", "destination": "/b"}, ValueError, "has a NUL"),
        ({"source": "\0abstract\0", "destination": "/b"}, ValueError, "has a NUL"),
        ({"tlvs": [(256, b"")]}, ValueError, "TLV type must be in 0..255, got 256"),
        ({"tlvs": [(-1, b"")]}, ValueError, "TLV type must be in 0..255, got -1"),
        ({"tlvs": [(True, b"")]}, TypeError, "TLV type must be an int, got bool"),
        ({"tlvs": [(1, "h2")]}, TypeError, "TLV 0x01 value must be bytes-like, got str"),
        ({"tlvs": [(1, bytes(65536))]}, ValueError, "TLV 0x01 value of 65536 bytes exceeds 65535"),
        (
            {"tlvs": [(3, bytes(4))], "crc32c": True},
            ValueError,
            "crc32c=True adds the CRC32C TLV itself",
        ),
        (
            {"tlvs": [(3, bytes(4))]},
            ValueError,
            "the header would be refused: PROXY v2 CRC32C mismatch",
        ),
        (
            {"tlvs": [(2, b"\xff")]},
            ValueError,
            "the header would be refused: PROXY v2 AUTHORITY TLV",
        ),
        ({"tlvs": [(0x20, b"\x01")]}, ValueError, "SSL TLV at offset 16 has 1 bytes"),
        ({"crc32c": 1}, TypeError, "crc32c must be a bool, got int"),
    ],
)
def test_build_v2_checks_its_arguments(
    kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        loose_v2(**kwargs)


def test_build_v2_takes_any_bytes_like_tlv_value() -> None:
    data = build_proxy_header_v2(tlvs=[(1, bytearray(b"h2")), (4, memoryview(b"xy"))])
    header = parse(holding(data))
    assert isinstance(header, ProxyHeader)
    assert header.tlvs == ((1, b"h2"), (4, b"xy"))
    assert (header.family, header.transport) == (ProxyFamily.UNSPEC, ProxyTransport.UNSPEC)


# -- properties -----------------------------------------------------------------------------------

PORTS = st.integers(0, 0xFFFF)
IPV4: st.SearchStrategy[IPAddress] = st.builds(IPv4Address, st.integers(0, 2**32 - 1))
IPV6: st.SearchStrategy[IPAddress] = st.builds(IPv6Address, st.integers(0, 2**128 - 1))


Endpoints = tuple[tuple[IPAddress, int], tuple[IPAddress, int]]


def endpoints(ips: st.SearchStrategy[IPAddress]) -> st.SearchStrategy[Endpoints]:
    return st.tuples(st.tuples(ips, PORTS), st.tuples(ips, PORTS))


V1_ADDRESSES: st.SearchStrategy[Endpoints | None] = st.one_of(
    st.none(), endpoints(IPV4), endpoints(IPV6)
)


def _fits(path: str) -> bool:
    return len(path.encode("utf-8", "surrogateescape")) <= 108


NO_NUL = st.characters(blacklist_characters="\0")
UNIX_PATHS = st.one_of(
    st.just(""),
    st.text(NO_NUL, min_size=1, max_size=40).filter(_fits),
    st.text(NO_NUL, min_size=1, max_size=40).map(lambda p: "\0" + p).filter(_fits),
    st.binary(min_size=1, max_size=108)
    .filter(lambda b: b"\0" not in b)
    .map(lambda b: b.decode("utf-8", "surrogateescape")),  # not UTF-8: kept as os.fsdecode does
)
#: TLV types the parser only passes through.
PLAIN_TYPES = st.integers(0, 255).filter(lambda t: t not in (2, 3, 5, 0x20, 0x30))
SSL_TEXT = st.sampled_from([0x21, 0x23, 0x24, 0x25])
SSL_SUBS = st.lists(
    st.one_of(
        st.tuples(SSL_TEXT, st.text(st.characters(max_codepoint=127), max_size=20).map(str.encode)),
        st.tuples(st.just(0x22), st.text(max_size=20).map(str.encode)),
        st.tuples(
            st.integers(0, 255).filter(lambda t: not 0x21 <= t <= 0x25), st.binary(max_size=20)
        ),
    ),
    max_size=4,
)
TLVS = st.lists(
    st.one_of(
        st.tuples(PLAIN_TYPES, st.binary(max_size=64)),
        st.tuples(st.just(2), st.text(max_size=30).map(str.encode)),
        st.tuples(st.just(5), st.binary(max_size=128)),
        st.tuples(
            st.just(0x30), st.text(st.characters(max_codepoint=127), max_size=20).map(str.encode)
        ),
        st.builds(
            lambda c, v, subs: (0x20, ssl_value(c, v, *subs)),
            st.integers(0, 255),
            st.integers(0, 2**32 - 1),
            SSL_SUBS,
        ),
    ),
    max_size=5,
)


@st.composite
def v2_arguments(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from(["none", "local", "inet", "inet6", "unix"]))
    args: dict[str, Any] = {"tlvs": draw(TLVS), "crc32c": draw(st.booleans())}
    if kind == "local":
        args["command"] = ProxyCommand.LOCAL
    elif kind != "none":
        pair: tuple[object, object] = draw(
            st.tuples(UNIX_PATHS, UNIX_PATHS)
            if kind == "unix"
            else endpoints(IPV4 if kind == "inet" else IPV6)
        )
        args["source"], args["destination"] = pair
    if draw(st.booleans()):
        args["transport"] = draw(st.sampled_from(ProxyTransport))
    return args


def expected_v2(args: dict[str, Any], data: bytes) -> ProxyHeader:
    source, destination = args.get("source"), args.get("destination")
    command = args.get("command", ProxyCommand.PROXY)
    family = (
        ProxyFamily.UNSPEC
        if source is None
        else ProxyFamily.UNIX
        if isinstance(source, str)
        else ProxyFamily.INET
        if isinstance(source[0], IPv4Address)
        else ProxyFamily.INET6
    )
    default = ProxyTransport.UNSPEC if family is ProxyFamily.UNSPEC else ProxyTransport.STREAM
    tlvs = tuple((k, bytes(v)) for k, v in args["tlvs"])
    if args["crc32c"]:
        tlvs += ((3, data[-4:]),)
    return ProxyHeader(
        2,
        command,
        family,
        args.get("transport", default),
        source,
        destination,
        tlvs,
        len(data),
    )


def expected_v1(addresses: Endpoints | None, data: bytes) -> ProxyHeader:
    if addresses is None:
        return ProxyHeader(
            1,
            ProxyCommand.PROXY,
            ProxyFamily.UNSPEC,
            ProxyTransport.UNSPEC,
            None,
            None,
            (),
            len(data),
        )
    (src, sport), (dst, dport) = addresses
    family = ProxyFamily.INET if isinstance(src, IPv4Address) else ProxyFamily.INET6
    return ProxyHeader(
        1,
        ProxyCommand.PROXY,
        family,
        ProxyTransport.STREAM,
        (src, sport),
        (dst, dport),
        (),
        len(data),
    )


@SETTINGS
@given(addresses=V1_ADDRESSES, tail=st.binary(max_size=100))
def test_v1_round_trip(addresses: Endpoints | None, tail: bytes) -> None:
    data = build_proxy_header_v1(*addresses) if addresses else build_proxy_header_v1()
    assert len(data) <= V1_MAX_LEN
    buf = holding(data + tail)
    assert parse(buf) == expected_v1(addresses, data)
    assert contents(buf) == tail


@SETTINGS
@given(args=v2_arguments(), tail=st.binary(max_size=100))
def test_v2_round_trip(args: dict[str, Any], tail: bytes) -> None:
    data = loose_v2(**args)
    buf = holding(data + tail)
    assert parse(buf) == expected_v2(args, data)
    assert contents(buf) == tail


@st.composite
def any_header(draw: st.DrawFn) -> tuple[bytes, ProxyHeader]:
    if draw(st.booleans()):
        addresses = draw(V1_ADDRESSES)
        data = build_proxy_header_v1(*addresses) if addresses else build_proxy_header_v1()
        return data, expected_v1(addresses, data)
    args = draw(v2_arguments())
    data = loose_v2(**args)
    return data, expected_v2(args, data)


@SETTINGS
@given(
    header=any_header(),
    tail=st.binary(max_size=300),
    sizes=st.lists(st.integers(1, 40), min_size=1, max_size=8),
)
def test_any_fragmentation_gives_the_header_once_complete_and_the_tail_exact(
    header: tuple[bytes, ProxyHeader], tail: bytes, sizes: list[int]
) -> None:
    data, expected = header
    assert in_pieces(data + tail, sizes) == expected
    assert in_pieces(data + tail, sizes, required=False) == expected


PREFIXES = [b"", b"PROXY ", b"PROXY TCP4 ", b"PROXY TCP6 ", b"PROXY UNKNOWN", V2_SIGNATURE]
PREFIXES += [V2_SIGNATURE + bytes((0x21, fam)) for fam in (0x00, 0x11, 0x21, 0x31)]


@SETTINGS
@given(prefix=st.sampled_from(PREFIXES), rest=st.binary(max_size=300), required=st.booleans())
def test_arbitrary_bytes_get_an_answer_and_lose_nothing(
    prefix: bytes, rest: bytes, required: bool
) -> None:
    data = prefix + rest
    result = parse(holding(data), required=required)  # checks what was consumed
    if isinstance(result, ProxyHeader):
        assert result.header_len <= len(data)
    elif result is NO_PROXY_HEADER:
        assert not required
    # Fragmented, the same answer (the first one that is not None).
    assert type(in_pieces(data, [3, 1, 7], required=required)) is type(result)


# -- real clients ---------------------------------------------------------------------------------


@functools.cache
def curl_supports(option: str) -> bool:
    assert CURL is not None
    out = subprocess.run([CURL, "--help", "all"], capture_output=True, text=True, timeout=WAIT)
    return option in out.stdout


async def run_curl(*args: str) -> str:
    """``curl``'s standard output; it ignores any .curlrc (``-q``) and the env's proxy settings."""
    assert CURL is not None
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    proc = await asyncio.create_subprocess_exec(
        CURL,
        "-q",
        "-sS",
        "--max-time",
        str(WAIT),
        *args,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(), WAIT + 5)
    assert proc.returncode == 0, err
    return out.decode()


class SourceServer:
    """Answers each HTTP request with the source address its PROXY header named."""

    def __init__(self) -> None:
        self.seen: list[tuple[ProxyHeader, tuple[object, ...]]] = []

    async def handle(self, proto: HandoffProtocol) -> None:
        buf = proto.buffer
        while (header := parse_proxy_header(buf)) is None:
            if await proto.read_available() == 0:
                return  # end of stream before a complete header
        await proto.read_until(b"\r\n\r\n")  # the request head: the next parser's bytes
        assert proto.transport is not None
        self.seen.append((header, proto.transport.get_extra_info("peername")))
        assert isinstance(header.source, tuple)
        body = f"{header.source[0]} {header.source[1]}".encode()
        proto.transport.write(
            b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s"
            % (len(body), body)
        )


async def curl_through(host: str, *args: str) -> tuple[SourceServer, str, int, int]:
    """Run curl against a :class:`SourceServer` on ``host``: (server, body, curl's port, ours)."""
    server = SourceServer()
    listening = await start_handoff_server(server.handle, host, 0)
    try:
        port = listening.sockets[0].getsockname()[1]
        url_host = f"[{host}]" if ":" in host else host
        out = await run_curl(*args, "-w", "\n%{local_port}", f"http://{url_host}:{port}/")
    finally:
        listening.close()
        await listening.wait_closed()
    body, local_port = out.rsplit("\n", 1)
    return server, body, int(local_port), port


@needs_curl
@pytest.mark.asyncio
async def test_curl_haproxy_protocol_v1_names_the_port_curl_used() -> None:
    server, body, curl_port, port = await curl_through("127.0.0.1", "--haproxy-protocol")
    assert body == f"127.0.0.1 {curl_port}"
    ((header, peer),) = server.seen
    assert peer == ("127.0.0.1", curl_port)  # the real connection agrees with the header
    assert header == ProxyHeader(
        version=1,
        command=ProxyCommand.PROXY,
        family=ProxyFamily.INET,
        transport=ProxyTransport.STREAM,
        source=(IPv4Address("127.0.0.1"), curl_port),
        destination=(IPv4Address("127.0.0.1"), port),
        tlvs=(),
        header_len=header.header_len,
    )


def _has_ipv6_loopback() -> bool:
    try:
        with socket.create_server(("::1", 0), family=socket.AF_INET6):
            return True
    except OSError:
        return False


@needs_curl
@pytest.mark.skipif(not _has_ipv6_loopback(), reason="needs an IPv6 loopback (::1)")
@pytest.mark.asyncio
async def test_curl_haproxy_protocol_v1_over_ipv6_sends_tcp6() -> None:
    server, body, curl_port, port = await curl_through("::1", "--haproxy-protocol")
    assert body == f"::1 {curl_port}"
    ((header, _),) = server.seen
    assert header.family is ProxyFamily.INET6
    assert (header.source, header.destination) == (
        (IPv6Address("::1"), curl_port),
        (IPv6Address("::1"), port),
    )


@needs_curl
@pytest.mark.asyncio
async def test_curl_haproxy_clientip_is_the_source_address() -> None:
    if not curl_supports("--haproxy-clientip"):
        pytest.skip("this curl has no --haproxy-clientip (added in curl 8.2.0)")
    server, body, curl_port, _ = await curl_through(
        "127.0.0.1", "--haproxy-clientip", "203.0.113.7"
    )
    assert body == f"203.0.113.7 {curl_port}"
    ((header, _),) = server.seen
    assert header.source == (IPv4Address("203.0.113.7"), curl_port)


def client_hello(client_ctx: ssl.SSLContext) -> tuple[ssl.SSLObject, ssl.MemoryBIO, bytes]:
    """A TLS client in memory that has written its ClientHello: (client, its inbox, hello)."""
    inbox, outbox = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = client_ctx.wrap_bio(inbox, outbox, server_hostname="localhost")
    with pytest.raises(ssl.SSLWantReadError):
        client.do_handshake()
    return client, inbox, outbox.read()


@pytest.mark.asyncio
async def test_header_and_client_hello_in_one_send_leave_the_hello_for_tls(
    tls_contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    loop = asyncio.get_running_loop()
    client_ctx, server_ctx = tls_contexts
    tls_client, client_inbox, hello = client_hello(client_ctx)
    assert hello[:1] == b"\x16"  # a TLS handshake record
    header = build_proxy_header_v2(
        ("198.51.100.4", 50123),
        ("192.0.2.80", 443),
        tlvs=[(ProxyTLV.AUTHORITY, b"localhost"), (ProxyTLV.ALPN, b"h2")],
        crc32c=True,
    )
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.setblocking(False)
        client = socket.create_connection(listener.getsockname())
        conn, _ = await loop.sock_accept(listener)
    with client, conn:
        conn.setblocking(False)
        assert client.send(header + hello) == len(header) + len(hello)  # one send
        buf = HandoffBuffer(4096)
        while (parsed := parse_proxy_header(buf)) is None:
            assert await asyncio.wait_for(buf.read_available(conn), WAIT) > 0
        assert parsed.source == (IPv4Address("198.51.100.4"), 50123)
        assert (parsed.authority, parsed.alpn) == ("localhost", b"h2")
        while len(buf) < len(hello):  # in case the kernel split the send
            assert await asyncio.wait_for(buf.read_available(conn), WAIT) > 0
        tail = buf.take_tail()
        assert tail == hello  # untouched, for the TLS layer
    # The next parser: a TLS server that finishes the handshake from that very hello.
    inbox, outbox = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls_server = server_ctx.wrap_bio(inbox, outbox, server_side=True)
    inbox.write(tail)
    with pytest.raises(ssl.SSLWantReadError):
        tls_server.do_handshake()
    client_inbox.write(outbox.read())
    tls_client.do_handshake()
    assert tls_client.version() is not None


class ProxiedLines(HandoffProtocol):
    """Callback style: the header first, then lines, from ``on_data``."""

    def __init__(self, done: asyncio.Future[tuple[ProxyHeader, list[bytes]]]) -> None:
        super().__init__(HandoffBufferConfig(max_len=1024, read_reserve=64), on_data=self.step)
        self.done = done
        self.header: ProxyHeader | None = None
        self.lines: list[bytes] = []

    def step(self, proto: HandoffProtocol) -> None:
        buf = self.buffer
        if self.header is None:
            try:
                self.header = parse_proxy_header(buf)
            except ProxyHeaderError as exc:
                self.done.set_exception(exc)
                assert self.transport is not None
                self.transport.close()
                return
            if self.header is None:
                return
        while (line := buf.split_through(b"\n")) is not None:
            self.lines.append(line)
        if self.at_eof and not self.done.done():
            self.done.set_result((self.header, self.lines))


@pytest.mark.asyncio
async def test_callback_style_parses_a_header_that_trickles_in() -> None:
    loop = asyncio.get_running_loop()
    done: asyncio.Future[tuple[ProxyHeader, list[bytes]]] = loop.create_future()
    server = await loop.create_server(lambda: ProxiedLines(done), "127.0.0.1", 0)
    try:
        _, writer = await asyncio.open_connection(*server.sockets[0].getsockname())
        data = build_proxy_header_v2("/run/client.sock", "/run/server.sock", crc32c=True)
        data += b"first line\nsecond line\n"
        for i in range(0, len(data), 5):  # a header that comes in pieces
            writer.write(data[i : i + 5])
            await writer.drain()
            await asyncio.sleep(0)
        writer.write_eof()
        header, lines = await asyncio.wait_for(done, WAIT)
        writer.close()
    finally:
        server.close()
    assert (header.family, header.source, header.destination) == (
        ProxyFamily.UNIX,
        "/run/client.sock",
        "/run/server.sock",
    )
    assert lines == [b"first line\n", b"second line\n"]
