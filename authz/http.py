"""Envoy's HTTP ext_authz transport: a request to this port -> RequestFacts -> Authorizer.decide -> a reply.

In its HTTP mode Envoy asks by forwarding the request it holds, without its body: the method, the path with its
query (after `path_prefix`, which our Envoy config leaves empty), the Host, and the headers its allowed_headers pass
(authorization and x-request-id). So every request that reaches this port is a question about another request;
health and metrics live on the metrics port. The same decision as the gRPC transport is made by the same call, with
the route table as the only source of per-route rules (HTTP ext_authz has no context_extensions).

The reply, which Envoy's authorization_response config passes on:
- allow: 200 with the identity headers, and `x-envoy-auth-headers-to-remove` naming every identity header the
  caller has no value for (Envoy removes those from the request, as the gRPC headers_to_remove does);
- deny: the Decision's status, its `www-authenticate` and `content-type` headers and its JSON body, exactly as the
  gRPC denied_response carries them.

Served by granian (RSGI) on the server's event loop: a request is decided in place when no step needs the network,
else on the `waiting` threads, as service.py does for gRPC. granian hands over the path percent-decoded, so the
path is judged as a decoding backend would serve it: %2E and %5C become dot segments and backslashes, which the
normal-form rule refuses (400 bad_path), and %2F becomes a separator (/api%2Fadmin is /api/admin), where the gRPC
transport, given the path as sent, refuses it; the stack's Envoy refuses %2F and %5C before either.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent import futures
from typing import Any

from authz.authorizer import Answering, Authorizer, RequestFacts
from authz.policy import Decision, as_text, caller_metadata

# Envoy's header naming the request headers an HTTP authorization server wants removed before the upstream.
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"

Reply = tuple[int, list[tuple[str, str]], str]


class HttpAuthorization:
    """The RSGI application answering Envoy's HTTP ext_authz requests."""

    def __init__(
        self,
        authorizer: Authorizer,
        *,
        waiting: futures.Executor | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        """waiting: the threads that decide requests which must wait on the network (None: the loop's default)."""
        self._authorizer = authorizer
        self._answering = Answering(authorizer, request_facts, reply, waiting=waiting)
        self._clock = clock

    async def __rsgi__(self, scope: Any, proto: Any) -> None:
        started = self._clock()
        (status, headers, body), decision, facts = await self._answering.answer(scope)
        if body:
            proto.response_str(status, headers, body)
        else:
            proto.response_empty(status, headers)
        self._authorizer.record(decision, facts, self._clock() - started)


def request_facts(scope: Any) -> RequestFacts:
    """What the authorizer needs of Envoy's question: method, Host, path with query, every Authorization value
    (more than one is a malformed request, as on gRPC), and x-request-id for the log."""
    headers = scope.headers
    path = scope.path
    if scope.query_string:
        path = f"{path}?{scope.query_string}"
    host = scope.authority or headers.get("host") or ""
    return RequestFacts(
        scope.method, host, path, tuple(headers.get_all("authorization")), {}, headers.get("x-request-id")
    )


def reply(decision: Decision) -> Reply:
    """The status, headers and body that tell Envoy a Decision."""
    if decision.allowed:
        headers = list(decision.upstream_headers)
        if decision.removed_headers:
            headers.append((HEADERS_TO_REMOVE, ",".join(decision.removed_headers)))
        if decision.identity is not None:
            # The caller's dynamic metadata, as headers Envoy's dynamic_metadata_from_headers copies under their own
            # names (the keys gRPC's metadata has) and does not forward: they are outside the identity prefix.
            for key, value in caller_metadata(decision.identity):
                text = as_text(key, value)
                if text:
                    headers.append((key, text))
        return 200, headers, ""
    return decision.http_status, list(decision.response_headers), decision.body
