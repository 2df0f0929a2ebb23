"""The Envoy configuration generator: valid for the real Envoy, and saying what the README promises."""

from __future__ import annotations

import contextlib
import io
import json
import runpy
import subprocess
from pathlib import Path

import pytest
import yaml

import identity_headers
from authz import http as authz_http
from authz.metrics_endpoint import HEALTH_PATH
from authz.routes import route_settings
from envoy import bootstrap
from stack.local import envoy_binary

HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"


def _validate(config_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(envoy_binary()), "--mode", "validate", "-c", str(config_path), "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _manager(document: dict) -> dict:
    [listener] = document["static_resources"]["listeners"]
    [chain] = listener["filter_chains"]
    [hcm] = chain["filters"]
    assert hcm["typed_config"]["@type"] == HCM
    return hcm["typed_config"]


def _filters(document: dict) -> dict[str, dict]:
    return {item["name"]: item["typed_config"] for item in _manager(document)["http_filters"]}


def _routes(document: dict) -> dict[str, dict]:
    [virtual_host] = _manager(document)["route_config"]["virtual_hosts"]
    return {route["name"]: route for route in virtual_host["routes"]}


def _cluster(document: dict, name: str) -> dict:
    return next(cluster for cluster in document["static_resources"]["clusters"] if cluster["name"] == name)


@pytest.mark.parametrize(
    "variant",
    [
        bootstrap.local(),
        bootstrap.local(authz_ports=(9191, 9193)),
        bootstrap.local(route_rules=bootstrap.RuleSource.CONTEXT_EXTENSIONS),
        bootstrap.compose(),
        bootstrap.local(authz_transport=bootstrap.Transport.HTTP, authz_ports=(9193,), authz_health_ports=(9192,)),
        bootstrap.local(
            authz_transport=bootstrap.Transport.HTTP,
            authz_ports=(9193, 9195),
            authz_health_ports=(9192, 9194),
            identity_header_prefix="x-caller-",
        ),
        bootstrap.local(user_rate_limit=5),
        bootstrap.local(
            authz_transport=bootstrap.Transport.HTTP, authz_ports=(9193,), authz_health_ports=(9192,), user_rate_limit=5
        ),
    ],
    ids=str,
)
def test_every_variant_passes_envoy_validate(tmp_path: Path, variant: bootstrap.Topology):
    """The pinned Envoy accepts each rendered variant (`envoy --mode validate` says OK)."""
    config = tmp_path / "envoy.json"
    config.write_text(json.dumps(bootstrap.render(variant)))
    result = _validate(config)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_committed_compose_config_is_the_generated_one():
    """envoy/envoy.compose.yaml is exactly what the generator renders today (regenerate with `make envoy-config`)."""
    assert bootstrap.COMPOSE_FILE.read_text() == bootstrap.compose_yaml()


def test_committed_compose_config_passes_envoy_validate():
    """The file docker-compose mounts is valid for the pinned Envoy."""
    result = _validate(bootstrap.COMPOSE_FILE)
    assert result.returncode == 0, result.stdout + result.stderr


HTTP_MODE = bootstrap.local(
    authz_transport=bootstrap.Transport.HTTP, authz_ports=(7001, 7003), authz_health_ports=(7002, 7004)
)


@pytest.mark.parametrize("variant", [bootstrap.local(), HTTP_MODE], ids=["grpc", "http"])
def test_identity_headers_are_stripped_before_ext_authz_runs(variant: bootstrap.Topology):
    """header_mutation comes first and removes every x-user-* header (any case); then ext_authz; then the router;
    on either transport."""
    document = bootstrap.render(variant)
    assert list(_filters(document)) == [bootstrap.HEADER_MUTATION, bootstrap.EXT_AUTHZ, bootstrap.ROUTER]
    [mutation] = _filters(document)[bootstrap.HEADER_MUTATION]["mutations"]["request_mutations"]
    assert mutation["remove_on_match"]["key_matcher"] == {"prefix": "x-user-", "ignore_case": True}


def test_only_the_token_is_removed_after_ext_authz():
    """Header removal that runs after ext_authz (route and virtual host) takes the Authorization header off the
    upstream request and never an identity header the authz server set."""
    document = bootstrap.render(bootstrap.local())
    [virtual_host] = _manager(document)["route_config"]["virtual_hosts"]
    assert virtual_host["request_headers_to_remove"] == ["authorization"]
    for route in _routes(document).values():
        assert "request_headers_to_remove" not in route


def test_identity_header_prefix_follows_the_topology():
    """A topology with another identity header prefix strips that prefix."""
    document = bootstrap.render(bootstrap.local(identity_header_prefix="x-caller-"))
    [mutation] = _filters(document)[bootstrap.HEADER_MUTATION]["mutations"]["request_mutations"]
    assert mutation["remove_on_match"]["key_matcher"]["prefix"] == "x-caller-"


def test_ext_authz_fails_closed_with_503_and_a_short_timeout():
    """ext_authz talks gRPC to the authz cluster, never allows on failure, answers 503 on error, waits 1 s at most."""
    ext_authz = _filters(bootstrap.render(bootstrap.local()))[bootstrap.EXT_AUTHZ]
    assert ext_authz.get("failure_mode_allow", False) is False
    assert ext_authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert ext_authz["grpc_service"]["envoy_grpc"] == {"cluster_name": "authz"}
    assert ext_authz["grpc_service"]["timeout"] == "1s"
    assert ext_authz["transport_api_version"] == "V3"
    assert ext_authz["allowed_headers"] == {"patterns": [{"exact": "authorization"}, {"exact": "x-request-id"}]}
    assert ext_authz["validate_mutations"] is True


def test_authz_cluster_speaks_http2_and_is_health_checked_with_grpc_health():
    """The authz cluster uses HTTP/2 and grpc.health.v1 checks, one endpoint per replica."""
    cluster = _cluster(bootstrap.render(bootstrap.local(authz_ports=(7001, 7002))), "authz")
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http2_protocol_options" in options["explicit_http_config"]
    [health_check] = cluster["health_checks"]
    assert "grpc_health_check" in health_check
    # Also when idle (Envoy's default then is a minute), so a restarted server is back within about a second.
    assert health_check["interval"] == health_check["no_traffic_interval"] == "1s"
    ports = [
        endpoint["endpoint"]["address"]["socket_address"]["port_value"]
        for endpoint in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    ]
    assert ports == [7001, 7002]


@pytest.mark.parametrize("variant", [bootstrap.local(), bootstrap.compose()], ids=str)
def test_envoy_closes_idle_backend_connections_before_gunicorn_would(variant: bootstrap.Topology):
    """Envoy's idle timeout towards the backend is shorter than gunicorn's keep-alive (both stacks run the backend
    with backend/gunicorn.conf.py), so Envoy never sends a request on a connection the backend is closing."""
    cluster = _cluster(bootstrap.render(variant), "backend")
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http_protocol_options" in options["explicit_http_config"]
    envoy_idle = float(options["common_http_protocol_options"]["idle_timeout"].removesuffix("s"))
    gunicorn = runpy.run_path(str(Path(bootstrap.__file__).resolve().parents[1] / "backend" / "gunicorn.conf.py"))
    assert 0 < envoy_idle < gunicorn["keepalive"]


def test_a_check_a_replica_refused_is_retried_on_another_and_the_replica_ejected():
    """ext_authz retries connection failures (never a deny) on a different host, the retry limit is raised above
    Envoy's default of 3, and a replica that refuses a connection is ejected at once."""
    document = bootstrap.render(bootstrap.local(authz_ports=(7001, 7002)))
    retry = _filters(document)[bootstrap.EXT_AUTHZ]["grpc_service"]["retry_policy"]
    assert set(retry["retry_on"].split(",")) == {"connect-failure", "refused-stream", "reset", "unavailable"}
    # Envoy makes the back-off cap each try's timeout too: it must not cut a slow Check short.
    assert retry["retry_back_off"]["max_interval"] == "1s"
    assert [predicate["name"] for predicate in retry["retry_host_predicate"]] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]
    cluster = _cluster(document, "authz")
    assert cluster["circuit_breakers"]["thresholds"][0]["max_retries"] > 3
    assert cluster["outlier_detection"]["consecutive_local_origin_failure"] == 1
    assert cluster["outlier_detection"]["split_external_local_origin_errors"] is True


def _ext_authz_per_route(document: dict) -> dict[str, dict | None]:
    """Each route's ext_authz per-route config by route name (None: it has none, the filter's own settings apply)."""
    return {
        name: route.get("typed_per_filter_config", {}).get(bootstrap.EXT_AUTHZ)
        for name, route in _routes(document).items()
    }


@pytest.mark.parametrize("rules", list(bootstrap.RuleSource))
def test_only_health_preflight_and_pages_skip_ext_authz(rules: bootstrap.RuleSource):
    """/api/health, CORS preflights and the pages (exactly `/`, and the segment prefix `/web`) skip ext_authz,
    whichever way the rules reach the server; every other route is checked, with `/` the last, catch-all route."""
    document = bootstrap.render(bootstrap.local(route_rules=rules))
    routes = _routes(document)
    opened = {name for name, config in _ext_authz_per_route(document).items() if config and config.get("disabled")}
    assert opened == {"health", "cors-preflight", "pages", "page-assets"}
    assert routes["health"]["match"] == {"path": bootstrap.BACKEND_HEALTH_PATH}
    assert routes["pages"]["match"] == {"path": "/"}
    assert routes["page-assets"]["match"] == {"path_separated_prefix": "/web"}
    assert list(routes)[-1] == "default" and routes["default"]["match"] == {"prefix": "/"}
    preflight = routes["cors-preflight"]["match"]["headers"]
    assert {"name": ":method", "string_match": {"exact": "OPTIONS"}} in preflight
    assert {"name": "access-control-request-method", "present_match": True} in preflight


@pytest.mark.parametrize("variant", [bootstrap.local(), bootstrap.compose()], ids=["local", "compose"])
def test_the_stacks_envoy_sends_no_rules_the_route_table_decides(variant: bootstrap.Topology):
    """By default (`make run`, compose, the integration suite) Envoy sends no context_extensions: the checked routes
    are one catch-all with the filter's own settings, and the authz server's route table decides."""
    document = bootstrap.render(variant)
    per_route = {
        name: config for name, config in _ext_authz_per_route(document).items() if not name.startswith("cognito")
    }
    assert list(per_route) == ["health", "cors-preflight", "pages", "page-assets", "default"]
    assert per_route["default"] is None
    assert "context_extensions" not in json.dumps(document)


def test_in_the_emulator_topology_the_pages_reach_cognito_through_envoy_for_their_actions_only():
    """compose (the emulator topology): a POST to exactly /cognito/ (no query), in JSON, naming one of the pages'
    user-pool actions goes to the emulator with the prefix taken off, its own Host and no Check; anything else under
    /cognito is Envoy's own 403. Without an
    emulator (local, a real pool) there is no such route and no such cluster."""
    document = bootstrap.render(bootstrap.compose())
    routes = _routes(document)
    names = [name for name in routes if name.startswith("cognito")]
    assert names == [f"cognito-{action}" for action in bootstrap.PAGES_COGNITO_ACTIONS] + ["cognito-refused"]
    assert list(routes).index("cognito-refused") < list(routes).index("health")
    for action in bootstrap.PAGES_COGNITO_ACTIONS:
        route = routes[f"cognito-{action}"]
        assert route["match"] == {
            "prefix": "/cognito/",
            "headers": [
                {"name": ":method", "string_match": {"exact": "POST"}},
                # The whole :path, so no query string (where moto would read another Action) gets through.
                {"name": ":path", "string_match": {"exact": "/cognito/"}},
                {"name": "content-type", "string_match": {"exact": "application/x-amz-json-1.1"}},
                {"name": "x-amz-target", "string_match": {"exact": f"AWSCognitoIdentityProviderService.{action}"}},
                {"name": "content-encoding", "present_match": True, "invert_match": True},
            ],
        }
        # What moto reads besides the match: the target and content type written anew (a second X-Amz-Target would
        # reach it joined to the first), no User-Agent (moto takes a Region from it), no Content-Encoding.
        assert {option["header"]["key"]: option["header"]["value"] for option in route["request_headers_to_add"]} == {
            "x-amz-target": f"AWSCognitoIdentityProviderService.{action}",
            "content-type": "application/x-amz-json-1.1",
        }
        assert all(
            option["append_action"] == "OVERWRITE_IF_EXISTS_OR_ADD" for option in route["request_headers_to_add"]
        )
        assert set(route["request_headers_to_remove"]) == {"user-agent", "content-encoding"}
        assert route["route"] == {
            "cluster": bootstrap.COGNITO_CLUSTER,
            "prefix_rewrite": "/",
            "host_rewrite_literal": "cognito-local:5000",
        }
    refused = routes["cognito-refused"]
    assert refused["match"] == {"path_separated_prefix": "/cognito"}
    assert refused["direct_response"]["status"] == 403
    assert all((_ext_authz_per_route(document)[name] or {}).get("disabled") for name in names)
    assert not {"AdminCreateUser", "ListUserPools", "AdminInitiateAuth"} & set(bootstrap.PAGES_COGNITO_ACTIONS)
    [cognito] = [c for c in document["static_resources"]["clusters"] if c["name"] == bootstrap.COGNITO_CLUSTER]
    [endpoint] = cognito["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["address"]["socket_address"] == {"address": "cognito-local", "port_value": 5000}
    local = bootstrap.render(bootstrap.local())
    assert not any(name.startswith("cognito") for name in _routes(local))
    assert bootstrap.COGNITO_CLUSTER not in {c["name"] for c in local["static_resources"]["clusters"]}


def test_the_context_extensions_variant_sends_each_routes_rules():
    """RuleSource.CONTEXT_EXTENSIONS renders every row of ROUTES with its rules: the home feed auth-optional, the
    sign-out route a global sign-out, the rest of /api/ and everything else required."""
    per_route = _ext_authz_per_route(
        bootstrap.render(bootstrap.local(route_rules=bootstrap.RuleSource.CONTEXT_EXTENSIONS))
    )
    assert list(per_route) == [route.name for route in bootstrap.ROUTES]
    sent = {
        name: config["check_settings"]["context_extensions"]
        for name, config in per_route.items()
        if config and "check_settings" in config
    }
    assert sent == {
        "home-feed": {"auth": "optional"},
        "sign-out": {"auth": "required", "sign_out": "global"},
        "api": {"auth": "required"},
        "default": {"auth": "required"},
    }


def test_every_route_rule_is_one_the_authz_server_understands():
    """Each route's context_extensions parse under the authz server's own rules (a typo would deny every call)."""
    for api_route in bootstrap.ROUTES:
        if api_route.context_extensions is not None:
            route_settings(api_route.context_extensions)


def test_paths_are_normalized_and_edge_headers_hardened():
    """The connection manager normalizes paths, merges slashes, rejects escaped slashes and underscore headers, and
    treats the peer as the client (use_remote_address)."""
    manager = _manager(bootstrap.render(bootstrap.local()))
    assert manager["normalize_path"] is True
    assert manager["merge_slashes"] is True
    assert manager["path_with_escaped_slashes_action"] == "REJECT_REQUEST"
    assert manager["common_http_protocol_options"]["headers_with_underscores_action"] == "REJECT_REQUEST"
    assert manager["use_remote_address"] is True


def test_access_log_never_names_the_authorization_header_or_the_query():
    """The access log format has status, the loggable path, request id, authz outcome and the caller authz allowed,
    and no Authorization."""
    [log] = _manager(bootstrap.render(bootstrap.local()))["access_log"]
    text = json.dumps(log).lower()
    assert "authorization" not in text
    fields = log["typed_config"]["log_format"]["json_format"]
    assert fields["path"] == f"%CEL({bootstrap.LOGGABLE_PATH})%"
    # The caller comes from authz alone (the ext_authz filter's dynamic metadata), never from a request header.
    assert fields["user"] == "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:sub)%"
    assert {"status", "request_id", "authz"} <= set(fields)


def test_compose_variant_addresses_services_by_name_and_local_by_loopback():
    """compose resolves `authz` and `backend` by DNS; local uses 127.0.0.1 everywhere, the admin included."""
    compose = yaml.safe_load(bootstrap.compose_yaml())
    for name in ("authz", "backend"):
        cluster = _cluster(compose, name)
        assert cluster["type"] == "STRICT_DNS"
        [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
        assert endpoint["endpoint"]["address"]["socket_address"]["address"] == name
    local = bootstrap.render(bootstrap.local())
    addresses = {local["admin"]["address"]["socket_address"]["address"]}
    addresses |= {
        endpoint["endpoint"]["address"]["socket_address"]["address"]
        for cluster in local["static_resources"]["clusters"]
        for endpoint in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    }
    addresses.add(local["static_resources"]["listeners"][0]["address"]["socket_address"]["address"])
    assert addresses == {"127.0.0.1"}


def test_http_mode_asks_the_authz_cluster_with_the_path_as_sent_and_fails_closed():
    """Transport.HTTP: an http_service to the authz cluster with no path_prefix, the same allowed request headers,
    1 s timeout, 503 on error, never allowing on failure."""
    ext_authz = _filters(bootstrap.render(HTTP_MODE))[bootstrap.EXT_AUTHZ]
    assert "grpc_service" not in ext_authz
    service = ext_authz["http_service"]
    assert service["server_uri"]["cluster"] == "authz"
    assert service["server_uri"]["timeout"] == "1s"
    assert service.get("path_prefix", "") == ""
    # The top-level list: authorization_request.allowed_headers is deprecated, and Envoy refuses both at once.
    assert "authorization_request" not in service
    assert ext_authz["allowed_headers"] == {"patterns": [{"exact": "authorization"}, {"exact": "x-request-id"}]}
    assert ext_authz.get("failure_mode_allow", False) is False
    assert ext_authz["status_on_error"] == {"code": "ServiceUnavailable"}
    assert ext_authz["validate_mutations"] is True


@pytest.mark.parametrize("prefix", ["x-user-", "x-caller-"])
def test_http_mode_passes_exactly_the_identity_headers_up_and_the_deny_headers_down(prefix: str):
    """Upstream: every header under the topology's identity prefix (the built-in ones and any AUTHZ_CLAIM_HEADERS
    names, all of which the front of the chain strips from clients); to the client on a deny: exactly
    www-authenticate and content-type (Envoy adds status, content-length and location itself); the caller's
    metadata headers become the dynamic metadata the access log names, under gRPC's keys."""
    topology = bootstrap.local(
        authz_transport=bootstrap.Transport.HTTP, identity_header_prefix=prefix, authz_health_ports=(9192,)
    )
    document = bootstrap.render(topology)
    response = _filters(document)[bootstrap.EXT_AUTHZ]["http_service"]["authorization_response"]
    assert response["allowed_upstream_headers"] == {"patterns": [{"prefix": prefix}]}
    assert _filters(document)[bootstrap.HEADER_MUTATION]["mutations"]["request_mutations"][0]["remove_on_match"][
        "key_matcher"
    ] == {"prefix": prefix, "ignore_case": True}
    assert [pattern["exact"] for pattern in response["allowed_client_headers"]["patterns"]] == [
        "www-authenticate",
        "content-type",
    ]
    assert "allowed_client_headers_on_success" not in response
    assert "allowed_upstream_headers_to_append" not in response
    assert response["dynamic_metadata_from_headers"] == {
        "patterns": [{"exact": key} for key in identity_headers.METADATA_KEYS]
    }
    [log] = _manager(document)["access_log"]
    user = log["typed_config"]["log_format"]["json_format"]["user"]
    assert user == "%DYNAMIC_METADATA(envoy.filters.http.ext_authz:sub)%"


def test_http_mode_retries_only_checks_that_got_no_answer_and_never_cuts_one_short():
    """Only connection failures and resets are retried, on another replica; the back-off cap, which Envoy also makes
    the per-try timeout of an http_service, is the whole Check timeout."""
    retry = _filters(bootstrap.render(HTTP_MODE))[bootstrap.EXT_AUTHZ]["http_service"]["retry_policy"]
    assert set(retry["retry_on"].split(",")) == {"connect-failure", "refused-stream", "reset"}
    assert retry["retry_back_off"]["max_interval"] == "1s"
    assert [predicate["name"] for predicate in retry["retry_host_predicate"]] == [
        "envoy.retry_host_predicates.previous_hosts"
    ]


def test_http_mode_cluster_speaks_http1_and_is_health_checked_on_the_metrics_port():
    """The authz cluster speaks HTTP/1.1 with a short idle timeout and room for the largest identity in a reply, and
    each replica is checked with GET /healthz on its own metrics port, every second, also while idle."""
    cluster = _cluster(bootstrap.render(HTTP_MODE), "authz")
    options = cluster["typed_extension_protocol_options"]["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http_protocol_options" in options["explicit_http_config"]
    common = options["common_http_protocol_options"]
    assert common["idle_timeout"] == "15s"
    assert common["max_response_headers_kb"] * 1024 > identity_headers.MAX_TOKEN_BYTES * 3 // 4
    [health_check] = cluster["health_checks"]
    assert health_check["http_health_check"] == {"path": bootstrap.AUTHZ_HEALTH_PATH}
    assert health_check["interval"] == health_check["no_traffic_interval"] == "1s"
    endpoints = [endpoint["endpoint"] for endpoint in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]
    assert [
        (endpoint["address"]["socket_address"]["port_value"], endpoint["health_check_config"]["port_value"])
        for endpoint in endpoints
    ] == [(7001, 7002), (7003, 7004)]


def test_grpc_mode_is_the_default_and_its_endpoints_are_checked_on_their_own_port():
    """Without a transport the topology is gRPC, as before, with no separate health port."""
    assert bootstrap.local().authz_transport is bootstrap.Transport.GRPC
    cluster = _cluster(bootstrap.render(bootstrap.local()), "authz")
    [endpoint] = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert "health_check_config" not in endpoint["endpoint"]


def test_http_mode_needs_a_health_port_per_replica_and_the_route_table():
    """An HTTP topology without one metrics port per replica, or one that would send context_extensions (HTTP mode
    has none), is refused."""
    with pytest.raises(ValueError, match="health"):
        bootstrap.local(authz_transport=bootstrap.Transport.HTTP, authz_ports=(1, 2), authz_health_ports=(3,))
    with pytest.raises(ValueError, match="context_extensions"):
        bootstrap.local(
            authz_transport=bootstrap.Transport.HTTP,
            authz_health_ports=(9192,),
            route_rules=bootstrap.RuleSource.CONTEXT_EXTENSIONS,
        )


def test_a_per_caller_limit_runs_after_ext_authz_keyed_by_the_verified_sub():
    """With user_rate_limit, local_ratelimit sits between ext_authz and the router (ext_authz's metadata exists by
    then), enabled and enforced for every request, one bucket of N a second per distinct sub, and no bucket for
    traffic as a whole; without it there is no such filter. The compose Envoy has the stack's default limit."""
    document = bootstrap.render(bootstrap.local(user_rate_limit=7))
    names = [item["name"] for item in _manager(document)["http_filters"]]
    assert names == [bootstrap.HEADER_MUTATION, bootstrap.EXT_AUTHZ, bootstrap.LOCAL_RATE_LIMIT, bootstrap.ROUTER]
    limit = _filters(document)[bootstrap.LOCAL_RATE_LIMIT]
    everyone = {"default_value": {"numerator": 100}}  # of HUNDRED, the default denominator
    assert (limit["filter_enabled"], limit["filter_enforced"]) == (everyone, everyone)
    assert "token_bucket" not in limit and limit["always_consume_default_token_bucket"] is False
    [descriptor] = limit["descriptors"]
    assert descriptor["entries"] == [{"key": "sub"}]
    assert descriptor["token_bucket"] == {"max_tokens": 7, "tokens_per_fill": 7, "fill_interval": "1s"}
    [action] = limit["rate_limits"][0]["actions"]
    assert action["metadata"] == {
        "descriptor_key": "sub",
        "metadata_key": {"key": bootstrap.EXT_AUTHZ, "path": [{"key": "sub"}]},
    }  # source: DYNAMIC, the default
    assert bootstrap.LOCAL_RATE_LIMIT not in _filters(bootstrap.render(bootstrap.local()))
    compose = _filters(yaml.safe_load(bootstrap.COMPOSE_FILE.read_text()))[bootstrap.LOCAL_RATE_LIMIT]
    assert compose["descriptors"][0]["token_bucket"]["max_tokens"] == bootstrap.DEFAULT_USER_RATE_LIMIT
    with pytest.raises(ValueError):
        bootstrap.local(user_rate_limit=-1)


def test_the_command_line_renders_http_mode():
    """`python -m envoy.bootstrap local --authz-transport http` prints the HTTP variant, health port 9192 unless
    given."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        bootstrap.main(["local", "--authz-transport", "http", "--authz-port", "9193"])
    document = json.loads(out.getvalue())
    assert "http_service" in _filters(document)[bootstrap.EXT_AUTHZ]
    [endpoint] = _cluster(document, "authz")["load_assignment"]["endpoints"][0]["lb_endpoints"]
    assert endpoint["endpoint"]["health_check_config"] == {"port_value": 9192}


def test_http_mode_meets_the_authz_server_where_it_answers():
    """Envoy health-checks the path the authz server's metrics port serves health on, and the server names the
    headers to remove in the header Envoy reads (ext_authz_http_impl.cc: x-envoy-auth-headers-to-remove)."""
    assert bootstrap.AUTHZ_HEALTH_PATH == HEALTH_PATH
    assert authz_http.HEADERS_TO_REMOVE == "x-envoy-auth-headers-to-remove"
