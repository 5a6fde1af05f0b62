/*
 * policyd.h — the C ABI of the policyd engine library (libpolicyd.so).
 *
 * This is the only header the Go bridge (and any other host) sees. Rules that hold for every
 * function below:
 *
 *  - Handles are opaque. Whatever a *_create returns through its out-parameter is owned by the
 *    caller and released with the matching *_destroy, which accepts NULL.
 *  - A function that can fail returns a pd_error*: NULL means success. A non-NULL error is owned
 *    by the caller and must be released with pd_error_free. No C++ exception ever crosses this
 *    boundary and the library never exits or aborts the process.
 *  - Strings passed in are borrowed for the duration of the call. Strings returned are owned by
 *    the object they came from and stay valid as long as that object, unless stated otherwise.
 *  - Thread safety: pd_runtime and pd_engine are safe for concurrent use once created.
 *    A pd_context is used by one thread at a time (the host keeps one per worker); contexts of
 *    the same engine run concurrently.
 */
#ifndef POLICYD_H_
#define POLICYD_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(PD_BUILDING_LIBRARY)
#define PD_EXPORT __attribute__((visibility("default")))
#else
#define PD_EXPORT
#endif

/* The ABI version. A host refuses a library whose major version differs from the one it was
 * compiled against; minor versions only add functions. */
#define PD_API_VERSION_MAJOR 1
#define PD_API_VERSION_MINOR 6 /* 1: pd_context_set_row_seeds, pd_context_memory;
                                  2: devices, device selection, engine caches, device time;
                                  3: batch profile, backend parameters, timing caches;
                                  4: pd_engine_options_set_max_memory, size checks;
                                  5: pd_engine_options_add_external (ONNX external data);
                                  6: CUDA IPC mappings (pd_cuda_ipc_*), pd_context_run_device */

/* Largest tensor rank the ABI carries. */
#define PD_MAX_RANK 8

/* Writes the library's ABI version. Never fails. */
PD_EXPORT void pd_api_version(uint32_t* major, uint32_t* minor);

/* Library version string, e.g. "0.1.0". Static storage; never NULL. */
PD_EXPORT const char* pd_version_string(void);

/* ---------------------------------------------------------------------------------------- */
/* Errors                                                                                    */

typedef enum pd_error_code {
  PD_ERR_INVALID_ARG = 1, /* the caller's input is wrong (bad model, bad tensor, bad option) */
  PD_ERR_NOT_FOUND = 2,   /* a named thing (backend, input, file) does not exist */
  PD_ERR_UNAVAILABLE = 3, /* a resource is missing right now (backend not loaded, no device) */
  PD_ERR_UNSUPPORTED = 4, /* valid, but policyd cannot do it (unsupported op or data type) */
  PD_ERR_INTERNAL = 5     /* our own fault */
} pd_error_code;

typedef struct pd_error pd_error;

PD_EXPORT pd_error_code pd_error_get_code(const pd_error* err);
/* Human-readable message. Owned by err; valid until pd_error_free(err). */
PD_EXPORT const char* pd_error_get_message(const pd_error* err);
PD_EXPORT void pd_error_free(pd_error* err);

/* ---------------------------------------------------------------------------------------- */
/* Logging                                                                                   */

typedef enum pd_log_level {
  PD_LOG_DEBUG = 0,
  PD_LOG_INFO = 1,
  PD_LOG_WARN = 2,
  PD_LOG_ERROR = 3
} pd_log_level;

/* Receives every log line of the library. msg is borrowed for the duration of the call. The
 * callback may be invoked from any thread, concurrently. */
typedef void (*pd_log_fn)(void* user, pd_log_level level, const char* msg);

/* Installs the process-wide log sink (NULL restores the default, which drops everything below
 * PD_LOG_WARN and writes the rest to stderr). Call before creating a runtime. */
PD_EXPORT void pd_set_log_callback(pd_log_fn fn, void* user);

/* ---------------------------------------------------------------------------------------- */
/* Data types: values equal ONNX TensorProto.DataType.                                       */

typedef enum pd_dtype {
  PD_DTYPE_UNDEFINED = 0,
  PD_DTYPE_FLOAT32 = 1,
  PD_DTYPE_UINT8 = 2,
  PD_DTYPE_INT8 = 3,
  PD_DTYPE_UINT16 = 4,
  PD_DTYPE_INT16 = 5,
  PD_DTYPE_INT32 = 6,
  PD_DTYPE_INT64 = 7,
  PD_DTYPE_STRING = 8,
  PD_DTYPE_BOOL = 9,
  PD_DTYPE_FLOAT16 = 10,
  PD_DTYPE_FLOAT64 = 11,
  PD_DTYPE_UINT32 = 12,
  PD_DTYPE_UINT64 = 13,
  PD_DTYPE_BFLOAT16 = 16
} pd_dtype;

/* A tensor passed across the ABI: plain data, no ownership. Dims are row-major. */
typedef struct pd_tensor {
  int32_t dtype; /* pd_dtype */
  int32_t rank;
  int64_t dims[PD_MAX_RANK];
  void* data;         /* byte_size bytes, tightly packed; bool is one byte per element */
  uint64_t byte_size; /* element count * element size */
} pd_tensor;

/* ---------------------------------------------------------------------------------------- */
/* Runtime: the backend registry. One per process is typical.                               */

typedef struct pd_runtime pd_runtime;
typedef struct pd_runtime_options pd_runtime_options;

/* Caller takes ownership of *out; release with pd_runtime_options_destroy. */
PD_EXPORT pd_error* pd_runtime_options_create(pd_runtime_options** out);
PD_EXPORT void pd_runtime_options_destroy(pd_runtime_options* opts);
/* Folder holding libpolicyd_backend_<name>.so. Default: the folder of libpolicyd.so itself,
 * then $POLICYD_BACKEND_DIR when set. */
PD_EXPORT pd_error* pd_runtime_options_set_backend_dir(pd_runtime_options* opts, const char* dir);

/* Loads every backend plugin it can find. A plugin that fails to load is recorded with the
 * reason (see pd_runtime_backend_info) and does not fail the call. opts may be NULL.
 * Caller takes ownership of *out; release with pd_runtime_destroy after every engine made
 * from it is destroyed. */
PD_EXPORT pd_error* pd_runtime_create(const pd_runtime_options* opts, pd_runtime** out);
PD_EXPORT void pd_runtime_destroy(pd_runtime* rt);

typedef struct pd_backend_info {
  const char* name;    /* "cpu", "cuda", "tensorrt" */
  const char* version; /* backend and library version, e.g. "onednn-2.6.3"; "" when not loaded */
  const char* path;    /* the plugin file tried */
  int32_t available;   /* 1 when the backend loaded and can build engines */
  const char* reason;  /* why it is not available; "" when available */
} pd_backend_info;

/* Number of backends the runtime knows of (loaded or not). */
PD_EXPORT int32_t pd_runtime_backend_count(const pd_runtime* rt);
/* Fills *out for backend i in [0, count). Strings are owned by rt and valid until
 * pd_runtime_destroy. */
PD_EXPORT pd_error* pd_runtime_backend_info(const pd_runtime* rt, int32_t i, pd_backend_info* out);

/* The devices a backend can build for (GPU backends; "cpu" has none), found when the runtime
 * loaded the plugin. Strings owned by rt and valid until pd_runtime_destroy. */
typedef struct pd_device_info {
  int32_t ordinal;       /* the device's number for pd_engine_options_set_device */
  const char* name;      /* "NVIDIA H100 80GB HBM3" */
  const char* uuid;      /* "GPU-…" as nvidia-smi prints it; "" when unknown */
  const char* target;    /* what an engine cache is bound to, e.g. "sm_90" */
  int32_t cc_major;      /* compute capability */
  int32_t cc_minor;
  uint64_t total_memory; /* bytes */
} pd_device_info;

/* Number of devices of the named backend (0 for cpu or a backend that did not load);
 * PD_ERR_NOT_FOUND for an unknown backend name. */
PD_EXPORT pd_error* pd_runtime_device_count(const pd_runtime* rt, const char* backend, int32_t* out);
/* Fills *out for device i in [0, count) of the named backend. */
PD_EXPORT pd_error* pd_runtime_device_info(const pd_runtime* rt, const char* backend, int32_t i,
                                           pd_device_info* out);

/* ---------------------------------------------------------------------------------------- */
/* Engine: one model, imported, validated, optimized and compiled for one backend.           */

typedef struct pd_engine pd_engine;
typedef struct pd_engine_options pd_engine_options;

/* Caller takes ownership of *out; release with pd_engine_options_destroy. */
PD_EXPORT pd_error* pd_engine_options_create(pd_engine_options** out);
PD_EXPORT void pd_engine_options_destroy(pd_engine_options* opts);
/* Backend to build for: "cpu" (default). */
PD_EXPORT pd_error* pd_engine_options_set_backend(pd_engine_options* opts, const char* name);
/* Threads one context may use for one run (default 1: one context per core is the model). */
PD_EXPORT pd_error* pd_engine_options_set_threads(pd_engine_options* opts, int32_t threads);
/* Name used in error and log messages (e.g. "3DBall@1.0.0"). Default "model". */
PD_EXPORT pd_error* pd_engine_options_set_name(pd_engine_options* opts, const char* name);
/* Device to build for and run on: an ordinal of pd_runtime_device_info (default 0). Ignored
 * by backends without devices (cpu); out of range fails pd_engine_create. */
PD_EXPORT pd_error* pd_engine_options_set_device(pd_engine_options* opts, int32_t device);
/* on != 0: contexts measure the device time of each run (pd_context_device_time). Costs a
 * little per run; for benchmarks. Default off. */
PD_EXPORT pd_error* pd_engine_options_set_profiling(pd_engine_options* opts, int32_t on);
/* The host's digest of the model bytes (e.g. "sha256:<hex>" from the artifact manifest),
 * printable ASCII. Recorded in a serialized engine and required to match when the engine is
 * built from a cache. Default "". */
PD_EXPORT pd_error* pd_engine_options_set_model_digest(pd_engine_options* opts, const char* digest);
/* Build from an engine cache made by pd_engine_serialize (copied; size 0 clears it). The call
 * checks that the bytes are an engine cache; pd_engine_create then checks that it is bound to
 * this model (fingerprint of the ONNX bytes and the model digest), backend, backend version,
 * device target (e.g. "sm_90") and build options, and fails with PD_ERR_INVALID_ARG naming the
 * first field that differs ("…; rebuild engines") otherwise: a stale cache is never used. The
 * ONNX bytes are still needed (signature, fallback kernels). */
PD_EXPORT pd_error* pd_engine_options_set_cache(pd_engine_options* opts, const void* data, size_t size);

/* The batch sizes the engine will be run with: 1 <= min <= opt <= max (default 1, 1, 0; max 0
 * means no bound is known). Backends that compile for a range of shapes use them (tensorrt: the
 * optimization profile over the batch dimension, tuned for opt) and refuse a run outside
 * [min, max] with PD_ERR_INVALID_ARG; the others ignore them. Part of the engine cache binding
 * of the backends that use them. */
PD_EXPORT pd_error* pd_engine_options_set_batch_profile(pd_engine_options* opts, int64_t min, int64_t opt,
                                                        int64_t max);
/* A backend's own build parameter, "<backend>.<key>" = value, e.g. "tensorrt.precision" =
 * "fp16" (docs/engine.md lists them). Only the parameters of the backend the engine is built
 * for reach it; that backend refuses a key or value it does not know at pd_engine_create
 * (PD_ERR_INVALID_ARG naming it). Setting a key again replaces its value; an empty value
 * removes it. Parameters that change what is built are part of the engine cache binding. */
PD_EXPORT pd_error* pd_engine_options_set_param(pd_engine_options* opts, const char* key, const char* value);
/* A timing cache from an earlier build on the same GPU architecture (pd_engine_timing_cache)
 * that the build may start from (copied; size 0 clears it). Backends without one ignore it; a
 * cache the backend cannot use (another library version or architecture) is ignored with a
 * warning in the log: it only makes the build slower, never changes its result's correctness. */
PD_EXPORT pd_error* pd_engine_options_set_timing_cache(pd_engine_options* opts, const void* data, size_t size);

/* The most host memory the model may take, in bytes (default 0: no limit). pd_engine_create
 * checks it while it imports and folds the model, before each allocation: the constants
 * (initializers, Constant nodes, tensor attributes, folded values) together, then those plus
 * one context's activation arena at batch 1 as the portable kernels would plan it. A model over
 * the limit fails with PD_ERR_INVALID_ARG naming what does not fit and the limit. Contexts, the
 * arenas of larger batches and a backend's own copies of the weights are not counted. */
PD_EXPORT pd_error* pd_engine_options_set_max_memory(pd_engine_options* opts, uint64_t bytes);

/* One file of the model's ONNX external data (e.g. "model.onnx.data"): `location` is its name
 * relative to the model, as the model's tensors name it ("./" and repeated '/' are ignored);
 * an empty, absolute or backslashed name, or one with "..", fails with PD_ERR_INVALID_ARG.
 * The bytes are copied (size 0 is an empty file; data may then be NULL); adding a name again
 * replaces its bytes. The library never opens files: pd_engine_create reads every tensor whose
 * data_location is EXTERNAL from these buffers, by the ONNX spec's keys location, offset and
 * length (checksum is accepted, not checked: the host verifies the bytes), and fails with
 * PD_ERR_INVALID_ARG naming the tensor and the file for a file not given, an offset or length
 * outside it, or a length that differs from the tensor's dims x dtype, before allocating. The
 * weights count against pd_engine_options_set_max_memory like inline ones. Engine caches bind
 * to the model with its external data. */
PD_EXPORT pd_error* pd_engine_options_add_external(pd_engine_options* opts, const char* location, const void* data,
                                                   size_t size);

/* Imports an ONNX model from memory (the bytes are borrowed for the call only), checks it,
 * runs the graph passes and prepares it on the chosen backend. A model ONNX Runtime would
 * reject, or one with an unsupported operator, fails with a message naming the problem (and
 * the node). opts may be NULL. Caller takes ownership of *out; release with pd_engine_destroy
 * after every context made from it is destroyed. */
PD_EXPORT pd_error* pd_engine_create(pd_runtime* rt, const void* onnx, size_t onnx_size,
                                     const pd_engine_options* opts, pd_engine** out);
PD_EXPORT void pd_engine_destroy(pd_engine* engine);

/* Serializes a built engine into an engine cache for pd_engine_options_set_cache: an envelope
 * binding the backend's bytes (GPU backends: the compiled kernels for the device's
 * architecture, the prepared weights) to the model, backend version, target and options.
 * *data is allocated by the library: the caller owns it and releases it with
 * pd_engine_serialized_free. Backends without caches (cpu) fail with PD_ERR_UNSUPPORTED. */
PD_EXPORT pd_error* pd_engine_serialize(const pd_engine* engine, void** data, size_t* size);
PD_EXPORT void pd_engine_serialized_free(void* data);

/* The timing cache the build left (tensorrt: the measured kernel timings, to be kept beside the
 * engine cache of this GPU architecture and passed to later builds). *size is 0 when the backend
 * keeps none or the engine was made from an engine cache. *data as for pd_engine_serialize,
 * released with pd_engine_serialized_free. */
PD_EXPORT pd_error* pd_engine_timing_cache(const pd_engine* engine, void** data, size_t* size);

/* Backend that runs this engine ("cpu"). Owned by engine. */
PD_EXPORT const char* pd_engine_backend(const pd_engine* engine);

/* Signature of one input or output. Dims use -1 for a dimension not fixed by the model.
 * batch_dim is 0 when dimension 0 is the model's batch dimension (dynamic, shared by the
 * inputs), -1 when the tensor has no batch dimension. Strings owned by the engine. */
typedef struct pd_io_info {
  const char* name;
  int32_t dtype;
  int32_t rank;
  int64_t dims[PD_MAX_RANK];
  int32_t batch_dim;
} pd_io_info;

PD_EXPORT int32_t pd_engine_input_count(const pd_engine* engine);
PD_EXPORT int32_t pd_engine_output_count(const pd_engine* engine);
PD_EXPORT pd_error* pd_engine_input_info(const pd_engine* engine, int32_t i, pd_io_info* out);
PD_EXPORT pd_error* pd_engine_output_info(const pd_engine* engine, int32_t i, pd_io_info* out);

/* 1 when every input has a dynamic first dimension that all inputs share (the model accepts
 * any batch size), 0 when the model must be run with the shapes it declares. */
PD_EXPORT int32_t pd_engine_batchable(const pd_engine* engine);

/* ---------------------------------------------------------------------------------------- */
/* Context: the per-thread execution state of an engine (memory plan, kernels and scratch   */
/* per shape bucket, random state). Use from one thread at a time.                           */

typedef struct pd_context pd_context;

/* Caller takes ownership of *out; release with pd_context_destroy. */
PD_EXPORT pd_error* pd_context_create(pd_engine* engine, pd_context** out);
PD_EXPORT void pd_context_destroy(pd_context* ctx);

/* Seeds the context stream of the random operators (Multinomial, RandomNormal*,
 * RandomUniform*, Bernoulli): a std::mt19937_64 that every random op of every run draws from,
 * in turn, while no row seeds are set. Two contexts with the same seed and the same sequence
 * of runs give the same samples. Does not change the row seeds. */
PD_EXPORT pd_error* pd_context_set_seed(pd_context* ctx, uint64_t seed);

/* Per-row seeds of the random operators, for the following runs until called again: with
 * them, a row's samples depend only on its seed, its own inputs and the op, never on the other
 * rows of the batch, their number or the row's position, so a request sampled with seed s gives
 * the same action alone or batched with others.
 *
 *  seeds:  n values, copied (the caller keeps ownership; NULL allowed when n == 0). The call
 *          allocates only when n exceeds every n set before on this context.
 *  n == 0: back to the context stream of pd_context_set_seed, which row-seeded runs neither
 *          read nor advance.
 *
 * Rows: the rows of a random op are the slices of its output along dimension 0 (Multinomial:
 * of its input, the batch of distributions, which is also its output's dimension 0;
 * RandomNormal / RandomUniform, which have no input, use their fixed output shape like the
 * *Like ops use theirs). Row r draws from a stream of its own:
 *   mix(z)  = SplitMix64's finalizer: z ^= z >> 30; z *= 0xbf58476d1ce4e5b9;
 *             z ^= z >> 27; z *= 0x94d049bb133111eb; z ^= z >> 31
 *   salt    = FNV-1a 64 of the op's node's first output name: the same in every shape bucket
 *             and run, and different for the different ops of a model (their outputs are
 *             named differently), so that they draw unrelated values
 *   state   = mix(seeds[r] ^ mix(salt))
 *   draw    = state += 0x9e3779b97f4a7c15; mix(state)      (SplitMix64)
 * and its elements take the draws in row-major order through the transforms of
 * csrc/core/ops/random.cpp (the same as with the context stream). Dimension 0 must equal n,
 * else the run fails with PD_ERR_INVALID_ARG naming the op and both sizes. With n == 1 the
 * whole output of every random op draws from seeds[0]'s stream, row after row: a one-row
 * request run alone with seeds {s} gets exactly what it gets as row r of a batch whose
 * seeds[r] == s. A model without random ops ignores row seeds. */
PD_EXPORT pd_error* pd_context_set_row_seeds(pd_context* ctx, const uint64_t* seeds, size_t n);

/* Memory of a context and its engine, in bytes. Fields are only ever added with a new
 * function, never to this struct. */
typedef struct pd_memory_info {
  /* This context: the activation arenas of the shape buckets it holds now (each bucket has
   * one; a run at a new batch size adds one, at most 64 are kept). */
  uint64_t arena_bytes;
  /* The engine: its weights and other constants (initializers and folded values) in host
   * memory. Shared by every context of the engine: count it once per engine, not per context. */
  uint64_t weight_bytes;
  /* This context: copies of weights the backend made in its own layout (cpu: the blocked
   * layouts oneDNN's kernels prefer), made at the first bucket that needs them and reused by
   * its other buckets. Not shared with other contexts. */
  uint64_t context_weight_bytes;
  /* This context: the number of shape buckets it holds now. */
  uint64_t buckets;
} pd_memory_info;

/* Fills *out. Unlike the other context functions this one may be called from any thread,
 * also while another thread runs ctx (not while it destroys ctx). */
PD_EXPORT pd_error* pd_context_memory(const pd_context* ctx, pd_memory_info* out);

/* Device time of the last run in milliseconds (CUDA events around the kernels, host<->device
 * copies excluded), for an engine built with pd_engine_options_set_profiling. Fails with
 * PD_ERR_UNSUPPORTED when the backend does not measure it (cpu) or profiling is off. Same
 * threading as pd_context_run. */
PD_EXPORT pd_error* pd_context_device_time(const pd_context* ctx, double* ms);

/* Runs the model once.
 *  inputs:  n_inputs tensors in the engine's input order; data is borrowed for the call. Each
 *           is checked before anything is read: dtype, rank in [0, PD_MAX_RANK] and equal to
 *           the signature's, dims >= 0 and equal to the fixed ones, the element count and
 *           count * element size without overflow and at most 16 GiB, byte_size equal to it,
 *           data non-NULL unless byte_size is 0; PD_ERR_INVALID_ARG naming the input
 *           otherwise. Dimensions computed from them inside the model are checked the same way
 *           (PD_ERR_INVALID_ARG naming the node).
 *  outputs: n_outputs slots (must equal pd_engine_output_count) filled with the results in the
 *           engine's output order. Their data is owned by the context and valid until the next
 *           pd_context_run or pd_context_destroy on it.
 * Shapes are checked against the signature; a mismatch is PD_ERR_INVALID_ARG naming the input.
 * The first run with a new set of input shapes builds the plan for that shape bucket; later
 * runs with the same shapes allocate nothing. */
PD_EXPORT pd_error* pd_context_run(pd_context* ctx, const pd_tensor* inputs, int32_t n_inputs,
                                   pd_tensor* outputs, int32_t n_outputs);

/* ---------------------------------------------------------------------------------------- */
/* CUDA shared memory: device memory of another process, reached through a CUDA IPC memory    */
/* handle (Triton's CUDA shared memory extension).                                            */

typedef struct pd_cuda_ipc pd_cuda_ipc;

/* Size of a CUDA IPC memory handle (cudaIpcMemHandle_t) in bytes. */
#define PD_CUDA_IPC_HANDLE_SIZE 64

/* Opens the exporter's allocation named by handle (the bytes of its cudaIpcGetMemHandle,
 * handle_size must be PD_CUDA_IPC_HANDLE_SIZE) on the cuda backend's device `device`
 * (cudaIpcOpenMemHandle). PD_ERR_UNAVAILABLE when the cuda backend did not load (with its
 * reason), PD_ERR_INVALID_ARG for a device out of range or a handle the driver refuses
 * (forged, freed, of another machine). The mapping's base device pointer is
 * pd_cuda_ipc_pointer; its size is the exporter's to tell (the driver does not say).
 * Caller takes ownership of *out and must call pd_cuda_ipc_destroy (after every run that
 * reads or writes it) and before pd_runtime_destroy. */
PD_EXPORT pd_error* pd_cuda_ipc_open(pd_runtime* rt, int32_t device, const void* handle, size_t handle_size,
                                     pd_cuda_ipc** out);
/* The mapping's base device pointer; owned by m, valid until pd_cuda_ipc_destroy(m). NULL
 * for NULL. */
PD_EXPORT void* pd_cuda_ipc_pointer(const pd_cuda_ipc* m);
/* Copies n bytes at offset of the mapping into host memory dst (pd_cuda_ipc_read), or from host
 * memory src to there (pd_cuda_ipc_write): cudaMemcpy on the mapping's device, synchronous.
 * The driver does not tell a mapping's size: the caller checks that [offset, offset + n) lies in
 * the exporter's allocation (the registered byte_size). Thread-safe. */
PD_EXPORT pd_error* pd_cuda_ipc_read(const pd_cuda_ipc* m, uint64_t offset, void* dst, size_t n);
PD_EXPORT pd_error* pd_cuda_ipc_write(pd_cuda_ipc* m, uint64_t offset, const void* src, size_t n);
/* Closes the mapping (cudaIpcCloseMemHandle); a failure is logged, never returned. NULL
 * allowed. */
PD_EXPORT void pd_cuda_ipc_destroy(pd_cuda_ipc* m);

/* Runs the model once with device memory in and out (same threading as pd_context_run).
 *  inputs:  as for pd_context_run (checked the same way), but data is a device pointer on the
 *           engine's device (e.g. pd_cuda_ipc_pointer plus an offset), borrowed for the call.
 *  outputs: n_outputs slots in the engine's output order; the caller sets data to a device
 *           pointer with byte_size bytes of room, the run writes the result there and sets
 *           dtype, rank, dims and byte_size. A result larger than its room fails with
 *           PD_ERR_INVALID_ARG naming the output, before any output is written.
 * A pointer that is not device memory of the engine's device fails with PD_ERR_INVALID_ARG
 * naming the tensor. Backends without device memory (cpu) fail with PD_ERR_UNSUPPORTED naming
 * the backend. The cuda backend copies the inputs through its host staging and the results
 * back (a direct binding of the caller's memory is not done yet). */
PD_EXPORT pd_error* pd_context_run_device(pd_context* ctx, const pd_tensor* inputs, int32_t n_inputs,
                                          pd_tensor* outputs, int32_t n_outputs);

#ifdef __cplusplus
}
#endif

#endif /* POLICYD_H_ */
