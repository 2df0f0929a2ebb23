"""The Envoy configurations `make bench` compares, all answering from an Envoy direct_response (no backend).

- none:            no authentication at all (Envoy's own cost)
- jwt_authn:       Envoy's native jwt_authn with the same JWKS inline (local_jwks), its verified-token cache on
- jwt_authn_nocache: the same with the cache off
- ext_authz:       the ext_authz filter exactly as the stack configures it (envoy/bootstrap.py), pointed at an
                   authz server: ours, or bench/floor.py's constant-reply server on the same grpcio stack
- ext_authz_http:  the same filter in Envoy's HTTP mode, as the stack configures it for `python -m authz serve-http`
                   (Transport.HTTP: HTTP/1.1, health-checked with GET /healthz on authz_health_port), pointed at ours
                   or bench/http_floor.py's constant-reply server on the same granian

Same listener, same route, same connection manager settings everywhere, so the filters are the only difference.
"""

from __future__ import annotations

import betterproto2
from envoy_data_plane.envoy.config.bootstrap.v3 import Admin, Bootstrap, BootstrapStaticResources
from envoy_data_plane.envoy.config.core.v3 import DataSource
from envoy_data_plane.envoy.config.listener.v3 import Filter, FilterChain, Listener
from envoy_data_plane.envoy.config.route.v3 import (
    DirectResponseAction,
    Route,
    RouteConfiguration,
    RouteMatch,
    VirtualHost,
)
from envoy_data_plane.envoy.extensions.filters.http.ext_authz.v3 import CheckSettings, ExtAuthzPerRoute
from envoy_data_plane.envoy.extensions.filters.http.jwt_authn.v3 import (
    JwtAuthentication,
    JwtCacheConfig,
    JwtProvider,
    JwtRequirement,
    RequirementRule,
)
from envoy_data_plane.envoy.extensions.filters.http.router.v3 import Router
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
    HttpFilter,
)
from envoy_data_plane.google.protobuf import Any

from envoy import bootstrap
from envoy.bootstrap import HostPort, Topology, Transport

VARIANTS = ("none", "jwt_authn", "jwt_authn_nocache", "ext_authz", "ext_authz_http")
JWT_AUTHN = "envoy.filters.http.jwt_authn"
PROVIDER = "cognito"


def render(
    variant: str,
    *,
    port: int,
    admin_port: int,
    jwks: str = "",
    issuer: str = "",
    authz_port: int | None = None,
    authz_health_port: int | None = None,
) -> dict:
    """The bootstrap for one variant as the document Envoy reads (ext_authz_http also needs authz_health_port, where
    Envoy health-checks the server)."""
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    filters = []
    clusters = []
    if variant.startswith("jwt_authn"):
        filters.append(
            HttpFilter(name=JWT_AUTHN, typed_config=Any.pack(_jwt_authn(jwks, issuer, variant == "jwt_authn")))
        )
    if variant.startswith("ext_authz"):
        if authz_port is None:
            raise ValueError(f"{variant} needs authz_port")
        http = variant == "ext_authz_http"
        if http and authz_health_port is None:
            raise ValueError("ext_authz_http needs authz_health_port")
        transport = Transport.HTTP if http else Transport.GRPC
        topology = Topology(
            listener=HostPort("127.0.0.1", port),
            admin=HostPort("127.0.0.1", admin_port),
            authz=(HostPort("127.0.0.1", authz_port),),
            backend=HostPort("127.0.0.1", 1),
            authz_transport=transport,
            authz_health_ports=(authz_health_port,) if http and authz_health_port is not None else (),
        )
        filters.append(
            HttpFilter(name=bootstrap.EXT_AUTHZ, typed_config=Any.pack(bootstrap.ext_authz(transport=transport)))
        )
        clusters.append(bootstrap.authz_cluster(topology))
    filters.append(HttpFilter(name=bootstrap.ROUTER, typed_config=Any.pack(Router())))
    manager = HttpConnectionManager(stat_prefix="bench", route_config=_routes(variant), http_filters=filters)
    document = Bootstrap(
        admin=Admin(address=bootstrap.address(HostPort("127.0.0.1", admin_port))),
        static_resources=BootstrapStaticResources(
            listeners=[
                Listener(
                    name="bench",
                    address=bootstrap.address(HostPort("127.0.0.1", port)),
                    filter_chains=[
                        FilterChain(
                            filters=[
                                Filter(
                                    name="envoy.filters.network.http_connection_manager",
                                    typed_config=Any.pack(manager),
                                )
                            ]
                        )
                    ],
                )
            ],
            clusters=clusters,
        ),
    )
    return document.to_dict(casing=betterproto2.Casing.SNAKE)


def _jwt_authn(jwks: str, issuer: str, cache: bool) -> JwtAuthentication:
    provider = JwtProvider(
        issuer=issuer,
        local_jwks=DataSource(inline_string=jwks),
        # As the stack's Envoy drops it for ours (envoy/bootstrap.py): the upstream never gets the token.
        forward=False,
        jwt_cache_config=JwtCacheConfig(jwt_cache_size=100_000) if cache else None,
    )
    return JwtAuthentication(
        providers={PROVIDER: provider},
        rules=[RequirementRule(match=RouteMatch(prefix="/"), requires=JwtRequirement(provider_name=PROVIDER))],
    )


def _routes(variant: str) -> RouteConfiguration:
    per_filter = {}
    # The gRPC variant's route asks for a valid access token; HTTP mode sends no context_extensions, and an authz
    # server without a route table demands the same by default.
    if variant == "ext_authz":
        per_filter[bootstrap.EXT_AUTHZ] = Any.pack(
            ExtAuthzPerRoute(check_settings=CheckSettings(context_extensions={"auth": "required"}))
        )
    return RouteConfiguration(
        name="bench",
        virtual_hosts=[
            VirtualHost(
                name="bench",
                domains=["*"],
                routes=[
                    Route(
                        match=RouteMatch(prefix="/"),
                        direct_response=DirectResponseAction(status=200, body=DataSource(inline_string="ok")),
                        typed_per_filter_config=per_filter,
                    )
                ],
            )
        ],
    )
