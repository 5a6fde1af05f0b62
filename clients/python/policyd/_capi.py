"""ctypes declarations of the C ABI of libpolicyd.so (csrc/include/policyd.h), for policyd.local.

Private: LocalPolicy is the public face. Only the functions LocalPolicy uses are declared. Every
fallible call returns a pd_error* (NULL on success); ``check`` turns a non-NULL one into the
PolicydError subclass of its code, with the library's message, and frees it.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import threading
from pathlib import Path
from typing import Optional

import numpy as np

PD_API_VERSION_MAJOR = 1
PD_MAX_RANK = 8

# pd_error_code
PD_ERR_INVALID_ARG = 1
PD_ERR_NOT_FOUND = 2
PD_ERR_UNAVAILABLE = 3
PD_ERR_UNSUPPORTED = 4
PD_ERR_INTERNAL = 5

# pd_dtype (ONNX TensorProto.DataType) -> numpy dtype, and the KServe v2 name.
DTYPES = {
    1: (np.dtype(np.float32), "FP32"),
    2: (np.dtype(np.uint8), "UINT8"),
    3: (np.dtype(np.int8), "INT8"),
    4: (np.dtype(np.uint16), "UINT16"),
    5: (np.dtype(np.int16), "INT16"),
    6: (np.dtype(np.int32), "INT32"),
    7: (np.dtype(np.int64), "INT64"),
    9: (np.dtype(np.bool_), "BOOL"),
    10: (np.dtype(np.float16), "FP16"),
    11: (np.dtype(np.float64), "FP64"),
    12: (np.dtype(np.uint32), "UINT32"),
    13: (np.dtype(np.uint64), "UINT64"),
    # BF16 has no numpy dtype: carried as its raw 16-bit patterns.
    16: (np.dtype(np.uint16), "BF16"),
}


class Tensor(ctypes.Structure):
    _fields_ = [
        ("dtype", ctypes.c_int32),
        ("rank", ctypes.c_int32),
        ("dims", ctypes.c_int64 * PD_MAX_RANK),
        ("data", ctypes.c_void_p),
        ("byte_size", ctypes.c_uint64),
    ]


class IOInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("dtype", ctypes.c_int32),
        ("rank", ctypes.c_int32),
        ("dims", ctypes.c_int64 * PD_MAX_RANK),
        ("batch_dim", ctypes.c_int32),
    ]


class BackendInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("version", ctypes.c_char_p),
        ("path", ctypes.c_char_p),
        ("available", ctypes.c_int32),
        ("reason", ctypes.c_char_p),
    ]


_P = ctypes.c_void_p
_ERR = ctypes.c_void_p  # pd_error*, kept as an integer address


def _declare(lib: ctypes.CDLL) -> None:
    def fn(name: str, restype, *argtypes):
        f = getattr(lib, name)
        f.restype = restype
        f.argtypes = list(argtypes)

    fn("pd_api_version", None, ctypes.POINTER(ctypes.c_uint32), ctypes.POINTER(ctypes.c_uint32))
    fn("pd_version_string", ctypes.c_char_p)
    fn("pd_error_get_code", ctypes.c_int, _ERR)
    fn("pd_error_get_message", ctypes.c_char_p, _ERR)
    fn("pd_error_free", None, _ERR)
    fn("pd_runtime_options_create", _ERR, ctypes.POINTER(_P))
    fn("pd_runtime_options_destroy", None, _P)
    fn("pd_runtime_options_set_backend_dir", _ERR, _P, ctypes.c_char_p)
    fn("pd_runtime_create", _ERR, _P, ctypes.POINTER(_P))
    fn("pd_runtime_destroy", None, _P)
    fn("pd_runtime_backend_count", ctypes.c_int32, _P)
    fn("pd_runtime_backend_info", _ERR, _P, ctypes.c_int32, ctypes.POINTER(BackendInfo))
    fn("pd_engine_options_create", _ERR, ctypes.POINTER(_P))
    fn("pd_engine_options_destroy", None, _P)
    fn("pd_engine_options_set_backend", _ERR, _P, ctypes.c_char_p)
    fn("pd_engine_options_set_threads", _ERR, _P, ctypes.c_int32)
    fn("pd_engine_options_set_name", _ERR, _P, ctypes.c_char_p)
    fn("pd_engine_options_set_model_digest", _ERR, _P, ctypes.c_char_p)
    fn("pd_engine_options_set_batch_profile", _ERR, _P, ctypes.c_int64, ctypes.c_int64, ctypes.c_int64)
    fn("pd_engine_options_set_param", _ERR, _P, ctypes.c_char_p, ctypes.c_char_p)
    fn("pd_engine_options_add_external", _ERR, _P, ctypes.c_char_p, ctypes.c_void_p, ctypes.c_size_t)
    fn("pd_engine_create", _ERR, _P, ctypes.c_void_p, ctypes.c_size_t, _P, ctypes.POINTER(_P))
    fn("pd_engine_destroy", None, _P)
    fn("pd_engine_backend", ctypes.c_char_p, _P)
    fn("pd_engine_input_count", ctypes.c_int32, _P)
    fn("pd_engine_output_count", ctypes.c_int32, _P)
    fn("pd_engine_input_info", _ERR, _P, ctypes.c_int32, ctypes.POINTER(IOInfo))
    fn("pd_engine_output_info", _ERR, _P, ctypes.c_int32, ctypes.POINTER(IOInfo))
    fn("pd_engine_batchable", ctypes.c_int32, _P)
    fn("pd_context_create", _ERR, _P, ctypes.POINTER(_P))
    fn("pd_context_destroy", None, _P)
    fn("pd_context_set_seed", _ERR, _P, ctypes.c_uint64)
    fn("pd_context_set_row_seeds", _ERR, _P, ctypes.POINTER(ctypes.c_uint64), ctypes.c_size_t)
    fn("pd_context_run", _ERR, _P, ctypes.POINTER(Tensor), ctypes.c_int32, ctypes.POINTER(Tensor), ctypes.c_int32)


class Library:
    """A loaded libpolicyd.so with its declared functions and one runtime (its backends)."""

    def __init__(self, path: str):
        from .errors import Unavailable

        self.path = path
        try:
            self.lib = ctypes.CDLL(path)
        except OSError as e:
            raise Unavailable(f"cannot load {path}: {e}") from None
        _declare(self.lib)
        major, minor = ctypes.c_uint32(), ctypes.c_uint32()
        self.lib.pd_api_version(ctypes.byref(major), ctypes.byref(minor))
        if major.value != PD_API_VERSION_MAJOR:
            raise Unavailable(
                f"{path} has C ABI version {major.value}.{minor.value}; policyd.local speaks {PD_API_VERSION_MAJOR}.x"
            )
        self.version = self.lib.pd_version_string().decode()
        opts = _P()
        self.check(self.lib.pd_runtime_options_create(ctypes.byref(opts)))
        try:
            self.check(self.lib.pd_runtime_options_set_backend_dir(opts, os.path.dirname(path).encode()))
            rt = _P()
            self.check(self.lib.pd_runtime_create(opts, ctypes.byref(rt)))
        finally:
            self.lib.pd_runtime_options_destroy(opts)
        # Lives as long as the process: engines of every LocalPolicy share it (pd_runtime is
        # safe for concurrent use), as the server keeps one runtime.
        self.runtime = rt

    def check(self, err) -> None:
        """Raises the PolicydError of a non-NULL pd_error* (and frees it)."""
        if not err:
            return
        code = self.lib.pd_error_get_code(err)
        msg = (self.lib.pd_error_get_message(err) or b"").decode("utf-8", "replace")
        self.lib.pd_error_free(err)
        raise error_of(code, msg)

    def backends(self) -> list[dict]:
        out = []
        for i in range(self.lib.pd_runtime_backend_count(self.runtime)):
            b = BackendInfo()
            self.check(self.lib.pd_runtime_backend_info(self.runtime, i, ctypes.byref(b)))
            out.append({
                "name": b.name.decode(), "version": b.version.decode(), "path": b.path.decode(),
                "available": bool(b.available), "reason": b.reason.decode(),
            })
        return out


def error_of(code: int, msg: str):
    """The PolicydError subclass of a pd_error_code, as the server maps codes to statuses
    (INVALID_ARG 400, NOT_FOUND 404, UNAVAILABLE 503, UNSUPPORTED 400, INTERNAL 500)."""
    from . import errors

    if code in (PD_ERR_INVALID_ARG, PD_ERR_UNSUPPORTED):
        return errors.InvalidArgument(msg)
    if code == PD_ERR_NOT_FOUND:
        return errors.NotFound(msg)
    if code == PD_ERR_UNAVAILABLE:
        return errors.Unavailable(msg)
    return errors.ServerError(msg)


_libs: dict[str, Library] = {}
_libs_mu = threading.Lock()


def _repo_root() -> Optional[Path]:
    # clients/python/policyd/_capi.py -> the repository root, when run from a checkout.
    p = Path(__file__).resolve().parents[3]
    return p if (p / "csrc" / "include" / "policyd.h").is_file() else None


def candidates() -> list[str]:
    """Where libpolicyd.so is looked for, in order: $POLICYD_LIB, the repository's lib/ (a
    build, `make native`), lib/ beside a policyd binary on PATH (the layout of every install:
    bin/ and lib/ side by side), /opt/policyd/lib (docs/deployment.md), then the loader's own
    search (ld.so.conf, LD_LIBRARY_PATH)."""
    out = []
    env = os.environ.get("POLICYD_LIB")
    if env:
        out.append(os.path.join(env, "libpolicyd.so") if os.path.isdir(env) else env)
    root = _repo_root()
    if root is not None:
        out.append(str(root / "lib" / "libpolicyd.so"))
    exe = shutil.which("policyd")
    if exe:
        out.append(str(Path(exe).resolve().parent.parent / "lib" / "libpolicyd.so"))
    out.append("/opt/policyd/lib/libpolicyd.so")
    return out


def load(library: Optional[str] = None) -> Library:
    """The Library of `library` (a path to libpolicyd.so or its folder), else of the first
    candidate that exists. One Library per file per process."""
    from .errors import Unavailable

    if library is not None:
        path = os.path.join(library, "libpolicyd.so") if os.path.isdir(library) else library
        if not os.path.isfile(path):
            raise Unavailable(f"libpolicyd.so not found at {library}")
        tried = [path]
    else:
        tried = candidates()
        path = next((p for p in tried if os.path.isfile(p)), None)
        if path is None:
            raise Unavailable(
                "libpolicyd.so not found (looked at " + ", ".join(tried) +
                "); build it with `make native`, or set $POLICYD_LIB or library="
            )
    path = os.path.realpath(path)
    with _libs_mu:
        lib = _libs.get(path)
        if lib is None:
            lib = _libs[path] = Library(path)
        return lib
