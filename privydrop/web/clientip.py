"""Which address a request comes from, and which client that address counts as.

The rule: the direct peer's address, unless the direct peer is a trusted
proxy (C{TRUSTED_PROXIES}); then the right-most X-Forwarded-For address that is
not itself a trusted proxy. A proxy such as nginx I{appends} the address it
saw to whatever X-Forwarded-For the client sent, so everything left of the
addresses our own proxies wrote is the client's own, forgeable, claim.

The peer of a connection to a UNIX socket listener (C{--listen unix:...},
nginx on the same host) is always a trusted proxy: only a local process with
access to the socket file can be that peer. L{peer_address} names such a peer
L{UNIX_PEER}; without X-Forwarded-For, all its requests are that one client.

Every per-client limit (the join window, the API budgets, Engine.IO's
handshake and session caps) counts per L{rate_limit_key} of the client's
address: an IPv4 address (IPv4-mapped IPv6 included) is its own key; an IPv6
address counts as its network of C{RATE_LIMIT_IPV6_PREFIX} bits (64 by
default), written in CIDR text (C{2001:db8:1:2::/64}), since an IPv6 user
can pick any address of a /64 and would otherwise escape every limit. The key
is what the Redis keys of the limits end with (C{ratelimit:join:<key>}).

Pure functions over strings: the REST API, Engine.IO and signaling all use
it, and neither this module nor its callers' tests need a socket.
"""

from __future__ import annotations

import functools
import ipaddress
from typing import Iterable, Sequence, Union

from twisted.internet.address import UNIXAddress

_Network = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]
_Address = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]


#: The peer of a connection that came in on a UNIX socket: a local proxy.
UNIX_PEER = "unix"

#: The IPv6 prefix length taken as one client unless told otherwise.
DEFAULT_IPV6_PREFIX = 64


def peer_address(address: object) -> str:
    """The text L{client_ip} takes as the direct peer of a connection.

    @param address: the connection's peer (C{IAddress}): C{IPv4Address} and
        C{IPv6Address} give their host; a C{UNIXAddress} gives L{UNIX_PEER}
        (its name is the socket file's, or none at all, never the client's).
    """
    if isinstance(address, UNIXAddress):
        return UNIX_PEER
    host = getattr(address, "host", None)
    return host if isinstance(host, str) else ""


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

    @param peer: the direct peer's address (L{peer_address}); L{UNIX_PEER}
        is trusted whatever C{trusted} holds.
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
    if peer_normal != UNIX_PEER and peer_normal not in trusted:
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


@functools.lru_cache(maxsize=4096)
def rate_limit_key(address: str, ipv6_prefix: int = DEFAULT_IPV6_PREFIX) -> str:
    """The client an address counts as for every per-client limit.

    @param address: a client address (as L{client_ip} gives it).
    @param ipv6_prefix: how many leading bits of an IPv6 address name one
        client (C{RATE_LIMIT_IPV6_PREFIX}, 48 to 128).
    @return: an IPv4 address (IPv4-mapped IPv6 too) as itself; an IPv6
        address as its network in CIDR text (C{2001:db8:1:2::/64}), or as
        itself with a prefix of 128; anything that is not an address
        (L{UNIX_PEER}) unchanged.
    """
    parsed = _parse(address)
    if parsed is None:
        return address
    if parsed.version == 4 or ipv6_prefix >= 128:
        return str(parsed)
    network = ipaddress.IPv6Network((int(parsed), ipv6_prefix), strict=False)
    return str(network)
