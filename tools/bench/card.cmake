# card_bench: full purchases (SELECT + INIT + PSAM 80 70 + DEBIT + 80 72) in process (memory and file images)
# and through pcscd + vpcd against the raw APDU floor. Results: docs/bench-card.md.
if(TARGET coconut_cos AND TARGET coconut-vcard)
  add_executable(card_bench ${CMAKE_CURRENT_LIST_DIR}/card_bench.cpp)
  target_link_libraries(card_bench PRIVATE coconut::pcsc_env coconut::cos coconut::options CLI11::CLI11
                                           nlohmann_json::nlohmann_json)
endif()
