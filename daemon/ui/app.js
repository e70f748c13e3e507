// Dray's web UI: sign-in, projects, a project's pipeline (graph or list) with the panel of the
// Stage or Warehouse selected, and the pages of Promotions and verifications. The address
// says what is shown (`#/projects/P/stages/S`), so every view can be linked and reloaded.

import { ApiError, accepts, get, onUnauthorized, seg, signInConfig, signInStep, token } from "./api.js";
import { fill, h, toast } from "./dom.js";
import { Pipeline } from "./pipeline.js";
import { promotionPage, stagePanel, verificationPage, warehousePanel } from "./panels.js";

const main = document.getElementById("main");
const crumbs = document.getElementById("crumbs");
const tools = document.getElementById("tools");
const signOut = document.getElementById("sign-out");
const who = document.getElementById("who");

let pipeline = null; // the open project's Pipeline, kept while only the panel changes
let leave = () => {}; // stops what the current page follows
let route = 0; // bumps on each navigation, so a slow page does not draw over a newer one

function crumb(...parts) {
  fill(
    crumbs,
    parts.map((part, i) => [i ? h("span", { class: "sep", "aria-hidden": "true" }, "/") : null, part.href ? h("a", { href: part.href }, part.text) : h("span", { "aria-current": "page" }, part.text)]),
  );
}

let signingIn = null; // stops the OpenID Connect sign-in being polled, if one is

function signIn(message) {
  token.clear();
  pipeline?.close();
  pipeline = null;
  leave();
  leave = () => {};
  signingIn?.();
  signOut.hidden = true;
  fill(who);
  fill(tools);
  crumb({ text: "Sign in" });
  const input = h("input", { id: "token", type: "password", autocomplete: "current-password", required: true, spellcheck: "false" });
  const error = h("p", { class: "error", role: "alert" }, message ?? "");
  const person = h("div", { class: "person" });
  const form = h(
    "form",
    { class: "sign-in" },
    h("h1", null, "Sign in to Dray"),
    person,
    h("p", null, "Paste an API token: the daemon's own (in its data dir's ", h("code", null, "token"), " file) or one made with ", h("code", null, "dray token create"), "."),
    h("label", { for: "token" }, "API token"),
    input,
    error,
    h("button", { class: "primary", type: "submit" }, "Sign in"),
  );
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const candidate = input.value.trim();
    try {
      if (await accepts(candidate)) {
        token.set(candidate);
        return show();
      }
      fill(error, "That token was refused: check it and try again.");
    } catch (err) {
      fill(error, err.message);
    }
    input.focus();
  });
  fill(main, form);
  input.focus();
  signInConfig()
    .then((oidc) => {
      if (oidc && form.isConnected) offerPersonSignIn(person, error, oidc);
    })
    .catch(() => {});
}

/// A web address the page may link to (the daemon checked it too): http or https only.
function webAddress(uri) {
  try {
    return ["https:", "http:"].includes(new URL(uri).protocol) ? uri : null;
  } catch {
    return null;
  }
}

/// The sign-in of people with the daemon's OpenID Connect provider: the daemon starts a device
/// sign-in, the page shows the code and the provider's address (open it here or on any
/// device), and asks the daemon every few seconds whether the person has signed in.
function offerPersonSignIn(person, error, oidc) {
  let host = oidc.issuerURL;
  try {
    host = new URL(oidc.issuerURL).host;
  } catch {
    // Shown as configured.
  }
  const start = h("button", { class: "primary", type: "button", id: "sign-in-oidc" }, `Sign in with ${host}`);
  fill(person, start, h("p", { class: "or" }, "or"));
  // People sign in with the provider; the API token is the way for the others.
  person.parentElement?.querySelector("button[type=submit]")?.classList.remove("primary");
  if (document.activeElement?.id === "token" && !document.getElementById("token").value) start.focus();
  start.addEventListener("click", async () => {
    start.disabled = true;
    fill(error);
    let started;
    try {
      started = await signInStep("/auth/device");
    } catch (e) {
      start.disabled = false;
      return fill(error, e.message);
    }
    const link = webAddress(started.verificationURIComplete) ?? webAddress(started.verificationURI);
    if (!link) {
      start.disabled = false;
      return fill(error, "The provider named a sign-in page that is not a web address.");
    }
    const cancel = h("button", { type: "button", class: "quiet" }, "Cancel");
    fill(
      person,
      h("p", null, "Open ", h("a", { href: link, target: "_blank", rel: "noopener noreferrer", id: "sign-in-link" }, webAddress(started.verificationURI) ?? link), " (here or on any device) and enter this code:"),
      h("p", { class: "user-code", id: "user-code" }, started.userCode),
      h("p", { class: "waiting", role: "status" }, "Waiting for you to sign in there…"),
      cancel,
      h("p", { class: "or" }, "or"),
    );
    let stopped = false;
    let timer = null;
    const stop = () => {
      stopped = true;
      clearTimeout(timer);
      signingIn = null;
    };
    signingIn = stop;
    cancel.addEventListener("click", () => {
      stop();
      offerPersonSignIn(person, error, oidc);
    });
    let interval = Math.max(1, started.interval ?? 5) * 1000;
    const deadline = Date.now() + (started.expiresIn ?? 600) * 1000;
    const ask = async () => {
      if (stopped || !person.isConnected) return stop();
      if (Date.now() > deadline) {
        stop();
        offerPersonSignIn(person, error, oidc);
        return fill(error, "The code expired before you signed in: start again.");
      }
      try {
        const answer = await signInStep("/auth/device/token", { deviceCode: started.deviceCode });
        if (stopped) return;
        if (answer.status === "signed-in") {
          stop();
          if (!(await accepts(answer.idToken))) {
            offerPersonSignIn(person, error, oidc);
            return fill(error, "The daemon refused the sign-in: ask its administrator about its [oidc] settings.");
          }
          token.set(answer.idToken, answer.refreshToken);
          return show();
        }
        if (answer.status === "slow-down") interval += 5000;
      } catch (e) {
        if (stopped) return;
        // Asked too often (all pages together): wait longer. Anything else ends this sign-in.
        if (e.status !== 429) {
          stop();
          offerPersonSignIn(person, error, oidc);
          return fill(error, e.message);
        }
        interval = Math.min(interval * 2, 60000);
      }
      timer = setTimeout(ask, interval);
    };
    timer = setTimeout(ask, interval);
  });
}

onUnauthorized((message) => signIn(message ?? "Your token was refused (revoked or expired): sign in again."));

signOut.addEventListener("click", () => signIn("Signed out."));

const plural = (n, one) => `${n} ${one}${n === 1 ? "" : "s"}`;

/// A project at a glance (its `status.stats`): its Stages by state and its Warehouses, what
/// needs a look first.
function glance(stats) {
  if (!stats) return null;
  const order = ["failed", "promoting", "verifying", "verified", "steady", "empty"];
  const states = stats.stages?.states ?? {};
  const unhealthy = (stats.warehouses?.count ?? 0) - (stats.warehouses?.health?.healthy ?? 0);
  return h(
    "span",
    { class: "glance" },
    h("span", null, `${plural(stats.stages?.count ?? 0, "Stage")} · ${plural(stats.warehouses?.count ?? 0, "Warehouse")}`),
    h(
      "span",
      { class: "states" },
      order.filter((s) => states[s]).map((s) => h("span", { class: `state ${s}` }, `${states[s]} ${s}`)),
      unhealthy ? h("span", { class: "state failed" }, `discovery failing in ${plural(unhealthy, "Warehouse")}`) : null,
    ),
  );
}

async function projects() {
  crumb({ text: "Projects" });
  fill(tools);
  const list = await get("/v1/projects");
  const items = list.items ?? [];
  fill(
    main,
    h(
      "section",
      { class: "page" },
      h("h1", null, "Projects"),
      items.length
        ? h(
            "ul",
            { class: "projects" },
            items.map((p) => h("li", null, h("a", { href: `#/projects/${seg(p.metadata.name)}`, dataset: { name: p.metadata.name } }, h("span", { class: "name" }, p.metadata.name), glance(p.status?.stats)))),
          )
        : h("p", { class: "muted" }, "No projects yet: apply one with `dray apply -f`, or run `dray demo`."),
    ),
  );
}

/// The pipeline of `project`, in `mode`, with the panel of `selected` ({kind, name}) open.
async function project(name, mode, selected) {
  const href = `#/projects/${seg(name)}`;
  crumb({ text: "Projects", href: "#/" }, { text: name, href });
  if (!pipeline || pipeline.project !== name) {
    pipeline?.close();
    pipeline = new Pipeline(name, (kind, n) => {
      location.hash = `${href}/${kind === "Stage" ? "stages" : "warehouses"}/${seg(n)}${pipeline.mode === "list" ? "?list" : ""}`;
    });
    await pipeline.open();
  }
  const p = pipeline;
  if (p.mode !== mode) p.setMode(mode);
  p.select(selected?.kind, selected?.name);

  const search = h("input", { type: "search", placeholder: "Find a Stage, Freight or image…", "aria-label": "Find", value: p.query });
  search.addEventListener("input", () => p.setQuery(search.value));
  search.addEventListener("keydown", (e) => {
    if (e.key === "Enter") p.reveal();
  });
  const toggle = (m, label) =>
    h(
      "button",
      {
        class: mode === m ? "quiet active" : "quiet",
        "aria-pressed": String(mode === m),
        onclick: () => {
          const suffix = location.hash.replace(/\?list$/, "");
          location.hash = m === "list" ? `${suffix}?list` : suffix;
        },
      },
      label,
    );
  fill(tools, search, h("div", { class: "toggle", role: "group", "aria-label": "View" }, toggle("graph", "Graph"), toggle("list", "List")));

  // The workspace stays in the page while only the panel changes, so the graph keeps its
  // scroll position.
  if (!p.panel) p.panel = h("aside", { class: "panel", "aria-label": "Details" });
  const panel = p.panel;
  const draw = () => {
    const node = selected && p.node(selected.kind, selected.name);
    if (!node) {
      panel.hidden = true;
      return;
    }
    panel.hidden = false;
    const close = h("button", { class: "close quiet", "aria-label": "Close", onclick: () => (location.hash = `${href}${mode === "list" ? "?list" : ""}`) }, "×");
    const takers = () => p.graph.nodes.filter((n) => n.stage?.origins.includes(node.name)).sort((a, b) => a.column - b.column || a.row - b.row).map((n) => n.name);
    fill(panel, close, node.kind === "Stage" ? stagePanel(name, node) : warehousePanel(name, node, takers()));
  };
  draw();
  // A change that touches the open Stage or Warehouse redraws its panel.
  let last = JSON.stringify(selected && p.node(selected.kind, selected.name));
  p.onRefresh = () => {
    const now = JSON.stringify(selected && p.node(selected.kind, selected.name));
    if (now !== last) {
      last = now;
      draw();
    }
  };
  if (p.root.parentElement?.parentElement !== main) fill(main, h("div", { class: "workspace" }, p.root, panel));
  if (selected) panel.querySelector("h2")?.setAttribute("tabindex", "-1");
}

async function show() {
  const mine = ++route;
  leave();
  leave = () => {};
  if (!token.get()) return signIn();
  signOut.hidden = false;
  if (!who.textContent) {
    get("/v1/whoami")
      .then((me) => fill(who, (me.actor ?? "").replace(/^email:/, "")).setAttribute("title", me.summary ?? ""))
      .catch(() => {});
  }
  const [path, query] = location.hash.replace(/^#/, "").split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  const list = query === "list" ? "list" : "graph";
  try {
    if (parts.length === 0) {
      pipeline?.close();
      pipeline = null;
      return await projects();
    }
    if (parts[0] !== "projects" || !parts[1]) throw new ApiError(404, `Nothing is at ${location.hash}.`);
    const name = parts[1];
    if (parts.length === 2) return await project(name, list);
    if (parts[2] === "stages" && parts[3]) return await project(name, list, { kind: "Stage", name: parts[3] });
    if (parts[2] === "warehouses" && parts[3]) return await project(name, list, { kind: "Warehouse", name: parts[3] });
    if ((parts[2] === "promotions" || parts[2] === "analysisruns") && parts[3]) {
      pipeline?.close();
      pipeline = null;
      fill(tools);
      const kind = parts[2] === "promotions" ? "Promotion" : "Verification";
      crumb({ text: "Projects", href: "#/" }, { text: name, href: `#/projects/${seg(name)}` }, { text: `${kind} ${parts[3]}` });
      const stop = await (parts[2] === "promotions" ? promotionPage : verificationPage)(main, name, parts[3]);
      if (mine === route) leave = stop;
      else stop();
      return;
    }
    throw new ApiError(404, `Nothing is at ${location.hash}.`);
  } catch (e) {
    if (e instanceof ApiError && e.status === 401) return;
    fill(main, h("section", { class: "page" }, h("h1", null, "Cannot show this"), h("p", { class: "error", role: "alert" }, e.message), h("p", null, h("a", { href: "#/" }, "Back to the projects"))));
    toast(e.message, "error");
  }
}

window.addEventListener("hashchange", show);
show();
