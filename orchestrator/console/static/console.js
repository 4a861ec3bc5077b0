// sagaline console: refresh the live part of the page when the journal moves (server-sent events).
(function () {
  "use strict";
  var live = document.getElementById("live");
  if (!live || !window.EventSource) { return; }
  var kind = live.dataset.listen, saga = live.dataset.saga || "", url = live.dataset.fragment;
  var busy = false, again = false;
  function typing() {
    var el = document.activeElement;
    return el && live.contains(el) && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT") && el.value !== "";
  }
  function refresh() {
    if (busy || typing()) { again = true; return; }
    busy = true;
    fetch(url, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html !== null) {
          live.innerHTML = html;
          live.dataset.updated = String(Date.now());
        }
      })
      .catch(function () { again = true; })
      .finally(function () {
        busy = false;
        if (again) { again = false; setTimeout(refresh, 200); }
      });
  }
  live.addEventListener("focusout", function () { if (again) { again = false; setTimeout(refresh, 50); } });
  var source = new EventSource("/events");
  source.addEventListener(kind, function (e) {
    var data = JSON.parse(e.data);
    if (!saga || data.saga_id === saga) { refresh(); }
  });
  var opened = false;
  source.addEventListener("open", function () {
    if (opened) { refresh(); }  // reconnected: events may have been missed
    opened = true;
    document.body.dataset.live = "on";
  });
})();
