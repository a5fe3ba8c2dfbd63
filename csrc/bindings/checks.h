// Argument checks shared by every op. Each failure names the op, the
// argument and what was expected, and is raised before any kernel runs:
// ValueError for shapes and values, TypeError for dtypes, devices and kinds.
#pragma once
#include <algorithm>
#include <initializer_list>
#include <string>
#include <string_view>

#include "bindings/errors.h"
#include "bindings/stable.h"
#include "common/params.h"

namespace fusedseq::checks {

std::string sizes_str(torch::headeronly::IntHeaderOnlyArrayRef s);
std::string device_str(const torch::stable::Device& d);
const char* dtype_str(torch::headeronly::ScalarType t);

// t is a defined, floating-point tensor of exactly `dims` dims, none empty.
void tensor(const char* op, const char* name, const Tensor& t, int64_t dims, const char* layout);

// t has the expected sizes; `layout` spells them symbolically, e.g. "(H, I)".
void shape(const char* op, const char* name, const Tensor& t, std::initializer_list<int64_t> expected,
           const char* layout);

// t matches ref in dtype and device.
void like(const char* op, const char* name, const Tensor& t, const char* ref_name, const Tensor& ref);

// tensor(), like(t, x) and shape() at once: a floating tensor of exactly
// `expected` sizes with x's dtype and device.
void tensor_like(const char* op, const char* name, const Tensor& t, const Tensor& x,
                 std::initializer_list<int64_t> expected, const char* layout);

// The weights and biases of a recurrent layer whose W_ih (G·H, I) and W_hh
// (G·H, H) stack `gates` = G blocks of H rows (Elman 1, GRU 3, LSTM 4), like
// `x` and against its input width I; a wrong row count names the weight.
void recurrent_weights(const char* op, const Tensor& x, int64_t I, int64_t H, int64_t gates, const Tensor& w_ih,
                       const Tensor& w_hh, const std::optional<Tensor>& b_ih, const std::optional<Tensor>& b_hh);

// A recurrent state (h, h0, ...): a (B, H) tensor like `x` whose B is x's
// batch (dim `batch_dim` of x); returns H.
int64_t first_state(const char* op, const char* name, const Tensor& t, const Tensor& x, int64_t batch_dim);

// A tensor the forward returned in the compute dtype `dt` (gates, cell states,
// lse): that dtype, on x's device, with the given sizes.
void workspace(const char* op, const char* name, const Tensor& t, ScalarType dt, const Tensor& x,
               std::initializer_list<int64_t> expected, const char* layout);

Activation activation(const char* op, std::string_view nonlinearity);

void supported_device(const char* op, const Tensor& t);

}  // namespace fusedseq::checks
