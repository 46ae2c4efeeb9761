#!/bin/sh
# Failing: one test point fails; stderr is kept in the report.
echo "1..2"
echo "ok 1 - first"
echo "expected 42, got 41" >&2
echo "not ok 2 - the answer"
