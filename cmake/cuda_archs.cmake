# Per-file CUDA arch lists (used by cmake/cuda.cmake; pure functions, so that
# tests/test_build.py can check them with `cmake -P`). The rule, by file name:
#   foo.cu          every arch of FUSEDSEQ_CUDA_ARCHS
#   foo_sm90a.cu    90a only: arch-specific features (wgmma, TMA, setmaxnreg)
#                   must never be compiled for another arch
#   foo_sm90.cu     90 and every newer plain or arch-specific arch in the list
# A file none of whose archs is in the list is left out of the build.

# The archs of FUSEDSEQ_CUDA_ARCHS that `file` may be compiled for.
function(fusedseq_cuda_file_archs file out)
  get_filename_component(name "${file}" NAME_WE)
  if(NOT name MATCHES "_sm([0-9]+)(a?)$")
    set(${out} "${FUSEDSEQ_CUDA_ARCHS}" PARENT_SCOPE)
    return()
  endif()
  set(need "${CMAKE_MATCH_1}")
  set(arch_specific "${CMAKE_MATCH_2}")
  set(archs "")
  foreach(arch IN LISTS FUSEDSEQ_CUDA_ARCHS)
    if(arch_specific)
      if(arch STREQUAL "${need}a")
        list(APPEND archs "${arch}")
      endif()
    elseif(arch MATCHES "^([0-9]+)a?$" AND CMAKE_MATCH_1 GREATER_EQUAL need)
      list(APPEND archs "${arch}")
    endif()
  endforeach()
  set(${out} "${archs}" PARENT_SCOPE)
endfunction()

# -gencode flags: SASS for each arch, PTX for the highest plain one.
function(fusedseq_gencode archs out)
  set(flags "")
  set(ptx "")
  foreach(arch IN LISTS archs)
    list(APPEND flags "-gencode=arch=compute_${arch},code=sm_${arch}")
    if(arch MATCHES "^[0-9]+$")
      set(ptx "${arch}")
    endif()
  endforeach()
  if(ptx)
    list(APPEND flags "-gencode=arch=compute_${ptx},code=compute_${ptx}")
  endif()
  set(${out} "${flags}" PARENT_SCOPE)
endfunction()
