# package.install: what `cmake --install` and `cpack -G DEB` deliver, looked
# at the way a user would.
#  1. Installs the build into an empty prefix (WORK/prefix).
#  2. Every program is there and runs --help; its man page is there and
#     `man -l` renders it, with every long option of --help in it.
#  3. README.md and the protocol document are in the doc folder.
#  4. The systemd unit is there, runs the installed binaries, and has what
#     a service needs (unprivileged, file limit, low port, SIGTERM);
#     systemd-analyze verify accepts it where systemd is installed.
#  5. Where dpkg-deb exists: cpack -G DEB builds the package, dpkg-deb -I
#     describes it (with libevent among its dependencies) and its files are
#     all of the above under /usr.
# Variables: BUILD_DIR, WORK, PROGRAMS and DOCS (comma lists), UNIT_DIR,
# MANDIR, BINDIR, DOCDIR, CPACK.
string(REPLACE "," ";" PROGRAMS "${PROGRAMS}")
string(REPLACE "," ";" DOCS "${DOCS}")
set(prefix ${WORK}/prefix)
file(REMOVE_RECURSE ${WORK})
file(MAKE_DIRECTORY ${prefix})

function(run)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE status
    OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 240)
  if(NOT status EQUAL 0)
    string(REPLACE ";" " " command "${ARGN}")
    message(FATAL_ERROR "failed (${status}): ${command}\n${out}\n${err}")
  endif()
  set(out "${out}" PARENT_SCOPE)
endfunction()

# 1. Install.
run(${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})
message(STATUS "installed into ${prefix}")

# 2. Programs and man pages.
find_program(MAN man)
set(skipped "")
list(LENGTH PROGRAMS count)
if(count LESS 4)
  message(FATAL_ERROR "only ${count} programs to check: ${PROGRAMS}")
endif()
foreach(program IN LISTS PROGRAMS)
  set(binary ${prefix}/${BINDIR}/${program})
  if(NOT EXISTS ${binary})
    message(FATAL_ERROR "not installed: ${BINDIR}/${program}")
  endif()
  run(${binary} --help)
  set(help "${out}")
  set(page ${prefix}/${MANDIR}/man1/${program}.1)
  if(NOT EXISTS ${page})
    message(FATAL_ERROR "no man page installed for ${program}: ${page}")
  endif()
  if(NOT MAN)
    set(skipped "man is not installed (package man-db): pages not rendered")
    continue()
  endif()
  # What `man -l` shows a reader, as plain ASCII 100 columns wide.
  run(${CMAKE_COMMAND} -E env LANG=C LC_ALL=C MANWIDTH=100 MANPAGER=cat
      PAGER=cat ${MAN} -l ${page})
  set(shown "${out}")
  foreach(section NAME SYNOPSIS DESCRIPTION OPTIONS "SEE ALSO")
    if(NOT shown MATCHES "\n${section}\n")
      message(FATAL_ERROR "man -l ${page}: no ${section} section:\n${shown}")
    endif()
  endforeach()
  if(NOT shown MATCHES "\n +${program} - ")
    message(FATAL_ERROR "man -l ${page}: the NAME line is not "
      "'${program} - ...':\n${shown}")
  endif()
  string(REGEX MATCHALL "--[a-z][a-z-]*" options "${help}")
  list(REMOVE_DUPLICATES options)
  foreach(option IN LISTS options)
    string(FIND "${shown}" "${option}" at)
    if(at LESS 0)
      message(FATAL_ERROR "${option} is in `${program} --help` but not in "
        "its man page:\n${shown}")
    endif()
  endforeach()
  list(LENGTH options n)
  message(STATUS "${program}: binary, man page (${n} options, as --help)")
endforeach()

# 3. Documents.
foreach(doc IN LISTS DOCS)
  get_filename_component(name ${doc} NAME)
  if(NOT EXISTS ${prefix}/${DOCDIR}/${name})
    message(FATAL_ERROR "not installed: ${DOCDIR}/${name}")
  endif()
endforeach()

# 4. The systemd unit.
set(unit ${prefix}/${UNIT_DIR}/chat@.service)
if(NOT EXISTS ${unit})
  message(FATAL_ERROR "not installed: ${UNIT_DIR}/chat@.service")
endif()
file(READ ${unit} text)
foreach(line "ExecStart=${prefix}/${BINDIR}/chat-%i \\$CHAT_OPTIONS"
    "DynamicUser=yes" "AmbientCapabilities=CAP_NET_BIND_SERVICE"
    "LimitNOFILE=[0-9]+" "KillSignal=SIGTERM")
  if(NOT text MATCHES "\n${line}\n")
    message(FATAL_ERROR "chat@.service has no line '${line}':\n${text}")
  endif()
endforeach()
find_program(SYSTEMD_ANALYZE systemd-analyze)
if(SYSTEMD_ANALYZE)
  # An instance of the template, for the model that is surely built.
  file(MAKE_DIRECTORY ${WORK}/units)
  configure_file(${unit} ${WORK}/units/chat@evented.service COPYONLY)
  execute_process(COMMAND ${SYSTEMD_ANALYZE} verify
      ${WORK}/units/chat@evented.service
    RESULT_VARIABLE status OUTPUT_VARIABLE out ERROR_VARIABLE err TIMEOUT 60)
  # Outside a booted systemd it may only complain about the machine (no
  # D-Bus, no /etc/default file); what it says of the unit itself fails.
  if(err MATCHES "chat@evented\\.service:[0-9]+:")
    message(FATAL_ERROR "systemd-analyze verify: ${err}")
  endif()
  message(STATUS "systemd-analyze verify: nothing wrong in the unit")
endif()

# 5. The Debian package.
find_program(DPKG_DEB dpkg-deb)
if(DPKG_DEB)
  set(packages ${WORK}/packages)
  run(${CPACK} -G DEB -B ${packages} --config ${BUILD_DIR}/CPackConfig.cmake)
  file(GLOB debs ${packages}/*.deb)
  list(LENGTH debs n)
  if(NOT n EQUAL 1)
    message(FATAL_ERROR "cpack -G DEB made ${n} .deb files in ${packages}")
  endif()
  run(${DPKG_DEB} -I ${debs})
  set(info "${out}")
  foreach(field "Package: c10k-chat" "Version: " "Architecture: "
      "Maintainer: " "Description: " "Depends: [^\n]*libevent")
    if(NOT info MATCHES "\n ${field}")
      message(FATAL_ERROR "dpkg-deb -I has no '${field}':\n${info}")
    endif()
  endforeach()
  run(${DPKG_DEB} -c ${debs})
  set(contents "${out}")
  set(wanted ./usr/${UNIT_DIR}/chat@.service)
  foreach(program IN LISTS PROGRAMS)
    list(APPEND wanted ./usr/${BINDIR}/${program}
      ./usr/${MANDIR}/man1/${program}.1)
  endforeach()
  foreach(doc IN LISTS DOCS)
    get_filename_component(name ${doc} NAME)
    list(APPEND wanted ./usr/${DOCDIR}/${name})
  endforeach()
  foreach(path IN LISTS wanted)
    string(FIND "${contents}" " ${path}\n" at)
    if(at LESS 0)
      message(FATAL_ERROR "${path} is not in the package:\n${contents}")
    endif()
  endforeach()
  run(${DPKG_DEB} -x ${debs} ${WORK}/unpacked)
  file(READ ${WORK}/unpacked/usr/${UNIT_DIR}/chat@.service text)
  if(NOT text MATCHES "\nExecStart=/usr/${BINDIR}/chat-%i ")
    message(FATAL_ERROR "the packaged unit does not run /usr/${BINDIR}:\n${text}")
  endif()
  string(REGEX MATCH "Depends: [^\n]*" depends "${info}")
  get_filename_component(name ${debs} NAME)
  message(STATUS "${name}: ${depends}")
else()
  if(skipped)
    string(APPEND skipped "; ")
  endif()
  string(APPEND skipped "dpkg-deb is not installed: no package built")
endif()

if(skipped)
  message("SKIPPED: ${skipped}")
endif()
