/* The firm dashboard's charts (Chart.js 4, global `Chart`), drawn from the JSON the page embeds in
   <script type="application/json" id="dashboard-data">. Every chart's numbers are also in the table
   under it; amounts and ratios arrive as exact decimal text and become numbers only for drawing. */
(function () {
  "use strict";

  var COLORS = {
    breach: "#b3261e", pause: "#a15c00", warning: "#d4a017", phase_passed: "#137a3a",
    active: "#1f5eff", paused: "#a15c00", breached: "#b3261e", passed: "#137a3a", funded: "#0f766e",
    suspended: "#7c3aed", closed: "#6b7280"
  };
  var PALETTE = ["#1f5eff", "#137a3a", "#a15c00", "#b3261e", "#7c3aed", "#0f766e", "#6b7280", "#db2777"];
  var KIND_LABELS = { breach: "Breaches", pause: "Pauses", warning: "Warnings", phase_passed: "Passes" };

  function color(key, i) { return COLORS[key] || PALETTE[i % PALETTE.length]; }
  function num(text) { return text === null || text === undefined ? null : Number(text); }

  function draw(id, config) {
    var canvas = document.getElementById(id);
    if (!canvas) return null;
    config.options = Object.assign({ responsive: true, maintainAspectRatio: false, animation: false }, config.options || {});
    if (config.type === "bar") config.data.datasets.forEach(function (d) { d.maxBarThickness = 56; });
    return new Chart(canvas, config);
  }

  function integerAxis(title) {
    return { beginAtZero: true, ticks: { precision: 0 }, title: { display: !!title, text: title || "" } };
  }

  function init() {
    var source = document.getElementById("dashboard-data");
    if (!source || typeof Chart === "undefined") return;
    var data = JSON.parse(source.textContent);

    if (data.pass_rates) {
      var p = data.pass_rates;
      draw("chart-pass", {
        type: "bar",
        data: { labels: p.labels, datasets: [{ label: "Pass rate (%)", data: p.percent.map(num), backgroundColor: "#137a3a" }] },
        options: {
          scales: { y: { beginAtZero: true, max: 100, title: { display: true, text: "% of decided accounts" } } },
          plugins: { tooltip: { callbacks: { afterLabel: function (ctx) {
            return "passed " + p.passed[ctx.dataIndex] + ", failed " + p.failed[ctx.dataIndex];
          } } } }
        }
      });
      draw("chart-days", {
        type: "bar",
        data: { labels: p.labels, datasets: [
          { label: "Median days", data: p.median, backgroundColor: "#1f5eff" },
          { label: "Mean days", data: p.mean, backgroundColor: "#93c5fd" }
        ] },
        options: { scales: { y: { beginAtZero: true, title: { display: true, text: "days to pass" } } } }
      });
    }

    if (data.breaches) {
      var b = data.breaches;
      var phases = Object.keys(b.phases);
      draw("chart-breaches", {
        type: "bar",
        data: { labels: b.labels, datasets: phases.map(function (phase, i) {
          return { label: phase || "no phase", data: b.phases[phase], backgroundColor: PALETTE[(i + 3) % PALETTE.length] };
        }) },
        options: { indexAxis: "y", scales: { x: Object.assign(integerAxis("breaches"), { stacked: true }), y: { stacked: true } } }
      });
    }

    var s = data.statuses;
    draw("chart-status", {
      type: "doughnut",
      data: { labels: s.labels, datasets: [{ data: s.counts, backgroundColor: s.labels.map(color) }] },
      options: { plugins: { legend: { position: "bottom" } } }
    });

    var d = data.decisions;
    draw("chart-decisions", {
      type: "line",
      data: { labels: d.dates.map(function (day) { return day.slice(5); }), datasets: Object.keys(d.series).map(function (kind, i) {
        return { label: KIND_LABELS[kind] || kind, data: d.series[kind], borderColor: color(kind, i),
                 backgroundColor: color(kind, i), tension: 0, pointRadius: 2 };
      }) },
      options: {
        interaction: { mode: "index", intersect: false },
        scales: { x: { type: "category", ticks: { maxRotation: 0, autoSkip: true } }, y: integerAxis("decisions") }
      }
    });
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
  else init();
})();
