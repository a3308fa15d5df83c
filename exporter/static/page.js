// The page at /: swap in a fresh <main> every minute from GET / (same origin, with the browser's credentials),
// without a full reload. Inlined into the HTML; the page works without it.
(function () {
  "use strict";
  var PERIOD_MS = 60000;
  var status = document.getElementById("live");

  function say(text) {
    if (status) {
      status.textContent = text;
    }
  }

  function refresh() {
    return fetch(window.location.pathname + window.location.search, {
      credentials: "same-origin",
      cache: "no-store",
      headers: { Accept: "text/html" },
    })
      .then(function (resp) {
        if (!resp.ok) {
          throw new Error("HTTP " + resp.status);
        }
        return resp.text();
      })
      .then(function (text) {
        var fresh = new DOMParser().parseFromString(text, "text/html").querySelector("main");
        var main = document.querySelector("main");
        if (!fresh || !main) {
          throw new Error("no <main> in the page");
        }
        var open = {};
        main.querySelectorAll("details[open][id]").forEach(function (el) {
          open[el.id] = true;
        });
        // Move the parsed nodes over instead of re-serializing them: no second parse of server text.
        main.replaceChildren.apply(main, Array.prototype.slice.call(fresh.childNodes));
        main.querySelectorAll("details[id]").forEach(function (el) {
          if (open[el.id]) {
            el.open = true;
          }
        });
        say("Live: refreshes every minute; last refreshed " + new Date().toLocaleTimeString() + ".");
        return true;
      })
      .catch(function (err) {
        say("Refresh failed (" + err.message + "); retrying in a minute.");
        return false;
      });
  }

  window.flakedropRefresh = refresh;
  say("Live: refreshes every minute.");
  window.setInterval(function () {
    if (!document.hidden) {
      refresh();
    }
  }, PERIOD_MS);
})();
