# Sanitizer and fuzzing builds (docs/reliability.md, "Fuzzing and sanitizers"). Both are off by
# default and leave the ordinary build's flags untouched.
#
#   -DDITWIN_SANITIZE=address,undefined   every C++ target compiled and linked with
#                                          -fsanitize=address,undefined (tools/sanitize.sh)
#   -DDITWIN_SANITIZE=thread               ThreadSanitizer instead (not combinable with address)
#   -DDITWIN_FUZZ=ON                       Clang only: the libFuzzer targets in fuzz/, with every
#                                          library instrumented for coverage (tools/fuzz.sh)
set(DITWIN_SANITIZE "" CACHE STRING "Sanitizers for every C++ target, e.g. address,undefined or thread (empty: none)")
option(DITWIN_FUZZ "Build the libFuzzer targets in fuzz/ (Clang only)" OFF)

if(DITWIN_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "DITWIN_FUZZ needs Clang's libFuzzer: configure with -DCMAKE_CXX_COMPILER=clang++ "
                        "(this is ${CMAKE_CXX_COMPILER_ID})")
  endif()
  # A fuzzer without ASan and UBSan only finds crashes that are already signals.
  if(DITWIN_SANITIZE STREQUAL "")
    set(DITWIN_SANITIZE "address,undefined" CACHE STRING "" FORCE)
  endif()
endif()

if(NOT DITWIN_SANITIZE STREQUAL "")
  # -fno-sanitize-recover: undefined behaviour stops the test (or the fuzzer) where it happens
  # instead of printing and carrying on, so CI fails on it. Frame pointers keep the reports'
  # stacks whole in the -O3 compute kernels.
  set(_ditwin_sanitize_flags -fsanitize=${DITWIN_SANITIZE} -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${_ditwin_sanitize_flags}>")
  add_link_options("$<$<LINK_LANGUAGE:CXX>:${_ditwin_sanitize_flags}>")
  message(STATUS "ditwin: sanitizers ${DITWIN_SANITIZE}")
endif()

if(DITWIN_FUZZ)
  # Coverage for libFuzzer in every library the fuzz targets link; only the targets themselves
  # link libFuzzer's main (-fsanitize=fuzzer, fuzz/CMakeLists.txt).
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:-fsanitize=fuzzer-no-link>")
endif()
