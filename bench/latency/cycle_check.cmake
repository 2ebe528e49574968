# The guard of chat-latency's "One CPU cycle": runs chat-latency
# --cycle-only and checks that the cycle it reports, as a clock, is between
# 0.7 and 1.9 times the nominal clock of this machine (turbo included): the
# base frequency in sysfs where the kernel gives one, else the highest
# "cpu MHz" of /proc/cpuinfo. A chain that the CPU folds (a "17.6 GHz"
# cycle on a 2.3 GHz Xeon) scales every figure of the table 7 times too
# large; this fails on it.
#   cmake -DPROGRAM=chat-latency -DOUT=DIR [-DEXPECT_NOTE=ON] -P this file
# EXPECT_NOTE: the chain was made implausible on purpose
# (CHAT_LATENCY_CHAIN_NS): the table must say it used the nominal clock.
# With CHAT_LATENCY_CYCLE_NS set (a broken figure, unchecked), it must fail.
file(REMOVE_RECURSE ${OUT})
execute_process(COMMAND ${PROGRAM} --cycle-only --quiet --out ${OUT}
  RESULT_VARIABLE status OUTPUT_VARIABLE table ERROR_VARIABLE err TIMEOUT 60)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "chat-latency --cycle-only failed (${status}): ${err}")
endif()
file(STRINGS ${OUT}/latency.csv row REGEX "^talk,cycle,")
if(NOT row MATCHES "^talk,cycle,\"[^\"]*\",([0-9]+)\\.([0-9][0-9][0-9]),")
  message(FATAL_ERROR "latency.csv has no cycle figure: ${row}")
endif()
math(EXPR cycle_ps "${CMAKE_MATCH_1} * 1000 + ${CMAKE_MATCH_2}")

# The nominal clock, in MHz.
set(nominal 0)
set(source "")
if(EXISTS /sys/devices/system/cpu/cpu0/cpufreq/base_frequency)
  file(READ /sys/devices/system/cpu/cpu0/cpufreq/base_frequency khz)
  string(STRIP "${khz}" khz)
  math(EXPR nominal "${khz} / 1000")
  set(source "cpufreq's base_frequency")
else()
  file(STRINGS /proc/cpuinfo lines REGEX "^cpu MHz")
  foreach(line IN LISTS lines)
    if(line MATCHES ": *([0-9]+)" AND CMAKE_MATCH_1 GREATER nominal)
      set(nominal ${CMAKE_MATCH_1})
    endif()
  endforeach()
  set(source "/proc/cpuinfo")
endif()
if(nominal EQUAL 0 OR cycle_ps EQUAL 0)
  message("SKIPPED: no nominal clock in /proc/cpuinfo or sysfs to check "
    "the cycle (${cycle_ps} ps) against")
  return()
endif()

# clock / nominal, in hundredths: (10^6 / ps) MHz / nominal MHz.
math(EXPR clock_mhz "1000000 / ${cycle_ps}")
math(EXPR ratio "100000000 / (${cycle_ps} * ${nominal})")
math(EXPR whole "${ratio} / 100")
math(EXPR cents "${ratio} % 100")
if(cents LESS 10)
  set(cents "0${cents}")
endif()
set(said "cycle ${cycle_ps} ps = ${clock_mhz} MHz, ${whole}.${cents} x the "
  "nominal ${nominal} MHz of ${source}")
string(CONCAT said ${said})
if(ratio LESS 70 OR ratio GREATER 190)
  message("cycle check failed: outside 0.7-1.9")
  message(FATAL_ERROR "${said}: outside 0.7-1.9 (turbo explains up to "
    "about 1.9). Row: ${row}")
endif()
if(EXPECT_NOTE)
  file(READ ${OUT}/latency.md markdown)
  set(note "\\| One CPU cycle \\(the nominal clock: the measured [0-9.]+ GHz")
  string(APPEND note " is [0-9.]+ x it, more than turbo explains\\) \\|")
  if(NOT markdown MATCHES "${note}")
    message(FATAL_ERROR "the chain was implausible, but latency.md does not "
      "say the nominal clock was used:\n${markdown}")
  endif()
endif()
message(STATUS "${said}: within 0.7-1.9")
