/* Abuse case page: the matched trades of a hedging or copy group on one time axis, and each latency
   fill against the reference quotes around it (Chart.js 4, global `Chart`; no date adapter: a linear
   x axis of epoch milliseconds with a tick formatter). The data comes from
   <script type="application/json" id="case-charts">; every number drawn is also in the tables of the
   page. Prices arrive as the platform's text and become numbers only for drawing. */
(function () {
  "use strict";

  var PALETTE = ["#1f5eff", "#b3261e", "#137a3a", "#a15c00", "#7c3aed", "#0f766e", "#db2777", "#6b7280"];

  function pad(n) { return (n < 10 ? "0" : "") + n; }

  function fmtTime(ms, withDate) {
    var d = new Date(ms);
    var time = pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds());
    if (!withDate) return time;
    return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " + time;
  }

  function timeAxis(span) {
    return {
      type: "linear",
      ticks: {
        maxRotation: 0, autoSkip: true, maxTicksLimit: 8,
        callback: function (value) { return span > 86400000 ? fmtTime(value, true).slice(5, 16) : fmtTime(value, false); }
      },
      title: { display: true, text: "time (UTC)" }
    };
  }

  function base(options) {
    return Object.assign({ responsive: true, maintainAspectRatio: false, animation: false,
                           interaction: { mode: "nearest", intersect: true } }, options);
  }

  /* ---------------------------------------------------------------- matched trades */

  function matchedChart(data) {
    var canvas = document.getElementById("matched-chart");
    if (!canvas || !data || !data.accounts.length) return;
    var row = {};
    data.accounts.forEach(function (name, i) { row[name] = i; });
    var lo = Infinity, hi = -Infinity;
    data.segments.forEach(function (s) {
      if (s.start !== null) { lo = Math.min(lo, s.start); hi = Math.max(hi, s.end !== null ? s.end : s.start); }
    });
    if (!isFinite(lo)) return;
    var datasets = data.accounts.map(function (name, i) {
      var points = [];
      data.segments.forEach(function (s) {
        if (s.account !== name || s.start === null) return;
        var end = s.end !== null ? s.end : hi;
        var text = s.account + " " + s.position + ": " + s.side + " " + s.lots + " " + s.symbol + " @ " + s.open_price +
          (s.end !== null ? " → " + s.close_price + ", net " + s.net_profit : " (open)");
        points.push({ x: s.start, y: i, t: text, edge: "opened " + fmtTime(s.start, true) });
        points.push({ x: end, y: i, t: text, edge: s.end !== null ? "closed " + fmtTime(end, true) : "still open" });
        points.push({ x: end, y: null });
      });
      var colour = PALETTE[i % PALETTE.length];
      return { label: name, data: points, borderColor: colour, backgroundColor: colour, borderWidth: 6,
               pointRadius: 3, spanGaps: false, borderCapStyle: "butt" };
    });
    var links = [];
    data.matches.forEach(function (m) {
      links.push({ x: m.a_ms, y: row[m.a], t: "match " + m.n + " of pair " + m.pair + ": " + m.a + " ↔ " + m.b, edge: "" });
      links.push({ x: m.b_ms, y: row[m.b], t: "match " + m.n + " of pair " + m.pair + ": " + m.a + " ↔ " + m.b, edge: "" });
      links.push({ x: m.b_ms, y: null });
    });
    datasets.push({ label: "matched openings", data: links, borderColor: "#111827", borderDash: [4, 3], borderWidth: 1,
                    pointRadius: 0, spanGaps: false });
    var span = hi - lo;
    var chart = new Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: base({
        scales: {
          x: Object.assign(timeAxis(span), { min: lo - span * 0.02, max: hi + span * 0.02 }),
          y: { type: "linear", min: -0.5, max: data.accounts.length - 0.5, reverse: true,
               afterBuildTicks: function (axis) { axis.ticks = data.accounts.map(function (_, i) { return { value: i }; }); },
               ticks: { autoSkip: false, callback: function (v) { return data.accounts[v] !== undefined ? data.accounts[v] : ""; } } }
        },
        plugins: { tooltip: { callbacks: {
          title: function (items) { return items.length ? items[0].raw.t : ""; },
          label: function (ctx) { return ctx.raw.edge || ""; }
        } } }
      })
    });
    windowPicker(chart, data, lo, hi);
  }

  /* A day picker (days are hours apart: a whole-range axis would show minutes-long trades as dots). */
  function windowPicker(chart, data, lo, hi) {
    var box = document.getElementById("matched-controls");
    if (!box) return;
    var days = {};
    data.segments.forEach(function (s) { if (s.start !== null) days[new Date(s.start).toISOString().slice(0, 10)] = true; });
    var names = Object.keys(days).sort();
    var select = document.createElement("select");
    select.id = "matched-window";
    var all = document.createElement("option");
    all.value = "";
    all.textContent = "All matched trades";
    select.appendChild(all);
    names.forEach(function (day) {
      var o = document.createElement("option");
      o.value = day;
      o.textContent = day;
      select.appendChild(o);
    });
    data.matches.forEach(function (m, k) {
      var o = document.createElement("option");
      o.value = "m" + k;
      o.textContent = "Match " + m.n + " of pair " + m.pair + " (" + m.a + " / " + m.b + ")";
      select.appendChild(o);
    });
    var label = document.createElement("label");
    label.htmlFor = "matched-window";
    label.textContent = "Time window";
    var wrap = document.createElement("div");
    wrap.className = "stack";
    wrap.appendChild(label);
    wrap.appendChild(select);
    box.appendChild(wrap);
    select.addEventListener("change", function () {
      var v = select.value, a = lo, b = hi;
      if (v.charAt(0) === "m") {
        var m = data.matches[Number(v.slice(1))];
        var segs = data.segments.filter(function (s) {
          return (s.account === m.a && s.start === m.a_ms) || (s.account === m.b && s.start === m.b_ms);
        });
        a = Math.min(m.a_ms, m.b_ms);
        b = Math.max.apply(null, segs.map(function (s) { return s.end !== null ? s.end : hi; }).concat([a + 1000]));
      } else if (v) {
        a = Date.parse(v + "T00:00:00Z");
        b = a + 86400000;
        var inDay = data.segments.filter(function (s) { return s.start !== null && s.start >= a && s.start < b; });
        a = Math.min.apply(null, inDay.map(function (s) { return s.start; }));
        b = Math.max.apply(null, inDay.map(function (s) { return s.end !== null ? s.end : hi; }));
      }
      var pad = Math.max((b - a) * 0.03, 1000);
      chart.options.scales.x.min = a - pad;
      chart.options.scales.x.max = b + pad;
      chart.options.scales.x.ticks.callback = function (value) {
        return b - a > 86400000 ? fmtTime(value, true).slice(5, 16) : fmtTime(value, false);
      };
      chart.update();
    });
  }

  /* ---------------------------------------------------------------- latency */

  function latencyChart(canvas, fill) {
    if (canvas.dataset.drawn) return;
    canvas.dataset.drawn = "1";
    var quotes = fill.quotes;
    var end = Math.max(fill.fill_ms, quotes.length ? quotes[quotes.length - 1].ms : fill.fill_ms) + 2000;
    function series(key) {
      var points = quotes.map(function (q) { return { x: q.ms, y: Number(q[key]), t: key + " " + q[key] + " at " + fmtTime(q.ms, true) }; });
      if (quotes.length) {
        var last = quotes[quotes.length - 1];
        points.push({ x: end, y: Number(last[key]), t: key + " " + last[key] + " (still the latest quote)" });
      }
      return points;
    }
    var datasets = [
      { label: "bid", data: series("bid"), borderColor: "#2b5a8a", backgroundColor: "#2b5a8a", stepped: true, pointRadius: 2 },
      { label: "ask", data: series("ask"), borderColor: "#a15c00", backgroundColor: "#a15c00", stepped: true, pointRadius: 2 },
      { label: "fill (" + fill.side + " " + fill.fill + ")", type: "scatter",
        data: [{ x: fill.fill_ms, y: Number(fill.fill), t: "filled " + fill.side + " at " + fill.fill + ", " + fmtTime(fill.fill_ms, true) }],
        borderColor: "#b3261e", backgroundColor: "#b3261e", pointStyle: "triangle", pointRadius: 8 }
    ];
    if (fill.order_ms !== null && fill.order_ms !== fill.fill_ms) {
      datasets.push({ label: "order sent", type: "scatter",
        data: [{ x: fill.order_ms, y: Number(fill.fill), t: "order sent " + fmtTime(fill.order_ms, true) + " (filled later at " + fill.fill + ")" }],
        borderColor: "#111827", backgroundColor: "#fff", pointStyle: "rectRot", pointRadius: 7 });
    }
    var lo = Math.min.apply(null, [fill.fill_ms].concat(quotes.map(function (q) { return q.ms; }))
      .concat(fill.order_ms !== null ? [fill.order_ms] : [])) - 2000;
    new Chart(canvas, {
      type: "line",
      data: { datasets: datasets },
      options: base({
        scales: { x: Object.assign(timeAxis(end - lo), { min: lo, max: end }), y: { title: { display: true, text: fill.symbol } } },
        plugins: { tooltip: { callbacks: { label: function (ctx) { return ctx.raw.t || ""; } } } }
      })
    });
  }

  function latencyCharts(list) {
    if (!list) return;
    var byN = {};
    list.forEach(function (f) { byN[f.n] = f; });
    document.querySelectorAll("canvas[data-latency-chart]").forEach(function (canvas) {
      var fill = byN[canvas.dataset.latencyChart];
      if (!fill) return;
      var details = canvas.closest("details");
      if (!details || details.open) latencyChart(canvas, fill);
      if (details) details.addEventListener("toggle", function () { if (details.open) latencyChart(canvas, fill); });
    });
  }

  function init() {
    var source = document.getElementById("case-charts");
    if (!source || typeof Chart === "undefined") return;
    var data = JSON.parse(source.textContent);
    if (data.matched) matchedChart(data.matched);
    latencyCharts(data.latency);
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
