# sparsenet_find_system_openblas(): a system OpenBLAS as the imported target
# OpenBLAS::OpenBLAS, for builds with -DSPARSENET_BLAS=openblas (Debian/Ubuntu
# libopenblas-dev, Fedora openblas-devel, Homebrew, conda-forge, a source build
# under CMAKE_PREFIX_PATH or OpenBLAS_DIR). Used by CMakeLists.txt and by the
# installed sparsenetConfig.cmake, so that both find the same library.
#
# Through OpenBLAS's own CMake config where it has one: recent versions define
# the target; older ones (Debian 12's 0.3.21) set only OpenBLAS_LIBRARIES and
# OpenBLAS_INCLUDE_DIRS. Otherwise by name: libopenblas and a cblas.h. The
# header must be OpenBLAS's (it declares openblas_set_num_threads, which
# sparsenet calls), not the reference CBLAS's. Sets SPARSENET_OPENBLAS_ERROR
# to why it failed, empty on success.
function(sparsenet_find_system_openblas)
  set(SPARSENET_OPENBLAS_ERROR "" PARENT_SCOPE)
  if(TARGET OpenBLAS::OpenBLAS)
    return()
  endif()
  find_package(OpenBLAS CONFIG QUIET)
  if(TARGET OpenBLAS::OpenBLAS)
    return()
  endif()
  set(_library "")
  set(_include "")
  if(OpenBLAS_LIBRARIES)
    list(GET OpenBLAS_LIBRARIES 0 _library)
    set(_include "${OpenBLAS_INCLUDE_DIRS}")
  endif()
  if(NOT _library OR NOT EXISTS "${_library}")
    find_library(SPARSENET_OPENBLAS_LIBRARY NAMES openblas)
    set(_library "${SPARSENET_OPENBLAS_LIBRARY}")
  endif()
  if(NOT _include)
    find_path(SPARSENET_OPENBLAS_INCLUDE_DIR cblas.h PATH_SUFFIXES openblas)
    set(_include "${SPARSENET_OPENBLAS_INCLUDE_DIR}")
  endif()
  if(NOT _library OR NOT EXISTS "${_library}")
    set(SPARSENET_OPENBLAS_ERROR "no OpenBLAS library (libopenblas) found" PARENT_SCOPE)
    return()
  endif()
  set(_header "")
  foreach(_dir IN LISTS _include)
    if(EXISTS "${_dir}/cblas.h")
      set(_header "${_dir}/cblas.h")
      break()
    endif()
  endforeach()
  if(NOT _header)
    set(SPARSENET_OPENBLAS_ERROR "found ${_library} but no cblas.h beside it (in ${_include})" PARENT_SCOPE)
    return()
  endif()
  file(STRINGS "${_header}" _declares REGEX "openblas_set_num_threads" LIMIT_COUNT 1)
  if(NOT _declares)
    set(SPARSENET_OPENBLAS_ERROR "${_header} is not OpenBLAS's cblas.h (no openblas_set_num_threads)" PARENT_SCOPE)
    return()
  endif()
  add_library(OpenBLAS::OpenBLAS UNKNOWN IMPORTED)
  set_target_properties(OpenBLAS::OpenBLAS PROPERTIES
    IMPORTED_LOCATION "${_library}"
    INTERFACE_INCLUDE_DIRECTORIES "${_include}")
endfunction()
