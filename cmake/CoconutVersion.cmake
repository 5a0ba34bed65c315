# coconut/version.hpp, generated from project(VERSION) in the top-level CMakeLists.txt (cmake/version.hpp.in):
# the `coconut::version` header-only target, linked by coconut::sdk and by any program that prints its
# version. Installed with the SDK beside the other headers (include/coconut/version.hpp).
configure_file(${CMAKE_CURRENT_LIST_DIR}/version.hpp.in ${PROJECT_BINARY_DIR}/generated/include/coconut/version.hpp @ONLY)
add_library(coconut_version INTERFACE)
add_library(coconut::version ALIAS coconut_version)
target_include_directories(coconut_version INTERFACE $<BUILD_INTERFACE:${PROJECT_BINARY_DIR}/generated/include>)
