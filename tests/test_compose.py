"""docker-compose.yml and the images it builds, read statically (no Docker engine needed): what a user of
`docker compose up` relies on.

The stack's promise is that the backend is reachable only through Envoy, that everything starts in an order
where each part finds what it needs, and that the images run what the test suite ran (the same locked, hashed
packages, the same Envoy).
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import json
import os
import re
import shlex
import sys
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import yaml

from stack.local import ROUTES_FILE

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
ENVOY_CONFIG = "envoy/envoy.compose.yaml"
EXPECTED_SERVICES = {"envoy", "authz", "backend", "cognito-local", "provision", "redis"}
ONE_SHOT_SERVICES = {"provision"}
PYTHON_SERVICES = EXPECTED_SERVICES - {"envoy", "redis"}
# The lock each Python image's runtime virtual environment is installed from.
IMAGE_LOCKS = {"authz": "authz.txt", "backend": "backend.txt", "cognito-local": "stack.txt", "provision": "stack.txt"}
# What each lock resolves: pyproject.toml's [project].dependencies (None) or a dependency group (`make lock`).
LOCK_SOURCES: dict[str, tuple[str | None, ...]] = {
    "authz.txt": (None,),
    "backend.txt": ("backend",),
    "stack.txt": ("stack",),
    "build.txt": ("build",),
    "dev.txt": (None, "dev"),
}
# The command the compose file's header documents for the demo user's token, run in the provision image.
TOKEN_MODULE = "stack.token"
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>\S+)$")
_LOCK_ENTRY = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>[^\s\\;]+)")
# Compose (and Dockerfile) interpolation: ${VAR}, ${VAR:-default} (unset or empty), ${VAR-default} (unset), $VAR.
_VARIABLE = re.compile(r"\$\$|\$\{(?P<braced>\w+)(?:(?P<op>:?-)(?P<default>[^}]*))?\}|\$(?P<bare>\w+)")
_LOOPBACK_PORT = re.compile(r"127\.0\.0\.1[:/](\d+)")
_PROBED_HOST = re.compile(r"(?:://|/dev/tcp/)([^/:\s'\"]+)")


# --- helpers: reading the files -------------------------------------------------------------------------------


@functools.cache
def _compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


@functools.cache
def _envoy_config() -> dict[str, Any]:
    return yaml.safe_load((REPO / ENVOY_CONFIG).read_text())


def _makefile_variable(name: str) -> str:
    match = re.search(rf"^{name}\s*[?:]?=\s*(\S+)", (REPO / "Makefile").read_text(), flags=re.MULTILINE)
    assert match, f"Makefile sets no {name}"
    return match[1]


def _lock_python_version() -> str:
    """The Python version `make lock` resolves the locks for (uv's --python-version)."""
    match = re.search(r"--python-version[ =](\S+)", (REPO / "Makefile").read_text())
    assert match, "the Makefile's lock target names no --python-version"
    return match[1]


def _interpolate(value: str, env: Mapping[str, str] | None = None) -> str:
    """A compose value with its variables replaced as compose would, from `env` (none set: every default)."""
    env = env or {}

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        name = match["braced"] or match["bare"]
        if match["op"] == ":-" and not env.get(name):
            return match["default"]
        if match["op"] == "-" and name not in env:
            return match["default"]
        return env.get(name, "")

    return _VARIABLE.sub(replace, value)


@functools.cache
def _pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def _pyproject_pins(group: str | None) -> dict[str, str]:
    """Every `name==version` of [project].dependencies (group None) or of a dependency group, its included groups
    too, by normalised package name."""
    if group is None:
        requirements: list[Any] = list(_pyproject()["project"]["dependencies"])
    else:
        requirements = list(_pyproject()["dependency-groups"][group])
    pins = {}
    for requirement in requirements:
        if isinstance(requirement, dict):
            pins.update(_pyproject_pins(requirement["include-group"]))
            continue
        match = _PIN.match(requirement.strip())
        if match:
            pins[_normalise(match["name"])] = match["version"]
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


class _Locked(NamedTuple):
    version: str
    hashes: int
    via: tuple[str, ...]


@functools.cache
def _lock(name: str) -> dict[str, _Locked]:
    """A requirements/ lock (uv's output): each package's version, its number of hashes and what it is there for."""
    entries: dict[str, _Locked] = {}
    current = None
    in_via = False
    for line in (REPO / "requirements" / name).read_text().splitlines():
        stripped = line.strip()
        entry = _LOCK_ENTRY.match(line)
        if entry:
            current = _normalise(entry["name"])
            entries[current] = _Locked(entry["version"], 0, ())
            in_via = False
        elif current is None or not stripped:
            continue
        elif stripped.startswith("--hash="):
            entries[current] = entries[current]._replace(hashes=entries[current].hashes + 1)
        elif stripped.startswith("# via"):
            in_via = True
            rest = stripped.removeprefix("# via").strip()
            if rest:
                entries[current] = entries[current]._replace(via=(*entries[current].via, rest))
        elif stripped.startswith("#") and in_via:
            entries[current] = entries[current]._replace(via=(*entries[current].via, stripped[1:].strip()))
    return entries


def _lock_top_level(name: str, group: str | None) -> dict[str, str]:
    """The packages a lock holds because pyproject.toml's dependencies (None) or that group name them."""
    source = f"{_pyproject()['project']['name']} (pyproject.toml{'' if group is None else ':' + group})"
    return {package: entry.version for package, entry in _lock(name).items() if source in entry.via}


def _environment(service: str) -> dict[str, str]:
    """A service's environment, whichever of the two compose forms (mapping or KEY=value list) it uses."""
    env = _services()[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _as_argv(value: Any) -> list[str] | None:
    if value is None:
        return None
    return shlex.split(value) if isinstance(value, str) else [str(part) for part in value]


def _command(service: str) -> list[str]:
    """The service's compose `command`, as written ([] when the image's CMD runs)."""
    return _as_argv(_services()[service].get("command")) or []


def _option(argv: list[str], flag: str) -> str:
    """The value of `flag VALUE` or `flag=VALUE` in an argv."""
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {argv}")


def _published_ports(service: str, env: Mapping[str, str] | None = None) -> list[tuple[int, int]]:
    """(host port, container port) pairs, from the short ("8080:8080") or the long (mapping) syntax, with the
    variables in them taken from `env` (none set: their defaults)."""
    pairs = []
    for port in _services()[service].get("ports") or []:
        if isinstance(port, dict):
            pairs.append((int(_interpolate(str(port["published"]), env)), int(port["target"])))
            continue
        spec = _interpolate(str(port), env).split("/")[0]  # drop a "/tcp" suffix
        parts = spec.split(":")
        container = int(parts[-1])
        host = int(parts[-2]) if len(parts) >= 2 else container
        pairs.append((host, container))
    return pairs


def _mounts(service: str) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each volume, from the short ("src:dst:ro") or the long syntax."""
    mounts = []
    for volume in _services()[service].get("volumes") or []:
        if isinstance(volume, dict):
            mounts.append((volume.get("source", ""), volume["target"], bool(volume.get("read_only", False))))
            continue
        parts = volume.split(":")
        options = parts[2].split(",") if len(parts) > 2 else []
        mounts.append((parts[0], parts[1], "ro" in options))
    return mounts


def _depends_on(service: str) -> dict[str, str]:
    """Each dependency's condition; the list form means service_started."""
    depends = _services()[service].get("depends_on") or {}
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def _build(service: str) -> dict[str, Any]:
    """A service's build section in its long form ({} when it pulls an image instead)."""
    build = _services()[service].get("build")
    if build is None:
        return {}
    return {"context": build} if isinstance(build, str) else dict(build)


def _build_args(service: str) -> dict[str, str]:
    """The build arguments compose passes, whichever of the two forms (mapping or KEY=value list) it uses."""
    args = _build(service).get("args") or {}
    if isinstance(args, list):
        args = dict(item.split("=", 1) for item in args)
    return {key: str(value) for key, value in args.items()}


def _built_services() -> dict[str, Path]:
    """Each service with a build section, and the Dockerfile it builds from."""
    built = {}
    for name in _services():
        build = _build(name)
        if build:
            built[name] = REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    return built


def _dockerfile(service: str) -> Path:
    dockerfile = _built_services().get(service)
    assert dockerfile is not None, f"{service} is not built from this repository"
    return dockerfile


def _dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction, with comments dropped and continuation lines joined."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        keyword, _, arguments = (pending + stripped).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        pending = ""
    return instructions


def _global_args(path: Path) -> dict[str, str | None]:
    """The ARGs declared before the first FROM (the ones a FROM can use), with their defaults."""
    args: dict[str, str | None] = {}
    for keyword, arguments in _dockerfile_instructions(path):
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            args[name.strip()] = default.strip() or None
    return args


def _final_stage(path: Path) -> list[tuple[str, str]]:
    instructions = _dockerfile_instructions(path)
    starts = [index for index, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, f"{path} has no FROM"
    return instructions[starts[-1] :]


def _stage_bases(path: Path) -> list[str]:
    """The external images the Dockerfile's stages start from (stage names built earlier are left out)."""
    bases, stages = [], set()
    for keyword, arguments in _dockerfile_instructions(path):
        if keyword != "FROM":
            continue
        words = [word for word in arguments.split() if not word.startswith("--")]
        if len(words) == 3 and words[1].lower() == "as":
            stages.add(words[2].lower())
        if words[0].lower() not in stages:
            bases.append(words[0])
    return bases


def _final_uid(path: Path) -> str:
    """The uid the final stage's CMD/ENTRYPOINT runs as; "0" when no USER precedes it."""
    uid = "0"
    for keyword, arguments in _final_stage(path):
        if keyword == "USER":
            uid = arguments.split(":")[0]
        if keyword in ("CMD", "ENTRYPOINT"):
            return uid
    raise AssertionError(f"{path}: the final stage has no CMD or ENTRYPOINT")


def _exec_form(arguments: str) -> list[str]:
    """A CMD/ENTRYPOINT's argv: the exec form is a JSON array, the shell form runs under /bin/sh -c."""
    if arguments.startswith("["):
        return [str(part) for part in json.loads(arguments)]
    return ["/bin/sh", "-c", arguments]


def _image_entrypoint_and_cmd(path: Path) -> tuple[list[str], list[str]]:
    entrypoint: list[str] = []
    cmd: list[str] = []
    for keyword, arguments in _final_stage(path):
        if keyword == "ENTRYPOINT":
            entrypoint, cmd = _exec_form(arguments), []  # a new ENTRYPOINT resets an inherited CMD
        elif keyword == "CMD":
            cmd = _exec_form(arguments)
    return entrypoint, cmd


def _exec_argv(argv: list[str]) -> list[str]:
    """The program an argv ends up running: for `sh -c "... && exec PROGRAM ARGS"`, PROGRAM ARGS."""
    if len(argv) >= 3 and PurePosixPath(argv[0]).name in ("sh", "bash") and argv[1] == "-c":
        for part in reversed(argv[2].split("&&")):
            words = shlex.split(part)
            if words and words[0] == "exec":
                return words[1:]
        raise AssertionError(f"the shell command execs no program: {argv[2]}")
    return argv


def _argv(service: str) -> list[str]:
    """What the service's container runs: compose's entrypoint and command over the image's, shell wrapper
    unwrapped."""
    image_entrypoint, image_cmd = _image_entrypoint_and_cmd(_dockerfile(service))
    entrypoint = _as_argv(_services()[service].get("entrypoint"))
    command = _as_argv(_services()[service].get("command"))
    if entrypoint is None:
        entrypoint, default_cmd = image_entrypoint, image_cmd
    else:
        default_cmd = []  # compose's entrypoint drops the image's CMD
    return _exec_argv(entrypoint + (default_cmd if command is None else command))


def _copies(path: Path, *, final_only: bool = False) -> list[tuple[list[str], str]]:
    """(sources, destination) of each COPY from the build context (not from another stage)."""
    instructions = _final_stage(path) if final_only else _dockerfile_instructions(path)
    copies = []
    for keyword, arguments in instructions:
        if keyword in ("COPY", "ADD") and not arguments.startswith("--from"):
            words = [word for word in arguments.split() if not word.startswith("--")]
            copies.append((words[:-1], words[-1]))
    return copies


def _context_file(path: Path, image_path: str) -> Path:
    """The build-context file a COPY puts at image_path (a file copied to that path, or into a folder above it)."""
    for sources, destination in _copies(path):
        for source in sources:
            if destination == image_path:
                return REPO / source
            if destination.endswith("/") and image_path.startswith(destination):
                inside = image_path.removeprefix(destination)
                return REPO / source / inside if source.endswith("/") else REPO / source
    raise AssertionError(f"{path}: no COPY puts anything at {image_path}")


def _installed_locks(path: Path) -> list[tuple[str, str]]:
    """(virtual environment, lock path in the image) of each `install.sh VENV LOCK` a RUN calls (its other modes,
    `install.sh --OPTION ...`, install nothing)."""
    installs = []
    for keyword, arguments in _dockerfile_instructions(path):
        if keyword != "RUN":
            continue
        for part in arguments.split("&&"):
            words = shlex.split(part)
            if words and PurePosixPath(words[0]).name == "install.sh" and not words[1].startswith("--"):
                assert PurePosixPath(words[0]) == PurePosixPath("/requirements/install.sh"), words
                installs.append((words[1], words[2]))
    return installs


def _pip_installs(path: Path) -> list[list[str]]:
    """The argv of each `pip install` a RUN calls directly (install.sh's own are read from install.sh)."""
    calls = []
    for keyword, arguments in _dockerfile_instructions(path):
        if keyword != "RUN":
            continue
        for part in arguments.split("&&"):
            words = shlex.split(part)
            for index, word in enumerate(words[:-1]):
                if PurePosixPath(word).name.startswith("pip") and words[index + 1] == "install":
                    calls.append(words[index:])
    return calls


def _image_healthcheck(path: Path) -> dict[str, Any]:
    """The final stage's HEALTHCHECK in compose's terms (test, interval, timeout, start_period, retries); {} if none."""
    check: dict[str, Any] = {}
    for keyword, arguments in _final_stage(path):
        if keyword != "HEALTHCHECK":
            continue
        if arguments.upper() == "NONE":
            check = {"test": ["NONE"]}
            continue
        match = re.fullmatch(r"(?P<options>(?:--[a-z-]+=\S+\s+)*)CMD\s+(?P<command>.+)", arguments)
        assert match, f"{path}: unreadable HEALTHCHECK {arguments}"
        command = match["command"]
        check = {"test": ["CMD", *json.loads(command)] if command.startswith("[") else ["CMD-SHELL", command]}
        for option in match["options"].split():
            key, _, value = option.removeprefix("--").partition("=")
            check[key.replace("-", "_")] = value
    return check


def _healthcheck(service: str) -> dict[str, Any]:
    """The healthcheck the service's container runs: compose's fields over its image's, as the engine merges them."""
    compose = dict(_services()[service].get("healthcheck") or {})
    if compose.pop("disable", False):
        return {"test": ["NONE"]}
    if isinstance(compose.get("test"), str):
        compose["test"] = ["CMD-SHELL", compose["test"]]
    return {**_image_healthcheck(_dockerfile(service)), **compose}


def _healthcheck_enabled(check: Mapping[str, Any]) -> bool:
    return bool(check.get("test")) and check["test"][0] != "NONE"


def _probe_text(service: str) -> str:
    return " ".join(str(part) for part in _healthcheck(service).get("test", []))


def _first_party_packages() -> set[str]:
    return {path.parent.name for path in REPO.glob("*/__init__.py")}


def _module_source(module: str) -> Path:
    path = REPO / module.replace(".", "/")
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def _copied_python_modules(dockerfile: Path, package: str) -> set[str]:
    """The `package.module` names whose source files the Dockerfile COPYs (by file name, as stack/Dockerfile does)."""
    modules = set()
    for sources, _ in _copies(dockerfile):
        for source in sources:
            path = Path(source)
            if path.parent.name == package and path.suffix == ".py":
                modules.add(package if path.stem == "__init__" else f"{package}.{path.stem}")
    return modules


def _imported_modules(source: Path) -> set[str]:
    modules: set[str] = set()
    for node in ast.walk(ast.parse(source.read_text())):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            modules.add(node.module)
    return modules


def _third_party_distributions(sources: Iterable[Path]) -> dict[str, set[str]]:
    """The distributions (normalised names) providing the non-stdlib, non-first-party imports of these files, each
    with the files importing it; an import no installed distribution provides stands for a distribution of its name."""
    providers = importlib.metadata.packages_distributions()
    local = _first_party_packages() | set(sys.stdlib_module_names)
    needed: dict[str, set[str]] = {}
    for source in sources:
        for top in {name.split(".")[0] for name in _imported_modules(source)} - local:
            for distribution in providers.get(top, [top]):
                needed.setdefault(_normalise(distribution), set()).add(str(source.relative_to(REPO)))
    return needed


def _envoy_clusters() -> dict[str, list[tuple[str, int]]]:
    clusters = {}
    for cluster in _envoy_config()["static_resources"]["clusters"]:
        addresses = []
        for locality in cluster["load_assignment"]["endpoints"]:
            for lb_endpoint in locality["lb_endpoints"]:
                socket = lb_endpoint["endpoint"]["address"]["socket_address"]
                addresses.append((socket["address"], int(socket["port_value"])))
        clusters[cluster["name"]] = addresses
    return clusters


def _envoy_routes() -> list[dict[str, Any]]:
    routes = []
    for listener in _envoy_config()["static_resources"]["listeners"]:
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                route_config = network_filter.get("typed_config", {}).get("route_config") or {}
                for virtual_host in route_config.get("virtual_hosts", []):
                    routes.extend(virtual_host.get("routes", []))
    return routes


def _envoy_listener_ports() -> set[int]:
    return {
        int(listener["address"]["socket_address"]["port_value"])
        for listener in _envoy_config()["static_resources"]["listeners"]
    }


def _envoy_admin() -> tuple[str, int]:
    admin = _envoy_config()["admin"]["address"]["socket_address"]
    return admin["address"], int(admin["port_value"])


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def _emulator_port() -> int:
    return int(_option(_argv("cognito-local"), "-p"))


def _listening_ports(service: str) -> set[int]:
    """The ports a long-running service's process binds inside its container, from its configuration."""
    if service == "envoy":
        return _envoy_listener_ports() | {_envoy_admin()[1]}
    if service == "authz":
        env = _environment("authz")
        return {_port_of(env[name]) for name in ("AUTHZ_ADDR", "AUTHZ_METRICS_ADDR") if name in env}
    if service == "backend":
        return {_port_of(_option(_argv("backend"), "--bind"))}
    if service == "cognito-local":
        return {_emulator_port()}
    if service == "redis":
        # The configuration its Dockerfile copies in.
        config = (REPO / "deploy" / "kubernetes" / "components" / "redis" / "redis.conf").read_text()
        return {int(port) for port in re.findall(r"^port (\d+)$", config, flags=re.MULTILINE)}
    raise AssertionError(f"no listening ports known for {service}")


def _networks(service: str) -> set[str]:
    """The networks a service joins, from the list or the mapping form; compose's `default` when it names none."""
    return set(_services()[service].get("networks") or ["default"])


def _network_peers(service: str) -> set[str]:
    """The other services that share at least one network with this one, and so can open connections to it."""
    return {name for name in _services() if name != service and _networks(name) & _networks(service)}


def _internal(network: str) -> bool:
    # A network declared with no options (`edge:`) reads as None.
    return bool(((_compose().get("networks") or {}).get(network) or {}).get("internal", False))


def _envoy_healthcheck_target() -> tuple[str, int]:
    """The (host, port) Envoy's healthcheck (its image's, unless compose overrides it) opens with bash's /dev/tcp."""
    match = re.search(r"/dev/tcp/([^/\s]+)/(\d+)", _probe_text("envoy"))
    assert match, f"Envoy's healthcheck opens no /dev/tcp connection: {_probe_text('envoy')}"
    return match[1], int(match[2])


def _image_reference(reference: str) -> tuple[str, str]:
    """(repository, tag) of an image reference such as python:3.11-slim-bookworm."""
    repository, _, tag = reference.rpartition(":")
    assert repository and "/" not in tag, f"{reference} names no tag"
    return repository, tag


# --- the tests ------------------------------------------------------------------------------------------------


def test_compose_defines_the_stack_services():
    """The compose file runs Envoy, authz, the backend, the Cognito emulator, the provisioning job and Redis (authz's
    shared state)."""
    assert set(_services()) == EXPECTED_SERVICES


def test_only_envoy_publishes_a_port_and_it_is_envoy_port_default_8080():
    """Envoy's container port 8080, on the host's ENVOY_PORT (default 8080), is the only way in from the host."""
    publishing = {name for name in _services() if _published_ports(name)}
    assert publishing == {"envoy"}
    assert _published_ports("envoy") == [(8080, 8080)]
    assert _published_ports("envoy", {"ENVOY_PORT": "9000"}) == [(9000, 8080)]
    for name, service in _services().items():
        assert service.get("network_mode") != "host", f"{name} would bypass Envoy on the host network"


def test_backend_urls_name_the_published_port():
    """The origins the backend hands the browser (its CORS origin, its API base) are Envoy's, whatever ENVOY_PORT is."""
    for env in ({}, {"ENVOY_PORT": "9000"}):
        [(host_port, _)] = _published_ports("envoy", env)
        for name in ("FRONTEND_URL", "BACKEND_URL"):
            url = urlsplit(_interpolate(_environment("backend")[name], env))
            assert (url.hostname, url.port) == ("localhost", host_port), f"{name} with {env}: {url.geturl()}"


def test_every_service_declares_its_networks():
    """No service falls back to compose's shared default network: each names declared networks of its own."""
    declared = set(_compose().get("networks") or {})
    for name, service in _services().items():
        assert service.get("networks"), f"{name} names no networks, so compose puts it on the shared default one"
        assert _networks(name) <= declared, f"{name} joins undeclared networks {sorted(_networks(name) - declared)}"
        assert "default" not in _networks(name), f"{name} joins the shared default network"


def test_only_envoy_shares_a_network_with_the_backend():
    """No container but Envoy can open a connection to the backend, so none can send it forged x-user-* headers."""
    assert _network_peers("backend") == {"envoy"}


def test_authz_shares_networks_only_with_envoy_the_cognito_services_and_its_state():
    """authz is reachable only by Envoy, the emulator it fetches keys from, the job that provisions the pool and its
    shared state (Redis), which in turn shares a network with authz alone."""
    assert _network_peers("authz") <= {"envoy", "cognito-local", "provision", "redis"}
    assert _network_peers("redis") == {"authz"}


def test_each_caller_shares_a_network_with_the_services_it_addresses():
    """The split still connects Envoy to its cluster hosts and authz and provision to the Cognito emulator."""
    calls: set[tuple[str, str | None]] = {
        ("envoy", host) for addresses in _envoy_clusters().values() for host, _ in addresses
    }
    calls.add(("authz", urlsplit(_environment("authz")["AUTHZ_JWKS_URL"]).hostname))
    calls.add(("provision", urlsplit(_option(_command("provision"), "--endpoint")).hostname))
    calls.add(("authz", urlsplit(_environment("authz")["AUTHZ_STATE_URL"]).hostname))
    for caller, callee in calls:
        assert callee in _network_peers(caller), f"{caller} addresses {callee} but shares no network with it"


def test_only_envoy_joins_a_network_with_a_way_out():
    """Every network but Envoy's edge is internal: only Envoy can carry the published port, no other has egress."""
    external = {name for name in _services() for network in _networks(name) if not _internal(network)}
    assert external == {"envoy"}
    assert [network for network in _networks("envoy") if not _internal(network)] == ["edge"]


def test_envoy_admin_listens_on_loopback_where_its_healthcheck_probes():
    """Envoy's admin binds 127.0.0.1:9901 in its own container: its image's healthcheck reaches it, no other container
    can."""
    assert _envoy_admin() == ("127.0.0.1", 9901)
    assert _envoy_healthcheck_target() == ("127.0.0.1", 9901)
    assert 9901 not in {container for _, container in _published_ports("envoy")}


def test_every_long_running_service_has_a_healthcheck_and_the_job_none():
    """Each long-running container runs a healthcheck (its image's, or compose's) with interval, timeout, retries and
    start period, and the one-shot job, which shares the emulator's image, runs none it could never pass."""
    for name in EXPECTED_SERVICES - ONE_SHOT_SERVICES:
        check = _healthcheck(name)
        assert _healthcheck_enabled(check), f"{name} has no healthcheck"
        test = check["test"]
        assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: malformed healthcheck test {test}"
        for key in ("interval", "timeout", "retries", "start_period"):
            assert key in check, f"{name}'s healthcheck sets no {key}"
    for name in ONE_SHOT_SERVICES:
        assert not _healthcheck_enabled(_healthcheck(name)), f"{name} runs a healthcheck"


def test_each_healthcheck_probes_its_own_service_on_loopback():
    """Each healthcheck probes, on the container's 127.0.0.1, a port that service's process listens on, so the
    networks do not affect it and it follows the service's configuration."""
    for name in EXPECTED_SERVICES - ONE_SHOT_SERVICES:
        probe = _probe_text(name)
        assert set(_PROBED_HOST.findall(probe)) == {"127.0.0.1"}, f"{name} probes elsewhere than loopback: {probe}"
        probed = {int(port) for port in _LOOPBACK_PORT.findall(probe)}
        assert probed, f"{name}'s healthcheck names no loopback port: {probe}"
        assert probed <= _listening_ports(name), f"{name} probes {probed}, listens on {_listening_ports(name)}"


def test_startup_waits_for_health_and_for_provisioning():
    """Envoy waits for a healthy authz, backend and emulator, authz and the backend for a finished provisioning,
    and provisioning for the emulator."""
    assert _depends_on("envoy") == {
        "authz": "service_healthy",
        "backend": "service_healthy",
        "cognito-local": "service_healthy",
    }
    assert _depends_on("authz")["provision"] == "service_completed_successfully"
    assert _depends_on("authz").get("cognito-local") in (None, "service_healthy")
    assert _depends_on("backend") == {"provision": "service_completed_successfully"}
    assert _depends_on("provision") == {"cognito-local": "service_healthy"}
    assert str(_services()["provision"].get("restart", "no")) == "no"


def test_every_startup_condition_can_be_met():
    """Each service waited on to be healthy runs a healthcheck, and each waited on to complete is a one-shot job that
    compose does not restart."""
    for name in _services():
        for dependency, condition in _depends_on(name).items():
            assert dependency in _services(), f"{name} waits for {dependency}, which is no service"
            if condition == "service_healthy":
                assert _healthcheck_enabled(_healthcheck(dependency)), f"{name} waits on {dependency}'s health"
            if condition == "service_completed_successfully":
                assert dependency in ONE_SHOT_SERVICES, f"{name} waits for long-running {dependency} to exit"
                assert str(_services()[dependency].get("restart", "no")) == "no"


def test_envoy_base_image_is_the_makefiles_envoy_version():
    """The compose Envoy is built on envoyproxy/envoy at the release the test suite runs (the Makefile's
    ENVOY_VERSION), by default in envoy/Dockerfile and in docker-compose.yml alike."""
    expected = ("envoyproxy/envoy", "v" + _makefile_variable("ENVOY_VERSION"))
    dockerfile = _dockerfile("envoy")
    assert _stage_bases(dockerfile) == ["${ENVOY_IMAGE}"]
    assert _image_reference(_global_args(dockerfile)["ENVOY_IMAGE"] or "") == expected
    assert _image_reference(_interpolate(_build_args("envoy")["ENVOY_IMAGE"])) == expected


def test_each_image_base_is_a_public_image_the_environment_can_replace():
    """Every Dockerfile starts from a build ARG defaulting to a tagged Docker Hub image, and compose passes that ARG
    from the environment variable of the same name with the same default."""
    for service, dockerfile in _built_services().items():
        for base in _stage_bases(dockerfile):
            match = re.fullmatch(r"\$\{(\w+)\}|\$(\w+)", base)
            assert match, f"{service}: the base {base} is not a build ARG"
            arg = match[1] or match[2]
            default = _global_args(dockerfile).get(arg)
            assert default, f"{service}: {dockerfile.relative_to(REPO)} gives {arg} no default"
            repository, tag = _image_reference(default)
            assert "." not in repository.split("/")[0] and tag != "latest", f"{service}: {default} is no pinned Hub tag"
            passed = _build_args(service).get(arg)
            assert passed is not None, f"compose passes {service} no {arg}"
            assert _interpolate(passed) == default, f"{service}: compose's default {passed} is not {default}"
            assert _interpolate(passed, {arg: "stand-in:1"}) == "stand-in:1", f"{service}: {arg} is not passed through"


def test_python_images_are_slim_and_the_python_the_locks_resolve_for():
    """Each Python image's base defaults to a slim python image of the version the hashed locks resolve for, so every
    locked wheel installs on it."""
    python = _lock_python_version()
    for service in PYTHON_SERVICES:
        dockerfile = _dockerfile(service)
        for base in _stage_bases(dockerfile):
            default = _interpolate(base, {k: v for k, v in _global_args(dockerfile).items() if v is not None})
            repository, tag = _image_reference(default)
            assert repository == "python", f"{service}: {default} is not the python image"
            assert tag.startswith(python + "-") or tag == python, f"{service}: {default} is not Python {python}"
            assert "slim" in tag.split("-"), f"{service}: {default} is not a slim image"


def test_every_image_builds_on_the_network_build_network_names():
    """Every image builds on the network BUILD_NETWORK names (default: Docker's default), so BUILD_NETWORK=none makes
    every build, not only some, run offline."""
    for service in _built_services():
        network = str(_build(service).get("network", ""))
        assert _interpolate(network) == "default", f"{service} builds on {network!r}"
        assert _interpolate(network, {"BUILD_NETWORK": "none"}) == "none", f"{service} ignores BUILD_NETWORK"


def test_every_python_image_installs_its_lock_with_hashes():
    """Each Python image's runtime environment is its own lock from requirements/, installed through install.sh with
    --require-hashes, and nothing else is installed from the index."""
    install_sh = REPO / "requirements" / "install.sh"
    assert os.access(install_sh, os.X_OK), "requirements/install.sh is not executable"
    pip_lines = [line for line in install_sh.read_text().splitlines() if re.search(r"pip\"?\s+install", line)]
    assert pip_lines, "install.sh runs no pip install"
    for line in pip_lines:
        assert "--require-hashes" in line.split() and '-r "$lock"' in line, f"install.sh: {line}"
    for service in PYTHON_SERVICES:
        dockerfile = _dockerfile(service)
        installs = _installed_locks(dockerfile)
        assert installs, f"{service}: {dockerfile.relative_to(REPO)} installs no lock"
        assert _context_file(dockerfile, "/requirements/install.sh") == install_sh
        for _, lock in installs:
            on_host = _context_file(dockerfile, lock)
            assert on_host.parent == REPO / "requirements" and on_host.is_file(), f"{service}: {lock} is no lock"
            unhashed = [name for name, entry in _lock(on_host.name).items() if entry.hashes == 0]
            assert not unhashed, f"{on_host.name} has packages without hashes: {unhashed}"
        final_venvs = {
            arguments.split()[-1]
            for keyword, arguments in _final_stage(dockerfile)
            if keyword == "COPY" and arguments.startswith("--from")
        }
        runtime = {_context_file(dockerfile, lock).name for venv, lock in installs if venv in final_venvs}
        assert runtime == {IMAGE_LOCKS[service]}, f"{service}'s final image holds {runtime}"
        for call in _pip_installs(dockerfile):
            assert "--no-index" in call and "--no-deps" in call, f"{service} installs from the index: {call}"


def test_each_lock_pins_pyprojects_packages_at_their_versions():
    """Each lock's top-level packages are exactly the pins of pyproject.toml it resolves, and every package an image's
    lock holds is at the version requirements/dev.txt, which the test suite runs, holds."""
    locks = {path.name for path in (REPO / "requirements").glob("*.txt")}
    assert locks == set(LOCK_SOURCES), f"requirements/ holds {sorted(locks)}"
    for lock, groups in LOCK_SOURCES.items():
        for group in groups:
            assert _lock_top_level(lock, group) == _pyproject_pins(group), f"{lock} disagrees with {group or 'deps'}"
    dev = _lock("dev.txt")
    for lock in set(LOCK_SOURCES) - {"dev.txt"}:
        for name, entry in _lock(lock).items():
            assert name in dev and dev[name].version == entry.version, f"{lock}: {name}=={entry.version} not dev's"


def test_cognito_emulator_is_the_stack_emulator_built_from_stack_dockerfile():
    """The compose Cognito emulator is stack/emulator.py (as `make run` runs it) from stack/Dockerfile, the image the
    provisioning job runs too, listening on all its interfaces on the port its callers use."""
    assert _dockerfile("cognito-local") == REPO / "stack" / "Dockerfile"
    assert _dockerfile("provision") == _dockerfile("cognito-local")
    argv = _argv("cognito-local")
    assert argv[:3] == ["python", "-m", "stack.emulator"], argv
    assert _option(argv, "-H") == "0.0.0.0"  # noqa: S104 - its callers reach it from other containers
    port = _emulator_port()
    assert urlsplit(_option(_command("provision"), "--endpoint")).port == port
    assert urlsplit(_environment("authz")["AUTHZ_JWKS_URL"]).port == port


def test_envoy_runs_the_compose_config_baked_into_its_image():
    """Envoy starts with envoy/envoy.compose.yaml, copied by envoy/Dockerfile to the path its -c flag names, and no
    volume covers it."""
    dockerfile = _dockerfile("envoy")
    argv = _argv("envoy")
    assert PurePosixPath(argv[0]).name == "envoy", argv
    config_path = _option(argv, "-c")
    assert config_path in {destination for _, destination in _copies(dockerfile, final_only=True)}
    assert _context_file(dockerfile, config_path) == REPO / ENVOY_CONFIG
    for _, target, _ in _mounts("envoy"):
        assert not PurePosixPath(config_path).is_relative_to(target), f"a volume at {target} hides the config"


def test_envoy_clusters_address_the_compose_services_on_their_ports():
    """Envoy's authz, backend and Cognito clusters reach those compose services on the ports they listen on."""
    authz_port = _port_of(_environment("authz")["AUTHZ_ADDR"])
    backend_port = _port_of(_option(_argv("backend"), "--bind"))
    clusters = _envoy_clusters()
    assert clusters["authz"] == [("authz", authz_port)]
    assert clusters["backend"] == [("backend", backend_port)]
    assert clusters["cognito"] == [("cognito-local", _emulator_port())]
    for name, addresses in clusters.items():
        for host, _ in addresses:
            assert host in _services(), f"cluster {name} addresses {host}, which is no compose service"


def test_pages_reach_the_cognito_emulator_through_envoy():
    """The Cognito endpoint the backend gives the pages is a path on Envoy's origin that Envoy routes to the
    emulator's root."""
    endpoint = _environment("backend")["PAGES_COGNITO_ENDPOINT"]
    assert endpoint.startswith("/"), f"{endpoint} is not a path on the pages' own origin"
    routed = [
        route["route"] for route in _envoy_routes() if "route" in route and route["match"].get("prefix") == endpoint
    ]
    assert routed, f"Envoy routes nothing under {endpoint}"
    for action in routed:
        assert _envoy_clusters()[action["cluster"]] == [("cognito-local", _emulator_port())]
        assert action.get("prefix_rewrite") == "/"


def test_envoy_listener_port_is_the_published_container_port():
    """The port Envoy publishes is the port its listener binds inside the container."""
    [(_, container_port)] = _published_ports("envoy")
    assert container_port in _envoy_listener_ports()


def test_every_image_is_built_here_and_runs_as_non_root():
    """Every service runs an image built from its Dockerfile in this repository, whose final stage runs its command
    as a numeric non-root uid that compose does not override."""
    built = _built_services()
    assert set(built) == EXPECTED_SERVICES
    for service, dockerfile in built.items():
        assert "image" not in _services()[service], f"{service} names an image as well as a build"
        assert dockerfile.is_file(), f"{service}: {dockerfile} is missing"
        uid = _final_uid(dockerfile)
        assert uid.isdigit() and int(uid) != 0, f"{service} runs as {uid!r}, not a numeric non-root uid"
        assert "user" not in _services()[service], f"{service} overrides the image's USER"


def test_provision_hands_its_env_file_to_authz_and_the_backend_through_a_shared_volume():
    """Provision writes the env file authz and the backend source, on a named volume they mount read-only, under
    their uid."""
    env_file = Path(_option(_command("provision"), "--env-file"))
    holding = [(source, target) for source, target, _ in _mounts("provision") if Path(target) == env_file.parent]
    assert len(holding) == 1, "provision writes the env file outside any volume"
    [(volume, target)] = holding
    assert volume in _compose()["volumes"], f"{volume} is not a named volume"
    for reader in ("authz", "backend"):
        assert f". {env_file} " in _command(reader)[-1], f"{reader} does not source {env_file}"
        assert (volume, target, True) in _mounts(reader), f"{reader} does not mount {volume} read-only"
        # The file is written 0600: only the same uid can read it.
        assert _final_uid(_dockerfile(reader)) == _final_uid(_dockerfile("provision"))


def test_stack_image_holds_every_module_and_package_its_entry_points_import():
    """The stack image copies each stack module the emulator, provision and token entry points import, and its lock
    installs every third-party package they import."""
    dockerfile = _dockerfile("provision")
    copied = _copied_python_modules(dockerfile, "stack")
    pending = [_option(_argv("cognito-local"), "-m"), _option(_argv("provision"), "-m"), TOKEN_MODULE]
    seen: set[str] = set()
    while pending:
        module = pending.pop()
        if module in seen:
            continue
        seen.add(module)
        assert module in copied, f"stack/Dockerfile does not copy {module}"
        imported = {name for name in _imported_modules(_module_source(module)) if name.split(".")[0] == "stack"}
        pending.extend(imported | {"stack"})
    needed = _third_party_distributions(_module_source(module) for module in seen)
    missing = {name: sorted(files) for name, files in needed.items() if name not in _lock(IMAGE_LOCKS["provision"])}
    assert not missing, f"requirements/{IMAGE_LOCKS['provision']} does not install {missing}"


def test_backend_image_holds_every_package_its_code_imports():
    """The backend image copies every first-party package its code imports, and its lock installs every third-party
    package it imports."""
    dockerfile = _dockerfile("backend")
    copied = [REPO / source for sources, _ in _copies(dockerfile, final_only=True) for source in sources]
    sources = [path for folder in copied if folder.is_dir() for path in folder.rglob("*.py")]
    assert REPO / "backend" / "app.py" in sources
    first_party = _first_party_packages()
    for source in sources:
        for name in _imported_modules(source):
            top = name.split(".")[0]
            assert top not in first_party or REPO / top in copied, f"{source} imports {name}, not copied"
    needed = _third_party_distributions(sources)
    missing = {name: sorted(files) for name, files in needed.items() if name not in _lock(IMAGE_LOCKS["backend"])}
    assert not missing, f"requirements/{IMAGE_LOCKS['backend']} does not install {missing}"


def test_authz_fetches_signing_keys_from_the_cognito_emulator_service():
    """AUTHZ_JWKS_URL points at the cognito-local service, per pool, on the port the emulator listens on."""
    url = urlsplit(_environment("authz")["AUTHZ_JWKS_URL"])
    assert url.hostname == "cognito-local"
    assert url.hostname in _services()
    assert url.port == _emulator_port()
    assert url.path == "/{pool}/.well-known/jwks.json"
    # Issuers must stay the real Cognito ones, which the emulator also puts in its tokens.
    assert "AUTHZ_ISSUER" not in _environment("authz")


def test_authz_reads_the_stacks_route_table_from_a_read_only_folder_mount():
    """AUTHZ_ROUTES names the stack's route table (stack/routes/routes.yaml, as `make run` uses it) inside a
    read-only mount of its folder: a mounted folder, unlike a mounted file, shows a file an editor replaced."""
    routes = PurePosixPath(_environment("authz")["AUTHZ_ROUTES"])
    holding = [mount for mount in _mounts("authz") if routes.is_relative_to(mount[1])]
    assert len(holding) == 1, f"no one mount holds {routes}"
    [(source, target, read_only)] = holding
    assert read_only
    assert routes.parent == PurePosixPath(target), "mount the table's folder, not the file"
    on_host = (REPO / source / routes.relative_to(target)).resolve()
    assert on_host == ROUTES_FILE and on_host.is_file()
