/* sparsecircuits circuit page: hover highlighting and the node panel.
 *
 * The graph itself is SVG written by Python; this script only reads the page's JSON
 * block and builds DOM nodes. All text from the data goes in through textContent or
 * setAttribute, never through HTML parsing, so a token that looks like a tag stays text.
 */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var dataEl = document.getElementById("circuit-data");
  var panel = document.getElementById("panel");
  if (!dataEl || !panel) { return; }
  var data = JSON.parse(dataEl.textContent);
  var nodes = data.nodes || [];
  var links = data.links || [];
  var svg = document.querySelector("#graph svg.circuit-graph");
  var nodeEls = [];
  var edgeEls = [];
  var ins = nodes.map(function () { return []; });
  var outs = nodes.map(function () { return []; });
  var selected = -1;

  links.forEach(function (l, li) {
    if (outs[l[0]] && ins[l[1]]) { outs[l[0]].push(li); ins[l[1]].push(li); }
  });
  if (svg) {
    svg.querySelectorAll("g.node").forEach(function (g) { nodeEls[Number(g.getAttribute("data-i"))] = g; });
    svg.querySelectorAll("path.edge").forEach(function (p) { edgeEls[Number(p.getAttribute("data-l"))] = p; });
  }
  var maxDelta = 0;
  nodes.forEach(function (n) {
    var d = n.details && n.details.ablation_delta;
    if (typeof d === "number") { maxDelta = Math.max(maxDelta, Math.abs(d)); }
  });

  // ---------------------------------------------------------------- helpers
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function sel(tag, attrs, text) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, String(attrs[k])); });
    if (text !== undefined && text !== null) { e.textContent = String(text); }
    return e;
  }
  function stitle(parent, text) { parent.appendChild(sel("title", {}, text)); return parent; }
  function fmt(x, digits) {
    if (typeof x !== "number" || !isFinite(x)) { return "\u2013"; }
    if (x === 0) { return "0"; }
    var a = Math.abs(x);
    if (a >= 1e5 || a < 1e-3) { return x.toExponential(2); }
    return String(Number(x.toPrecision(digits || 3)));
  }
  function signed(x) { return (x > 0 ? "+" : "") + fmt(x, 3); }
  function visible(tok) {
    return String(tok).replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5").replace(/\r/g, "\u240d");
  }
  function shortTok(tok, limit) {
    var v = visible(tok).replace(/ /g, "\u2423");
    return v.length > limit ? v.slice(0, limit - 1) + "\u2026" : (v || "\u2205");
  }
  function actColor(r) {
    // r in [-1, 1]: blue for positive, red for negative, like the edges.
    var a = Math.min(Math.abs(r), 1) * 0.85;
    return r >= 0 ? "rgba(37, 99, 235, " + a.toFixed(3) + ")" : "rgba(220, 38, 38, " + a.toFixed(3) + ")";
  }
  function section(title) {
    panel.appendChild(el("h3", null, title));
  }
  function nodeName(j) {
    var n = nodes[j];
    var where = n.layer !== null && n.layer !== undefined ? "L" + n.layer + " " : "";
    var head = n.head !== null && n.head !== undefined ? " h" + n.head : "";
    return where + (n.site || "?") + head + " " + n.label;
  }

  // ---------------------------------------------------------------- highlighting
  function highlight(i) {
    if (!svg) { return; }
    svg.querySelectorAll(".hl").forEach(function (e) { e.classList.remove("hl"); });
    if (i < 0) { svg.classList.remove("focus"); return; }
    svg.classList.add("focus");
    if (nodeEls[i]) { nodeEls[i].classList.add("hl"); }
    ins[i].concat(outs[i]).forEach(function (li) {
      if (edgeEls[li]) { edgeEls[li].classList.add("hl"); }
      var l = links[li];
      [l[0], l[1]].forEach(function (j) { if (nodeEls[j]) { nodeEls[j].classList.add("hl"); } });
    });
  }

  function select(i, fromPanel) {
    if (selected >= 0 && nodeEls[selected]) { nodeEls[selected].classList.remove("selected"); }
    selected = i;
    if (i >= 0 && nodeEls[i]) {
      nodeEls[i].classList.add("selected");
      if (fromPanel && nodeEls[i].scrollIntoView) {
        nodeEls[i].scrollIntoView({ block: "nearest", inline: "nearest" });
      }
    }
    highlight(i);
    if (i >= 0) { renderNode(i); } else { renderOverview(); }
    try {
      history.replaceState(null, "", i >= 0 ? "#node=" + encodeURIComponent(nodes[i].id) : "#");
    } catch (e) { /* some file:// contexts refuse replaceState; the hash is a convenience */ }
  }

  // ---------------------------------------------------------------- panel pieces
  function factsTable(rows) {
    var t = el("table", "facts");
    rows.forEach(function (r) {
      if (r[1] === null || r[1] === undefined || r[1] === "") { return; }
      var tr = el("tr");
      tr.appendChild(el("td", null, r[0]));
      tr.appendChild(el("td", null, r[1]));
      t.appendChild(tr);
    });
    return t;
  }

  function bar(frac, color) {
    var b = el("div", "bar");
    var f = el("div");
    f.style.width = (Math.max(0, Math.min(1, frac)) * 100).toFixed(1) + "%";
    f.style.background = color;
    b.appendChild(f);
    return b;
  }

  function snippetRow(s, scale) {
    var row = el("div", "snippet");
    var toks = el("span", "toks");
    var peak = -1;
    var best = -Infinity;
    s.acts.forEach(function (a, k) { if (Math.abs(a) > best) { best = Math.abs(a); peak = k; } });
    s.tokens.forEach(function (t, k) {
      var a = s.acts[k] || 0;
      var span = el("span", k === peak ? "tok peak" : "tok", visible(t));
      var r = scale > 0 ? a / scale : 0;
      span.style.background = actColor(r);
      if (Math.abs(r) > 0.6) { span.style.color = "#fff"; }
      span.setAttribute("title", JSON.stringify(String(t)) + "  act " + fmt(a, 4));
      toks.appendChild(span);
    });
    row.appendChild(toks);
    row.appendChild(el("span", "smax", fmt(s.max, 3)));
    return row;
  }

  function classStrip(classes) {
    var keys = Object.keys(classes);
    var all = [];
    keys.forEach(function (k) { all = all.concat(classes[k]); });
    if (!all.length) { return null; }
    var lo = all.reduce(function (a, b) { return Math.min(a, b); }, 0);
    var hi = all.reduce(function (a, b) { return Math.max(a, b); }, 0);
    if (hi - lo < 1e-12) { lo -= 1; hi += 1; }
    var W = 360, left = 52, right = 12, top = 6, rowH = 30, H = top + keys.length * rowH + 20;
    var x = function (v) { return left + (v - lo) / (hi - lo) * (W - left - right); };
    var colors = ["#0d9488", "#d97706", "#7c3aed", "#db2777"];
    var s = sel("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "class activations" });
    s.appendChild(sel("line", { x1: x(0), x2: x(0), y1: top, y2: H - 18, stroke: "#9ca3af", "stroke-dasharray": "3 2" }));
    keys.forEach(function (k, r) {
      var cy = top + r * rowH + rowH / 2;
      var col = colors[r % colors.length];
      var vals = classes[k];
      s.appendChild(sel("line", { x1: left, x2: W - right, y1: cy, y2: cy, stroke: "#f1f5f9" }));
      s.appendChild(sel("text", { x: left - 6, y: cy + 3.5, "text-anchor": "end", "class": "tokl" }, shortTok(k, 8)));
      vals.forEach(function (v, j) {
        var jitter = (((j * 7919) % 13) - 6) * 1.5;
        s.appendChild(stitle(sel("circle", { cx: x(v).toFixed(1), cy: (cy + jitter).toFixed(1), r: 2.6, fill: col, "fill-opacity": 0.5 }),
          k + ": " + fmt(v, 4)));
      });
      if (vals.length) {
        var mean = vals.reduce(function (a, b) { return a + b; }, 0) / vals.length;
        s.appendChild(stitle(sel("line", { x1: x(mean), x2: x(mean), y1: cy - 11, y2: cy + 11, stroke: "#111827", "stroke-width": 2.2 }),
          k + " mean " + fmt(mean, 4) + " (n " + vals.length + ")"));
      }
    });
    [lo, 0, hi].forEach(function (v, j) {
      if (j === 1 && (v === lo || v === hi)) { return; }
      s.appendChild(sel("text", { x: x(v), y: H - 5, "text-anchor": "middle" }, fmt(v, 3)));
    });
    return s;
  }

  function heatmap(pat) {
    var toks = pat.tokens;
    var m = pat.matrix;
    var off = Math.max(0, toks.length - 96);  // long prompts: keep the last 96 positions
    toks = toks.slice(off);
    m = m.slice(off).map(function (row) { return row.slice(off); });
    var n = toks.length;
    var cell = Math.max(4, Math.min(18, Math.floor(300 / Math.max(n, 1))));
    var labels = cell >= 9;
    var left = labels ? 74 : 6, top = labels ? 64 : 6;
    var W = left + n * cell + 6, H = top + m.length * cell + 6;
    var vmax = 0;
    m.forEach(function (row) { row.forEach(function (v) { vmax = Math.max(vmax, v); }); });
    if (vmax <= 0) { vmax = 1; }
    var s = sel("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": "attention pattern" });
    m.forEach(function (row, r) {
      row.forEach(function (v, c) {
        var f = Math.max(0, Math.min(1, v / vmax));
        var rgb = [255 + (30 - 255) * f, 255 + (58 - 255) * f, 255 + (138 - 255) * f].map(Math.round);
        s.appendChild(stitle(sel("rect", { x: left + c * cell, y: top + r * cell, width: cell - 0.5, height: cell - 0.5,
          fill: "rgb(" + rgb.join(",") + ")" }),
          "query " + JSON.stringify(String(toks[r])) + " \u2192 key " + JSON.stringify(String(toks[c])) + ": " + fmt(v, 3)));
      });
    });
    if (labels) {
      toks.forEach(function (t, k) {
        s.appendChild(sel("text", { x: left - 4, y: top + k * cell + cell * 0.72, "text-anchor": "end", "class": "tokl" }, shortTok(t, 10)));
        var cx = left + k * cell + cell * 0.7;
        s.appendChild(sel("text", { transform: "translate(" + cx + " " + (top - 4) + ") rotate(-60)", "class": "tokl" }, shortTok(t, 10)));
      });
    }
    return s;
  }

  function neighbourList(title, lis, end) {
    if (!lis.length) { return; }
    section(title + " (" + lis.length + ")");
    var sorted = lis.slice().sort(function (a, b) { return Math.abs(links[b][2]) - Math.abs(links[a][2]); });
    sorted.slice(0, 15).forEach(function (li) {
      var j = links[li][end];
      var w = links[li][2];
      var b = el("button", "nbr");
      b.type = "button";
      b.appendChild(el("span", null, nodeName(j)));
      b.appendChild(el("span", "w " + (w >= 0 ? "pos" : "neg"), signed(w)));
      b.setAttribute("title", nodes[j].id);
      b.addEventListener("click", function () { select(j, true); });
      panel.appendChild(b);
    });
    if (sorted.length > 15) { panel.appendChild(el("div", "muted", "\u2026 and " + (sorted.length - 15) + " more")); }
  }

  // ---------------------------------------------------------------- panels
  function renderNode(i) {
    var n = nodes[i];
    var d = n.details || {};
    panel.replaceChildren();
    panel.appendChild(el("div", "node-title", n.token !== null && n.token !== undefined ? shortTok(n.token, 40) : n.label));
    panel.appendChild(el("div", "node-id", n.id));
    panel.appendChild(factsTable([
      ["site", n.site_name],
      ["layer", n.layer],
      ["head", n.head],
      ["index", n.index],
      ["token", n.token !== null && n.token !== undefined ? JSON.stringify(n.token) : null],
      ["mask", typeof n.mask === "number" ? fmt(n.mask, 3) : null],
      ["edges in / out", ins[i].length + " / " + outs[i].length]
    ]));
    if (typeof d.ablation_delta === "number") {
      section("Ablation effect");
      panel.appendChild(el("div", null, "Task loss " + signed(d.ablation_delta) + " nats when this node alone is ablated" +
        (typeof data.circuit_loss === "number" ? " (circuit loss " + fmt(data.circuit_loss, 3) + ")" : "") + "."));
      panel.appendChild(bar(maxDelta > 0 ? Math.abs(d.ablation_delta) / maxDelta : 0, d.ablation_delta >= 0 ? "#f59e0b" : "#64748b"));
    }
    if (d.class_acts) {
      var strip = classStrip(d.class_acts);
      if (strip) {
        section("Activation on the task's classes");
        panel.appendChild(strip);
      }
    }
    if (d.pattern) {
      section("Attention pattern" + (n.head !== null && n.head !== undefined ? " (head " + n.head + ")" : ""));
      panel.appendChild(el("div", "muted", (d.pattern.title ? d.pattern.title + ". " : "") + "Rows: query position; columns: key position."));
      panel.appendChild(heatmap(d.pattern));
    }
    if (d.snippets && d.snippets.length) {
      section("Top-activating snippets");
      var scale = 0;
      d.snippets.forEach(function (s) {
        scale = Math.max(scale, Math.abs(s.max || 0));
        s.acts.forEach(function (a) { scale = Math.max(scale, Math.abs(a)); });
      });
      var box = el("div", "snippets");
      d.snippets.forEach(function (s) { box.appendChild(snippetRow(s, scale)); });
      panel.appendChild(box);
    }
    if (!n.details) {
      panel.appendChild(el("p", "muted", "No activation details were recorded for this node."));
    }
    neighbourList("Inputs", ins[i], 0);
    neighbourList("Outputs", outs[i], 1);
  }

  function renderOverview() {
    panel.replaceChildren();
    panel.appendChild(el("div", "node-title", data.task || "circuit"));
    panel.appendChild(el("p", "muted", nodes.length + " nodes, " + links.length + " edges. Click a node for its details."));
    var ranked = nodes.map(function (n, i) { return i; }).filter(function (i) {
      return nodes[i].details && typeof nodes[i].details.ablation_delta === "number";
    }).sort(function (a, b) {
      return Math.abs(nodes[b].details.ablation_delta) - Math.abs(nodes[a].details.ablation_delta);
    });
    if (ranked.length) {
      section("Most important nodes (ablation \u0394 loss)");
      ranked.slice(0, 12).forEach(function (i) {
        var b = el("button", "nbr");
        b.type = "button";
        b.appendChild(el("span", null, nodeName(i)));
        b.appendChild(el("span", "w", signed(nodes[i].details.ablation_delta)));
        b.setAttribute("title", nodes[i].id);
        b.addEventListener("click", function () { select(i, true); });
        panel.appendChild(b);
      });
    }
  }

  // ---------------------------------------------------------------- events
  function nodeIndex(target) {
    var g = target && target.closest ? target.closest("g.node") : null;
    return g ? Number(g.getAttribute("data-i")) : -1;
  }
  if (svg) {
    svg.addEventListener("click", function (ev) {
      var i = nodeIndex(ev.target);
      select(i >= 0 && i !== selected ? i : -1);
    });
    svg.addEventListener("keydown", function (ev) {
      var i = nodeIndex(ev.target);
      if (i >= 0 && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); select(i); }
    });
    svg.addEventListener("mouseover", function (ev) {
      var i = nodeIndex(ev.target);
      if (i >= 0) { highlight(i); }
    });
    svg.addEventListener("mouseout", function (ev) {
      if (nodeIndex(ev.target) >= 0 && nodeIndex(ev.relatedTarget) < 0) { highlight(selected); }
    });
  }
  document.addEventListener("keydown", function (ev) {
    if (ev.key === "Escape") { select(-1); }
  });

  var start = -1;
  var m = /^#node=(.*)$/.exec(location.hash || "");
  if (m) {
    var wanted = null;
    try { wanted = decodeURIComponent(m[1]); } catch (e) { wanted = null; }
    nodes.forEach(function (n, i) { if (n.id === wanted) { start = i; } });
  }
  if (start >= 0) { select(start); } else { renderOverview(); }
}());
