"""C{GET /metrics}: the metrics in Prometheus's text format, on a site of their own.

L{build_metrics_site} is the small twisted.web site of the C{METRICS_LISTEN}
listener; it serves C{/metrics} and nothing else (404). The public site
never serves it (L{privydrop.web.site} routes every path but Socket.IO's
to the REST API).

The answer is built in the reactor thread, synchronously, from the
registry: the scrape-time readings (L{privydrop.metrics.readings}) look at
state only the reactor thread touches. prometheus_client's own twisted
resource renders in a thread pool, which would read that state from another
thread, so it is not used. Prometheus's C{Accept} header chooses between the
classic text format and OpenMetrics, as prometheus_client's own servers do.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, generate_latest
from twisted.internet.interfaces import IReactorTime
from twisted.web.pages import notFound
from twisted.web.resource import IResource, Resource
from twisted.web.server import Site

from privydrop.logs.levels import Logger

_log = Logger()

#: What C{generate_latest} writes: the classic text format, which every
#: Prometheus reads.
TEXT_FORMAT = "text/plain; version=0.0.4; charset=utf-8"

#: The path Prometheus scrapes (its default C{metrics_path}).
METRICS_PATH = b"metrics"


class MetricsResource(Resource):
    """Renders a registry on C{GET} (and C{HEAD}); other methods get 405."""

    isLeaf = True

    def __init__(self, registry: CollectorRegistry) -> None:
        super().__init__()
        self._registry = registry

    def render(self, request: Any) -> bytes:
        if request.method in (b"GET", b"HEAD"):
            # twisted.web leaves the body out of a HEAD answer.
            return self.render_GET(request)
        request.setResponseCode(405)
        request.setHeader(b"allow", b"GET, HEAD")
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"method not allowed\n"

    def render_GET(self, request: Any) -> bytes:
        accept = request.getHeader(b"accept")
        try:
            encoder, content_type = choose_encoder(accept.decode("latin-1") if accept else "")
        except Exception:  # noqa: BLE001 - prometheus_client's parser fails on odd versions
            # An Accept header whose version is not a version (ValueError or
            # TypeError, depending on where the parser stumbles).
            encoder, content_type = generate_latest, TEXT_FORMAT
        try:
            body: bytes = encoder(self._registry)
        except Exception:  # noqa: BLE001 - error boundary: one scrape fails, not the process
            _log.failure("rendering the metrics failed")
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"metrics unavailable\n"
        request.setHeader(b"content-type", content_type.encode("latin-1"))
        return body


class _Root(Resource):
    """C{/metrics}, and 404 for every other path."""

    def getChild(self, path: bytes, request: Any) -> IResource:
        return notFound()


class MetricsSite(Site):
    """The metrics listener's site: C{/metrics} only, no access log.

    Prometheus scrapes every few seconds; a log line for each would drown
    the server's own.
    """

    displayTracebacks = False

    def log(self, request: Any) -> None:
        pass


def build_metrics_site(
    registry: CollectorRegistry, reactor: IReactorTime, idle_timeout_s: float
) -> MetricsSite:
    """The site serving C{registry} at C{/metrics}.

    @param idle_timeout_s: seconds an idle keep-alive connection is kept
        (C{HTTP_IDLE_TIMEOUT}, as on the public port).
    """
    root = _Root()
    root.putChild(METRICS_PATH, MetricsResource(registry))
    return MetricsSite(root, reactor=reactor, timeout=idle_timeout_s)
