"""Whether a child does its job: probes per generation, and what Health and grpc.health.v1 report."""
