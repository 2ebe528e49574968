# README.md's server option list against the server's own --help: every
# option line of one must be a line of the other, word for word (spacing
# included), so that the README, --help and the man page (made from --help)
# say the same thing.
#   cmake -DPROGRAM=build/bin/chat-evented -DREADME=README.md -P this file
execute_process(COMMAND ${PROGRAM} --help RESULT_VARIABLE status
  OUTPUT_VARIABLE help TIMEOUT 10)
if(NOT status EQUAL 0)
  message(FATAL_ERROR "${PROGRAM} --help failed (${status})")
endif()
file(READ ${README} readme)
# The fenced block that starts with the synopsis line.
string(FIND "${readme}" "```\nchat-MODEL [NAME [PORT]] [options]\n" start)
if(start LESS 0)
  message(FATAL_ERROR "README.md has no block starting "
    "'chat-MODEL [NAME [PORT]] [options]'")
endif()
string(SUBSTRING "${readme}" ${start} -1 block)
string(SUBSTRING "${block}" 4 -1 block)
string(FIND "${block}" "```" end)
string(SUBSTRING "${block}" 0 ${end} block)

# Option lines: indented, then an option or a positional ("NAME, -n ...").
function(option_lines text out)
  string(REPLACE "\n" ";" lines "${text}")
  set(result "")
  foreach(line IN LISTS lines)
    if(line MATCHES "^  +(-|[A-Z]+, )")
      list(APPEND result "${line}")
    endif()
  endforeach()
  set(${out} "${result}" PARENT_SCOPE)
endfunction()
option_lines("${help}" help_lines)
option_lines("${block}" readme_lines)
list(LENGTH help_lines count)
if(count LESS 5)
  message(FATAL_ERROR "--help printed only ${count} option lines:\n${help}")
endif()

set(problems "")
foreach(line IN LISTS help_lines)
  list(FIND readme_lines "${line}" found)
  if(found LESS 0)
    string(APPEND problems "  in --help, not in README.md:\n    ${line}\n")
  endif()
endforeach()
foreach(line IN LISTS readme_lines)
  list(FIND help_lines "${line}" found)
  if(found LESS 0)
    string(APPEND problems "  in README.md, not in --help:\n    ${line}\n")
  endif()
endforeach()
if(problems)
  message(FATAL_ERROR "README.md's option list and --help differ "
    "(copy the lines of `chat-evented --help` into README.md's "
    "'Running a server' block):\n${problems}")
endif()
message(STATUS "README.md's ${count} option lines match --help")
