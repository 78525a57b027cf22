"""The wire contract of the fast path between services: `skuflow.auth.v1.Auth/Verify` over gRPC.

`v1/auth.proto` is the source; `v1/auth_pb2*.py*` are what grpcio-tools generates from it, checked in so that
running skuflow needs no code generator (`scripts/protos.sh` writes them again; a test fails when they differ
from what the `.proto` generates). The users service serves it, the token verifier asks it; neither owns it.
"""
