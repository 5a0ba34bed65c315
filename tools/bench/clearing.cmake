# ledger_bench: durable transfers/s into the LMDB ledger, group commit vs commit-per-transfer in the same run
# (and the full-batch ceiling). Results and the exact command: docs/bench-ledger.md.
if(TARGET coconut_ledger)
  add_executable(ledger_bench ${CMAKE_CURRENT_LIST_DIR}/ledger_bench.cpp)
  target_link_libraries(ledger_bench PRIVATE coconut::ledger coconut::options CLI11::CLI11 fmt::fmt)
endif()
