// A project's pipeline: the graph (Warehouses and Stages as the daemon laid them out), or the
// same as a list, with a search that narrows both. Only the boxes and edges in view are in the
// page, so a project of 1,000 Stages costs what a screenful does. The graph follows the
// project's changes (the watch stream) and reads itself again when something changed.

import { get, seg, watch } from "./api.js";
import { h, fill, shown } from "./dom.js";

const COLUMN = 300; // px between columns
const ROW = 116; // px between rows
const NODE_W = 248;
const NODE_H = 96;
const PAD = 28;
const MARGIN = 400; // px drawn beyond the visible part, so scrolling shows no gaps

const STATES = {
  promoting: "Promoting",
  verifying: "Verifying",
  verified: "Verified",
  failed: "Failed",
  steady: "Steady",
  empty: "Empty",
};

/// One line of a Freight: its alias and its first artifact's tag or short id.
function freightLine(f) {
  const artifact = f.artifacts?.[0] ?? "";
  const tail = artifact.slice(Math.max(artifact.lastIndexOf(":"), artifact.lastIndexOf("@")) + 1);
  return tail && tail !== artifact ? `${shown(f)} · ${tail}` : shown(f);
}

function matches(node, query) {
  if (!query) return true;
  const words = [node.name, node.kind, node.stage?.state ?? "", ...(node.subscriptions ?? [])];
  for (const f of node.freight) words.push(f.alias ?? "", f.name, ...f.artifacts);
  return words.some((w) => w.toLowerCase().includes(query));
}

export class Pipeline {
  constructor(project, onSelect) {
    this.project = project;
    this.onSelect = onSelect;
    this.graph = null;
    this.mode = "graph";
    this.query = "";
    this.selected = null;
    this.rendered = new Map(); // "Kind/name" → {el, look}: the boxes in the page
    this.frame = 0;
    this.refetching = null;
    this.stale = false;
    this.listeners = [];
    this.root = h("section", { class: "pipeline", "aria-label": `Pipeline of ${project}` });
    this.scroller = h("div", { class: "canvas", tabindex: "-1" });
    this.sizer = h("div", { class: "sizer" });
    this.edges = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    this.edges.setAttribute("class", "edges");
    this.edges.setAttribute("aria-hidden", "true");
    this.sizer.appendChild(this.edges);
    this.scroller.appendChild(this.sizer);
    this.list = h("div", { class: "list", hidden: true });
    this.empty = h("p", { class: "empty", hidden: true });
    this.root.append(this.scroller, this.list, this.empty);
    this.scroller.addEventListener("scroll", () => this.schedule(), { passive: true });
    // Painted again whenever its size changes: when it enters the page, when the window or
    // the panel beside it changes.
    const resized = new ResizeObserver(() => this.schedule());
    resized.observe(this.scroller);
    this.listeners.push(() => resized.disconnect());
  }

  /// Reads the graph and starts following the project.
  async open() {
    this.graph = await get(`/v1/projects/${seg(this.project)}/graph`);
    this.stop = watch(this.project, this.graph.sequence, (change) => this.changed(change));
    this.render();
    // When the first view is up (the UI's benchmark reads this mark).
    requestAnimationFrame(() => performance.mark("dray-graph"));
    return this;
  }

  close() {
    this.stop?.();
    for (const off of this.listeners) off();
    cancelAnimationFrame(this.frame);
  }

  changed(change) {
    // Events, Secrets and the like do not change the picture.
    const kind = change?.object?.kind;
    if (change && !["Stage", "Warehouse", "Freight", "Promotion", "AnalysisRun", "Project"].includes(kind)) return;
    this.refetch();
  }

  /// Reads the graph again, once at a time: changes during a read ask for one more.
  async refetch() {
    if (this.refetching) {
      this.stale = true;
      return;
    }
    this.refetching = (async () => {
      do {
        this.stale = false;
        await new Promise((r) => setTimeout(r, 150)); // one read for a burst of changes
        try {
          this.graph = await get(`/v1/projects/${seg(this.project)}/graph`);
          this.render(true);
          this.onRefresh?.(this.graph);
        } catch (e) {
          console.warn("graph:", e.message);
        }
      } while (this.stale);
      this.refetching = null;
    })();
  }

  setMode(mode) {
    this.mode = mode;
    this.render(true);
  }

  setQuery(query) {
    this.query = query.trim().toLowerCase();
    this.render(true);
  }

  select(kind, name) {
    const key = kind && name ? `${kind}/${name}` : null;
    const moved = key !== this.selected;
    this.selected = key;
    this.render(true);
    const n = key && this.node(kind, name);
    if (moved && n && this.mode === "graph") {
      // Bring the selected box into view once the panel beside it has its place.
      requestAnimationFrame(() => this.bringIntoView(n));
    }
  }

  /// Scrolls the graph so that node `n` is in view, if it is not.
  bringIntoView(n) {
    const s = this.scroller;
    const x = PAD + n.column * COLUMN;
    const y = PAD + n.row * ROW;
    const outside = x < s.scrollLeft || x + NODE_W > s.scrollLeft + s.clientWidth || y < s.scrollTop || y + NODE_H > s.scrollTop + s.clientHeight;
    if (outside) s.scrollTo({ left: Math.max(0, x + NODE_W - s.clientWidth + PAD), top: Math.max(0, y - PAD) });
  }

  node(kind, name) {
    return this.graph?.nodes.find((n) => n.kind === kind && n.name === name);
  }

  /// Scrolls the first node matching the search into view and focuses it.
  reveal() {
    const i = this.graph.nodes.findIndex((n) => matches(n, this.query));
    if (i < 0) return;
    const n = this.graph.nodes[i];
    if (this.mode === "graph") {
      this.scroller.scrollTo({
        left: Math.max(0, PAD + n.column * COLUMN - 80),
        top: Math.max(0, PAD + n.row * ROW - 120),
      });
      this.paint();
      this.rendered.get(`${n.kind}/${n.name}`)?.el.focus();
    } else {
      this.list.querySelector("tbody button")?.focus();
    }
  }

  schedule() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.paint();
    });
  }

  render(changed = false) {
    const g = this.graph;
    if (!g) return;
    const nothing = g.nodes.length === 0;
    this.empty.hidden = !nothing;
    fill(this.empty, nothing ? "This project has no Warehouses or Stages yet: apply some with `dray apply -f`." : "");
    this.scroller.hidden = nothing || this.mode !== "graph";
    this.list.hidden = nothing || this.mode !== "list";
    if (this.mode === "list") return this.renderList();
    this.sizer.style.width = `${PAD * 2 + g.columns * COLUMN}px`;
    this.sizer.style.height = `${PAD * 2 + g.rows * ROW}px`;
    this.paint();
  }

  /// Puts in the page the boxes and edges in view (and a margin), and takes out the rest.
  paint() {
    const g = this.graph;
    if (!g || this.mode !== "graph") return;
    const s = this.scroller;
    const view = {
      left: s.scrollLeft - MARGIN,
      top: s.scrollTop - MARGIN,
      right: s.scrollLeft + s.clientWidth + MARGIN,
      bottom: s.scrollTop + s.clientHeight + MARGIN,
    };
    const at = (n) => ({ x: PAD + n.column * COLUMN, y: PAD + n.row * ROW });
    const inView = (x, y, w, hh) => x + w >= view.left && x <= view.right && y + hh >= view.top && y <= view.bottom;
    // Boxes are kept by Stage or Warehouse and made again only when what they show changed
    // (so a box keeps the keyboard focus across the graph's updates).
    const visible = new Map();
    for (const n of g.nodes) {
      const p = at(n);
      if (inView(p.x, p.y, NODE_W, NODE_H)) visible.set(`${n.kind}/${n.name}`, n);
    }
    for (const [key, box] of this.rendered) {
      if (!visible.has(key)) {
        box.el.remove();
        this.rendered.delete(key);
      }
    }
    for (const [key, n] of visible) {
      const look = `${JSON.stringify(n)}|${this.selected === key}|${this.query && !matches(n, this.query)}`;
      const old = this.rendered.get(key);
      if (old?.look === look) continue;
      const p = at(n);
      const el = this.box(n);
      el.style.transform = `translate(${p.x}px, ${p.y}px)`;
      if (old) {
        const focused = document.activeElement === old.el;
        old.el.replaceWith(el);
        if (focused) el.focus();
      } else {
        this.sizer.appendChild(el);
      }
      this.rendered.set(key, { el, look });
    }
    // Edges whose bounding box meets the view, drawn in an SVG the size of the view.
    const w = s.clientWidth + 2 * MARGIN;
    const hh = s.clientHeight + 2 * MARGIN;
    const svg = this.edges;
    svg.setAttribute("width", w);
    svg.setAttribute("height", hh);
    svg.setAttribute("viewBox", `${view.left} ${view.top} ${w} ${hh}`);
    svg.style.transform = `translate(${Math.max(view.left, -1e9)}px, ${view.top}px)`;
    const paths = [];
    for (const [from, to] of g.edges) {
      const a = at(g.nodes[from]);
      const b = at(g.nodes[to]);
      const x1 = a.x + NODE_W;
      const y1 = a.y + NODE_H / 2;
      const x2 = b.x;
      const y2 = b.y + NODE_H / 2;
      if (!inView(Math.min(x1, x2), Math.min(y1, y2), Math.abs(x2 - x1), Math.abs(y2 - y1))) continue;
      const bend = Math.max(40, (x2 - x1) / 2);
      const dim = this.query && !(matches(g.nodes[from], this.query) || matches(g.nodes[to], this.query));
      const cls = `${g.nodes[from].kind === "Warehouse" ? "edge direct" : "edge"}${dim ? " dim" : ""}`;
      paths.push(`<path class="${cls}" d="M${x1},${y1} C${x1 + bend},${y1} ${x2 - bend},${y2} ${x2},${y2}"/>`);
    }
    // Only numbers and fixed class names go into this markup.
    svg.innerHTML = paths.join("");
  }

  /// One Warehouse's or Stage's box: a button that opens its panel.
  box(n) {
    const key = `${n.kind}/${n.name}`;
    const dim = this.query && !matches(n, this.query);
    const classes = ["node", n.kind.toLowerCase()];
    if (dim) classes.push("dim");
    if (this.selected === key) classes.push("selected");
    const open = () => this.onSelect(n.kind, n.name);
    if (n.kind === "Warehouse") {
      const newest = n.freight[0];
      return h(
        "button",
        {
          class: classes.join(" "),
          dataset: { kind: n.kind, name: n.name },
          "aria-label": `Warehouse ${n.name}${newest ? `, newest Freight ${shown(newest)}` : ", no Freight yet"}`,
          onclick: open,
        },
        h("span", { class: "kind" }, "Warehouse"),
        h("span", { class: "name" }, n.name),
        h("span", { class: "line" }, n.subscriptions[0] ?? "no subscriptions"),
        h("span", { class: "line freight" }, newest ? `newest: ${freightLine(newest)}` : "no Freight yet"),
      );
    }
    const s = n.stage;
    classes.push(`state-${s.state}`);
    const holds = n.freight.length ? n.freight.map(freightLine).join(", ") : "holds nothing yet";
    const badges = [];
    if (s.autoPromotion) badges.push(h("span", { class: "tag" }, "auto"));
    if (s.health) badges.push(h("span", { class: `tag health-${s.health.toLowerCase()}` }, s.health));
    if (s.waiting.length) {
      badges.push(h("span", { class: "tag waiting", title: "Newer Freight this Stage may take now" }, `newer: ${s.waiting.map(shown).join(", ")}`));
    }
    return h(
      "button",
      {
        class: classes.join(" "),
        dataset: { kind: n.kind, name: n.name, state: s.state },
        "aria-label": `Stage ${n.name}: ${STATES[s.state] ?? s.state}; ${holds}${s.waiting.length ? `; newer Freight waiting: ${s.waiting.map(shown).join(", ")}` : ""}`,
        onclick: open,
      },
      h("span", { class: "kind" }, "Stage", h("span", { class: `state ${s.state}` }, STATES[s.state] ?? s.state)),
      h("span", { class: "name" }, n.name),
      h("span", { class: "line freight", title: holds }, holds),
      h("span", { class: "line badges" }, badges),
    );
  }

  renderList() {
    const started = performance.now();
    const g = this.graph;
    // In pipeline order: by column, then row.
    const rows = g.nodes
      .filter((n) => n.kind === "Stage" && matches(n, this.query))
      .sort((a, b) => a.column - b.column || a.row - b.row);
    const body = h(
      "tbody",
      null,
      rows.map((n) => {
        const s = n.stage;
        return h(
          "tr",
          { class: this.selected === `Stage/${n.name}` ? "selected" : "" },
          h("td", null, h("button", { class: "link", onclick: () => this.onSelect("Stage", n.name) }, n.name)),
          h("td", null, h("span", { class: `state ${s.state}` }, STATES[s.state] ?? s.state)),
          h("td", null, n.freight.map(freightLine).join(", ") || "–"),
          h("td", null, s.origins.join(", ")),
          h("td", null, s.waiting.map(shown).join(", ") || "–"),
          h("td", null, s.health ?? "–"),
          h("td", null, s.autoPromotion ? "on" : "off"),
        );
      }),
    );
    fill(
      this.list,
      h(
        "table",
        { class: "stages" },
        h("caption", null, `${rows.length} of ${g.nodes.filter((n) => n.kind === "Stage").length} Stages`),
        h(
          "thead",
          null,
          h("tr", null, ["Stage", "State", "Holds", "From", "Newer waiting", "Health", "Auto"].map((c) => h("th", { scope: "col" }, c))),
        ),
        body,
      ),
    );
    // How long the list took to build (the UI's benchmark reads this measure).
    performance.measure("dray-list", { start: started, end: performance.now() });
  }
}
