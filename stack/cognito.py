"""The seed's Cognito console steps as boto3 calls: works against real AWS and against a local emulator.

Pool `cruddur-user-pool`: email as sign-in, required attributes name, email and preferred_username,
self-registration, email verification, optional TOTP MFA (software tokens); a public app client `cruddur` without a
secret, with token revocation. For machine-to-machine calls, a resource server `reports-api` and a confidential
client `cruddur-reports` (provision_machine_client). For "Sign in with ...", an OIDC identity provider and the public
client's hosted-UI settings (provision_identity_provider).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import boto3

POOL_NAME = "cruddur-user-pool"
CLIENT_NAME = "cruddur"


@dataclass(frozen=True)
class Provisioned:
    pool_id: str
    client_id: str
    region: str


def cognito_client(region: str, endpoint_url: str | None = None) -> Any:
    """A cognito-idp client; with endpoint_url (a local emulator) dummy credentials suffice."""
    if endpoint_url:
        return boto3.client(
            "cognito-idp",
            region_name=region,
            endpoint_url=endpoint_url,
            aws_access_key_id="local",
            aws_secret_access_key="local",
        )
    return boto3.client("cognito-idp", region_name=region)


def cognito_client_for(env: Mapping[str, str]) -> Any:
    """The client for a stack's Cognito as .run/cognito.env describes it (AWS_COGNITO_REGION and, for the
    emulator, AWS_ENDPOINT_URL_COGNITO_IDP)."""
    return cognito_client(env["AWS_COGNITO_REGION"], env.get("AWS_ENDPOINT_URL_COGNITO_IDP"))


def provision(client: Any, region: str) -> Provisioned:
    """Create the pool and app client, or reuse them when a pool of that name already exists; either way the pool
    offers TOTP MFA (optional, software tokens) and the client allows token revocation."""
    pool_id = _existing_pool(client) or _create_pool(client)
    existing = _existing_client(client, pool_id)
    client_id = existing or _create_client(client, pool_id)
    client.set_user_pool_mfa_config(
        UserPoolId=pool_id, SoftwareTokenMfaConfiguration={"Enabled": True}, MfaConfiguration="OPTIONAL"
    )
    if existing:
        # A client created here has it already; one found may predate it.
        update_app_client(client, pool_id, client_id, EnableTokenRevocation=True)
    return Provisioned(pool_id=pool_id, client_id=client_id, region=region)


def update_app_client(client: Any, pool_id: str, client_id: str, **changes: Any) -> None:
    """UpdateUserPoolClient with changes, carrying every other setting the client has: Cognito resets any setting
    the call leaves out."""
    current = client.describe_user_pool_client(UserPoolId=pool_id, ClientId=client_id)["UserPoolClient"]
    settable = client.meta.service_model.operation_model("UpdateUserPoolClient").input_shape.members
    carried = {key: value for key, value in current.items() if key in settable}
    client.update_user_pool_client(**{**carried, **changes, "UserPoolId": pool_id, "ClientId": client_id})


def _existing_pool(client: Any) -> str | None:
    for page in client.get_paginator("list_user_pools").paginate(MaxResults=60):
        for pool in page["UserPools"]:
            if pool["Name"] == POOL_NAME:
                return pool["Id"]
    return None


def _create_pool(client: Any) -> str:
    required = [
        {"Name": name, "AttributeDataType": "String", "Required": True, "Mutable": True}
        for name in ("name", "email", "preferred_username")
    ]
    pool = client.create_user_pool(
        PoolName=POOL_NAME,
        UsernameAttributes=["email"],
        AutoVerifiedAttributes=["email"],
        Schema=required,
        AdminCreateUserConfig={"AllowAdminCreateUserOnly": False},
        Policies={
            "PasswordPolicy": {
                "MinimumLength": 8,
                "RequireUppercase": True,
                "RequireLowercase": True,
                "RequireNumbers": True,
                "RequireSymbols": True,
            }
        },
        AccountRecoverySetting={"RecoveryMechanisms": [{"Priority": 1, "Name": "verified_email"}]},
    )
    return pool["UserPool"]["Id"]


def _existing_client(client: Any, pool_id: str, name: str = CLIENT_NAME) -> str | None:
    for page in client.get_paginator("list_user_pool_clients").paginate(UserPoolId=pool_id, MaxResults=60):
        for app in page["UserPoolClients"]:
            if app["ClientName"] == name:
                return app["ClientId"]
    return None


def _create_client(client: Any, pool_id: str) -> str:
    app = client.create_user_pool_client(
        UserPoolId=pool_id,
        ClientName=CLIENT_NAME,
        GenerateSecret=False,
        ExplicitAuthFlows=["ALLOW_USER_SRP_AUTH", "ALLOW_USER_PASSWORD_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"],
        PreventUserExistenceErrors="ENABLED",
        EnableTokenRevocation=True,
    )
    return app["UserPoolClient"]["ClientId"]


def ensure_user(client: Any, provisioned: Provisioned, *, email: str, password: str, name: str, handle: str) -> None:
    """register() the user unless one with that email exists already."""
    try:
        register(
            client, provisioned.pool_id, provisioned.client_id, email=email, password=password, name=name, handle=handle
        )
    except client.exceptions.UsernameExistsException:
        return


def register(client: Any, pool_id: str, client_id: str, *, email: str, password: str, name: str, handle: str) -> None:
    """Sign a user up as a person would, then confirm them as an admin (the emulator sends no email)."""
    client.sign_up(
        ClientId=client_id,
        Username=email,
        Password=password,
        UserAttributes=[
            {"Name": "email", "Value": email},
            {"Name": "name", "Value": name},
            {"Name": "preferred_username", "Value": handle},
        ],
    )
    client.admin_confirm_sign_up(UserPoolId=pool_id, Username=email)


def user_sub(client: Any, access_token: str) -> str:
    """The signed-in user's `sub`, as Cognito's GetUser reports it."""
    attributes = client.get_user(AccessToken=access_token)["UserAttributes"]
    return next(attribute["Value"] for attribute in attributes if attribute["Name"] == "sub")


def sign_in(client: Any, client_id: str, username: str, password: str) -> dict[str, str]:
    """USER_PASSWORD_AUTH: the AuthenticationResult (AccessToken, IdToken, RefreshToken, ...)."""
    result = client.initiate_auth(
        ClientId=client_id,
        AuthFlow="USER_PASSWORD_AUTH",
        AuthParameters={"USERNAME": username, "PASSWORD": password},
    )
    return result["AuthenticationResult"]


# An app client calling on its own behalf (machine to machine): a resource server with one custom scope, and a
# confidential client that may only ask GetClientToken (or the client credentials grant) for it.
RESOURCE_SERVER = "reports-api"
REPORTS_READ = f"{RESOURCE_SERVER}/read"
MACHINE_CLIENT_NAME = "cruddur-reports"


@dataclass(frozen=True)
class MachineClient:
    client_id: str
    secret: str = field(repr=False)


def provision_machine_client(client: Any, pool_id: str) -> MachineClient:
    """The `reports-api` resource server (scope `read`) and the confidential client `cruddur-reports`, whose only
    flow is ALLOW_CLIENT_TOKEN_AUTH ("mutually exclusive with user authentication flows": GetClientToken, Cognito
    API Reference); reused when they exist."""
    servers = client.list_resource_servers(UserPoolId=pool_id, MaxResults=50)["ResourceServers"]
    if not any(server["Identifier"] == RESOURCE_SERVER for server in servers):
        client.create_resource_server(
            UserPoolId=pool_id,
            Identifier=RESOURCE_SERVER,
            Name="Cruddur reports",
            Scopes=[{"ScopeName": "read", "ScopeDescription": "read reports"}],
        )
    existing = _existing_client(client, pool_id, MACHINE_CLIENT_NAME)
    if existing is None:
        existing = client.create_user_pool_client(
            UserPoolId=pool_id,
            ClientName=MACHINE_CLIENT_NAME,
            GenerateSecret=True,
            ExplicitAuthFlows=["ALLOW_CLIENT_TOKEN_AUTH"],
            AllowedOAuthFlows=["client_credentials"],
            AllowedOAuthScopes=[REPORTS_READ],
            AllowedOAuthFlowsUserPoolClient=True,
        )["UserPoolClient"]["ClientId"]
    described = client.describe_user_pool_client(UserPoolId=pool_id, ClientId=existing)["UserPoolClient"]
    return MachineClient(client_id=existing, secret=described["ClientSecret"])


def client_token(client: Any, machine: MachineClient, scopes: list[str] | None = None) -> str:
    """The app client's own access token (GetClientToken)."""
    request: dict[str, Any] = {"ClientId": machine.client_id, "Secret": machine.secret}
    if scopes is not None:
        request["Scopes"] = scopes
    token: str = client.get_client_token(**request)["ClientAuthenticationResult"]["AccessToken"]
    return token


# "Sign in with <provider>": an OIDC identity provider of the pool, and the public client's hosted-UI settings.
# Cognito's provider names allow no underscore (a federated username is `<ProviderName>_<IdP user id>`).
LOCAL_IDP = "LocalIdP"
IDP_SCOPES = "openid email profile"
# The pool's attributes from the IdP's claims: the pool requires name, email and preferred_username, and an email
# is verified only when email_verified is mapped too; the IdP's sub is the user's id there.
IDP_ATTRIBUTE_MAPPING = {
    "email": "email",
    "email_verified": "email_verified",
    "name": "name",
    "preferred_username": "preferred_username",
    "username": "sub",
}
HOSTED_SCOPES = ["openid", "email", "profile", "aws.cognito.signin.user.admin"]


@dataclass(frozen=True)
class OidcIdentityProvider:
    """An external OpenID Connect IdP, as the pool knows it: its issuer and the app registration Cognito uses there
    (whose redirect URI is the pool domain's /oauth2/idpresponse)."""

    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    name: str = LOCAL_IDP


def provision_identity_provider(
    client: Any,
    pool_id: str,
    client_id: str,
    provider: OidcIdentityProvider,
    *,
    callback_urls: Sequence[str],
    logout_urls: Sequence[str],
) -> None:
    """The OIDC provider in the pool (created, or updated when it exists) and the app client's hosted-UI settings:
    the code flow with the openid, email, profile and admin scopes, callback_urls and logout_urls, and sign-in with
    the pool itself or the provider. Against a real pool too (which wants https URLs, but http://localhost)."""
    settings = {
        "ProviderDetails": {
            "client_id": provider.client_id,
            "client_secret": provider.client_secret,
            "oidc_issuer": provider.issuer,
            "authorize_scopes": IDP_SCOPES,
            "attributes_request_method": "GET",
        },
        "AttributeMapping": IDP_ATTRIBUTE_MAPPING,
    }
    try:
        client.describe_identity_provider(UserPoolId=pool_id, ProviderName=provider.name)
    except client.exceptions.ResourceNotFoundException:
        client.create_identity_provider(UserPoolId=pool_id, ProviderName=provider.name, ProviderType="OIDC", **settings)
    else:
        client.update_identity_provider(UserPoolId=pool_id, ProviderName=provider.name, **settings)
    update_app_client(
        client,
        pool_id,
        client_id,
        AllowedOAuthFlows=["code"],
        AllowedOAuthFlowsUserPoolClient=True,
        AllowedOAuthScopes=HOSTED_SCOPES,
        CallbackURLs=list(callback_urls),
        LogoutURLs=list(logout_urls),
        SupportedIdentityProviders=["COGNITO", provider.name],
    )
