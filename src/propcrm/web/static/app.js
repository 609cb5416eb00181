/* propcrm web: the one script every page loads (pages work without it; it only adds live data and charts).
 *
 *   propcrm.live(params, handlers) -> {close()}
 *       Opens the server-sent event stream /live?decisions=…&accounts=… and reconnects when it drops.
 *       params:   {decisions: 1 | "accounts", accounts: [ids] or "1,2,3"}   (at most 500 ids)
 *       handlers: {decision(d), account(row), state(text), toasts: false, toastHref(d)}   (all optional)
 *       Every decision also shows a toast in #live-toasts with a link to its account (staff:
 *       /office/accounts/ID; a trader's page passes toastHref), unless handlers.toasts is false.  d = {id, account_id, account, kind, rule, message, ts, value, threshold};
 *       row = the account row's display fields (text, formatted by the server) plus its raw status.
 *   propcrm.toast(text, href, linkText)   a short message at the bottom right (polite live region)
 *   propcrm.fmtTime(ms)                   epoch milliseconds -> "2026-03-02 14:05:00 UTC"
 *   propcrm.fmtDate(ms)                   -> "03-02 14:05" (chart ticks)
 *   propcrm.fmtMoney("99820.125")         -> "99,820.12": decimal text with separators, two places,
 *                                         rounded half-even like the server's |money — never through float
 *   propcrm.lineChart(canvas, doc)        draws {datasets: [{label, data: [[ms, "decimal text"|null], …],
 *                                         color, dashed, stepped, marker}], y_label} with Chart.js on a linear time
 *                                         axis (a set with a Chart.js point style as ``marker`` is drawn as points only,
 *                                         e.g. the breach moment); money strings become numbers only for drawing.
 *   <canvas data-chart-src="/path.json">  is drawn from that JSON on load; the canvas then receives a
 *                                         "propcrm:chart-data" event whose detail is the document (pages
 *                                         fill their data tables from it).
 */
(function () {
  "use strict";
  var propcrm = (window.propcrm = window.propcrm || {});

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  propcrm.fmtTime = function (ms) {
    var d = new Date(ms);
    if (isNaN(d.getTime())) return "—";
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
      pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + " UTC";
  };

  propcrm.fmtDate = function (ms) {
    var d = new Date(ms);
    return pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes());
  };

  propcrm.fmtMoney = function (text) {
    if (text === null || text === undefined || text === "") return "—";
    var m = /^(-?)(\d+)(?:\.(\d+))?$/.exec(String(text));
    if (!m) return String(text);
    var sign = m[1], whole = m[2], frac = m[3] || "";
    if (frac.length > 2) {
      var kept = BigInt(whole + frac.slice(0, 2)), rest = frac.slice(2);
      var half = "5" + new Array(rest.length).join("0");
      if (rest > half || (rest === half && kept % BigInt(2) === BigInt(1))) kept += BigInt(1);
      var digits = kept.toString();
      while (digits.length < 3) digits = "0" + digits;
      whole = digits.slice(0, -2);
      frac = digits.slice(-2);
    } else {
      frac = (frac + "00").slice(0, 2);
    }
    whole = whole.replace(/^0+(?=\d)/, "").replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    if (sign && /^[0,]*$/.test(whole) && frac === "00") sign = "";
    return sign + whole + "." + frac;
  };

  // ------------------------------------------------------------------ toasts
  var MAX_TOASTS = 4;

  propcrm.toast = function (text, href, linkText) {
    var box = document.getElementById("live-toasts");
    if (!box) return;
    var toast = document.createElement("div");
    toast.className = "toast";
    toast.appendChild(document.createTextNode(text + " "));
    if (href) {
      var a = document.createElement("a");
      a.href = href;
      a.textContent = linkText || "Open";
      toast.appendChild(a);
    }
    box.appendChild(toast);
    while (box.children.length > MAX_TOASTS) box.removeChild(box.firstChild);
    setTimeout(function () { if (toast.parentNode) toast.parentNode.removeChild(toast); }, 10000);
  };

  function decisionToast(d, href) {
    var text = d.kind + " on " + d.account + " (" + d.rule + "): " + d.message;
    propcrm.toast(text, href, "Open account");
  }

  // ------------------------------------------------------------------ live stream
  propcrm.live = function (params, handlers) {
    handlers = handlers || {};
    var query = [];
    if (params.decisions) query.push("decisions=" + encodeURIComponent(params.decisions));
    var ids = params.accounts;
    if (ids && typeof ids !== "string") ids = ids.join(",");
    if (ids) query.push("accounts=" + encodeURIComponent(ids));
    var url = "/live" + (query.length ? "?" + query.join("&") : "");
    var source = null, closed = false, delay = 2000, timer = null;
    var isStaff = document.body.getAttribute("data-role") !== "trader";

    function state(text) { if (handlers.state) handlers.state(text); }

    function parse(event) {
      try { return JSON.parse(event.data); } catch (e) { return null; }
    }

    function connect() {
      if (closed || !window.EventSource) return;
      source = new EventSource(url);
      source.onopen = function () { delay = 2000; state("live"); };
      source.addEventListener("decision", function (event) {
        var d = parse(event);
        if (!d) return;
        if (handlers.decision) handlers.decision(d);
        if (handlers.toasts === false) return;
        var href = handlers.toastHref ? handlers.toastHref(d) :
          isStaff ? "/office/accounts/" + encodeURIComponent(d.account_id) : null;
        decisionToast(d, href);
      });
      source.addEventListener("account", function (event) {
        var row = parse(event);
        if (row && handlers.account) handlers.account(row);
      });
      source.onerror = function () {
        if (closed) return;
        if (source.readyState === EventSource.CLOSED) {  // refused (logged out, server gone): retry slowly
          state("reconnecting");
          clearTimeout(timer);
          timer = setTimeout(connect, delay);
          delay = Math.min(delay * 2, 60000);
        } else {
          state("reconnecting");  // the browser retries by itself
        }
      };
    }

    function stop() {
      clearTimeout(timer);
      if (source) source.close();
      source = null;
    }

    connect();
    if (!window.EventSource) state("unavailable");
    // leaving the page frees the connection; coming back from the back/forward cache opens it again
    window.addEventListener("pagehide", stop);
    window.addEventListener("pageshow", function (event) { if (event.persisted && !closed) connect(); });
    return {
      close: function () {
        closed = true;
        stop();
      }
    };
  };

  // ------------------------------------------------------------------ charts
  function toNumber(text) {
    if (text === null || text === undefined || text === "") return null;
    var n = Number(text);  // drawing only: every number shown as text comes from the server
    return isFinite(n) ? n : null;
  }

  propcrm.lineChart = function (canvas, doc) {
    if (!window.Chart) return null;
    var datasets = (doc.datasets || []).map(function (set) {
      return {
        label: set.label,
        data: set.data.map(function (p) { return {x: p[0], y: toNumber(p[1])}; }),
        borderColor: set.color || "#1f5eff",
        backgroundColor: set.color || "#1f5eff",
        borderDash: set.dashed ? [6, 4] : [],
        stepped: set.stepped ? "after" : false,
        borderWidth: set.dashed ? 1.5 : 2,
        pointRadius: set.marker ? 9 : 0,
        pointStyle: set.marker || "circle",
        pointBorderWidth: set.marker ? 3 : 1,
        showLine: !set.marker,  // a marker set is points only: e.g. the breach moment on the equity chart
        pointHitRadius: 6,
        spanGaps: false
      };
    });
    var existing = window.Chart.getChart ? window.Chart.getChart(canvas) : null;
    if (existing) existing.destroy();
    return new window.Chart(canvas, {
      type: "line",
      data: {datasets: datasets},
      options: {
        animation: false,
        responsive: true,
        maintainAspectRatio: false,
        parsing: true,
        interaction: {mode: "nearest", axis: "x", intersect: false},
        scales: {
          x: {type: "linear", ticks: {maxTicksLimit: 8, callback: function (value) { return propcrm.fmtDate(value); }}},
          y: {title: {display: !!doc.y_label, text: doc.y_label || ""}}
        },
        plugins: {
          legend: {position: "bottom"},
          tooltip: {callbacks: {title: function (items) { return items.length ? propcrm.fmtTime(items[0].parsed.x) : ""; }}}
        }
      }
    });
  };

  propcrm.loadChart = function (canvas) {
    var src = canvas.getAttribute("data-chart-src");
    if (!src) return Promise.resolve(null);
    return fetch(src, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) {
        if (!response.ok) throw new Error("chart data: HTTP " + response.status);
        return response.json();
      })
      .then(function (doc) {
        propcrm.lineChart(canvas, doc);
        canvas.dispatchEvent(new CustomEvent("propcrm:chart-data", {detail: doc}));
        return doc;
      });
  };

  document.addEventListener("DOMContentLoaded", function () {
    var canvases = document.querySelectorAll("canvas[data-chart-src]");
    Array.prototype.forEach.call(canvases, function (canvas) {
      propcrm.loadChart(canvas).catch(function (error) {
        canvas.dispatchEvent(new CustomEvent("propcrm:chart-error", {detail: String(error)}));
      });
    });
  });
})();
