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

Activation activation(const char* op, std::string_view nonlinearity);

void supported_device(const char* op, const Tensor& t);

}  // namespace fusedseq::checks
