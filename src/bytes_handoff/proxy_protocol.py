"""PROXY protocol headers (HAProxy's spec, versions 1 and 2), taken off a ``HandoffBuffer``.

Sans-I/O: :func:`parse_proxy_header` looks at the buffered bytes and either
takes exactly the header off the front, or returns ``None`` while the bytes
so far are a valid start of a header, or raises :class:`ProxyHeaderError`.
Nothing is consumed unless a header is returned, and what follows the header
(an HTTP request, a TLS ClientHello that came in the same segment) stays
buffered, untouched, for the next parser.

Bounds: a version 1 line is at most 107 bytes with its CRLF (the spec's worst
case); a version 2 header at most ``16 + 65535`` bytes (its length field) and
never more than the buffer's ``max_len`` or the caller's ``max_header_len``.
A header that can never fit is refused as soon as its length is known, not
waited for. :func:`build_proxy_header_v1` and :func:`build_proxy_header_v2`
make headers for clients and tests.
"""

from __future__ import annotations

import enum
import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal, TypeAlias, overload

from ._checks import positive_int
from .errors import HandoffError
from .read_buffer import HandoffBuffer

__all__ = [
    "NO_PROXY_HEADER",
    "NoProxyHeader",
    "ProxyCommand",
    "ProxyFamily",
    "ProxyHeader",
    "ProxyHeaderError",
    "ProxySSL",
    "ProxyTLV",
    "ProxyTransport",
    "build_proxy_header_v1",
    "build_proxy_header_v2",
    "parse_proxy_header",
]

#: The 12 bytes a version 2 header starts with.
V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
#: What a version 1 line starts with (then exactly one space).
V1_SIGNATURE: Final = b"PROXY"
#: The longest version 1 line, CRLF included (``PROXY UNKNOWN`` with two full IPv6 addresses).
V1_MAX_LEN: Final = 107
#: The longest version 2 header: the fixed 16 bytes and a 16-bit length.
V2_MAX_LEN: Final = 16 + 0xFFFF

IPAddress: TypeAlias = ipaddress.IPv4Address | ipaddress.IPv6Address
#: An address in a header: ``(ip, port)`` for INET and INET6, the path for UNIX.
ProxyAddress: TypeAlias = tuple[IPAddress, int] | str
#: What the builders take for an INET or INET6 address: the host as text or an ``ipaddress`` object.
HostPort: TypeAlias = tuple[str | IPAddress, int]
TLV: TypeAlias = tuple[int, bytes]


class ProxyHeaderError(HandoffError, ValueError):
    """A malformed PROXY header, one that cannot fit, or none where one is required.

    Nothing was consumed: the buffer holds what it held before the call.
    """


class ProxyCommand(enum.IntEnum):
    """What the connection is: ``PROXY`` relays a client; ``LOCAL`` is the proxy's own."""

    LOCAL = 0x0
    PROXY = 0x1


class ProxyFamily(enum.IntEnum):
    """The address family; version 1's ``TCP4``, ``TCP6``, ``UNKNOWN`` are INET, INET6, UNSPEC."""

    UNSPEC = 0x0
    INET = 0x1
    INET6 = 0x2
    UNIX = 0x3


class ProxyTransport(enum.IntEnum):
    """The transport: version 1 headers are STREAM (TCP), or UNSPEC for ``UNKNOWN``."""

    UNSPEC = 0x0
    STREAM = 0x1
    DGRAM = 0x2


class ProxyTLV(enum.IntEnum):
    """Registered TLV types (version 2), and the sub-types inside ``SSL``."""

    ALPN = 0x01
    AUTHORITY = 0x02
    CRC32C = 0x03
    NOOP = 0x04
    UNIQUE_ID = 0x05
    SSL = 0x20
    SSL_VERSION = 0x21
    SSL_CN = 0x22
    SSL_CIPHER = 0x23
    SSL_SIG_ALG = 0x24
    SSL_KEY_ALG = 0x25
    NETNS = 0x30


class NoProxyHeader(enum.Enum):
    """The type of :data:`NO_PROXY_HEADER`."""

    NO_PROXY_HEADER = "NO_PROXY_HEADER"

    def __repr__(self) -> str:
        return "NO_PROXY_HEADER"


#: ``parse_proxy_header(buf, required=False)``'s answer for a connection without a header.
NO_PROXY_HEADER: Final = NoProxyHeader.NO_PROXY_HEADER

#: Bytes of the address block each family needs (version 2).
_ADDRESS_LEN: Final = {
    ProxyFamily.UNSPEC: 0,
    ProxyFamily.INET: 12,
    ProxyFamily.INET6: 36,
    ProxyFamily.UNIX: 216,
}
_UNIX_PATH_LEN: Final = 108
_UNIQUE_ID_MAX: Final = 128
#: TLVs whose values the spec defines as text: checked when parsed, so the helpers never fail.
_TEXT_TLVS: Final[dict[int, str]] = {
    ProxyTLV.AUTHORITY: "utf-8",
    ProxyTLV.NETNS: "ascii",
}
_SSL_TEXT_TLVS: Final[dict[int, str]] = {
    ProxyTLV.SSL_VERSION: "ascii",
    ProxyTLV.SSL_CN: "utf-8",
    ProxyTLV.SSL_CIPHER: "ascii",
    ProxyTLV.SSL_SIG_ALG: "ascii",
    ProxyTLV.SSL_KEY_ALG: "ascii",
}


def _first(tlvs: tuple[TLV, ...], kind: int) -> bytes | None:
    for t, value in tlvs:
        if t == kind:
            return value
    return None


@dataclass(frozen=True, slots=True)
class ProxySSL:
    """The ``SSL`` TLV: how the client reached the proxy over TLS.

    ``client`` is the spec's bit field (0x01 TLS, 0x02 a certificate on this
    connection, 0x04 one in the session); ``verify`` is 0 when the client's
    certificate was verified; ``tlvs`` are the sub-TLVs, in order.
    """

    client: int
    verify: int
    tlvs: tuple[TLV, ...]

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first sub-TLV of type ``kind``, or ``None``."""
        return _first(self.tlvs, kind)

    def _text(self, kind: ProxyTLV) -> str | None:
        value = _first(self.tlvs, kind)
        return None if value is None else value.decode(_SSL_TEXT_TLVS[kind])

    @property
    def version(self) -> str | None:
        """The TLS version, e.g. ``"TLSv1.3"``."""
        return self._text(ProxyTLV.SSL_VERSION)

    @property
    def cn(self) -> str | None:
        """The Common Name of the client certificate's subject."""
        return self._text(ProxyTLV.SSL_CN)

    @property
    def cipher(self) -> str | None:
        return self._text(ProxyTLV.SSL_CIPHER)

    @property
    def sig_alg(self) -> str | None:
        return self._text(ProxyTLV.SSL_SIG_ALG)

    @property
    def key_alg(self) -> str | None:
        return self._text(ProxyTLV.SSL_KEY_ALG)


@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed PROXY header.

    ``source`` and ``destination`` are ``(ip, port)`` for INET and INET6 (an
    ``ipaddress`` object and an int), the path as ``str`` for UNIX (an
    abstract one starts with ``"\\0"``), and ``None`` for UNSPEC, version 1's
    ``UNKNOWN`` and the ``LOCAL`` command: then the spec says to use the
    connection's own endpoints. ``tlvs`` are version 2's ``(type, value)``
    pairs, in order; ``header_len`` is how many bytes the header took.
    """

    version: int
    command: ProxyCommand
    family: ProxyFamily
    transport: ProxyTransport
    source: ProxyAddress | None
    destination: ProxyAddress | None
    tlvs: tuple[TLV, ...]
    header_len: int

    def tlv(self, kind: int) -> bytes | None:
        """The value of the first TLV of type ``kind``, or ``None``."""
        return _first(self.tlvs, kind)

    @property
    def alpn(self) -> bytes | None:
        return self.tlv(ProxyTLV.ALPN)

    @property
    def authority(self) -> str | None:
        """The host name the client asked for (TLS SNI, for one)."""
        value = self.tlv(ProxyTLV.AUTHORITY)
        return None if value is None else value.decode("utf-8")

    @property
    def crc32c(self) -> int | None:
        """The header's CRC32C checksum, verified when parsed."""
        value = self.tlv(ProxyTLV.CRC32C)
        return None if value is None else int.from_bytes(value, "big")

    @property
    def unique_id(self) -> bytes | None:
        return self.tlv(ProxyTLV.UNIQUE_ID)

    @property
    def ssl(self) -> ProxySSL | None:
        value = self.tlv(ProxyTLV.SSL)
        return None if value is None else _ssl(value, 0)

    @property
    def netns(self) -> str | None:
        """The network namespace's name."""
        value = self.tlv(ProxyTLV.NETNS)
        return None if value is None else value.decode("ascii")


# -- parsing ------------------------------------------------------------------------------------


@overload
def parse_proxy_header(
    buf: HandoffBuffer, *, required: Literal[True] = ..., max_header_len: int | None = ...
) -> ProxyHeader | None: ...


@overload
def parse_proxy_header(
    buf: HandoffBuffer, *, required: bool, max_header_len: int | None = ...
) -> ProxyHeader | NoProxyHeader | None: ...


def parse_proxy_header(
    buf: HandoffBuffer, *, required: bool = True, max_header_len: int | None = None
) -> ProxyHeader | NoProxyHeader | None:
    """Take a PROXY header (version 1 or 2) off the front of ``buf``.

    Returns the header, having consumed exactly its bytes; ``None`` while the
    buffered bytes are a valid start of a header (nothing consumed: read more
    and call again). Raises :class:`ProxyHeaderError`, consuming nothing, for a
    malformed header, one longer than ``min(max_header_len, buf.max_len)``
    (as soon as that is known), or a connection that does not start with a
    PROXY signature at all. With ``required=False`` that last case returns
    :data:`NO_PROXY_HEADER` instead, and the bytes stay for the next parser;
    the spec forbids guessing on a port untrusted clients can reach (they
    could claim any address), and it only works when the client speaks first.
    """
    if not isinstance(buf, HandoffBuffer):
        raise TypeError(f"buf must be a HandoffBuffer, got {type(buf).__name__}")
    if type(required) is not bool:
        raise TypeError(f"required must be a bool, got {type(required).__name__}")
    limit, why = buf.max_len, "the buffer's max_len"
    if max_header_len is not None:
        cap = positive_int(max_header_len, "max_header_len")
        if cap < limit:
            limit, why = cap, "max_header_len"
    n = len(buf)
    with buf.peek() as view:
        head = bytes(view[:V1_MAX_LEN])  # all a version 1 line can be; version 2's fixed part
    header: ProxyHeader | None = None
    if head.startswith(V1_SIGNATURE):
        header = _v1(head, min(limit, V1_MAX_LEN))
    elif head.startswith(V2_SIGNATURE):
        total = _v2_fixed(head, limit, why)
        if total is not None and n >= total:
            with buf.peek() as view:
                header = _v2(bytes(view[:total]))
    elif not (V1_SIGNATURE.startswith(head) or V2_SIGNATURE.startswith(head)):
        if not required:
            return NO_PROXY_HEADER
        raise ProxyHeaderError(
            f"no PROXY header: the connection starts with {head[:16]!r}, not a PROXY signature"
        )
    if header is None:
        if n >= limit:
            # Nothing more can arrive until bytes are taken out: never wait on a full buffer.
            raise ProxyHeaderError(
                f"PROXY header incomplete in {n} bytes, the limit ({why}) is {limit}"
            )
        return None
    buf.advance(header.header_len)
    return header


# -- version 1 ------------------------------------------------------------------------------------

_PORT = re.compile(rb"0|[1-9][0-9]{0,4}")
_PORT_PREFIX = re.compile(rb"(?:0|[1-9][0-9]{0,4})?")
_IPV4_CHARS = re.compile(rb"[0-9.]{0,15}")
_IPV6_CHARS = re.compile(rb"[0-9A-Fa-f:.]{0,45}")
_HEX_GROUP = re.compile(rb"[0-9A-Fa-f]{0,4}")
_FIELDS: Final = ("source address", "destination address", "source port", "destination port")
_V1_PROTOCOLS: Final = (b"TCP4", b"TCP6", b"UNKNOWN")


def _v1(head: bytes, cap: int) -> ProxyHeader | None:
    """The version 1 line at the front of ``head`` (at most 107 bytes), or ``None`` if incomplete.

    An incomplete line is checked as far as it goes, so a bad one is refused
    before its CRLF arrives.
    """
    lf = head.find(b"\n")
    if lf < 0:
        cr = head.find(b"\r")
        if 0 <= cr < len(head) - 1:
            raise ProxyHeaderError(f"PROXY v1 line has a CR without LF at offset {cr}")
        _v1_fields(head[:cr] if cr >= 0 else head, complete=False)
        if len(head) >= cap:
            raise ProxyHeaderError(f"PROXY v1 line has no CRLF in its first {cap} bytes")
        return None
    if lf + 1 > cap:
        raise ProxyHeaderError(f"PROXY v1 line of {lf + 1} bytes exceeds the limit of {cap}")
    cr = head.find(b"\r", 0, lf)
    if cr != lf - 1:
        if cr < 0:
            raise ProxyHeaderError(f"PROXY v1 line ends with a bare LF at offset {lf}, not CRLF")
        raise ProxyHeaderError(f"PROXY v1 line has a CR without LF at offset {cr}")
    fields = _v1_fields(head[:cr], complete=True)
    if fields is None:  # UNKNOWN
        return ProxyHeader(
            1,
            ProxyCommand.PROXY,
            ProxyFamily.UNSPEC,
            ProxyTransport.UNSPEC,
            None,
            None,
            (),
            lf + 1,
        )
    family, source, destination = fields
    return ProxyHeader(
        1, ProxyCommand.PROXY, family, ProxyTransport.STREAM, source, destination, (), lf + 1
    )


def _v1_fields(
    line: bytes, *, complete: bool
) -> tuple[ProxyFamily, ProxyAddress, ProxyAddress] | None:
    """Check a version 1 line without its CRLF; an incomplete one may stop anywhere.

    Raises on the first field that is wrong or (incomplete) that no more bytes
    can make right. Returns the family and addresses of a complete ``TCP4`` or
    ``TCP6`` line, ``None`` otherwise.
    """
    parts = line.split(b" ")
    if parts[0] != b"PROXY":
        raise ProxyHeaderError(
            f"PROXY v1 line: PROXY must be followed by exactly one space, not {line[5:6]!r}"
        )
    if len(parts) == 1:
        if complete:
            raise ProxyHeaderError("PROXY v1 line ends before its protocol")
        return None
    proto = parts[1]
    if not complete and len(parts) == 2:
        if not any(name.startswith(proto) for name in _V1_PROTOCOLS):
            raise ProxyHeaderError(f"PROXY v1 protocol {proto!r} is not TCP4, TCP6 or UNKNOWN")
        return None
    if proto == b"UNKNOWN":
        return None  # the spec: ignore whatever follows UNKNOWN up to the CRLF
    if proto not in _V1_PROTOCOLS:
        raise ProxyHeaderError(f"PROXY v1 protocol {proto!r} is not TCP4, TCP6 or UNKNOWN")
    fields = parts[2:]
    v6 = proto == b"TCP6"
    addrs: list[IPAddress] = []
    ports: list[int] = []
    for i, field in enumerate(fields[:4]):
        if complete or i < len(fields) - 1:
            if not field:
                raise ProxyHeaderError(
                    f"PROXY v1 {proto.decode()} {_FIELDS[i]} is empty: fields are separated"
                    " by exactly one space"
                )
            if i < 2:
                addrs.append(_v1_address(v6, i, field))
            else:
                ports.append(_v1_port(i, field))
        elif not (_port_prefix(field) if i >= 2 else _ip_prefix(v6, field)):
            raise ProxyHeaderError(f"PROXY v1 {proto.decode()} {_FIELDS[i]} {field!r} is invalid")
    if len(fields) > 4 or (complete and len(fields) < 4):
        raise ProxyHeaderError(
            f"PROXY v1 {proto.decode()} line has {len(fields)} fields after the protocol,"
            " not 4 (separated by exactly one space, none before the CRLF)"
        )
    if not complete:
        return None
    (src, dst), (sport, dport) = addrs, ports
    return (ProxyFamily.INET6 if v6 else ProxyFamily.INET), (src, sport), (dst, dport)


def _v1_port(i: int, field: bytes) -> int:
    if _PORT.fullmatch(field) is None or int(field) > 0xFFFF:
        raise ProxyHeaderError(
            f"PROXY v1 {_FIELDS[i]} {field!r} is not a decimal 0..65535 without leading zeros"
        )
    return int(field)


def _v1_address(v6: bool, i: int, field: bytes) -> IPAddress:
    """A complete address field: the spec's text form, of the line's family."""
    try:
        if v6:
            if _IPV6_CHARS.fullmatch(field) is None:  # no scope id ("%eth0"), no spaces
                raise ValueError
            return ipaddress.IPv6Address(field.decode("ascii"))
        if _IPV4_CHARS.fullmatch(field) is None:
            raise ValueError
        return ipaddress.IPv4Address(field.decode("ascii"))  # refuses leading zeros
    except ValueError:
        proto, kind = ("TCP6", "IPv6") if v6 else ("TCP4", "IPv4")
        raise ProxyHeaderError(
            f"PROXY v1 {proto} {_FIELDS[i]} {field!r} is not an {kind} address"
        ) from None


def _port_prefix(field: bytes) -> bool:
    return _PORT_PREFIX.fullmatch(field) is not None and (not field or int(field) <= 0xFFFF)


def _ip_prefix(v6: bool, field: bytes) -> bool:
    return _ipv6_prefix(field) if v6 else _ipv4_prefix(field)


def _octet(part: bytes) -> bool:
    return part.isdigit() and (part == b"0" or not part.startswith(b"0")) and int(part) <= 255


def _ipv4_prefix(field: bytes) -> bool:
    """Whether more bytes can make ``field`` a dotted-quad IPv4 address."""
    parts = field.split(b".")
    if len(parts) > 4 or _IPV4_CHARS.fullmatch(field) is None:
        return False
    return all(_octet(p) for p in parts[:-1]) and (not parts[-1] or _octet(parts[-1]))


def _ipv6_prefix(field: bytes) -> bool:
    """Whether more bytes may make ``field`` an IPv6 address: never false for a real prefix."""
    if _IPV6_CHARS.fullmatch(field) is None or b":::" in field or field.count(b"::") > 1:
        return False
    groups = field.split(b":")
    if len(groups) > 9:  # at most 8 colons
        return False
    if not all(_HEX_GROUP.fullmatch(g) for g in groups[:-1]):
        return False
    last = groups[-1]
    return _HEX_GROUP.fullmatch(last) is not None or _ipv4_prefix(last)  # "::ffff:1.2.3.4"


# -- version 2 ------------------------------------------------------------------------------------


def _v2_fixed(head: bytes, limit: int, why: str) -> int | None:
    """Check the fixed 16 bytes, as many as are buffered; the header's length once known."""
    if len(head) > 12:
        version, command = head[12] >> 4, head[12] & 0xF
        if version != 2:
            raise ProxyHeaderError(f"PROXY v2 header with version {version}, not 2")
        if command > ProxyCommand.PROXY:
            raise ProxyHeaderError(f"PROXY v2 header with command {command}, not LOCAL or PROXY")
    if len(head) > 13:
        family, transport = head[13] >> 4, head[13] & 0xF
        if family > ProxyFamily.UNIX:
            raise ProxyHeaderError(f"PROXY v2 header with address family {family}, not 0..3")
        if transport > ProxyTransport.DGRAM:
            raise ProxyHeaderError(f"PROXY v2 header with transport {transport}, not 0..2")
    if len(head) < 16:
        return None
    total = 16 + int.from_bytes(head[14:16], "big")
    if total > limit:
        raise ProxyHeaderError(
            f"PROXY v2 header of {total} bytes exceeds the limit ({why}) of {limit}"
        )
    return total


def _v2(data: bytes) -> ProxyHeader:
    """The complete version 2 header ``data`` (its fixed part already checked)."""
    command = ProxyCommand(data[12] & 0xF)
    family = ProxyFamily(data[13] >> 4)
    transport = ProxyTransport(data[13] & 0xF)
    need = _ADDRESS_LEN[family]
    if len(data) - 16 < need:
        raise ProxyHeaderError(
            f"PROXY v2 {family.name} address block needs {need} bytes, the header has"
            f" {len(data) - 16}"
        )
    source = destination = None
    # LOCAL: the spec says to skip the addresses and use the connection's own endpoints.
    if command is ProxyCommand.PROXY and family is not ProxyFamily.UNSPEC:
        source, destination = _v2_addresses(family, data[16 : 16 + need])
    tlvs = _tlvs(data, 16 + need, "header", 0)
    crc_at = -1
    for at, kind, value in tlvs:
        if kind == ProxyTLV.CRC32C:
            if crc_at >= 0:
                raise ProxyHeaderError(f"PROXY v2 header has a second CRC32C TLV at offset {at}")
            if len(value) != 4:
                raise ProxyHeaderError(f"PROXY v2 CRC32C TLV of {len(value)} bytes, not 4")
            crc_at = at + 3
        elif kind == ProxyTLV.UNIQUE_ID and len(value) > _UNIQUE_ID_MAX:
            raise ProxyHeaderError(
                f"PROXY v2 UNIQUE_ID TLV of {len(value)} bytes, more than {_UNIQUE_ID_MAX}"
            )
        elif kind == ProxyTLV.SSL:
            _ssl(value, at)
        elif kind in _TEXT_TLVS:
            _text(kind, value, _TEXT_TLVS[kind], at)
    if crc_at >= 0:
        said = int.from_bytes(data[crc_at : crc_at + 4], "big")
        computed = _crc32c(b"".join((data[:crc_at], bytes(4), data[crc_at + 4 :])))
        if said != computed:
            raise ProxyHeaderError(
                f"PROXY v2 CRC32C mismatch: the header says 0x{said:08x}, its bytes give"
                f" 0x{computed:08x}"
            )
    pairs = tuple((kind, value) for _, kind, value in tlvs)
    return ProxyHeader(2, command, family, transport, source, destination, pairs, len(data))


def _v2_addresses(family: ProxyFamily, block: bytes) -> tuple[ProxyAddress, ProxyAddress]:
    if family is ProxyFamily.UNIX:
        return _unix_path(block[:_UNIX_PATH_LEN]), _unix_path(block[_UNIX_PATH_LEN:])
    size = 4 if family is ProxyFamily.INET else 16
    ip = ipaddress.IPv4Address if size == 4 else ipaddress.IPv6Address
    ports = block[2 * size :]
    return (
        (ip(block[:size]), int.from_bytes(ports[:2], "big")),
        (ip(block[size : 2 * size]), int.from_bytes(ports[2:], "big")),
    )


def _unix_path(field: bytes) -> str:
    """A 108-byte ``sun_path``: up to the first NUL; an abstract name keeps its leading NUL."""
    if field[0] == 0:
        name = field[1:].rstrip(b"\0")  # abstract names have no terminator: drop the padding
        return "\0" + name.decode("utf-8", "surrogateescape") if name else ""
    return field.split(b"\0", 1)[0].decode("utf-8", "surrogateescape")


def _tlvs(data: bytes, start: int, what: str, base: int) -> list[tuple[int, int, bytes]]:
    """``(offset, type, value)`` of each TLV in ``data[start:]``, which they must fill exactly.

    ``what`` names the TLVs' container and ``base`` is ``data``'s offset in
    the header, for messages that point at the header's bytes.
    """
    out = []
    at, end = start, len(data)
    while at < end:
        if end - at < 3:
            raise ProxyHeaderError(
                f"PROXY v2 {what} ends with {end - at} stray bytes at offset {base + at},"
                " fewer than a TLV's 3"
            )
        size = int.from_bytes(data[at + 1 : at + 3], "big")
        if at + 3 + size > end:
            raise ProxyHeaderError(
                f"PROXY v2 {what}: TLV 0x{data[at]:02x} at offset {base + at} says {size}"
                f" bytes, {end - at - 3} are left"
            )
        out.append((at, data[at], data[at + 3 : at + 3 + size]))
        at += 3 + size
    return out


def _ssl(value: bytes, at: int) -> ProxySSL:
    """The ``SSL`` TLV's value, checked; ``at`` is the TLV's offset in the header."""
    if len(value) < 5:
        raise ProxyHeaderError(
            f"PROXY v2 SSL TLV at offset {at} has {len(value)} bytes, fewer than 5"
        )
    subs = _tlvs(value, 5, f"SSL TLV at offset {at}", at + 3)
    for sub_at, kind, sub in subs:
        if kind in _SSL_TEXT_TLVS:
            _text(kind, sub, _SSL_TEXT_TLVS[kind], at + 3 + sub_at)
    pairs = tuple((kind, sub) for _, kind, sub in subs)
    return ProxySSL(value[0], int.from_bytes(value[1:5], "big"), pairs)


def _text(kind: int, value: bytes, encoding: str, at: int) -> None:
    try:
        value.decode(encoding)
    except UnicodeDecodeError as exc:
        raise ProxyHeaderError(
            f"PROXY v2 {ProxyTLV(kind).name} TLV at offset {at} is not {encoding}: byte"
            f" 0x{value[exc.start]:02x} at {exc.start}"
        ) from None


def _crc32c_table() -> tuple[int, ...]:
    table = []
    for n in range(256):
        c = n
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # Castagnoli, reflected
        table.append(c)
    return tuple(table)


_CRC32C_TABLE: Final = _crc32c_table()


def _crc32c(data: bytes) -> int:
    """CRC32C (RFC 4960 appendix B), one table lookup per byte: headers are small."""
    crc = 0xFFFFFFFF
    table = _CRC32C_TABLE
    for byte in data:
        crc = table[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


# -- building -------------------------------------------------------------------------------------


def _ip(host: object, name: str) -> IPAddress:
    if isinstance(host, ipaddress.IPv4Address | ipaddress.IPv6Address):
        ip = host
    elif isinstance(host, str):
        try:
            ip = ipaddress.ip_address(host)
        except ValueError:
            raise ValueError(f"{name} host {host!r} is not an IP address") from None
    else:
        raise TypeError(
            f"{name} host must be a str or an ipaddress object, got {type(host).__name__}"
        )
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
        raise ValueError(f"{name} host {host!r} has a scope id, which a PROXY header cannot carry")
    return ip


def _host_port(address: object, name: str) -> tuple[IPAddress, int]:
    if not isinstance(address, tuple) or len(address) != 2:
        raise TypeError(f"{name} must be a (host, port) tuple, got {address!r:.60}")
    host, port = address
    if type(port) is not int:
        raise TypeError(f"{name} port must be an int, got {type(port).__name__}")
    if not 0 <= port <= 0xFFFF:
        raise ValueError(f"{name} port must be in 0..65535, got {port}")
    return _ip(host, name), port


def _pair(source: object, destination: object) -> tuple[tuple[IPAddress, int], ...]:
    if (source is None) != (destination is None):
        raise ValueError("give both source and destination, or neither")
    if source is None:
        return ()
    src, dst = _host_port(source, "source"), _host_port(destination, "destination")
    if src[0].version != dst[0].version:
        raise ValueError(
            f"source is IPv{src[0].version} and destination IPv{dst[0].version}: one family"
        )
    return src, dst


def build_proxy_header_v1(
    source: HostPort | None = None, destination: HostPort | None = None
) -> bytes:
    """A version 1 line: ``TCP4`` or ``TCP6`` for two ``(host, port)``, ``UNKNOWN`` for neither."""
    pair = _pair(source, destination)
    if not pair:
        return b"PROXY UNKNOWN\r\n"
    (src, sport), (dst, dport) = pair
    return f"PROXY TCP{src.version} {src} {dst} {sport} {dport}\r\n".encode("ascii")


def _unix_field(path: str, name: str) -> bytes:
    raw = path.encode("utf-8", "surrogateescape")
    abstract = raw.startswith(b"\0")
    if (abstract and raw.endswith(b"\0")) or b"\0" in raw[1:]:
        # The parser reads a path up to its first NUL, and strips an abstract name's padding.
        raise ValueError(
            f"{name} UNIX path {path!r:.60} has a NUL a header cannot carry"
            " (only an abstract name starts with one)"
        )
    if len(raw) > _UNIX_PATH_LEN:
        raise ValueError(
            f"{name} UNIX path of {len(raw)} bytes exceeds the {_UNIX_PATH_LEN} a header holds"
        )
    return raw.ljust(_UNIX_PATH_LEN, b"\0")


def build_proxy_header_v2(
    source: HostPort | str | None = None,
    destination: HostPort | str | None = None,
    *,
    command: ProxyCommand = ProxyCommand.PROXY,
    transport: ProxyTransport | None = None,
    tlvs: Iterable[tuple[int, bytes | bytearray | memoryview]] = (),
    crc32c: bool = False,
) -> bytes:
    """A version 2 header: the family follows the addresses (``(host, port)``, UNIX path, none).

    ``transport`` defaults to STREAM with addresses, UNSPEC without; ``LOCAL``
    takes no addresses. ``crc32c=True`` appends a CRC32C TLV over the whole
    header. ``ValueError`` for a header :func:`parse_proxy_header` would
    refuse (a TLV the spec defines, malformed; more than 65535 bytes after
    the fixed part).
    """
    command = ProxyCommand(command)
    if type(crc32c) is not bool:
        raise TypeError(f"crc32c must be a bool, got {type(crc32c).__name__}")
    if command is ProxyCommand.LOCAL and (source is not None or destination is not None):
        raise ValueError("a LOCAL header carries no addresses: the receiver ignores them")
    if isinstance(source, str) or isinstance(destination, str):
        if source is None or destination is None:
            raise ValueError("give both source and destination, or neither")
        if not (isinstance(source, str) and isinstance(destination, str)):
            raise TypeError(
                "source and destination must both be UNIX paths (str) or both (host, port)"
            )
        family = ProxyFamily.UNIX
        block = _unix_field(source, "source") + _unix_field(destination, "destination")
    else:
        pair = _pair(source, destination)
        if not pair:
            family, block = ProxyFamily.UNSPEC, b""
        else:
            (src, sport), (dst, dport) = pair
            family = ProxyFamily.INET if src.version == 4 else ProxyFamily.INET6
            ports = sport.to_bytes(2, "big") + dport.to_bytes(2, "big")
            block = src.packed + dst.packed + ports
    if transport is None:
        transport = ProxyTransport.UNSPEC if family is ProxyFamily.UNSPEC else ProxyTransport.STREAM
    transport = ProxyTransport(transport)
    parts = [block]
    for kind, value in tlvs:
        if type(kind) is not int and not isinstance(kind, ProxyTLV):
            raise TypeError(f"TLV type must be an int, got {type(kind).__name__}")
        if not 0 <= kind <= 0xFF:
            raise ValueError(f"TLV type must be in 0..255, got {kind}")
        if kind == ProxyTLV.CRC32C and crc32c:
            raise ValueError("crc32c=True adds the CRC32C TLV itself: leave it out of tlvs")
        try:
            raw = bytes(memoryview(value))
        except TypeError:
            raise TypeError(
                f"TLV 0x{kind:02x} value must be bytes-like, got {type(value).__name__}"
            ) from None
        if len(raw) > 0xFFFF:
            raise ValueError(f"TLV 0x{kind:02x} value of {len(raw)} bytes exceeds 65535")
        parts.append(bytes((kind,)) + len(raw).to_bytes(2, "big") + raw)
    if crc32c:
        parts.append(bytes((ProxyTLV.CRC32C, 0, 4)) + bytes(4))
    body = b"".join(parts)
    if len(body) > 0xFFFF:
        raise ValueError(
            f"PROXY v2 header needs {len(body)} bytes after its fixed 16, more than 65535"
        )
    fixed = V2_SIGNATURE + bytes((0x20 | command, family << 4 | transport))
    header = fixed + len(body).to_bytes(2, "big") + body
    if crc32c:
        header = header[:-4] + _crc32c(header).to_bytes(4, "big")
    try:
        _v2(header)
    except ProxyHeaderError as exc:
        raise ValueError(f"the header would be refused: {exc}") from None
    return header
