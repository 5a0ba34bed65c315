# Debian packages (`cpack -G DEB` in the build directory; docs/OPERATIONS.md "Packages"), one per
# install COMPONENT:
#   coconut-clearingd   clearingd  the daemon, its unit (and the settlement timer), system user, configs
#   coconut-hsmd        hsmd       the HSM daemon, its unit, system user, config
#   coconut-tools       tools      coconut, coconut-terminal, coconut-settle (+ the ISO 20022 schemas),
#                                  coconut-vcard, coconut-hsm, coconut-card-demo
#   libcoconut-sdk-dev  the SDK's component (COCONUT_SDK_COMPONENT): headers, libraries, CMake and
#                       pkg-config files, installed by the SDK's own rules
# Library dependencies come from dpkg-shlibdeps; the others are named below (Debian 12 package names).
# Included at the end of the top-level CMakeLists.txt, once every target exists.
include(GNUInstallDirs)

set(COCONUT_SDK_COMPONENT sdk CACHE STRING "The install COMPONENT of the SDK's files (package libcoconut-sdk-dev)")
set(coconut_packaging ${CMAKE_SOURCE_DIR}/packaging)
set(coconut_unit_dir /lib/systemd/system)  # Debian 12's directory for packaged units
set(coconut_sysusers_dir /usr/lib/sysusers.d)

# The executables of a component (those this configuration builds).
function(coconut_install_programs component)
  foreach(target IN LISTS ARGN)
    if(TARGET ${target})
      install(TARGETS ${target} RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT ${component})
    endif()
  endforeach()
endfunction()

# Maintainer scripts of a daemon's package, from packaging/debian/*.in; sets <var> to their paths and
# conffiles.
function(coconut_maintainer_scripts var package sysusers user secrets units conffiles)
  set(PACKAGE ${package})
  set(SYSUSERS ${sysusers})
  set(USER ${user})
  set(SECRETS ${secrets})
  set(UNITS ${units})
  set(out ${CMAKE_BINARY_DIR}/packaging/${package})
  foreach(script postinst prerm postrm)
    configure_file(${coconut_packaging}/debian/${script}.in ${out}/${script} @ONLY
                   FILE_PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  endforeach()
  list(JOIN conffiles "\n" conffiles_text)
  file(WRITE ${out}/conffiles "${conffiles_text}\n")
  set(${var} ${out}/postinst ${out}/prerm ${out}/postrm ${out}/conffiles PARENT_SCOPE)
endfunction()

if(TARGET coconut-clearingd)
  coconut_install_programs(clearingd coconut-clearingd)
  install(FILES ${coconut_packaging}/systemd/coconut-clearingd.service ${coconut_packaging}/systemd/coconut-settle.service
                ${coconut_packaging}/systemd/coconut-settle.timer DESTINATION ${coconut_unit_dir} COMPONENT clearingd)
  install(FILES ${coconut_packaging}/sysusers/coconut-clearingd.conf DESTINATION ${coconut_sysusers_dir} COMPONENT clearingd)
  install(FILES ${coconut_packaging}/etc/clearingd.toml ${coconut_packaging}/etc/settlement.json DESTINATION /etc/coconut
          COMPONENT clearingd)
  install(FILES ${CMAKE_SOURCE_DIR}/docs/OPERATIONS.md ${CMAKE_SOURCE_DIR}/clearing/README.md
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/coconut-clearingd COMPONENT clearingd)
  # The annotated example with more of serve's options (its paths are the example's, not the unit's).
  install(FILES ${CMAKE_SOURCE_DIR}/clearing/daemon/coconut-clearingd.toml
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/coconut-clearingd/examples COMPONENT clearingd)
  coconut_maintainer_scripts(clearingd_scripts coconut-clearingd coconut-clearingd.conf coconut-clearing clearingd
                             "coconut-clearingd.service coconut-settle.timer" "/etc/coconut/clearingd.toml;/etc/coconut/settlement.json")
endif()

if(TARGET coconut-hsmd)
  coconut_install_programs(hsmd coconut-hsmd)
  install(FILES ${coconut_packaging}/systemd/coconut-hsmd.service DESTINATION ${coconut_unit_dir} COMPONENT hsmd)
  install(FILES ${coconut_packaging}/sysusers/coconut-hsmd.conf DESTINATION ${coconut_sysusers_dir} COMPONENT hsmd)
  install(FILES ${coconut_packaging}/etc/hsmd.toml DESTINATION /etc/coconut COMPONENT hsmd)
  install(FILES ${CMAKE_SOURCE_DIR}/docs/OPERATIONS.md ${CMAKE_SOURCE_DIR}/hsm-stub/README.md ${CMAKE_SOURCE_DIR}/hsm-stub/PROTOCOL.md
          DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/coconut-hsmd COMPONENT hsmd)
  install(FILES ${CMAKE_SOURCE_DIR}/hsm-stub/coconut-hsmd.toml DESTINATION ${CMAKE_INSTALL_DATADIR}/doc/coconut-hsmd/examples
          COMPONENT hsmd)
  coconut_maintainer_scripts(hsmd_scripts coconut-hsmd coconut-hsmd.conf coconut-hsm hsmd "coconut-hsmd.service"
                             "/etc/coconut/hsmd.toml")
endif()

coconut_install_programs(tools coconut coconut-terminal coconut-settle coconut-vcard coconut-hsm coconut-card-demo)
if(TARGET coconut-settle)
  install(DIRECTORY ${CMAKE_SOURCE_DIR}/settlement/schemas/ DESTINATION ${CMAKE_INSTALL_DATADIR}/coconut/schemas COMPONENT tools)
endif()

# ---- CPack ----------------------------------------------------------------------------------------------
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME coconut)
set(CPACK_PACKAGE_VENDOR "Coconut Card")
set(CPACK_PACKAGE_CONTACT "Coconut Card operators <operators@coconut-card.invalid>")
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_STRIP_FILES ON)
set(CPACK_DEB_COMPONENT_INSTALL ON)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_RELEASE 1)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS ON)
set(CPACK_DEBIAN_PACKAGE_SECTION misc)
set(CPACK_DEBIAN_PACKAGE_HOMEPAGE "https://coconut-card.invalid")
set(coconut_deb_version "${PROJECT_VERSION}-1")

set(CPACK_DEBIAN_CLEARINGD_PACKAGE_NAME coconut-clearingd)
set(CPACK_DEBIAN_CLEARINGD_PACKAGE_SECTION net)
set(CPACK_DEBIAN_CLEARINGD_PACKAGE_DEPENDS "systemd")  # systemd-sysusers in postinst; shlibdeps adds the libraries
set(CPACK_DEBIAN_CLEARINGD_PACKAGE_RECOMMENDS "coconut-tools (= ${coconut_deb_version})")
set(CPACK_DEBIAN_CLEARINGD_PACKAGE_SUGGESTS "coconut-hsmd (= ${coconut_deb_version})")
set(CPACK_DEBIAN_CLEARINGD_PACKAGE_CONTROL_EXTRA "${clearingd_scripts}")
set(CPACK_DEBIAN_CLEARINGD_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_COMPONENT_CLEARINGD_DESCRIPTION
    "Coconut Card clearing daemon\n coconut-clearingd: ISO 8583 for terminals, the LMDB ledger, the HTTP API; its systemd unit, a nightly settlement timer and default configuration in /etc/coconut.")

set(CPACK_DEBIAN_HSMD_PACKAGE_NAME coconut-hsmd)
set(CPACK_DEBIAN_HSMD_PACKAGE_SECTION net)
set(CPACK_DEBIAN_HSMD_PACKAGE_DEPENDS "systemd")
set(CPACK_DEBIAN_HSMD_PACKAGE_CONTROL_EXTRA "${hsmd_scripts}")
set(CPACK_DEBIAN_HSMD_PACKAGE_CONTROL_STRICT_PERMISSION ON)
set(CPACK_COMPONENT_HSMD_DESCRIPTION
    "Coconut Card HSM daemon\n coconut-hsmd: the sealed key store, the key ceremony, the card services and the island CA; its systemd unit and default configuration in /etc/coconut.")

set(CPACK_DEBIAN_TOOLS_PACKAGE_NAME coconut-tools)
set(CPACK_DEBIAN_TOOLS_PACKAGE_SECTION utils)
set(CPACK_DEBIAN_TOOLS_PACKAGE_RECOMMENDS "pcscd")  # coconut-vcard serve, coconut-terminal over PC/SC
set(CPACK_COMPONENT_TOOLS_DESCRIPTION
    "Coconut Card command-line tools\n coconut (operator CLI and island demo), coconut-terminal, coconut-settle, coconut-vcard, coconut-hsm and coconut-card-demo.")

string(TOUPPER ${COCONUT_SDK_COMPONENT} coconut_sdk_upper)
set(CPACK_DEBIAN_${coconut_sdk_upper}_PACKAGE_NAME libcoconut-sdk-dev)
set(CPACK_DEBIAN_${coconut_sdk_upper}_PACKAGE_SECTION libdevel)
set(CPACK_DEBIAN_${coconut_sdk_upper}_PACKAGE_DEPENDS
    "libssl-dev, libpcsclite-dev, libfmt-dev, nlohmann-json3-dev, libboost-dev (>= 1.74)")
set(CPACK_COMPONENT_${coconut_sdk_upper}_DESCRIPTION
    "Coconut Card terminal SDK (development files)\n The headers, libraries, CMake package (find_package(Coconut)) and pkg-config file (coconut-sdk) of the terminal SDK.")

# A package per component that has files in this configuration.
get_cmake_property(coconut_install_components COMPONENTS)
set(CPACK_COMPONENTS_ALL)
foreach(component clearingd hsmd tools ${COCONUT_SDK_COMPONENT})
  if(component IN_LIST coconut_install_components)
    list(APPEND CPACK_COMPONENTS_ALL ${component})
  endif()
endforeach()
include(CPack)
