#!/bin/sh
# Skipping: the whole script, with a reason.
echo "1..0 # SKIP needs a real board"
