// (CUDA runtime code: compiled by nvcc only, never emulated.)
// A build check for the CUDA path: a kernel that must run on the GPU at hand.
// "no kernel image is available for execution on the device" is the error a
// user sees when the arch list misses their GPU; this probe surfaces it in
// fusedseq.build_info() instead of in the middle of a model.
#include <cuda_runtime.h>

#include "cuda/kernels_cuda.h"

namespace fusedseq::cuda {
namespace {

__global__ void probe_kernel(int* out) { *out = 0x5eed; }

}  // namespace

int runtime_version() {
  int v = 0;
  cudaRuntimeGetVersion(&v);
  return v;
}

const char* probe_device(int device) {
  int prev = 0;
  cudaError_t err = cudaGetDevice(&prev);
  if (err != cudaSuccess) return cudaGetErrorString(err);
  if ((err = cudaSetDevice(device)) != cudaSuccess) return cudaGetErrorString(err);
  int* d_out = nullptr;
  int h_out = 0;
  if ((err = cudaMalloc(&d_out, sizeof(int))) == cudaSuccess) {
    probe_kernel<<<1, 1>>>(d_out);
    err = cudaGetLastError();
    if (err == cudaSuccess) err = cudaMemcpy(&h_out, d_out, sizeof(int), cudaMemcpyDeviceToHost);
    cudaFree(d_out);
    if (err == cudaSuccess && h_out != 0x5eed) err = cudaErrorUnknown;
  }
  cudaSetDevice(prev);
  return err == cudaSuccess ? "" : cudaGetErrorString(err);
}

}  // namespace fusedseq::cuda
