"""Where the downloader may connect: the SSRF guard, applied to resolved addresses.

A `video_url` comes from the network, so a hostile one could aim the server at its own
loopback, the private network or the cloud metadata service (169.254.169.254). The rule
(`voxtrace.netpolicy`) is checked on resolved addresses, not names, because a name can
resolve anywhere and numbers can be spelled in many ways (`2130706433`, `0x7f.1`).

Checking and connecting are tied together: a host is resolved once, every address is
checked, and the connection goes to those checked addresses (`PinnedBackend`), so a DNS
answer that changes between the check and the connect (rebinding) cannot slip through.
TLS still verifies the certificate against the original host name.

The backend also carries the download's total deadline down to every socket operation
(`_DeadlineStream`): httpx's timeouts are per read, so a server that trickles one header
byte per second is never idle long enough to time out, and a check between body chunks
never runs while the status line and headers are still arriving.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import time
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


def _remaining_s(
    deadline: float | None, timeout: float | None, error: type[Exception]
) -> float | None:
    """The timeout for one socket operation: `timeout`, cut to what is left before
    `deadline` (time.monotonic()); raises `error` once the deadline has passed."""
    if deadline is None:
        return timeout
    left = deadline - time.monotonic()
    if left <= 0:
        raise error("the download took too long")
    return left if timeout is None else min(timeout, left)


class _DeadlineStream(NetworkStream):
    """A network stream whose every read and write ends by `deadline`."""

    def __init__(self, inner: NetworkStream, deadline: float | None) -> None:
        self._inner = inner
        self._deadline = deadline

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        timeout = _remaining_s(self._deadline, timeout, httpcore.ReadTimeout)
        return self._inner.read(max_bytes, timeout)

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        timeout = _remaining_s(self._deadline, timeout, httpcore.WriteTimeout)
        self._inner.write(buffer, timeout)

    def close(self) -> None:
        self._inner.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> NetworkStream:
        timeout = _remaining_s(self._deadline, timeout, httpcore.ConnectTimeout)
        inner = self._inner.start_tls(ssl_context, server_hostname, timeout)
        return _DeadlineStream(inner, self._deadline)

    def get_extra_info(self, info: str) -> object:
        return self._inner.get_extra_info(info)


class PinnedBackend(NetworkBackend):
    """An httpcore network backend that connects only to addresses pinned per host.

    httpcore hands `connect_tcp` the URL's host name; this backend swaps it for the
    addresses checked beforehand and refuses any host that was not pinned, so no
    connection can happen without a check. TLS (SNI and certificate verification) is
    set up by httpcore afterwards with the original host name.

    `deadline` (a time.monotonic() value) bounds every connect, read and write of every
    connection it makes: the whole transfer ends by then, headers included.
    """

    def __init__(self, deadline: float | None = None) -> None:
        self._pins: dict[str, tuple[IPAddress, ...]] = {}
        self._inner = httpcore.SyncBackend()
        self._deadline = deadline

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
                    str(address),
                    port,
                    _remaining_s(self._deadline, timeout, httpcore.ConnectTimeout),
                    local_address,
                    socket_options,
                )
            except httpcore.ConnectTimeout as exc:
                if self._deadline is not None and time.monotonic() >= self._deadline:
                    raise
                error = exc
                continue
            except httpcore.ConnectError as exc:
                error = exc
                continue
            return _DeadlineStream(stream, self._deadline)
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
