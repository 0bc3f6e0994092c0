# SPDX-License-Identifier: GPL-2.0-or-later
# What `cmake --install` puts where, laid out as a Debian package expects it
# (docs/operations.md, "Installed files"). Nothing goes into /etc: the
# configuration file is the administrator's (or a package's conffile).
include(GNUInstallDirs)

option(RELINK_MAN "Build and install the man pages (needs scdoc)" ON)
set(RELINK_SYSTEMD_UNIT_DIR "" CACHE PATH
  "Where relinkd.service goes (empty: systemd's pkg-config systemdsystemunitdir, else lib/systemd/system)")
set(RELINK_BASH_COMPLETION_DIR "" CACHE PATH
  "Where the bash completion goes (empty: bash-completion's pkg-config completionsdir, else DATADIR/bash-completion/completions)")

# relinkd is root's; relinkctl is for the members of control_group too.
install(TARGETS relinkd RUNTIME DESTINATION ${CMAKE_INSTALL_SBINDIR})
install(TARGETS relinkctl RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})

# systemd unit. The build directory's copy names the binary under the
# configured prefix; the installed copy is configured again at install time,
# so that `cmake --install --prefix P` gets ExecStart=P/sbin/relinkd.
configure_file(contrib/relinkd.service.in relinkd.service @ONLY)
set(relink_unit_dir "${RELINK_SYSTEMD_UNIT_DIR}")
if(NOT relink_unit_dir)
  pkg_get_variable(relink_unit_dir systemd systemdsystemunitdir)
endif()
if(NOT relink_unit_dir)
  set(relink_unit_dir lib/systemd/system)
endif()
message(STATUS "relinkd.service goes to ${relink_unit_dir}")
install(CODE "
  set(CMAKE_INSTALL_SBINDIR \"${CMAKE_INSTALL_SBINDIR}\")
  if(IS_ABSOLUTE \"\${CMAKE_INSTALL_SBINDIR}\")
    set(CMAKE_INSTALL_FULL_SBINDIR \"\${CMAKE_INSTALL_SBINDIR}\")
  else()
    set(CMAKE_INSTALL_FULL_SBINDIR \"\${CMAKE_INSTALL_PREFIX}/\${CMAKE_INSTALL_SBINDIR}\")
  endif()
  set(CMAKE_INSTALL_BINDIR \"${CMAKE_INSTALL_BINDIR}\")
  if(IS_ABSOLUTE \"\${CMAKE_INSTALL_BINDIR}\")
    set(CMAKE_INSTALL_FULL_BINDIR \"\${CMAKE_INSTALL_BINDIR}\")
  else()
    set(CMAKE_INSTALL_FULL_BINDIR \"\${CMAKE_INSTALL_PREFIX}/\${CMAKE_INSTALL_BINDIR}\")
  endif()
  configure_file(\"${CMAKE_SOURCE_DIR}/contrib/relinkd.service.in\"
    \"${CMAKE_BINARY_DIR}/install-time/relinkd.service\" @ONLY)
")
install(FILES ${CMAKE_BINARY_DIR}/install-time/relinkd.service DESTINATION ${relink_unit_dir})

# Man pages: doc/man/NAME.SECTION.scd -> build/man/NAME.SECTION -> MANDIR/manSECTION.
if(RELINK_MAN)
  find_program(RELINK_SCDOC scdoc)
  if(NOT RELINK_SCDOC)
    message(FATAL_ERROR "scdoc not found: it builds the man pages. Install it (apt-get install scdoc, "
      "or scripts/install-deps.sh), or configure with -DRELINK_MAN=OFF to build and install no man pages.")
  endif()
  set(relink_man_pages)
  foreach(page relinkctl.1 relinkd.toml.5 relinkd.8)
    set(src ${CMAKE_SOURCE_DIR}/doc/man/${page}.scd)
    set(out ${CMAKE_BINARY_DIR}/man/${page})
    string(REGEX REPLACE "^.*\\.([0-9])$" "\\1" section ${page})
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${CMAKE_BINARY_DIR}/man
      # scdoc reads stdin and writes stdout; a failed run leaves no page.
      COMMAND sh -c "\"$1\" < \"$2\" > \"$3.tmp\" && mv \"$3.tmp\" \"$3\"" scdoc ${RELINK_SCDOC} ${src} ${out}
      DEPENDS ${src}
      COMMENT "Building man page ${page}"
      VERBATIM)
    list(APPEND relink_man_pages ${out})
    install(FILES ${out} DESTINATION ${CMAKE_INSTALL_MANDIR}/man${section})
  endforeach()
  add_custom_target(man ALL DEPENDS ${relink_man_pages})
endif()

# Shell completion for relinkctl.
set(relink_bash_dir "${RELINK_BASH_COMPLETION_DIR}")
if(NOT relink_bash_dir)
  pkg_get_variable(relink_bash_dir bash-completion completionsdir)
endif()
if(NOT relink_bash_dir)
  set(relink_bash_dir ${CMAKE_INSTALL_DATADIR}/bash-completion/completions)
endif()
install(FILES contrib/completion/relinkctl.bash DESTINATION ${relink_bash_dir} RENAME relinkctl)
install(FILES contrib/completion/_relinkctl DESTINATION ${CMAKE_INSTALL_DATADIR}/zsh/vendor-completions)

# Documentation, and the example configuration to copy to /etc/relinkd/relinkd.toml.
# docs/ keeps its name, so that README.md's links work where it is installed.
file(GLOB relink_docs CONFIGURE_DEPENDS ${CMAKE_SOURCE_DIR}/docs/*.md)
install(FILES README.md COPYRIGHT DESTINATION ${CMAKE_INSTALL_DOCDIR})
install(FILES ${relink_docs} DESTINATION ${CMAKE_INSTALL_DOCDIR}/docs)
install(FILES contrib/relinkd.toml DESTINATION ${CMAKE_INSTALL_DOCDIR}/examples)
