// The dashboard's own script: live updates (Server-Sent Events, polling when they are
// down), times that count, and the CSRF header on htmx requests. No build step.
(function () {
  "use strict";
  var body = document.body;
  var base = body.dataset.base || "";
  var POLL_MS = 3000;
  var source = null;
  var pollTimer = null;

  function region() { return document.getElementById("live"); }
  function src() { return location.pathname.slice(base.length) + location.search; }
  function setState(state) { body.dataset.live = state; }

  function swap(html, fingerprint) {
    var live = region();
    if (!live || live.dataset.fingerprint === fingerprint) return;
    live.innerHTML = html;  // the region keeps its place: no layout shift around it
    live.dataset.fingerprint = fingerprint;
    if (window.htmx) window.htmx.process(live);
    tick();
  }

  function poll() {
    fetch(location.href, { headers: { "X-Slayq-Fragment": "1" }, credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        var fp = r.headers.get("X-Slayq-Fingerprint") || "";
        return r.text().then(function (html) { swap(html, fp); });
      })
      .catch(function () { /* try again at the next tick */ });
  }

  function startPolling() {
    setState("polling");
    if (!pollTimer) pollTimer = setInterval(poll, POLL_MS);
  }

  function stopPolling() {
    if (pollTimer) { clearInterval(pollTimer); pollTimer = null; }
  }

  function connect() {
    var live = region();
    if (!live) { setState("off"); return; }
    if (!window.EventSource) { startPolling(); return; }
    var url = base + "/live?src=" + encodeURIComponent(src()) +
      "&fp=" + encodeURIComponent(live.dataset.fingerprint || "");
    source = new EventSource(url);
    source.onopen = function () { stopPolling(); setState("connected"); };
    source.addEventListener("fragment", function (e) { swap(e.data, e.lastEventId); });
    source.onerror = function () {
      // CONNECTING: the browser retries by itself; poll meanwhile. CLOSED: it gave up
      // (the server refused), so poll from now on and try the stream again later.
      startPolling();
      if (source.readyState === EventSource.CLOSED) {
        source = null;
        setTimeout(connect, 30000);
      }
    };
  }

  function span(seconds) {
    seconds = Math.floor(seconds);
    if (seconds < 60) return seconds + "s";
    var m = Math.floor(seconds / 60), s = seconds % 60;
    if (m < 60) return m + "m" + (s ? (s < 10 ? "0" : "") + s + "s" : "");
    var h = Math.floor(m / 60); m = m % 60;
    if (h < 24) return h + "h" + (m ? (m < 10 ? "0" : "") + m + "m" : "");
    var d = Math.floor(h / 24); h = h % 24;
    return d + "d" + (h ? h + "h" : "");
  }

  // <time data-rel="ago|countdown">: counted here, so that the server's HTML (and its
  // fingerprint) does not change every second.
  function tick() {
    var now = Date.now();
    document.querySelectorAll("time[data-rel]").forEach(function (t) {
      var at = Date.parse(t.getAttribute("datetime"));
      if (isNaN(at)) return;
      var delta = (now - at) / 1000;
      t.textContent = delta >= 0
        ? (t.dataset.rel === "countdown" ? "due" : span(delta) + " ago")
        : "in " + span(-delta);
    });
  }

  document.addEventListener("htmx:configRequest", function (e) {
    var meta = document.querySelector('meta[name="csrf-token"]');
    if (meta) e.detail.headers["X-CSRF-Token"] = meta.content;
  });

  tick();
  setInterval(tick, 1000);
  connect();
})();
