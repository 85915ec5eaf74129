"""Which network addresses a URL from the network may reach: the pure SSRF policy.

No I/O and no DNS here, so the API can refuse literal addresses at submit time without
importing the pipeline; `voxtrace.pipeline.netguard` applies the same rule to what host
names resolve to when fetching.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from collections.abc import Iterable
from typing import Final

__all__ = ["IPAddress", "host_matches", "ip_literal", "is_forbidden_address"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Ranges that Python's `is_global` lets through but that no video server lives in.
_EXTRA_FORBIDDEN: Final = (
    ipaddress.ip_network("100.64.0.0/10"),  # carrier-grade NAT (shared address space)
    ipaddress.ip_network("192.0.0.0/24"),  # IETF protocol assignments
    ipaddress.ip_network("198.18.0.0/15"),  # benchmarking
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")  # embeds an IPv4 address
# Numeric host spellings that inet_aton accepts: 2130706433, 0x7f.1, 0177.0.0.1, 127.1.
_LEGACY_IPV4: Final = re.compile(r"^(0x[0-9a-f]+|[0-9]+)(\.(0x[0-9a-f]+|[0-9]+)){0,3}$", re.I)


def is_forbidden_address(address: IPAddress) -> bool:
    """True for every address that is not a plain public unicast one.

    Loopback, private, link-local (cloud metadata), multicast, reserved, unspecified,
    CGNAT, documentation ranges, and IPv6 forms that carry such an IPv4 address inside
    (IPv4-mapped, 6to4, NAT64) are all refused.
    """
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is None and address in _NAT64:
            embedded = ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
        if embedded is not None and is_forbidden_address(embedded):
            return True
        if address.is_site_local:
            return True
    if (
        address.is_loopback
        or address.is_private
        or address.is_link_local
        or address.is_multicast
        or address.is_reserved
        or address.is_unspecified
        or not address.is_global
    ):
        return True
    return isinstance(address, ipaddress.IPv4Address) and any(
        address in net for net in _EXTRA_FORBIDDEN
    )


def ip_literal(host: str) -> IPAddress | None:
    """The address a host names by itself, without DNS; None for a real name.

    Accepts the legacy IPv4 spellings that C resolvers accept, so that
    `http://2130706433/` is seen for what it is: 127.0.0.1.
    """
    host = host.strip().strip("[]").rstrip(".")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def host_matches(host: str, patterns: Iterable[str]) -> bool:
    """Exact host, or `*.example.com` for any name below example.com (not the apex)."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.strip().lower().rstrip(".")
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False
