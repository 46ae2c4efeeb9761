#!/bin/sh
# Skips everything: a plan of 1..0 with a reason.
echo "1..0 # SKIP needs a real board"
