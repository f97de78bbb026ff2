"""Generated protobuf and gRPC code for supervisor.v1; regenerate with scripts/gen_proto.py, never edit."""
