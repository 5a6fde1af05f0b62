"""policyd: clients of the policyd server (placeholder __init__ of the pylocal branch; the pyclient
branch's version, which also exports Client and Policy, replaces it on merge)."""

from .errors import (ConnectError, InvalidArgument, NotFound, Overloaded, PolicydError, ServerError,
                     Timeout, Unavailable)

__all__ = ["PolicydError", "InvalidArgument", "NotFound", "Unavailable", "Overloaded", "Timeout",
           "ConnectError", "ServerError"]
