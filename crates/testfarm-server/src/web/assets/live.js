// Live updates: one EventSource on /ui/events; on any event, refetch this page (debounced)
// and swap its <main> in place, so state changes show without a reload.
(function () {
  "use strict";
  var after = document.body.getAttribute("data-after") || "0";
  if (!window.EventSource) { return; }
  var timer = null;
  function refresh() {
    timer = null;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        var active = document.activeElement;
        // Do not clobber a form the operator is typing in.
        if (fresh && main && !(active && main.contains(active) && active.tagName === "INPUT")) {
          main.innerHTML = fresh.innerHTML;
        }
      })
      .catch(function () {});
  }
  function onEvent() { if (!timer) { timer = setTimeout(refresh, 250); } }
  var es = new EventSource("/ui/events?after=" + encodeURIComponent(after));
  // Events carry their kind as the SSE event name, and EventSource has no wildcard
  // listener, so the kinds that change what the pages show are listed here.
  var kinds = ["resource.created", "resource.registered", "resource.online", "resource.deleted",
    "resource.maintenance_on", "resource.maintenance_off", "resource.retired", "resource.health",
    "resource.labels_changed", "job.submitted", "job.assigned", "job.started", "job.step",
    "job.finished", "job.cancel_requested", "job.cancelled", "lease.acquired", "lease.released",
    "lease.expired", "pipeline.submitted", "pipeline.finished"];
  es.onmessage = onEvent;
  kinds.forEach(function (k) { es.addEventListener(k, onEvent); });
})();
