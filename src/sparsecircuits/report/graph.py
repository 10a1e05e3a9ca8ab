"""The circuit graph as the viewer draws it: clean nodes and links, folded inputs and
outputs, and a layered layout with fixed columns.

Columns run left to right in the order data flows: the token embeddings, then for each
layer ``attn in | heads q·k·v | attn out | mlp in | neurons | mlp out``, then the answer
logits. The order of the nodes inside each column comes from igraph's layered (Sugiyama)
layout, which inserts dummy vertices along long edges and sweeps barycentres to cut
crossings; the heads column then keeps each head's q, k and v channels together, and
every column is packed so that no two boxes overlap while staying as close as possible
(least squares) to where the layered layout wanted them.

Why here and not in the page: on the 2-core reference machine a layered layout of a
1,000-node, 10,000-edge circuit took elkjs 27-180 s and dagre minutes; igraph's C code
takes about a second, once, when the report is written. The page then only draws
(Cytoscape.js) and is usable at once.

Inputs and outputs fold: when a circuit has more than a dozen embedding tokens, they
are drawn as one group node per residual read site they feed (all of them, by weight,
in the panel), and likewise answer logits per residual write site.
Token nodes keep a position in an outer column for when a group is unfolded.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import igraph

from ..circuit_sizes import link_kind
from .values import _int, _num, visible_token

SITE_NAMES = {
    "embed": "token embedding",
    "attn_in": "attention read (residual channel)",
    "q": "query channel",
    "k": "key channel",
    "v": "value channel",
    "attn_out": "attention write (residual channel)",
    "mlp_in": "MLP read (residual channel)",
    "neuron": "MLP neuron",
    "mlp_out": "MLP write (residual channel)",
    "logit": "answer logit",
}
LINK_KINDS = ("weight", "residual", "qk", "embed", "logit", "other")
IO_SITES = ("embed", "logit")
# Site -> column within a layer, left to right in the order data flows.
_SITE_COLUMN = {"attn_in": 0, "q": 1, "k": 1, "v": 1, "attn_out": 2, "mlp_in": 3, "neuron": 4, "mlp_out": 5}
_QKV_ORDER = {"q": 0, "k": 1, "v": 2}
_HEADS_COL = 1
_COLUMN_TITLES = {0: "attn in", 1: "heads q\u00b7k\u00b7v", 2: "attn out", 3: "mlp in", 4: "neurons",
                  5: "mlp out", 6: "other"}
_EMBED_BAND, _UNKNOWN_BAND, _LOGIT_BAND = -1, 1 << 29, 1 << 30

# Geometry in graph pixels (the page zooms it).
NODE_W, TOKEN_W, GROUP_W, NODE_H, ROW = 64, 92, 116, 22, 30
COL_GAP, LAYER_GAP, TOP, PAD = 46, 26, 58, 16
HEAD_PAD, HEAD_LABEL, HEAD_GAP = 5, 13, 10
FOLD_MIN = 12  # tokens on one side before they fold into groups

_LAYER_RE = re.compile(r"blocks\.(\d+)\.")


# --------------------------------------------------------------------------------------
# Normalising untrusted circuit JSON
# --------------------------------------------------------------------------------------
def _node_label(n: dict) -> str:
    site = n["site"]
    if site in IO_SITES:
        return visible_token(n["token"], 11) if n["token"] is not None else f"#{n['index']}"
    idx = "?" if n["index"] is None else n["index"]
    if site in _QKV_ORDER:
        return f"{site}{idx}"
    return f"#{idx}"


def _clean_details(raw: Any) -> dict | None:
    """Keep only well-formed detail fields, coerced to the types the script expects."""
    if not isinstance(raw, dict):
        return None
    out: dict[str, Any] = {}
    snippets = []
    for s in raw.get("snippets") or []:
        if not isinstance(s, dict) or not isinstance(s.get("tokens"), list):
            continue
        toks = [str(t) for t in s["tokens"]][:512]
        acts = [(_num(a) or 0.0) for a in (s.get("acts") or [])][: len(toks)]
        acts += [0.0] * (len(toks) - len(acts))
        mx = _num(s.get("max"))
        snippets.append({"tokens": toks, "acts": acts,
                         "max": mx if mx is not None else max(acts, key=abs, default=0.0)})
    if snippets:
        out["snippets"] = snippets[:50]
    ca = raw.get("class_acts")
    if isinstance(ca, dict):
        classes = {str(k): [v for v in (_num(x) for x in vals[:4000]) if v is not None]
                   for k, vals in ca.items() if isinstance(vals, list)}
        if classes:
            out["class_acts"] = classes
    if _num(raw.get("ablation_delta")) is not None:
        out["ablation_delta"] = _num(raw["ablation_delta"])
    pat = raw.get("pattern")
    if isinstance(pat, dict) and isinstance(pat.get("tokens"), list) and isinstance(pat.get("matrix"), list):
        toks = [str(t) for t in pat["tokens"]][:256]
        rows = [[(_num(v) or 0.0) for v in row[: len(toks)]] for row in pat["matrix"][: len(toks)]
                if isinstance(row, list)]
        if toks and rows:
            out["pattern"] = {"tokens": toks, "matrix": rows}
            if isinstance(pat.get("title"), str):
                out["pattern"]["title"] = pat["title"]
    return out


def normalize_circuit(data: dict) -> tuple[list[dict], list[list], list[str]]:
    """Nodes and links as the page uses them; returns (nodes, links [s, t, w, kind], problems).

    ``kind`` is the link's kind from the sites of its ends (``circuit_sizes.link_kind``):
    the page's residual toggle and the io folding go by it.
    """
    problems: list[str] = []
    details = data.get("details") if isinstance(data.get("details"), dict) else {}
    model = data.get("model") if isinstance(data.get("model"), dict) else {}
    d_head = _int(model.get("d_head"))
    nodes: list[dict] = []
    index_of: dict[str, int] = {}
    for raw in data.get("nodes", []):
        if not isinstance(raw, dict) or raw.get("id") is None:
            problems.append("a node without an id was skipped")
            continue
        nid = str(raw["id"])
        if nid in index_of:
            problems.append(f"duplicate node id skipped: {nid}")
            continue
        hook = str(raw.get("hook") or nid.rsplit(":", 1)[0])
        site = str(raw.get("site") or "")
        layer = _int(raw.get("layer"))
        if layer is None and site not in IO_SITES:
            m = _LAYER_RE.search(hook)
            layer = int(m.group(1)) if m else None
        token = raw.get("token")
        index = _int(raw.get("index"))
        if index is None and re.fullmatch(r"\d+", nid.rsplit(":", 1)[-1]):
            index = int(nid.rsplit(":", 1)[-1])
        node = {
            "id": nid, "hook": hook, "site": site, "layer": layer,
            "index": index, "head": _int(raw.get("head")),
            "token": None if token is None else str(token), "mask": _num(raw.get("mask")),
        }
        if node["head"] is None and site in _QKV_ORDER and node["index"] is not None and d_head:
            node["head"] = node["index"] // d_head  # q/k/v channels are numbered across heads
        node["label"] = _node_label(node)
        node["site_name"] = SITE_NAMES.get(site, site or "unknown site")
        det = _clean_details(details.get(nid))
        if det:
            node["details"] = det
        index_of[nid] = len(nodes)
        nodes.append(node)
    links: list[list] = []
    dropped = 0
    for raw in data.get("links", []):
        if not isinstance(raw, dict):
            dropped += 1
            continue
        s, t = index_of.get(str(raw.get("source"))), index_of.get(str(raw.get("target")))
        w = _num(raw.get("weight"))
        if s is None or t is None:
            dropped += 1
            continue
        links.append([s, t, 0.0 if w is None else w, link_kind(nodes[s]["site"], nodes[t]["site"])])
    if dropped:
        problems.append(f"{dropped} link(s) with unknown endpoints were skipped")
    return nodes, links, problems


# --------------------------------------------------------------------------------------
# Folding inputs and outputs
# --------------------------------------------------------------------------------------
def _short_site(n: dict) -> str:
    layer = "?" if n["layer"] is None else n["layer"]
    return f"L{layer} {'attn' if n['site'].startswith('attn') else 'mlp' if n['site'].startswith('mlp') else n['site']}"


def fold_io(nodes: list[dict], links: list[list]) -> tuple[list[dict], dict[str, bool]]:
    """Group nodes standing for the embedding tokens read by each residual read site
    (``blocks.L.hook_attn_in`` / ``hook_mlp_in``) and for the answer logits written by
    each residual write site; returns (groups, folded per side).

    At most two groups per layer and side, so a circuit with hundreds of tokens opens on
    a screen of its own nodes. A group has one edge per read (write) that its tokens feed,
    with the strongest weight there; the panel lists its tokens by weight. A side folds
    when it has more than ``FOLD_MIN`` tokens. Every io link belongs to exactly one group;
    a token can sit in several.
    """
    groups: list[dict] = []
    folded: dict[str, bool] = {}
    for side in IO_SITES:
        n_tokens = sum(1 for n in nodes if n["site"] == side)
        by_hook: dict[str, list[int]] = {}
        for li, (s, t, _w, _k) in enumerate(links):
            if side == "embed" and nodes[s]["site"] == "embed" and nodes[t]["site"] not in IO_SITES:
                by_hook.setdefault(nodes[t]["hook"], []).append(li)
            elif side == "logit" and nodes[t]["site"] == "logit" and nodes[s]["site"] not in IO_SITES:
                by_hook.setdefault(nodes[s]["hook"], []).append(li)
        folded[side] = n_tokens > FOLD_MIN and bool(by_hook)
        if not folded[side]:
            continue
        end, anchor_end = (0, 1) if side == "embed" else (1, 0)
        for hook in sorted(by_hook, key=lambda h: (nodes[links[by_hook[h][0]][anchor_end]]["layer"] or 0, h)):
            lis = sorted(by_hook[hook], key=lambda li: (-abs(links[li][2]), li))
            members: list[int] = []
            strongest: dict[int, float] = {}
            for li in lis:
                tok, anchor = links[li][end], links[li][anchor_end]
                if tok not in members:
                    members.append(tok)
                strongest.setdefault(anchor, links[li][2])
            where = _short_site(nodes[links[lis[0]][anchor_end]])
            label = (f"{len(members)} tok\u2192{where}" if side == "embed" else f"{where}\u2192{len(members)} ans")
            groups.append({"id": f"{side}:{hook}", "side": side, "hook": hook, "links": lis, "members": members,
                           "edges": [[a, w] for a, w in strongest.items()], "weight": links[lis[0]][2],
                           "label": label})
    return groups, folded


# --------------------------------------------------------------------------------------
# Layout
# --------------------------------------------------------------------------------------
def _pack(targets: list[float], gaps: list[float]) -> list[float]:
    """Positions in the given order, each at least ``gaps[i - 1]`` after the previous one,
    as close as possible to ``targets`` in least squares.

    Subtracting the running sum of gaps turns the spacing into plain monotonicity, which
    pool-adjacent-violators solves exactly in one pass.
    """
    offs = [0.0]
    for g in gaps:
        offs.append(offs[-1] + g)
    blocks: list[list[float]] = []  # [sum, count] of pooled values
    for t, o in zip(targets, offs):
        blocks.append([t - o, 1.0])
        while len(blocks) > 1 and blocks[-2][0] * blocks[-1][1] > blocks[-1][0] * blocks[-2][1]:
            s, c = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += c
    out: list[float] = []
    for s, c in blocks:
        out += [s / c] * int(c)
    return [v + o for v, o in zip(out, offs)]


def _node_key(n: dict, folded: dict[str, bool]) -> tuple[int, int]:
    if n["site"] == "embed":
        return (_EMBED_BAND, 0 if folded.get("embed") else 1)
    if n["site"] == "logit":
        return (_LOGIT_BAND, 1 if folded.get("logit") else 0)
    layer = n["layer"] if n["layer"] is not None else _UNKNOWN_BAND
    return (layer, _SITE_COLUMN.get(n["site"], 6))


def _width(n: dict) -> int:
    return TOKEN_W if n["site"] in IO_SITES else NODE_W


def _column_title(key: tuple[int, int], folded: dict[str, bool]) -> str:
    if key[0] == _EMBED_BAND:
        return "tokens" if key[1] == 0 or not folded.get("embed") else "tokens by read"
    if key[0] == _LOGIT_BAND:
        return "answers" if key[1] == 1 or not folded.get("logit") else "answers by write"
    return _COLUMN_TITLES.get(key[1], "")


def _band_label(band: int) -> str:
    return {_EMBED_BAND: "embedding", _LOGIT_BAND: "answer logits", _UNKNOWN_BAND: "layer ?"}.get(band, f"layer {band}")


Item = tuple[str, int]  # ("n", node index) or ("g", group index)
Key = tuple[int, int]  # (layer band, column within it)


@dataclass
class _Columns:
    """Every node and group with its column key and box width; ``keys`` in drawing order."""

    items: list[Item]
    key_of: dict[Item, Key]
    width_of: dict[Item, int]
    keys: list[Key]
    col: dict[Key, int]  # key -> column number, left to right

    def is_heads(self, key: Key) -> bool:
        return key[1] == _HEADS_COL and key[0] not in (_EMBED_BAND, _LOGIT_BAND)


def _columns(nodes: list[dict], groups: list[dict], folded: dict[str, bool]) -> _Columns:
    items: list[Item] = [("n", i) for i in range(len(nodes))] + [("g", k) for k in range(len(groups))]
    key_of: dict[Item, Key] = {}
    width_of: dict[Item, int] = {}
    for it in items:
        if it[0] == "n":
            key_of[it], width_of[it] = _node_key(nodes[it[1]], folded), _width(nodes[it[1]])
        else:
            g = groups[it[1]]
            key_of[it] = (_EMBED_BAND, 1) if g["side"] == "embed" else (_LOGIT_BAND, 0)
            width_of[it] = GROUP_W
    keys = sorted(set(key_of.values()))
    return _Columns(items, key_of, width_of, keys, {k: c for c, k in enumerate(keys)})


def _layered_heights(cols: _Columns, links: list[list], groups: list[dict],
                     core: list[Item]) -> dict[Item, float]:
    """Where igraph's layered (Sugiyama) layout puts each ``core`` item along its column,
    in layout units, with one column per layer of the layered graph."""
    vid = {it: v for v, it in enumerate(core)}
    layers = [cols.col[cols.key_of[it]] for it in core]
    edges: list[tuple[int, int]] = []
    weights: list[float] = []
    chain: dict[tuple[int, int], int] = {}

    def add(a: Item, b: Item, w: float) -> None:
        """An edge, through one dummy vertex per skipped column, shared by all long edges
        of the same source (so a write feeding ten later reads adds one chain, not ten)."""
        if a not in vid or b not in vid or cols.col[cols.key_of[a]] == cols.col[cols.key_of[b]]:
            return
        if cols.col[cols.key_of[a]] > cols.col[cols.key_of[b]]:
            a, b = b, a
        prev = vid[a]
        for c in range(cols.col[cols.key_of[a]] + 1, cols.col[cols.key_of[b]]):
            if (vid[a], c) not in chain:
                chain[(vid[a], c)] = len(layers)
                layers.append(c)
                edges.append((prev, chain[(vid[a], c)]))
                weights.append(abs(w) + 1e-6)
            prev = chain[(vid[a], c)]
        edges.append((prev, vid[b]))
        weights.append(abs(w) + 1e-6)

    for s, t, w, _k in links:
        add(("n", s), ("n", t), w)
    for k, g in enumerate(groups):
        for anchor, w in g["edges"]:
            add(("g", k), ("n", anchor), w)
    graph = igraph.Graph(n=len(layers), edges=edges, directed=True)
    # Fewer crossing-reduction sweeps on big graphs: about 2 s at 1,000 nodes and 10,000 links.
    sweeps = 100 if len(layers) < 3000 else 10
    coords = graph.layout_sugiyama(layers=layers, weights=weights or None, maxiter=sweeps).coords if core else []
    return {it: coords[v][0] for it, v in vid.items()}


def _pack_columns(cols: _Columns, nodes: list[dict], core: list[Item],
                  want: dict[Item, float]) -> tuple[dict[Item, float], list[tuple[Key, list[Item]]]]:
    """Each column's boxes in the layered order, packed without overlap; in the heads
    column each head's q, k and v channels stay together in one box. Returns the heights
    (graph pixels, not yet shifted) and the head boxes as (column key, members)."""
    members: dict[Key, list[Item]] = {k: [] for k in cols.keys}
    for it in core:
        members[cols.key_of[it]].append(it)
    # Squeeze the layered layout's spread (dummy vertices take room) to the tallest column.
    span = (max(want.values()) - min(want.values())) if want else 0.0
    tallest = max((len(m) for m in members.values()), default=1) * ROW
    scale = ROW * min(1.0, tallest / max(span * ROW, 1.0))
    pos: dict[Item, float] = {}
    head_groups: list[tuple[Key, list[Item]]] = []
    box_gap = ROW + 2 * HEAD_PAD + HEAD_LABEL + HEAD_GAP
    for key in cols.keys:
        its = members[key]
        if not its:
            continue
        if cols.is_heads(key):
            by_head: dict[Any, list[Item]] = {}
            for it in its:
                h = nodes[it[1]]["head"]
                by_head.setdefault(h if h is not None else ("?", it), []).append(it)
            blocks = sorted(by_head.values(), key=lambda b: (sum(want[i] for i in b) / len(b), b[0]))
            order: list[Item] = []
            gaps: list[float] = []
            for b in blocks:
                b.sort(key=lambda it: (_QKV_ORDER.get(nodes[it[1]]["site"], 3), want[it], it))
                if order:
                    gaps.append(box_gap)
                gaps += [ROW] * (len(b) - 1)
                order += b
                head_groups.append((key, b))
        else:
            order = sorted(its, key=lambda it: (want[it], it))
            gaps = [ROW] * (len(order) - 1)
        for it, y in zip(order, _pack([want[it] * scale for it in order], gaps)):
            pos[it] = y
    return pos, head_groups


def _place_folded_tokens(cols: _Columns, links: list[list], late: set[Item], pos: dict[Item, float]) -> None:
    """Tokens of a folded side go near the weighted mean of the reads (writes) they link
    to, packed in their own column; adds them to ``pos``."""
    pull: dict[Item, list[float]] = {it: [0.0, 0.0] for it in late}  # [sum w*y, sum w]
    for s, t, w, _k in links:
        for a, b in ((("n", s), ("n", t)), (("n", t), ("n", s))):
            if a in pull and b in pos:
                pull[a][0] += pos[b] * (abs(w) + 1e-6)
                pull[a][1] += abs(w) + 1e-6
    late_want = {it: (acc / tot if tot else 0.0) for it, (acc, tot) in pull.items()}
    for key in cols.keys:
        its = sorted((it for it in late if cols.key_of[it] == key), key=lambda it: (late_want[it], it))
        for it, y in zip(its, _pack([late_want[it] for it in its], [ROW] * (len(its) - 1))):
            pos[it] = y


def _column_xs(cols: _Columns) -> tuple[dict[Key, float], dict[Key, float], float]:
    """Column centres and widths left to right, a wider gap between layers; and the total width."""
    xs: dict[Key, float] = {}
    cwidth: dict[Key, float] = {}
    x, prev = float(PAD), None
    for key in cols.keys:
        w = max(cols.width_of[it] for it in cols.items if cols.key_of[it] == key)
        w += 2 * HEAD_PAD if cols.is_heads(key) else 0
        if prev is not None and key[0] != prev:
            x += LAYER_GAP
        xs[key], cwidth[key] = x + w / 2, w
        x += w + COL_GAP
        prev = key[0]
    return xs, cwidth, x - COL_GAP + PAD


def _bands(keys: list[Key], xs: dict[Key, float], cwidth: dict[Key, float]) -> list[dict]:
    """One labelled horizontal extent per layer band (embedding, each layer, answer logits)."""
    bands: dict[int, list[Key]] = {}
    for key in keys:
        bands.setdefault(key[0], []).append(key)
    out = []
    for band, ks in bands.items():
        x0 = min(xs[k] - cwidth[k] / 2 for k in ks) - COL_GAP / 2 + 6
        x1 = max(xs[k] + cwidth[k] / 2 for k in ks) + COL_GAP / 2 - 6
        out.append({"x0": round(x0, 1), "x1": round(x1, 1), "label": _band_label(band)})
    return out


def _head_boxes(head_groups: list[tuple[Key, list[Item]]], nodes: list[dict], pos: dict[Item, float],
                xs: dict[Key, float], cwidth: dict[Key, float]) -> list[dict]:
    heads = []
    for key, b in head_groups:
        ys = [pos[it] for it in b]
        h = nodes[b[0][1]]["head"]
        heads.append({"x": round(xs[key], 1), "w": cwidth[key],
                      "y0": round(min(ys) - ROW / 2 - HEAD_LABEL - HEAD_PAD + 2, 1),
                      "y1": round(max(ys) + ROW / 2 + HEAD_PAD - 2, 1),
                      "label": f"L{key[0]} head {h}" if h is not None else "head ?"})
    return heads


def layout_circuit(nodes: list[dict], links: list[list], groups: list[dict],
                   folded: dict[str, bool]) -> dict:
    """Positions (box centres) for nodes and groups, plus the decorations: layer bands,
    column titles and head boxes. Returns the ``layout`` part of the page's data."""
    cols = _columns(nodes, groups, folded)
    # Tokens of a folded side are placed after the others, next to the reads/writes they feed.
    late = {("n", i) for i, n in enumerate(nodes) if n["site"] in IO_SITES and folded.get(n["site"])}
    core = [it for it in cols.items if it not in late]
    want = _layered_heights(cols, links, groups, core)
    pos, head_groups = _pack_columns(cols, nodes, core, want)
    _place_folded_tokens(cols, links, late, pos)
    shift = TOP + ROW / 2 - min(pos.values(), default=0.0)
    for it in pos:
        pos[it] += shift
    xs, cwidth, width = _column_xs(cols)
    height = max(pos.values(), default=TOP) + ROW / 2 + PAD
    for i, n in enumerate(nodes):
        n["x"], n["y"], n["w"] = round(xs[cols.key_of[("n", i)]], 1), round(pos[("n", i)], 1), cols.width_of[("n", i)]
    for k, g in enumerate(groups):
        g["x"], g["y"], g["w"] = round(xs[cols.key_of[("g", k)]], 1), round(pos[("g", k)], 1), GROUP_W
    return {"width": round(width, 1), "height": round(height, 1), "node_h": NODE_H,
            "columns": [{"x": round(xs[k], 1), "title": _column_title(k, folded)} for k in cols.keys],
            "bands": _bands(cols.keys, xs, cwidth), "heads": _head_boxes(head_groups, nodes, pos, xs, cwidth)}


def circuit_view(data: dict) -> tuple[dict, list[str]]:
    """Everything the page's viewer needs for one circuit, and the problems found reading it."""
    nodes, links, problems = normalize_circuit(data)
    groups, folded = fold_io(nodes, links)
    layout = layout_circuit(nodes, links, groups, folded) if nodes else {}
    return {"nodes": nodes, "links": links, "groups": groups, "folded": folded, "layout": layout}, problems
