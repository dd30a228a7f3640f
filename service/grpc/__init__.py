"""The gRPC front end (grpc.aio): livefeat.v1.FeatureService over the core, health, reflection.

    server.py    GrpcServer: the grpc.aio server, health and reflection, drain and stop
    servicer.py  FeatureServicer: request -> core call -> response, per RPC
    wire.py      core results -> GetBundle/GetFeatures answers as wire bytes
    convert.py   PushRows -> the core's row dicts
    edge.py      the one error table, request metrics, the deadline given to the core

The messages are generated from protos/livefeat/v1/livefeat.proto into
service/_gen/ at build time (hatch_build.py).
"""

from service.grpc.server import SERVICE_NAME, GrpcServer

__all__ = ["SERVICE_NAME", "GrpcServer"]
