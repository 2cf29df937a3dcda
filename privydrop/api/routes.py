"""The REST API: the Node backend's paths and JSON bodies, on Klein.

=========================  ====================================================
C{POST /api/create_room}  C{{roomId}} -> C{{success, message}}
C{GET  /api/get_room}     -> C{{roomId}} of a newly created room
C{POST /api/check_room}   C{{roomId}} -> C{{available}}
C{POST /api/set_track}    C{{ref, timestamp, path}} -> C{{success: true}}
C{POST /api/logs_debug}   C{{message, timestamp}} -> C{{success: true}}
C{POST /api/leave_room}   C{{roomId, socketId}} -> C{{success, message}}
C{GET  /api/ice_servers}  -> C{{iceServers, ttl}}: short-lived TURN credentials
C{GET  /health}           readiness: 503 while the store is unusable (also C{/api/health})
C{GET  /health/live}      liveness: 200 while the process serves
C{GET  /health/detailed}  store round trip, Socket.IO connections, process figures
=========================  ====================================================

Every answer is JSON. Input the client can fix is a 4xx C{{"error": ...}}
(malformed or non-object JSON, a bad C{roomId}, 404, 405, 429 past the
per-client call budget, or past the tighter one of C{logs_debug}; 415 for a
body that is not JSON); a store that is down or stalled is a 503 within the
store's command timeout; anything else is logged and answered 500. CORS, the
call budgets and the body's type are checked by L{_APIResource} before Klein
routes. The budgets count per rate-limit key of the client's address
(L{privydrop.web.clientip.rate_limit_key}: an IPv6 client by its network)
and, with Redis, across every process sharing it (L{privydrop.ratelimit.budget}).

C{/health} answers from what the store's own operations (and an idle-time
PING) said of it (L{privydrop.store.health}), without a Redis command of its
own: 503 with the reason once the store has been unusable for longer than
its command timeout, for a load balancer or Docker health check to take the
process out. C{/health/live} says only that the process serves.

The API reaches Socket.IO only through two optional callables handed in by
the service tree (C{notify_peer_left}, C{connection_count}); it knows nothing
else of it.
"""

from __future__ import annotations

import datetime
import functools
import inspect
import os
import resource as _resource
import secrets
import sys
from typing import Any, Awaitable, Callable, Coroutine

import orjson
from klein import Klein
from twisted.internet.defer import CancelledError
from twisted.internet.interfaces import IReactorTime
from twisted.python.failure import Failure
from twisted.web.iweb import IRequest
from twisted.web.resource import IResource, Resource
from werkzeug.exceptions import MethodNotAllowed, NotFound

from privydrop import __version__
from privydrop.api.content import body_refusal
from privydrop.api.errors import (
    LEAVE_FIELDS_REQUIRED,
    ROOM_ID_REQUIRED,
    APIError,
    bad_request,
)
from privydrop.compat.klein import HotRoutes
from privydrop.logs.client_text import clip
from privydrop.logs.levels import Logger
from privydrop.logs.throttle import WarningThrottle
from privydrop.ratelimit import CallBudget
from privydrop.rooms import (
    InvalidRoomId,
    RoomId,
    RoomIdsExhausted,
    Rooms,
    validate_room_id,
)
from privydrop.settings import Settings
from privydrop.store import keys
from privydrop.store.health import StoreHealth
from privydrop.store.interface import IStore, LeaveResult, StoreUnavailable
from privydrop.tracking import InvalidTrack, ReferrerTracker
from privydrop.turn import ice_server_source
from privydrop.web.clientip import client_ip, peer_address, rate_limit_key, trusted_proxies
from privydrop.web.cors import api_headers, api_preflight_headers

_log = Logger()

#: Called after C{leave_room} unbound a socket, with the socket id and the
#: store's answer: tells the room's peers when a member was removed.
PeerLeftHook = Callable[[str, LeaveResult], "Awaitable[None] | None"]

#: Paths that are never counted against the call budget.
HEALTH_PATHS = frozenset({b"/health", b"/api/health", b"/health/live", b"/health/detailed"})
#: The path with a budget of its own besides the API's (each call writes a log line).
LOGS_DEBUG_PATH = b"/api/logs_debug"

SERVICE_NAME = "privydrop-backend"
_JSON = b"application/json; charset=utf-8"
_STORE_DOWN = "Storage is temporarily unavailable, please try again later"
_TOO_MANY = "Too many requests, please try again later"
_NO_TURN = "TURN is not configured"

def _iso(seconds: float) -> str:
    """JavaScript's C{Date.toISOString()} for a POSIX time."""
    moment = datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def read_json_object(request: IRequest) -> dict[str, Any]:
    """The request body as a JSON object; an empty body is C{{}}.

    @raise APIError: 400 when the body is not JSON (deep nesting included:
        the parser's depth limit is an error like any other) or not an object.
    """
    content = request.content
    if content is None:
        return {}
    content.seek(0)
    raw = content.read()
    if not raw.strip():
        return {}
    try:
        value = orjson.loads(raw)
    except (ValueError, RecursionError):
        raise bad_request("Malformed JSON body") from None
    if not isinstance(value, dict):
        raise bad_request("JSON body must be an object")
    return value


def _as_text(value: object, name: str) -> str:
    """A JSON value as text for the log: a string as it is, anything else as JSON.

    @raise APIError: 400 when it is nested deeper than the encoder goes
        (the parser takes deeper documents than the encoder writes).
    """
    if isinstance(value, str):
        return value
    try:
        return orjson.dumps(value).decode()
    except orjson.JSONEncodeError:
        raise bad_request("%s is nested too deeply" % (name,)) from None


def _required(value: object) -> bool:
    """Whether a field counts as given (the Node backend tests C{!value})."""
    return value is not None and value != "" and value is not False


def _validate_socket_id(value: object, max_length: int) -> str:
    if not isinstance(value, str):
        raise bad_request("Socket ID must be a string")
    if len(value) > max_length:
        raise bad_request("Socket ID is longer than %d characters" % (max_length,))
    if ":" in value or keys.contains_control_characters(value):
        raise bad_request("Socket ID holds characters that are not allowed")
    return value


def _process_figures(uptime_s: float) -> dict[str, Any]:
    """Memory and CPU figures of this process (informational)."""
    usage = _resource.getrusage(_resource.RUSAGE_SELF)
    cpu_s = usage.ru_utime + usage.ru_stime
    rss = None
    try:
        with open("/proc/self/statm", "rb") as statm:
            rss = int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        pass
    peak = usage.ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    return {
        "memory": {"rss": rss if rss is not None else peak, "peakRss": peak},
        "cpu": {
            "seconds": round(cpu_s, 3),
            "percent": round(cpu_s / uptime_s * 100) if uptime_s > 0 else 0,
        },
        "pid": os.getpid(),
        "platform": sys.platform,
        "pythonVersion": sys.version.split()[0],
    }


def _json_endpoint(
    f: Callable[..., Coroutine[Any, Any, Any]],
) -> Callable[..., Coroutine[Any, Any, bytes]]:
    """Run a route and turn its result, or its failure, into a JSON answer.

    The route returns a JSON-able value (status 200) or a C{(code, value)}
    tuple. This is the API's error boundary.
    """

    @functools.wraps(f)
    async def wrapper(self: "PrivyDropAPI", request: IRequest, *args: Any) -> bytes:
        code = 200
        headers: tuple[tuple[str, str], ...] = ()
        try:
            result = await f(self, request, *args)
            if isinstance(result, tuple):
                code, result = result
        except APIError as e:
            code, result, headers = e.code, e.body(), e.headers
            self._warnings.warn(
                _log,
                e.message, "API request refused ({code}): {error}", code=code, error=e.message
            )
        except (InvalidRoomId, InvalidTrack) as e:
            code, result = 400, {"error": str(e)}
            self._warnings.warn(
                _log,
                str(e), "API request refused ({code}): {error}", code=code, error=str(e)
            )
        except StoreUnavailable as e:
            code, result = 503, {"error": _STORE_DOWN}
            self._warnings.warn(
                _log,
                "store", "store unavailable, answering 503: {error}", error=str(e)
            )
        except RoomIdsExhausted as e:
            code, result = 503, {"error": str(e)}
        except CancelledError:
            # Klein cancels the route when the client goes away; nobody to answer.
            raise
        except Exception:
            _log.failure("API route {path} failed", path=clip(request.path))
            code, result = 500, {"error": "Internal server error"}
        request.setResponseCode(code)
        request.setHeader(b"content-type", _JSON)
        for name, value in headers:
            request.setHeader(name.encode("latin-1"), value.encode("latin-1"))
        body = orjson.dumps(result)
        # A length, as express sends it, rather than twisted.web's chunked
        # framing: one write of the answer instead of a chunk and a trailer.
        request.setHeader(b"content-length", b"%d" % (len(body),))
        return body

    return wrapper


class PrivyDropAPI:
    """The REST API's routes over the room and tracking rules.

    @ivar app: the Klein application (routes below).
    """

    app = Klein()

    def __init__(
        self,
        settings: Settings,
        store: IStore,
        clock: IReactorTime,
        *,
        rooms: Rooms | None = None,
        notify_peer_left: PeerLeftHook | None = None,
        connection_count: Callable[[], int] | None = None,
        redis_address: str | None = None,
        store_health: StoreHealth | None = None,
    ) -> None:
        """
        @param settings: all settings (reads C{api}, C{rooms}, C{tracking},
            C{origins}, C{http.trusted_proxies}, C{environment}).
        @param store: where rooms and statistics live.
        @param clock: "now" for rules, rate budgets and health figures.
        @param rooms: the room rules, shared with signaling (the service tree
            builds one); one over C{store} when None.
        @param notify_peer_left: awaited with C{(socket_id, result)} after
            C{leave_room} unbound the socket, so the room's peers hear of it
            (Socket.IO's C{peer-disconnected}) when it was a member; None
            until Socket.IO exists.
        @param connection_count: open Socket.IO connections, for
            C{/health/detailed}; None until Socket.IO exists.
        @param redis_address: C{host:port} shown by C{/health/detailed}, or
            None for the in-memory store.
        @param store_health: what the store's operations say of it, for
            C{/health}; None: the store is always usable (the memory store).
        """
        self._settings = settings
        self._store = store
        self._clock = clock
        self._rooms = rooms if rooms is not None else Rooms(store, settings.rooms, clock)
        self._tracker = ReferrerTracker(store, settings.tracking, clock)
        # With Redis, the budgets count across the processes sharing it.
        shared = store if settings.redis is not None else None
        self._budget = CallBudget(
            settings.api.rate_limit_calls,
            settings.api.rate_limit_window_s,
            clock,
            store=shared,
            name="api",
        )
        self._logs_budget = CallBudget(
            settings.api.logs_debug_rate_limit_calls,
            settings.api.logs_debug_rate_limit_window_s,
            clock,
            store=shared,
            name="logs_debug",
        )
        self._trusted = trusted_proxies(settings.http.trusted_proxies)
        self._notify_peer_left = notify_peer_left
        self._connection_count = connection_count
        self._redis_address = redis_address
        self._store_health = store_health
        self._started = clock.seconds()
        self._warnings = WarningThrottle(clock)
        self._ice_servers = ice_server_source(settings.turn, clock)

    def resource(self) -> IResource:
        """The API as a resource: CORS and call budget, then Klein's routing."""
        return _APIResource(self)

    # -- things _APIResource needs ------------------------------------------

    def client_address(self, request: IRequest) -> str:
        """The client's IP under the trusted-proxy rule (L{privydrop.web.clientip})."""
        forwarded = [
            v.decode("latin-1")
            for v in request.requestHeaders.getRawHeaders(b"x-forwarded-for", [])
        ]
        return client_ip(peer_address(request.getClientAddress()), forwarded, self._trusted)

    def client_key(self, request: IRequest) -> str:
        """The client's rate-limit key (its address; an IPv6 client's network)."""
        return rate_limit_key(
            self.client_address(request), self._settings.http.rate_limit_ipv6_prefix
        )

    # -- health ----------------------------------------------------------------

    def _basic_health(self) -> dict[str, Any]:
        now = self._clock.seconds()
        return {
            "status": "healthy",
            "timestamp": _iso(now),
            "uptime": int(now - self._started),
            "service": SERVICE_NAME,
            "version": __version__,
            "environment": self._settings.environment,
        }

    def _readiness(self) -> Any:
        """200 and the basic figures, or 503 with the reason while the store
        has been unusable for longer than its command timeout."""
        body = self._basic_health()
        health = self._store_health
        problem = None if health is None else health.problem()
        if problem is None:
            return body
        body["status"] = "unhealthy"
        body["errors"] = [problem]
        return 503, body

    @app.route("/health", methods=["GET"])
    @_json_endpoint
    async def health(self, request: IRequest) -> Any:
        return self._readiness()

    @app.route("/api/health", methods=["GET"])
    @_json_endpoint
    async def api_health(self, request: IRequest) -> Any:
        return self._readiness()

    @app.route("/health/live", methods=["GET"])
    @_json_endpoint
    async def health_live(self, request: IRequest) -> Any:
        return self._basic_health()

    @app.route("/health/detailed", methods=["GET"])
    @_json_endpoint
    async def health_detailed(self, request: IRequest) -> Any:
        body = self._basic_health()
        store: dict[str, Any] = {"backend": "redis" if self._redis_address else "memory"}
        if self._redis_address:
            store["address"] = self._redis_address
        started = self._clock.seconds()
        try:
            await self._store.ping()
        except Exception as e:
            store.update(status="disconnected", error=str(e) or type(e).__name__)
            body["status"] = "unhealthy"
            body["errors"] = ["Redis connection failed"]
        else:
            elapsed_ms = (self._clock.seconds() - started) * 1000
            store.update(status="connected", responseTime=round(elapsed_ms, 3))
        count = self._connection_count
        body["dependencies"] = {
            "redis": store,
            "socketio": {
                "status": "running" if count is not None else "not_initialized",
                "connections": count() if count is not None else 0,
            },
        }
        body["system"] = _process_figures(self._clock.seconds() - self._started)
        return (200 if body["status"] == "healthy" else 503), body

    # -- rooms -------------------------------------------------------------------

    def _room_id(self, value: object) -> RoomId:
        """A client's C{roomId}, checked before any store call.

        @raise APIError: 400 with the Node backend's message when missing.
        @raise InvalidRoomId: when it is not an id a client may use.
        """
        if not _required(value):
            raise bad_request(ROOM_ID_REQUIRED)
        return validate_room_id(value, self._settings.rooms.max_room_id_length)

    @app.route("/api/create_room", methods=["POST"])
    @_json_endpoint
    async def create_room(self, request: IRequest) -> Any:
        room_id = self._room_id(read_json_object(request).get("roomId"))
        outcome = await self._rooms.create(room_id)
        return {"success": outcome.success, "message": outcome.message}

    @app.route("/api/get_room", methods=["GET"])
    @_json_endpoint
    async def get_room(self, request: IRequest) -> Any:
        return {"roomId": await self._rooms.allocate()}

    @app.route("/api/check_room", methods=["POST"])
    @_json_endpoint
    async def check_room(self, request: IRequest) -> Any:
        room_id = self._room_id(read_json_object(request).get("roomId"))
        return {"available": await self._rooms.is_available(room_id)}

    @app.route("/api/leave_room", methods=["POST"])
    @_json_endpoint
    async def leave_room(self, request: IRequest) -> Any:
        body = read_json_object(request)
        room_id, socket_id = body.get("roomId"), body.get("socketId")
        if not (_required(room_id) and _required(socket_id)):
            raise bad_request(LEAVE_FIELDS_REQUIRED)
        room_id = self._room_id(room_id)
        socket_id = _validate_socket_id(socket_id, self._settings.api.max_socket_id_length)
        result = await self._rooms.leave(socket_id, room_id)
        if result.room_id is None:
            return {"success": True, "message": "Room does not exist."}
        if self._notify_peer_left is not None and result.removed:
            # Only a member's leave is announced: anyone may name a room id
            # and an arbitrary socket id.
            pending = self._notify_peer_left(socket_id, result)
            if inspect.isawaitable(pending):
                await pending
        return {"success": True, "message": "Successfully left the room"}

    # -- TURN ----------------------------------------------------------------------

    @app.route("/api/ice_servers", methods=["GET"])
    @_json_endpoint
    async def ice_servers(self, request: IRequest) -> Any:
        """Short-lived TURN credentials (L{privydrop.turn}); counts against the call budget."""
        if self._ice_servers is None:
            raise APIError(404, _NO_TURN)
        # A credential is for whoever asked, now: no cache may keep or share it.
        request.setHeader(b"cache-control", b"no-store")
        # A random id: coturn logs it; nothing ties it to a person.
        return self._ice_servers("api-" + secrets.token_urlsafe(9)).as_json()

    # -- statistics and client logs ----------------------------------------------

    @app.route("/api/set_track", methods=["POST"])
    @_json_endpoint
    async def set_track(self, request: IRequest) -> Any:
        body = read_json_object(request)
        await self._tracker.track(body.get("ref"), body.get("timestamp"))
        return {"success": True}

    @app.route("/api/logs_debug", methods=["POST"])
    @_json_endpoint
    async def logs_debug(self, request: IRequest) -> Any:
        body = read_json_object(request)
        limit = self._settings.api.max_log_message_length
        text = _as_text(body.get("message"), "message")
        stamp = _as_text(body.get("timestamp"), "timestamp")
        # !r keeps a message with newlines on one log line.
        _log.info(
            "client log at {client_timestamp!r}: {client_message!r}",
            client_timestamp=stamp[:64],
            client_message=text[:limit],
            truncated=len(text) > limit,
        )
        return {"success": True}

    # -- errors Klein raises while routing ------------------------------------

    @app.handle_errors(NotFound)
    def not_found(self, request: IRequest, failure: Failure) -> bytes:
        request.setResponseCode(404)
        request.setHeader(b"content-type", _JSON)
        return orjson.dumps({"error": "Not found"})

    @app.handle_errors(MethodNotAllowed)
    def method_not_allowed(self, request: IRequest, failure: Failure) -> bytes:
        request.setResponseCode(405)
        request.setHeader(b"content-type", _JSON)
        allowed = getattr(failure.value, "valid_methods", None)
        if allowed:
            request.setHeader(b"allow", ", ".join(allowed).encode("latin-1"))
        return orjson.dumps({"error": "Method not allowed"})


class _APIResource(Resource):
    """CORS, preflight and the per-IP call budget in front of Klein's routing.

    Klein's routing itself is L{HotRoutes}: the exact routes are dispatched
    without Klein's generic per-request plumbing, the rest by Klein.
    """

    isLeaf = True

    def __init__(self, api: PrivyDropAPI) -> None:
        super().__init__()
        self._api = api
        self._routes = HotRoutes(api.app)

    def render(self, request: IRequest) -> bytes | int:
        api = self._api
        origin_raw = request.requestHeaders.getRawHeaders(b"origin", [None])[-1]
        origin = origin_raw.decode("latin-1") if origin_raw is not None else None
        if request.method == b"OPTIONS":
            # Every OPTIONS is a preflight, as the cors middleware treats it.
            for name, value in api_preflight_headers(origin, api._settings.origins):
                request.setHeader(name, value)
            request.setResponseCode(204)
            request.setHeader(b"content-length", b"0")
            return b""
        for name_b, value_b in api_headers(origin, api._settings.origins):
            request.setHeader(name_b, value_b)
        if request.path not in HEALTH_PATHS:
            refused = self._over_budget(request)
            if refused is not None:
                return refused
        refusal = _body_refusal(request)
        if refusal is not None:
            api._warnings.warn(_log, refusal, "API request refused (415): {error}", error=refusal)
            request.setResponseCode(415)
            request.setHeader(b"content-type", _JSON)
            return orjson.dumps({"error": refusal})
        return self._routes.render(request)

    def _over_budget(self, request: IRequest) -> bytes | None:
        """Spend the request's budgets; the 429 answer when one is exhausted."""
        api = self._api
        logs = request.path == LOGS_DEBUG_PATH and api._logs_budget.enabled
        if not (api._budget.enabled or logs):
            return None
        client = api.client_key(request)
        decision = api._budget.spend(client)
        budget = "API call"
        if decision.allowed and logs:
            decision = api._logs_budget.spend(client)
            budget = "logs_debug"
        if decision.allowed:
            return None
        api._warnings.warn(
            _log,
            budget,
            "{budget} budget exhausted for {client}",
            budget=budget,
            client=client if api._settings.http.log_client_ips else "a client",
        )
        request.setResponseCode(429)
        request.setHeader(b"content-type", _JSON)
        request.setHeader(b"retry-after", b"%d" % (decision.retry_after_s,))
        return orjson.dumps({"error": _TOO_MANY})


def _body_refusal(request: IRequest) -> str | None:
    """Why the request's body is not one the API reads (L{privydrop.api.content})."""
    headers = request.requestHeaders
    content = request.content
    has_body = False
    if content is not None:
        # The site keeps bodies in memory; another server (tests' StubTreq)
        # may hand a file.
        position = content.tell()
        has_body = content.seek(0, 2) > 0
        content.seek(position)
    return body_refusal(
        request.method,
        headers.getRawHeaders(b"content-type", []),
        headers.getRawHeaders(b"content-encoding", []),
        has_body,
    )


__all__ = ["PrivyDropAPI", "PeerLeftHook", "read_json_object"]
