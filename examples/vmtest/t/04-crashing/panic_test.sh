#!/bin/sh
# Guest-crashing: panics the guest kernel. The VM is replaced, the test reported as error.
echo "1..1"
echo "# crashing the guest kernel now"
echo c > /proc/sysrq-trigger
sleep 30
