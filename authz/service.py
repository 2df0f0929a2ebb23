"""The Authorization servicer: CheckRequest -> tokens -> policy -> CheckResponse.

The only module that imports the generated Envoy stubs. It reads the request, asks the verifier and the
policy, and translates their Decision into Envoy's v3 wire types. Any unexpected failure is a deny.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf.wrappers_pb2 import BoolValue

from authz._proto.envoy.config.core.v3 import base_pb2
from authz._proto.envoy.service.auth.v3 import attribute_context_pb2, external_auth_pb2, external_auth_pb2_grpc
from authz._proto.envoy.type.v3 import http_status_pb2
from authz._proto.google.rpc import status_pb2
from authz.cache import remember
from authz.errors import AuthzError, InternalError, MalformedAuthorization, RouteMisconfigured
from authz.metrics import Metrics
from authz.policy import Decision, Policy, RouteSettings, route_settings
from authz.revocation import Revocation
from authz.tokens import TokenVerifier, VerifiedToken, bearer_token

SERVICE_NAME = external_auth_pb2.DESCRIPTOR.services_by_name["Authorization"].full_name
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
# Older Envoys honour only the deprecated `append` flag (envoyproxy/envoy#42857): set both so all agree.
_NO_APPEND = BoolValue(value=False)

log = logging.getLogger("authz.decision")


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(
        self,
        *,
        verifier: TokenVerifier,
        policy: Policy,
        metrics: Metrics,
        max_token_bytes: int,
        revocation: Revocation | None = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._verifier = verifier
        self._revocation = revocation
        self._policy = policy
        self._metrics = metrics
        self._max_token_bytes = max_token_bytes
        self._clock = clock
        # Built once here, so failing closed cannot itself fail.
        self._internal_error = policy.deny(InternalError())
        self._internal_error_response = _response(self._internal_error)
        # A repeated token on a route gets the very same Decision and CheckResponse in one lookup (building the
        # response is most of a cached Check's work); the policy's few shared decisions (anonymous, each deny
        # reason) get theirs by decision. Plain dicts: a lost race only builds an equal value twice.
        self._answers: dict[tuple[VerifiedToken, RouteSettings], Answer] = {}
        self._responses: dict[Decision, external_auth_pb2.CheckResponse] = {}
        self._counters: dict[tuple[str, str, str, str], Any] = {}

    def Check(
        self, request: external_auth_pb2.CheckRequest, context: grpc.ServicerContext
    ) -> external_auth_pb2.CheckResponse:
        started = self._clock()
        try:
            decision, response = self._answer(request)
        except Exception:  # fail closed: a bug must deny, never allow or end the RPC without an answer
            logging.getLogger("authz.service").exception("check failed")
            decision, response = self._internal_error, self._internal_error_response
        try:
            self._observe(decision, request.attributes.request.http, self._clock() - started)
        except Exception:
            logging.getLogger("authz.service").exception("recording the decision failed")
        return response

    def _answer(self, request: external_auth_pb2.CheckRequest) -> Answer:
        try:
            route = route_settings(request.attributes.context_extensions)
        except AuthzError as error:
            log.error(
                "route misconfigured",
                extra={
                    "fields": {
                        "reason": error.reason,
                        "key": error.context.get("key"),
                        "path": _path(request.attributes.request.http),
                    }
                },
            )
            return self._shared_answer(self._policy.deny(error))
        verdict: VerifiedToken | AuthzError | None
        token = ""
        try:
            authorization = _authorization(request.attributes.request.http)
            if authorization is None:
                verdict = None
            else:
                token = bearer_token(authorization, self._max_token_bytes)
                verdict = self._verifier.verify(token)
        except AuthzError as error:
            verdict = error
        if not isinstance(verdict, VerifiedToken):
            return self._shared_answer(self._policy.decide(verdict, route))
        answer = self._answers.get((verdict, route))
        if answer is None:
            decision = self._policy.decide(verdict, route)
            answer = remember(self._answers, (verdict, route), (decision, _response(decision)), limit=_MEMO_SIZE)
        # Revocation comes last and is never memoized with the answer: Cognito's word on a token can change.
        if answer[0].allowed and route.revocation is not False:
            if self._revocation is None:
                if route.revocation:  # the route demands a check this server cannot make: never skip it silently
                    return self._shared_answer(self._policy.deny(RouteMisconfigured(key="revocation")))
            elif self._revocation.applies(verdict, route.revocation):
                refusal, confirmed = self._revocation.judge(token, verdict)
                if refusal is not None:
                    return self._shared_answer(self._policy.deny_caller(refusal, verdict))
                if not confirmed:  # allowed on the JWT alone (AUTHZ_REVOCATION_ON_ERROR=allow): say so in logs/metrics
                    return dataclasses.replace(answer[0], reason="ok_unconfirmed"), answer[1]
        return answer

    def _shared_answer(self, decision: Decision) -> Answer:
        response = self._responses.get(decision)
        if response is None:
            response = remember(self._responses, decision, _response(decision), limit=_MEMO_SIZE)
        return decision, response

    def _observe(self, decision: Decision, http: HttpRequest, seconds: float) -> None:
        identity = decision.identity
        pool = identity.pool_id if identity else ""
        client = identity.client_id if identity else ""
        result = "allow" if decision.allowed else "deny"
        labels = (result, decision.reason, pool, client)
        counter = self._counters.get(labels)
        if counter is None:
            counter = remember(self._counters, labels, self._metrics.decisions.labels(*labels), limit=_MEMO_SIZE)
        counter.inc()
        self._metrics.check_seconds.observe(seconds)
        # Denies at INFO, allows at DEBUG: Envoy's access log already has a line per request with the caller's
        # sub, and a log line costs more than the rest of a cached Check.
        level = logging.DEBUG if decision.allowed else logging.INFO
        if log.isEnabledFor(level):
            log.log(
                level,
                "decision",
                extra={
                    "fields": {
                        "result": result,
                        "reason": decision.reason,
                        "status": decision.http_status,
                        "sub": identity.sub if identity else None,
                        "pool": pool or None,
                        "path": _path(http),
                        "request_id": _header(http, "x-request-id"),
                    }
                },
            )


HttpRequest = attribute_context_pb2.AttributeContext.HttpRequest
Answer = tuple[Decision, external_auth_pb2.CheckResponse]
# Memo size: distinct (caller, route) pairs, response shapes and label sets kept at once.
_MEMO_SIZE = 4096


def _authorization(http: HttpRequest) -> str | None:
    """The Authorization header value; present twice (raw header_map) is malformed, never first-wins."""
    values = _header_values(http, "authorization")
    if len(values) > 1:
        raise MalformedAuthorization()
    return values[0] if values else None


def _header(http: HttpRequest, name: str) -> str | None:
    values = _header_values(http, name)
    return values[0] if values else None


def _header_values(http: HttpRequest, name: str) -> list[str]:
    """A header's values from Envoy's raw header_map when it sends one (encode_raw_headers), else the headers map
    (where Envoy has already comma-joined repeats)."""
    if http.header_map.headers:
        return [
            header.raw_value.decode("utf-8", "replace") if header.raw_value else header.value
            for header in http.header_map.headers
            if header.key.lower() == name
        ]
    value = http.headers.get(name)
    return [] if value is None else [value]


def _path(http: HttpRequest) -> str:
    # The query string is dropped: it may carry credentials that must never reach a log.
    return http.path.partition("?")[0]


def _response(decision: Decision) -> external_auth_pb2.CheckResponse:
    if decision.allowed:
        return _allow_response(decision)
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=decision.grpc_code, message=decision.reason),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=decision.http_status),
            headers=_header_options(decision.response_headers),
            body=decision.body,
        ),
    )


# Allow responses differ only in header values: each shape (which headers are set, which removed) is built once
# and copied, which costs a fifth of building six HeaderValueOptions anew (a new caller's first Check).
_allow_templates: dict[tuple[tuple[str, ...], tuple[str, ...]], external_auth_pb2.CheckResponse] = {}


def _allow_response(decision: Decision) -> external_auth_pb2.CheckResponse:
    shape = (tuple(name for name, _ in decision.upstream_headers), decision.removed_headers)
    template = _allow_templates.get(shape)
    if template is None:
        template = external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=0),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=_header_options(tuple((name, "") for name in shape[0])),
                headers_to_remove=shape[1],
            ),
        )
        remember(_allow_templates, shape, template, limit=_MEMO_SIZE)
    response = external_auth_pb2.CheckResponse()
    response.CopyFrom(template)
    for option, (_, value) in zip(response.ok_response.headers, decision.upstream_headers, strict=True):
        option.header.value = value
    return response


def _header_options(pairs: tuple[tuple[str, str], ...]) -> list[base_pb2.HeaderValueOption]:
    return [
        base_pb2.HeaderValueOption(
            header=base_pb2.HeaderValue(key=name, value=value), append=_NO_APPEND, append_action=_OVERWRITE
        )
        for name, value in pairs
    ]
