"""The local stack: Cognito provisioning as code, the Cognito emulator, and the parts run as local processes.

`make run` (stack.run), `make token` (stack.token) and docker compose's provision job (stack.provision) run it;
the integration and browser tests and the bench start their stacks with stack.local and stack.processes.
"""
