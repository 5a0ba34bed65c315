# clearingd_http_bench: balance queries/s and p99 through the HTTP API (Debian's wrk, 64 connections) while the
# ledger takes writes, and the write throughput with and without that query load. See docs/BENCHMARKS.md.
if(TARGET coconut_clearing_daemon)
  add_executable(clearingd_http_bench ${CMAKE_CURRENT_LIST_DIR}/clearingd_http_bench.cpp)
  target_link_libraries(clearingd_http_bench PRIVATE coconut::clearing_daemon coconut::options CLI11::CLI11 fmt::fmt)
endif()
