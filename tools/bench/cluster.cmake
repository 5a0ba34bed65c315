# cluster_bench: the NATS JetStream layer on a 3-node nats-server cluster on loopback (the tests' fixture
# starts it): sync publish latency (8 KiB, 256 KiB), read throughput (AckNone, AckAll), lease takeover,
# stream-leader SIGKILL recovery. Results and the exact command: clearing/cluster/README.md.
if(TARGET coconut_clearing_cluster)
  add_executable(cluster_bench ${CMAKE_CURRENT_LIST_DIR}/cluster_bench.cpp ${PROJECT_SOURCE_DIR}/tests/cluster/nats_cluster.cpp)
  target_include_directories(cluster_bench PRIVATE ${PROJECT_SOURCE_DIR}/tests/cluster ${CMAKE_CURRENT_LIST_DIR})
  target_link_libraries(cluster_bench PRIVATE coconut::clearing_cluster coconut::options CLI11::CLI11 fmt::fmt)
endif()
