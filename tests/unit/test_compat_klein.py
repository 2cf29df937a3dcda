"""The Klein internals the REST API uses: present, checked, and with a working
fallback when one is gone.

If a test here fails after a Klein upgrade, the assertion names the
attribute that changed; privydrop/compat/klein.py says what uses it.
"""

from __future__ import annotations

import json
import types
from typing import Any

import pytest
from klein import Klein
from treq.testing import StubTreq
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.web.iweb import IRequest
from twisted.web.resource import Resource

from privydrop.api.routes import PrivyDropAPI
from privydrop.compat import klein as klein_compat
from privydrop.settings import Settings
from privydrop.store.memory import MemoryStore


def result_of(d: Any) -> Any:
    """The result of a Deferred that has already fired."""
    results: list[Any] = []
    failures: list[Any] = []
    d.addCallbacks(results.append, failures.append)
    if failures:
        failures[0].raiseException()
    assert results, "Deferred has not fired"
    return results[0]


def _api() -> PrivyDropAPI:
    clock = Clock()
    return PrivyDropAPI(Settings(), MemoryStore(clock), clock)


class _Routes(Resource):
    """A leaf resource answering through L{klein_compat.HotRoutes}."""

    isLeaf = True

    def __init__(self, routes: klein_compat.HotRoutes) -> None:
        super().__init__()
        self._routes = routes

    def render(self, request: Any) -> Any:
        return self._routes.render(request)


def _request(
    resource: Resource, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    stub = StubTreq(resource)
    headers = {"Content-Type": "application/json"} if body is not None else {}
    d = stub.request(method, "http://127.0.0.1" + path, data=body, headers=headers)
    stub.flush()
    response = result_of(d)
    return response.code, result_of(response.content())


def _small_app() -> Any:
    class Small:
        app = Klein()

        @app.route("/ping", methods=["GET"])
        def ping(self, request: IRequest) -> bytes:
            return b"pong %s" % (b"/".join(request.prepath),)

        @app.route("/echo/<word>", methods=["GET"])
        def echo(self, request: IRequest, word: str) -> bytes:
            return word.encode()

    return Small().app


def test_installed_klein_has_every_internal_used() -> None:
    """On the installed Klein nothing is missing, so the API's exact routes
    are dispatched directly."""
    api = _api()
    assert klein_compat.missing(api.app) == ()
    routes = klein_compat.HotRoutes(api.app)
    assert routes.missing == ()
    assert {(b"POST", b"/api/check_room"), (b"GET", b"/api/get_room"), (b"GET", b"/health")} <= set(
        routes.paths
    )


def test_check_names_what_an_upgrade_removed() -> None:
    """A Klein application or endpoint without one of the names is reported
    by name."""
    app = _small_app()
    assert klein_compat.missing(app) == ()
    del app.endpoints["ping"].segment_count
    assert klein_compat.missing(app) == ("endpoints['ping'].segment_count",)

    lacking = types.SimpleNamespace(url_map=app.url_map, endpoints={})
    assert klein_compat.missing(lacking) == ("execute_endpoint",)
    assert klein_compat.missing(object()) == klein_compat.APP_INTERNALS


def test_exact_routes_answer_like_klein() -> None:
    """A route taken directly sees the path segments Klein would have moved,
    and a route with arguments still goes through Klein."""
    routes = klein_compat.HotRoutes(_small_app())
    assert set(routes.paths) == {(b"GET", b"/ping")}
    assert _request(_Routes(routes), "GET", "/ping") == (200, b"pong ping")
    assert _request(_Routes(routes), "GET", "/echo/hi") == (200, b"hi")
    assert _request(_Routes(routes), "GET", "/nothing")[0] == 404


def test_without_the_internals_every_request_goes_through_klein(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """After a Klein upgrade that removed what the direct dispatch reads (here
    a name the installed Klein never had), the routes answer as before,
    through KleinResource.render, and a warning names what is gone."""
    monkeypatch.setattr(klein_compat, "APP_INTERNALS", klein_compat.APP_INTERNALS + ("routes",))
    with capturedLogs() as events:
        routes = klein_compat.HotRoutes(_small_app())
    assert routes.missing == ("routes",)
    assert list(routes.paths) == []
    warnings = [e for e in events if e["log_level"].name == "warn"]
    assert [e["names"] for e in warnings] == ["routes"]
    assert _request(_Routes(routes), "GET", "/ping") == (200, b"pong ping")
    assert _request(_Routes(routes), "GET", "/echo/hi") == (200, b"hi")


def test_api_answers_the_same_without_the_internals(monkeypatch: pytest.MonkeyPatch) -> None:
    """The whole API, on a Klein lacking a name the direct dispatch reads,
    answers its routes and errors as before."""
    monkeypatch.setattr(
        klein_compat, "ENDPOINT_INTERNALS", klein_compat.ENDPOINT_INTERNALS + ("route_meta",)
    )
    api = _api()
    with capturedLogs() as events:
        resource = api.resource()
    assert any("route_meta" in e.get("names", "") for e in events)
    code, body = _request(resource, "POST", "/api/create_room", b'{"roomId":"abcd"}')
    assert (code, json.loads(body)) == (200, {"success": True, "message": "create room success"})
    code, body = _request(resource, "POST", "/api/check_room", b'{"roomId":"abcd"}')
    assert (code, json.loads(body)) == (200, {"available": False})
    assert _request(resource, "GET", "/api/check_room")[0] == 405
    assert _request(resource, "GET", "/api/nothing")[0] == 404
