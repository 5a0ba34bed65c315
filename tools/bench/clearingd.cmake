# clearingd_bench: durable authorizations/s through the clearing daemon (coconut::clearing_daemon; 64 ISO 8583
# connections on loopback),
# group commit vs commit-per-request in the same run, and latency at a fixed offered load; plain TCP, mutual TLS
# (--tls) or both alternated (--alternate N) with handshakes/s. See clearing/README.md. --connect HOST:PORT runs the
# same load against a coconut-clearingd in another process (clearingd_cluster_bench.py: a cluster's primary against
# the single node, docs/BENCHMARKS.md "Clearing cluster").
if(TARGET coconut_clearing_daemon)
  add_executable(clearingd_bench ${CMAKE_CURRENT_LIST_DIR}/clearingd_bench.cpp)
  target_link_libraries(clearingd_bench PRIVATE coconut::clearing_daemon coconut::tls coconut::options CLI11::CLI11 fmt::fmt)
endif()
