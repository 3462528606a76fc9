# hangar_module(NAME SOURCES ... DEPS ...)
#   One static library per module, `hangar_<NAME>`, alias `hangar::<NAME>`. Its public headers
#   live in src/<NAME>/include/hangar/<NAME>/ and are included as <hangar/<NAME>/x.h>.
function(hangar_module NAME)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS;PRIVATE_DEPS" ${ARGN})
  add_library(hangar_${NAME} STATIC ${ARG_SOURCES})
  add_library(hangar::${NAME} ALIAS hangar_${NAME})
  target_include_directories(hangar_${NAME} PUBLIC ${CMAKE_CURRENT_SOURCE_DIR}/include)
  target_link_libraries(hangar_${NAME} PUBLIC ${ARG_DEPS} PRIVATE ${ARG_PRIVATE_DEPS})
endfunction()

# hangar_test(NAME SOURCES ... DEPS ... LABELS unit|integration|privileged|slow ... [RUN_SERIAL])
#   A GoogleTest executable whose cases are registered with ctest under the given labels.
#   RUN_SERIAL: its cases never run beside another test (they count host-wide resources).
function(hangar_test NAME)
  if(NOT HANGAR_BUILD_TESTS)
    return()
  endif()
  cmake_parse_arguments(ARG "RUN_SERIAL" "TIMEOUT" "SOURCES;DEPS;LABELS" ${ARGN})
  if(NOT ARG_LABELS)
    set(ARG_LABELS unit)
  endif()
  if(NOT ARG_TIMEOUT)
    set(ARG_TIMEOUT 120)
  endif()
  add_executable(${NAME} ${ARG_SOURCES})
  target_link_libraries(${NAME} PRIVATE ${ARG_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  gtest_discover_tests(${NAME}
    PROPERTIES LABELS "${ARG_LABELS}" TIMEOUT ${ARG_TIMEOUT} RUN_SERIAL ${ARG_RUN_SERIAL}
    DISCOVERY_TIMEOUT 60)
endfunction()
