"""The one address policy (SSRF): which hosts and IP addresses a worker may fetch from.

Used by the starter (`mintsaga.api.image_urls`, through `mintsaga.ipfs.images.url_problem`) on
the URL's host before a mint starts, by the worker's image loader on every address every
redirect hop's host resolves to, and by the gateway reader on a redirect's target (which it
never follows off the configured gateway's host anyway). Standard library only.

An address is fetchable when `ipaddress` calls it global (`is_global`) and it is in none of the
ranges refused explicitly below: ranges some Python versions report as global (3.11 before
3.11.10 calls 192.0.0.192, a cloud metadata address, global; 3.11 calls `fec0::/10`,
`3fff::/20`, `5f00::/16`, NAT64 and 6to4 addresses global), and every IPv6 form that carries an
IPv4 address a translator, a tunnel or the kernel would reach instead:

    ::ffff:a.b.c.d      IPv4-mapped       judged as a.b.c.d
    64:ff9b::a.b.c.d    NAT64 (RFC 6052)  judged as a.b.c.d, and refused unless it is public
                                          (an IPv6-only cluster's DNS64 answers public hosts so)
    ::a.b.c.d           IPv4-compatible   refused (deprecated; ::1 and :: are judged as such)
    ::ffff:0:a.b.c.d    IPv4-translated   refused (RFC 2765, obsolete)
    64:ff9b:1::/48      local-use NAT64   refused (RFC 8215: a site's own translator)
    2002::/16           6to4              refused (deprecated, RFC 7526)
    2001::/32           Teredo            refused (the client address is inside)

`allow_private` (the devstack, ``MINT_IMAGE_ALLOW_PRIVATE_URLS``: its servers are on loopback)
lets loopback, private, shared (100.64/10) and reserved addresses through; never link-local
(169.254/16, fe80::/10: cloud metadata lives there), the metadata addresses outside it
(192.0.0.192, 100.100.100.200, fd00:ec2::254), unspecified, multicast, broadcast, site-local
or the translation forms above. A host name is refused statically only when it is a loopback
name (`localhost`, `*.localhost`); the worker resolves every other name and judges each address.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Final

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network

# Refused in every mode, also where private hosts are allowed (the devstack).
NEVER: Final[tuple[tuple[_V4 | _V6, str], ...]] = (
    (_V4("0.0.0.0/8"), "unspecified ('this network', 0.0.0.0/8)"),
    (_V4("169.254.0.0/16"), "link-local (cloud metadata lives there, 169.254.169.254)"),
    (_V4("192.0.0.0/24"), "IETF protocol assignments (192.0.0.192 is a cloud metadata address)"),
    (_V4("100.100.100.200/32"), "a cloud metadata address"),
    (_V4("224.0.0.0/4"), "multicast"),
    (_V4("240.0.0.0/4"), "reserved (240.0.0.0/4, broadcast included)"),
    (_V6("::/128"), "unspecified (::)"),
    (_V6("fe80::/10"), "link-local (cloud metadata lives there)"),
    (_V6("fec0::/10"), "site-local (fec0::/10, deprecated)"),
    (_V6("ff00::/8"), "multicast"),
    (_V6("fd00:ec2::/48"), "a cloud metadata range (fd00:ec2::254)"),
)

# IPv6 forms that carry an IPv4 address (bits 96-127 unless said): refused in every mode.
TRANSLATED: Final[tuple[tuple[_V6, str], ...]] = (
    (_V6("::ffff:0:0:0/96"), "IPv4-translated (::ffff:0:0:0/96)"),
    (_V6("64:ff9b:1::/48"), "local-use NAT64 (64:ff9b:1::/48)"),
    (_V6("2002::/16"), "6to4 (2002::/16)"),
    (_V6("2001::/32"), "Teredo (2001::/32)"),
)
NAT64: Final = _V6("64:ff9b::/96")
IPV4_COMPATIBLE: Final = _V6("::/96")

# Not public, though some Python versions' `is_global` says so (or to name them in messages).
NOT_PUBLIC: Final[tuple[tuple[_V4 | _V6, str], ...]] = (
    (_V4("127.0.0.0/8"), "loopback"),
    (_V4("10.0.0.0/8"), "private (10.0.0.0/8)"),
    (_V4("172.16.0.0/12"), "private (172.16.0.0/12)"),
    (_V4("192.168.0.0/16"), "private (192.168.0.0/16)"),
    (_V4("100.64.0.0/10"), "shared address space (carrier-grade NAT, 100.64.0.0/10)"),
    (_V4("198.18.0.0/15"), "benchmarking (198.18.0.0/15)"),
    (_V4("192.0.2.0/24"), "documentation (192.0.2.0/24)"),
    (_V4("198.51.100.0/24"), "documentation (198.51.100.0/24)"),
    (_V4("203.0.113.0/24"), "documentation (203.0.113.0/24)"),
    (_V6("::1/128"), "loopback"),
    (_V6("fc00::/7"), "unique local (fc00::/7)"),
    (_V6("100::/64"), "discard-only (100::/64)"),
    (_V6("2001::/23"), "IETF protocol assignments (2001::/23)"),
    (_V6("2001:db8::/32"), "documentation (2001:db8::/32)"),
    (_V6("3fff::/20"), "documentation (3fff::/20)"),
    (_V6("5f00::/16"), "SRv6 segment identifiers (5f00::/16)"),
)

# Names that are loopback wherever they are resolved (RFC 6761, and the usual /etc/hosts).
LOOPBACK_NAMES: Final = frozenset(
    {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}
)


def _embedded_v4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address:
    """The IPv4 address an IPv6 address carries: 6to4's bits 16-47, Teredo's client (stored
    inverted), else the last 32 bits (NAT64, IPv4-compatible, IPv4-translated)."""
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)


def address_problem(address: str | IPAddress, *, allow_private: bool = False) -> str | None:
    """Why `address` may not be fetched from (None: it may), in words for an error message."""
    if isinstance(address, str):
        try:
            ip: IPAddress = ipaddress.ip_address(address.strip("[]"))
        except ValueError:
            return f"{address!r} is not an IP address"
    else:
        ip = address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.scope_id is not None:
            return f"{ip} has a zone id (only link-local addresses have one); it is never fetched"
        if ip.ipv4_mapped is not None:
            inner = address_problem(ip.ipv4_mapped, allow_private=allow_private)
            return f"{ip} is IPv4-mapped {ip.ipv4_mapped}: {inner}" if inner else None
        for translated, what in TRANSLATED:
            if ip in translated:
                embedded = _embedded_v4(ip)
                return f"{ip} is {what}, carrying {embedded}; it is never fetched"
        if ip in NAT64:
            embedded = _embedded_v4(ip)
            inner = address_problem(embedded, allow_private=False)
            return f"{ip} is NAT64 (64:ff9b::/96) for {embedded}: {inner}" if inner else None
        if ip in IPV4_COMPATIBLE and int(ip) > 1:
            embedded = _embedded_v4(ip)
            return f"{ip} is IPv4-compatible (::/96), carrying {embedded}; it is never fetched"
    for network, what in NEVER:
        if ip.version == network.version and ip in network:
            return f"{ip} is {what}; it is never fetched"
    if ip.is_multicast or ip.is_unspecified or ip.is_link_local:
        return f"{ip} is multicast, unspecified or link-local; it is never fetched"
    if allow_private:
        return None
    for network, what in NOT_PUBLIC:
        if ip.version == network.version and ip in network:
            return f"{ip} is {what}; only public addresses may be fetched"
    if not ip.is_global:
        return f"{ip} is not a public address (private or reserved); only public ones are fetched"
    return None


def is_fetchable(address: str | IPAddress, *, allow_private: bool = False) -> bool:
    """Whether `address_problem` finds nothing wrong with `address`."""
    return address_problem(address, allow_private=allow_private) is None


def host_address(host: str) -> IPAddress | None:
    """The IP address a URL's host spells, in every form a resolver reads (`127.1`,
    `2130706433`, `0x7f.1`, `0177.0.0.1`, `[::1]`, a trailing dot), or None for a name."""
    name = host.strip().strip("[]")
    if name.endswith("."):
        name = name[:-1]
    try:
        return ipaddress.ip_address(name)
    except ValueError:
        pass
    lowered = name.lower()
    if lowered and all(c in "0123456789abcdefx." for c in lowered):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(lowered))
        except OSError:
            return None
    return None


def host_problem(host: str, *, allow_private: bool = False) -> str | None:
    """Why a URL's host may not be fetched from, judged before any DNS (None: nothing yet).

    Refuses address literals `address_problem` refuses, loopback names (unless
    `allow_private`), zone ids and percent escapes, empty labels, and names whose last label is
    a number (no TLD is: a resolver may read them as an address). Every other name passes here;
    the worker judges each address it resolves to.
    """
    text = host.strip()
    if not text:
        return "has no host"
    if "%" in text:
        return f"host {host!r} has a zone id or a percent escape; it is never fetched"
    ascii_host = text.strip("[]").lower()
    if not ascii_host.isascii():
        try:  # what a resolver sees: IDNA maps lookalikes (fullwidth dots, circled letters)
            ascii_host = ascii_host.encode("idna").decode("ascii").lower()
        except UnicodeError:
            return f"host {host!r} is not a valid host name"
    address = host_address(ascii_host)
    if address is not None:
        problem = address_problem(address, allow_private=allow_private)
        return f"host {host}: {problem}" if problem else None
    if ":" in ascii_host:
        return f"host {host!r} is not a valid IPv6 address"
    name = ascii_host[:-1] if ascii_host.endswith(".") else ascii_host
    labels = name.split(".")
    if any(not label for label in labels):
        return f"host {host!r} has an empty label"
    if labels[-1].isdigit() or labels[-1].startswith("0x"):
        return f"host {host!r} ends in a number but is not an IPv4 address"
    if not allow_private and (name in LOOPBACK_NAMES or name.endswith(".localhost")):
        return f"host {host} is loopback ({name}); only public hosts may be fetched"
    return None
