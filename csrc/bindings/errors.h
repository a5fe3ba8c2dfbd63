// Python exceptions from the stable-ABI bindings.
//
// A stable-ABI extension cannot throw c10's typed errors (they live in
// libc10, whose ABI changes between torch releases), and a plain
// std::exception reaches Python as RuntimeError. What does cross cleanly is
// what pybind11 translates when torch's Python bindings catch it:
//   std::invalid_argument          -> ValueError (pybind11's standard mapping)
//   pybind11::type_error           -> TypeError
//   NotImplemented (below)         -> NotImplementedError
// pybind11's builtin_exception is caught by type name across shared objects
// and raises through its own virtual set_error(), so this holds whichever
// pybind11 torch was built with (tests/test_bad_input.py checks every case).
#pragma once
// Only the exception classes: pybind11/pybind11.h would double a binding file's compile time.
#include <pybind11/detail/common.h>

#include <sstream>
#include <stdexcept>
#include <string>

namespace fusedseq {

struct NotImplemented : pybind11::builtin_exception {
  using pybind11::builtin_exception::builtin_exception;
  void set_error() const override { PyErr_SetString(PyExc_NotImplementedError, what()); }
};

template <typename... Args>
std::string cat_message(const Args&... args) {
  std::ostringstream os;
  (os << ... << args);
  return os.str();
}

template <typename... Args>
[[noreturn]] void throw_value_error(const Args&... args) {
  throw std::invalid_argument(cat_message(args...));
}

template <typename... Args>
[[noreturn]] void throw_type_error(const Args&... args) {
  throw pybind11::type_error(cat_message(args...));
}

template <typename... Args>
[[noreturn]] void throw_not_implemented(const Args&... args) {
  throw NotImplemented(cat_message(args...));
}

}  // namespace fusedseq

// The message is built only when the check fails.
#define FUSEDSEQ_CHECK_VALUE(cond, ...) \
  do {                                  \
    if (!(cond)) ::fusedseq::throw_value_error(__VA_ARGS__); \
  } while (0)
#define FUSEDSEQ_CHECK_TYPE(cond, ...) \
  do {                                 \
    if (!(cond)) ::fusedseq::throw_type_error(__VA_ARGS__); \
  } while (0)
