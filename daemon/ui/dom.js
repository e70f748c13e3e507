// Building the page: elements are made with `h`, text always as text (never parsed as HTML),
// so nothing a Stage, a Freight or a log line holds can run in the page.

/// `h("div", {class: "x", onclick: f}, "text", child, [more])`: an element.
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs ?? {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(key, "");
    } else {
      el.setAttribute(key, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else if (child instanceof Node) el.appendChild(child);
    else el.appendChild(document.createTextNode(String(child)));
  }
}

/// Replaces the children of `el`.
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/// "3 min ago", from an RFC 3339 time.
export function ago(time) {
  const t = Date.parse(time ?? "");
  if (Number.isNaN(t)) return "";
  const s = Math.max(0, Math.round((Date.now() - t) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}

/// "1.2 s", between two RFC 3339 times (to now when `end` is missing).
export function took(start, end) {
  const a = Date.parse(start ?? "");
  if (Number.isNaN(a)) return "";
  const b = end ? Date.parse(end) : Date.now();
  const ms = Math.max(0, b - a);
  if (ms < 1000) return `${ms} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} min ${Math.round((ms % 60000) / 1000)} s`;
}

/// A Freight's name as people use it.
export const shown = (f) => f?.alias || f?.name?.slice(0, 12) || "";

/// A short toast at the bottom of the page.
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast ${kind}` }, message);
  box.appendChild(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

/// Asks for confirmation in a modal dialog; resolves to true when confirmed.
export function confirmDialog(title, body, action) {
  return new Promise((resolve) => {
    const dialog = h(
      "dialog",
      { class: "confirm", "aria-labelledby": "confirm-title" },
      h("h2", { id: "confirm-title" }, title),
      body,
      h(
        "form",
        { method: "dialog", class: "actions" },
        h("button", { value: "cancel", class: "quiet" }, "Cancel"),
        h("button", { value: "ok", class: "primary", autofocus: true }, action),
      ),
    );
    dialog.addEventListener("close", () => {
      resolve(dialog.returnValue === "ok");
      dialog.remove();
    });
    document.body.appendChild(dialog);
    dialog.showModal();
  });
}
