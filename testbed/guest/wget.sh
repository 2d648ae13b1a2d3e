#!/bin/sh
# wget of the tiny guest: busybox's, with `-T SECONDS` honoured instead of a crash.
# Debian's busybox-static before 1:1.36.1-5 (bookworm's 1.35.0 included) is built without
# FEATURE_WGET_TIMEOUT, but its option string still lists -T, with nowhere to store the number: any
# `wget -T N` writes through a null pointer and dies of SIGSEGV before it connects (rc 139). Here -T
# (also -TN, -qT N, --timeout N, --timeout=N) is taken off the arguments and bounds the whole transfer
# with `timeout` (busybox's own -T bounds each network read; either way a dead server cannot hold it).
t=
n=$#
while [ "$n" -gt 0 ]; do
  a=$1; shift; n=$((n - 1))
  case "$a" in
    -O|-o|-P|-U|-Y|--header|--post-data|--post-file)  # its argument follows: both stay as they are
      set -- "$@" "$a" "$1"; shift; n=$((n - 1));;
    --timeout=*) t=${a#*=};;
    --timeout|-T) t=$1; shift; n=$((n - 1));;
    -T*|-[cqS]T*|-[cqS][cqS]T*|-[cqS][cqS][cqS]T*)
      t=${a#*T}
      [ "${a%%T*}" = - ] || set -- "$@" "${a%%T*}"
      if [ -z "$t" ]; then t=$1; shift; n=$((n - 1)); fi;;
    *) set -- "$@" "$a";;
  esac
done
[ -n "$t" ] && exec timeout "$t" /bin/busybox wget "$@"
exec /bin/busybox wget "$@"
