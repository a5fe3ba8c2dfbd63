// The emulator's out-of-line half, compiled once into each binary that runs
// emulated kernels (the emulated op library, the C++ test drivers). The
// emulator is header-only: this file is nothing but the one translation unit
// that asks the headers for their implementation.
#define FUSEDSEQ_EMU_IMPLEMENTATION
#include "emu/cuda_host.h"
