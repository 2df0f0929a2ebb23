"""Settings.from_env: what a valid environment yields, and which variable each bad one is blamed on.

Every test passes its own dict; os.environ is never read or changed.
"""

from __future__ import annotations

from typing import Any

import pytest

from authz.config import ConfigError, Pool, Settings, StateSettings, make_pool

POOL = "ca-central-1_AbC123"
OTHER_POOL = "us-east-1_XyZ789"
CLIENT = "abc"


def env(**overrides: str) -> dict[str, str]:
    """The minimal valid environment, with overrides (an empty string leaves a variable unset-like)."""
    values = {"AWS_COGNITO_USER_POOLS_ID": POOL, "AWS_COGNITO_CLIENT_ID": CLIENT}
    values.update(overrides)
    return values


def config_error(environ: dict[str, str]) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(environ)
    return caught.value


# --------------------------------------------------------------------------------------------- valid


def test_minimal_environment_yields_the_cognito_pool_and_defaults() -> None:
    """A pool id and a client id alone give the pool's Cognito issuers in both formats (ORIGINAL, then UPDATED) and
    its JWKS URLs (the ORIGINAL one first), and every default."""
    settings = Settings.from_env(env())

    assert settings.pools == (
        Pool(
            pool_id=POOL,
            region="ca-central-1",
            issuers=(
                "https://cognito-idp.ca-central-1.amazonaws.com/ca-central-1_AbC123",
                "https://issuer-cognito-idp.ca-central-1.amazonaws.com/ca-central-1_AbC123",
            ),
            jwks_urls=(
                "https://cognito-idp.ca-central-1.amazonaws.com/ca-central-1_AbC123/.well-known/jwks.json",
                "https://issuer-cognito-idp.ca-central-1.amazonaws.com/ca-central-1_AbC123/.well-known/jwks.json",
            ),
        ),
    )
    assert settings.client_ids == frozenset({"abc"})
    assert settings.addr == "127.0.0.1:9191"
    assert settings.metrics_addr == "127.0.0.1:9192"
    assert settings.header_prefix == "x-user-"
    assert settings.leeway_seconds == 30
    assert settings.cache_size == 100_000
    assert settings.realm == "api"
    assert settings.log_level == "INFO"
    assert settings.max_token_bytes == 131_072
    assert settings.jwks_ttl_seconds == 900.0
    assert settings.jwks_cooldown_seconds == 10.0
    assert settings.jwks_timeout_seconds == 3.0
    assert settings.jwks_max_bytes == 65_536
    assert settings.grpc_workers == 16
    assert settings.shutdown_grace_seconds == 5.0


def test_each_pool_carries_the_issuer_of_its_own_region() -> None:
    """Each pool's issuer is derived from its own id, so pools in different regions coexist."""
    settings = Settings.from_env(env(AWS_COGNITO_USER_POOLS_ID=f"{POOL},{OTHER_POOL}"))
    issuers = {pool.issuer: pool for pool in settings.pools}

    assert issuers["https://cognito-idp.ca-central-1.amazonaws.com/ca-central-1_AbC123"].pool_id == POOL
    assert issuers["https://cognito-idp.us-east-1.amazonaws.com/us-east-1_XyZ789"].pool_id == OTHER_POOL


def test_several_pools_and_clients_are_split_on_commas_and_trimmed() -> None:
    """Comma-separated pools and clients, with stray spaces and empty items, are each taken in order."""
    settings = Settings.from_env(
        env(AWS_COGNITO_USER_POOLS_ID=f" {POOL} , {OTHER_POOL} ,", AWS_COGNITO_CLIENT_ID=" abc, def ,, ghi ")
    )

    assert [(pool.pool_id, pool.region) for pool in settings.pools] == [
        (POOL, "ca-central-1"),
        (OTHER_POOL, "us-east-1"),
    ]
    assert settings.pools[1].issuer == "https://cognito-idp.us-east-1.amazonaws.com/us-east-1_XyZ789"
    assert settings.client_ids == frozenset({"abc", "def", "ghi"})


@pytest.mark.parametrize("pool_id", ["us-gov-west-1_aB3", "ap-southeast-2_" + "a" * 55, "eu-west-1_0"])
def test_pool_ids_of_any_region_shape_are_accepted(pool_id: str) -> None:
    """Pool ids of multi-part regions and of the longest allowed id are accepted, their region taken from the id."""
    settings = Settings.from_env(env(AWS_COGNITO_USER_POOLS_ID=pool_id))
    assert settings.pools[0].region == pool_id.split("_")[0]


@pytest.mark.parametrize("region", ["ca-central-1", " ca-central-1 "])
def test_region_agreeing_with_the_pools_is_accepted(region: str) -> None:
    """AWS_COGNITO_REGION may be given as long as it is the pools' own region."""
    settings = Settings.from_env(env(AWS_COGNITO_REGION=region))
    assert settings.pools[0].region == "ca-central-1"


def test_jwks_url_template_is_filled_for_each_pool() -> None:
    """An AUTHZ_JWKS_URL with {region} and {pool} gives each pool its own URL."""
    settings = Settings.from_env(
        env(
            AWS_COGNITO_USER_POOLS_ID=f"{POOL},{OTHER_POOL}",
            AUTHZ_JWKS_URL="http://127.0.0.1:9229/{region}/{pool}/.well-known/jwks.json",
        )
    )
    assert [pool.jwks_url for pool in settings.pools] == [
        "http://127.0.0.1:9229/ca-central-1/ca-central-1_AbC123/.well-known/jwks.json",
        "http://127.0.0.1:9229/us-east-1/us-east-1_XyZ789/.well-known/jwks.json",
    ]


def test_plain_jwks_url_is_used_as_is_for_a_single_pool() -> None:
    """With one pool, AUTHZ_JWKS_URL may be a plain URL with no placeholders."""
    settings = Settings.from_env(env(AUTHZ_JWKS_URL="https://keys.example.com/jwks.json"))
    assert settings.pools[0].jwks_url == "https://keys.example.com/jwks.json"
    assert settings.pools[0].issuer == "https://cognito-idp.ca-central-1.amazonaws.com/ca-central-1_AbC123"


def test_issuer_override_is_filled_for_each_pool() -> None:
    """AUTHZ_ISSUER replaces the Cognito issuer each pool's tokens must carry."""
    settings = Settings.from_env(
        env(AWS_COGNITO_USER_POOLS_ID=f"{POOL},{OTHER_POOL}", AUTHZ_ISSUER="http://localhost:9229/{pool}")
    )
    assert [pool.issuer for pool in settings.pools] == [
        "http://localhost:9229/ca-central-1_AbC123",
        "http://localhost:9229/us-east-1_XyZ789",
    ]


def test_numbers_addresses_and_names_are_read_from_the_environment() -> None:
    """Each tunable, given in range (with stray spaces), is read as its type."""
    settings = Settings.from_env(
        env(
            AUTHZ_ADDR="127.0.0.1:0",
            AUTHZ_METRICS_ADDR="[::1]:9300",
            AUTHZ_LEEWAY_SECONDS=" 0 ",
            AUTHZ_CACHE_SIZE="0",
            AUTHZ_HEADER_PREFIX="x-auth-0-",
            AUTHZ_REALM="feed api",
            AUTHZ_LOG_LEVEL="debug",
            AUTHZ_MAX_TOKEN_BYTES="512",
            AUTHZ_JWKS_TTL_SECONDS="1.5",
            AUTHZ_JWKS_COOLDOWN_SECONDS="1",
            AUTHZ_JWKS_TIMEOUT_SECONDS="0.1",
            AUTHZ_JWKS_MAX_BYTES="10485760",
            AUTHZ_GRPC_WORKERS="1024",
            AUTHZ_SHUTDOWN_GRACE_SECONDS="300",
        )
    )
    assert settings.addr == "127.0.0.1:0"
    assert settings.metrics_addr == "[::1]:9300"
    assert settings.leeway_seconds == 0
    assert settings.cache_size == 0
    assert settings.header_prefix == "x-auth-0-"
    assert settings.realm == "feed api"
    assert settings.log_level == "DEBUG"
    assert settings.max_token_bytes == 512
    assert settings.jwks_ttl_seconds == 1.5
    assert settings.jwks_cooldown_seconds == 1.0
    assert settings.jwks_timeout_seconds == 0.1
    assert settings.jwks_max_bytes == 10_485_760
    assert settings.grpc_workers == 1_024
    assert settings.shutdown_grace_seconds == 300.0


def test_blank_optional_variables_take_their_defaults() -> None:
    """An optional variable set to blanks counts as unset."""
    settings = Settings.from_env(env(AUTHZ_ADDR=" ", AUTHZ_CACHE_SIZE="", AUTHZ_LOG_LEVEL="  ", AUTHZ_JWKS_URL=" "))
    assert settings.addr == "127.0.0.1:9191"
    assert settings.cache_size == 100_000
    assert settings.log_level == "INFO"
    assert settings.pools[0].jwks_url.startswith("https://cognito-idp.ca-central-1.amazonaws.com/")


# --------------------------------------------------------------------------------------------- invalid


@pytest.mark.parametrize("pools", [None, "", " ", " , ", ",,"])
def test_missing_or_empty_pool_list_is_blamed_on_the_pool_variable(pools: str | None) -> None:
    """No pool id at all is a ConfigError naming AWS_COGNITO_USER_POOLS_ID."""
    environ = env()
    if pools is None:
        del environ["AWS_COGNITO_USER_POOLS_ID"]
    else:
        environ["AWS_COGNITO_USER_POOLS_ID"] = pools
    assert config_error(environ).variable == "AWS_COGNITO_USER_POOLS_ID"


@pytest.mark.parametrize(
    "pool_id",
    [
        "us-east-1",
        "AbC123",
        "us-east-1_",
        "us-east-1_bad!",
        "US-EAST-1_AbC123",
        "us-east_AbC123",
        "us-east-1_" + "a" * 56,
        "us-east-1_Ab C",
        "us-east-1_AbC/../x",
    ],
)
def test_malformed_pool_id_is_blamed_on_the_pool_variable(pool_id: str) -> None:
    """A pool id that is not REGION_ID is a ConfigError naming AWS_COGNITO_USER_POOLS_ID."""
    error = config_error(env(AWS_COGNITO_USER_POOLS_ID=f"{POOL},{pool_id}"))
    assert error.variable == "AWS_COGNITO_USER_POOLS_ID"


def test_duplicate_pool_is_blamed_on_the_pool_variable() -> None:
    """The same pool listed twice (spaces aside) is a ConfigError naming AWS_COGNITO_USER_POOLS_ID."""
    error = config_error(env(AWS_COGNITO_USER_POOLS_ID=f"{POOL}, {OTHER_POOL} ,{POOL}"))
    assert error.variable == "AWS_COGNITO_USER_POOLS_ID"


@pytest.mark.parametrize("pools", [POOL, f"{POOL},{OTHER_POOL}"])
def test_region_disagreeing_with_a_pool_is_blamed_on_the_region_variable(pools: str) -> None:
    """AWS_COGNITO_REGION naming another region than any pool's is a ConfigError naming AWS_COGNITO_REGION."""
    error = config_error(env(AWS_COGNITO_USER_POOLS_ID=pools, AWS_COGNITO_REGION="us-east-1"))
    assert error.variable == "AWS_COGNITO_REGION"


@pytest.mark.parametrize("clients", [None, "", " , "])
def test_missing_client_id_is_blamed_on_the_client_variable(clients: str | None) -> None:
    """No client id is a ConfigError naming AWS_COGNITO_CLIENT_ID."""
    environ = env()
    if clients is None:
        del environ["AWS_COGNITO_CLIENT_ID"]
    else:
        environ["AWS_COGNITO_CLIENT_ID"] = clients
    assert config_error(environ).variable == "AWS_COGNITO_CLIENT_ID"


@pytest.mark.parametrize("variable", ["AUTHZ_JWKS_URL", "AUTHZ_ISSUER"])
def test_override_without_pool_placeholder_for_several_pools_is_rejected(variable: str) -> None:
    """With several pools, an override lacking {pool} (so shared by all of them) is a ConfigError naming it."""
    error = config_error(
        env(AWS_COGNITO_USER_POOLS_ID=f"{POOL},{OTHER_POOL}", **{variable: "https://keys.example.com/{region}/jwks"})
    )
    assert error.variable == variable


@pytest.mark.parametrize("url", ["ftp://keys.example.com/jwks.json", "file:///etc/jwks.json", "keys.example.com/jwks"])
def test_jwks_url_that_is_not_http_is_rejected(url: str) -> None:
    """An AUTHZ_JWKS_URL that is not an http(s) URL is a ConfigError naming AUTHZ_JWKS_URL."""
    assert config_error(env(AUTHZ_JWKS_URL=url)).variable == "AUTHZ_JWKS_URL"


@pytest.mark.parametrize("variable", ["AUTHZ_JWKS_URL", "AUTHZ_ISSUER"])
@pytest.mark.parametrize(
    "template", ["https://x.example.com/{pool}/{tenant}", "https://x.example.com/{0}", "https://x.example.com/{pool"]
)
def test_unknown_or_broken_placeholder_is_rejected(variable: str, template: str) -> None:
    """A placeholder other than {region} and {pool}, or an unbalanced brace, is a ConfigError naming the variable."""
    assert config_error(env(**{variable: template})).variable == variable


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHZ_CACHE_SIZE", "10k"),
        ("AUTHZ_CACHE_SIZE", "1.5"),
        ("AUTHZ_LEEWAY_SECONDS", "thirty"),
        ("AUTHZ_GRPC_WORKERS", "0x10"),
        ("AUTHZ_JWKS_TTL_SECONDS", "15m"),
        ("AUTHZ_JWKS_TIMEOUT_SECONDS", "3s"),
    ],
)
def test_non_numeric_value_is_blamed_on_its_variable(variable: str, value: str) -> None:
    """A number variable that does not parse as its type is a ConfigError naming it."""
    assert config_error(env(**{variable: value})).variable == variable


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHZ_LEEWAY_SECONDS", "-1"),
        ("AUTHZ_LEEWAY_SECONDS", "301"),
        ("AUTHZ_CACHE_SIZE", "-1"),
        ("AUTHZ_CACHE_SIZE", "10000001"),
        ("AUTHZ_MAX_TOKEN_BYTES", "511"),
        ("AUTHZ_MAX_TOKEN_BYTES", "1048577"),
        ("AUTHZ_JWKS_TTL_SECONDS", "0.5"),
        ("AUTHZ_JWKS_TTL_SECONDS", "86401"),
        ("AUTHZ_JWKS_TTL_SECONDS", "nan"),
        ("AUTHZ_JWKS_COOLDOWN_SECONDS", "-0.1"),
        ("AUTHZ_JWKS_COOLDOWN_SECONDS", "0"),  # no cooldown would let unknown-kid floods hammer the JWKS
        ("AUTHZ_JWKS_COOLDOWN_SECONDS", "inf"),
        ("AUTHZ_JWKS_TIMEOUT_SECONDS", "0"),
        ("AUTHZ_JWKS_TIMEOUT_SECONDS", "61"),
        ("AUTHZ_JWKS_MAX_BYTES", "1023"),
        ("AUTHZ_JWKS_MAX_BYTES", "10485761"),
        ("AUTHZ_GRPC_WORKERS", "0"),
        ("AUTHZ_GRPC_WORKERS", "1025"),
        ("AUTHZ_SHUTDOWN_GRACE_SECONDS", "301"),
    ],
)
def test_out_of_range_number_is_blamed_on_its_variable(variable: str, value: str) -> None:
    """A number outside its allowed range (NaN and infinity included) is a ConfigError naming it."""
    assert config_error(env(**{variable: value})).variable == variable


@pytest.mark.parametrize("variable", ["AUTHZ_ADDR", "AUTHZ_METRICS_ADDR"])
@pytest.mark.parametrize("value", ["9191", "host:99999", "host:", ":9191", "host:port", "::1:9191", "http://host:9191"])
def test_bad_listen_address_is_blamed_on_its_variable(variable: str, value: str) -> None:
    """A listen address that is not HOST:PORT with a port up to 65535 is a ConfigError naming it."""
    assert config_error(env(**{variable: value})).variable == variable


@pytest.mark.parametrize("prefix", ["X-User", "X-User-", "x_user-", "x-user", "-user-", "x user-"])
def test_bad_header_prefix_is_blamed_on_the_prefix_variable(prefix: str) -> None:
    """A header prefix that is not lowercase letters, digits and dashes ending in '-' is a ConfigError naming it."""
    assert config_error(env(AUTHZ_HEADER_PREFIX=prefix)).variable == "AUTHZ_HEADER_PREFIX"


def test_claim_headers_map_claims_to_headers_under_the_identity_prefix() -> None:
    """AUTHZ_CLAIM_HEADERS: claim=header pairs in order, spaces around them ignored, under the configured prefix."""
    settings = Settings.from_env(env(AUTHZ_CLAIM_HEADERS=" custom:tenant_id=x-user-tenant , custom:plan=x-user-plan,"))
    assert settings.claim_headers == (("custom:tenant_id", "x-user-tenant"), ("custom:plan", "x-user-plan"))
    other = Settings.from_env(env(AUTHZ_HEADER_PREFIX="x-caller-", AUTHZ_CLAIM_HEADERS="custom:plan=x-caller-plan"))
    assert other.claim_headers == (("custom:plan", "x-caller-plan"),)
    assert Settings.from_env(env()).claim_headers == ()


@pytest.mark.parametrize(
    "value",
    [
        "custom:plan=x-plan",  # outside the prefix: the front proxy would not strip a client's copy
        "custom:plan=x-user-",
        "custom:plan=X-User-Plan",
        "custom:plan=x-user-sub",  # a built-in one
        "custom:plan=x-user-principal",
        "custom:plan=x-user-plan,custom:tier=x-user-plan",
        "custom:plan=x-user-plan,custom:plan=x-user-tier",  # one header per claim (Envoy's header limits)
        "custom:plan",
        "=x-user-plan",
        "custom:plan=",
        "custom plan=x-user-plan",
        "custom:plan=x-user-pl an",
    ],
)
def test_a_claim_header_that_could_be_forged_or_collide_is_a_configuration_error(value: str) -> None:
    """A mapped header outside the identity prefix, a built-in or repeated one, or a malformed pair: ConfigError
    naming AUTHZ_CLAIM_HEADERS (exit 2)."""
    assert config_error(env(AUTHZ_CLAIM_HEADERS=value)).variable == "AUTHZ_CLAIM_HEADERS"


@pytest.mark.parametrize("level", ["TRACE", "verbose", "CRITICAL", "10"])
def test_bad_log_level_is_blamed_on_the_log_level_variable(level: str) -> None:
    """A log level other than DEBUG, INFO, WARNING or ERROR is a ConfigError naming AUTHZ_LOG_LEVEL."""
    assert config_error(env(AUTHZ_LOG_LEVEL=level)).variable == "AUTHZ_LOG_LEVEL"


@pytest.mark.parametrize("realm", ['api"', "a" * 65, "api\\x"])
def test_bad_realm_is_blamed_on_the_realm_variable(realm: str) -> None:
    """A realm that could not sit safely in a WWW-Authenticate header is a ConfigError naming AUTHZ_REALM."""
    assert config_error(env(AUTHZ_REALM=realm)).variable == "AUTHZ_REALM"


def test_config_error_message_names_the_variable() -> None:
    """The ConfigError's message starts with the variable at fault, so an operator sees what to fix."""
    error = config_error(env(AUTHZ_CACHE_SIZE="10k"))
    assert str(error).startswith("AUTHZ_CACHE_SIZE: ")
    assert isinstance(error, ValueError)


@pytest.mark.parametrize("pool_id", [f"{POOL}\n", f"\n{POOL}", f"{POOL} x"])
def test_make_pool_rejects_a_pool_id_with_anything_around_it(pool_id: str) -> None:
    """make_pool takes the whole string as the pool id, so a trailing newline or extra text is rejected."""
    with pytest.raises(ValueError, match="malformed user pool id"):
        make_pool(pool_id)


# ------------------------------------------------------------------------------------------ revocation


def revocation_settings(settings: Settings) -> tuple[Any, ...]:
    """Mode, TTL, error policy, timeout, cache size and Cognito endpoint, in that order."""
    return (
        settings.revocation,
        settings.revocation_ttl_seconds,
        settings.revocation_on_error,
        settings.revocation_timeout_seconds,
        settings.revocation_cache_size,
        settings.cognito_endpoint_url,
    )


def test_revocation_settings_default_to_off_allow_and_no_endpoint():
    """Without the variables revocation is off, 30 s TTL, allow on error, 0.5 s timeout, 100k cache, real Cognito."""
    settings = Settings.from_env(env())
    assert revocation_settings(settings) == ("off", 30.0, "allow", 0.5, 100_000, None)


def test_revocation_settings_are_read_from_the_environment():
    """Each variable sets its setting; off/cognito and allow/deny are matched without regard to case."""
    settings = Settings.from_env(
        env(
            AUTHZ_REVOCATION=" COGNITO ",
            AUTHZ_REVOCATION_TTL="120",
            AUTHZ_REVOCATION_ON_ERROR="Deny",
            AUTHZ_REVOCATION_TIMEOUT_SECONDS="0.25",
            AUTHZ_REVOCATION_CACHE_SIZE="5",
            AWS_ENDPOINT_URL_COGNITO_IDP="http://localhost:9229",
        )
    )
    assert revocation_settings(settings) == ("cognito", 120.0, "deny", 0.25, 5, "http://localhost:9229")
    assert Settings.from_env(env(AUTHZ_REVOCATION="OFF")).revocation == "off"
    assert Settings.from_env(env(AUTHZ_REVOCATION="")).revocation == "off"
    assert Settings.from_env(env(AUTHZ_REVOCATION_ON_ERROR="ALLOW")).revocation_on_error == "allow"


@pytest.mark.parametrize(
    "url", ["http://localhost:9229", "https://cognito-idp.ca-central-1.amazonaws.com", "http://127.0.0.1:9229/"]
)
def test_cognito_endpoint_accepts_an_http_url_without_a_path(url):
    """A local emulator or a regional endpoint may be named by scheme, host and port."""
    assert Settings.from_env(env(AWS_ENDPOINT_URL_COGNITO_IDP=url)).cognito_endpoint_url == url


@pytest.mark.parametrize(
    "variable, value",
    [
        ("AUTHZ_REVOCATION", "on"),
        ("AUTHZ_REVOCATION", "true"),
        ("AUTHZ_REVOCATION", "cognito-idp"),
        ("AUTHZ_REVOCATION_TTL", "0.5"),
        ("AUTHZ_REVOCATION_TTL", "3601"),
        ("AUTHZ_REVOCATION_TTL", "-1"),
        ("AUTHZ_REVOCATION_TTL", "thirty"),
        ("AUTHZ_REVOCATION_TTL", "nan"),
        ("AUTHZ_REVOCATION_TTL", "inf"),
        ("AUTHZ_REVOCATION_ON_ERROR", "fail"),
        ("AUTHZ_REVOCATION_ON_ERROR", "open"),
        ("AUTHZ_REVOCATION_TIMEOUT_SECONDS", "0.01"),
        ("AUTHZ_REVOCATION_TIMEOUT_SECONDS", "10.5"),
        ("AUTHZ_REVOCATION_TIMEOUT_SECONDS", "fast"),
        ("AUTHZ_REVOCATION_CACHE_SIZE", "0"),
        ("AUTHZ_REVOCATION_CACHE_SIZE", "10000001"),
        ("AUTHZ_REVOCATION_CACHE_SIZE", "1.5"),
        ("AWS_ENDPOINT_URL_COGNITO_IDP", "http://localhost:9229/cognito"),
        ("AWS_ENDPOINT_URL_COGNITO_IDP", "http://localhost:9229?x=1"),
        ("AWS_ENDPOINT_URL_COGNITO_IDP", "ftp://localhost:9229"),
        ("AWS_ENDPOINT_URL_COGNITO_IDP", "localhost:9229"),
        ("AWS_ENDPOINT_URL_COGNITO_IDP", "http://"),
    ],
)
def test_bad_revocation_settings_name_their_variable(variable, value):
    """An out-of-range number, an unknown choice or a URL with a path or another scheme stops the server at start."""
    with pytest.raises(ConfigError) as caught:
        Settings.from_env(env(**{variable: value}))
    assert caught.value.variable == variable


def test_the_route_table_file_and_its_reload_interval_are_read():
    """AUTHZ_ROUTES names the table (unset or blank: none) and AUTHZ_ROUTES_RELOAD_SECONDS how often it is checked."""
    assert (Settings.from_env(env()).routes_file, Settings.from_env(env()).routes_reload_seconds) == (None, 2.0)
    assert Settings.from_env(env(AUTHZ_ROUTES="  ")).routes_file is None
    settings = Settings.from_env(env(AUTHZ_ROUTES="/etc/authz/routes.yaml", AUTHZ_ROUTES_RELOAD_SECONDS="0.5"))
    assert (settings.routes_file, settings.routes_reload_seconds) == ("/etc/authz/routes.yaml", 0.5)
    assert config_error(env(AUTHZ_ROUTES_RELOAD_SECONDS="0")).variable == "AUTHZ_ROUTES_RELOAD_SECONDS"


def test_the_http_transport_listens_on_loopback_unless_told():
    """AUTHZ_HTTP_ADDR (serve-http) defaults to loopback like the gRPC port, and is checked like it."""
    assert Settings.from_env(env()).http_addr == "127.0.0.1:9193"
    assert Settings.from_env(env(AUTHZ_HTTP_ADDR="0.0.0.0:9999")).http_addr == "0.0.0.0:9999"
    assert config_error(env(AUTHZ_HTTP_ADDR="nope")).variable == "AUTHZ_HTTP_ADDR"


# ------------------------------------------------------------------------------------------- issuer formats

ORIGINAL_ISSUER = f"https://cognito-idp.ca-central-1.amazonaws.com/{POOL}"
UPDATED_ISSUER = f"https://issuer-cognito-idp.ca-central-1.amazonaws.com/{POOL}"
JWKS = "/.well-known/jwks.json"


@pytest.mark.parametrize(
    "formats, issuers, urls",
    [
        ("both", (ORIGINAL_ISSUER, UPDATED_ISSUER), (ORIGINAL_ISSUER + JWKS, UPDATED_ISSUER + JWKS)),
        ("BOTH", (ORIGINAL_ISSUER, UPDATED_ISSUER), (ORIGINAL_ISSUER + JWKS, UPDATED_ISSUER + JWKS)),
        ("original", (ORIGINAL_ISSUER,), (ORIGINAL_ISSUER + JWKS,)),
        ("updated", (UPDATED_ISSUER,), (UPDATED_ISSUER + JWKS, ORIGINAL_ISSUER + JWKS)),
    ],
)
def test_issuer_formats_choose_the_issuers_a_pool_accepts_and_where_its_keys_are_fetched(formats, issuers, urls):
    """AUTHZ_ISSUER_FORMATS narrows the issuers to one format; the keys are one pool's, so the other format's URL
    stays as a fallback for UPDATED (the ORIGINAL one serves every pool)."""
    [pool] = Settings.from_env(env(AUTHZ_ISSUER_FORMATS=formats)).pools
    assert (pool.issuers, pool.jwks_urls) == (issuers, urls)


def test_replica_regions_add_their_original_format_issuers_to_every_pool():
    """AWS_COGNITO_REPLICA_REGIONS: the ORIGINAL-format issuer of each Region, for each pool (its id unchanged);
    the pool's own Region is not repeated, and the JWKS URLs stay the primary Region's."""
    settings = Settings.from_env(
        env(AWS_COGNITO_USER_POOLS_ID=f"{POOL},{OTHER_POOL}", AWS_COGNITO_REPLICA_REGIONS=" us-west-2, ca-central-1 ")
    )
    assert settings.pools[0].issuers == (
        ORIGINAL_ISSUER,
        UPDATED_ISSUER,
        f"https://cognito-idp.us-west-2.amazonaws.com/{POOL}",
    )
    assert settings.pools[1].issuers == (
        f"https://cognito-idp.us-east-1.amazonaws.com/{OTHER_POOL}",
        f"https://issuer-cognito-idp.us-east-1.amazonaws.com/{OTHER_POOL}",
        f"https://cognito-idp.us-west-2.amazonaws.com/{OTHER_POOL}",
        f"https://cognito-idp.ca-central-1.amazonaws.com/{OTHER_POOL}",
    )
    assert settings.pools[0].jwks_urls == (ORIGINAL_ISSUER + JWKS, UPDATED_ISSUER + JWKS)


def test_an_issuer_override_is_the_one_issuer_and_keeps_the_cognito_jwks_url():
    [pool] = Settings.from_env(env(AUTHZ_ISSUER="http://localhost:9229/{pool}")).pools
    assert pool.issuers == (f"http://localhost:9229/{POOL}",)
    assert pool.jwks_urls == (ORIGINAL_ISSUER + JWKS,)


@pytest.mark.parametrize(
    "extra, variable",
    [
        ({"AUTHZ_ISSUER_FORMATS": "all"}, "AUTHZ_ISSUER_FORMATS"),
        (
            {"AUTHZ_ISSUER_FORMATS": "updated", "AWS_COGNITO_REPLICA_REGIONS": "us-west-2"},
            "AWS_COGNITO_REPLICA_REGIONS",
        ),
        ({"AWS_COGNITO_REPLICA_REGIONS": "us-west-2,US-EAST-1"}, "AWS_COGNITO_REPLICA_REGIONS"),
        ({"AWS_COGNITO_REPLICA_REGIONS": "us-west-2.attacker.example"}, "AWS_COGNITO_REPLICA_REGIONS"),
        ({"AUTHZ_ISSUER": "http://localhost:9229/{pool}", "AUTHZ_ISSUER_FORMATS": "both"}, "AUTHZ_ISSUER_FORMATS"),
        (
            {"AUTHZ_ISSUER": "http://localhost:9229/{pool}", "AWS_COGNITO_REPLICA_REGIONS": "us-west-2"},
            "AWS_COGNITO_REPLICA_REGIONS",
        ),
    ],
)
def test_issuer_settings_that_cannot_take_effect_are_configuration_errors(extra, variable):
    """A Region that is not one, replicas with UPDATED only (they mint ORIGINAL-format issuers), or formats and
    replicas beside AUTHZ_ISSUER (the one issuer an emulator mints): refused at start, naming the variable."""
    with pytest.raises(ConfigError) as raised:
        Settings.from_env(env(**extra))
    assert raised.value.variable == variable


# ------------------------------------------------------------------------------------------ shared state


@pytest.mark.parametrize(
    "url",
    [
        "redis://127.0.0.1:6379/0",
        "rediss://user:secret@redis.example.com:6380/2",
        "rediss://user:secret@redis.example.com:6380/2?ssl_cert_reqs=required&ssl_ca_certs=/etc/ca.pem",
        "unix:///run/redis.sock",
    ],
)
def test_the_shared_state_url_is_taken_as_given(url: str) -> None:
    """AUTHZ_STATE_URL accepts redis://, rediss:// (TLS) and unix:// URLs, and is never shown by repr."""
    settings = Settings.from_env(env(AUTHZ_STATE_URL=url))
    assert settings.state_url == url
    assert "secret" not in repr(settings)


def test_without_a_shared_state_url_there_is_none() -> None:
    """No AUTHZ_STATE_URL: each replica on its own, as before."""
    assert Settings.from_env(env()).state_url is None


@pytest.mark.parametrize(
    "url",
    [
        "http://p4ssw0rd@redis:6379",
        "redis://:p4ssw0rd@/0",
        "redis://:p4ssw0rd@redis:notaport/0",
        "redis://:p4ssw0rd@redis:6379/db0",
        "redis://:p4ssw0rd@redis:6379/0?socket_timeout=30",
        "rediss://:p4ssw0rd@redis:6379/0?ssl_cert_reqs=required&retry_on_timeout=yes",
        "unix://",
    ],
)
def test_a_bad_shared_state_url_is_blamed_without_quoting_it(url: str) -> None:
    """A malformed AUTHZ_STATE_URL, or one whose query would set more than TLS (the timeouts and retries that bound
    a Check), is blamed on the variable, and the message never quotes it (it may hold a password)."""
    error = config_error(env(AUTHZ_STATE_URL=url))
    assert error.variable == "AUTHZ_STATE_URL"
    assert "p4ssw0rd" not in str(error)


def test_the_state_timeout_stays_below_envoys() -> None:
    """AUTHZ_STATE_TIMEOUT_SECONDS above 0.45 s is refused: a sign-out waits about twice it, within Envoy's 1 s."""
    assert Settings.from_env(env(AUTHZ_STATE_TIMEOUT_SECONDS="0.1")).state_timeout_seconds == 0.1
    assert config_error(env(AUTHZ_STATE_TIMEOUT_SECONDS="1")).variable == "AUTHZ_STATE_TIMEOUT_SECONDS"


def test_revoke_needs_only_the_shared_state() -> None:
    """StateSettings (python -m authz revoke) reads the state URL and lifetimes alone, no pool, and blames a missing
    URL on AUTHZ_STATE_URL."""
    settings = StateSettings.from_env({"AUTHZ_STATE_URL": "redis://r:6379/0", "AUTHZ_SESSION_LIFETIME_SECONDS": "7200"})
    assert (settings.state_url, settings.session_lifetime_seconds) == ("redis://r:6379/0", 7200.0)
    with pytest.raises(ConfigError) as caught:
        StateSettings.from_env({})
    assert caught.value.variable == "AUTHZ_STATE_URL"
