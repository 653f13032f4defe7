// watchd dashboard: keeps "time in state" ticking between live updates. No other logic: the
// page is rendered on the server and kept current by htmx over server-sent events.
(function () {
  "use strict";
  function age(seconds) {
    var s = Math.max(0, Math.floor(seconds));
    if (s < 60) return s + "s";
    if (s < 3600) return Math.floor(s / 60) + "m";
    if (s < 86400) {
      var m = Math.floor((s % 3600) / 60);
      return Math.floor(s / 3600) + "h" + (m < 10 ? "0" : "") + m + "m";
    }
    return Math.floor(s / 86400) + "d";
  }
  function tick() {
    var now = Date.now() / 1000;
    var cells = document.querySelectorAll("[data-since]");
    for (var i = 0; i < cells.length; i++) {
      var since = parseFloat(cells[i].getAttribute("data-since"));
      if (!isNaN(since)) cells[i].textContent = age(now - since);
    }
  }
  setInterval(tick, 5000);
})();
