"""``GET /metrics``: the centre's Prometheus registry in the text exposition format.

A plain twisted.web resource around ``prometheus_client``'s encoders. ``prometheus_client.twisted`` is not
used: importing it installs Twisted's default reactor, which would break the asyncio reactor the runtime
installs. This module imports no reactor either, so it can be imported at any time.

Access (``docs/metrics.md``): with ``[server] metrics_token`` set, a scrape must carry
``Authorization: Bearer <token>`` (Prometheus' ``authorization`` / ``bearer_token`` setting); without one, only
clients on the loopback interface are served, so a centre listening on a public address does not publish its
figures to anyone who asks.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import Metric
from twisted.web.resource import Resource

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from twisted.web.server import Request

log = logging.getLogger(__name__)


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:  # a UNIX socket or anything else that is not an IP address: not loopback
        return False


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, registry: CollectorRegistry, *, token: str | None = None) -> None:
        super().__init__()
        self.registry = registry
        self._token = token.encode() if token else None

    def render(self, request: Request) -> bytes:
        request.setHeader(b"cache-control", b"no-store")
        request.setHeader(b"x-content-type-options", b"nosniff")
        if request.method not in (b"GET", b"HEAD"):
            request.setHeader(b"allow", b"GET, HEAD")
            return _plain(request, 405, b"only GET and HEAD are served here\n")
        if request.postpath not in ([], [b""]):
            return _plain(request, 404, b"no such resource: the metrics are at /metrics\n")
        refusal = self._refusal(request)
        if refusal is not None:
            return refusal
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        try:
            body, content_type = exposition(self.registry, accept)
        except Exception:  # a collector that cannot read its source must not take the server down
            log.exception("metrics: a collector failed")
            return _plain(request, 500, b"the metrics could not be collected; see the server log\n")
        request.setHeader(b"content-type", content_type.encode())
        return body

    def _refusal(self, request: Request) -> bytes | None:
        if self._token is None:
            peer = request.getClientAddress()
            if _loopback(getattr(peer, "host", "")):
                return None
            return _plain(
                request,
                403,
                b"metrics are served to loopback clients only; set [server] metrics_token to scrape from elsewhere\n",
            )
        got = request.getHeader(b"authorization") or b""
        scheme, _, credential = got.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(credential.strip(), self._token):
            return None
        request.setHeader(b"www-authenticate", b'Bearer realm="metrics"')
        return _plain(request, 401, b"a bearer token is required (Authorization: Bearer <metrics_token>)\n")


def exposition(registry: CollectorRegistry, accept: str = "") -> tuple[bytes, str]:
    """The registry as a scrape answers it: the classic text format (without ``_created`` samples), or
    OpenMetrics when ``accept`` asks for it. Returns the body and its content type."""
    encoder, content_type = choose_encoder(accept)
    source: Any = registry
    if content_type.startswith("text/plain"):
        source = _WithoutCreated(registry)
    return encoder(source), content_type


class _WithoutCreated:
    """The registry without ``_created`` samples, for the classic text format. There Prometheus would store
    each one as a gauge series of its own, doubling the series for a start time it cannot use; OpenMetrics
    carries it as metadata, so that format keeps it."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        for m in self.registry.collect():
            created = m.name + "_created"
            if any(s.name == created for s in m.samples):
                trimmed = Metric(m.name, m.documentation, m.type, m.unit)
                trimmed.samples = [s for s in m.samples if s.name != created]
                m = trimmed
            yield m


def _plain(request: Request, code: int, text: bytes) -> bytes:
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"text/plain; charset=utf-8")
    return text


__all__ = ["MetricsResource", "exposition"]
