"""The front proxy's configuration, written once as typed models (envoy-data-plane) and rendered per topology.

    python -m envoy.bootstrap local  [--envoy-port 8080 --admin-port 9901 --authz-port 9191 --backend-port 4567]
                                     [--route-rules table|context_extensions] [--user-rate-limit N]
                                     [--authz-transport grpc|http --authz-health-port 9192]
    python -m envoy.bootstrap compose            (regenerates envoy/envoy.compose.yaml, the docker-compose variant)

What every variant does, in request order:
1. The HTTP connection manager normalizes the path (RFC 3986, merged slashes, escaped slashes rejected) before any
   route is chosen, so `/api/health/../me` is matched as `/api/me`; headers with underscores are rejected, so an
   `x_user_sub` cannot turn into X-User-Sub in a WSGI server.
2. header_mutation strips every client-sent `x-user-*` header, on every route, before ext_authz runs. (A route's
   request_headers_to_remove would run after ext_authz and delete the authz server's own headers.)
3. ext_authz asks the authz cluster with a short timeout, over gRPC (HTTP/2, health-checked with grpc.health.v1)
   or, with Transport.HTTP, in Envoy's HTTP mode (HTTP/1.1, health-checked with GET /healthz on the metrics port);
   failure_mode_allow is off and an unreachable or failing authz server means STATUS_ON_ERROR for the client.
   /api/health, CORS preflights and the pages (/, /web) skip the check. Every other route is checked, and its
   rules come from the authz server's route table (the stack's is stack/routes/routes.yaml) or, in the variant
   that sends them (RuleSource.CONTEXT_EXTENSIONS), from each route's context_extensions.
4. With a per-caller limit (Topology.user_rate_limit), local_ratelimit gives each caller authz allowed, by the
   verified sub in ext_authz's dynamic metadata, that many requests a second, and answers 429 past it; anonymous
   requests are not limited by it.
5. The router sends allowed requests to the backend, which trusts only the identity headers set in step 3.
6. The clusters behind steps 3 and 5: the authz replicas (outliers ejected at once) and the backend, whose idle
   connections Envoy closes before the backend would.

The code below follows the same order, under the same numbers.
"""

from __future__ import annotations

import argparse
import datetime
import enum
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import betterproto2
import yaml
from envoy_data_plane.envoy.config.accesslog.v3 import AccessLog
from envoy_data_plane.envoy.config.bootstrap.v3 import Admin, Bootstrap, BootstrapStaticResources
from envoy_data_plane.envoy.config.cluster.v3 import (
    CircuitBreakers,
    CircuitBreakersThresholds,
    Cluster,
    ClusterDiscoveryType,
    ClusterDnsLookupFamily,
    OutlierDetection,
)
from envoy_data_plane.envoy.config.common.mutation_rules.v3 import HeaderMutation, HeaderMutationRemoveOnMatch
from envoy_data_plane.envoy.config.core.v3 import (
    Address,
    ApiVersion,
    BackoffStrategy,
    DataSource,
    GrpcService,
    GrpcServiceEnvoyGrpc,
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
    HealthCheck,
    HealthCheckGrpcHealthCheck,
    HealthCheckHttpHealthCheck,
    Http1ProtocolOptions,
    Http2ProtocolOptions,
    HttpProtocolOptions,
    HttpProtocolOptionsHeadersWithUnderscoresAction,
    HttpUri,
    Node,
    RetryPolicy,
    RetryPolicyRetryHostPredicate,
    RuntimeFractionalPercent,
    SocketAddress,
    SubstitutionFormatString,
)
from envoy_data_plane.envoy.config.endpoint.v3 import (
    ClusterLoadAssignment,
    Endpoint,
    EndpointHealthCheckConfig,
    LbEndpoint,
    LocalityLbEndpoints,
)
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.overload.v3 import OverloadManager, ResourceMonitor
from envoy_data_plane.envoy.config.route.v3 import (
    DirectResponseAction,
    HeaderMatcher,
    RateLimit,
    RateLimitAction,
    RateLimitActionMetaData,
    RateLimitActionMetaDataSource,
    Route,
    RouteAction,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.access_loggers.stream.v3 import StdoutAccessLog
from envoy_data_plane.envoy.extensions.common.ratelimit.v3 import (
    LocalRateLimitDescriptor,
    RateLimitDescriptorEntry,
    XRateLimitHeadersRfcVersion,
)
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import (
    AuthorizationResponse,
    CheckSettings,
    ExtAuthz,
    ExtAuthzPerRoute,
    HttpService,
)
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import HeaderMutation as HeaderMutationFilter
from envoy_data_plane.envoy.extensions.filters.http.header_mutation.v3 import Mutations
from envoy_data_plane.envoy.extensions.filters.http.local_ratelimit.v3 import LocalRateLimit
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpConnectionManagerCodecType,
    HttpConnectionManagerPathWithEscapedSlashesAction,
    HttpFilter,
)
from envoy_data_plane.envoy.extensions.resource_monitors.downstream_connections.v3 import (
    DownstreamConnectionsConfig,
)
from envoy_data_plane.envoy.extensions.retry.host.previous_hosts.v3 import PreviousHostsPredicate
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import (
    HttpProtocolOptions as UpstreamHttpProtocolOptions,
)
from envoy_data_plane.envoy.extensions.upstreams.http.v3 import HttpProtocolOptionsExplicitHttpConfig
from envoy_data_plane.envoy.type.matcher.v3 import ListStringMatcher, StringMatcher
from envoy_data_plane.envoy.type.metadata.v3 import MetadataKey, MetadataKeyPathSegment
from envoy_data_plane.envoy.type.v3 import (
    FractionalPercent,
    FractionalPercentDenominatorType,
    HttpStatus,
    StatusCode,
    TokenBucket,
)
from envoy_data_plane.google.protobuf import Any as AnyMessage
from envoy_data_plane.google.protobuf import Struct

import identity_headers

COMPOSE_FILE = Path(__file__).resolve().parent / "envoy.compose.yaml"

# The prefix Envoy strips unless a topology names another; the one definition every part shares.
DEFAULT_IDENTITY_HEADER_PREFIX = identity_headers.DEFAULT_PREFIX
AUTHZ_CLUSTER = "authz"
BACKEND_CLUSTER = "backend"
COGNITO_CLUSTER = "cognito"

# 1. The listener and its HTTP connection manager.
# A client that has not sent its request headers within 10 s is holding a connection open, not making a request
# (Envoy's edge best-practice value).
REQUEST_HEADERS_TIMEOUT = datetime.timedelta(seconds=10)
# A stream with no activity for 5 minutes is dropped (Envoy's edge best-practice value); no route here streams or
# long-polls.
STREAM_IDLE_TIMEOUT = datetime.timedelta(seconds=300)
# An edge proxy bounds its open connections (Envoy's edge best practice; it warns at start without one).
MAX_DOWNSTREAM_CONNECTIONS = 50_000
# The most request headers Envoy holds: a client's beyond it get Envoy's own text/plain 431, and headers that
# ext_authz's changes take beyond it a 500 (ext_authz_invalid). Envoy's default, 60 KiB, refused the largest token
# Cognito issues for the largest identity (identity_headers.MAX_TOKEN_BYTES, 128 KiB) before authz could judge it.
# While ext_authz adds the identity headers the request still holds the token (the router removes it later). The
# built-in headers' values come out of the token's payload, at most 3/4 of its length, and so do the AUTHZ_CLAIM_HEADERS
# ones (each maps another claim): so a token at that size, twice 3/4 of it, 1 KiB for each set's names, and 32 KiB
# for the request's other headers.
IDENTITY_VALUES_BYTES = identity_headers.MAX_TOKEN_BYTES * 3 // 4
MAX_REQUEST_HEADERS_KB = (identity_headers.MAX_TOKEN_BYTES + 2 * IDENTITY_VALUES_BYTES) // 1024 + 2 + 32
# The HTTP filters, in the order a request passes them (2, 3, 4, then the router).
HEADER_MUTATION = "envoy.filters.http.header_mutation"
EXT_AUTHZ = "envoy.filters.http.ext_authz"
LOCAL_RATE_LIMIT = "envoy.filters.http.local_ratelimit"
ROUTER = "envoy.filters.http.router"

# The path as the access log shows it: without its query (url_path), and "-" for a path with parameters (;) or a
# fragment (#, which Envoy refuses with a 400 after reading it) or anything shaped like a JWT, since any of them may
# carry a token. (Envoy's CEL has no string functions by default, so the path cannot be cut, only withheld.) authz's
# own log and the backend's cut paths by the same rule (authz.authorizer.loggable_path, backend/logs.py).
LOGGABLE_PATH = (
    "request.url_path.matches('^[^;#]*$') && !request.url_path.matches('eyJ[A-Za-z0-9_-]*[.]') ? request.url_path : '-'"
)
# The access log: what happened, never the Authorization header, the query string or any other place a token may
# ride in (LOGGABLE_PATH). The caller (`user`) is the sub authz allowed, from the ext_authz filter's dynamic metadata:
# a request rejected before the filters run (an Upgrade, a %2F in the path, a fragment) has none, whatever
# x-user-sub it sent. RESPONSE_CODE_DETAILS says who answered: via_upstream, ext_authz_denied, ext_authz_error, ...
ACCESS_LOG_FORMAT = {
    "time": "%START_TIME%",
    "method": "%REQ(:METHOD)%",
    "path": f"%CEL({LOGGABLE_PATH})%",
    "status": "%RESPONSE_CODE%",
    "authz": "%RESPONSE_CODE_DETAILS%",
    "flags": "%RESPONSE_FLAGS%",
    "request_id": "%REQ(X-REQUEST-ID)%",
    "user": f"%DYNAMIC_METADATA({EXT_AUTHZ}:{identity_headers.METADATA_SUB})%",
    "user_agent": "%REQ(USER-AGENT)%",
    "duration_ms": "%DURATION%",
    "upstream": "%UPSTREAM_HOST%",
}

# 3. ext_authz.
# What a client sees when the authz server cannot answer (down, overloaded, timed out): 503 says "try again",
# where Envoy's default 403 would tell a valid caller they are forbidden.
STATUS_ON_ERROR = 503
# The longest Envoy waits for a Check. A hot Check takes well under a millisecond; the budget covers a cold
# verify plus a JWKS refetch on key rotation.
AUTHZ_TIMEOUT = datetime.timedelta(seconds=1)
# The back-off before a retried Check (jittered below base, then 2x base): enough to step past a replica that is
# going away, small enough that both retries fit well inside AUTHZ_TIMEOUT.
AUTHZ_RETRY_BASE_INTERVAL = datetime.timedelta(milliseconds=10)
# The back-off's cap, which two retries never reach. Envoy also makes it each try's timeout, for gRPC and HTTP
# services alike (convertCoreToRouteRetryPolicy in source/common/http/utility.cc sets per_try_timeout to
# max_interval): a cap of 50 ms answered every Check slower than that with STATUS_ON_ERROR (a cold token with a
# GetUser call or a JWKS refetch), so it is the whole timeout.
AUTHZ_RETRY_MAX_INTERVAL = AUTHZ_TIMEOUT

# 3, HTTP mode (Transport.HTTP). What Envoy's HTTP ext_authz does, from its source (envoyproxy/envoy,
# source/extensions/filters/common/ext_authz/check_request_utils.cc and ext_authz_http_impl.cc,
# source/extensions/filters/http/ext_authz/ext_authz.cc) and the v3 API (ext_authz.proto: HttpService,
# AuthorizationRequest, AuthorizationResponse; https://www.envoyproxy.io/docs/envoy/latest/api-v3/extensions/filters/http/ext_authz/v3/ext_authz.proto):
# - The question is the client's request without its body: its method, its :path (normalized, with the query) behind
#   path_prefix (ours is empty), `content-length: 0`, and the headers the allowed_headers matcher passes, to which
#   Envoy always adds authorization, :method, :path and :authority (sent as Host). Repeated headers arrive as one,
#   their values joined with ",". Envoy's async client adds x-envoy-internal and x-envoy-expected-rq-timeout-ms.
#   The filter's top-level allowed_headers serves both transports; the deprecated
#   http_service.authorization_request.allowed_headers is the same list, and setting both is refused. Per-route
#   context_extensions are not sent in HTTP mode (CheckSettings: "only applied to ... grpc_service").
# - 200 is an allow: the reply headers allowed_upstream_headers matches are set on the upstream request (replacing a
#   header of that name), and the comma-separated names in x-envoy-auth-headers-to-remove are removed from it (as
#   the gRPC headers_to_remove: not pseudo-headers or Host; invalid names are skipped with validate_mutations).
#   No reply header reaches the client on an allow (allowed_client_headers_on_success is unset).
# - Any other status below 500 is a deny with that status and the reply's body; the client gets the reply headers
#   allowed_client_headers names, plus the ones Envoy always adds to that list (:status, content-length,
#   www-authenticate, location). content-type must be named, or the client gets Envoy's text/plain.
# - A 5xx reply, a reset or a timeout is an error: STATUS_ON_ERROR with an empty body (the reply's body and headers
#   are dropped), `ext_authz_error` in the access log. So a 5xx deny of the authz server (500 internal, 503 keys
#   unavailable) reaches the client as Envoy's bare 503, where gRPC passes the server's JSON body on.
# - dynamic_metadata_from_headers copies reply headers into the filter's dynamic metadata under their own names (as
#   strings, and without forwarding them): authz's allow names them as gRPC's metadata keys, so the access log and
#   the rate limit find the caller under `sub` whichever way Envoy asked (since Envoy 1.20).
# HTTP/1.1, not h2c: granian serves both (--http auto), and neither is cheaper here (per denied Check, medians of 4
# interleaved 5 s rounds of wrk -c32 through Envoy on a shared 2-core machine: authz ~130 us of CPU, Envoy ~115 us,
# either way). HTTP/1.1 is what Envoy speaks to an upstream by default and what HTTP ext_authz servers are written
# for, and the server's tested bounds are per connection (a request head within 5 s, 4096 connections at once);
# Envoy's per-worker connection pool gives the concurrency, one Check per connection at a time.
# granian closes an HTTP/1 connection that sends no request headers within 30 s (--http1-header-read-timeout), so
# Envoy closes idle ones first: a Check sent on a connection granian is closing in that instant would fail.
AUTHZ_HTTP_IDLE_TIMEOUT = datetime.timedelta(seconds=15)
# Envoy's default limit on an upstream reply's headers is 60 KiB, and an allow carries the identity three times over:
# the built-in headers, the claim headers and the caller metadata headers, each with values out of the token's payload
# (at most 3/4 of MAX_TOKEN_BYTES), 1 KiB for each set's names, and 4 KiB for the rest (granian's own headers,
# x-envoy-auth-headers-to-remove, a deny's www-authenticate).
AUTHZ_MAX_RESPONSE_HEADERS_KB = 3 * IDENTITY_VALUES_BYTES // 1024 + 3 + 4
# The authz server's health, on its metrics port (authz.metrics_endpoint.HEALTH_PATH): 200 serving, 503 not yet.
AUTHZ_HEALTH_PATH = "/healthz"
# The response headers a deny passes to the client besides the ones Envoy always adds (www-authenticate among them,
# named here anyway since the contract needs it).
DENY_CLIENT_HEADERS = ("www-authenticate", "content-type")

# 4. local_ratelimit, per caller. Each distinct sub gets its own token bucket (a descriptor entry without a value:
# Envoy's dynamic descriptors, since 1.34), holding one second's worth of requests and refilled each second. The
# buckets are an LRU of at most this many callers: one pushed out by others starts again with a full bucket, so the
# bound is well above the callers one proxy sees within a second. The limit is per Envoy process (shared by its
# worker threads), not per fleet.
RATE_LIMIT_CALLERS = 100_000
# The stack's limit (`make run`'s ENVOY_USER_RATE_LIMIT default, and compose's): well above what a person in the
# pages sends, far below what a script can.
DEFAULT_USER_RATE_LIMIT = 20
RATE_LIMIT_FILL_INTERVAL = datetime.timedelta(seconds=1)
RATE_LIMIT_STAT_PREFIX = "per_user"

# 6. The clusters.
# A connection to an upstream on the same host or compose network opens in well under a millisecond; one that takes
# 250 ms is to a host that is gone, and failing it then leaves room for a retry inside AUTHZ_TIMEOUT.
CONNECT_TIMEOUT = datetime.timedelta(milliseconds=250)
# A health answer slower than this counts as a failed check; it is shorter than either health interval, so one
# check ends before the next begins.
HEALTH_CHECK_TIMEOUT = datetime.timedelta(milliseconds=500)
# How often Envoy checks each authz replica and looks for outliers: a dead replica leaves rotation, and a restarted
# one rejoins, within a couple of seconds.
HEALTH_INTERVAL = datetime.timedelta(seconds=1)
# An ejected authz replica is back in rotation after this (Envoy lengthens it each time the replica is ejected
# again), so one that was only restarting rejoins quickly and one that keeps failing stays out longer.
OUTLIER_BASE_EJECTION_TIME = datetime.timedelta(seconds=2)
# Concurrent Check retries the authz cluster allows (why so many: its circuit breaker in authz_cluster).
MAX_AUTHZ_RETRIES = 256
# How long Envoy keeps an idle connection to the backend. It must stay below the backend's own keep-alive
# (gunicorn's `keepalive` in backend/gunicorn.conf.py), so Envoy is always the side that closes: a request Envoy
# sends on a connection the backend is closing in that moment fails as a 503 ("upstream connect error or
# disconnect/reset before headers. reset reason: connection termination"), and Envoy does not retry it.
BACKEND_IDLE_TIMEOUT = datetime.timedelta(seconds=30)
# The backend is one host, which Envoy routes to whether it is marked healthy or not (panic mode): its health status
# informs (admin /clusters, stats) rather than steers, so a slower cadence than authz's is enough.
BACKEND_HEALTH_INTERVAL = datetime.timedelta(seconds=5)
BACKEND_HEALTH_PATH = "/api/health"


@dataclass(frozen=True)
class HostPort:
    host: str
    port: int


def address(host: HostPort) -> Address:
    return Address(socket_address=SocketAddress(address=host.host, port_value=host.port))


class RuleSource(enum.StrEnum):
    """Where the authz server finds the rules of a route Envoy checks."""

    # The server's own route table (AUTHZ_ROUTES; the stack's is stack/routes/routes.yaml): Envoy sends no rules,
    # as with Istio's CUSTOM action or Envoy Gateway's extAuth, and the table can change without touching Envoy.
    TABLE = "table"
    # Each checked route sends its rules as context_extensions, as Envoy configurations written for them do; the
    # server decides such a Check by them alone, whatever its table says.
    CONTEXT_EXTENSIONS = "context_extensions"


class Transport(enum.StrEnum):
    """How Envoy asks the authz server, and which of its commands answers."""

    # envoy.service.auth.v3.Authorization/Check over HTTP/2 (`python -m authz serve`, AUTHZ_ADDR).
    GRPC = "grpc"
    # Envoy's HTTP ext_authz mode: the request itself, without its body, over HTTP/1.1 (`python -m authz
    # serve-http`, AUTHZ_HTTP_ADDR). Rules come from the server's route table only: HTTP mode sends no
    # context_extensions.
    HTTP = "http"


# Envoy releases whose HTTP ext_authz mode breaks the contract, with why. 1.37.0 drops allowed_client_headers from a
# deny (the client gets text/plain instead of the JSON contract) and answers an authz 5xx with 403 instead of
# status_on_error: a regression fixed by envoyproxy/envoy#43043, backported to v1.37 (#43104) after 1.37.0, the
# last 1.37 on PyPI. The gRPC mode is unaffected. The suites skip HTTP mode on these, saying why.
HTTP_MODE_BROKEN = {
    (1, 37, 0): "Envoy 1.37.0's HTTP ext_authz drops allowed_client_headers on denies (envoyproxy/envoy#43043)"
}


@dataclass(frozen=True)
class Topology:
    """Where Envoy listens and where its upstreams are; the only thing that differs between variants."""

    listener: HostPort
    admin: HostPort
    authz: Sequence[HostPort]
    backend: HostPort
    # STATIC for IP addresses, STRICT_DNS for service names (compose).
    resolve_names: bool = False
    node_id: str = "cruddur-front-proxy"
    # Must equal the authz server's AUTHZ_HEADER_PREFIX and the backend's IDENTITY_HEADER_PREFIX: Envoy strips
    # exactly these headers from clients.
    identity_header_prefix: str = DEFAULT_IDENTITY_HEADER_PREFIX
    route_rules: RuleSource = RuleSource.TABLE
    authz_transport: Transport = Transport.GRPC
    # Transport.HTTP: each authz replica's metrics port, in the order of `authz`, where Envoy health-checks
    # AUTHZ_HEALTH_PATH (every path on the authorization port is a question about a request).
    authz_health_ports: Sequence[int] = ()
    # Requests a second each caller authz allowed may make, keyed by the verified sub (step 4); 0: no such limit.
    user_rate_limit: int = 0
    # The local Cognito emulator, which the pages reach through Envoy at COGNITO_PATH (compose publishes nothing
    # else); None: the pages reach Cognito themselves (a real pool, or `make run`'s emulator on loopback).
    cognito: HostPort | None = None

    def __post_init__(self) -> None:
        if self.user_rate_limit < 0:
            raise ValueError("user_rate_limit is requests per second per caller, 0 for none")
        if self.authz_transport is Transport.HTTP:
            if len(self.authz_health_ports) != len(self.authz):
                raise ValueError("Transport.HTTP needs one health (metrics) port per authz replica")
            if self.route_rules is RuleSource.CONTEXT_EXTENSIONS:
                raise ValueError("Envoy's HTTP ext_authz sends no context_extensions; use RuleSource.TABLE")


def local(
    *,
    envoy_port: int = 8080,
    admin_port: int = 9901,
    authz_ports: Sequence[int] = (9191,),
    backend_port: int = 4567,
    identity_header_prefix: str = DEFAULT_IDENTITY_HEADER_PREFIX,
    route_rules: RuleSource = RuleSource.TABLE,
    authz_transport: Transport = Transport.GRPC,
    authz_health_ports: Sequence[int] = (),
    user_rate_limit: int = 0,
) -> Topology:
    """Everything on loopback, as `make run` and the integration tests start it."""
    return Topology(
        listener=HostPort("127.0.0.1", envoy_port),
        admin=HostPort("127.0.0.1", admin_port),
        authz=tuple(HostPort("127.0.0.1", port) for port in authz_ports),
        backend=HostPort("127.0.0.1", backend_port),
        identity_header_prefix=identity_header_prefix,
        route_rules=route_rules,
        authz_transport=authz_transport,
        authz_health_ports=tuple(authz_health_ports),
        user_rate_limit=user_rate_limit,
    )


def compose() -> Topology:
    """docker-compose service names; the admin interface listens on the container's loopback only, where its
    healthcheck runs: no other container can stop Envoy or read its config through it."""
    return Topology(
        listener=HostPort("0.0.0.0", 8080),  # noqa: S104 - the published port, reached from outside the container
        admin=HostPort("127.0.0.1", 9901),
        authz=(HostPort("authz", 9191),),
        backend=HostPort("backend", 4567),
        resolve_names=True,
        user_rate_limit=DEFAULT_USER_RATE_LIMIT,
        cognito=HostPort("cognito-local", 5000),
    )


def build(topology: Topology) -> Bootstrap:
    return Bootstrap(
        node=Node(id=topology.node_id, cluster="cruddur"),
        admin=Admin(address=address(topology.admin)),
        static_resources=BootstrapStaticResources(
            listeners=[_listener(topology)],
            clusters=[
                authz_cluster(topology),
                _backend_cluster(topology),
                *([_cognito_cluster(topology, topology.cognito)] if topology.cognito else []),
            ],
        ),
        overload_manager=OverloadManager(
            resource_monitors=[
                ResourceMonitor(
                    name="envoy.resource_monitors.global_downstream_max_connections",
                    typed_config=AnyMessage.pack(
                        DownstreamConnectionsConfig(max_active_downstream_connections=MAX_DOWNSTREAM_CONNECTIONS)
                    ),
                )
            ]
        ),
    )


def render(topology: Topology) -> dict:
    """The bootstrap as the JSON/YAML document Envoy reads, with field names as Envoy's docs spell them."""
    return build(topology).to_dict(casing=betterproto2.Casing.SNAKE)


# 1. The listener: one HTTP connection manager, its filters in request order, and the access log.


def _listener(topology: Topology) -> Listener:
    manager = HttpConnectionManager(
        stat_prefix="ingress_http",
        codec_type=HttpConnectionManagerCodecType.AUTO,
        # The edge: the client's address is the peer's, and x-envoy-* and x-request-id from outside are not trusted.
        use_remote_address=True,
        normalize_path=True,
        merge_slashes=True,
        path_with_escaped_slashes_action=HttpConnectionManagerPathWithEscapedSlashesAction.REJECT_REQUEST,
        common_http_protocol_options=HttpProtocolOptions(
            headers_with_underscores_action=HttpProtocolOptionsHeadersWithUnderscoresAction.REJECT_REQUEST,
        ),
        request_headers_timeout=REQUEST_HEADERS_TIMEOUT,
        stream_idle_timeout=STREAM_IDLE_TIMEOUT,
        max_request_headers_kb=MAX_REQUEST_HEADERS_KB,
        route_config=_route_config(topology),
        http_filters=[
            HttpFilter(
                name=HEADER_MUTATION,
                typed_config=AnyMessage.pack(_strip_identity_headers(topology.identity_header_prefix)),
            ),
            HttpFilter(
                name=EXT_AUTHZ,
                typed_config=AnyMessage.pack(
                    ext_authz(
                        transport=topology.authz_transport, identity_header_prefix=topology.identity_header_prefix
                    )
                ),
            ),
            *(
                [HttpFilter(name=LOCAL_RATE_LIMIT, typed_config=AnyMessage.pack(per_user_rate_limit(topology)))]
                if topology.user_rate_limit
                else []
            ),
            HttpFilter(name=ROUTER, typed_config=AnyMessage.pack(Router())),
        ],
        access_log=[_stdout_json_access_log(topology)],
    )
    return Listener(
        name="ingress",
        address=address(topology.listener),
        filter_chains=[
            FilterChain(
                filters=[
                    Filter(name="envoy.filters.network.http_connection_manager", typed_config=AnyMessage.pack(manager))
                ]
            )
        ],
    )


def _stdout_json_access_log(topology: Topology) -> AccessLog:
    """One JSON line per request on stdout, in ACCESS_LOG_FORMAT (the CEL formatter, which Envoy always enables,
    writes its path)."""
    log_format = SubstitutionFormatString(json_format=Struct.from_dict(ACCESS_LOG_FORMAT))
    return AccessLog(
        name="envoy.access_loggers.stdout", typed_config=AnyMessage.pack(StdoutAccessLog(log_format=log_format))
    )


# 2. header_mutation: no client-sent identity header gets past it.


def _strip_identity_headers(identity_header_prefix: str) -> HeaderMutationFilter:
    prefix = StringMatcher(prefix=identity_header_prefix, ignore_case=True)
    return HeaderMutationFilter(
        mutations=Mutations(
            request_mutations=[HeaderMutation(remove_on_match=HeaderMutationRemoveOnMatch(key_matcher=prefix))]
        )
    )


# 3. ext_authz: the Check, and what happens when it cannot be answered.


def ext_authz(
    *, transport: Transport = Transport.GRPC, identity_header_prefix: str = DEFAULT_IDENTITY_HEADER_PREFIX
) -> ExtAuthz:
    common: dict[str, Any] = {
        "failure_mode_allow": False,
        "status_on_error": HttpStatus(code=StatusCode(STATUS_ON_ERROR)),
        # The authz server needs the token and the request id, not cookies or the rest. (HTTP mode adds the method,
        # path and Host to these, see above.)
        "allowed_headers": _exact_names(("authorization", "x-request-id")),
        # Envoy rejects an authz reply whose headers are not valid HTTP, instead of forwarding them.
        "validate_mutations": True,
    }
    if transport is Transport.HTTP:
        return ExtAuthz(http_service=_http_service(identity_header_prefix), **common)
    return ExtAuthz(
        grpc_service=GrpcService(
            envoy_grpc=GrpcServiceEnvoyGrpc(cluster_name=AUTHZ_CLUSTER),
            timeout=AUTHZ_TIMEOUT,
            retry_policy=_authz_retry_policy("connect-failure,refused-stream,reset,unavailable"),
        ),
        transport_api_version=ApiVersion.V3,
        **common,
    )


def _http_service(identity_header_prefix: str) -> HttpService:
    """Envoy's HTTP mode: ask the authz cluster with the request itself, and pass on exactly the identity headers
    (upstream, on an allow) or the deny's headers (to the client)."""
    return HttpService(
        # Envoy sends to the cluster and keeps the client's Host; the URI itself routes nothing.
        server_uri=HttpUri(uri=f"http://{AUTHZ_CLUSTER}", cluster=AUTHZ_CLUSTER, timeout=AUTHZ_TIMEOUT),
        # path_prefix stays empty: the authz server reads the path the route table matches, as the client sent it.
        authorization_response=AuthorizationResponse(
            # Every identity header, the built-in ones and any AUTHZ_CLAIM_HEADERS names (all under the prefix).
            allowed_upstream_headers=ListStringMatcher(patterns=[StringMatcher(prefix=identity_header_prefix)]),
            allowed_client_headers=_exact_names(DENY_CLIENT_HEADERS),
            # The caller's metadata, under the keys gRPC's allow gives it.
            dynamic_metadata_from_headers=_exact_names(identity_headers.METADATA_KEYS),
        ),
        # An authz reply is an answer whatever its status, so only a Check that never got one is retried (a 5xx is
        # an error either way, see above).
        retry_policy=_authz_retry_policy("connect-failure,refused-stream,reset"),
    )


def _authz_retry_policy(retry_on: str) -> RetryPolicy:
    """A Check that could not reach a replica (refused, reset, UNAVAILABLE while it shuts down) is retried, up to
    twice, on another one, so losing a replica costs a retry instead of a 503. A deny is an answer, never retried;
    retries stay inside the 1 s timeout."""
    return RetryPolicy(
        retry_on=retry_on,
        num_retries=2,
        retry_back_off=BackoffStrategy(base_interval=AUTHZ_RETRY_BASE_INTERVAL, max_interval=AUTHZ_RETRY_MAX_INTERVAL),
        retry_host_predicate=[
            RetryPolicyRetryHostPredicate(
                name="envoy.retry_host_predicates.previous_hosts",
                typed_config=AnyMessage.pack(PreviousHostsPredicate()),
            )
        ],
        host_selection_retry_max_attempts=3,
    )


def _exact_names(names: Sequence[str]) -> ListStringMatcher:
    return ListStringMatcher(patterns=[StringMatcher(exact=name) for name in names])


# 4. local_ratelimit: a caller who floods is answered 429, others are not slowed.


def per_user_rate_limit(topology: Topology) -> LocalRateLimit:
    """topology.user_rate_limit requests a second per verified sub, from the ext_authz filter's dynamic metadata
    (which only authz writes, after the client's own x-user-* headers are gone). A request without a sub (a public
    route, an anonymous caller, or one denied before this filter) makes no descriptor and is not limited here."""
    per_second = topology.user_rate_limit
    everyone = FractionalPercent(numerator=100, denominator=FractionalPercentDenominatorType.HUNDRED)
    return LocalRateLimit(
        stat_prefix=RATE_LIMIT_STAT_PREFIX,
        # Enabled and enforced on every request (both default to 0%).
        filter_enabled=RuntimeFractionalPercent(default_value=everyone),
        filter_enforced=RuntimeFractionalPercent(default_value=everyone),
        # Only per-caller buckets: the filter's own bucket (every request's, unless a descriptor matched) would be a
        # limit on all traffic, which this is not.
        always_consume_default_token_bucket=False,
        rate_limits=[
            RateLimit(
                actions=[
                    RateLimitAction(
                        metadata=RateLimitActionMetaData(
                            descriptor_key=identity_headers.METADATA_SUB,
                            metadata_key=MetadataKey(
                                key=EXT_AUTHZ, path=[MetadataKeyPathSegment(key=identity_headers.METADATA_SUB)]
                            ),
                            source=RateLimitActionMetaDataSource.DYNAMIC,
                        )
                    )
                ]
            )
        ],
        descriptors=[
            LocalRateLimitDescriptor(
                entries=[RateLimitDescriptorEntry(key=identity_headers.METADATA_SUB)],
                token_bucket=TokenBucket(
                    max_tokens=per_second, tokens_per_fill=per_second, fill_interval=RATE_LIMIT_FILL_INTERVAL
                ),
            )
        ],
        max_dynamic_descriptors=RATE_LIMIT_CALLERS,
        # x-ratelimit-limit, -remaining and -reset on every limited response and the 429 itself, for the caller's
        # own bucket: a client can pace itself.
        enable_x_ratelimit_headers=XRateLimitHeadersRfcVersion.DRAFT_VERSION_03,
    )


# 5. The routes: where ext_authz is off, what the authz server demands elsewhere, and the backend behind every one.


@dataclass(frozen=True)
class ApiRoute:
    """One row of the route table: a path, and what the authz server demands there, as context_extensions (None:
    ext_authz is off, no Check at all)."""

    name: str
    match: RouteMatch
    context_extensions: Mapping[str, str] | None


# First match wins. ext_authz is off only where no Check is wanted at all: liveness must not depend on authz, a
# CORS preflight carries no credentials by design, and the pages are public static files. Everything else is
# checked. The rules below are the ones Envoy sends under RuleSource.CONTEXT_EXTENSIONS; under RuleSource.TABLE it
# sends none, and the authz server's table (stack/routes/routes.yaml, held to these rows by
# tests/stack/test_routes_file.py) states the same rules.
ROUTES = (
    ApiRoute("health", RouteMatch(path=BACKEND_HEALTH_PATH), None),
    # A CORS preflight carries no credentials by design; the backend answers it (and only it) anonymously. A route
    # table matches on method, host and path, so it cannot tell a preflight from another OPTIONS: Envoy does.
    ApiRoute(
        "cors-preflight",
        RouteMatch(
            prefix="/api/",
            headers=[
                HeaderMatcher(name=":method", string_match=StringMatcher(exact="OPTIONS")),
                HeaderMatcher(name="access-control-request-method", present_match=True),
            ],
        ),
        None,
    ),
    # The web pages (backend/web/): public static files; they call the API with the user's token themselves.
    # /web and /web/..., never /website: the segment prefix the route table's `prefix` means.
    ApiRoute("pages", RouteMatch(path="/"), None),
    ApiRoute("page-assets", RouteMatch(path_separated_prefix="/web"), None),
    ApiRoute("home-feed", RouteMatch(path="/api/activities/home"), {"auth": "optional"}),
    # Signing out (the pages call it before Cognito's GlobalSignOut): with the replicas' shared state, authz has every
    # replica refuse the caller's tokens before the backend answers; without it, a misconfigured route (403).
    ApiRoute("sign-out", RouteMatch(path="/api/sign-out"), {"auth": "required", "sign_out": "global"}),
    ApiRoute("api", RouteMatch(prefix="/api/"), {"auth": "required"}),
    # Everything not listed needs a valid access token (default deny).
    ApiRoute("default", RouteMatch(prefix="/"), {"auth": "required"}),
)


def routes(rules: RuleSource) -> tuple[ApiRoute, ...]:
    """The rows Envoy renders: all of them when it sends the rules; otherwise the unchecked ones and the catch-all,
    since checked routes that send no rules differ in nothing but their match."""
    if rules is RuleSource.CONTEXT_EXTENSIONS:
        return ROUTES
    return (*(row for row in ROUTES if row.context_extensions is None), ROUTES[-1])


def _route_config(topology: Topology) -> RouteConfiguration:
    return RouteConfiguration(
        name="cruddur",
        virtual_hosts=[
            VirtualHost(
                name="cruddur",
                domains=["*"],
                routes=[
                    *(_cognito_routes(topology.cognito) if topology.cognito else []),
                    *(_route(api_route, topology.route_rules) for api_route in routes(topology.route_rules)),
                ],
                # The upstream gets the caller's identity from the authz server, so it never needs the token
                # (as jwt_authn's default `forward: false`): a backend log or a leak cannot hand it on. Route and
                # virtual-host header removal runs in the router, after ext_authz has read it.
                request_headers_to_remove=["authorization"],
            )
        ],
    )


def _route(api_route: ApiRoute, rules: RuleSource) -> Route:
    per_filter: dict[str, AnyMessage] = {}
    if api_route.context_extensions is None:
        per_filter = _no_check()
    elif rules is RuleSource.CONTEXT_EXTENSIONS:
        per_route = ExtAuthzPerRoute(
            check_settings=CheckSettings(context_extensions=dict(api_route.context_extensions))
        )
        per_filter[EXT_AUTHZ] = AnyMessage.pack(per_route)
    return Route(
        name=api_route.name,
        match=api_route.match,
        route=RouteAction(cluster=BACKEND_CLUSTER),
        typed_per_filter_config=per_filter,
    )


# The emulator topology: the pages' calls to Cognito, through Envoy. Only what the pages call, the user-pool actions
# Cognito answers without AWS credentials (backend/web/cognito.js), passes: the emulator, like moto, checks no
# credentials on the admin actions, which must not be open to whoever reaches the published port. So a call passes
# only as the pages make it: a POST to exactly COGNITO_PATH, no query string (moto would read an Action there before
# X-Amz-Target; the emulator also refuses one in the body), the JSON content type, one of their X-Amz-Targets, the
# Host the emulator's own (moto picks a service by it), and no Authorization (the virtual host removes it from every
# request).
COGNITO_PATH = "/cognito/"
# The JSON protocol's content type, which the pages send (and no form, which moto would read an Action from).
COGNITO_CONTENT_TYPE = "application/x-amz-json-1.1"
PAGES_COGNITO_ACTIONS = (
    "SignUp",
    "ConfirmSignUp",
    "ResendConfirmationCode",
    "InitiateAuth",
    "GetUser",
    "GlobalSignOut",
    "ForgotPassword",
    "ConfirmForgotPassword",
    # Sign-out also revokes the refresh token; TOTP: the sign-in code step and the Security page's authenticator app.
    "RevokeToken",
    "RespondToAuthChallenge",
    "AssociateSoftwareToken",
    "VerifySoftwareToken",
    "SetUserMFAPreference",
)
COGNITO_REFUSED_BODY = '{"__type":"AccessDeniedException","message":"only the pages\' user-pool actions pass here"}'


def _no_check() -> dict[str, AnyMessage]:
    """A route's typed_per_filter_config that turns ext_authz off there."""
    return {EXT_AUTHZ: AnyMessage.pack(ExtAuthzPerRoute(disabled=True))}


def _cognito_routes(cognito: HostPort) -> list[Route]:
    """A POST under COGNITO_PATH naming one of PAGES_COGNITO_ACTIONS goes to the emulator (the path prefix taken off),
    a route per action (one RE2 alternation of them is over Envoy's program size limit); anything else under it is
    refused with 403. No Check: the pages call Cognito before they have a token.

    What moto would read besides the match is set or taken off on the way: X-Amz-Target and Content-Type are
    written anew with the route's own values (a second X-Amz-Target a client adds would reach the emulator joined to
    the first, and moto runs the part after the last dot), a compressed body is refused (moto decompresses before it
    reads an Action from the body, where the emulator could not see it), and User-Agent goes (moto takes a Region
    from it, which would point the admin actions at the pool)."""
    off = _no_check()
    passed = [
        Route(
            name=f"cognito-{action}",
            match=RouteMatch(
                prefix=COGNITO_PATH,
                headers=[
                    HeaderMatcher(name=":method", string_match=StringMatcher(exact="POST")),
                    # The whole :path, query included (a route's own path match ignores the query).
                    HeaderMatcher(name=":path", string_match=StringMatcher(exact=COGNITO_PATH)),
                    HeaderMatcher(name="content-type", string_match=StringMatcher(exact=COGNITO_CONTENT_TYPE)),
                    HeaderMatcher(
                        name="x-amz-target",
                        string_match=StringMatcher(exact=f"AWSCognitoIdentityProviderService.{action}"),
                    ),
                    HeaderMatcher(name="content-encoding", present_match=True, invert_match=True),
                ],
            ),
            request_headers_to_add=[
                HeaderValueOption(
                    header=HeaderValue(key=name, value=value),
                    append_action=HeaderValueOptionHeaderAppendAction.OVERWRITE_IF_EXISTS_OR_ADD,
                )
                for name, value in (
                    ("x-amz-target", f"AWSCognitoIdentityProviderService.{action}"),
                    ("content-type", COGNITO_CONTENT_TYPE),
                )
            ],
            request_headers_to_remove=["user-agent", "content-encoding"],
            route=RouteAction(
                cluster=COGNITO_CLUSTER, prefix_rewrite="/", host_rewrite_literal=f"{cognito.host}:{cognito.port}"
            ),
            typed_per_filter_config=off,
        )
        for action in PAGES_COGNITO_ACTIONS
    ]
    refused = Route(
        name="cognito-refused",
        match=RouteMatch(path_separated_prefix=COGNITO_PATH.rstrip("/")),
        direct_response=DirectResponseAction(status=403, body=DataSource(inline_string=COGNITO_REFUSED_BODY)),
        typed_per_filter_config=off,
    )
    return [*passed, refused]


# 6. The clusters: the authz replicas ext_authz asks, the backend the routes send to, and the emulator topology's
# Cognito.


def authz_cluster(topology: Topology) -> Cluster:
    if topology.authz_transport is Transport.HTTP:
        protocol = _upstream_http(
            HttpProtocolOptionsExplicitHttpConfig(http_protocol_options=Http1ProtocolOptions()),
            common=HttpProtocolOptions(
                idle_timeout=AUTHZ_HTTP_IDLE_TIMEOUT, max_response_headers_kb=AUTHZ_MAX_RESPONSE_HEADERS_KB
            ),
        )
        health_check = _authz_health_check(http_health_check=HealthCheckHttpHealthCheck(path=AUTHZ_HEALTH_PATH))
    else:
        protocol = _upstream_http(HttpProtocolOptionsExplicitHttpConfig(http2_protocol_options=Http2ProtocolOptions()))
        health_check = _authz_health_check(grpc_health_check=HealthCheckGrpcHealthCheck())
    return _cluster(
        AUTHZ_CLUSTER,
        topology,
        topology.authz,
        health_ports=topology.authz_health_ports,
        typed_extension_protocol_options=protocol,
        # Envoy allows 3 concurrent retries per cluster by default; when a replica dies under load, far more
        # Checks are in flight at once, and each one over the limit would turn into a 503.
        circuit_breakers=CircuitBreakers(thresholds=[CircuitBreakersThresholds(max_retries=MAX_AUTHZ_RETRIES)]),
        # A replica that refuses a connection (or times out a Check) is taken out of rotation at once, without
        # waiting for health checks. With every replica out, Envoy routes to them anyway (panic mode): a dead one
        # still fails closed with STATUS_ON_ERROR. In HTTP mode 5 replies in a row with a 5xx (Envoy's default
        # consecutive_5xx) eject a replica too: that is one that cannot decide (no keys, internal errors).
        outlier_detection=OutlierDetection(
            split_external_local_origin_errors=True,
            consecutive_local_origin_failure=1,
            interval=HEALTH_INTERVAL,
            base_ejection_time=OUTLIER_BASE_EJECTION_TIME,
            max_ejection_percent=100,
        ),
        health_checks=[health_check],
    )


def _authz_health_check(**kind: Any) -> HealthCheck:
    """A health check of kind (grpc.health.v1, or a GET of the metrics port's AUTHZ_HEALTH_PATH) every
    HEALTH_INTERVAL, whether or not the cluster has traffic."""
    return HealthCheck(
        timeout=HEALTH_CHECK_TIMEOUT,
        interval=HEALTH_INTERVAL,
        # Without these Envoy checks an idle cluster only once a minute, so a restarted authz server
        # would wait up to a minute to be marked healthy again.
        no_traffic_interval=HEALTH_INTERVAL,
        no_traffic_healthy_interval=HEALTH_INTERVAL,
        unhealthy_threshold=2,
        healthy_threshold=1,
        **kind,
    )


def _backend_cluster(topology: Topology) -> Cluster:
    return _cluster(
        BACKEND_CLUSTER,
        topology,
        (topology.backend,),
        typed_extension_protocol_options=_upstream_http(
            HttpProtocolOptionsExplicitHttpConfig(http_protocol_options=Http1ProtocolOptions()),
            common=HttpProtocolOptions(idle_timeout=BACKEND_IDLE_TIMEOUT),
        ),
        health_checks=[_http_health_check(BACKEND_HEALTH_PATH)],
    )


def _cognito_cluster(topology: Topology, cognito: HostPort) -> Cluster:
    return _cluster(
        COGNITO_CLUSTER,
        topology,
        (cognito,),
        typed_extension_protocol_options=_upstream_http(
            HttpProtocolOptionsExplicitHttpConfig(http_protocol_options=Http1ProtocolOptions())
        ),
    )


def _http_health_check(path: str) -> HealthCheck:
    """An HTTP GET of path every BACKEND_HEALTH_INTERVAL."""
    return HealthCheck(
        timeout=HEALTH_CHECK_TIMEOUT,
        interval=BACKEND_HEALTH_INTERVAL,
        no_traffic_interval=BACKEND_HEALTH_INTERVAL,
        unhealthy_threshold=2,
        healthy_threshold=1,
        http_health_check=HealthCheckHttpHealthCheck(path=path),
    )


def _upstream_http(
    explicit: HttpProtocolOptionsExplicitHttpConfig, *, common: HttpProtocolOptions | None = None
) -> dict[str, AnyMessage]:
    """A cluster's typed_extension_protocol_options: the HTTP version it speaks upstream, and common options."""
    return {
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": AnyMessage.pack(
            UpstreamHttpProtocolOptions(explicit_http_config=explicit, common_http_protocol_options=common)
        )
    }


def _cluster(
    name: str, topology: Topology, hosts: Sequence[HostPort], *, health_ports: Sequence[int] = (), **details: Any
) -> Cluster:
    """A cluster of hosts addressed by IP (STATIC) or, in compose, by service name (STRICT_DNS); health_ports, one
    per host, move its health checks to another port of that host."""
    return Cluster(
        name=name,
        type=ClusterDiscoveryType.STRICT_DNS if topology.resolve_names else ClusterDiscoveryType.STATIC,
        dns_lookup_family=ClusterDnsLookupFamily.V4_ONLY,
        connect_timeout=CONNECT_TIMEOUT,
        load_assignment=_endpoints(name, hosts, health_ports),
        **details,
    )


def _endpoints(cluster: str, hosts: Sequence[HostPort], health_ports: Sequence[int]) -> ClusterLoadAssignment:
    checked_on: Sequence[int | None] = tuple(health_ports) or (None,) * len(hosts)
    return ClusterLoadAssignment(
        cluster_name=cluster,
        endpoints=[
            LocalityLbEndpoints(
                lb_endpoints=[
                    LbEndpoint(
                        endpoint=Endpoint(
                            address=address(host),
                            health_check_config=EndpointHealthCheckConfig(port_value=port) if port else None,
                        )
                    )
                    for host, port in zip(hosts, checked_on, strict=True)
                ]
            )
        ],
    )


def compose_yaml() -> str:
    header = (
        "# Generated by `python -m envoy.bootstrap compose` from envoy/bootstrap.py; edit that, not this file.\n"
        "# The docker-compose variant: upstreams are the compose services `authz`, `backend` and `cognito-local`.\n"
    )
    return header + yaml.safe_dump(render(compose()), sort_keys=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m envoy.bootstrap", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="variant", required=True)
    local_parser = sub.add_parser("local", help="print the loopback variant as JSON")
    local_parser.add_argument("--envoy-port", type=int, default=8080)
    local_parser.add_argument("--admin-port", type=int, default=9901)
    local_parser.add_argument("--authz-port", type=int, action="append", help="repeat for several replicas")
    local_parser.add_argument("--backend-port", type=int, default=4567)
    local_parser.add_argument("--identity-header-prefix", default=DEFAULT_IDENTITY_HEADER_PREFIX)
    local_parser.add_argument(
        "--route-rules", type=RuleSource, choices=list(RuleSource), default=RuleSource.TABLE, help=RuleSource.__doc__
    )
    local_parser.add_argument(
        "--authz-transport", type=Transport, choices=list(Transport), default=Transport.GRPC, help=Transport.__doc__
    )
    local_parser.add_argument(
        "--authz-health-port", type=int, action="append", help="HTTP transport: each replica's metrics port (9192)"
    )
    local_parser.add_argument(
        "--user-rate-limit", type=int, default=0, help="requests a second per caller (by verified sub); 0: no limit"
    )
    compose_parser = sub.add_parser("compose", help="write envoy/envoy.compose.yaml")
    compose_parser.add_argument("--stdout", action="store_true", help="print instead of writing the file")
    args = parser.parse_args(argv)
    if args.variant == "local":
        topology = local(
            envoy_port=args.envoy_port,
            admin_port=args.admin_port,
            authz_ports=args.authz_port or (9191,),
            backend_port=args.backend_port,
            identity_header_prefix=args.identity_header_prefix,
            route_rules=args.route_rules,
            authz_transport=args.authz_transport,
            authz_health_ports=(args.authz_health_port or (9192,)) if args.authz_transport is Transport.HTTP else (),
            user_rate_limit=args.user_rate_limit,
        )
        print(json.dumps(render(topology), indent=2))
    elif args.stdout:
        sys.stdout.write(compose_yaml())
    else:
        COMPOSE_FILE.write_text(compose_yaml())
        print(f"wrote {COMPOSE_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
