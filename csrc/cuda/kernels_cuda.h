// Entry points of the torch-free CUDA code (host functions; no torch types).
#pragma once

namespace fusedseq::cuda {

// CUDA runtime version this build links against (e.g. 13000).
int runtime_version();

// Launches a one-thread kernel on `device` and reads its result back:
// returns "" on success, else the CUDA error text (no device, no kernel image
// for this GPU's arch, ...).
const char* probe_device(int device);

}  // namespace fusedseq::cuda
