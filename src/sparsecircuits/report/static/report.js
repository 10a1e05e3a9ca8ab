/* sparsecircuits circuit viewer: draws a circuit with Cytoscape.js (inlined before this
 * script) and adds what reading a large circuit needs: fit, zoom and pan, folded
 * inputs and outputs, an edge filter by |weight|, a residual-link toggle, ancestors and
 * descendants of a selection, search, supernodes with notes (exported and imported as
 * JSON), and the node panel (snippets, class activations, ablation effect, attention).
 *
 * Positions come from the page's JSON (laid out when the report was written), so the
 * page draws at once. Cytoscape holds only the boxes (nodes, folded groups, supernodes);
 * links and the layer bands, head boxes and column titles are painted on one canvas
 * beneath it (the ink layer), because a Cytoscape element costs about half a millisecond
 * of CPU to style and paint and a large circuit has thousands of links. For the same
 * reason a circuit of more than DEFER_BOXES boxes opens with its boxes painted on the ink
 * layer too; they become elements in the task after the first frame (or on the first
 * press or key, if that comes sooner), so the page is on screen and pans and zooms before
 * Cytoscape has styled any of them. All text from
 * the data goes in through textContent, setAttribute, Cytoscape labels or canvas
 * fillText, never through HTML parsing, so a token that looks like a tag stays text.
 */
(function () {
  "use strict";
  var SVGNS = "http://www.w3.org/2000/svg";
  var SITES = {  // site: [fill, stroke, legend name]
    embed: ["#f1f5f9", "#64748b", "token embedding"],
    attn_in: ["#fff7ed", "#f97316", "attention read"],
    q: ["#fef9c3", "#ca8a04", "query channel"],
    k: ["#ecfccb", "#65a30d", "key channel"],
    v: ["#cffafe", "#0891b2", "value channel"],
    attn_out: ["#ffedd5", "#c2410c", "attention write"],
    mlp_in: ["#f0fdf4", "#22c55e", "MLP read"],
    neuron: ["#dcfce7", "#15803d", "MLP neuron"],
    mlp_out: ["#bbf7d0", "#166534", "MLP write"],
    logit: ["#f3e8ff", "#7e22ce", "answer logit"]
  };
  var POS = "#2563eb", NEG = "#dc2626", SUPER = "#b45309", SHARED = "#db2777", CORE = "#16a34a";
  var FORMAT = "sparsecircuits-annotations";
  var DRAW_CAP = 4000;  // links drawn when a page opens; more on demand (the |w| slider)

  if (typeof cytoscape !== "function") { return; }
  var viewers = [];
  document.querySelectorAll(".viewer").forEach(function (root) {
    var v = createViewer(root);
    if (v) { viewers.push(v); }
  });
  // Side by side: selecting a node in one circuit selects the same node in the other.
  viewers.forEach(function (v) {
    v.onPick = function (id) {
      viewers.forEach(function (o) { if (o !== v) { o.pickById(id); } });
    };
  });
  // Read by benchmarks/viewer.py: "viewer-built" when the script is done, "viewer-drawn"
  // once the first frame (Cytoscape's and the ink layer's, both drawn in this frame's
  // animation callbacks, which were requested earlier) is on screen, and "viewer-ready"
  // once every box is a Cytoscape element and drawn as one. ``window.circuitViewers``
  // (for tests and scripts) appears with the elements.
  function mark(name) {
    if (window.performance && performance.mark) { performance.mark(name); }
  }
  function afterFrame(fn) {
    requestAnimationFrame(function () { setTimeout(fn, 0); });
  }
  mark("viewer-built");
  afterFrame(function () { mark("viewer-drawn"); });
  // A large circuit's boxes become elements after its first frame.
  function allLive() {
    viewers.forEach(function (v) { v.goLive(); });
    window.circuitViewers = viewers.map(function (v) { return v.api; });
    afterFrame(function () { mark("viewer-ready"); });
  }
  if (viewers.every(function (v) { return v.isLive(); })) { allLive(); } else { afterFrame(allLive); }

  // ---------------------------------------------------------------- small helpers
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
  function button(text, title, onClick, cls) {
    var b = el("button", cls || null, text);
    b.type = "button";
    if (title) { b.setAttribute("title", title); }
    b.addEventListener("click", onClick);
    return b;
  }

  // ---------------------------------------------------------------- the ink layer
  // One canvas under Cytoscape's, redrawn in its viewport (model coordinates times zoom
  // plus pan) on every pan, zoom or resize: the layer bands, head boxes, column titles,
  // then the edges, batched by colour, opacity, dash and width so that a frame of
  // thousands of links is a few dozen strokes. ``setEdges`` takes what to draw, each
  // {x1, y1, x2, y2, width, color, alpha, dash, ref}; ``hit`` finds the edge under a point.
  // ``setBoxes`` takes boxes to paint over the links, {x, y, w, h, fill, stroke, label}:
  // a large circuit's first frame, painted before its boxes become Cytoscape elements.
  function makeInk(cy, container, layout, pr) {
    var canvas = document.createElement("canvas");
    canvas.className = "ink";
    canvas.setAttribute("aria-hidden", "true");
    container.insertBefore(canvas, container.firstChild);
    var ctx = canvas.getContext("2d");
    var edges = [], batches = [], boxes = [], queued = false;

    function schedule() {
      if (!queued) { queued = true; requestAnimationFrame(draw); }
    }
    function setEdges(list) {
      edges = list;
      var byKey = {};
      batches = [];
      list.forEach(function (e) {
        var width = Math.round(e.width * 4) / 4;
        var key = e.alpha + e.color + (e.dash ? "d" : "s") + width;
        var b = byKey[key];
        if (!b) { b = byKey[key] = { color: e.color, alpha: e.alpha, width: width, dash: e.dash, xy: [] }; batches.push(b); }
        b.xy.push(e.x1, e.y1, e.x2, e.y2);
      });
      batches.sort(function (a, b) { return a.alpha - b.alpha; });  // faded first, lit on top
      schedule();
    }
    function setBoxes(list) {
      var byKey = {};
      boxes = [];
      list.forEach(function (b) {  // one path per fill and stroke: a few fills for hundreds of boxes
        var key = b.fill + b.stroke;
        if (!byKey[key]) { byKey[key] = { fill: b.fill, stroke: b.stroke, items: [] }; boxes.push(byKey[key]); }
        byKey[key].items.push(b);
      });
      schedule();
    }
    function paintBoxes(zoom) {
      ctx.lineWidth = 1.5;
      boxes.forEach(function (b) {
        ctx.beginPath();
        b.items.forEach(function (r) {
          var x = r.x - r.w / 2, y = r.y - r.h / 2;
          if (ctx.roundRect) { ctx.roundRect(x, y, r.w, r.h, Math.min(8, r.w / 4, r.h / 4)); } else { ctx.rect(x, y, r.w, r.h); }
        });
        ctx.fillStyle = b.fill;
        ctx.fill();
        ctx.strokeStyle = b.stroke;
        ctx.stroke();
      });
      if (11 * zoom < 7) { return; }  // labels as Cytoscape shows them: not below 7 px
      ctx.textAlign = "center";
      ctx.textBaseline = "middle";
      boxes.forEach(function (b) {
        b.items.forEach(function (r) { text(r.label, r.x, r.y, 11, "11px monospace", "#111827", zoom); });
      });
    }
    function box(x, y, w, h) {
      ctx.beginPath();
      if (ctx.roundRect) { ctx.roundRect(x, y, w, h, Math.min(8, w / 4, h / 4)); } else { ctx.rect(x, y, w, h); }
    }
    function text(t, x, y, px, font, color, zoom) {
      if (!t || px * zoom < 5) { return; }  // too small to read: skipped, as Cytoscape skips labels
      ctx.font = font;
      ctx.fillStyle = color;
      ctx.fillText(t, x, y);
    }
    function decorations(zoom) {
      var height = layout.height || 0;
      ctx.textAlign = "center";
      ctx.textBaseline = "bottom";
      (layout.bands || []).forEach(function (b, k) {
        ctx.fillStyle = k % 2 ? "#f1f5f9" : "#f8fafc";
        box(b.x0, 6, b.x1 - b.x0, height - 12);
        ctx.fill();
        text(b.label, (b.x0 + b.x1) / 2, 28, 12, "600 12px system-ui, sans-serif", "#475569", zoom);
      });
      ctx.lineWidth = 1;
      ctx.setLineDash([4, 3]);
      (layout.heads || []).forEach(function (h) {
        box(h.x - h.w / 2, h.y0, h.w, h.y1 - h.y0);
        ctx.fillStyle = "#fffdf5";
        ctx.fill();
        ctx.strokeStyle = "#e7d9b0";
        ctx.stroke();
        text(h.label, h.x, h.y0 + 13, 9.5, "600 9.5px system-ui, sans-serif", "#a16207", zoom);
      });
      ctx.setLineDash([]);
      ctx.textBaseline = "middle";
      (layout.columns || []).forEach(function (c) {
        text(c.title, c.x, 38, 10.5, "10.5px system-ui, sans-serif", "#94a3b8", zoom);
      });
    }
    function draw() {
      queued = false;
      var w = container.clientWidth, h = container.clientHeight;
      var cw = Math.max(1, Math.round(w * pr)), ch = Math.max(1, Math.round(h * pr));
      if (canvas.width !== cw || canvas.height !== ch) {
        canvas.width = cw;
        canvas.height = ch;
        canvas.style.width = w + "px";
        canvas.style.height = h + "px";
      }
      ctx.setTransform(1, 0, 0, 1, 0, 0);
      ctx.clearRect(0, 0, cw, ch);
      var zoom = cy.zoom(), pan = cy.pan();
      ctx.setTransform(pr * zoom, 0, 0, pr * zoom, pr * pan.x, pr * pan.y);
      decorations(zoom);
      batches.forEach(function (b) {
        ctx.strokeStyle = b.color;
        ctx.globalAlpha = b.alpha;
        ctx.lineWidth = b.width;
        ctx.setLineDash(b.dash ? [6, 3] : []);
        ctx.beginPath();
        var xy = b.xy;
        for (var i = 0; i < xy.length; i += 4) {
          ctx.moveTo(xy[i], xy[i + 1]);
          ctx.lineTo(xy[i + 2], xy[i + 3]);
        }
        ctx.stroke();
      });
      ctx.globalAlpha = 1;
      ctx.setLineDash([]);
      paintBoxes(zoom);
    }
    function hit(x, y, tol) {
      // The drawn edge nearest to model point (x, y) within tol (or its half width), or null.
      var best = null, bestD = Infinity;
      edges.forEach(function (e) {
        var dx = e.x2 - e.x1, dy = e.y2 - e.y1, len2 = dx * dx + dy * dy;
        var t = len2 > 0 ? Math.max(0, Math.min(1, ((x - e.x1) * dx + (y - e.y1) * dy) / len2)) : 0;
        var d = Math.hypot(x - e.x1 - t * dx, y - e.y1 - t * dy);
        if (d <= Math.max(tol, e.width / 2) && d < bestD) { bestD = d; best = e.ref; }
      });
      return best;
    }
    cy.on("viewport resize", schedule);
    return { setEdges: setEdges, setBoxes: setBoxes, schedule: schedule, hit: hit };
  }

  // ---------------------------------------------------------------- one viewer
  function createViewer(root) {
    var q = function (role) { return root.querySelector("[data-role='" + role + "']"); };
    var dataEl = document.getElementById(root.getAttribute("data-source") || "circuit-data");
    var container = q("graph");
    var panel = q("panel");
    if (!dataEl || !container || !panel) { return null; }
    var data = JSON.parse(dataEl.textContent);
    var nodes = data.nodes || [];
    var links = data.links || [];
    var groups = data.groups || [];
    var layout = data.layout || {};
    var shared = {};
    (data.shared || []).forEach(function (i) { shared[i] = true; });
    var core = {};  // nodes of the stable core across seeds (prune --seeds)
    (data.core || []).forEach(function (i) { core[i] = true; });
    var nodeH = layout.node_h || 22;
    var big = links.length > 3000;

    // Adjacency, io groups, weight quantiles.
    var ins = nodes.map(function () { return []; });
    var outs = nodes.map(function () { return []; });
    links.forEach(function (l, li) { outs[l[0]].push(li); ins[l[1]].push(li); });
    var linkGroup = links.map(function () { return -1; });
    var tokenGroups = nodes.map(function () { return null; });
    groups.forEach(function (g, k) {
      g.links.forEach(function (li) { linkGroup[li] = k; });
      g.members.forEach(function (i) { (tokenGroups[i] = tokenGroups[i] || []).push(k); });
    });
    var absSorted = links.map(function (l) { return Math.abs(l[2]); }).sort(function (a, b) { return a - b; });
    var maxW = absSorted.length ? absSorted[absSorted.length - 1] || 1 : 1;
    var maxDelta = 0;
    nodes.forEach(function (n) {
      var d = n.details && n.details.ablation_delta;
      if (typeof d === "number") { maxDelta = Math.max(maxDelta, Math.abs(d)); }
    });

    var state = { threshold: 0, residual: true, unfolded: {}, supers: [], nextSuper: 1, message: null };
    var api = {};
    var self = { api: api, onPick: null, pickById: pickById };

    // ---------------------------------------------------------------- elements
    // Cytoscape gets the boxes only (see the top of this file). Folded tokens become
    // elements when first unfolded, as links are drawn only when they pass the filter.
    // Sizes go through one style rule per distinct width, not a per-element data
    // mapping, which Cytoscape parses again for every element and every class change.
    var widths = {};
    nodes.forEach(function (n) { widths[Math.round(n.w || 64)] = true; });
    groups.forEach(function (g) { widths[Math.round(g.w || 116)] = true; });
    var hidden = { n: nodes.map(function () { return true; }), g: groups.map(function () { return false; }),
      ins: nodes.map(function () { return false; }) };
    function nodeDef(i, hide) {
      var n = nodes[i];
      var site = SITES[n.site] ? n.site : "unknown";
      return { group: "nodes", data: { id: "n" + i, label: n.label }, position: { x: n.x, y: n.y },
        classes: "node site-" + site + " w" + Math.round(n.w || 64) + (shared[i] ? " shared" : "") + (core[i] ? " core" : "") +
          (hidden.ins[i] ? " in-super" : "") + (hide ? " hidden" : "") };
    }
    function groupDef(k) {
      var g = groups[k];
      return { group: "nodes", data: { id: "g" + k, label: g.label, w: g.w || 116 }, position: { x: g.x, y: g.y },
        classes: "group site-" + g.side + " w" + Math.round(g.w || 116) + (hidden.g[k] ? " hidden" : "") };
    }
    function superDef(s) {
      return { group: "nodes", data: { id: "s" + s.id, label: s.name, w: s.w },
        position: { x: s.x, y: s.y }, classes: "super w" + Math.round(s.w) };
    }
    nodes.forEach(function (n, i) { if (!tokenGroups[i]) { hidden.n[i] = false; } });
    // A large circuit's boxes become elements only after its first frame, which the ink
    // layer paints from the page data; until then Cytoscape moves the (empty) viewport, so
    // the page pans and zooms at once. Styling hundreds of elements is most of the load.
    var DEFER_BOXES = 200;
    var live = false;

    var style = [
      { selector: "node", style: { "height": nodeH, "font-family": "monospace",
        "font-size": 11, "text-valign": "center", "text-halign": "center", "color": "#111827",
        "shape": "round-rectangle", "border-width": 1.5, "min-zoomed-font-size": 7 } },
      { selector: "node.lbl", style: { "label": "data(label)" } },
      { selector: "node.group", style: { "border-style": "dashed", "font-size": 10.5 } },
      { selector: "node.group, node.super", style: { "text-wrap": "ellipsis", "text-max-width": "data(w)" } },
      { selector: "node.super", style: { "background-color": "#fef3c7", "border-color": SUPER, "border-width": 3,
        "border-style": "double", "font-family": "system-ui, sans-serif", "font-weight": 600 } },
      { selector: "node.in-super", style: { "border-color": SUPER, "border-width": 3, "border-style": "double" } },
      { selector: "node.shared", style: { "underlay-color": SHARED, "underlay-opacity": 0.35, "underlay-padding": 4,
        "underlay-shape": "round-rectangle" } },
      { selector: "node.core", style: { "outline-color": CORE, "outline-width": 3, "outline-offset": 2 } },
      { selector: ".hidden", style: { "display": "none" } },
      { selector: "node.faded", style: { "opacity": 0.22 } },
      { selector: "node:selected", style: { "border-color": "#111827", "border-width": 3.5 } },
      { selector: "node.match", style: { "underlay-color": "#facc15", "underlay-opacity": 0.6, "underlay-padding": 5 } }
    ];
    Object.keys(widths).forEach(function (w) {
      style.push({ selector: "node.w" + w, style: { "width": Number(w) } });
    });
    Object.keys(SITES).forEach(function (s) {
      style.push({ selector: "node.site-" + s, style: { "background-color": SITES[s][0], "border-color": SITES[s][1] } });
    });
    style.push({ selector: "node.site-unknown", style: { "background-color": "#f3f4f6", "border-color": "#9ca3af" } });

    // The elements go in after the start: given to the constructor, they would be placed
    // again by a layout run (a position event per node), though their positions are set.
    var cy = cytoscape({
      container: container, style: style, layout: { name: "preset", fit: false },
      minZoom: 0.01, maxZoom: 4, boxSelectionEnabled: true, autoungrabify: true,
      textureOnViewport: big, pixelRatio: big ? 1 : "auto", motionBlur: false
    });
    api.cy = cy;
    // Labels: Cytoscape measures a box's label for its bounds even when it is too small to
    // draw (under 7 px on screen), so a box gets its label (class "lbl") only once it is on
    // screen, or near it, at a zoom where labels can be read. A page that opens zoomed out
    // measures none, and zooming in labels the few dozen boxes in view, not all of them.
    var LABEL_ZOOM = 0.6, LABEL_MARGIN = 150, fitted = false;  // nothing to label before the first fit
    function labelOnScreen() {
      if (!fitted || cy.zoom() < LABEL_ZOOM) { return; }
      var e = cy.extent(), m = LABEL_MARGIN / cy.zoom();
      var todo = cy.nodes().filter(function (n) {
        if (n.hasClass("lbl") || n.hasClass("hidden")) { return false; }
        var p = n.position();
        return p.x > e.x1 - m && p.x < e.x2 + m && p.y > e.y1 - m && p.y < e.y2 + m;
      });
      if (todo.length) { todo.addClass("lbl"); }
    }
    cy.on("viewport resize", labelOnScreen);
    var ink = makeInk(cy, container, layout, big ? 1 : (window.devicePixelRatio || 1));

    // ---------------------------------------------------------------- visibility
    function superOf(i) {
      for (var k = 0; k < state.supers.length; k++) {
        if (state.supers[k].members.indexOf(i) >= 0) { return state.supers[k]; }
      }
      return null;
    }
    function nodeShown(i) {
      var tg = tokenGroups[i];
      if (!tg) { return true; }
      return tg.some(function (k) { return state.unfolded[k]; });
    }
    function rep(i) {  // the id of what stands for node i on screen, or null
      var s = superOf(i);
      if (s && s.collapsed) { return "s" + s.id; }
      return nodeShown(i) ? "n" + i : null;
    }
    function passes(w, kind) {
      return Math.abs(w) >= state.threshold && (state.residual || kind !== "residual");
    }

    // Element handles and their drawn state, kept here so that a refresh touches only what
    // changes, in a few collection calls (thousands of per-element calls cost seconds).
    var nodeEls = nodes.map(function () { return null; });
    var groupEls = groups.map(function () { return null; });
    function goLive() {
      // Every box that has or had a place on screen becomes an element, in its current
      // state. In one go: added in steps, each step cost another full Cytoscape frame.
      if (live) { return; }
      live = true;
      var defs = [];
      state.supers.forEach(function (s) { if (s.collapsed) { defs.push(superDef(s)); } });
      nodes.forEach(function (n, i) { if (!tokenGroups[i] || !hidden.n[i]) { defs.push(nodeDef(i, hidden.n[i])); } });
      groups.forEach(function (g, k) { defs.push(groupDef(k)); });
      cy.add(defs).forEach(function (e) {
        var id = e.id(), k = Number(id.slice(1));
        if (id[0] === "n") { nodeEls[k] = e; } else if (id[0] === "g") { groupEls[k] = e; }
      });
      ink.setBoxes([]);
      labelOnScreen();
    }
    function pendingBoxes() {  // what Cytoscape will draw once live, for the ink layer to paint until then
      var out = [];
      function put(p, w, site, label) {
        var c = SITES[site] || ["#f3f4f6", "#9ca3af"];
        out.push({ x: p.x, y: p.y, w: w, h: nodeH, fill: c[0], stroke: c[1], label: label });
      }
      nodes.forEach(function (n, i) { if (!hidden.n[i]) { put(n, n.w || 64, n.site, n.label); } });
      groups.forEach(function (g, k) { if (!hidden.g[k]) { put(g, g.w || 116, g.side, g.label); } });
      state.supers.forEach(function (s) { if (s.collapsed) { out.push({ x: s.x, y: s.y, w: s.w, h: nodeH, fill: "#fef3c7", stroke: SUPER, label: s.name }); } });
      return out;
    }
    var drawn = [];  // the edges on the ink layer: {a, b: source and target ids, w: weight, kind, li: link or -1, f: focus}
    var drawnCount = 0;

    function refresh() {
      var superEdges = {};
      var hide = [], show = [], inSuper = [], outSuper = [], added = [];
      drawn = [];
      function aggregate(a, b, w) {
        if (!a || !b || a === b) { return; }
        var key = a + ">" + b;
        var e = superEdges[key] || (superEdges[key] = { a: a, b: b, w: 0, n: 0 });
        e.w += w;
        e.n += 1;
      }
      function set(arr, idx, el, h) {
        if (arr[idx] !== h) { arr[idx] = h; (h ? hide : show).push(el); }
      }
      var supOf = {};
      state.supers.forEach(function (s) { s.members.forEach(function (i) { supOf[i] = s; }); });
      var repOf = nodes.map(function (n, i) {
        var s = supOf[i];
        if (s && s.collapsed) { return "s" + s.id; }
        return nodeShown(i) ? "n" + i : null;
      });
      nodes.forEach(function (n, i) {
        var s = supOf[i];
        var flag = !!(s && !s.collapsed);
        if (!live) { hidden.ins[i] = flag; hidden.n[i] = repOf[i] !== "n" + i; return; }
        if (!nodeEls[i]) {  // a folded token never drawn yet: an element once it is to be drawn
          hidden.ins[i] = flag;
          if (repOf[i] === "n" + i) { added.push(nodeDef(i, false)); hidden.n[i] = false; }
          return;
        }
        set(hidden.n, i, nodeEls[i], repOf[i] !== "n" + i);
        if (hidden.ins[i] !== flag) { hidden.ins[i] = flag; (flag ? inSuper : outSuper).push(nodeEls[i]); }
      });
      groups.forEach(function (g, k) {
        if (live) { set(hidden.g, k, groupEls[k], !!state.unfolded[k]); } else { hidden.g[k] = !!state.unfolded[k]; }
        if (state.unfolded[k]) { return; }
        g.edges.forEach(function (e) {
          if (!passes(e[1], "io")) { return; }
          var r = repOf[e[0]], ends = g.side === "embed" ? ["g" + k, r] : [r, "g" + k];
          if (r === "n" + e[0]) { drawn.push({ a: ends[0], b: ends[1], w: e[1], kind: "io", li: -1 }); } else { aggregate(ends[0], ends[1], e[1]); }
        });
      });
      links.forEach(function (l, li) {
        var k = linkGroup[li];
        if (!passes(l[2], l[3]) || (k >= 0 && !state.unfolded[k])) { return; }
        var a = repOf[l[0]], b = repOf[l[1]];
        if (a === "n" + l[0] && b === "n" + l[1]) { drawn.push({ a: a, b: b, w: l[2], kind: "link", li: li }); } else { aggregate(a, b, l[2]); }
      });
      Object.keys(superEdges).forEach(function (key) {
        var e = superEdges[key];
        drawn.push({ a: e.a, b: e.b, w: e.w, kind: "super", li: -1 });
      });
      drawnCount = drawn.length;
      if (live) { updateElements(hide, show, inSuper, outSuper, added); } else { ink.setBoxes(pendingBoxes()); }
      q("edge-count").textContent = drawnCount + " of " + links.length + " links drawn";
      updateFocus();
    }
    function updateElements(hide, show, inSuper, outSuper, added) {
      cy.startBatch();
      cy.remove(cy.nodes(".super"));
      if (hide.length) { cy.collection(hide).addClass("hidden"); }
      if (show.length) { cy.collection(show).removeClass("hidden"); }
      if (inSuper.length) { cy.collection(inSuper).addClass("in-super"); }
      if (outSuper.length) { cy.collection(outSuper).removeClass("in-super"); }
      state.supers.forEach(function (s) { if (s.collapsed) { added.push(superDef(s)); } });
      if (added.length) {
        cy.add(added).forEach(function (e) {
          var id = e.id();
          if (id[0] === "n") { nodeEls[Number(id.slice(1))] = e; }
        });
      }
      cy.endBatch();
      labelOnScreen();
    }

    // ---------------------------------------------------------------- selection and focus
    function selectedIds() {
      return cy.nodes(":selected").map(function (e) { return e.id(); });
    }
    function posOf(id) {  // the model position of what id stands for: a node, a group or a supernode
      var k = Number(id.slice(1));
      return id[0] === "n" ? nodes[k] : id[0] === "g" ? groups[k] : findSuper(k);
    }
    function paintEdges() {
      ink.setEdges(drawn.map(function (d) {
        var p = posOf(d.a), r = posOf(d.b);
        return { x1: p.x, y1: p.y, x2: r.x, y2: r.y, width: 0.8 + 5.2 * Math.min(Math.abs(d.w), maxW) / maxW,
          color: d.kind === "super" ? SUPER : d.w >= 0 ? POS : NEG, alpha: d.f === 1 ? 0.05 : d.f === 2 ? 0.95 : 0.55,
          dash: d.kind === "io", ref: d };
      }));
    }
    var dimmed = null;
    function updateFocus() {
      var ids = selectedIds();
      cy.startBatch();
      if (dimmed) { dimmed.removeClass("faded"); dimmed = null; }
      drawn.forEach(function (d) { d.f = 0; });
      if (ids.length) {
        // Walk up and down the drawn edges from the selection.
        var inE = {}, outE = {};
        drawn.forEach(function (d) {
          (outE[d.a] = outE[d.a] || []).push(d.b);
          (inE[d.b] = inE[d.b] || []).push(d.a);
        });
        var walk = function (adj, seen) {
          var stack = ids.slice();
          while (stack.length) {
            (adj[stack.pop()] || []).forEach(function (j) {
              if (!seen[j]) { seen[j] = true; stack.push(j); }
            });
          }
        };
        var up = {}, down = {};
        ids.forEach(function (id) { up[id] = true; down[id] = true; });
        walk(inE, up);
        walk(outE, down);
        var dim = [];
        nodeEls.forEach(function (e, i) { if (e && !hidden.n[i] && !up["n" + i] && !down["n" + i]) { dim.push(e); } });
        groupEls.forEach(function (e, k) { if (!hidden.g[k] && !up["g" + k] && !down["g" + k]) { dim.push(e); } });
        cy.nodes(".super").forEach(function (e) { if (!up[e.id()] && !down[e.id()]) { dim.push(e); } });
        drawn.forEach(function (d) { d.f = (up[d.a] && up[d.b]) || (down[d.a] && down[d.b]) ? 2 : 1; });
        dimmed = cy.collection(dim).addClass("faded");
      }
      cy.endBatch();
      paintEdges();
    }
    var pending = false;
    cy.on("select unselect", "node", function () {
      if (pending) { return; }
      pending = true;
      setTimeout(function () { pending = false; selectionChanged(); }, 0);
    });
    function selectionChanged() {
      updateFocus();
      var ids = selectedIds();
      if (!ids.length) { renderOverview(); setHash(null); return; }
      if (ids.length > 1) { renderMulti(ids); return; }
      var id = ids[0];
      if (id[0] === "n") {
        var i = Number(id.slice(1));
        renderNode(i);
        setHash(nodes[i].id);
        if (self.onPick) { self.onPick(nodes[i].id); }
      } else if (id[0] === "g") {
        renderGroup(Number(id.slice(1)));
      } else if (id[0] === "s") {
        renderSuper(findSuper(Number(id.slice(1))));
      }
    }
    function setHash(nid) {
      if (viewers.length > 1) { return; }
      try {
        history.replaceState(null, "", nid ? "#node=" + encodeURIComponent(nid) : "#");
      } catch (e) { /* some file:// contexts refuse replaceState; the hash is a convenience */ }
    }
    function centre(ele) {
      if (cy.zoom() < 0.9) { cy.zoom(1); }
      cy.center(ele);
    }
    function pick(i, centreIt) {
      goLive();
      // Make node i drawable (unfold a group, expand nothing: a collapsed supernode stands for it).
      if (!nodeShown(i)) {
        state.unfolded[tokenGroups[i][0]] = true;
        refresh();
      }
      var id = rep(i);
      var ele = cy.getElementById(id);
      cy.nodes(":selected").unselect();
      ele.select();
      if (centreIt) { centre(ele); }
    }
    function pickById(nid) {
      var i = nodes.findIndex(function (n) { return n.id === nid; });
      var cur = selectedIds();
      if (i < 0 || (cur.length === 1 && cur[0] === rep(i))) { return; }
      var onPick = self.onPick;
      self.onPick = null;  // no echo back to the viewer that asked
      pick(i, true);
      setTimeout(function () { self.onPick = onPick; }, 0);
    }

    // ---------------------------------------------------------------- names and search
    function nodeName(j) {
      var n = nodes[j];
      if (n.site === "embed" || n.site === "logit") {
        return (n.site === "embed" ? "embed " : "logit ") + shortTok(n.token === null || n.token === undefined ? n.label : n.token, 24);
      }
      var where = n.layer !== null && n.layer !== undefined ? "L" + n.layer + " " : "";
      var head = n.head !== null && n.head !== undefined ? " h" + n.head : "";
      return where + (n.site || "?") + head + " " + n.label;
    }
    var searchBox = q("search");
    var searchInfo = q("search-info");
    var list = q("names");
    function fillNames() {  // the search box's suggestions, made when it is first used, not at load
      if (!list || list.firstChild) { return; }
      var seen = {};
      var frag = document.createDocumentFragment();
      nodes.forEach(function (n, i) {
        [nodeName(i), n.hook].forEach(function (name) {
          if (seen[name]) { return; }
          seen[name] = true;
          var o = document.createElement("option");
          o.value = name;
          frag.appendChild(o);
        });
      });
      list.appendChild(frag);
    }
    ["focus", "pointerdown", "keydown"].forEach(function (type) { searchBox.addEventListener(type, fillNames); });
    function search(text) {
      goLive();
      var t = String(text || "").trim().toLowerCase();
      cy.nodes(".match").removeClass("match");
      if (!t) { searchInfo.textContent = ""; return []; }
      var exact = [], hook = [], part = [];
      nodes.forEach(function (n, i) {
        var name = nodeName(i).toLowerCase(), id = n.id.toLowerCase();
        if (id === t || name === t) { exact.push(i); } else if (n.hook.toLowerCase() === t) { hook.push(i); } else if (
          id.indexOf(t) >= 0 || name.indexOf(t) >= 0 ||
          (n.token !== null && n.token !== undefined && String(n.token).toLowerCase().indexOf(t) >= 0)) { part.push(i); }
      });
      var hits = exact.length ? exact : hook.length ? hook : part;
      state.supers.forEach(function (s) {
        if (s.name.toLowerCase().indexOf(t) >= 0 && !hits.length) { hits = s.members.slice(); }
      });
      if (!hits.length) { searchInfo.textContent = "no match"; return hits; }
      if (hits.length === 1) {
        pick(hits[0], true);
        searchInfo.textContent = "1 match";
        return hits;
      }
      hits.forEach(function (i) { if (!nodeShown(i)) { state.unfolded[tokenGroups[i][0]] = true; } });
      refresh();
      cy.nodes(":selected").unselect();
      var eles = cy.collection();
      hits.forEach(function (i) { eles = eles.union(cy.getElementById(rep(i))); });
      eles.addClass("match");
      eles.select();
      cy.fit(eles, 60);
      if (cy.zoom() > 1.5) { cy.zoom(1.5); cy.center(eles); }
      searchInfo.textContent = hits.length + " matches";
      return hits;
    }
    searchBox.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter") { ev.preventDefault(); search(searchBox.value); }
    });
    searchBox.addEventListener("change", function () { search(searchBox.value); });

    // ---------------------------------------------------------------- toolbar
    function shownBox() {
      // The model box around every drawn box, from the page data: asking Cytoscape would
      // style every element first. 2 px each side for the border; null when nothing is drawn.
      var b = { x1: Infinity, y1: Infinity, x2: -Infinity, y2: -Infinity };
      function put(p, w) {
        b.x1 = Math.min(b.x1, p.x - w / 2 - 2);
        b.x2 = Math.max(b.x2, p.x + w / 2 + 2);
        b.y1 = Math.min(b.y1, p.y - nodeH / 2 - 2);
        b.y2 = Math.max(b.y2, p.y + nodeH / 2 + 2);
      }
      nodes.forEach(function (n, i) { if (!hidden.n[i]) { put(n, n.w || 64); } });
      groups.forEach(function (g, k) { if (!hidden.g[k]) { put(g, g.w || 116); } });
      state.supers.forEach(function (s) { if (s.collapsed) { put(s, s.w); } });
      b.w = b.x2 - b.x1;
      b.h = b.y2 - b.y1;
      return b.w >= 0 ? b : null;
    }
    function fit() {  // as cy.fit(drawn boxes, 24 px padding)
      var b = shownBox(), pad = 24, W = container.clientWidth, H = container.clientHeight;
      if (!b) { return; }
      var z = Math.min((W - 2 * pad) / Math.max(b.w, 1), (H - 2 * pad) / Math.max(b.h, 1));
      z = Math.max(cy.minZoom(), Math.min(cy.maxZoom(), z));
      cy.viewport({ zoom: z, pan: { x: (W - z * (b.x1 + b.x2)) / 2, y: (H - z * (b.y1 + b.y2)) / 2 } });
    }
    var slider = q("weight");
    var weightValue = q("weight-value");
    function setThreshold(pct) {
      var p = Math.max(0, Math.min(100, Number(pct) || 0));
      state.threshold = p <= 0 || !absSorted.length ? 0 : absSorted[Math.min(absSorted.length - 1, Math.floor(p / 100 * absSorted.length))];
      weightValue.textContent = state.threshold ? "\u2265 " + fmt(state.threshold, 3) : "all";
      refresh();
    }
    slider.addEventListener("input", function () { setThreshold(slider.value); });
    var residualBox = q("residual");
    residualBox.addEventListener("change", function () { state.residual = residualBox.checked; refresh(); });
    root.querySelector("[data-act='fit']").addEventListener("click", fit);
    var unfoldBtn = root.querySelector("[data-act='unfold']");
    if (!groups.length) { unfoldBtn.hidden = true; }
    unfoldBtn.addEventListener("click", function () {
      var all = groups.every(function (g, k) { return state.unfolded[k]; });
      groups.forEach(function (g, k) { state.unfolded[k] = !all; });
      unfoldBtn.textContent = all ? "Unfold inputs/outputs" : "Fold inputs/outputs";
      refresh();
      fit();
    });
    root.querySelector("[data-act='group']").addEventListener("click", function () {
      var ids = selectedIds();
      if (ids.length) { renderMulti(ids); } else { say("Select nodes first: shift-click them, or shift-drag a box."); }
    });
    root.querySelector("[data-act='export']").addEventListener("click", exportAnnotations);
    var importer = q("import");
    importer.addEventListener("change", function () {
      var f = importer.files && importer.files[0];
      if (!f) { return; }
      var reader = new FileReader();
      reader.onload = function () { importAnnotations(String(reader.result)); importer.value = ""; };
      reader.onerror = function () { say("Could not read " + f.name + "."); };
      reader.readAsText(f);
    });
    container.addEventListener("keydown", function (ev) {
      var step = 80, handled = true;
      var mid = { x: container.clientWidth / 2, y: container.clientHeight / 2 };
      if (ev.key === "ArrowLeft") { cy.panBy({ x: step, y: 0 }); } else if (ev.key === "ArrowRight") { cy.panBy({ x: -step, y: 0 }); } else if (
        ev.key === "ArrowUp") { cy.panBy({ x: 0, y: step }); } else if (ev.key === "ArrowDown") { cy.panBy({ x: 0, y: -step }); } else if (
        ev.key === "+" || ev.key === "=") { cy.zoom({ level: cy.zoom() * 1.25, renderedPosition: mid }); } else if (
        ev.key === "-" || ev.key === "_") { cy.zoom({ level: cy.zoom() / 1.25, renderedPosition: mid }); } else if (
        ev.key === "f" || ev.key === "0") { fit(); } else { handled = false; }
      if (handled) { ev.preventDefault(); }
    });
    cy.on("tap", function () { container.focus({ preventScroll: true }); });
    document.addEventListener("keydown", function (ev) {
      var t = ev.target && ev.target.tagName;
      if (ev.key === "Escape" && t !== "INPUT" && t !== "TEXTAREA") { cy.nodes(":selected").unselect(); }
    });
    var hover = q("hover");
    cy.on("mouseover", "node.node", function (ev) {
      var i = Number(ev.target.id().slice(1));
      var n = nodes[i];
      hover.textContent = n.id + " \u00b7 " + n.site_name + (n.token !== null && n.token !== undefined ? " \u00b7 " + JSON.stringify(n.token) : "") +
        " \u00b7 in " + ins[i].length + " / out " + outs[i].length;
    });
    cy.on("mouseover", "node.group", function (ev) {
      var g = groups[Number(ev.target.id().slice(1))];
      hover.textContent = g.members.length + (g.side === "embed" ? " tokens into " : " answers from ") + g.hook + " (click to list, unfold in the panel)";
    });
    var onLink = false;  // the hover line shows a link (found on the ink layer, not by Cytoscape)
    cy.on("mousemove", function (ev) {
      if (ev.target !== cy) { return; }
      var d = ink.hit(ev.position.x, ev.position.y, 4 / cy.zoom());
      if (d && d.li >= 0) {
        var l = links[d.li];
        hover.textContent = nodes[l[0]].id + " \u2192 " + nodes[l[1]].id + " \u00b7 " + l[3] + " \u00b7 weight " + signed(l[2]);
        onLink = true;
      } else if (onLink) {
        hover.textContent = "";
        onLink = false;
      }
    });
    cy.on("mouseout", function () { hover.textContent = ""; onLink = false; });
    container.addEventListener("mouseleave", function () { if (onLink) { hover.textContent = ""; onLink = false; } });

    // ---------------------------------------------------------------- supernodes and annotations
    function findSuper(id) {
      return state.supers.filter(function (s) { return s.id === id; })[0] || null;
    }
    function placeSuper(s) {
      // The member nearest the members' centroid gives its slot: its box is free while collapsed.
      var cx = 0, cy2 = 0;
      s.members.forEach(function (i) { cx += nodes[i].x; cy2 += nodes[i].y; });
      cx /= s.members.length;
      cy2 /= s.members.length;
      var best = s.members[0], bd = Infinity;
      s.members.forEach(function (i) {
        var d = Math.pow(nodes[i].x - cx, 2) + Math.pow(nodes[i].y - cy2, 2);
        if (d < bd) { bd = d; best = i; }
      });
      s.x = nodes[best].x;
      s.y = nodes[best].y;
      s.w = nodes[best].w || 64;
    }
    function makeSuper(members, name, note, collapsed) {
      var s = { id: state.nextSuper++, name: String(name || "group").slice(0, 80), note: String(note || ""),
        members: members, collapsed: collapsed !== false };
      placeSuper(s);
      state.supers.push(s);
      return s;
    }
    function annotations() {
      return { format: FORMAT, version: 1, task: data.task || null,
        supernodes: state.supers.map(function (s) {
          return { name: s.name, note: s.note, collapsed: s.collapsed,
            members: s.members.map(function (i) { return nodes[i].id; }) };
        }) };
    }
    function exportAnnotations() {
      var text = JSON.stringify(annotations(), null, 2) + "\n";
      var a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([text], { type: "application/json" }));
      a.download = "annotations.json";
      document.body.appendChild(a);
      a.click();
      setTimeout(function () { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
      say("Saved annotations.json: put it next to circuit.json and the report shows it next time.");
    }
    function loadAnnotations(obj) {
      // Returns a message; unknown node ids and malformed entries are skipped, never fatal.
      if (!obj || typeof obj !== "object" || obj.format !== FORMAT || !Array.isArray(obj.supernodes)) {
        return "Not a sparsecircuits annotations file.";
      }
      var index = {};
      nodes.forEach(function (n, i) { index[n.id] = i; });
      var taken = {}, skipped = 0, made = 0;
      state.supers = [];
      obj.supernodes.forEach(function (s) {
        if (!s || !Array.isArray(s.members)) { skipped++; return; }
        var members = [];
        s.members.forEach(function (id) {
          var i = index[String(id)];
          if (i === undefined || taken[i]) { skipped++; } else { taken[i] = true; members.push(i); }
        });
        if (members.length) { makeSuper(members, s.name, typeof s.note === "string" ? s.note : "", s.collapsed); made++; }
      });
      return "Loaded " + made + " supernode" + (made === 1 ? "" : "s") + (skipped ? " (" + skipped + " unknown or repeated entries skipped)" : "") + ".";
    }
    function importAnnotations(text) {
      var obj = null;
      try { obj = JSON.parse(text); } catch (e) { say("Not valid JSON."); return; }
      var msg = loadAnnotations(obj);
      cy.nodes(":selected").unselect();
      refresh();
      say(msg);
    }
    if (data.annotations) { state.message = loadAnnotations(data.annotations); }

    // ---------------------------------------------------------------- panel pieces
    function section(title) { panel.appendChild(el("h3", null, title)); }
    function say(text) {
      state.message = text;
      var m = panel.querySelector(".message");
      if (m) { m.textContent = text; } else { panel.insertBefore(el("p", "message", text), panel.firstChild); }
    }
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
        var cyy = top + r * rowH + rowH / 2;
        var col = colors[r % colors.length];
        var vals = classes[k];
        s.appendChild(sel("line", { x1: left, x2: W - right, y1: cyy, y2: cyy, stroke: "#f1f5f9" }));
        s.appendChild(sel("text", { x: left - 6, y: cyy + 3.5, "text-anchor": "end", "class": "tokl" }, shortTok(k, 8)));
        vals.forEach(function (v, j) {
          var jitter = (((j * 7919) % 13) - 6) * 1.5;
          s.appendChild(stitle(sel("circle", { cx: x(v).toFixed(1), cy: (cyy + jitter).toFixed(1), r: 2.6, fill: col, "fill-opacity": 0.5 }),
            k + ": " + fmt(v, 4)));
        });
        if (vals.length) {
          var mean = vals.reduce(function (a, b) { return a + b; }, 0) / vals.length;
          s.appendChild(stitle(sel("line", { x1: x(mean), x2: x(mean), y1: cyy - 11, y2: cyy + 11, stroke: "#111827", "stroke-width": 2.2 }),
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
    function nodeButton(i, value, cls) {
      var b = button("", nodes[i].id, function () { pick(i, true); }, "nbr");
      b.appendChild(el("span", null, nodeName(i)));
      if (value !== null && value !== undefined) { b.appendChild(el("span", cls || "w", value)); }
      return b;
    }
    function neighbourList(title, lis, end) {
      if (!lis.length) { return; }
      section(title + " (" + lis.length + ")");
      var sorted = lis.slice().sort(function (a, b) { return Math.abs(links[b][2]) - Math.abs(links[a][2]); });
      sorted.slice(0, 15).forEach(function (li) {
        var w = links[li][2];
        panel.appendChild(nodeButton(links[li][end], signed(w), "w " + (w >= 0 ? "pos" : "neg")));
      });
      if (sorted.length > 15) { panel.appendChild(el("div", "muted", "\u2026 and " + (sorted.length - 15) + " more")); }
    }
    function start(title, sub) {
      panel.replaceChildren();
      if (state.message) { panel.appendChild(el("p", "message", state.message)); }
      panel.appendChild(el("div", "node-title", title));
      if (sub) { panel.appendChild(el("div", "node-id", sub)); }
    }

    // ---------------------------------------------------------------- panels
    function renderNode(i) {
      var n = nodes[i];
      var d = n.details || {};
      start(n.token !== null && n.token !== undefined ? shortTok(n.token, 40) : n.label, n.id);
      panel.appendChild(factsTable([
        ["site", n.site_name],
        ["layer", n.layer],
        ["head", n.head],
        ["index", n.index],
        ["token", n.token !== null && n.token !== undefined ? JSON.stringify(n.token) : null],
        ["mask", typeof n.mask === "number" ? fmt(n.mask, 3) : null],
        ["links in / out", ins[i].length + " / " + outs[i].length],
        ["in circuit B", shared[i] && viewers.length > 1 ? "yes (shared)" : null],
        ["stable core", core[i] ? "yes: kept by most seeds" : null]
      ]));
      var s = superOf(i);
      if (s) {
        var p = el("p", "muted", "In supernode \u201c" + s.name + "\u201d. ");
        p.appendChild(button("Collapse", "draw the supernode instead of its members", function () {
          s.collapsed = true; refresh(); cy.getElementById("s" + s.id).select();
        }, "link-btn"));
        panel.appendChild(p);
      }
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
        d.snippets.forEach(function (sn) {
          scale = Math.max(scale, Math.abs(sn.max || 0));
          sn.acts.forEach(function (a) { scale = Math.max(scale, Math.abs(a)); });
        });
        var box = el("div", "snippets");
        d.snippets.forEach(function (sn) { box.appendChild(snippetRow(sn, scale)); });
        panel.appendChild(box);
      }
      if (!n.details) {
        panel.appendChild(el("p", "muted", "No activation details were recorded for this node."));
      }
      neighbourList("Inputs", ins[i], 0);
      neighbourList("Outputs", outs[i], 1);
    }

    function renderGroup(k) {
      var g = groups[k];
      var embed = g.side === "embed";
      start(g.members.length + (embed ? " tokens into " : " answers from ") + g.hook, g.id);
      panel.appendChild(el("p", "muted", (embed ? "Token embeddings read by " : "Answer logits written by ") + g.edges.length +
        " node" + (g.edges.length === 1 ? "" : "s") + " of this site, folded into one node; the edge shows each node's strongest link."));
      panel.appendChild(button("Unfold these " + g.members.length, "draw each token and its links", function () {
        state.unfolded[k] = true; cy.nodes(":selected").unselect(); refresh(); fit();
      }, "act"));
      section("Tokens by |weight| (" + g.links.length + " links)");
      g.links.slice(0, 40).forEach(function (li) {
        var l = links[li];
        var tok = embed ? l[0] : l[1];
        var b = nodeButton(tok, signed(l[2]), "w " + (l[2] >= 0 ? "pos" : "neg"));
        b.firstChild.textContent = shortTok(nodes[tok].token === null ? nodes[tok].label : nodes[tok].token, 14) +
          (embed ? " \u2192 " : " \u2190 ") + nodeName(embed ? l[1] : l[0]);
        panel.appendChild(b);
      });
      if (g.links.length > 40) { panel.appendChild(el("div", "muted", "\u2026 and " + (g.links.length - 40) + " more")); }
    }

    function renderSuper(s) {
      if (!s) { renderOverview(); return; }
      start(s.name, "supernode of " + s.members.length + " nodes");
      var name = el("input");
      name.value = s.name;
      name.setAttribute("aria-label", "supernode name");
      name.addEventListener("change", function () {
        s.name = name.value.slice(0, 80) || s.name;
        cy.getElementById("s" + s.id).data("label", s.name);
        panel.querySelector(".node-title").textContent = s.name;
      });
      var note = el("textarea");
      note.value = s.note;
      note.rows = 4;
      note.setAttribute("aria-label", "note");
      note.addEventListener("input", function () { s.note = note.value; });
      panel.appendChild(factsTable([]));
      var form = el("div", "super-form");
      form.appendChild(el("label", null, "name"));
      form.appendChild(name);
      form.appendChild(el("label", null, "note"));
      form.appendChild(note);
      panel.appendChild(form);
      var row = el("div", "btn-row");
      row.appendChild(button("Expand", "draw the members instead of the supernode", function () {
        s.collapsed = false; refresh(); renderSuper(s);
      }, "act"));
      row.appendChild(button("Ungroup", "remove this supernode", function () {
        state.supers = state.supers.filter(function (o) { return o !== s; }); refresh(); renderOverview();
      }, "act"));
      panel.appendChild(row);
      section("Members");
      s.members.forEach(function (i) {
        panel.appendChild(nodeButton(i, null));
      });
    }

    function renderMulti(ids) {
      var members = [], busy = [];
      ids.forEach(function (id) {
        if (id[0] !== "n") { return; }
        var i = Number(id.slice(1));
        if (superOf(i)) { busy.push(i); } else { members.push(i); }
      });
      start(ids.length + " selected", "shift-click or shift-drag to change the selection");
      if (busy.length) { panel.appendChild(el("p", "muted", busy.length + " of them already belong to a supernode and are left out.")); }
      if (members.length) {
        section("Group into a supernode");
        var form = el("div", "super-form");
        var name = el("input");
        name.value = "group " + state.nextSuper;
        name.setAttribute("aria-label", "supernode name");
        var note = el("textarea");
        note.rows = 3;
        note.placeholder = "what these nodes do together";
        note.setAttribute("aria-label", "note");
        form.appendChild(el("label", null, "name"));
        form.appendChild(name);
        form.appendChild(el("label", null, "note"));
        form.appendChild(note);
        panel.appendChild(form);
        panel.appendChild(button("Group " + members.length + " node" + (members.length === 1 ? "" : "s"), null, function () {
          var s = makeSuper(members, name.value || ("group " + state.nextSuper), note.value, true);
          cy.nodes(":selected").unselect();
          refresh();
          cy.getElementById("s" + s.id).select();
        }, "act group-btn"));
      }
      section("Selected");
      ids.forEach(function (id) { if (id[0] === "n") { panel.appendChild(nodeButton(Number(id.slice(1)), null)); } });
    }

    function renderOverview() {
      start(data.task || "circuit", null);
      panel.appendChild(el("p", "muted", nodes.length + " nodes, " + links.length + " links. Click a node for its details; " +
        "shift-click or shift-drag to select several and group them."));
      if (state.supers.length) {
        section("Supernodes");
        state.supers.forEach(function (s) {
          var b = button("", s.note || s.name, function () {
            if (!s.collapsed) { s.collapsed = true; refresh(); }
            var e = cy.getElementById("s" + s.id);
            cy.nodes(":selected").unselect();
            e.select();
            centre(e);
          }, "nbr");
          b.appendChild(el("span", null, s.name));
          b.appendChild(el("span", "w", s.members.length + " nodes"));
          panel.appendChild(b);
        });
      }
      var ranked = nodes.map(function (n, i) { return i; }).filter(function (i) {
        return nodes[i].details && typeof nodes[i].details.ablation_delta === "number";
      }).sort(function (a, b) {
        return Math.abs(nodes[b].details.ablation_delta) - Math.abs(nodes[a].details.ablation_delta);
      });
      if (ranked.length) {
        section("Most important nodes (ablation \u0394 loss)");
        ranked.slice(0, 12).forEach(function (i) {
          panel.appendChild(nodeButton(i, signed(nodes[i].details.ablation_delta)));
        });
      }
    }

    // ---------------------------------------------------------------- legend, start, test hooks
    var legend = q("legend");
    if (legend) {
      Object.keys(SITES).forEach(function (s) {
        var item = el("span", "lg");
        var sw = el("span", "sw");
        sw.style.background = SITES[s][0];
        sw.style.borderColor = SITES[s][1];
        item.appendChild(sw);
        item.appendChild(document.createTextNode(SITES[s][2]));
        legend.appendChild(item);
      });
      [["ln pos", "positive weight"], ["ln neg", "negative weight"]].forEach(function (p) {
        var item = el("span", "lg");
        item.appendChild(el("span", p[0]));
        item.appendChild(document.createTextNode(p[1]));
        legend.appendChild(item);
      });
      if ((data.core || []).length) {
        var coreItem = el("span", "lg");
        coreItem.appendChild(el("span", "sw core"));
        coreItem.appendChild(document.createTextNode("stable core across seeds"));
        legend.appendChild(coreItem);
      }
      legend.appendChild(el("span", "lg muted", "width \u221d |weight|; dashed: folded inputs/outputs"));
    }

    // A big circuit opens with its strongest DRAW_CAP links; the slider shows where, and goes to "all".
    var startPct = links.length > DRAW_CAP ? Math.ceil(100 * (1 - DRAW_CAP / links.length)) : 0;
    slider.value = String(startPct);
    var startBoxes = nodes.filter(function (n, i) { return !hidden.n[i]; }).length + groups.length;
    if (startBoxes <= DEFER_BOXES) { goLive(); }
    setThreshold(startPct);
    // A wide, short circuit gets a pane of its own shape instead of a tall empty one.
    var bb = shownBox();
    if (bb) {
      var want = container.clientWidth * (bb.h + 80) / Math.max(bb.w + 48, 1);
      if (want < container.clientHeight) {
        container.style.height = Math.max(320, Math.round(want)) + "px";
        cy.resize();
      }
    }
    fit();
    fitted = true;
    labelOnScreen();
    var startNode = -1;
    var m = /^#node=(.*)$/.exec(location.hash || "");
    if (m && viewers.length === 0) {
      var wanted = null;
      try { wanted = decodeURIComponent(m[1]); } catch (e) { wanted = null; }
      nodes.forEach(function (n, i) { if (n.id === wanted) { startNode = i; } });
    }
    if (startNode >= 0) { goLive(); pick(startNode, true); } else { renderOverview(); }
    // Anything the user does beyond moving the view goes to live elements: the first
    // press or key makes them at once if the scheduled goLive has not run yet.
    ["pointerdown", "keydown", "focusin"].forEach(function (type) {
      root.addEventListener(type, function (ev) {
        var viewKey = type === "keydown" && /^(Arrow|[-+=_f0])/.test(ev.key);
        if (live || (ev.target === container && (viewKey || type === "focusin"))) { return; }
        goLive();
      }, true);
    });
    self.goLive = goLive;
    self.isLive = function () { return live; };

    api.fit = fit;
    api.search = search;
    api.setThreshold = function (p) { slider.value = String(p); setThreshold(p); };
    api.drawnEdges = function () { return drawnCount; };
    api.drawnLinks = function () {  // [source id, target id] of each circuit link drawn as itself
      return drawn.filter(function (d) { return d.li >= 0; }).map(function (d) {
        return [nodes[links[d.li][0]].id, nodes[links[d.li][1]].id];
      });
    };
    api.annotations = annotations;
    api.boxes = function () {
      // Rendered boxes (container pixels) of every drawn node: circuit nodes, groups, supernodes.
      return cy.nodes().filter(function (n) { return !n.hasClass("hidden"); }).map(function (n) {
        var b = n.renderedBoundingBox({ includeLabels: false, includeOverlays: false, includeUnderlays: false });
        return { id: n.id(), x1: b.x1, y1: b.y1, x2: b.x2, y2: b.y2 };
      });
    };
    api.size = function () { return { width: container.clientWidth, height: container.clientHeight }; };
    api.selected = selectedIds;
    api.nodeId = function (cyId) { return cyId[0] === "n" ? nodes[Number(cyId.slice(1))].id : cyId; };
    api.cyId = function (nid) {  // what stands for circuit node ``nid`` on screen now, or null
      var i = nodes.findIndex(function (n) { return n.id === nid; });
      return i < 0 ? null : rep(i);
    };
    api.point = function (cyId) {  // page coordinates of an element's centre, for a real click
      var p = cy.getElementById(cyId).renderedPosition();
      var r = container.getBoundingClientRect();
      return { x: r.left + p.x, y: r.top + p.y };
    };
    return self;
  }
}());
