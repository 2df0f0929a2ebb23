"""What `make run` needs and nothing imports: the local stack runner and the Cognito provisioning code."""
