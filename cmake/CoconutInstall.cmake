# The terminal SDK as a package (terminal-sdk/README.md "Using the SDK in a terminal's own build"): its
# libraries, their public headers, CoconutConfig.cmake + CoconutConfigVersion.cmake with the imported
# targets Coconut::sdk (and Coconut::iso8583, Coconut::cos, … it is built on), and coconut-sdk.pc for
# pkg-config. Everything goes into the install component `sdk`:
#   cmake --install build --component sdk --prefix /opt/coconut
# Static libraries by default, shared ones with -DBUILD_SHARED_LIBS=ON.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

# The SDK's libraries in dependency order (a library depends only on those after it), each with the name
# it has in the package (Coconut::<name>), and the folder of its public headers.
set(coconut_sdk_libraries coconut_sdk coconut_tls coconut_iso8583 coconut_cos coconut_card_crypto coconut_apdu coconut_core)
set(coconut_sdk_header_dirs terminal-sdk/include clearing/tls/include clearing/iso8583/include card-os-apdu/include core/include)

foreach(library IN LISTS coconut_sdk_libraries)
  string(REGEX REPLACE "^coconut_" "" name ${library})
  # Shared: each library finds the others beside itself ($ORIGIN), wherever the package is installed
  # (-DCMAKE_SKIP_INSTALL_RPATH=ON leaves it out, e.g. for a system package in /usr/lib).
  set_target_properties(${library} PROPERTIES EXPORT_NAME ${name} VERSION ${PROJECT_VERSION}
                                              SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR} INSTALL_RPATH "$ORIGIN")
  # The package's names in this build too, for a terminal that vendors the SDK with add_subdirectory.
  add_library(Coconut::${name} ALIAS ${library})
endforeach()
set_target_properties(coconut_version PROPERTIES EXPORT_NAME version)
add_library(Coconut::version ALIAS coconut_version)

install(TARGETS ${coconut_sdk_libraries} coconut_version EXPORT CoconutTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT sdk
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT sdk
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT sdk
        INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
foreach(directory IN LISTS coconut_sdk_header_dirs)
  install(DIRECTORY ${PROJECT_SOURCE_DIR}/${directory}/ DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT sdk
          FILES_MATCHING PATTERN "*.hpp")
endforeach()
install(FILES ${PROJECT_BINARY_DIR}/generated/include/coconut/version.hpp
        DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}/coconut COMPONENT sdk)

set(coconut_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/Coconut)
install(EXPORT CoconutTargets NAMESPACE Coconut:: DESTINATION ${coconut_cmake_dir} COMPONENT sdk)
# Static libraries name their private dependencies too ($<LINK_ONLY:…>): PC/SC-lite then has to be found
# by the consumer; a shared coconut::sdk keeps it to itself.
if(BUILD_SHARED_LIBS)
  set(COCONUT_SDK_SHARED ON)
else()
  set(COCONUT_SDK_SHARED OFF)
endif()
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/CoconutConfig.cmake.in
                              ${PROJECT_BINARY_DIR}/generated/CoconutConfig.cmake INSTALL_DESTINATION ${coconut_cmake_dir})
# 0.x: a minor version may change the API, so only the same MAJOR.MINOR is compatible.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/generated/CoconutConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/generated/CoconutConfig.cmake ${PROJECT_BINARY_DIR}/generated/CoconutConfigVersion.cmake
        DESTINATION ${coconut_cmake_dir} COMPONENT sdk)

# coconut-sdk.pc: its prefix relative to where the file is (${pcfiledir}), so the package can be
# installed under any prefix (cmake --install --prefix, a .deb's staging root) and still point at itself.
file(RELATIVE_PATH COCONUT_PC_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
string(REGEX REPLACE "/$" "" COCONUT_PC_PREFIX "${COCONUT_PC_PREFIX}")
list(TRANSFORM coconut_sdk_libraries PREPEND -l OUTPUT_VARIABLE COCONUT_PC_LIBS)
list(JOIN COCONUT_PC_LIBS " " COCONUT_PC_LIBS)
if(BUILD_SHARED_LIBS)
  set(COCONUT_PC_REQUIRES_PRIVATE "Requires.private: libpcsclite\n")
else()
  set(COCONUT_PC_REQUIRES_PRIVATE "")
  set(COCONUT_PC_REQUIRES_STATIC ", libpcsclite")
endif()
configure_file(${CMAKE_CURRENT_LIST_DIR}/coconut-sdk.pc.in ${PROJECT_BINARY_DIR}/generated/coconut-sdk.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/generated/coconut-sdk.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT sdk)
