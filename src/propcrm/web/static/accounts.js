/* propcrm web: live accounts table, account page and decisions feed (see app.js for propcrm.live).
 *
 * - table[data-live-accounts="1,2,3"]: the rows' cells (data-field) change in place when an account's
 *   row arrives on the stream, with a brief highlight; a breach or pause is announced to screen readers;
 *   a table sorted by a figure (data-sort) keeps its rows in that order as the figures change.
 * - #account-live[data-account-id]: the account page's figures update in place; the chart is redrawn
 *   (at most every 5 s) and the chart's data table is filled from the same JSON.
 * - table[data-live-decisions]: new decisions that match the page's filters appear at the top.
 */
(function () {
  "use strict";

  var MAX_ROWS = 500;  // a busy firm's feed left open all day stays light
  var ANNOUNCE = {breached: "breached", paused: "paused", suspended: "suspended", passed: "passed"};

  function setState(text) {
    var el = document.getElementById("live-state");
    if (!el) return;
    el.textContent = text === "live" ? "Live updates: on" :
      text === "reconnecting" ? "Live updates: reconnecting…" : "Live updates: unavailable";
  }

  function announce(text) {
    var el = document.getElementById("live-announce");
    if (el) el.textContent = text;
  }

  function highlight(el) {
    el.classList.remove("changed");
    void el.offsetWidth;  // restart the animation
    el.classList.add("changed");
  }

  // Update every [data-field] inside `scope` from a row; returns whether anything changed.
  function applyRow(scope, row) {
    var changed = false;
    Array.prototype.forEach.call(scope.querySelectorAll("[data-field]"), function (el) {
      var field = el.getAttribute("data-field");
      if (!(field in row)) return;
      var value = String(row[field]);
      if (el.tagName === "METER" || el.tagName === "PROGRESS") {
        if (el.getAttribute("value") !== value) { el.setAttribute("value", value); el.value = Number(value); changed = true; }
        return;
      }
      if (el.textContent !== value) { el.textContent = value; changed = true; }
      if (field === "status" && el.classList.contains("badge")) el.className = "badge " + row.status;
    });
    return changed;
  }

  function statusChange(scope, row) {
    var before = scope.getAttribute("data-status");
    scope.setAttribute("data-status", row.status);
    if (before && before !== row.status && ANNOUNCE[row.status]) {
      announce("Account " + row.external_id + " is now " + row.status + ".");
    }
  }

  // ------------------------------------------------------------------ the accounts table
  var TEXT_SORTS = {external_id: true, status: true, phase: true};

  // The value a row sorts by (null: none, which sorts last in either direction, as on the server).
  function sortValue(tr, key) {
    var text;
    if (key === "nearest") text = tr.getAttribute("data-nearest") || "";
    else if (key === "external_id") text = tr.querySelector("th").textContent;
    else {
      var el = tr.querySelector('[data-field="' + key + '"]');
      if (!el) return null;
      text = el.textContent;
    }
    text = text.trim();
    if (TEXT_SORTS[key]) return text || null;
    var found = text.replace(/,/g, "").match(/-?\d+(\.\d+)?/);  // "1,234.50" -> 1234.5; "3 / 4" -> 3
    return found ? parseFloat(found[0]) : null;
  }

  // Keep a sorted page sorted when live figures change (the rows of this page among themselves; ties
  // by id in the same direction, figure-less rows last — the server's order).
  function resort(table) {
    var sort = table.getAttribute("data-sort") || "id";
    var desc = sort.charAt(0) === "-", key = desc ? sort.slice(1) : sort;
    if (key === "id") return false;
    var tbody = table.tBodies[0];
    var rows = Array.prototype.slice.call(tbody.rows);
    var keyed = rows.map(function (tr) {
      return {tr: tr, v: sortValue(tr, key), id: Number(tr.getAttribute("data-account-id"))};
    });
    keyed.sort(function (a, b) {
      if ((a.v === null) !== (b.v === null)) return a.v === null ? 1 : -1;
      var c = a.v === b.v || a.v === null ? 0 : (a.v < b.v ? -1 : 1);
      if (c === 0) c = a.id - b.id;
      return desc ? -c : c;
    });
    var moved = keyed.some(function (k, i) { return k.tr !== rows[i]; });
    if (moved) keyed.forEach(function (k) { tbody.appendChild(k.tr); });
    return moved;
  }

  function accountsTable(table) {
    var ids = table.getAttribute("data-live-accounts");
    propcrm.live({decisions: 1, accounts: ids}, {
      state: setState,
      account: function (row) {
        var tr = table.querySelector('tr[data-account-id="' + row.id + '"]');
        if (!tr) return;
        statusChange(tr, row);
        if ("nearest" in row) tr.setAttribute("data-nearest", row.nearest === null ? "" : String(row.nearest));
        if (applyRow(tr, row)) {
          highlight(tr);
          if (resort(table)) announce("The list is re-sorted: account " + row.external_id + " moved.");
        }
      }
    });
  }

  // ------------------------------------------------------------------ the account page
  function accountPage(box) {
    var id = box.getAttribute("data-account-id");
    var canvas = document.getElementById("account-chart");
    var lastDraw = 0, pending = null;

    function redraw() {
      if (!canvas || !window.propcrm.loadChart) return;
      var wait = Math.max(0, 5000 - (Date.now() - lastDraw));
      if (pending) return;
      pending = setTimeout(function () {
        pending = null;
        lastDraw = Date.now();
        propcrm.loadChart(canvas).catch(function () {});
      }, wait);
    }

    propcrm.live({decisions: "accounts", accounts: id}, {
      state: setState,
      toasts: false,  // the decision appears in the table below and the status changes in place
      account: function (row) {
        if (String(row.id) !== id) return;
        statusChange(box, row);
        if (applyRow(box, row)) {
          Array.prototype.forEach.call(box.querySelectorAll("[data-field]"), function (el) {
            if (el.tagName !== "METER") highlight(el);
          });
          redraw();
        }
      },
      decision: function (d) {
        var table = document.querySelector("#decisions table tbody");
        if (table && !table.querySelector('tr[data-decision-id="' + d.id + '"]')) {
          prependDecision(table, d, false);
          announce("New decision: " + d.kind + " (" + d.rule + "): " + d.message);
        }
      }
    });

    if (canvas) {
      canvas.addEventListener("propcrm:chart-data", function (event) { fillChartTable(event.detail); });
      canvas.addEventListener("propcrm:chart-error", function (event) {
        var note = document.getElementById("chart-note");
        if (note) note.textContent = "The chart could not be loaded: " + event.detail;
      });
    }
  }

  function fillChartTable(doc) {
    var note = document.getElementById("chart-note");
    if (note) {
      note.textContent = doc.count ? ("Showing " + doc.shown + " of " + doc.count + " points" +
        (doc.shown < doc.count ? " (down-sampled, keeping every low, high and decision)" : "") + ".")
        : "No evaluated events yet.";
    }
    var body = document.querySelector("#chart-data tbody");
    if (!body) return;
    while (body.firstChild) body.removeChild(body.firstChild);
    var points = doc.points || [];
    var step = Math.max(1, Math.ceil(points.length / 300));  // the table stays readable; the JSON has all
    for (var i = 0; i < points.length; i += step) {
      var p = points[i];
      var tr = document.createElement("tr");
      [propcrm.fmtTime(p.t), propcrm.fmtMoney(p.equity), propcrm.fmtMoney(p.balance), propcrm.fmtMoney(p.daily_floor),
        propcrm.fmtMoney(p.max_loss), (p.decisions || []).join(", ")]
        .forEach(function (value, index) {
          var td = document.createElement("td");
          td.textContent = value === null || value === undefined || value === "" ? "—" : value;
          if (index > 0 && index < 5) td.className = "num";
          tr.appendChild(td);
        });
      body.appendChild(tr);
    }
  }

  // ------------------------------------------------------------------ decisions
  function cell(tr, text, className) {
    var td = document.createElement("td");
    td.textContent = text;
    if (className) td.className = className;
    tr.appendChild(td);
    return td;
  }

  function prependDecision(tbody, d, withAccount) {
    if (tbody.querySelector('tr[data-decision-id="' + d.id + '"]')) return;
    var empty = tbody.querySelector("tr.empty");
    if (empty) tbody.removeChild(empty);
    var tr = document.createElement("tr");
    tr.setAttribute("data-decision-id", d.id);
    cell(tr, propcrm.fmtTime(Date.parse(d.ts))).style.whiteSpace = "nowrap";
    if (withAccount) {
      var td = document.createElement("td");
      var a = document.createElement("a");
      a.href = "/office/accounts/" + encodeURIComponent(d.account_id);
      a.textContent = d.account;
      td.appendChild(a);
      tr.appendChild(td);
    }
    var kind = document.createElement("span");
    kind.className = "badge " + d.kind;
    kind.textContent = d.kind;
    cell(tr, "").appendChild(kind);
    cell(tr, d.rule);
    cell(tr, d.message);
    cell(tr, d.value, "num");
    cell(tr, d.threshold, "num");
    tbody.insertBefore(tr, tbody.firstChild);
    highlight(tr);
    while (tbody.rows.length > MAX_ROWS) tbody.removeChild(tbody.lastElementChild);
  }

  function decisionsFeed(table) {
    var kind = table.getAttribute("data-kind"), rule = table.getAttribute("data-rule");
    var tbody = table.querySelector("tbody");
    propcrm.live({decisions: 1}, {
      state: setState,
      toasts: false,
      decision: function (d) {
        if ((kind && d.kind !== kind) || (rule && d.rule !== rule)) return;
        prependDecision(tbody, d, true);
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    if (!window.propcrm || !window.propcrm.live) return;
    var table = document.querySelector("table[data-live-accounts]");
    if (table) accountsTable(table);
    var box = document.getElementById("account-live");
    if (box) accountPage(box);
    var feed = document.querySelector("table[data-live-decisions]");
    if (feed) decisionsFeed(feed);
  });
})();
