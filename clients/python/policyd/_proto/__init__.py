"""Generated protobuf and gRPC code of api/inference/*.proto (scripts/gen_proto.sh; do not edit)."""
