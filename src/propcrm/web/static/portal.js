/* Trader portal scripts (the pages work without them):
 *
 * - /portal: follows the trader's accounts over the live stream (app.js propcrm.live). When an account
 *   changes, its card is fetched again from the server (/portal/accounts/{id}/card, the same template)
 *   and swapped in, so the bars always show the server's numbers; a new decision shows a toast that
 *   links to the account (to "why did my account fail" for a breach).
 * - every page with a daily-reset countdown (.countdown[data-reset]): counts it down each second.
 * - /portal/accounts/{id}: the same toasts, a note that the figures changed, and the data table beside
 *   the chart (app.js draws the chart from the canvas's data-chart-src and hands the document over in a
 *   "propcrm:chart-data" event). Numbers are shown as the server sent them (decimal text).
 */
(function () {
  "use strict";
  var propcrm = window.propcrm || {};
  var status = document.getElementById("portal-live");

  function say(text) { if (status) status.textContent = text; }

  function fmtTime(ms) {
    return propcrm.fmtTime ? propcrm.fmtTime(ms) : new Date(ms).toISOString();
  }

  function decisionToast(d) {
    if (!propcrm.toast) return;
    var base = "/portal/accounts/" + encodeURIComponent(d.account_id);
    var breach = d.kind === "breach";
    propcrm.toast(d.kind + " on " + d.account + " (" + d.rule + "): " + d.message,
      breach ? base + "/why" : base, breach ? "Why did my account fail?" : "Open account");
  }

  // ------------------------------------------------------------------ countdowns to the daily reset
  // Each <span class="countdown" data-reset="ISO time"> is counted down every second as h:mm:ss, as the
  // server renders it (queries_trades.clock_text).
  function left(seconds) {
    var two = function (n) { return (n < 10 ? "0" : "") + n; };
    return Math.floor(seconds / 3600) + ":" + two(Math.floor(seconds % 3600 / 60)) + ":" + two(seconds % 60);
  }
  function tick() {
    var now = Date.now();
    Array.prototype.forEach.call(document.querySelectorAll(".countdown[data-reset]"), function (el) {
      var at = Date.parse(el.getAttribute("data-reset"));
      if (isNaN(at)) return;
      var seconds = Math.max(0, Math.floor((at - now) / 1000));
      el.textContent = seconds ? left(seconds) : "0:00:00 (a new trading day has begun: reload for its figures)";
    });
  }
  if (document.querySelector(".countdown[data-reset]")) { tick(); setInterval(tick, 1000); }

  // ------------------------------------------------------------------ /portal: live cards
  var cards = document.getElementById("portal-cards");
  if (cards && propcrm.live) {
    var ids = Array.prototype.map.call(cards.querySelectorAll("section[data-account]"), function (el) {
      return el.getAttribute("data-account");
    });
    var pending = {};

    var refresh = function (id) {
      if (pending[id]) return;
      pending[id] = setTimeout(function () {
        fetch("/portal/accounts/" + encodeURIComponent(id) + "/card",
              {credentials: "same-origin", headers: {"Accept": "text/html"}})
          .then(function (response) {
            if (!response.ok) throw new Error("HTTP " + response.status);
            return response.text();
          })
          .then(function (html) {
            delete pending[id];
            var doc = new DOMParser().parseFromString(html, "text/html");
            var fresh = doc.querySelector('section[data-account="' + id + '"]');
            var old = cards.querySelector('section[data-account="' + id + '"]');
            if (!fresh || !old) return;
            var node = document.importNode(fresh, true);
            node.classList.add("changed");
            old.replaceWith(node);
            say("Updated " + fmtTime(Date.now()) + ".");
          })
          .catch(function (error) {
            delete pending[id];
            say("Live update failed (" + error.message + "); reload the page for current figures.");
          });
      }, 300);
    };

    if (ids.length) {
      propcrm.live({decisions: "accounts", accounts: ids.slice(0, 500)}, {
        toasts: false,
        decision: function (d) { decisionToast(d); refresh(String(d.account_id)); },
        account: function (row) { refresh(String(row.id)); },
        state: function (text) {
          say(text === "live" ? "Live: your figures update as your platform reports." :
              text === "reconnecting" ? "Reconnecting to live updates…" : "");
        }
      });
    }
  }

  // ------------------------------------------------------------------ /portal/accounts/{id}
  var accountId = status && status.getAttribute("data-account");
  if (accountId && propcrm.live) {
    propcrm.live({decisions: "accounts", accounts: [accountId]}, {
      toasts: false,
      decision: function (d) { decisionToast(d); },
      account: function () {
        if (!status) return;
        status.textContent = "New figures arrived " + fmtTime(Date.now()) + ". ";
        var a = document.createElement("a");
        a.href = window.location.pathname;
        a.textContent = "Reload to see them";
        status.appendChild(a);
      }
    });
  }

  var canvas = document.getElementById("portal-chart");
  if (!canvas) return;
  var note = document.getElementById("portal-chart-note");
  var body = document.querySelector("#portal-chart-data tbody");

  canvas.addEventListener("propcrm:chart-data", function (event) {
    var doc = event.detail || {};
    var points = doc.points || [];
    if (note) {
      note.textContent = doc.count ? ("Showing " + doc.shown + " of " + doc.count + " points" +
        (doc.shown < doc.count ? " (thinned out, keeping every low, high and decision)" : "") + ".")
        : "No trading evaluated yet: the chart starts with your first event.";
    }
    if (!body) return;
    while (body.firstChild) body.removeChild(body.firstChild);
    var step = Math.max(1, Math.ceil(points.length / 300));
    for (var i = 0; i < points.length; i += step) {
      var p = points[i];
      var tr = document.createElement("tr");
      [fmtTime(p.t), p.equity, p.balance, p.daily_floor, p.max_loss, (p.decisions || []).join(", ")]
        .forEach(function (value, index) {
          var td = document.createElement("td");
          td.textContent = value === null || value === undefined || value === "" ? "—" : value;
          if (index > 0 && index < 5) td.className = "num";
          tr.appendChild(td);
        });
      body.appendChild(tr);
    }
    if (!points.length) {
      var empty = document.createElement("tr");
      var td = document.createElement("td");
      td.colSpan = 6;
      td.textContent = "No points yet.";
      empty.appendChild(td);
      body.appendChild(empty);
    }
  });
  canvas.addEventListener("propcrm:chart-error", function (event) {
    if (note) note.textContent = "The chart could not be loaded (" + event.detail + "); the figures above are current.";
  });
})();
