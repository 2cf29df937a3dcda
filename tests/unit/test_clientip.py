"""The client IP rule: direct peer, or right-most untrusted X-Forwarded-For behind a trusted proxy."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

from privydrop.web.clientip import (
    UNIX_PEER,
    TrustedProxies,
    client_ip,
    normalize,
    peer_address,
    rate_limit_key,
)

LOOPBACK = TrustedProxies(["127.0.0.0/8", "::1/128"])
PROXIES = TrustedProxies(["127.0.0.0/8", "10.0.0.0/8"])


def test_direct_peer_ignores_forwarded_header() -> None:
    """A client talking to us directly cannot pick its own rate-limit identity."""
    assert client_ip("203.0.113.9", ["198.51.100.1"], LOOPBACK) == "203.0.113.9"


def test_trusted_proxy_uses_the_address_it_appended() -> None:
    """Behind nginx on loopback, each browser is limited by its own address."""
    assert client_ip("127.0.0.1", ["203.0.113.9"], LOOPBACK) == "203.0.113.9"


def test_client_claim_left_of_proxy_entry_is_ignored() -> None:
    """A client that sends its own X-Forwarded-For cannot impersonate another address."""
    header = ["6.6.6.6, 203.0.113.9"]  # "6.6.6.6" is the client's own claim
    assert client_ip("127.0.0.1", header, LOOPBACK) == "203.0.113.9"


def test_chain_of_trusted_proxies_is_walked_right_to_left() -> None:
    """Two proxy hops (load balancer then nginx) still find the browser's address."""
    headers = ["6.6.6.6, 203.0.113.9", "10.1.2.3"]
    assert client_ip("127.0.0.1", headers, PROXIES) == "203.0.113.9"


def test_no_header_behind_proxy_is_the_proxy() -> None:
    """A health check from the proxy itself is attributed to the proxy."""
    assert client_ip("127.0.0.1", [], LOOPBACK) == "127.0.0.1"


def test_malformed_entry_stops_the_walk() -> None:
    """Garbage in the header is never taken as an address."""
    assert client_ip("127.0.0.1", ["203.0.113.9, garbage"], LOOPBACK) == "127.0.0.1"
    assert client_ip("127.0.0.1", ["garbage, 10.0.0.5"], PROXIES) == "10.0.0.5"


def test_all_trusted_entries_give_left_most() -> None:
    """A client inside the proxy network is identified by the address the first proxy saw."""
    assert client_ip("127.0.0.1", ["10.0.0.7, 10.0.0.8"], PROXIES) == "10.0.0.7"


def test_ipv6_and_mapped_addresses_are_normalised() -> None:
    """The same client over IPv4 or IPv4-mapped IPv6 shares one rate-limit bucket."""
    assert client_ip("::ffff:203.0.113.9", [], LOOPBACK) == "203.0.113.9"
    assert client_ip("::1", ["2001:DB8::1"], LOOPBACK) == "2001:db8::1"
    assert client_ip("127.0.0.1", ["203.0.113.9:5555"], LOOPBACK) == "203.0.113.9"
    assert client_ip("127.0.0.1", ["[2001:db8::2]:443"], LOOPBACK) == "2001:db8::2"
    assert normalize("not an ip") is None


def test_empty_trusted_set_trusts_nobody() -> None:
    """TRUSTED_PROXIES= (empty) makes every request's identity its TCP peer."""
    assert client_ip("127.0.0.1", ["203.0.113.9"], TrustedProxies([])) == "127.0.0.1"


addresses = st.ip_addresses(v=4).map(str)


@given(peer=addresses, chain=st.lists(addresses, max_size=5))
def test_result_is_peer_or_from_header(peer: str, chain: list[str]) -> None:
    """Whatever the header says, the answer is the peer or an address in the header."""
    result = client_ip(peer, [", ".join(chain)] if chain else [], PROXIES)
    assert result == peer or result in chain
    if peer not in PROXIES:
        assert result == peer


@given(real=addresses, forged=st.lists(addresses, max_size=4))
def test_forged_prefix_never_changes_the_answer(real: str, forged: list[str]) -> None:
    """Whatever a client prepends, nginx's appended address decides (when it is not a proxy)."""
    if real in PROXIES:
        return
    header = ", ".join(forged + [real])
    assert client_ip("127.0.0.1", [header], PROXIES) == real


# -- the rate-limit key -----------------------------------------------------


def test_ipv6_clients_are_one_client_per_64_by_default() -> None:
    """An IPv6 user owns a whole /64: every address in it must share one
    rate-limit identity, or each request could come from a fresh address
    and escape every per-client limit."""
    first = rate_limit_key("2001:db8:1:2::1")
    assert first == "2001:db8:1:2::/64"
    assert rate_limit_key("2001:db8:1:2:ffff:ffff:ffff:ffff") == first
    assert rate_limit_key("2001:DB8:1:2:0:0:0:7") == first
    assert rate_limit_key("2001:db8:1:3::1") != first


def test_ipv6_prefix_is_configurable() -> None:
    """RATE_LIMIT_IPV6_PREFIX widens (a /48 site) or narrows (one /128) the
    network taken as one client."""
    assert rate_limit_key("2001:db8:1:2::1", 48) == "2001:db8:1::/48"
    assert rate_limit_key("2001:db8:1:ff::1", 48) == "2001:db8:1::/48"
    assert rate_limit_key("2001:db8:1:2::1", 56) == "2001:db8:1::/56"
    assert rate_limit_key("2001:db8:1:2::1", 128) == "2001:db8:1:2::1"
    assert rate_limit_key("2001:db8:1:2::2", 128) != rate_limit_key("2001:db8:1:2::1", 128)


def test_ipv4_and_mapped_addresses_stay_per_address() -> None:
    """IPv4 clients keep their own budget per address, however the address is written."""
    assert rate_limit_key("203.0.113.9") == "203.0.113.9"
    assert rate_limit_key("::ffff:203.0.113.9") == "203.0.113.9"
    assert rate_limit_key("203.0.113.10") != rate_limit_key("203.0.113.9")


def test_what_is_not_an_address_is_its_own_key() -> None:
    """The peer of a UNIX socket (no forwarded address) and anything else
    that is not an address keep their text as the key rather than failing."""
    assert rate_limit_key(UNIX_PEER) == UNIX_PEER
    assert rate_limit_key("") == ""


@given(address=st.ip_addresses(v=6), prefix=st.integers(48, 128))
def test_every_address_of_a_network_has_its_network_as_key(address: object, prefix: int) -> None:
    """The key of an IPv6 address names the network it lies in (CIDR text)."""
    import ipaddress

    key = rate_limit_key(str(address), prefix)
    if getattr(address, "ipv4_mapped", None) is not None:
        return
    if prefix == 128:
        assert key == str(address)
    else:
        assert address in ipaddress.ip_network(key)
        assert key.endswith("/%d" % prefix)


# -- the peer of a connection -----------------------------------------------


def test_peer_of_a_tcp_connection_is_its_host() -> None:
    assert peer_address(IPv4Address("TCP", "203.0.113.9", 5555)) == "203.0.113.9"
    assert peer_address(IPv6Address("TCP", "2001:db8::1", 5555)) == "2001:db8::1"


def test_unix_socket_peer_is_a_trusted_local_proxy() -> None:
    """Behind nginx on the same host over a UNIX socket, X-Forwarded-For names
    the client: otherwise every visitor shares one identity and one join window."""
    peer = peer_address(UNIXAddress(None))
    assert peer == UNIX_PEER
    assert peer_address(UNIXAddress(b"/run/privydrop.sock")) == UNIX_PEER
    nobody = TrustedProxies([])
    assert client_ip(peer, ["203.0.113.9"], nobody) == "203.0.113.9"
    assert client_ip(peer, ["6.6.6.6, 203.0.113.9"], nobody) == "203.0.113.9"
    assert client_ip(peer, [], nobody) == UNIX_PEER
