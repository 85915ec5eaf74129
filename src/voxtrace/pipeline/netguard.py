"""Where the downloader may connect: the SSRF guard, applied to resolved addresses.

A `video_url` comes from the network, so a hostile one could aim the server at its own
loopback, the private network or the cloud metadata service (169.254.169.254). The rule
(`voxtrace.netpolicy`) is checked on resolved addresses, not names, because a name can
resolve anywhere and numbers can be spelled in many ways (`2130706433`, `0x7f.1`).

Checking and connecting are tied together: a host is resolved once, every address is
checked, and the connection goes to those checked addresses (`PinnedBackend`), so a DNS
answer that changes between the check and the connect (rebinding) cannot slip through.
TLS still verifies the certificate against the original host name.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Iterable
from typing import Final

import httpcore
import httpx
from httpcore import NetworkBackend, NetworkStream

from voxtrace.netpolicy import IPAddress, host_matches, ip_literal, is_forbidden_address

__all__ = [
    "IPAddress",
    "PinnedBackend",
    "host_matches",
    "ip_literal",
    "is_forbidden_address",
    "pinned_transport",
    "resolve",
]

# A name with many addresses is tried in order; each try costs a connect timeout.
_MAX_ADDRESSES_TRIED: Final = 4


def resolve(host: str, port: int) -> tuple[IPAddress, ...]:
    """Every address `host` resolves to, in the resolver's order, without duplicates.

    Raises OSError (socket.gaierror) when the name does not resolve.
    """
    literal = ip_literal(host)
    if literal is not None:
        return (literal,)
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    found: dict[IPAddress, None] = {}
    for _family, _type, _proto, _name, sockaddr in infos:
        # IPv6 sockaddr may carry a zone ("fe80::1%eth0"): drop it before parsing.
        found[ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])] = None
    return tuple(found)


class PinnedBackend(NetworkBackend):
    """An httpcore network backend that connects only to addresses pinned per host.

    httpcore hands `connect_tcp` the URL's host name; this backend swaps it for the
    addresses checked beforehand and refuses any host that was not pinned, so no
    connection can happen without a check. TLS (SNI and certificate verification) is
    set up by httpcore afterwards with the original host name.
    """

    def __init__(self) -> None:
        self._pins: dict[str, tuple[IPAddress, ...]] = {}
        self._inner = httpcore.SyncBackend()

    def pin(self, host: str, addresses: tuple[IPAddress, ...]) -> None:
        self._pins[host.lower()] = addresses

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> NetworkStream:
        addresses = self._pins.get(host.lower())
        if not addresses:
            raise httpcore.ConnectError("destination was not checked")
        error: Exception | None = None
        for address in addresses[:_MAX_ADDRESSES_TRIED]:
            try:
                stream = self._inner.connect_tcp(
                    str(address), port, timeout, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return stream
        raise error or httpcore.ConnectError("no address to connect to")

    def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> NetworkStream:
        raise httpcore.ConnectError("unix sockets are not allowed")

    def sleep(self, seconds: float) -> None:
        self._inner.sleep(seconds)


def pinned_transport(backend: PinnedBackend) -> httpx.HTTPTransport:
    """An httpx transport whose every connection goes through `backend`.

    httpx does not take a network backend, so its connection pool is replaced by an
    equivalent one that does; httpx keeps translating httpcore errors into its own.
    """
    transport = httpx.HTTPTransport(retries=0)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(),
        retries=0,
        network_backend=backend,
    )
    return transport
