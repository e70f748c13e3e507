// The daemon's API as the UI calls it: the bearer token on every request, errors as
// ApiError with the daemon's own message, the watch stream and followed logs read with fetch
// (EventSource cannot send a token).

const KEY = "dray.token";
const REFRESH = "dray.refresh";

/// The page's bearer token: an API token, or a person's ID token from the OpenID Connect
/// sign-in (with its refresh token, to get a new one before it expires).
export const token = {
  get: () => localStorage.getItem(KEY) ?? "",
  set: (t, refresh) => {
    localStorage.setItem(KEY, t);
    if (refresh) localStorage.setItem(REFRESH, refresh);
    else localStorage.removeItem(REFRESH);
  },
  clear: () => {
    localStorage.removeItem(KEY);
    localStorage.removeItem(REFRESH);
  },
};

/// Whether the ID token `t` is to be refreshed: within a minute of its expiry, or past half
/// its life when it lives less than two (its `exp` and `iat`, read without checking: the
/// daemon checks). Never for an API token.
function dueForRefresh(t) {
  if (!t.startsWith("eyJ")) return false;
  try {
    const part = t.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const { exp, iat } = JSON.parse(atob(part));
    if (typeof exp !== "number") return false;
    const life = typeof iat === "number" ? exp - iat : 120;
    return exp - Date.now() / 1000 < Math.min(60, life / 2);
  } catch {
    return false;
  }
}

let refreshing = null; // the refresh under way, shared by the requests that wait for it

/// The bearer token to send: an ID token about to expire is refreshed first, once for all
/// the requests that need it. A refused refresh leaves the old token,
/// which the daemon takes while it is valid and refuses after (then the page signs in again).
async function bearer() {
  const current = token.get();
  const refresh = localStorage.getItem(REFRESH);
  if (!refresh || !dueForRefresh(current)) return current;
  refreshing ??= (async () => {
    try {
      const res = await fetch("/auth/refresh", {
        method: "POST",
        headers: { "Content-Type": "application/json" },
        body: JSON.stringify({ refreshToken: refresh }),
      });
      const data = await res.json().catch(() => null);
      if (res.ok && data?.idToken && token.get() === current) token.set(data.idToken, data.refreshToken ?? refresh);
    } catch {
      // The daemon is unreachable: the request that follows says so.
    } finally {
      refreshing = null;
    }
  })();
  await refreshing;
  return token.get();
}

/// How the daemon signs people in: `{issuerURL, clientID}` of its OpenID Connect provider,
/// or null (API tokens only).
export async function signInConfig() {
  const res = await fetch("/auth/config");
  if (!res.ok) return null;
  return (await res.json().catch(() => null))?.oidc ?? null;
}

/// POSTs `body` to one of the daemon's sign-in routes (`/auth/...`), which take no token.
export async function signInStep(path, body) {
  let res;
  try {
    res = await fetch(path, { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body ?? {}) });
  } catch (e) {
    throw new ApiError(0, `the daemon cannot be reached (${e.message})`);
  }
  const data = await res.json().catch(() => null);
  if (!res.ok) throw new ApiError(res.status, data?.message ?? `${res.status} ${res.statusText}`, data?.code);
  return data;
}

export class ApiError extends Error {
  constructor(status, message, code) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

let unauthorized = () => {};
/// What to do when the daemon refuses the token (sign in again).
export function onUnauthorized(f) {
  unauthorized = f;
}

async function headers(extra) {
  return { Authorization: `Bearer ${await bearer()}`, ...extra };
}

async function call(method, path, body) {
  const init = { method, headers: await headers() };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, init);
  } catch (e) {
    throw new ApiError(0, `the daemon cannot be reached (${e.message})`);
  }
  const text = await res.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  if (res.status === 401) unauthorized(data?.message);
  if (!res.ok) throw new ApiError(res.status, data?.message ?? `${res.status} ${res.statusText}`);
  return data;
}

/// Whether the daemon takes `candidate` as a token (without signing anyone out).
export async function accepts(candidate) {
  const res = await fetch("/v1/whoami", { headers: { Authorization: `Bearer ${candidate}` } });
  if (res.ok) return true;
  if (res.status === 401) return false;
  const data = await res.json().catch(() => null);
  throw new ApiError(res.status, data?.message ?? `${res.status} ${res.statusText}`);
}

export const get = (path) => call("GET", path);
export const post = (path, body) => call("POST", path, body ?? {});

/// A path segment, escaped.
export const seg = (s) => encodeURIComponent(s);

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/// Reads `res`'s body line by line.
async function* lines(res, signal) {
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  signal?.addEventListener("abort", () => reader.cancel().catch(() => {}));
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += value;
    let at;
    while ((at = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, at).replace(/\r$/, "");
      buffer = buffer.slice(at + 1);
    }
  }
  if (buffer) yield buffer;
}

/// Follows the changes of `project` after sequence `since` (`GET /v1/watch`, Server-Sent
/// Events), calling `onChange({type, object})` for each, and `onChange(null)` when changes
/// were missed (the stream was cut for longer than the daemon keeps them): read everything
/// again then. Reconnects by itself, and calls `onOpen()` each time the stream is open (from
/// then on no change is missed). Returns a function that stops it.
///
/// A browser opens at most 6 connections to one server over HTTP/1.1, and a stream holds one
/// for as long as it runs: so the stream is closed while the page is hidden (another tab, a
/// minimized window, a page left for another) and opened again from where it stood when the
/// page is shown. Nothing is missed.
export function watch(project, since, onChange, onOpen) {
  let stopped = false;
  let current = null; // the running request's AbortController
  let wake = null; // resolves the wait of a paused stream
  let after = since;
  let paused = document.hidden;
  const hidden = () => {
    paused = true;
    current?.abort();
  };
  const shown = () => {
    paused = false;
    wake?.();
  };
  const onVisibility = () => (document.hidden ? hidden() : shown());
  document.addEventListener("visibilitychange", onVisibility);
  window.addEventListener("pagehide", hidden);
  window.addEventListener("pageshow", shown);
  (async () => {
    let wait = 500;
    while (!stopped) {
      if (paused) {
        await new Promise((resolve) => (wake = resolve));
        wake = null;
        continue;
      }
      current = new AbortController();
      const signal = current.signal;
      try {
        const query = new URLSearchParams({ project });
        if (after !== undefined && after !== null) query.set("since", after);
        const res = await fetch(`/v1/watch?${query}`, { headers: await headers(), signal });
        if (res.status === 401) return unauthorized();
        if (res.status === 410) {
          after = undefined;
          onChange(null);
          continue;
        }
        if (!res.ok) throw new Error(`watch: ${res.status}`);
        wait = 500;
        onOpen?.();
        let event = {};
        for await (const line of lines(res, signal)) {
          if (line === "") {
            if (event.data !== undefined) {
              if (event.id) after = event.id;
              try {
                onChange({ type: event.event, object: JSON.parse(event.data) });
              } catch (e) {
                console.warn("watch: an event that is not JSON", e);
              }
            }
            event = {};
          } else if (!line.startsWith(":")) {
            const colon = line.indexOf(":");
            const field = colon < 0 ? line : line.slice(0, colon);
            let value = colon < 0 ? "" : line.slice(colon + 1);
            if (value.startsWith(" ")) value = value.slice(1);
            event[field] = field === "data" && event.data !== undefined ? `${event.data}\n${value}` : value;
          }
        }
      } catch {
        // Cut (by the network, the daemon, or the page being hidden): go on below.
      }
      if (stopped || signal.aborted) continue;
      await sleep(wait);
      wait = Math.min(wait * 2, 10000);
    }
  })();
  return () => {
    stopped = true;
    current?.abort();
    wake?.();
    document.removeEventListener("visibilitychange", onVisibility);
    window.removeEventListener("pagehide", hidden);
    window.removeEventListener("pageshow", shown);
  };
}

/// Reads a log (newline-delimited JSON), following it live while `follow`; calls `onLine`
/// for each entry. Resolves when the log ends (or `signal` aborts).
export async function readLog(path, follow, onLine, signal) {
  // A followed log holds a connection: let it go with the page.
  const leave = new AbortController();
  signal?.addEventListener("abort", () => leave.abort());
  window.addEventListener("pagehide", () => leave.abort(), { once: true });
  signal = leave.signal;
  const res = await fetch(`${path}${follow ? "?follow=true" : ""}`, { headers: await headers(), signal });
  if (res.status === 401) unauthorized();
  if (!res.ok) {
    const data = await res.json().catch(() => null);
    throw new ApiError(res.status, data?.message ?? `${res.status}`);
  }
  try {
    for await (const line of lines(res, signal)) {
      if (!line.trim()) continue;
      try {
        onLine(JSON.parse(line));
      } catch {
        onLine({ message: line });
      }
    }
  } catch (e) {
    if (!signal?.aborted) throw e;
  }
}
