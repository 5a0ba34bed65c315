# Build speed, applied at the end of the top-level CMakeLists.txt once every target exists: the
# unity-build exclusions (COCONUT_UNITY_BUILD, cmake/CoconutOptions.cmake). A shared precompiled
# header was measured on top of the unity build and did not pay (g++ 900 CPU-s without, 936 with;
# clang ASan 494 / 491): GCC loads the whole 170 MB header into every translation unit.

# Sources compiled on their own in a unity build: a class with external linkage there holds a type
# from the file's anonymous namespace, which GCC reports (-Wsubobject-linkage) once the file is
# #included by a unity source instead of being the main file.
function(coconut_unity_exclude target)
  if(COCONUT_UNITY_BUILD AND TARGET ${target})
    list(TRANSFORM ARGN PREPEND ${PROJECT_SOURCE_DIR}/)
    set_source_files_properties(${ARGN} TARGET_DIRECTORY ${target} PROPERTIES SKIP_UNITY_BUILD_INCLUSION ON)
  endif()
endfunction()
coconut_unity_exclude(coconut_clearing_server clearing/server/src/server.cpp)
coconut_unity_exclude(coconut_clearing_http clearing/daemon/src/http_api.cpp clearing/daemon/src/http_tokens.cpp)
coconut_unity_exclude(coconut_hsm hsm-stub/src/key_store.cpp)
coconut_unity_exclude(coconut_sdk terminal-sdk/src/reader.cpp)
