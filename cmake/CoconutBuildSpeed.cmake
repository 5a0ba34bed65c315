# Build speed, applied at the end of the top-level CMakeLists.txt once every target exists:
#   - unity-build exclusions (COCONUT_UNITY_BUILD, cmake/CoconutOptions.cmake);
#   - precompiled headers (COCONUT_PCH): one precompiled header of the heavy third-party headers,
#     built once per build directory (target coconut_pch) and reused by every C++ target.

# Sources compiled on their own in a unity build: a class with external linkage there holds a type
# from the file's anonymous namespace, which GCC reports (-Wsubobject-linkage) once the file is
# #included by a unity source instead of being the main file.
function(coconut_unity_exclude target)
  if(COCONUT_UNITY_BUILD AND TARGET ${target})
    list(TRANSFORM ARGN PREPEND ${CMAKE_SOURCE_DIR}/)
    set_source_files_properties(${ARGN} TARGET_DIRECTORY ${target} PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
  endif()
endfunction()
coconut_unity_exclude(coconut_clearing clearing/daemon/src/server.cpp)
coconut_unity_exclude(coconut_clearing_http clearing/daemon/src/http_api.cpp clearing/daemon/src/http_tokens.cpp)
coconut_unity_exclude(coconut_hsm hsm-stub/src/key_store.cpp)
coconut_unity_exclude(coconut_sdk terminal-sdk/src/reader.cpp)

# REUSE_FROM needs the same compile flags everywhere. Every project target links coconut::options
# (warnings, sanitizer / fuzzer instrumentation); with COCONUT_PCH it also carries fmt's definition
# (FMT_SHARED) and -pthread (libpcsclite's pkg-config flags add it to its users) for every target, because both compilers refuse a precompiled header
# built with a different macro or thread setting. Targets' own definitions (COCONUT_*_EXE paths)
# define nothing the header uses. The header starts with <utility>: it replaces coconut::options'
# `-include utility` when PCH is on (a forced include before it would disable it).
if(NOT COCONUT_PCH)
  return()
endif()

add_library(coconut_pch OBJECT ${CMAKE_CURRENT_LIST_DIR}/pch.cpp)
target_compile_definitions(coconut_options INTERFACE $<TARGET_PROPERTY:fmt::fmt,INTERFACE_COMPILE_DEFINITIONS>)
target_compile_options(coconut_options INTERFACE -pthread)
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
