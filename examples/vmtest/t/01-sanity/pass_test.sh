#!/bin/sh
# Passing: plain TAP from inside the guest.
echo "1..3"
[ -d /proc/self ] && echo "ok 1 - /proc is mounted" || echo "not ok 1 - /proc is mounted"
[ -n "$TESTFARM_VM" ] && echo "ok 2 - runs on $TESTFARM_VM" || echo "not ok 2 - TESTFARM_VM set"
echo "# kernel $(uname -r)"
echo "ok 3 - the share is readable"
