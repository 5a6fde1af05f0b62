// Stand-in for TensorRT's NvInferVersion.h, for the syntax check of backend_tensorrt.cpp only
// (ctest tensorrt_syntax_*; nothing links against it). The version is chosen with
// -DPD_STANDIN_TRT_MAJOR/MINOR so the check covers 10.0, 10.x and 11. Declarations were read
// from the TensorRT 10 headers; the names are NVIDIA's, nothing here is an implementation.
#pragma once
#ifndef PD_STANDIN_TRT_MAJOR
#define PD_STANDIN_TRT_MAJOR 10
#endif
#ifndef PD_STANDIN_TRT_MINOR
#define PD_STANDIN_TRT_MINOR 13
#endif
#define NV_TENSORRT_MAJOR PD_STANDIN_TRT_MAJOR
#define NV_TENSORRT_MINOR PD_STANDIN_TRT_MINOR
#define NV_TENSORRT_PATCH 0
#define NV_TENSORRT_BUILD 0
#define NV_TENSORRT_VERSION (NV_TENSORRT_MAJOR * 10000 + NV_TENSORRT_MINOR * 100 + NV_TENSORRT_PATCH)
