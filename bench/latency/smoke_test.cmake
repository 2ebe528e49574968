# Runs chat-latency --quick and checks that it wrote both files, with every
# row of the talk's table in them.
file(REMOVE_RECURSE ${OUT})
execute_process(COMMAND ${PROGRAM} --quick --quiet --out ${OUT}
  RESULT_VARIABLE status OUTPUT_VARIABLE table)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "chat-latency failed (${status})")
endif()
foreach(name latency.md latency.csv)
  if(NOT EXISTS ${OUT}/${name})
    message(FATAL_ERROR "chat-latency wrote no ${name}")
  endif()
endforeach()
file(READ ${OUT}/latency.csv csv)
set(ids cycle l1 l2 memory disk_sync disk_read loopback process_switch
    thread_switch fork pthread epoll libevent)
if(CORO_ROWS) # chat-latency linked coroutine/'s coro.c and loop.c
  list(APPEND ids coroutine_switch loop_turn)
endif()
foreach(id IN LISTS ids)
  if(NOT csv MATCHES "\n[a-z]+,${id},[^\n]*,[0-9.]+,[0-9.]+,[0-9]+,")
    message(FATAL_ERROR "latency.csv has no figure for ${id}:\n${csv}")
  endif()
endforeach()
message(STATUS "${table}")
