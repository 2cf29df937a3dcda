"""Which address a request comes from.

The rule: the direct peer's address, unless the direct peer is a trusted
proxy (C{TRUSTED_PROXIES}); then the right-most X-Forwarded-For address that is
not itself a trusted proxy. A proxy such as nginx I{appends} the address it
saw to whatever X-Forwarded-For the client sent, so everything left of the
addresses our own proxies wrote is the client's own, forgeable, claim.

Pure functions over strings: the REST API and signaling's join rate limit both
use it, and neither this module nor its callers' tests need a socket.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Iterable, Sequence, Union

_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


class TrustedProxies:
    """A set of addresses and CIDR ranges whose forwarding headers we believe.

    @param networks: addresses or CIDR ranges as text (validated by the
        settings, so an invalid one here is a programming error).
    """

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks: tuple[_Network, ...] = tuple(
            ipaddress.ip_network(n, strict=False) for n in networks
        )

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, str):
            return False
        parsed = _parse(address)
        if parsed is None:
            return False
        return any(parsed in network for network in self._networks)


@functools.lru_cache(maxsize=16)
def trusted_proxies(networks: tuple[str, ...]) -> TrustedProxies:
    """A cached L{TrustedProxies} for the settings' tuple of ranges."""
    return TrustedProxies(networks)


#: Longest text whose parse is cached (an IPv6 address with a zone and port
#: fits); longer claims from X-Forwarded-For are parsed each time, so a client
#: cannot fill the cache with large strings.
_CACHED_LENGTH = 64


def _parse(address: str) -> _Address | None:
    """An address (IPv4-mapped IPv6 as IPv4), or None.

    Cached, since the same few peers and proxies are parsed on every request
    and join.
    """
    if len(address) <= _CACHED_LENGTH:
        return _parse_cached(address)
    return _parse_text(address)


@functools.lru_cache(maxsize=4096)
def _parse_cached(address: str) -> _Address | None:
    return _parse_text(address)


def _parse_text(address: str) -> _Address | None:
    text = address.strip()
    if text.startswith("[") and "]" in text:
        # "[2001:db8::1]:443" as some proxies write IPv6 with a port.
        text = text[1 : text.index("]")]
    elif text.count(":") == 1:
        # "203.0.113.7:51234": IPv4 with a port.
        text = text.split(":", 1)[0]
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return None
    mapped = getattr(parsed, "ipv4_mapped", None)
    return mapped if mapped is not None else parsed


def normalize(address: str) -> str | None:
    """An address in canonical text form (IPv4-mapped IPv6 as IPv4), or None."""
    parsed = _parse(address)
    return None if parsed is None else str(parsed)


def client_ip(
    peer: str, forwarded_for: Sequence[str], trusted: TrustedProxies
) -> str:
    """The client's address under the rule in the module docstring.

    @param peer: the direct peer's address (the TCP connection's host).
    @param forwarded_for: every X-Forwarded-For header value, in the order
        received (each may be a comma-separated list).
    @param trusted: the trusted proxies.
    @return: the address, normalised: the peer itself when it is not a
        trusted proxy or when there is no usable header; the left-most
        forwarded address when all of them are trusted proxies too. A
        malformed entry stops the walk: what lies left of it cannot be
        attributed to a proxy we trust.
    """
    peer_normal = normalize(peer) or peer
    if peer_normal not in trusted:
        return peer_normal
    chain = [item for value in forwarded_for for item in value.split(",")]
    client = peer_normal
    for item in reversed(chain):
        address = normalize(item)
        if address is None:
            break
        client = address
        if address not in trusted:
            break
    return client
