# Precompiled headers (COCONUT_PCH): one precompiled header of the heavy third-party headers, built
# once per build directory (target coconut_pch) and reused by every C++ target of the project.
# Included at the end of the top-level CMakeLists.txt, after every target exists.
#
# REUSE_FROM needs the same compile options everywhere: every project target links coconut::options
# (warnings, sanitizer / fuzzer instrumentation), so within one build directory the flags are uniform;
# targets that add definitions of their own (COCONUT_*_EXE paths) define nothing the header uses.
# The header starts with <utility>: it replaces coconut::options' `-include utility` when PCH is on.
if(NOT COCONUT_PCH)
  return()
endif()

add_library(coconut_pch OBJECT ${CMAKE_CURRENT_LIST_DIR}/pch.cpp)
target_link_libraries(coconut_pch PRIVATE coconut::options fmt::fmt nlohmann_json::nlohmann_json)
target_precompile_headers(coconut_pch PRIVATE ${COCONUT_PCH_HEADERS})

# Every library / executable defined under the source tree.
function(coconut_collect_targets dir out)
  get_property(targets DIRECTORY ${dir} PROPERTY BUILDSYSTEM_TARGETS)
  get_property(subdirs DIRECTORY ${dir} PROPERTY SUBDIRECTORIES)
  foreach(sub IN LISTS subdirs)
    coconut_collect_targets(${sub} sub_targets)
    list(APPEND targets ${sub_targets})
  endforeach()
  set(${out} ${targets} PARENT_SCOPE)
endfunction()

coconut_collect_targets(${CMAKE_SOURCE_DIR} all_targets)
foreach(target IN LISTS all_targets)
  get_target_property(type ${target} TYPE)
  if(target STREQUAL coconut_pch OR NOT type MATCHES "^(EXECUTABLE|STATIC_LIBRARY|SHARED_LIBRARY|OBJECT_LIBRARY)$")
    continue()
  endif()
  target_precompile_headers(${target} REUSE_FROM coconut_pch)
endforeach()
