// asyncflow's web UI: keeps the server-rendered pages live from the server's event stream
// (/api/v1/events, server-sent events). No build step, no dependencies.
(function () {
  "use strict";
  var main = document.querySelector("main");
  if (!main) return;
  var page = main.dataset.page;
  var skew = parseFloat(main.dataset.now || "0") - Date.now() / 1000; // the server's clock, for "now"
  function now() { return Date.now() / 1000 + skew; }
  var FINAL = { COMPLETED: 1, FAILED: 1, CRASHED: 1, CANCELLED: 1 };

  function fmtTime(ts, millis) {
    var d = new Date(ts * 1000);
    function p(n, w) { return String(n).padStart(w || 2, "0"); }
    var text = d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " + p(d.getHours()) + ":" +
      p(d.getMinutes()) + ":" + p(d.getSeconds());
    return millis ? text + "." + p(d.getMilliseconds(), 3) : text;
  }
  function fmtDuration(seconds) {
    seconds = Math.max(0, seconds);
    if (seconds < 0.001) return Math.round(seconds * 1e6) + "µs";
    if (seconds < 1) return (seconds * 1000).toFixed(1) + "ms";
    if (seconds < 60) return seconds.toFixed(1) + "s";
    var m = Math.floor(seconds / 60), s = Math.floor(seconds % 60), h = Math.floor(m / 60);
    return h ? h + "h " + (m % 60) + "m " + s + "s" : m + "m " + s + "s";
  }
  function stateClass(type) { return "state-" + String(type).toLowerCase(); }
  function setBadge(el, state, ts) {
    if (!el) return;
    if (el.dataset.ts && ts < parseFloat(el.dataset.ts)) return; // an older state than shown
    el.className = "badge " + stateClass(state.type);
    el.textContent = state.name;
    el.title = state.type + (state.message ? ": " + state.message : "");
    el.dataset.ts = ts;
  }
  function fromHTML(html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content;
  }

  // -- the event stream -------------------------------------------------------------------------------
  var indicator = document.getElementById("live");
  function connect(params, onBatch) {
    var source = new EventSource("/api/v1/events?" + params);
    source.onopen = function () { if (indicator) indicator.className = "live connected"; };
    source.onerror = function () { if (indicator) indicator.className = "live retrying"; };
    source.addEventListener("changes", function (e) { onBatch(JSON.parse(e.data)); });
    source.addEventListener("reset", function () {
      source.close();
      setTimeout(function () { location.reload(); }, 300);
    });
    window.asyncflowEvents = source;
    return source;
  }

  // -- timelines: segments placed on the scale [start, end or now] -------------------------------------
  var timeline = document.getElementById("timeline");
  function layout() {
    if (!timeline) return;
    var start = parseFloat(timeline.dataset.start);
    var end = timeline.dataset.end ? parseFloat(timeline.dataset.end) : now();
    var span = Math.max(end - start, 1e-6);
    var segs = timeline.querySelectorAll(".seg");
    for (var i = 0; i < segs.length; i++) {
      var seg = segs[i];
      var from = parseFloat(seg.dataset.from);
      var to = seg.dataset.to ? parseFloat(seg.dataset.to) : end;
      var left = Math.min(Math.max((from - start) / span, 0), 1) * 100;
      var width = Math.min(Math.max((to - from) / span, 0), 1) * 100;
      seg.style.left = left.toFixed(3) + "%";
      seg.style.width = Math.min(width, 100 - left).toFixed(3) + "%";
    }
  }
  function addSegment(row, change) {
    var bar = row.querySelector(".tl-bar");
    if (!bar) return;
    var segs = bar.querySelectorAll(".seg");
    var last = segs.length ? segs[segs.length - 1] : null;
    for (var i = 0; i < segs.length; i++) {
      if (parseFloat(segs[i].dataset.from) === change.ts && segs[i].dataset.state === change.state.name) return;
    }
    if (last && parseFloat(last.dataset.from) > change.ts) return; // older than what is shown
    if (last) last.dataset.to = change.ts;
    var seg = document.createElement("span");
    seg.className = "seg " + stateClass(change.state.type);
    seg.dataset.state = change.state.name;
    seg.dataset.from = change.ts;
    seg.dataset.to = FINAL[change.state.type] ? change.ts : "";
    seg.title = change.state.name + " · " + fmtTime(change.ts, true) + (change.state.message ? " · " + change.state.message : "");
    seg.textContent = change.state.name;
    bar.appendChild(seg);
  }
  function addChip(cell, change) {
    if (!cell) return;
    var chip = document.createElement("span");
    chip.className = "chip " + stateClass(change.state.type);
    chip.title = fmtTime(change.ts, true) + (change.state.message ? ": " + change.state.message : "");
    chip.textContent = change.state.name;
    cell.appendChild(chip);
  }
  function times(row, change) {
    // a row's start (first Running) and end (a final state), and its duration cell
    if (change.state.type === "RUNNING" && !row.dataset.start) row.dataset.start = change.ts;
    if (FINAL[change.state.type]) row.dataset.end = change.ts;
    var started = row.querySelector(".started");
    if (started && row.dataset.start) started.textContent = fmtTime(parseFloat(row.dataset.start));
    var duration = row.querySelector(".duration");
    if (duration && row.dataset.start) {
      duration.textContent = row.dataset.end
        ? fmtDuration(parseFloat(row.dataset.end) - parseFloat(row.dataset.start)) : "running";
    }
  }

  // -- logs ---------------------------------------------------------------------------------------------
  var names = {};
  try { names = JSON.parse(main.dataset.names || "{}"); } catch (e) { names = {}; }
  function appendLogs(lines, ownFlowRun) {
    var table = document.getElementById("logs");
    if (!table || main.dataset.logsLast !== "1" || !lines.length) return;
    var body = table.tBodies[0];
    var empty = document.getElementById("no-logs");
    if (empty) empty.remove();
    lines.forEach(function (line) {
      if (body.querySelector('tr[data-seq="' + line.seq + '"]')) return;
      var tr = document.createElement("tr");
      tr.className = "log level-" + line.level.toLowerCase() + " new";
      tr.dataset.seq = line.seq;
      var who = "flow";
      if (line.task_run_id) {
        who = '<a href="/task-runs/' + line.task_run_id + '"></a>';
      } else if (ownFlowRun && line.flow_run_id && line.flow_run_id !== ownFlowRun) {
        who = '<a href="/flow-runs/' + line.flow_run_id + '"></a>';
      }
      tr.innerHTML = '<td class="time"></td><td class="level"></td><td class="who">' + who + '</td><td class="message"><pre></pre></td>';
      tr.children[0].textContent = fmtTime(line.ts, true);
      tr.children[1].textContent = line.level;
      var link = tr.children[2].querySelector("a");
      if (link) {
        var id = line.task_run_id || line.flow_run_id;
        link.textContent = names[id] || id.slice(0, 8);
      }
      tr.querySelector("pre").textContent = line.message;
      body.appendChild(tr);
    });
  }

  // -- the runs page ------------------------------------------------------------------------------------
  if (page === "runs") {
    var runs = document.getElementById("runs");
    var chart = document.getElementById("chart");
    var loadChart = function () {
      if (!chart) return;
      fetch(chart.dataset.src).then(function (r) { return r.ok ? r.text() : null; }).then(function (html) {
        if (html !== null) chart.innerHTML = html;
      });
    };
    loadChart();
    var chartTimer = null;
    var scheduleChart = function () {
      if (chartTimer) return;
      chartTimer = setTimeout(function () { chartTimer = null; loadChart(); }, 5000);
    };
    var fetching = {};
    var latest = {};
    var updateRow = function (row, change) {
      var ts = change.ts;
      if (row.dataset.stateTs && ts < parseFloat(row.dataset.stateTs)) return;
      row.dataset.stateTs = ts;
      setBadge(row.querySelector(".badge"), change.state, ts);
      times(row, change);
    };
    connect("scope=flow_runs&since=" + main.dataset.seq, function (batch) {
      batch.changes.forEach(function (change) {
        var row = document.getElementById("run-" + change.run_id);
        if (row) { updateRow(row, change); return; }
        if (runs.dataset.live !== "1") return; // an older page: new runs are on the first
        latest[change.run_id] = change;
        if (fetching[change.run_id]) return;
        fetching[change.run_id] = true;
        fetch("/runs/row/" + change.run_id + runs.dataset.filter).then(function (r) {
          return r.status === 200 ? r.text() : null;
        }).then(function (html) {
          if (!html || document.getElementById("run-" + change.run_id)) return;
          var tr = fromHTML("<table><tbody>" + html + "</tbody></table>").querySelector("tr");
          tr.classList.add("new");
          runs.tBodies[0].insertBefore(tr, runs.tBodies[0].firstChild);
          var empty = document.getElementById("empty");
          if (empty) empty.remove();
          if (latest[change.run_id]) updateRow(tr, latest[change.run_id]);
        }).finally(function () { delete fetching[change.run_id]; delete latest[change.run_id]; });
      });
      if (batch.changes.length) scheduleChart();
    });
    setInterval(function () { // durations of runs still going
      var rows = runs.querySelectorAll("tr[data-start]");
      for (var i = 0; i < rows.length; i++) {
        var r = rows[i];
        if (r.dataset.start && !r.dataset.end) {
          r.querySelector(".duration").textContent = fmtDuration(now() - parseFloat(r.dataset.start));
        }
      }
    }, 1000);
  }

  // -- a flow run's page --------------------------------------------------------------------------------
  if (page === "flow-run") {
    var flowRunId = main.dataset.flowRunId;
    var table = document.getElementById("task-runs");
    var pendingRows = {};
    var queuedChanges = {};
    var flowFinal = !!timeline.dataset.end;
    var applyToRow = function (change) {
      var row = document.getElementById("tl-" + change.run_id);
      if (!row) return false;
      addSegment(row, change);
      var tr = document.getElementById("tr-" + change.run_id);
      if (tr) {
        setBadge(tr.querySelector(".badge"), change.state, change.ts);
        addChip(tr.querySelector(".history"), change);
        times(tr, change);
      }
      return true;
    };
    // a run not on the page yet: fetch its row (a task run or subflow of this flow run, on the last page
    // of task runs; or of a subflow shown here, nested under it while it shows fewer than 20)
    var fetchRow = function (change, parentId, group) {
      (queuedChanges[change.run_id] = queuedChanges[change.run_id] || []).push(change);
      if (pendingRows[change.run_id]) return;
      pendingRows[change.run_id] = true;
      var depth = group ? parseInt(group.dataset.depth, 10) + 1 : 0;
      var url = "/flow-runs/" + parentId + "/rows/" + change.run_id + "?depth=" + depth + "&start=" +
        timeline.dataset.start + (timeline.dataset.end ? "&end=" + timeline.dataset.end : "");
      fetch(url).then(function (r) { return r.ok ? r.text() : null; }).then(function (html) {
        delete pendingRows[change.run_id];
        var children = waiting[change.run_id] || [];  // its own runs that came before its row did
        delete waiting[change.run_id];
        if (!html || document.getElementById("tl-" + change.run_id)) return;
        var frag = fromHTML(html);
        var rowNodes = frag.querySelector(".frag-timeline");
        var after = null;
        if (group) {  // after the group's last row (its nested rows follow it)
          var mine = timeline.querySelectorAll('.tl-row[data-parent="' + parentId + '"]');
          after = mine.length ? mine[mine.length - 1] : group;
        }
        var nodes = [];
        while (rowNodes && rowNodes.firstChild) nodes.push(rowNodes.removeChild(rowNodes.firstChild));
        nodes.forEach(function (node) {
          if (node.nodeType === 1) node.classList.add("new");
          if (after) {
            after.parentNode.insertBefore(node, after.nextSibling);
            after = node;
          } else {
            timeline.appendChild(node);
          }
        });
        var tr = frag.querySelector(".frag-table tr");
        if (tr && table) { tr.classList.add("new"); table.tBodies[0].appendChild(tr); }
        var none = document.getElementById("no-task-runs");
        if (none) none.remove();
        (queuedChanges[change.run_id] || []).forEach(applyToRow); // what arrived while fetching
        children.forEach(handle);
        layout();
      }).finally(function () { delete pendingRows[change.run_id]; delete queuedChanges[change.run_id]; });
    };
    var waiting = {};
    var handle = function (change) {
      if (change.run_name) names[change.run_id] = change.run_name;
      if (change.run_id === flowRunId) {
        setBadge(document.getElementById("run-state"), change.state, change.ts);
        document.getElementById("run-message").textContent = change.state.message || "";
        addSegment(document.getElementById("tl-" + flowRunId), change);
        if (FINAL[change.state.type]) {
          timeline.dataset.end = change.ts;
          flowFinal = true;
          document.getElementById("run-ended").textContent = fmtTime(change.ts, true);
        }
        return;
      }
      if (applyToRow(change)) return;
      if (pendingRows[change.run_id]) { queuedChanges[change.run_id].push(change); return; }
      var parentId = change.kind === "task_run" ? change.flow_run_id : change.parent_flow_run_id;
      if (parentId === flowRunId) {
        if (main.dataset.lastPage === "1") fetchRow(change, flowRunId, null);
        return;
      }
      if (parentId && pendingRows[parentId]) {  // its subflow's row is on its way
        (waiting[parentId] = waiting[parentId] || []).push(change);
        return;
      }
      var group = parentId && document.getElementById("tl-" + parentId);
      if (group && group.dataset.kind === "flow_run" && parseInt(group.dataset.depth, 10) + 1 < 2 &&
          timeline.querySelectorAll('.tl-row[data-parent="' + parentId + '"]').length < 20) {
        fetchRow(change, parentId, group);
      }
    };
    connect("flow_run_id=" + flowRunId + "&since=" + main.dataset.seq + "&logs=true&logs_since=" +
      main.dataset.logSeq + (main.dataset.level ? "&level=" + main.dataset.level : ""), function (batch) {
      batch.changes.forEach(handle);
      appendLogs(batch.logs, flowRunId);
      layout();
    });
    setInterval(function () { if (!flowFinal) layout(); }, 1000);
  }

  // -- a task run's page --------------------------------------------------------------------------------
  if (page === "task-run") {
    var taskRunId = main.dataset.taskRunId;
    var history = document.getElementById("history");
    connect("task_run_id=" + taskRunId + "&since=" + main.dataset.seq + "&logs=true&logs_since=" +
      main.dataset.logSeq + (main.dataset.level ? "&level=" + main.dataset.level : ""), function (batch) {
      batch.changes.forEach(function (change) {
        var badge = document.getElementById("run-state");
        if (badge.dataset.ts && change.ts <= parseFloat(badge.dataset.ts)) return;
        setBadge(badge, change.state, change.ts);
        document.getElementById("run-message").textContent = change.state.message || "";
        addSegment(document.getElementById("tl-" + taskRunId), change);
        if (FINAL[change.state.type]) timeline.dataset.end = change.ts;
        var tr = document.createElement("tr");
        tr.className = "new";
        tr.innerHTML = '<td class="time"></td><td><span class="badge"></span></td><td></td><td></td>';
        tr.children[0].textContent = fmtTime(change.ts, true);
        setBadge(tr.querySelector(".badge"), change.state, change.ts);
        tr.children[2].textContent = change.state.type;
        tr.children[3].textContent = change.state.message || "";
        history.tBodies[0].appendChild(tr);
      });
      appendLogs(batch.logs, null);
      layout();
    });
    setInterval(function () { if (!timeline.dataset.end) layout(); }, 1000);
  }

  // -- the background page: a small read, repeated while the page is visible ----------------------------
  if (page === "background") {
    var queue = document.getElementById("queue");
    setInterval(function () {
      if (document.hidden) return;
      fetch(queue.dataset.refresh).then(function (r) { return r.ok ? r.text() : null; }).then(function (html) {
        if (html !== null) queue.innerHTML = html;
      });
    }, 2000);
  }
})();
