"""A Cognito-aware Envoy ext_authz server: verifies Amazon Cognito JWTs and hands the caller's identity upstream.

A Check flows one way: service -> tokens (-> jwks) -> policy -> service.
"""
