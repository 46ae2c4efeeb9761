// Live updates: one EventSource on /ui/events; on an event that changes what pages show,
// refetch this page (debounced) and swap its <main> in place, so state changes show
// without a reload. A job page with a live log (<pre id="log" data-live>) also long-polls
// /ui/jobs/ID/log from the byte it shows and appends what arrives.
(function () {
  "use strict";
  var after = document.body.getAttribute("data-after") || "0";
  var timer = null;
  var TAIL_LINES = 500;
  function typing(main) {
    var a = document.activeElement;
    return a && main.contains(a) && (a.tagName === "INPUT" || a.tagName === "TEXTAREA" || a.tagName === "SELECT");
  }
  function refresh() {
    timer = null;
    fetch(window.location.href, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        // Do not clobber a form the operator is typing in.
        if (fresh && main && !typing(main)) {
          main.innerHTML = fresh.innerHTML;
          var log = document.getElementById("log");
          if (log) { log.scrollTop = log.scrollHeight; }
        }
      })
      .catch(function () {});
  }
  function onEvent() { if (!timer) { timer = setTimeout(refresh, 250); } }
  function tail() {
    var log = document.getElementById("log");
    if (!log || !log.hasAttribute("data-live")) { return; }
    var job = log.getAttribute("data-job");
    var offset = log.getAttribute("data-offset") || "0";
    fetch("/ui/jobs/" + encodeURIComponent(job) + "/log?wait=20&offset=" + encodeURIComponent(offset),
      { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) { throw new Error("log " + r.status); }
        var size = r.headers.get("x-testfarm-log-size");
        var st = r.headers.get("x-testfarm-job-state");
        return r.text().then(function (text) { return { text: text, size: size, state: st }; });
      })
      .then(function (got) {
        var now = document.getElementById("log");
        // A swap of <main> meanwhile brought its own copy; continue from there.
        if (now && now.getAttribute("data-offset") === offset) {
          if (got.text) {
            var lines = (now.textContent + got.text).split("\n");
            now.textContent = lines.slice(-TAIL_LINES).join("\n");
            now.scrollTop = now.scrollHeight;
          }
          if (got.size) { now.setAttribute("data-offset", got.size); }
          if (["queued", "assigned", "running"].indexOf(got.state) < 0) {
            now.removeAttribute("data-live");
            onEvent();
          }
        }
        setTimeout(tail, 50);
      })
      .catch(function () { setTimeout(tail, 2000); });
  }
  tail();
  if (!window.EventSource) { return; }
  var es = new EventSource("/ui/events?after=" + encodeURIComponent(after));
  // Events carry their kind as the SSE event name, and EventSource has no wildcard
  // listener, so the kinds that change what the pages show are listed here.
  var kinds = ["alert.acknowledged", "alert.delivery", "alert.raised", "alert.resolved",
    "alert.updated", "board.action", "board.activity", "board.deployed", "board.flash",
    "board.flashed", "board.health", "board.power", "board.quarantined", "board.recovery",
    "board.returned", "job.assigned", "job.cancel_requested", "job.cancelled", "job.finished",
    "job.queued", "job.requeued", "job.started", "job.step", "job.submitted", "lease.acquired",
    "lease.expired", "lease.released", "pipeline.cancel_requested", "pipeline.finished",
    "pipeline.stage", "pipeline.started", "pipeline.submitted", "resource.cleaned",
    "resource.cleanup_failed", "resource.created", "resource.deleted", "resource.health",
    "resource.labels_changed", "resource.maintenance_off", "resource.maintenance_on",
    "resource.maintenance_window", "resource.offline", "resource.online", "resource.registered",
    "resource.retired", "resource.state"];
  es.onmessage = onEvent;
  kinds.forEach(function (k) { es.addEventListener(k, onEvent); });
})();
