# terminal_bench: full shop purchases per second in process (Terminal::purchase, InProcessReader, file images,
# durable queue on disk), and median/p99 of a purchase and of a transit tap through pcscd + vpcd against the
# raw APDU floor and the disk's fdatasync floor, all in one run. Results: docs/bench-terminal.md.
if(TARGET coconut_sdk AND TARGET coconut-vcard)
  add_executable(terminal_bench ${CMAKE_CURRENT_LIST_DIR}/terminal_bench.cpp)
  target_link_libraries(terminal_bench PRIVATE coconut::pcsc_env coconut::sdk coconut::options CLI11::CLI11
                                               nlohmann_json::nlohmann_json)
endif()
