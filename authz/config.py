"""Settings: the only module that reads the environment.

Everything else takes a `Settings` (or the parts of it it needs) as an explicit argument, so tests build
settings directly and nothing changes behind a caller's back.
"""

from __future__ import annotations

import enum
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import parse_qs, urlsplit

import identity_headers

# Matched with fullmatch: `$` would also accept a trailing newline.
_POOL_ID = re.compile(r"(?P<region>[a-z]{2}(?:-[a-z]+)+-\d{1,2})_[0-9A-Za-z]{1,55}")
_ADDRESS = re.compile(r"(?P<host>\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):(?P<port>\d{1,5})")

# A user pool's issuer configuration (IssuerConfigurationType, Cognito API Reference): ORIGINAL issuers have the
# format https://cognito-idp.[region].amazonaws.com/[userPoolId]; UPDATED ones (recommended, and used for multi-Region
# replication) https://issuer-cognito-idp.[region].amazonaws.com/[userPoolId], where region is the pool's primary
# Region, and "host the same JWKS content in multiple regions". Each serves the pool's keys under
# /.well-known/jwks.json (Cognito Developer Guide, federation endpoints; aws-jwt-verify 5.2.0 fetches both).
ISSUER_TEMPLATE = "https://cognito-idp.{region}.amazonaws.com/{pool}"
UPDATED_ISSUER_TEMPLATE = "https://issuer-cognito-idp.{region}.amazonaws.com/{pool}"
JWKS_PATH = "/.well-known/jwks.json"
JWKS_URL_TEMPLATE = ISSUER_TEMPLATE + JWKS_PATH
_REGION = re.compile(r"[a-z]{2}(?:-[a-z]+)+-\d{1,2}")


class LogLevel(enum.StrEnum):
    """AUTHZ_LOG_LEVEL: logging's own level names, so a member is what logging.setLevel takes."""

    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class RevocationMode(enum.StrEnum):
    """AUTHZ_REVOCATION: whether routes that do not say confirm verified access tokens with Cognito."""

    OFF = "off"
    COGNITO = "cognito"


class RevocationOnError(enum.StrEnum):
    """AUTHZ_REVOCATION_ON_ERROR: what a Check does when Cognito does not answer in time."""

    ALLOW = "allow"  # trust the verified JWT (counted, and logged as ok_unconfirmed)
    DENY = "deny"  # 503 revocation_unavailable


class IssuerFormats(enum.StrEnum):
    """AUTHZ_ISSUER_FORMATS: which of a pool's issuer formats its tokens may carry. A pool can be switched between
    them, so tokens of both are in flight for a while: both by default."""

    ORIGINAL = "original"
    UPDATED = "updated"
    BOTH = "both"


class ConfigError(ValueError):
    """A setting is missing or malformed; `variable` names the environment variable at fault."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable
        self.problem = problem


@dataclass(frozen=True)
class Pool:
    """One Cognito user pool: the issuers its tokens may carry (compared exactly) and where its keys live (the same
    keys at each URL, tried in order until one answers)."""

    pool_id: str
    region: str
    issuers: tuple[str, ...]
    jwks_urls: tuple[str, ...]

    @property
    def issuer(self) -> str:
        """The pool's first issuer: its primary Region's, in the first format accepted."""
        return self.issuers[0]

    @property
    def jwks_url(self) -> str:
        """The JWKS URL tried first."""
        return self.jwks_urls[0]


# Cognito's default refresh token lifetime: how long a sign-in session goes on minting tokens unless its refresh
# token is revoked (AUTHZ_SESSION_LIFETIME_SECONDS: the pools' own, up to 3650 days).
DEFAULT_SESSION_SECONDS = 30 * 86_400.0


@dataclass(frozen=True)
class Settings:
    pools: tuple[Pool, ...]
    client_ids: frozenset[str]
    # Loopback by default: only the Envoy in front may reach the gRPC port (README, Security), and only a scraper
    # the metrics port. A container or a pod, where Envoy comes over the network, sets its own (compose does).
    addr: str = "127.0.0.1:9191"
    metrics_addr: str = "127.0.0.1:9192"
    # The HTTP transport's port (`serve-http`, Envoy's HTTP ext_authz), loopback like the gRPC one.
    http_addr: str = "127.0.0.1:9193"
    leeway_seconds: int = 30
    cache_size: int = 100_000
    header_prefix: str = identity_headers.DEFAULT_PREFIX
    realm: str = "api"
    log_level: LogLevel = LogLevel.INFO
    # The largest token Cognito can issue for the largest identity it can give a user (identity_headers).
    max_token_bytes: int = identity_headers.MAX_TOKEN_BYTES
    jwks_ttl_seconds: float = 900.0
    jwks_cooldown_seconds: float = 10.0
    jwks_timeout_seconds: float = 3.0
    jwks_max_bytes: int = 65_536
    # Server processes sharing the authorization port (SO_REUSEPORT) under one supervisor (authz/workers.py); 1 runs
    # the server in this process alone.
    workers: int = 1
    grpc_workers: int = 16
    # Envoy's connections to the gRPC port are closed gracefully after this long (Envoy opens new ones): a call held
    # open without its request ends with its connection, and new replicas get their share of Envoy's connections.
    grpc_connection_age_seconds: float = 30.0
    shutdown_grace_seconds: float = 5.0
    # Off by default: confirming a token is a network call to Cognito for every new token and again every TTL,
    # counted against the account's GetUser quota, and needs egress to Cognito. `make run` turns it on.
    revocation: RevocationMode = RevocationMode.OFF
    revocation_ttl_seconds: float = 30.0
    revocation_on_error: RevocationOnError = RevocationOnError.ALLOW
    # Below Envoy's ext_authz timeout (1 s in envoy/bootstrap.py), so a slow Cognito is our decision, not a 503.
    revocation_timeout_seconds: float = 0.5
    revocation_cache_size: int = 100_000
    cognito_endpoint_url: str | None = None
    # Cognito's FIPS endpoints for GetUser (AWS_USE_FIPS_ENDPOINT, as the AWS SDKs read it; GovCloud has only those).
    cognito_fips: bool = False
    # The CA bundle GetUser's TLS trusts (AWS_CA_BUNDLE, as the AWS SDKs read it: a TLS-inspecting proxy's); None:
    # requests' own rules (REQUESTS_CA_BUNDLE, else certifi's).
    cognito_ca_bundle: str | None = None
    # The route table for Checks without context_extensions (authz/routes.py); None: every such route requires an
    # access token. Re-read when it changes, checked every routes_reload_seconds.
    routes_file: str | None = None
    routes_reload_seconds: float = 2.0
    # Token claims sent to the upstream as headers (AUTHZ_CLAIM_HEADERS): (claim, header name) pairs, each header
    # under header_prefix and none of the built-in ones.
    claim_headers: tuple[tuple[str, str], ...] = ()
    # The state replicas share (AUTHZ_STATE_URL, Redis or Valkey: redis://, rediss:// or unix://): the denylist,
    # sign-out routes, and GetUser's answers. None: each replica on its own, with no denylist. Kept out of repr: the
    # URL may hold a password.
    state_url: str | None = field(default=None, repr=False)
    # Every command to it is bounded by this, and a sign-out's Check waits at most this for its write in all: with
    # AUTHZ_REVOCATION_TIMEOUT_SECONDS' wait before it, still below Envoy's ext_authz timeout (1 s).
    state_timeout_seconds: float = 0.25
    # Denylist entries each replica holds in memory (about 200 bytes each); an entry beyond is not enforced there.
    state_max_entries: int = 1_000_000
    # How long a sign-in session goes on minting tokens (the pools' refresh token validity): a session's denylist
    # entry lives this long plus a day.
    session_lifetime_seconds: float = DEFAULT_SESSION_SECONDS

    def __post_init__(self) -> None:
        # Modes given by value ("cognito") become their members, so every reader can compare members with `is`.
        object.__setattr__(self, "revocation", RevocationMode(self.revocation))
        object.__setattr__(self, "revocation_on_error", RevocationOnError(self.revocation_on_error))
        object.__setattr__(self, "log_level", LogLevel(self.log_level))

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from the environment, raising ConfigError naming the first bad variable."""
        env = os.environ if environ is None else environ
        pools = _pools(env)
        header_prefix = _header_prefix(env)
        return cls(
            pools=pools,
            client_ids=frozenset(_required_list(env, "AWS_COGNITO_CLIENT_ID")),
            addr=_address(env, "AUTHZ_ADDR", cls.addr),
            metrics_addr=_address(env, "AUTHZ_METRICS_ADDR", cls.metrics_addr),
            http_addr=_address(env, "AUTHZ_HTTP_ADDR", cls.http_addr),
            leeway_seconds=_leeway(env),
            cache_size=_number(env, "AUTHZ_CACHE_SIZE", cls.cache_size, int, 0, 10_000_000),
            header_prefix=header_prefix,
            realm=_realm(env),
            log_level=_choice(env, "AUTHZ_LOG_LEVEL", cls.log_level),
            max_token_bytes=_number(env, "AUTHZ_MAX_TOKEN_BYTES", cls.max_token_bytes, int, 512, 1_048_576),
            jwks_ttl_seconds=_number(env, "AUTHZ_JWKS_TTL_SECONDS", cls.jwks_ttl_seconds, float, 1, 86_400),
            jwks_cooldown_seconds=_number(
                env, "AUTHZ_JWKS_COOLDOWN_SECONDS", cls.jwks_cooldown_seconds, float, 1, 3_600
            ),
            jwks_timeout_seconds=_number(env, "AUTHZ_JWKS_TIMEOUT_SECONDS", cls.jwks_timeout_seconds, float, 0.1, 60),
            jwks_max_bytes=_number(env, "AUTHZ_JWKS_MAX_BYTES", cls.jwks_max_bytes, int, 1_024, 10_485_760),
            workers=_number(env, "AUTHZ_WORKERS", cls.workers, int, 1, 256),
            grpc_workers=_number(env, "AUTHZ_GRPC_WORKERS", cls.grpc_workers, int, 1, 1_024),
            grpc_connection_age_seconds=_number(
                env, "AUTHZ_GRPC_CONNECTION_AGE_SECONDS", cls.grpc_connection_age_seconds, float, 1, 86_400
            ),
            shutdown_grace_seconds=_number(
                env, "AUTHZ_SHUTDOWN_GRACE_SECONDS", cls.shutdown_grace_seconds, float, 0, 300
            ),
            revocation=_choice(env, "AUTHZ_REVOCATION", cls.revocation),
            revocation_ttl_seconds=_number(env, "AUTHZ_REVOCATION_TTL", cls.revocation_ttl_seconds, float, 1, 3_600),
            revocation_on_error=_choice(env, "AUTHZ_REVOCATION_ON_ERROR", cls.revocation_on_error),
            revocation_timeout_seconds=_number(
                env, "AUTHZ_REVOCATION_TIMEOUT_SECONDS", cls.revocation_timeout_seconds, float, 0.05, 10
            ),
            revocation_cache_size=_number(
                env, "AUTHZ_REVOCATION_CACHE_SIZE", cls.revocation_cache_size, int, 1, 10_000_000
            ),
            cognito_endpoint_url=_url(env, "AWS_ENDPOINT_URL_COGNITO_IDP"),
            cognito_fips=_flag(env, "AWS_USE_FIPS_ENDPOINT"),
            cognito_ca_bundle=env.get("AWS_CA_BUNDLE", "").strip() or None,
            routes_file=env.get("AUTHZ_ROUTES", "").strip() or None,
            routes_reload_seconds=_number(
                env, "AUTHZ_ROUTES_RELOAD_SECONDS", cls.routes_reload_seconds, float, 0.1, 3_600
            ),
            claim_headers=_claim_headers(env, header_prefix),
            state_url=_state_url(env),
            state_timeout_seconds=_number(
                env, "AUTHZ_STATE_TIMEOUT_SECONDS", cls.state_timeout_seconds, float, 0.01, 0.45
            ),
            state_max_entries=_number(env, "AUTHZ_STATE_MAX_ENTRIES", cls.state_max_entries, int, 1, 100_000_000),
            session_lifetime_seconds=_session_lifetime(env),
        )


@dataclass(frozen=True)
class StateSettings:
    """What `python -m authz revoke` needs: the shared state and how long its entries live (the server's own
    settings, read alone, so an operator needs no pool configuration to revoke)."""

    state_url: str = field(repr=False)
    timeout_seconds: float
    leeway_seconds: int
    session_lifetime_seconds: float

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StateSettings:
        env = os.environ if environ is None else environ
        url = _state_url(env)
        if url is None:
            raise ConfigError("AUTHZ_STATE_URL", "is required to revoke (the shared state the replicas read)")
        return cls(
            state_url=url,
            timeout_seconds=_number(env, "AUTHZ_STATE_TIMEOUT_SECONDS", 2.0, float, 0.01, 60),
            leeway_seconds=_leeway(env),
            session_lifetime_seconds=_session_lifetime(env),
        )


def make_pool(
    pool_id: str,
    *,
    issuer: str | None = None,
    jwks_url: str | None = None,
    formats: IssuerFormats = IssuerFormats.BOTH,
    replica_regions: tuple[str, ...] = (),
) -> Pool:
    """A Pool for a Cognito pool id: the issuers of the formats asked for (ORIGINAL also in each replica Region),
    and the pool's JWKS URLs, unless overridden (issuer: the one issuer, for an emulator; jwks_url: the one URL).
    ValueError for a malformed id."""
    match = _POOL_ID.fullmatch(pool_id)
    if match is None:
        raise ValueError(f"malformed user pool id (expected REGION_ID, e.g. ca-central-1_AbC123): {pool_id!r}")
    region = match["region"]
    original = ISSUER_TEMPLATE.format(region=region, pool=pool_id)
    updated = UPDATED_ISSUER_TEMPLATE.format(region=region, pool=pool_id)
    if issuer is not None:
        issuers: tuple[str, ...] = (issuer.format(region=region, pool=pool_id),)
        urls: tuple[str, ...] = (original + JWKS_PATH,)
    else:
        replicas = tuple(
            ISSUER_TEMPLATE.format(region=replica, pool=pool_id) for replica in replica_regions if replica != region
        )
        if formats is IssuerFormats.ORIGINAL:
            issuers, urls = (original, *replicas), (original + JWKS_PATH,)
        elif formats is IssuerFormats.UPDATED:
            issuers, urls = (updated,), (updated + JWKS_PATH, original + JWKS_PATH)
        else:
            # The original URL first: it serves every pool, where the updated one answers 403 for a pool that never
            # switched (aws-jwt-verify#279); the other is the fallback, never needed while the first answers.
            issuers, urls = (original, updated, *replicas), (original + JWKS_PATH, updated + JWKS_PATH)
    if jwks_url is not None:
        urls = (jwks_url.format(region=region, pool=pool_id),)
    return Pool(pool_id=pool_id, region=region, issuers=tuple(dict.fromkeys(issuers)), jwks_urls=urls)


def _pools(env: Mapping[str, str]) -> tuple[Pool, ...]:
    ids = _required_list(env, "AWS_COGNITO_USER_POOLS_ID")
    if len(set(ids)) != len(ids):
        raise ConfigError("AWS_COGNITO_USER_POOLS_ID", "lists a pool twice")
    issuer = _template(env, "AUTHZ_ISSUER", len(ids))
    jwks_url = _template(env, "AUTHZ_JWKS_URL", len(ids))
    if jwks_url is not None and not jwks_url.startswith(("https://", "http://")):
        raise ConfigError("AUTHZ_JWKS_URL", "must be an http(s) URL")
    formats = _choice(env, "AUTHZ_ISSUER_FORMATS", IssuerFormats.BOTH)
    replicas = _regions(env, "AWS_COGNITO_REPLICA_REGIONS")
    if issuer is not None:
        # The one issuer an emulator mints: Cognito's formats and Regions do not apply to it.
        for name in ("AUTHZ_ISSUER_FORMATS", "AWS_COGNITO_REPLICA_REGIONS"):
            if env.get(name, "").strip():
                raise ConfigError(name, "has no effect with AUTHZ_ISSUER, which names the one issuer accepted")
    if replicas and formats is IssuerFormats.UPDATED:
        raise ConfigError(
            "AWS_COGNITO_REPLICA_REGIONS", "names ORIGINAL-format issuers, which AUTHZ_ISSUER_FORMATS=updated refuses"
        )
    pools = []
    for pool_id in ids:
        try:
            pools.append(
                make_pool(pool_id, issuer=issuer, jwks_url=jwks_url, formats=formats, replica_regions=replicas)
            )
        except ValueError as exc:
            raise ConfigError("AWS_COGNITO_USER_POOLS_ID", str(exc)) from None
    region = env.get("AWS_COGNITO_REGION", "").strip()
    if region:
        others = sorted({pool.region for pool in pools if pool.region != region})
        if others:
            raise ConfigError(
                "AWS_COGNITO_REGION", f"{region!r} disagrees with the region of the pool ids ({', '.join(others)})"
            )
    return tuple(pools)


def _template(env: Mapping[str, str], name: str, pool_count: int) -> str | None:
    """An issuer or JWKS URL override; with several pools it must name {pool}, or every pool would share it."""
    value = env.get(name, "").strip()
    if not value:
        return None
    if pool_count > 1 and "{pool}" not in value:
        raise ConfigError(name, "with several pools it must contain the {pool} placeholder")
    try:
        value.format(region="r", pool="p")
    except (KeyError, IndexError, ValueError):
        raise ConfigError(name, "only the {region} and {pool} placeholders are allowed") from None
    return value


def _regions(env: Mapping[str, str], name: str) -> tuple[str, ...]:
    items = [item.strip() for item in env.get(name, "").split(",")]
    regions = tuple(dict.fromkeys(item for item in items if item))
    for region in regions:
        if not _REGION.fullmatch(region):
            raise ConfigError(name, f"not an AWS Region name (e.g. us-west-2): {region!r}")
    return regions


def _required_list(env: Mapping[str, str], name: str) -> list[str]:
    items = [item.strip() for item in env.get(name, "").split(",")]
    items = [item for item in items if item]
    if not items:
        raise ConfigError(name, "is required (one or more, comma-separated)")
    return items


Number = TypeVar("Number", int, float)


def _number(
    env: Mapping[str, str], name: str, default: Number, kind: Callable[[str], Number], low: float, high: float
) -> Number:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = kind(raw)
    except ValueError:
        raise ConfigError(name, f"not a{'n integer' if kind is int else ' number'}: {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low} and {high}, got {raw}")
    return value


def _address(env: Mapping[str, str], name: str, default: str) -> str:
    raw = env.get(name, "").strip() or default
    match = _ADDRESS.fullmatch(raw)
    if match is None or not 0 <= int(match["port"]) <= 65_535:
        raise ConfigError(name, f"expected HOST:PORT, got {raw!r}")
    return raw


def _header_prefix(env: Mapping[str, str]) -> str:
    raw = env.get("AUTHZ_HEADER_PREFIX", "").strip() or Settings.header_prefix
    if not identity_headers.PREFIX_PATTERN.fullmatch(raw):
        raise ConfigError(
            "AUTHZ_HEADER_PREFIX", f"expected lowercase letters, digits and dashes ending in '-', got {raw!r}"
        )
    return raw


# An HTTP field name (RFC 9110 token characters), lower-case as every identity header is.
_HEADER_NAME = re.compile(r"[a-z0-9!#$%&'*+.^_`|~-]+")
# A claim name as a JWT writes it: anything printable but the separators of this setting.
_CLAIM_NAME = re.compile(r"[^\s,=\x00-\x1f\x7f]+")


def _claim_headers(env: Mapping[str, str], prefix: str) -> tuple[tuple[str, str], ...]:
    """AUTHZ_CLAIM_HEADERS: `claim=header` pairs, comma-separated (custom:tenant_id=x-user-tenant,...). Each header
    must start with the identity prefix, so the front proxy's strip of client-sent identity headers covers it, and
    may name none of the built-in identity headers or another pair's header."""
    name = "AUTHZ_CLAIM_HEADERS"
    built_in = set(identity_headers.header_names(prefix))
    pairs: list[tuple[str, str]] = []
    for item in env.get(name, "").split(","):
        if not item.strip():
            continue
        claim, equals, header = (part.strip() for part in item.partition("="))
        if not equals or not _CLAIM_NAME.fullmatch(claim) or not header:
            raise ConfigError(name, f"expected CLAIM=HEADER pairs separated by commas, got {item.strip()!r}")
        if not _HEADER_NAME.fullmatch(header) or not header.startswith(prefix) or header == prefix:
            raise ConfigError(name, f"{header!r} must be a lower-case header name under the identity prefix {prefix!r}")
        if header in built_in:
            raise ConfigError(name, f"{header!r} is a built-in identity header")
        if any(header == taken for _, taken in pairs):
            raise ConfigError(name, f"{header!r} is named twice")
        if any(claim == mapped for mapped, _ in pairs):
            # One header per claim keeps the claim headers within the token's payload (Envoy's header limits).
            raise ConfigError(name, f"{claim!r} is mapped twice")
        pairs.append((claim, header))
    return tuple(pairs)


def _flag(env: Mapping[str, str], name: str) -> bool:
    """true or false, as the AWS SDKs read their boolean settings (unset: false)."""
    raw = env.get(name, "").strip().lower()
    if raw not in ("", "true", "false"):
        raise ConfigError(name, f"expected true or false, got {raw!r}")
    return raw == "true"


def _leeway(env: Mapping[str, str]) -> int:
    return _number(env, "AUTHZ_LEEWAY_SECONDS", Settings.leeway_seconds, int, 0, 300)


def _session_lifetime(env: Mapping[str, str]) -> float:
    # From an hour (Cognito's shortest refresh token) to 3650 days (its longest).
    return _number(
        env, "AUTHZ_SESSION_LIFETIME_SECONDS", Settings.session_lifetime_seconds, float, 3_600, 3_650 * 86_400
    )


def _state_url(env: Mapping[str, str]) -> str | None:
    """AUTHZ_STATE_URL: a Redis URL as redis-py reads it. The error never quotes the value (it may hold a password)."""
    name = "AUTHZ_STATE_URL"
    raw = env.get(name, "").strip()
    if not raw:
        return None
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError:
        raise ConfigError(name, "not a URL (expected redis://HOST:PORT/DB, rediss://... or unix:///PATH)") from None
    if parts.scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(name, "must start with redis://, rediss:// (TLS) or unix://")
    if parts.scheme == "unix" and not parts.path:
        raise ConfigError(name, "unix:// needs a socket path (unix:///run/redis.sock)")
    if parts.scheme != "unix":
        if not parts.hostname:
            raise ConfigError(name, "names no host (expected redis://HOST:PORT/DB)")
        if port == 0:
            raise ConfigError(name, "port 0")
        if parts.path not in ("", "/") and not re.fullmatch(r"/\d{1,2}", parts.path):
            raise ConfigError(name, "the path must be a database number (redis://HOST:PORT/0)")
    # redis-py lets a URL's query override the client's settings: only TLS ones may, never the timeouts that bound a
    # Check (AUTHZ_STATE_TIMEOUT_SECONDS) or the retries that would multiply them.
    for option in parse_qs(parts.query, keep_blank_values=True):
        if not option.startswith("ssl_"):
            raise ConfigError(name, f"the URL may set only TLS options (ssl_...) in its query, not {option!r}")
    return raw


def _realm(env: Mapping[str, str]) -> str:
    raw = env.get("AUTHZ_REALM", "").strip() or Settings.realm
    if not re.fullmatch(r"[A-Za-z0-9 ._:/-]{1,64}", raw):
        raise ConfigError("AUTHZ_REALM", "expected up to 64 letters, digits, spaces or ._:/-")
    return raw


def _url(env: Mapping[str, str], name: str) -> str | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    if not re.fullmatch(r"https?://[^\s/?#]+/?", raw):
        raise ConfigError(name, f"expected an http(s) URL with no path, got {raw!r}")
    return raw


Mode = TypeVar("Mode", bound=enum.StrEnum)


def _choice(env: Mapping[str, str], name: str, default: Mode) -> Mode:
    """One of the default's enum members, matched without regard to case."""
    raw = env.get(name, "").strip() or default.value
    for member in type(default):
        if raw.lower() == member.value.lower():
            return member
    raise ConfigError(name, f"expected one of {', '.join(member.value for member in type(default))}, got {raw!r}")
