# settlement_bench: a settlement cycle over 10,000,000 generated cleared transfers (wall time, peak RSS)
# against a plain journal scan in the same run. Results and the command: docs/BENCHMARKS.md.
if(TARGET coconut_settlement)
  add_executable(settlement_bench ${CMAKE_CURRENT_LIST_DIR}/settlement_bench.cpp)
  target_link_libraries(settlement_bench PRIVATE coconut::settlement coconut::clearing_registry coconut::options CLI11::CLI11 fmt::fmt)
endif()
