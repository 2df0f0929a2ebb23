"""deploy/kubernetes, rendered by kustomize and checked offline: what a user applying the base or an overlay relies on.

No cluster runs here. Each kustomization is rendered with kubectl's kustomize, every object is validated against
Kubernetes' own schemas or a vendored CRD schema (tests/deploy/manifests.py), and the parts are held to each other
and to the server: its settings parser, its route table loader, its ports, its drain, its health, its image.
"""

from __future__ import annotations

import os
import re
import threading
import tomllib
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import pytest
import yaml
from grpc_health.v1 import health_pb2

from authz.config import ConfigError, Settings
from authz.routes import load_table
from authz.server import run_server
from tests.conftest import CLIENT_ID, POOL_ID, health_status, jwks_document, wait_for
from tests.deploy import cel
from tests.deploy.manifests import (
    BASE,
    EXAMPLE,
    ISTIO_MESH_CONFIG,
    KUBERNETES,
    KUBERNETES_VERSIONS,
    OVERLAYS,
    PLACEHOLDER,
    REPO,
    SCHEMAS,
    Manifest,
    ManifestError,
    cel_rules,
    container,
    container_env,
    container_ports,
    crd_schemas,
    describe,
    find,
    find_all,
    placeholders,
    pod_spec,
    policies_for,
    port_number,
    proto_problems,
    render,
    selects,
    validate,
    with_field,
)
from tests.deploy.vendor_schemas import trimmed

AUTHZ = "cognito-ext-authz"
NAMESPACE = "auth"
# The values a user patches in, standing in for theirs.
FILLED = {"AWS_COGNITO_USER_POOLS_ID": POOL_ID, "AWS_COGNITO_CLIENT_ID": CLIENT_ID}
# What must be patched in every overlay: the settings only a user knows.
USER_PLACEHOLDERS = set(FILLED)


@pytest.fixture(scope="session")
def istio_with_redis(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's kustomization: the istio overlay with the redis component, as the component's comment says."""
    directory = tmp_path_factory.mktemp("istio-with-redis")
    root = os.path.relpath(KUBERNETES, directory)  # kustomize takes only relative paths
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources: [{root}/overlays/istio]\ncomponents: [{root}/components/redis]\n"
    )
    return directory


KUSTOMIZATIONS = {
    "base": BASE,
    "istio": OVERLAYS / "istio",
    "envoy-gateway": OVERLAYS / "envoy-gateway",
    "redis": OVERLAYS / "redis",
}


@pytest.fixture(params=[*KUSTOMIZATIONS, "istio+redis"])
def rendered(request: pytest.FixtureRequest, istio_with_redis: Path) -> list[Manifest]:
    """Each kustomization a user applies, rendered."""
    return render(KUSTOMIZATIONS.get(request.param, istio_with_redis))


def _authz(docs: list[Manifest]) -> Manifest:
    return find(docs, "Deployment", AUTHZ)


def _env(docs: list[Manifest], *, filled: bool = True) -> dict[str, str]:
    env = container_env(docs, _authz(docs), "authz")
    return {**env, **FILLED} if filled else env


def _settings(docs: list[Manifest], **overrides: str) -> Settings:
    return Settings.from_env({**_env(docs), **overrides})


def _port(addr: str) -> int:
    return int(addr.rpartition(":")[2])


# --- every object is valid -----------------------------------------------------------------------------------------


def test_every_object_validates(rendered: list[Manifest]):
    """Every object a kustomization renders is valid for its kind: Kubernetes' schema (strict) or its CRD's."""
    kinds = set()
    for doc in rendered:
        validate(doc)
        kinds.add(doc["kind"])
    assert {"Deployment", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} <= kinds


def test_the_overlays_add_their_resources():
    """Each overlay renders the base plus what it is for, and the base alone has no custom resource."""
    kinds = {name: {doc["kind"] for doc in render(path)} for name, path in KUSTOMIZATIONS.items()}
    assert not kinds["base"] & {"AuthorizationPolicy", "SecurityPolicy", "ReferenceGrant", "StatefulSet"}
    assert {"AuthorizationPolicy"} <= kinds["istio"] - kinds["base"]
    assert {"SecurityPolicy", "ReferenceGrant"} <= kinds["envoy-gateway"] - kinds["base"]
    assert {"StatefulSet"} <= kinds["redis"] - kinds["base"]
    for name in KUSTOMIZATIONS:
        assert kinds["base"] <= kinds[name], name


BROKEN: dict[str, tuple[str, str, tuple[str | int, ...], Any]] = {
    # name: (overlay, kind, path, value): one field a user could get wrong, in a copy of a rendered object
    "a misspelled probe field": ("base", "Deployment", ("spec", "template", "spec", "containers", 0, "readinesProbe"), {}),
    "an unknown field of a Service port": ("base", "Service", ("spec", "ports", 0, "appProtocoll"), "http"),
    "a string where the HPA wants a number": ("base", "HorizontalPodAutoscaler", ("spec", "minReplicas"), "2"),
    "a NetworkPolicy port that is neither number nor name": (
        "base", "NetworkPolicy", ("spec", "ingress", 0, "ports", 0, "port"), {"number": 9191},
    ),
    "an AuthorizationPolicy action Istio does not have": ("istio", "AuthorizationPolicy", ("spec", "action"), "CUSTOMER"),
    "an unknown field of the provider": ("istio", "AuthorizationPolicy", ("spec", "provider", "port"), 9191),
    "Istio's string statusOnError in Envoy Gateway": ("envoy-gateway", "SecurityPolicy", ("spec", "extAuth", "statusOnError"), "503"),
    "a misspelled backendRef field": (
        "envoy-gateway", "SecurityPolicy", ("spec", "extAuth", "grpc", "backendRefs", 0, "prot"), 9191,
    ),
    "a SecurityPolicy with both targetRef and targetRefs (a CEL rule)": (
        "envoy-gateway", "SecurityPolicy", ("spec", "targetRef"),
        {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "eg"},
    ),
    "an HTTP health check on a gRPC one (a CEL rule)": (
        "envoy-gateway", "SecurityPolicy", ("spec", "extAuth", "grpc", "backendSettings", "healthCheck", "active", "type"), "HTTP",
    ),
    "a ReferenceGrant from no kind": ("envoy-gateway", "ReferenceGrant", ("spec", "from", 0, "kind"), None),
    "a number for the StatefulSet's serviceName": ("redis", "StatefulSet", ("spec", "serviceName"), 6379),
}  # fmt: skip


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_a_broken_object_is_refused(case: str):
    """The same validators refuse a copy of a rendered object with one field wrong, so passing means something."""
    overlay, kind, path, value = BROKEN[case]
    doc = find_all(render(KUSTOMIZATIONS[overlay]), kind)[0]
    validate(doc)
    with pytest.raises(ManifestError, match=re.escape(str(path[-1]))):  # refused for that field
        validate(with_field(doc, path, value))


def test_a_kind_without_a_schema_is_refused():
    """An object of a kind with no schema here (a PodMonitor) fails validation rather than passing unchecked."""
    monitor = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PodMonitor", "metadata": {"name": AUTHZ}}
    with pytest.raises(ManifestError, match="no schema"):
        validate(monitor)


def test_the_manifests_need_kubernetes_1_30():
    """Kubernetes 1.28's schema refuses the Deployment (its preStop sleep), and the oldest version checked is 1.30."""
    deployment = _authz(render(BASE))
    with pytest.raises(kubernetes_validate.ValidationError, match="sleep"):
        kubernetes_validate.validate(deployment, "1.28", strict=True)
    assert min(KUBERNETES_VERSIONS, key=lambda version: tuple(map(int, version.split(".")))) == "1.30"


def test_every_custom_resource_has_its_cel_rules_evaluated():
    """The CRDs' CEL rules at every field our custom resources set are evaluated, and each holds."""
    for overlay, kind, at_least in (
        ("istio", "AuthorizationPolicy", 3),
        ("envoy-gateway", "SecurityPolicy", 10),
    ):
        rules = cel_rules(find(render(KUSTOMIZATIONS[overlay]), kind))
        assert len(rules) >= at_least, (kind, rules)
        assert [rule for rule in rules if rule.problem is not None] == []


def test_a_rule_outside_the_cel_subset_is_not_passed():
    """A CEL rule the offline evaluator cannot read raises, rather than counting as held."""
    with pytest.raises(cel.CelUnsupported):
        cel.evaluate("self.matches('^a$')", "a")
    assert cel.evaluate("has(self.a) ? self.a.size() > 1 : true", {"a": [1, 2]}) is True
    assert cel.evaluate("self.all(k, !k.contains('*'))", {"a*": 1}) is False


def test_each_vendored_schema_names_its_source():
    """Each vendored CRD schema says which repository, file, release and commit it was taken from."""
    assert {key[1] for key in crd_schemas()} == {"AuthorizationPolicy", "SecurityPolicy", "ReferenceGrant"}
    for schema in crd_schemas().values():
        assert re.search(r"^# Source: https://github\.com/[\w.-]+/[\w.-]+, \S+$", schema.source, re.MULTILINE)
        assert re.search(r"^# Release: \S+ \(commit [0-9a-f]{40}, \d{4}-\d{2}-\d{2}\)$", schema.source, re.MULTILINE)


def test_each_vendored_schema_is_what_the_vendoring_script_makes():
    """Each vendored CRD is exactly vendor_schemas.trimmed() of itself: nothing in it was edited by hand."""
    for path in sorted(SCHEMAS.glob("*.yaml")):
        crd = yaml.load(path.read_text(), Loader=yaml.CSafeLoader)
        (version,) = crd["spec"]["versions"]
        assert trimmed(crd, version["name"]) == crd, path.name


def test_the_example_overlay_is_ready_to_apply(tmp_path: Path):
    """deploy/kubernetes/example, a user's kustomization on an overlay, renders valid objects with no placeholder
    left, settings the server takes as they are, its own image, route table and Gateway namespace."""
    docs = render(EXAMPLE)
    for doc in docs:
        validate(doc)
        assert placeholders(doc) == {}, describe(doc)
    settings = Settings.from_env(_env(docs, filled=False))
    assert [pool.pool_id for pool in settings.pools] == ["ca-central-1_AbC123"]
    assert container(_authz(docs), "authz")["image"].startswith("registry.example.com/")
    table = tmp_path / "routes.yaml"
    table.write_text(find(docs, "ConfigMap", "cognito-ext-authz-routes")["data"]["routes.yaml"])
    assert table.read_text() == (EXAMPLE / "routes.yaml").read_text()
    load_table(table)
    policy, grant = find(docs, "SecurityPolicy", AUTHZ), find(docs, "ReferenceGrant", AUTHZ)
    assert grant["spec"]["from"][0]["namespace"] == policy["metadata"]["namespace"] != "default"


# --- the server accepts what it is given ---------------------------------------------------------------------------


def test_the_server_accepts_the_settings(rendered: list[Manifest]):
    """The rendered environment, with a user's pool and client filled in, is accepted by authz's own parser."""
    settings = _settings(rendered)
    assert settings.addr == "0.0.0.0:9191"
    assert settings.metrics_addr == "0.0.0.0:9192"
    assert settings.workers == 1
    assert settings.routes_file == "/etc/authz/routes/routes.yaml"


def test_unpatched_settings_stop_the_server_at_start(rendered: list[Manifest]):
    """Applied without the user's pool, authz refuses to start and names the setting, rather than denying everything."""
    env = _env(rendered, filled=False)
    assert {name for name, value in env.items() if value.startswith(PLACEHOLDER)} == USER_PLACEHOLDERS
    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert refused.value.variable == "AWS_COGNITO_USER_POOLS_ID"


def test_only_the_users_settings_are_left_to_patch():
    """In each gateway overlay the one placeholder left is the user's pool and client; the base (and the redis
    overlay on it) also leaves the gateway's peer, which only the user's own Envoy can fill."""
    for name, path in KUSTOMIZATIONS.items():
        left = {}
        for doc in render(path):
            left.update(
                {f"{doc['kind']}/{doc['metadata']['name']}{where}": value for where, value in placeholders(doc).items()}
            )
        settings = {
            where.rsplit(".", 1)[1] for where in left if where.startswith("ConfigMap/cognito-ext-authz-settings")
        }
        assert settings == USER_PLACEHOLDERS, (name, left)
        others = {where for where in left if not where.startswith("ConfigMap/")}
        if name in ("base", "redis"):
            assert others and all(where.startswith("NetworkPolicy/cognito-ext-authz-gateway") for where in others)
        else:
            assert others == set(), (name, others)


def test_the_route_table_loads(tmp_path: Path, rendered: list[Manifest]):
    """The ConfigMap's route table is valid for authz, and is mounted, as a directory, where AUTHZ_ROUTES points."""
    routes_file = Path(_settings(rendered).routes_file or "")
    deployment = _authz(rendered)
    (mount,) = [m for m in container(deployment, "authz")["volumeMounts"] if m["mountPath"] == str(routes_file.parent)]
    assert "subPath" not in mount, "the kubelet never updates a subPath mount: the table would never reload"
    (volume,) = [v for v in pod_spec(deployment)["volumes"] if v["name"] == mount["name"]]
    config_map = find(rendered, "ConfigMap", volume["configMap"]["name"])
    assert config_map["metadata"]["name"] == volume["configMap"]["name"]
    copy = tmp_path / routes_file.name
    copy.write_text(config_map["data"][routes_file.name])
    table = load_table(copy)
    assert table.settings_for("GET", "api.example.com", "/api/health").auth.value == "none"
    assert table.settings_for("GET", "api.example.com", "/api/me").auth.value == "required"


def test_the_image_is_this_release():
    """The image is cognito-ext-authz/authz tagged with pyproject.toml's version, and runs the gRPC server."""
    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    authz = container(_authz(render(BASE)), "authz")
    assert authz["image"] == f"cognito-ext-authz/authz:{version}"
    assert authz["command"] == ["python", "-m", "authz", "serve"]


# --- ports, probes, stopping ---------------------------------------------------------------------------------------


def test_every_port_agrees(rendered: list[Manifest]):
    """The gRPC and metrics ports are the same in the settings, the container, the probes, the Service and the
    scrape annotation, and match the image's EXPOSE."""
    deployment = _authz(rendered)
    settings = _settings(rendered)
    ports = container_ports(deployment, "authz")
    assert ports == {"grpc": _port(settings.addr), "metrics": _port(settings.metrics_addr)}
    exposed = re.search(r"^EXPOSE (.+)$", (REPO / "authz" / "Dockerfile").read_text(), re.MULTILINE)
    assert exposed and set(map(int, exposed[1].split())) == set(ports.values())
    probes = container(deployment, "authz")
    assert port_number(deployment, "authz", probes["readinessProbe"]["grpc"]["port"]) == ports["grpc"]
    assert port_number(deployment, "authz", probes["livenessProbe"]["httpGet"]["port"]) == ports["metrics"]
    assert deployment["spec"]["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    service = find(rendered, "Service", AUTHZ)
    assert selects({"matchLabels": service["spec"]["selector"]}, deployment["spec"]["template"]["metadata"]["labels"])
    by_name = {port["name"]: port for port in service["spec"]["ports"]}
    assert {name: port_number(deployment, "authz", port["targetPort"]) for name, port in by_name.items()} == ports
    assert {name: port["port"] for name, port in by_name.items()} == ports


def test_network_policies_admit_the_container_ports_and_no_more(rendered: list[Manifest]):
    """The NetworkPolicies on authz's pods admit exactly its two ports, each from a named peer, never from anyone."""
    deployment = _authz(rendered)
    admitted = set()
    for policy in policies_for(rendered, deployment):
        assert policy["spec"]["policyTypes"] == ["Ingress"]
        for rule in policy["spec"]["ingress"]:
            assert rule.get("from"), f"{policy['metadata']['name']}: a rule without peers admits every pod"
            for peer in rule["from"]:
                assert peer["namespaceSelector"]["matchLabels"] and peer["podSelector"]["matchLabels"]
            admitted |= {port_number(deployment, "authz", port["port"]) for port in rule["ports"]}
    assert admitted == set(container_ports(deployment, "authz").values())


def test_stopping_takes_less_than_the_grace_period(rendered: list[Manifest]):
    """terminationGracePeriodSeconds exceeds the preStop sleep plus authz's drain (AUTHZ_SHUTDOWN_GRACE_SECONDS)."""
    deployment = _authz(rendered)
    sleep = container(deployment, "authz")["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = _settings(rendered).shutdown_grace_seconds
    assert sleep > 0 and drain > 0
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] > sleep + drain


class _Keys:
    """A JWKS fetcher that fails (the JWKS unreachable) until released, counting its calls."""

    def __init__(self) -> None:
        self.released = threading.Event()
        self.calls = 0

    def __call__(self, url: str, timeout: float, max_bytes: int) -> bytes:
        self.calls += 1
        if not self.released.is_set():
            raise OSError("JWKS unreachable")
        return jwks_document()


def _http_status(port: int, path: str) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=3) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def unreachable_keys(tmp_path: Path) -> Iterator[tuple[Any, _Keys]]:
    """authz started with the base's settings (on free loopback ports) while its JWKS cannot be reached."""
    docs = render(BASE)
    routes = tmp_path / "routes.yaml"
    routes.write_text(find(docs, "ConfigMap", "cognito-ext-authz-routes")["data"]["routes.yaml"])
    settings = _settings(
        docs, AUTHZ_ADDR="127.0.0.1:0", AUTHZ_METRICS_ADDR="127.0.0.1:0", AUTHZ_ROUTES=str(routes),
        AUTHZ_SHUTDOWN_GRACE_SECONDS="0.5",
    )  # fmt: skip
    keys = _Keys()
    with run_server(settings, fetcher=keys) as server:
        yield server, keys


def test_liveness_holds_while_keys_cannot_be_loaded(unreachable_keys: tuple[Any, _Keys]):
    """Against the real server: while the JWKS is unreachable the liveness probe passes and readiness fails, so the
    replica is kept out of the Service rather than restarted in a loop; once keys load it is ready."""
    server, keys = unreachable_keys
    probes = container(_authz(render(BASE)), "authz")
    liveness, readiness = probes["livenessProbe"]["httpGet"], probes["readinessProbe"]["grpc"]
    assert wait_for(lambda: keys.calls >= 1)
    assert 200 <= _http_status(server.metrics_port, liveness["path"]) < 400
    assert health_status(server.port, readiness.get("service", "")) == health_pb2.HealthCheckResponse.NOT_SERVING
    assert _http_status(server.metrics_port, "/healthz") == 503  # why liveness is not /healthz
    keys.released.set()
    assert wait_for(
        lambda: health_status(server.port, readiness.get("service", "")) == health_pb2.HealthCheckResponse.SERVING
    )
    assert 200 <= _http_status(server.metrics_port, liveness["path"]) < 400


# --- running unprivileged, scaling, disruptions --------------------------------------------------------------------


def test_every_pod_runs_unprivileged(rendered: list[Manifest]):
    """Every pod runs as non-root with a read-only root filesystem, no privilege escalation, no capabilities and
    the runtime's seccomp profile, and authz as the image's own user."""
    workloads = find_all(rendered, "Deployment") + find_all(rendered, "StatefulSet")
    for workload in workloads:
        spec = pod_spec(workload)
        assert spec["securityContext"]["runAsNonRoot"] is True
        assert spec["securityContext"]["runAsUser"] > 0
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert spec["automountServiceAccountToken"] is False
        assert not {"hostNetwork", "hostPID", "hostIPC"} & set(spec)
        for item in spec["containers"] + spec.get("initContainers", []):
            context = item["securityContext"]
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            assert context.get("privileged", False) is False
    user = re.search(r"^USER (\d+):(\d+)$", (REPO / "authz" / "Dockerfile").read_text(), re.MULTILINE)
    assert user
    context = pod_spec(_authz(rendered))["securityContext"]
    assert (context["runAsUser"], context["runAsGroup"]) == (int(user[1]), int(user[2]))
    namespace = find(rendered, "Namespace", NAMESPACE)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_the_autoscaler_owns_the_replicas(rendered: list[Manifest]):
    """The HPA scales the Deployment on CPU from at least 2 replicas, the Deployment sets no count an apply would
    reset, CPU has a request to take a share of, and the PodDisruptionBudget leaves at least one replica up."""
    deployment = _authz(rendered)
    hpa = find(rendered, "HorizontalPodAutoscaler", AUTHZ)
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": AUTHZ}
    assert hpa["spec"]["minReplicas"] >= 2
    assert [metric["resource"]["name"] for metric in hpa["spec"]["metrics"]] == ["cpu"]
    assert "replicas" not in deployment["spec"]
    assert container(deployment, "authz")["resources"]["requests"]["cpu"]
    pdb = find(rendered, "PodDisruptionBudget", AUTHZ)
    assert selects(pdb["spec"]["selector"], deployment["spec"]["template"]["metadata"]["labels"])
    assert pdb["spec"]["maxUnavailable"] < hpa["spec"]["minReplicas"]


# --- Istio -----------------------------------------------------------------------------------------------------------


def _mesh_config() -> dict[str, Any]:
    return yaml.safe_load(ISTIO_MESH_CONFIG.read_text())


def test_istio_asks_the_rendered_service():
    """The AuthorizationPolicy names the mesh config's provider, whose service and port are the rendered Service's
    gRPC port, and it selects the very pods the NetworkPolicy lets in."""
    docs = render(OVERLAYS / "istio")
    policy = find(docs, "AuthorizationPolicy", AUTHZ)
    assert policy["spec"]["action"] == "CUSTOM"
    (provider,) = [
        p for p in _mesh_config()["meshConfig"]["extensionProviders"] if p["name"] == policy["spec"]["provider"]["name"]
    ]
    service = find(docs, "Service", AUTHZ)
    grpc = provider["envoyExtAuthzGrpc"]
    assert grpc["service"] == f"{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local"
    assert grpc["port"] == next(port["port"] for port in service["spec"]["ports"] if port["name"] == "grpc")
    assert grpc["failOpen"] is False
    ((peer,),) = [rule["from"] for rule in find(docs, "NetworkPolicy", "cognito-ext-authz-gateway")["spec"]["ingress"]]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": policy["metadata"]["namespace"]}
    assert peer["podSelector"] == policy["spec"]["selector"]


def test_the_mesh_config_uses_istios_field_names():
    """The extension provider's fields and value types are those of istio/api's MeshConfig proto (vendored excerpt)."""
    mesh_config = _mesh_config()
    assert set(mesh_config) == {"meshConfig"}
    assert proto_problems(mesh_config["meshConfig"], "MeshConfig") == []


@pytest.mark.parametrize(
    ("field", "value"),
    [("statusOnErrors", "503"), ("port", "9191"), ("timeout", "1 second"), ("failOpen", "false")],
)
def test_a_wrong_mesh_config_field_is_refused(field: str, value: Any):
    """A misspelled field or a value of the wrong type in the provider is found (the check cannot pass vacuously)."""
    mesh_config = _mesh_config()["meshConfig"]
    mesh_config["extensionProviders"][0]["envoyExtAuthzGrpc"][field] = value
    assert proto_problems(mesh_config, "MeshConfig") != []


def test_a_provider_of_two_kinds_is_refused():
    """An extension provider with two kinds of provider (one oneof) is found."""
    mesh_config = _mesh_config()["meshConfig"]
    mesh_config["extensionProviders"][0]["envoyExtAuthzHttp"] = {"service": "x", "port": 1}
    assert any("are one oneof" in problem for problem in proto_problems(mesh_config, "MeshConfig"))


# --- Envoy Gateway ----------------------------------------------------------------------------------------------------


def test_envoy_gateway_asks_the_rendered_service():
    """The SecurityPolicy's backendRef is the rendered Service and its gRPC port, and the ReferenceGrant in the
    Service's namespace admits exactly that reference from the policy's namespace."""
    docs = render(OVERLAYS / "envoy-gateway")
    policy = find(docs, "SecurityPolicy", AUTHZ)
    ext_auth = policy["spec"]["extAuth"]
    (ref,) = ext_auth["grpc"]["backendRefs"]
    service = find(docs, "Service", AUTHZ)
    assert (ref["kind"], ref["name"], ref["namespace"]) == ("Service", service["metadata"]["name"], NAMESPACE)
    assert ref["port"] == next(port["port"] for port in service["spec"]["ports"] if port["name"] == "grpc")
    assert ext_auth["failOpen"] is False
    assert {"authorization"} <= set(ext_auth["headersToExtAuth"])
    grant = find(docs, "ReferenceGrant", AUTHZ)
    assert grant["metadata"]["namespace"] == ref["namespace"] != policy["metadata"]["namespace"]
    assert grant["spec"]["from"] == [
        {"group": "gateway.envoyproxy.io", "kind": "SecurityPolicy", "namespace": policy["metadata"]["namespace"]}
    ]
    assert grant["spec"]["to"] == [{"group": "", "kind": "Service", "name": service["metadata"]["name"]}]


def test_envoy_gateway_proxies_are_the_peer():
    """The gateway NetworkPolicy admits Envoy Gateway's proxy pods: its controller namespace and the labels
    Envoy Gateway puts on every proxy it runs."""
    docs = render(OVERLAYS / "envoy-gateway")
    ((peer,),) = [rule["from"] for rule in find(docs, "NetworkPolicy", "cognito-ext-authz-gateway")["spec"]["ingress"]]
    assert peer["namespaceSelector"]["matchLabels"] == {"kubernetes.io/metadata.name": "envoy-gateway-system"}
    assert peer["podSelector"]["matchLabels"] == {
        "app.kubernetes.io/name": "envoy",
        "app.kubernetes.io/component": "proxy",
        "app.kubernetes.io/managed-by": "envoy-gateway",
    }


# --- Redis ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("overlay", ["redis", "istio+redis"])
def test_the_redis_overlay_points_authz_at_its_redis(overlay: str, istio_with_redis: Path):
    """AUTHZ_STATE_URL names the rendered Redis Service and port, only authz's pods may connect to it, and Redis
    persists every write (appendonly, fsync each second, RDB snapshots) to its volume."""
    docs = render(KUSTOMIZATIONS.get(overlay, istio_with_redis))
    url = urlsplit(_env(docs)["AUTHZ_STATE_URL"])
    service = find(docs, "Service", "cognito-ext-authz-redis")
    redis = find(docs, "StatefulSet", "cognito-ext-authz-redis")
    assert (url.scheme, url.hostname, url.path) == ("redis", f"{service['metadata']['name']}.{NAMESPACE}.svc", "/0")
    (port,) = service["spec"]["ports"]
    assert url.port == port["port"] == port_number(redis, "redis", port["targetPort"])
    assert selects({"matchLabels": service["spec"]["selector"]}, redis["spec"]["template"]["metadata"]["labels"])

    (policy,) = policies_for(docs, redis)
    ((peer,),) = [rule["from"] for rule in policy["spec"]["ingress"]]
    assert set(peer) == {"podSelector"}  # this namespace only
    authz_labels = _authz(docs)["spec"]["template"]["metadata"]["labels"]
    assert selects(peer["podSelector"], authz_labels)
    assert not selects(peer["podSelector"], redis["spec"]["template"]["metadata"]["labels"])
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == [url.port]

    command = container(redis, "redis")["command"]
    assert command[0] == "redis-server"
    mounts = {m["mountPath"]: m["name"] for m in container(redis, "redis")["volumeMounts"]}
    conf_dir, _, conf_name = command[1].rpartition("/")
    (volume,) = [v for v in pod_spec(redis)["volumes"] if v["name"] == mounts[conf_dir]]
    conf = find(docs, "ConfigMap", "cognito-ext-authz-redis-config")
    assert conf["metadata"]["name"] == volume["configMap"]["name"]
    directives = [line.split() for line in conf["data"][conf_name].splitlines() if line and not line.startswith("#")]
    settings = {words[0]: words[1:] for words in directives}
    assert settings["appendonly"] == ["yes"]
    assert settings["appendfsync"] == ["everysec"]
    assert settings["save"] and settings["maxmemory-policy"] == ["noeviction"]
    assert settings["port"] == [str(url.port)]
    claims = {claim["metadata"]["name"] for claim in redis["spec"]["volumeClaimTemplates"]}
    assert mounts[settings["dir"][0]] in claims
    assert Settings.from_env(_env(docs)).state_url == _env(docs)["AUTHZ_STATE_URL"]  # the server's parser takes it
