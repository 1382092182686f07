"""Ray Serve deployments of Prism: the model replicas and the OpenAI-compatible ingress."""
