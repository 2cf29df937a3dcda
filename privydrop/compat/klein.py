"""Klein internals the REST API relies on, in one place.

L{HotRoutes} dispatches the API's exact routes without Klein's generic
per-request plumbing. It reads Klein's route table (C{Klein.url_map},
C{Klein.endpoints}, C{Klein.execute_endpoint}: public, but documented only
as read-only views) and the C{segment_count} Klein stores on each endpoint
function (undocumented metadata), and it re-does, for the routes it takes,
what C{KleinResource.render} does between matching and writing. The names
are listed in L{APP_INTERNALS} and L{ENDPOINT_INTERNALS}; when L{missing}
reports one, every request goes through C{KleinResource.render}.
C{tests/unit/test_compat_klein.py} fails, naming the attribute, on a Klein
version where one of them changed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from klein import Klein
from twisted.internet.defer import CancelledError, Deferred
from twisted.python.failure import Failure
from twisted.web.server import NOT_DONE_YET

from privydrop.logs.client_text import clip
from privydrop.logs.levels import Logger

_log = Logger()

#: What L{HotRoutes} reads on a Klein application.
APP_INTERNALS = ("url_map", "endpoints", "execute_endpoint")
#: What L{HotRoutes} reads on each function of C{Klein.endpoints}: how many
#: path segments Klein moves from C{postpath} to C{prepath} for the route.
ENDPOINT_INTERNALS = ("segment_count",)
#: The methods taken directly; anything else (HEAD, OPTIONS, ...) goes
#: through Klein, which knows their rules.
HOT_METHODS = ("GET", "POST")


def missing(app: Any) -> tuple[str, ...]:
    """The L{APP_INTERNALS} C{app} lacks, and the L{ENDPOINT_INTERNALS} any
    of its endpoints lacks (as C{endpoints[name].attribute})."""
    absent = [name for name in APP_INTERNALS if not hasattr(app, name)]
    if "endpoints" not in absent:
        for endpoint, function in app.endpoints.items():
            absent.extend(
                "endpoints[%r].%s" % (endpoint, name)
                for name in ENDPOINT_INTERNALS
                if not hasattr(function, name)
            )
    return tuple(absent)


def _hot_table(app: Any) -> dict[tuple[bytes, bytes], tuple[str, int]]:
    """(method, raw path) -> (endpoint, segments) for the routes without arguments."""
    table: dict[tuple[bytes, bytes], tuple[str, int]] = {}
    for rule in app.url_map.iter_rules():
        if rule.arguments or "<" in rule.rule:
            continue
        segments: int = app.endpoints[rule.endpoint].segment_count
        path = rule.rule.encode("utf-8")
        for method in rule.methods or ():
            if method in HOT_METHODS:
                table[(method.encode("ascii"), path)] = (rule.endpoint, segments)
    return table


class HotRoutes:
    """A Klein application's routes, the exact ones dispatched directly.

    For a request whose method and raw path are exactly those of a route
    without path arguments (C{POST /api/check_room}, C{GET /api/get_room},
    ...), the endpoint that Klein's own URL map names is run through Klein's
    C{execute_endpoint}, with C{prepath}/C{postpath} moved as Klein moves
    them, and its answer is written here; the route's Deferred is cancelled
    when the client goes away, and nothing is written then, as with Klein.
    Everything else (404, 405, HEAD, paths that need unquoting or a
    redirect) goes through C{KleinResource.render}. The table is read from
    Klein's map once, so routes stay defined, and dispatched, by Klein.

    Why: Klein's generic per-request plumbing (binding a werkzeug map
    adapter to the request's host and path, matching, two
    C{maybeDeferred}s, four callbacks, the C{IKleinRequest} adapter) was a
    large part of an API request's CPU. docs/performance.md, row "REST 3/4":
    in process, C{check_room} went from 120 to 56 µs per request and
    C{create_room} from 130 to 68.

    Routes taken directly must answer C{bytes} (or a Deferred of bytes): a
    C{Response}, resource or renderable is only handled by Klein's path.

    @ivar missing: the Klein internals absent from this application (see
        L{missing}); when not empty every request goes through Klein.
    """

    def __init__(self, app: Klein) -> None:
        """
        @param app: the application, bound to its instance (C{api.app}).
        """
        self._resource = app.resource()
        self.missing = missing(app)
        if self.missing:
            _log.warn(
                "Klein no longer has {names}: every API request goes through "
                "KleinResource.render (slower)",
                names=", ".join(self.missing),
            )
            self._table: dict[tuple[bytes, bytes], tuple[str, int]] = {}
        else:
            self._table = _hot_table(app)
            self._execute = app.execute_endpoint

    @property
    def paths(self) -> Iterable[tuple[bytes, bytes]]:
        """The (method, path) pairs dispatched directly."""
        return self._table.keys()

    def render(self, request: Any) -> bytes | int:
        """Answer C{request} as Klein would: bytes, or C{NOT_DONE_YET}."""
        hot = self._table.get((request.method, request.path))
        if hot is None:
            # Klein answers bytes, or NOT_DONE_YET (an int) for async routes.
            result: bytes | int = self._resource.render(request)  # type: ignore[assignment]
            return result
        return self._render_hot(request, *hot)

    def _render_hot(self, request: Any, endpoint: str, segments: int) -> bytes | int:
        postpath = request.postpath
        request.prepath.extend(postpath[:segments])
        request.postpath = postpath[segments:]
        result = self._execute(endpoint, request)
        if not isinstance(result, Deferred):
            # A synchronous Klein route answers bytes.
            return result  # type: ignore[return-value]
        gone: list[bool] = []

        def lost(failure: Failure) -> None:
            gone.append(True)
            result.cancel()

        request.notifyFinish().addErrback(lost)

        def answer(body: bytes) -> None:
            if not gone:
                request.write(body)
                request.finish()

        def failed(failure: Failure) -> None:
            if gone:
                if not failure.check(CancelledError):
                    _log.failure(
                        "API route {path} failed", failure=failure, path=clip(request.path)
                    )
                return
            request.processingFailed(failure)

        result.addCallbacks(answer, failed)
        return NOT_DONE_YET
