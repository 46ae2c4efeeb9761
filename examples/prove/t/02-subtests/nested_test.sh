#!/bin/sh
# Both subtest forms of TAP 14, plan at the end.
cat <<'TAP'
TAP version 14
# Subtest: streamed
    1..2
    ok 1 - first
    ok 2 - second
ok 1 - streamed
ok 2 - buffered {
    1..1
    ok 1 - inside
}
1..2
TAP
