"""The gRPC transport (``inference.GRPCInferenceService``); needs grpcio and protobuf (the ``grpc`` extra,
Debian python3-grpcio and python3-protobuf)."""

from __future__ import annotations

import random
import time
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import grpc
import numpy as np
from google.protobuf import json_format

from . import errors
from ._proto import grpc_service_pb2 as pb
from ._proto import grpc_service_pb2_grpc as pb_grpc
from ._types import BF16, datatype_of, decode_raw, tensor_bytes
from .http import InferResult, request_parameters

__all__ = ["Client"]

_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.RESOURCE_EXHAUSTED: 413,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.INTERNAL: 500,
}


def _param(v: Any) -> "pb.InferParameter":
    if isinstance(v, bool):
        return pb.InferParameter(bool_param=v)
    if isinstance(v, (int, np.integer)):
        return pb.InferParameter(uint64_param=int(v)) if v >= 0 else pb.InferParameter(int64_param=int(v))
    if isinstance(v, float):
        return pb.InferParameter(double_param=v)
    return pb.InferParameter(string_param=str(v))


class Client:
    """A policyd client over gRPC: ``Client("grpc://127.0.0.1:8001")`` or ``Client("127.0.0.1:8001")``.

    The same methods and errors as the HTTP :class:`policyd.Client`. Tensors travel in
    ``raw_input_contents`` / ``raw_output_contents``. Retries: a call answered Unavailable or
    DeadlineExceeded with the ``retry-after`` trailer (full queue, queue timeout, sequence limit:
    it did not run), and a call that failed to connect (Unavailable before sending), with the
    HTTP client's backoff. Safe for concurrent use (one channel, HTTP/2 multiplexed).
    """

    def __init__(self, url: str = "grpc://127.0.0.1:8001", *, timeout: float = 30.0, retries: int = 3,
                 backoff: float = 0.05, max_backoff: float = 5.0, options: Optional[Sequence[Any]] = None) -> None:
        target = url[len("grpc://"):] if url.startswith("grpc://") else url
        self.url = url
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._channel = grpc.insecure_channel(target, options=list(options or []))
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _call(self, name: str, req: Any, timeout: Optional[float] = None, retry_connect: bool = True) -> Any:
        fn = getattr(self._stub, name)
        attempt = 0
        while True:
            try:
                return fn(req, timeout=timeout if timeout is not None else self.timeout)
            except grpc.RpcError as e:
                err = self._error(e)
                retryable = (isinstance(err, errors.Unavailable) and err.retry_after is not None) or \
                    (isinstance(err, errors.ConnectError) and retry_connect)
                if not retryable or attempt >= self.retries:
                    raise err from None
                delay = min(self.max_backoff, self.backoff * (2 ** attempt)) * (1 + 0.25 * random.random())
                if isinstance(err, errors.Unavailable) and err.retry_after is not None:
                    delay = max(delay, err.retry_after)
                time.sleep(delay)
                attempt += 1

    @staticmethod
    def _error(e: "grpc.RpcError") -> errors.PolicydError:
        code, msg = e.code(), e.details() or ""
        retry_after = None
        for k, v in (e.trailing_metadata() or ()):
            if k == "retry-after":
                try:
                    retry_after = float(v)
                except ValueError:
                    pass
        if code == grpc.StatusCode.DEADLINE_EXCEEDED:
            if retry_after is not None:  # still queued at the server's timeout: it did not run
                return errors.Overloaded(msg, 503, None, retry_after)
            return errors.Timeout(f"no answer within the deadline; the request may have run ({msg})")
        if code == grpc.StatusCode.UNAVAILABLE and retry_after is None and \
                ("connect" in msg.lower() or "unreachable" in msg.lower() or "connection refused" in msg.lower()):
            return errors.ConnectError(msg, sent=False)
        status = _STATUS.get(code, 500)
        return errors.from_status(status, msg, None, retry_after)

    # --- health and metadata -----------------------------------------------------------------

    def live(self) -> bool:
        return self._call("ServerLive", pb.ServerLiveRequest()).live

    def ready(self) -> bool:
        return self._call("ServerReady", pb.ServerReadyRequest()).ready

    def model_ready(self, model: str, version: Optional[str] = None) -> bool:
        return self._call("ModelReady", pb.ModelReadyRequest(name=model, version=version or "")).ready

    def metadata(self, model: str, version: Optional[str] = None) -> Dict[str, Any]:
        r = self._call("ModelMetadata", pb.ModelMetadataRequest(name=model, version=version or ""))
        tensors = lambda ts: [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in ts]  # noqa: E731
        return {"name": r.name, "versions": list(r.versions), "platform": r.platform,
                "inputs": tensors(r.inputs), "outputs": tensors(r.outputs)}

    def config(self, model: str, version: Optional[str] = None) -> Dict[str, Any]:
        r = self._call("ModelConfig", pb.ModelConfigRequest(name=model, version=version or ""))
        return json_format.MessageToDict(r.config, preserving_proto_field_name=True)

    # --- inference ---------------------------------------------------------------------------

    def infer(self, model: str, inputs: Mapping[str, Any], outputs: Optional[Sequence[str]] = None,
              version: Optional[str] = None, *, binary: bool = True, seed: Optional[int] = None,
              priority: Optional[int] = None, timeout: Optional[float] = None,
              sequence_id: Union[int, str, None] = None, sequence_start: bool = False,
              sequence_end: bool = False, parameters: Optional[Mapping[str, Any]] = None,
              request_id: Optional[str] = None) -> InferResult:
        """As :meth:`policyd.Client.infer`. ``binary`` is accepted for the same signature; tensors
        always travel raw (BYTES inputs are not supported over gRPC by this client)."""
        req = pb.ModelInferRequest(model_name=model, model_version=version or "", id=request_id or "")
        params = request_parameters(seed, priority, timeout, sequence_id, sequence_start,
                                    sequence_end, parameters)
        for k, v in params.items():
            req.parameters[k].CopyFrom(_param(v))
        raws: List[bytes] = []
        for name, value in inputs.items():
            if not isinstance(value, (np.ndarray, BF16)):
                value = np.asarray(value)
            dt = datatype_of(value)
            if dt == "BYTES":
                raise errors.InvalidArgument(f"input {name!r}: BYTES inputs are not supported over gRPC by this client")
            t = req.inputs.add(name=name, datatype=dt)
            t.shape.extend(value.shape)
            raws.append(tensor_bytes(value, dt))
        req.raw_input_contents.extend(raws)
        for o in outputs or ():
            req.outputs.add(name=o)
        r = self._call("ModelInfer", req, retry_connect=sequence_id is None)
        res = InferResult()
        res.model_name, res.model_version, res.id = r.model_name, r.model_version, r.id or None
        for i, out in enumerate(r.outputs):
            shape = list(out.shape)
            if i < len(r.raw_output_contents):
                res[out.name] = decode_raw(r.raw_output_contents[i], out.datatype, shape)
            else:
                res[out.name] = _typed(out, shape)
        return res


def _typed(out: Any, shape: List[int]) -> np.ndarray:
    from ._types import DTYPES
    c = out.contents
    dt = out.datatype
    field = {"BOOL": c.bool_contents, "INT8": c.int_contents, "INT16": c.int_contents, "INT32": c.int_contents,
             "INT64": c.int64_contents, "UINT8": c.uint_contents, "UINT16": c.uint_contents,
             "UINT32": c.uint_contents, "UINT64": c.uint64_contents, "FP32": c.fp32_contents,
             "FP64": c.fp64_contents}.get(dt)
    if dt == "BYTES":
        return np.array(list(c.bytes_contents), dtype=object).reshape(shape)
    if field is None:
        raise errors.ServerError(f"output {out.name!r}: datatype {dt} without raw contents")
    return np.asarray(list(field), dtype=DTYPES[dt]).reshape(shape)
