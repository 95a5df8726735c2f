// fleet web UI: the live parts of the pages, fetched from /api/v1 with the session cookie.
// Only text is ever inserted (textContent), never HTML.
"use strict";

(function () {
  var EVERY_MS = 3000;

  function getJSON(url) {
    return fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } }).then(
      function (answer) {
        if (!answer.ok) {
          throw new Error(url + ": " + answer.status);
        }
        return answer.json();
      }
    );
  }

  function fillList(list, items) {
    while (list.firstChild) {
      list.removeChild(list.firstChild);
    }
    if (!items.length) {
      var none = document.createElement("li");
      none.className = "none";
      none.textContent = "nothing";
      list.appendChild(none);
    }
    items.forEach(function (item) {
      var li = document.createElement("li");
      li.textContent = item;
      list.appendChild(li);
    });
  }

  function stamp(region) {
    var updated = region.querySelector("[data-updated]");
    if (updated) {
      updated.textContent = "updated " + new Date().toLocaleTimeString();
    }
  }

  function followQueue(region) {
    function refresh() {
      getJSON(region.getAttribute("data-source"))
        .then(function (status) {
          var depth = region.querySelector('[data-field="depth"]');
          var replicas = region.querySelector('[data-field="replicas"]');
          if (depth) depth.textContent = String(status.queue.depth);
          if (replicas) replicas.textContent = String(status.replicas.live);
          var running = region.querySelector('[data-list="running"]');
          var waiting = region.querySelector('[data-list="waiting"]');
          if (running) fillList(running, status.queue.running);
          if (waiting) fillList(waiting, status.queue.waiting);
          stamp(region);
        })
        .catch(function () {
          region.classList.add("stale");
        });
    }
    window.setInterval(refresh, EVERY_MS);
  }

  function cell(text) {
    var td = document.createElement("td");
    td.textContent = text == null ? "" : String(text);
    return td;
  }

  function runRow(run) {
    var tr = document.createElement("tr");
    tr.setAttribute("data-run-id", String(run.id));
    tr.setAttribute("data-status", run.status);
    var first = document.createElement("td");
    var link = document.createElement("a");
    link.href = "/ui/runs/" + encodeURIComponent(String(run.id));
    link.textContent = "#" + run.id;
    first.appendChild(link);
    tr.appendChild(first);
    tr.appendChild(cell(run.kind));
    var status = cell(run.status);
    status.className = "status st-" + run.status;
    tr.appendChild(status);
    tr.appendChild(cell(run.operator));
    tr.appendChild(cell(run.reason || ""));
    tr.appendChild(cell(run.actions.length + " actions"));
    tr.appendChild(cell(run.started_at));
    return tr;
  }

  function followRuns(table) {
    var body = table.querySelector("tbody");
    var shown = "";
    function refresh() {
      getJSON(table.getAttribute("data-source"))
        .then(function (answer) {
          // Rows are replaced only when a run came or changed, so focus is not lost for nothing.
          var now = answer.items
            .map(function (run) {
              return run.id + ":" + run.status + ":" + run.actions.length;
            })
            .join(",");
          if (now === shown) {
            return;
          }
          shown = now;
          var rows = answer.items.map(runRow);
          while (body.firstChild) {
            body.removeChild(body.firstChild);
          }
          rows.forEach(function (row) {
            body.appendChild(row);
          });
        })
        .catch(function () {
          table.classList.add("stale");
        });
    }
    window.setInterval(refresh, EVERY_MS);
  }

  function followRun(badge) {
    if (badge.getAttribute("data-status") !== "running") {
      return;
    }
    var timer = window.setInterval(function () {
      getJSON("/api/v1/runs/" + encodeURIComponent(badge.getAttribute("data-run-id")))
        .then(function (run) {
          if (run.status !== "running") {
            window.clearInterval(timer);
            window.location.reload();
          }
        })
        .catch(function () {
          window.clearInterval(timer);
        });
    }, EVERY_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var queue = document.getElementById("queue");
    if (queue) followQueue(queue);
    var runs = document.querySelector("table.runs[data-source]");
    if (runs) followRuns(runs);
    var badge = document.querySelector("h1 .status[data-run-id]");
    if (badge) followRun(badge);
  });
})();
