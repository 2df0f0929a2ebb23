"""A Cognito-aware Envoy ext_authz server: verifies Amazon Cognito JWTs and hands the caller's identity upstream.

A Check flows one way: service (the gRPC transport) -> authorizer -> routes, tokens (-> jwks), policy, revocation
-> authorizer -> service. README's code map lists the modules in that order.
"""
