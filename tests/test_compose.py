"""docker-compose.yml, read statically (no Docker engine needed): what a user of `docker compose up` relies on.

The stack's promise is that the backend is reachable only through Envoy, that everything starts in an order
where each part finds what it needs, and that the images run what the test suite ran (same pins, same Envoy).
"""

from __future__ import annotations

import ast
import functools
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from stack.local import ROUTES_FILE

REPO = Path(__file__).resolve().parent.parent
COMPOSE_FILE = REPO / "docker-compose.yml"
ENVOY_CONFIG = "envoy/envoy.compose.yaml"
EXPECTED_SERVICES = {"envoy", "authz", "backend", "cognito-local", "provision"}
ONE_SHOT_SERVICES = {"provision"}
_PIN = re.compile(r"^(?P<name>[A-Za-z0-9][A-Za-z0-9._-]*)(?:\[[^\]]*\])?==(?P<version>\S+)$")


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


@functools.cache
def _pyproject_pins() -> dict[str, str]:
    """Every `name==version` of pyproject.toml (runtime and extras), by normalised package name."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    for extra in project.get("optional-dependencies", {}).values():
        requirements.extend(extra)
    pins = {}
    for requirement in requirements:
        match = _PIN.match(requirement.strip())
        if match:
            pins[_normalise(match["name"])] = match["version"]
    return pins


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _image_tag(service: str) -> tuple[str, str]:
    repository, _, tag = _services()[service]["image"].rpartition(":")
    return repository, tag


def _environment(service: str) -> dict[str, str]:
    """A service's environment, whichever of the two compose forms (mapping or KEY=value list) it uses."""
    env = _services()[service].get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def _command(service: str) -> list[str]:
    command = _services()[service].get("command") or []
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


def _option(argv: list[str], flag: str) -> str:
    """The value of `flag VALUE` or `flag=VALUE` in an argv."""
    for index, arg in enumerate(argv):
        if arg == flag and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith(flag + "="):
            return arg.split("=", 1)[1]
    raise AssertionError(f"{flag} not in {argv}")


def _published_ports(service: str) -> list[tuple[int, int]]:
    """(host port, container port) pairs, from the short ("8080:8080") or the long (mapping) syntax."""
    pairs = []
    for port in _services()[service].get("ports") or []:
        if isinstance(port, dict):
            pairs.append((int(port["published"]), int(port["target"])))
            continue
        spec = str(port).split("/")[0]  # drop a "/tcp" suffix
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
            mounts.append((volume["source"], volume["target"], bool(volume.get("read_only", False))))
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


def _built_services() -> dict[str, Path]:
    """Each service with a build section, and the Dockerfile it builds from."""
    built = {}
    for name, service in _services().items():
        build = service.get("build")
        if build is None:
            continue
        if isinstance(build, str):
            build = {"context": build}
        built[name] = REPO / build.get("context", ".") / build.get("dockerfile", "Dockerfile")
    return built


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


def _backend_argv() -> list[str]:
    """The backend's command: the compose override if any, else its Dockerfile's CMD."""
    if _command("backend"):
        return _command("backend")
    cmd = [arguments for keyword, arguments in _final_stage(_built_services()["backend"]) if keyword == "CMD"]
    return yaml.safe_load(cmd[-1])  # exec form: a JSON array, which YAML reads too


def _copied_python_modules(dockerfile: Path, package: str) -> set[str]:
    """The `package.module` names whose source files the Dockerfile COPYs (by file name, as stack/Dockerfile does)."""
    modules = set()
    for keyword, arguments in _dockerfile_instructions(dockerfile):
        if keyword == "COPY" and not arguments.startswith("--from"):
            for source in arguments.split()[:-1]:
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


def _port_of(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


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
    """The (host, port) Envoy's healthcheck opens with bash's /dev/tcp."""
    test = _services()["envoy"]["healthcheck"]["test"]
    match = re.search(r"/dev/tcp/([^/\s]+)/(\d+)", test if isinstance(test, str) else " ".join(test))
    assert match, f"Envoy's healthcheck opens no /dev/tcp connection: {test}"
    return match[1], int(match[2])


# --- the tests ------------------------------------------------------------------------------------------------


def test_compose_defines_the_stack_services():
    """The compose file runs Envoy, authz, the backend, the Cognito emulator and the provisioning job."""
    assert set(_services()) == EXPECTED_SERVICES


def test_only_envoy_publishes_a_port_and_it_is_8080():
    """Envoy's 8080 is the only way in from the host, so the backend is reachable only through ext_authz."""
    publishing = {name for name in _services() if _published_ports(name)}
    assert publishing == {"envoy"}
    assert _published_ports("envoy") == [(8080, 8080)]
    for name, service in _services().items():
        assert service.get("network_mode") != "host", f"{name} would bypass Envoy on the host network"


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


def test_authz_shares_networks_only_with_envoy_and_the_cognito_services():
    """authz is reachable only by Envoy, the emulator it fetches keys from and the job that provisions the pool."""
    assert _network_peers("authz") <= {"envoy", "cognito-local", "provision"}


def test_each_caller_shares_a_network_with_the_services_it_addresses():
    """The split still connects Envoy to its cluster hosts and authz and provision to the Cognito emulator."""
    calls: set[tuple[str, str | None]] = {
        ("envoy", host) for addresses in _envoy_clusters().values() for host, _ in addresses
    }
    calls.add(("authz", urlsplit(_environment("authz")["AUTHZ_JWKS_URL"]).hostname))
    calls.add(("provision", urlsplit(_option(_command("provision"), "--endpoint")).hostname))
    for caller, callee in calls:
        assert callee in _network_peers(caller), f"{caller} addresses {callee} but shares no network with it"


def test_only_envoy_joins_a_network_with_a_way_out():
    """Every network but Envoy's edge is internal: only Envoy can carry the published port, no other has egress."""
    external = {name for name in _services() for network in _networks(name) if not _internal(network)}
    assert external == {"envoy"}
    assert [network for network in _networks("envoy") if not _internal(network)] == ["edge"]


def test_envoy_admin_listens_on_loopback_where_its_healthcheck_probes():
    """Envoy's admin binds 127.0.0.1:9901 in its own container: its healthcheck reaches it, no other container can."""
    admin = _envoy_config()["admin"]["address"]["socket_address"]
    assert (admin["address"], int(admin["port_value"])) == ("127.0.0.1", 9901)
    assert _envoy_healthcheck_target() == ("127.0.0.1", 9901)
    assert 9901 not in {container for _, container in _published_ports("envoy")}


def test_every_long_running_service_has_a_healthcheck():
    """Each long-running service declares a healthcheck command with interval, timeout, retries and start period."""
    for name in EXPECTED_SERVICES - ONE_SHOT_SERVICES:
        check = _services()[name].get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert not check.get("disable", False), f"{name} disables its healthcheck"
        test = check.get("test")
        if isinstance(test, list):
            assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, f"{name}: malformed healthcheck test {test}"
        else:
            assert isinstance(test, str) and test.strip(), f"{name}: empty healthcheck test"
        for key in ("interval", "timeout", "retries", "start_period"):
            assert key in check, f"{name}'s healthcheck sets no {key}"


def test_startup_waits_for_health_and_for_provisioning():
    """Envoy waits for healthy authz and backend, authz for a finished provisioning, provisioning for the emulator."""
    assert _depends_on("envoy") == {"authz": "service_healthy", "backend": "service_healthy"}
    assert _depends_on("authz")["provision"] == "service_completed_successfully"
    assert _depends_on("authz").get("cognito-local") in (None, "service_healthy")
    assert _depends_on("provision") == {"cognito-local": "service_healthy"}
    assert str(_services()["provision"].get("restart", "no")) == "no"


def test_envoy_image_is_the_makefiles_envoy_version():
    """The compose Envoy is the release the test suite runs (the Makefile's ENVOY_VERSION)."""
    repository, tag = _image_tag("envoy")
    assert repository == "envoyproxy/envoy"
    assert tag == "v" + _makefile_variable("ENVOY_VERSION")


def test_cognito_emulator_image_is_pyprojects_moto_pin():
    """The compose Cognito emulator is the moto release the test suite runs."""
    repository, tag = _image_tag("cognito-local")
    assert repository == "motoserver/moto"
    assert tag == _pyproject_pins()["moto"]


def test_dockerfile_pins_match_pyproject():
    """Every package a Dockerfile pins is pinned to the same version in pyproject.toml."""
    for service, dockerfile in _built_services().items():
        for keyword, arguments in _dockerfile_instructions(dockerfile):
            if keyword != "RUN":
                continue
            for word in shlex.split(arguments):
                match = _PIN.match(word)
                if match:
                    name = _normalise(match["name"])
                    assert _pyproject_pins().get(name) == match["version"], f"{service}: {word} disagrees"


def test_envoy_runs_the_compose_config_mounted_read_only():
    """Envoy starts with ./envoy/envoy.compose.yaml, mounted read-only at the path its -c flag names."""
    config_path = _option(_command("envoy"), "-c")
    mounts = {target: (source, read_only) for source, target, read_only in _mounts("envoy")}
    assert config_path in mounts, f"nothing is mounted at {config_path}"
    source, read_only = mounts[config_path]
    assert Path(source) == Path("./" + ENVOY_CONFIG)
    assert read_only


def test_envoy_clusters_address_the_compose_services_on_their_ports():
    """Envoy's authz and backend clusters reach those compose services on the ports they listen on."""
    authz_port = _port_of(_environment("authz")["AUTHZ_ADDR"])
    backend_port = _port_of(_option(_backend_argv(), "--bind"))
    clusters = _envoy_clusters()
    assert clusters["authz"] == [("authz", authz_port)]
    assert clusters["backend"] == [("backend", backend_port)]
    for name, addresses in clusters.items():
        for host, _ in addresses:
            assert host in _services(), f"cluster {name} addresses {host}, which is no compose service"


def test_envoy_listener_port_is_the_published_container_port():
    """The port Envoy publishes is the port its listener binds inside the container."""
    listener_ports = {
        int(listener["address"]["socket_address"]["port_value"])
        for listener in _envoy_config()["static_resources"]["listeners"]
    }
    [(_, container_port)] = _published_ports("envoy")
    assert container_port in listener_ports


def test_built_images_use_slim_bases_and_run_as_non_root():
    """Each Dockerfile a build section names exists, starts from slim images and runs its command as a non-root uid."""
    built = _built_services()
    assert set(built) == {"authz", "backend", "provision"}
    for service, dockerfile in built.items():
        assert dockerfile.is_file(), f"{service}: {dockerfile} is missing"
        for base in _stage_bases(dockerfile):
            assert base.endswith("-slim") or "-slim-" in base, f"{service}: {base} is not a slim image"
        uid = _final_uid(dockerfile)
        assert uid.isdigit() and int(uid) != 0, f"{service} runs as {uid!r}, not a numeric non-root uid"
        assert "user" not in _services()[service], f"{service} overrides the image's USER"


def test_provision_hands_its_env_file_to_authz_through_a_shared_volume():
    """Provision writes the env file authz sources, on a named volume authz mounts read-only, under the same uid."""
    env_file = Path(_option(_command("provision"), "--env-file"))
    assert f". {env_file} " in _command("authz")[-1]
    holding = [(source, target) for source, target, _ in _mounts("provision") if Path(target) == env_file.parent]
    assert len(holding) == 1, "provision writes the env file outside any volume"
    [(volume, target)] = holding
    assert volume in _compose()["volumes"], f"{volume} is not a named volume"
    assert (volume, target, True) in _mounts("authz")
    # The file is written 0600: only the same uid can read it.
    built = _built_services()
    assert _final_uid(built["provision"]) == _final_uid(built["authz"])


def test_provision_image_holds_every_stack_module_its_code_imports():
    """The provision image copies stack/ file by file, so each stack module a copied one imports must be copied too."""
    dockerfile = _built_services()["provision"]
    copied = _copied_python_modules(dockerfile, "stack")
    assert {"stack", "stack.provision"} <= copied
    for module in copied:
        source = REPO / (module.replace(".", "/") + ("/__init__.py" if module == "stack" else ".py"))
        missing = {name for name in _imported_modules(source) if name.split(".")[0] == "stack"} - copied
        assert not missing, f"{module} imports {sorted(missing)}, which stack/Dockerfile does not copy"
        third_party = {name.split(".")[0] for name in _imported_modules(source)} - set(sys.stdlib_module_names)
        assert third_party <= {"stack", "boto3"}, f"{module} imports {sorted(third_party)}, not installed there"


def test_authz_fetches_signing_keys_from_the_cognito_emulator_service():
    """AUTHZ_JWKS_URL points at the cognito-local service, per pool, on the port moto listens on."""
    url = urlsplit(_environment("authz")["AUTHZ_JWKS_URL"])
    assert url.hostname == "cognito-local"
    assert url.hostname in _services()
    assert url.port == 5000
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


def test_docker_compose_accepts_the_file():
    """`docker compose config` (which needs no engine) finds the file valid."""
    docker = shutil.which("docker")
    if docker is None or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    result = subprocess.run(
        [docker, "compose", "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True, cwd=REPO
    )
    assert result.returncode == 0, result.stderr
