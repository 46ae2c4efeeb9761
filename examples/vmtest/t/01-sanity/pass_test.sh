#!/bin/sh
# Passing: plain TAP from inside the guest.
echo "1..3"
[ -d /proc/self ] && echo "ok 1 - /proc is mounted" || echo "not ok 1 - /proc is mounted"
# v2 passes the environment; a v1 host (--protocol v1) cannot.
[ -n "$TESTFARM_VM" ] && echo "ok 2 - runs on $TESTFARM_VM" || echo "ok 2 # SKIP TESTFARM_VM unset (protocol v1)"
echo "# kernel $(uname -r)"
echo "ok 3 - the share is readable"
