"""policyd: a Python client for the policyd inference server (KServe v2 over HTTP and gRPC).

    import numpy as np, policyd
    client = policyd.Client("http://127.0.0.1:8000")
    policy = policyd.Policy(client, "3DBall", output="deterministic_continuous_actions")
    action = policy.act(np.zeros(8, np.float32))

See docs/clients.md. ``policyd.grpc`` (needs grpcio) and ``policyd.local`` (LocalPolicy over
the C ABI) are imported on demand.
"""

from ._types import BF16
from .errors import (ConnectError, ConnectionError_, InvalidArgument, NotFound, Overloaded, PolicydError,
                     ServerError, Timeout, Unavailable)
from .http import Client, InferResult
from .policy import Episode, Policy

__version__ = "0.1.0"

__all__ = [
    "BF16", "Client", "ConnectError", "ConnectionError_", "Episode", "InferResult", "InvalidArgument",
    "NotFound", "Overloaded", "Policy", "PolicydError", "ServerError", "Timeout", "Unavailable",
]
