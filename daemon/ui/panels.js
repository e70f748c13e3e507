// The side panel of a Stage or a Warehouse, and the pages of a Promotion and of a
// verification (AnalysisRun). Every action is one call of the daemon's API.

import { ApiError, get, post, readLog, seg, watch } from "./api.js";
import { ago, confirmDialog, fill, h, shown, toast, took } from "./dom.js";

const p = (project) => `/v1/projects/${seg(project)}`;

function failed(e) {
  toast(e instanceof ApiError ? e.message : String(e), "error");
}

function artifacts(f) {
  return h("ul", { class: "artifacts" }, (f?.artifacts ?? []).map((a) => h("li", null, h("code", null, a))));
}

function link(href, text) {
  return h("a", { href }, text);
}

/// A button that runs `action` once at a time, and says so while it runs.
function actionButton(label, action, cls = "") {
  const button = h("button", { class: cls }, label);
  button.addEventListener("click", async () => {
    button.disabled = true;
    try {
      await action();
    } catch (e) {
      failed(e);
    } finally {
      button.disabled = false;
    }
  });
  return button;
}

/// Promotes `freight` (a timeline entry) into Stage `node` after showing what changes.
async function promote(project, node, freight) {
  const before = node.freight.find((f) => f.origin === freight.origin);
  const change = h(
    "table",
    { class: "change" },
    h("thead", null, h("tr", null, h("th", { scope: "col" }), h("th", { scope: "col" }, "now"), h("th", { scope: "col" }, "after"))),
    h(
      "tbody",
      null,
      h("tr", null, h("th", { scope: "row" }, "Freight"), h("td", null, before ? shown(before) : "–"), h("td", null, shown(freight))),
      h("tr", null, h("th", { scope: "row" }, "Artifacts"), h("td", null, artifacts(before)), h("td", null, artifacts(freight))),
    ),
  );
  const ok = await confirmDialog(
    `Promote ${shown(freight)} to ${node.name}?`,
    h("div", null, h("p", null, `Stage ${node.name} will run its promotion steps with this Freight from ${freight.origin}.`), change),
    "Promote",
  );
  if (!ok) return;
  const created = await post(`${p(project)}/stages/${seg(node.name)}/promote`, { freight: freight.name });
  const name = created?.metadata?.name;
  toast(`Promotion of ${shown(freight)} to ${node.name} started`);
  if (name) location.hash = `#/projects/${seg(project)}/promotions/${seg(name)}`;
}

/// One Freight of a timeline, with what the Stage (if any) may do with it.
/// `stages`: in a Warehouse's timeline (no `node`), the Stages that take its Freight.
function freightRow(project, entry, node, stages) {
  const places = [
    ...entry.currentlyIn.map((s) => h("span", { class: "tag in" }, `in ${s}`)),
    ...entry.verifiedIn.map((s) => h("span", { class: "tag verified" }, `verified in ${s}`)),
    ...entry.approvedFor.map((s) => h("span", { class: "tag approved" }, `approved for ${s}`)),
  ];
  const actions = [];
  let why = null;
  if (node) {
    const held = node.freight.some((f) => f.name === entry.name);
    if (held) {
      actions.push(h("span", { class: "tag in" }, "held now"));
    } else if (entry.availability?.available) {
      actions.push(actionButton("Promote…", () => promote(project, node, entry), "primary small"));
    } else {
      why = h("p", { class: "why" }, entry.availability?.reasons?.[0] ?? "not available");
      actions.push(
        actionButton(
          "Approve",
          async () => {
            await post(`${p(project)}/freight/${seg(entry.name)}/approve`, { stage: node.name });
            toast(`${shown(entry)} approved for ${node.name}`);
          },
          "small",
        ),
      );
    }
  }
  let where = null;
  if (!node && stages?.length) {
    where = h("div", { class: "where" });
    actions.push(
      actionButton(
        "Where can it go?",
        async () => {
          if (where.childElementCount) return fill(where);
          fill(where, await verdicts(project, entry, stages));
        },
        "small",
      ),
    );
  }
  return h(
    "li",
    { class: "freight-row", dataset: { freight: entry.name, alias: entry.alias ?? "" } },
    h("div", { class: "head" }, h("strong", null, shown(entry)), h("span", { class: "muted" }, ago(entry.time)), h("span", { class: "row-actions" }, actions)),
    artifacts(entry),
    places.length ? h("div", { class: "places" }, places) : null,
    why,
    where,
  );
}

/// Which of `stages` may take Freight `entry` now, and why not (`dray explain`), each.
async function verdicts(project, entry, stages) {
  const shownStages = stages.slice(0, 50);
  const answers = await Promise.all(
    shownStages.map((stage) =>
      get(`${p(project)}/stages/${seg(stage)}/freight/${seg(entry.name)}`).catch((e) => ({ error: e.message })),
    ),
  );
  return h(
    "ul",
    { class: "verdicts" },
    answers.map((a, i) => {
      const stage = shownStages[i];
      const verdict = a.error ? a.error : a.inStage ? "holds it now" : a.available ? "may take it" : (a.reasons?.[0] ?? "may not take it");
      const cls = a.inStage || a.available ? "ok" : "no";
      return h("li", { class: cls, dataset: { stage } }, h("strong", null, stage), ": ", verdict);
    }),
    stages.length > shownStages.length ? h("li", { class: "muted" }, `and ${stages.length - shownStages.length} more Stages`) : null,
  );
}

/// A Warehouse's Freight, newest first, a page at a time.
function timeline(project, warehouse, node, stages) {
  const list = h("ol", { class: "timeline" });
  const more = h("button", { class: "quiet", hidden: true }, "Older Freight…");
  let skip = 0;
  const load = async () => {
    const query = new URLSearchParams({ warehouse, skip, limit: node ? 10 : 25 });
    if (node) query.set("stage", node.name);
    const page = await get(`${p(project)}/timeline?${query}`);
    for (const entry of page.items) list.appendChild(freightRow(project, entry, node, stages));
    skip += page.items.length;
    more.hidden = !page.more;
    if (skip === 0) list.appendChild(h("li", { class: "muted" }, "No Freight yet."));
  };
  more.addEventListener("click", () => load().catch(failed));
  load().catch(failed);
  return h("div", null, list, more);
}

/// The panel of Stage `node` (a graph node).
export function stagePanel(project, node) {
  const s = node.stage;
  const rows = [];
  const row = (label, ...value) => rows.push(h("dt", null, label), h("dd", null, ...value));
  row("State", h("span", { class: `state ${s.state}` }, s.state));
  if (s.promotion) row("Promoting", link(`#/projects/${seg(project)}/promotions/${seg(s.promotion)}`, s.promotion));
  if (s.lastPromotion) {
    row(
      "Last promotion",
      link(`#/projects/${seg(project)}/promotions/${seg(s.lastPromotion.name)}`, s.lastPromotion.phase),
      s.lastPromotion.message ? h("span", { class: "muted" }, ` ${s.lastPromotion.message}`) : null,
    );
  }
  if (s.verification) {
    row("Verification", link(`#/projects/${seg(project)}/analysisruns/${seg(s.verification.run)}`, s.verification.phase));
  }
  if (s.health) row("Health", s.health);
  row("Auto-promotion", s.autoPromotion ? "on" : "off");
  if (s.controlFlow) row("Steps", "none (passes Freight on)");

  const actions = [];
  if (s.promotion) {
    actions.push(
      actionButton("Abort promotion", async () => {
        if (!(await confirmDialog(`Abort ${s.promotion}?`, h("p", null, "The running step is stopped and the Promotion ends Aborted."), "Abort"))) return;
        await post(`${p(project)}/promotions/${seg(s.promotion)}/abort`);
        toast("Promotion aborted");
      }),
    );
  }
  if (s.state === "verifying") {
    actions.push(
      actionButton("Abort verification", async () => {
        await post(`${p(project)}/stages/${seg(node.name)}/verification/abort`);
        toast("Verification aborted");
      }),
    );
  } else if (node.freight.length) {
    actions.push(
      actionButton("Verify again", async () => {
        const run = await post(`${p(project)}/stages/${seg(node.name)}/verification`);
        toast(`Verification ${run?.analysisRun ?? ""} started`);
      }),
    );
  }

  return h(
    "div",
    { class: "panel-body" },
    h("p", { class: "kind" }, "Stage"),
    h("h2", null, node.name),
    h("h3", null, "Holds"),
    node.freight.length
      ? h("ul", { class: "held" }, node.freight.map((f) => h("li", null, h("strong", null, shown(f)), h("span", { class: "muted" }, ` from ${f.origin}`), artifacts(f))))
      : h("p", { class: "muted" }, "Nothing yet."),
    h("dl", { class: "facts" }, rows),
    actions.length ? h("div", { class: "actions" }, actions) : null,
    s.origins.map((w) => [h("h3", null, `Freight from ${w}`), timeline(project, w, node)]),
  );
}

/// The panel of Warehouse `node`: its subscriptions and its Freight; `stages`, the Stages that
/// take its Freight.
export function warehousePanel(project, node, stages) {
  return h(
    "div",
    { class: "panel-body" },
    h("p", { class: "kind" }, "Warehouse"),
    h("h2", null, node.name),
    h("ul", { class: "subs" }, node.subscriptions.map((s) => h("li", null, h("code", null, s)))),
    h(
      "div",
      { class: "actions" },
      actionButton("Refresh", async () => {
        await post(`${p(project)}/warehouses/${seg(node.name)}/refresh`);
        toast(`Looking for new artifacts for ${node.name}`);
      }),
    ),
    h("h3", null, "Freight, newest first"),
    timeline(project, node.name, null, stages),
  );
}

/// A log, read whole and then followed while its run goes on.
function logView(path, live) {
  const box = h("ol", { class: "log", "aria-label": "Log", tabindex: "0" });
  const abort = new AbortController();
  const add = (entry) => {
    const stick = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
    box.appendChild(
      h(
        "li",
        { class: `level-${entry.level ?? "info"}` },
        h("span", { class: "time" }, (entry.time ?? "").slice(11, 23)),
        entry.step ? h("span", { class: "step" }, entry.step) : null,
        h("span", { class: "message" }, entry.message ?? ""),
        (entry.fields ?? []).map(([k, v]) => h("span", { class: "field" }, `${k}=${v}`)),
      ),
    );
    if (stick) box.scrollTop = box.scrollHeight;
  };
  readLog(path, live, add, abort.signal)
    .then(() => {
      if (!box.children.length) box.appendChild(h("li", { class: "muted" }, "No log lines."));
    })
    .catch((e) => box.appendChild(h("li", { class: "level-error" }, `The log cannot be read: ${e.message}`)));
  return { el: box, stop: () => abort.abort() };
}

function ended(phase) {
  return ["Succeeded", "Failed", "Errored", "Aborted", "Discarded", "Successful", "Error", "Inconclusive"].includes(phase);
}

/// Shows `status`'s phase in `badge` and its message in `message`.
function showPhase(badge, message, status) {
  const phase = status?.phase ?? "Pending";
  fill(badge, phase);
  badge.className = `state phase-${phase.toLowerCase()}`;
  fill(message, status?.message ?? "");
}

/// The page of a run (a Promotion or a verification, `kind` its resource kind) at `path`:
/// read, drawn with `draw(object)`, laid out once with `layout(object, logElement)`, and while
/// it has not ended, followed on the project's watch stream with its log. Returns what stops it.
async function runPage(root, project, kind, path, name, draw, layout) {
  let object = await get(path);
  const redraw = (fresh) => {
    object = fresh;
    draw(object);
  };
  redraw(object);
  const live = !ended(object.status?.phase);
  const log = logView(`${path}/logs`, live);
  const stop = live
    ? watch(
        project,
        undefined,
        async (change) => {
          if (change && !(change.object?.kind === kind && change.object?.metadata?.name === name)) return;
          redraw(change?.object ?? (await get(path)));
        },
        // Read again once the stream is open: a change made before it is not missed.
        () => get(path).then(redraw, () => {}),
      )
    : () => {};
  fill(root, layout(object, log.el));
  return () => {
    stop();
    log.stop();
  };
}

/// A Promotion's page: its steps with status, timings and messages, its log and outputs, live.
export function promotionPage(root, project, name) {
  const steps = h("tbody");
  const phase = h("span", { class: "state" });
  const message = h("p", { class: "message" });
  const outputs = h("pre", { class: "outputs" });
  const draw = (promotion) => {
    const st = promotion.status ?? {};
    showPhase(phase, message, st);
    const metas = st.stepExecutionMetadata ?? [];
    const specs = promotion.spec?.steps ?? [];
    fill(
      steps,
      specs.map((step, i) => {
        const m = metas[i] ?? {};
        return h(
          "tr",
          { class: `step-${(m.status ?? "pending").toLowerCase()}` },
          h("td", null, String(i + 1)),
          h("td", null, h("strong", null, step.as ?? m.alias ?? `step-${i + 1}`), h("span", { class: "muted" }, ` ${step.uses ?? (step.task ? `task ${step.task.name}` : "")}`)),
          h("td", null, m.status ?? "Pending"),
          h("td", null, m.startedAt ? took(m.startedAt, m.finishedAt) : ""),
          h("td", { class: "muted" }, m.message ?? ""),
        );
      }),
    );
    fill(outputs, st.state ? JSON.stringify(st.state, null, 2) : "none yet");
  };
  const layout = (promotion, log) => {
    const freight = promotion.status?.freightCollection?.items ?? [];
    const actor = promotion.metadata?.annotations?.["kargo.akuity.io/create-actor"];
    return h(
      "article",
      { class: "page" },
      h("p", { class: "kind" }, "Promotion"),
      h("h1", null, name),
      h(
        "p",
        null,
        "Stage ",
        link(`#/projects/${seg(project)}/stages/${seg(promotion.spec?.stage ?? "")}`, promotion.spec?.stage ?? ""),
        " · Freight ",
        h("strong", null, freight.map(shown).join(", ") || promotion.spec?.freight || ""),
        " · ",
        phase,
        actor ? h("span", { class: "muted" }, ` by ${actor}`) : null,
      ),
      message,
      h(
        "table",
        { class: "steps" },
        h("thead", null, h("tr", null, ["#", "Step", "Status", "Took", "Message"].map((c) => h("th", { scope: "col" }, c)))),
        steps,
      ),
      h("h2", null, "Log"),
      log,
      h("h2", null, "Outputs"),
      outputs,
    );
  };
  return runPage(root, project, "Promotion", `${p(project)}/promotions/${seg(name)}`, name, draw, layout);
}

/// A verification's page: its phase, its measurements and its log, live.
export function verificationPage(root, project, name) {
  const phase = h("span", { class: "state" });
  const metrics = h("tbody");
  const message = h("p", { class: "message" });
  const draw = (run) => {
    const st = run.status ?? {};
    showPhase(phase, message, st);
    fill(
      metrics,
      (st.metricResults ?? []).map((m) =>
        h(
          "tr",
          null,
          h("td", null, m.name),
          h("td", null, m.phase ?? ""),
          h("td", null, `${m.successful ?? 0} ok · ${m.failed ?? 0} failed · ${m.inconclusive ?? 0} inconclusive · ${m.error ?? 0} errors`),
          h("td", { class: "muted" }, (m.measurements ?? []).slice(-1)[0]?.value ?? ""),
        ),
      ),
    );
  };
  const layout = (run, log) => {
    const stage = run.metadata?.labels?.["kargo.akuity.io/stage"] ?? "";
    return h(
      "article",
      { class: "page" },
      h("p", { class: "kind" }, "Verification"),
      h("h1", null, name),
      h("p", null, "Stage ", link(`#/projects/${seg(project)}/stages/${seg(stage)}`, stage), " · ", phase),
      message,
      h(
        "table",
        { class: "steps" },
        h("thead", null, h("tr", null, ["Metric", "Phase", "Measurements", "Last value"].map((c) => h("th", { scope: "col" }, c)))),
        metrics,
      ),
      h("h2", null, "Log"),
      log,
    );
  };
  return runPage(root, project, "AnalysisRun", `${p(project)}/analysisruns/${seg(name)}`, name, draw, layout);
}
