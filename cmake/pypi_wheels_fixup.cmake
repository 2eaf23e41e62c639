# Used only by scripts/setup.sh (passed as -DCMAKE_PROJECT_INCLUDE) when building against the
# ROS 2 wheels from PyPI instead of a ROS distribution.
#
# The message wheels export the Python and NumPy include directories of the machine they were
# built on (paths under /opt/python/...). CMake refuses to generate with imported targets that
# name missing directories, so at the end of the top directory, once every package has been
# found, each such path is replaced by this interpreter's Python and NumPy include directories.

function(_ditta_replace_foreign_python_includes)
  find_package(Python3 REQUIRED COMPONENTS Interpreter Development.Module NumPy)
  get_property(_targets DIRECTORY "${CMAKE_SOURCE_DIR}" PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _targets)
    get_target_property(_dirs ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(NOT _dirs)
      continue()
    endif()
    set(_kept "")
    set(_replaced FALSE)
    foreach(_dir IN LISTS _dirs)
      if(_dir MATCHES "^/opt/python/" AND NOT EXISTS "${_dir}")
        set(_replaced TRUE)
      else()
        list(APPEND _kept "${_dir}")
      endif()
    endforeach()
    if(_replaced)
      list(APPEND _kept ${Python3_INCLUDE_DIRS} ${Python3_NumPy_INCLUDE_DIRS})
      list(REMOVE_DUPLICATES _kept)
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
    endif()
  endforeach()
endfunction()

cmake_language(DEFER DIRECTORY "${CMAKE_SOURCE_DIR}" CALL _ditta_replace_foreign_python_includes)
