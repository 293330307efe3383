// Stands in for the CUDA toolkit's <cuda_bf16.h> in the simulation build (found first through
// -Ikernels/sim): the bf16 type and conversions the kernels use are defined by cuda_sim.h.
#pragma once
#include "cuda_sim.h"
