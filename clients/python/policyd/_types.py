"""Datatypes: KServe v2 names and numpy dtypes, and bfloat16 (which numpy lacks)."""

from __future__ import annotations

from typing import Any, Dict

import numpy as np

#: KServe v2 datatype -> numpy dtype (little-endian). BF16 arrays are float32 on the numpy side.
DTYPES: Dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"), "INT64": np.dtype("<i8"),
    "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"), "UINT64": np.dtype("<u8"),
    "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
    "BF16": np.dtype("<f4"),
    "BYTES": np.dtype(object),
}

_BY_KIND = {np.dtype(v).newbyteorder("="): k for k, v in DTYPES.items() if k not in ("BF16", "BYTES")}

#: Bytes per element on the wire.
SIZES = {k: (2 if k == "BF16" else v.itemsize) for k, v in DTYPES.items() if k != "BYTES"}


class BF16:
    """An input to send as BF16: ``BF16(np.array([...], np.float32))``.

    The float32 values are rounded to bfloat16 (round to nearest even; NaN stays NaN) when the
    request is encoded. A BF16 output comes back as float32 holding the bfloat16 value exactly.
    ``Policy`` wraps float inputs on its own when the model's metadata says BF16.
    """

    __slots__ = ("array",)

    def __init__(self, array: Any) -> None:
        self.array = np.ascontiguousarray(array, dtype=np.float32)

    @property
    def shape(self) -> tuple:
        return self.array.shape


def datatype_of(value: Any) -> str:
    """The KServe datatype of an input value (a numpy array or a BF16)."""
    if isinstance(value, BF16):
        return "BF16"
    dt = value.dtype
    if dt.kind in ("O", "S", "U"):
        return "BYTES"
    try:
        return _BY_KIND[dt.newbyteorder("=")]
    except KeyError:
        raise TypeError(f"numpy dtype {dt} has no KServe v2 datatype") from None


def to_bf16_bits(a: np.ndarray) -> np.ndarray:
    """float32 -> uint16 bfloat16 bits, rounding to nearest even; NaN stays a quiet NaN."""
    u = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32)
    rounded = ((u + (0x7FFF + ((u >> 16) & 1))) >> 16).astype(np.uint16)
    nan = np.isnan(a)
    if nan.any():
        rounded[nan] = ((u[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


def from_bf16_bits(b: np.ndarray) -> np.ndarray:
    """uint16 bfloat16 bits -> float32 holding the same value."""
    return (b.astype(np.uint32) << 16).view(np.float32)


def tensor_bytes(value: Any, datatype: str) -> bytes:
    """The little-endian, row-major bytes of an input."""
    if datatype == "BF16":
        arr = value.array if isinstance(value, BF16) else value
        return to_bf16_bits(arr).tobytes()
    arr = value
    want = DTYPES[datatype]
    if arr.dtype != want:
        arr = arr.astype(want)
    return arr.tobytes()  # C order, a copy only for non-contiguous arrays


def decode_raw(buf: Any, datatype: str, shape: list, offset: int = 0, size: int = -1) -> np.ndarray:
    """A numpy array from raw little-endian bytes (binary HTTP outputs, gRPC raw contents)."""
    n = 1
    for d in shape:
        n *= d
    if datatype == "BYTES":
        out = []
        pos, end = offset, offset + size if size >= 0 else len(buf)
        for _ in range(n):
            ln = int.from_bytes(buf[pos:pos + 4], "little")
            out.append(bytes(buf[pos + 4:pos + 4 + ln]))
            pos += 4 + ln
        if pos != end:
            raise ValueError("BYTES output: element lengths do not add up")
        return np.array(out, dtype=object).reshape(shape)
    if datatype == "BF16":
        bits = np.frombuffer(buf, dtype="<u2", count=n, offset=offset)
        return from_bf16_bits(bits).reshape(shape)
    return np.frombuffer(buf, dtype=DTYPES[datatype], count=n, offset=offset).reshape(shape)


def decode_json(data: Any, datatype: str, shape: list) -> np.ndarray:
    """A numpy array from a JSON output's flat or nested ``data`` (null is NaN for floats)."""
    if datatype == "BYTES":
        return np.array([d.encode() if isinstance(d, str) else d for d in data], dtype=object).reshape(shape)
    dt = DTYPES[datatype]
    if dt.kind == "f":
        data = [float("nan") if v is None else v for v in data]
    return np.asarray(data, dtype=dt).reshape(shape)
