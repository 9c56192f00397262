# cmake --install: headers, libraries and the CLI under the prefix, and a package config so that
# find_package(mlafuse CONFIG) gives the same targets as the build tree (mlafuse::core, ...,
# mlafuse::mlafuse). The Python package installs through these rules too.
include(CMakePackageConfigHelpers)

set(MLAFUSE_INSTALL_CMAKEDIR ${CMAKE_INSTALL_LIBDIR}/cmake/mlafuse CACHE STRING
    "Where mlafuseConfig.cmake goes, relative to the prefix")

set(mlafuse_install_targets mlafuse_core mlafuse_quant mlafuse_mla mlafuse_ir mlafuse_passes
                            mlafuse_cpu mlafuse_models
                            mlafuse_runtime mlafuse_app mlafuse_backends mlafuse_all mlafuse)
if(MLAFUSE_WITH_CUDA)
  list(APPEND mlafuse_install_targets mlafuse_cuda)
endif()
install(TARGETS ${mlafuse_install_targets} EXPORT mlafuseTargets
        ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
        LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
        RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# The CUDA headers only where the CUDA library they declare is installed with them.
if(MLAFUSE_WITH_CUDA)
  install(DIRECTORY ${CMAKE_SOURCE_DIR}/include/mlafuse DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
else()
  install(DIRECTORY ${CMAKE_SOURCE_DIR}/include/mlafuse DESTINATION ${CMAKE_INSTALL_INCLUDEDIR}
          PATTERN cuda EXCLUDE)
endif()

install(EXPORT mlafuseTargets NAMESPACE mlafuse:: DESTINATION ${MLAFUSE_INSTALL_CMAKEDIR})
configure_package_config_file(${CMAKE_SOURCE_DIR}/cmake/mlafuseConfig.cmake.in
                              ${CMAKE_BINARY_DIR}/mlafuseConfig.cmake
                              INSTALL_DESTINATION ${MLAFUSE_INSTALL_CMAKEDIR})
# 0.x: a minor version may break the API, so only the same major.minor is compatible.
write_basic_package_version_file(${CMAKE_BINARY_DIR}/mlafuseConfigVersion.cmake
                                 COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/mlafuseConfig.cmake
              ${CMAKE_BINARY_DIR}/mlafuseConfigVersion.cmake
        DESTINATION ${MLAFUSE_INSTALL_CMAKEDIR})
