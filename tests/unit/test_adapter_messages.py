"""The cluster message codec: what one process publishes, every other reads.

Table tests pin the wire format (other processes, possibly of another
release, read it); property tests check that anything encodable comes back
unchanged, binary included, and that no input makes the decoder raise
anything but L{ClusterMessageError}.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from privydrop.cluster.messages import (
    DEFAULT_CHANNEL_PREFIX,
    VERSION,
    ClusterBroadcast,
    ClusterMembers,
    ClusterMessageError,
    ClusterSend,
    ClusterServerEvent,
    all_channel,
    check_channel_prefix,
    decode_message,
    encode_message,
    node_channel,
)
from privydrop.socketio.ids import RoomId, SocketId
from privydrop.socketio.packets import Packet, PacketType, encode


def broadcast(**changes: Any) -> ClusterBroadcast:
    fields: dict[str, Any] = {
        "namespace": "/",
        "rooms": frozenset({RoomId("r1")}),
        "exclude": frozenset({SocketId("s1")}),
        "messages": ('2["hello",1]',),
        "origin": "node-a",
    }
    fields.update(changes)
    return ClusterBroadcast(**fields)


def send(**changes: Any) -> ClusterSend:
    fields: dict[str, Any] = {
        "namespace": "/",
        "socket_id": SocketId("s2"),
        "only_if_in_room": RoomId("r1"),
        "messages": ('2["offer",{}]',),
        "origin": "node-a",
    }
    fields.update(changes)
    return ClusterSend(**fields)


# -- the wire format -----------------------------------------------------------


def test_broadcast_wire_format_is_stable() -> None:
    """Nodes of different releases in one cluster would stop understanding
    each other's broadcasts if the field names or framing drifted."""
    message = broadcast(
        rooms=frozenset({RoomId("b"), RoomId("a")}),
        messages=('51-["file",{"_placeholder":true,"num":0}]', b"\x00\xff"),
    )
    assert orjson.loads(encode_message(message)) == {
        "v": 2,
        "kind": "broadcast",
        "origin": "node-a",
        "ns": "/",
        "rooms": ["a", "b"],
        "except": ["s1"],
        "msgs": ['t51-["file",{"_placeholder":true,"num":0}]', "bAP8="],
    }
    targeted = broadcast(
        recipients=frozenset({SocketId("s3"), SocketId("s2")}),
        departed=frozenset({SocketId("s9")}),
    )
    document = orjson.loads(encode_message(targeted))
    assert (document["to"], document["gone"]) == (["s2", "s3"], ["s9"])


def test_membership_and_server_event_wire_format_is_stable() -> None:
    """Member changes and server events (a REST leave on another node) would
    be lost between releases if their fields drifted."""
    change = ClusterMembers(
        "/", RoomId("r:1"), {SocketId("s1"): "node-b"}, frozenset({SocketId("s0")}), "node-a"
    )
    assert orjson.loads(encode_message(change)) == {
        "v": 2,
        "kind": "members",
        "origin": "node-a",
        "ns": "/",
        "room": "r:1",
        "add": {"s1": "node-b"},
        "remove": ["s0"],
    }
    assert decode_message(encode_message(change)) == change
    event = ClusterServerEvent("/", "room-left", ("s1", "r", 5), "node-a")
    assert orjson.loads(encode_message(event)) == {
        "v": 2,
        "kind": "server",
        "origin": "node-a",
        "ns": "/",
        "event": "room-left",
        "args": ["s1", "r", 5],
    }
    assert decode_message(encode_message(event)) == event


def test_send_wire_format_is_stable() -> None:
    """A send to a socket on another node would be lost or misdelivered if
    its fields were renamed."""
    assert orjson.loads(encode_message(send())) == {
        "v": 2,
        "kind": "socket",
        "origin": "node-a",
        "ns": "/",
        "sid": "s2",
        "room": "r1",
        "msgs": ['t2["offer",{}]'],
    }
    assert orjson.loads(encode_message(send(only_if_in_room=None)))["room"] is None


def test_reads_a_message_written_by_hand() -> None:
    """A peer's message built from the documented format is understood."""
    data = (
        b'{"v":2,"kind":"broadcast","origin":"n2","ns":"/chat","rooms":[],'
        b'"except":[],"msgs":["t2[\\"x\\"]","bAQID"],"future":"ignored"}'
    )
    assert decode_message(data) == ClusterBroadcast(
        namespace="/chat",
        rooms=frozenset(),
        exclude=frozenset(),
        messages=('2["x"]', b"\x01\x02\x03"),
        origin="n2",
    )


def test_decodes_text_as_well_as_bytes() -> None:
    """Redis clients that hand over decoded text must not break delivery."""
    data = encode_message(send())
    assert decode_message(data.decode("utf-8")) == decode_message(data) == send()


def test_an_encoded_socketio_packet_with_attachments_survives() -> None:
    """A binary event broadcast across nodes reaches remote clients intact."""
    packet = Packet(PacketType.EVENT, "/", ["blob", {"data": b"\x00\x01\xfe"}, b"", "tail"])
    messages = tuple(encode(packet))
    assert len(messages) == 3
    decoded = decode_message(encode_message(broadcast(messages=messages)))
    assert decoded.messages == messages


# -- refusing what cannot be read ------------------------------------------------


def with_fields(**fields: Any) -> bytes:
    document: dict[str, Any] = orjson.loads(encode_message(broadcast()))
    for key, value in fields.items():
        if value is _DELETE:
            del document[key]
        else:
            document[key] = value
    return orjson.dumps(document)


_DELETE = object()


@pytest.mark.parametrize(
    "data, reason",
    [
        (b"", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"PING", "not JSON"),
        (b"[1,2]", "not a JSON object"),
        (b'"text"', "not a JSON object"),
        (with_fields(v=_DELETE), "no version"),
        (with_fields(v="1"), "no version"),
        (with_fields(v=True), "no version"),
        (with_fields(v=1), "unsupported cluster message version 1"),
        (with_fields(v=3), "unsupported cluster message version 3"),
        (with_fields(v=0), "unsupported cluster message version 0"),
        (with_fields(kind="emit"), "unknown cluster message kind"),
        (with_fields(kind=_DELETE), "unknown cluster message kind"),
        (with_fields(origin=""), "'origin'"),
        (with_fields(origin=7), "'origin'"),
        (with_fields(ns="chat"), "namespace must start with '/'"),
        (with_fields(ns=None), "'ns'"),
        (with_fields(rooms="r1"), "'rooms'"),
        (with_fields(rooms=[1]), "'rooms'"),
        (with_fields(**{"except": None}), "'except'"),
        (with_fields(msgs=[]), "at least one"),
        (with_fields(msgs="t2[]"), "'msgs'"),
        (with_fields(msgs=["x2[]"]), "unknown message frame"),
        (with_fields(msgs=[""]), "non-empty string"),
        (with_fields(msgs=[5]), "non-empty string"),
        (with_fields(msgs=["bAQID"]), "first Engine.IO message"),
        (with_fields(msgs=["t2[]", "b!!!"]), "invalid base64"),
        (with_fields(msgs=["t2[]", "béé"]), "invalid base64"),
        (with_fields(msgs=["t2[]", "bAQI="]), None),
    ],
)
def test_refuses_garbage_with_a_clear_error(data: bytes, reason: str | None) -> None:
    """Junk on the channel (another program, a newer release, corruption) is
    dropped with a reason in the log instead of crashing delivery."""
    if reason is None:
        decode_message(data)  # the control case: valid as given
        return
    with pytest.raises(ClusterMessageError, match=reason):
        decode_message(data)


def test_refuses_send_with_bad_target_fields() -> None:
    """A send without a recipient, or with a non-string room condition, is
    refused rather than delivered to the wrong socket."""
    document = orjson.loads(encode_message(send()))
    for field, value, reason in [("sid", "", "'sid'"), ("room", 3, "'room'")]:
        broken = dict(document, **{field: value})
        with pytest.raises(ClusterMessageError, match=reason):
            decode_message(orjson.dumps(broken))


def test_refuses_oversized_messages_before_parsing() -> None:
    """A huge publication cannot make every node parse megabytes of JSON."""
    data = encode_message(broadcast(messages=("2" + "x" * 100,)))
    with pytest.raises(ClusterMessageError, match="exceeds 50"):
        decode_message(data, max_bytes=50)
    with pytest.raises(ClusterMessageError, match="exceeds 50"):
        decode_message(data.decode("utf-8"), max_bytes=50)
    assert decode_message(data, max_bytes=len(data)).messages == ("2" + "x" * 100,)


def test_refuses_non_bytes_input() -> None:
    """A Redis client handing over a number (convertNumbers) is reported, not crashed on."""
    with pytest.raises(ClusterMessageError):
        decode_message(12)  # type: ignore[arg-type]


def test_encoding_refuses_what_cannot_travel() -> None:
    """The publishing side reports an unusable message instead of sending junk."""
    with pytest.raises(ClusterMessageError, match="at least one"):
        encode_message(broadcast(messages=()))
    with pytest.raises(ClusterMessageError, match="text header"):
        encode_message(broadcast(messages=(b"\x00",)))
    with pytest.raises(ClusterMessageError, match="cannot encode"):
        encode_message(broadcast(rooms=frozenset({RoomId("\ud800")})))


# -- channels ------------------------------------------------------------------


def test_channel_names_are_per_node_plus_one_shared() -> None:
    """Operators and other nodes find the traffic under documented names."""
    assert DEFAULT_CHANNEL_PREFIX == "privydrop"
    assert node_channel("privydrop", "5f0c1a2b3c4d5e6f") == "privydrop#node#5f0c1a2b3c4d5e6f"
    assert all_channel("privydrop") == "privydrop#all#"
    assert VERSION == 2


@pytest.mark.parametrize(
    "document, reason",
    [
        ({"kind": "members", "room": "r", "add": [], "remove": []}, "'add'"),
        ({"kind": "members", "room": "r", "add": {"s": 1}, "remove": []}, "'add'"),
        ({"kind": "members", "room": "", "add": {}, "remove": []}, "'room'"),
        ({"kind": "members", "room": "r", "add": {}, "remove": "s"}, "'remove'"),
        ({"kind": "server", "event": "e", "args": {}}, "'args'"),
        ({"kind": "server", "event": "", "args": []}, "'event'"),
        ({"kind": "broadcast", "rooms": [], "except": [], "msgs": ["t2"], "to": "s"}, "'to'"),
    ],
)
def test_refuses_membership_and_server_events_of_the_wrong_shape(
    document: dict[str, Any], reason: str
) -> None:
    """A malformed member change or server event is refused, never half applied."""
    full = {"v": 2, "origin": "n", "ns": "/", **document}
    with pytest.raises(ClusterMessageError, match=reason):
        decode_message(orjson.dumps(full))


@pytest.mark.parametrize("prefix", ["", "a#b", "a*", "a?", "a[b]", "a\\b"])
def test_prefixes_that_would_match_other_channels_are_refused(prefix: str) -> None:
    """A prefix with glob characters would subscribe a node to other clusters' traffic."""
    with pytest.raises(ValueError):
        check_channel_prefix(prefix)


# -- properties ----------------------------------------------------------------

_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=30)
_names = st.frozensets(_text, max_size=5)
_messages = st.tuples(_text.map(lambda t: "2" + t)).flatmap(
    lambda head: st.lists(st.one_of(st.binary(max_size=64), _text), max_size=4).map(
        lambda rest: head + tuple(rest)
    )
)
_namespaces = _text.map(lambda t: "/" + t)
_origins = _text.filter(bool)


@settings(max_examples=300)
@given(
    namespace=_namespaces,
    rooms=_names,
    exclude=_names,
    messages=_messages,
    origin=_origins,
)
def test_broadcast_round_trips(
    namespace: str, rooms: frozenset[str], exclude: frozenset[str], messages: tuple[Any, ...], origin: str
) -> None:
    """Whatever a node broadcasts, the others read back exactly (binary included)."""
    message = ClusterBroadcast(
        namespace=namespace,
        rooms=frozenset(RoomId(r) for r in rooms),
        exclude=frozenset(SocketId(s) for s in exclude),
        messages=messages,
        origin=origin,
    )
    assert decode_message(encode_message(message)) == message


@settings(max_examples=300)
@given(
    namespace=_namespaces,
    socket_id=_origins,
    room=st.one_of(st.none(), _text),
    messages=_messages,
    origin=_origins,
)
def test_send_round_trips(
    namespace: str, socket_id: str, room: str | None, messages: tuple[Any, ...], origin: str
) -> None:
    """Whatever a node sends to a remote socket arrives exactly (binary included)."""
    message = ClusterSend(
        namespace=namespace,
        socket_id=SocketId(socket_id),
        only_if_in_room=None if room is None else RoomId(room),
        messages=messages,
        origin=origin,
    )
    assert decode_message(encode_message(message)) == message


@settings(max_examples=500)
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_decoder_raises_only_its_own_error(data: Any) -> None:
    """No publication, however malformed, escapes as an unexpected exception
    (which would end up in the subscriber's connection handling)."""
    try:
        decode_message(data)
    except ClusterMessageError:
        pass


@settings(max_examples=300)
@given(
    st.dictionaries(
        st.sampled_from(
            ["v", "kind", "origin", "ns", "rooms", "except", "msgs", "sid", "room", "to",
             "gone", "add", "remove", "event", "args"]
        ),
        st.recursive(
            st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), _text),
            lambda inner: st.lists(inner, max_size=3),
            max_leaves=6,
        ),
    )
)
def test_decoder_refuses_wrong_shapes_cleanly(document: dict[str, Any]) -> None:
    """Objects with the right field names but wrong types are refused cleanly."""
    document.setdefault("v", VERSION)
    try:
        decode_message(orjson.dumps(document))
    except ClusterMessageError:
        pass
