# hsm_bench: purchase TAC verifications/s through coconut-hsmd on loopback (batched, several
# connections, pipelined) next to the same verifications in-process. Results: docs/bench-hsm.md.
if(TARGET coconut_hsm_client AND TARGET coconut-hsmd)
  add_executable(hsm_bench ${CMAKE_CURRENT_LIST_DIR}/hsm_bench.cpp)
  target_link_libraries(hsm_bench PRIVATE coconut::hsm_client coconut::options CLI11::CLI11 fmt::fmt Threads::Threads)
  add_dependencies(hsm_bench coconut-hsmd)
  target_compile_definitions(hsm_bench PRIVATE COCONUT_HSMD_PATH="$<TARGET_FILE:coconut-hsmd>")
endif()
