"""schemathesis hooks for scripts/api-conformance.sh.

`wait` on POST /api/v1/leases holds the request until a matching resource is free or the
wait is over: that is the feature, and a generated `wait` of 50m would hang the run past
the fuzzer's request timeout. A well-formed wait is made 0s (still a valid duration, so a
positive case stays positive); a malformed one is left alone, so the server must still
refuse it.
"""

import re

import schemathesis

# Shape of a duration (see testfarm_core::patterns::DURATION).
_DURATION = re.compile(r"\s*(?:[0-9]{1,9}(?:ms|s|m|h|d))+\s*")


@schemathesis.hook
def before_call(context, case, kwargs):
    if case.operation.path != "/api/v1/leases" or case.method.upper() != "POST":
        return
    body = case.body
    if isinstance(body, dict) and isinstance(body.get("wait"), str) and _DURATION.fullmatch(body["wait"]):
        body["wait"] = "0s"
