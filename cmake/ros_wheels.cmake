# Building ROS 2 interfaces against the PyPI ROS wheels (docs/design.md §7.2).
# Both macros do nothing harmful on a real ROS install.

# With no ROS environment sourced, the ROS prefix is the Python environment that
# holds ament_index_python (the wheels install the ROS tree into the venv root).
macro(ros_wheels_find_prefix)
  find_package(Python3 REQUIRED COMPONENTS Interpreter)
  execute_process(
    COMMAND "${Python3_EXECUTABLE}" -c "import pathlib, ament_index_python as m; print(pathlib.Path(m.__file__).resolve().parents[4])"
    OUTPUT_VARIABLE _ros_prefix OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  if(_ros_prefix)
    list(APPEND CMAKE_PREFIX_PATH "${_ros_prefix}")
    if(NOT DEFINED ENV{AMENT_PREFIX_PATH} OR "$ENV{AMENT_PREFIX_PATH}" STREQUAL "")
      set(ENV{AMENT_PREFIX_PATH} "${_ros_prefix}")
    endif()
  endif()
endmacro()

# The wheels' exported *__rosidl_generator_py targets carry include directories of
# their build container (/opt/python/...): drop paths that do not exist.
macro(ros_wheels_drop_missing_include_dirs)
  get_property(_imported DIRECTORY PROPERTY IMPORTED_TARGETS)
  foreach(_target IN LISTS _imported)
    get_target_property(_includes ${_target} INTERFACE_INCLUDE_DIRECTORIES)
    if(_includes)
      set(_kept "")
      foreach(_dir IN LISTS _includes)
        if(EXISTS "${_dir}" OR _dir MATCHES "^\\$<")
          list(APPEND _kept "${_dir}")
        endif()
      endforeach()
      set_target_properties(${_target} PROPERTIES INTERFACE_INCLUDE_DIRECTORIES "${_kept}")
    endif()
  endforeach()
endmacro()
