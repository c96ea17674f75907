// Shared by every page: the API client and the DOM builders.
//
// The client rides the browser's session cookie (HttpOnly, so no script here
// ever sees it) and sends the session's CSRF token on every change. The DOM
// builders never parse markup: whatever a record holds (a patch, a test name,
// a description written by the change under test) becomes a text node.

export const session = { me: null };

export class ApiError extends Error {
  constructor(status, body) {
    super(body && body.message ? body.message : `HTTP ${status}`);
    this.status = status;
    this.reason = (body && body.reason) || "";
  }
}

const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

/** fetch under /api/v1; JSON back (or the Response itself with raw). A 401 signs the UI out. */
export async function api(path, { method = "GET", body, signal, raw = false } = {}) {
  const headers = { Accept: raw ? "text/plain" : "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (UNSAFE.has(method) && session.me && session.me.csrfToken) headers["X-CSRF-Token"] = session.me.csrfToken;
  const response = await fetch(`/api/v1/${path}`, {
    method, headers, signal, credentials: "same-origin", cache: "no-store",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) {
    let status = null;
    try { status = await response.json(); } catch { /* not a Status object */ }
    if (response.status === 401 && path !== "session") window.dispatchEvent(new Event("genesis:signed-out"));
    throw new ApiError(response.status, status);
  }
  return raw ? response : response.json();
}

/** The experiment's path segment, safe whatever its name holds. */
export const enc = encodeURIComponent;

function fill(el, children) {
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return el;
}

function attrs(el, given) {
  for (const [key, value] of Object.entries(given || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on")) el.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(el.dataset, value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  return el;
}

/** An HTML element: h("td", {class: "x"}, "text", child...). Strings become text nodes. */
export function h(tag, given, ...children) {
  return fill(attrs(document.createElement(tag), given), children);
}

const SVG = "http://www.w3.org/2000/svg";

/** An SVG element, as h. */
export function s(tag, given, ...children) {
  return fill(attrs(document.createElementNS(SVG, tag), given), children);
}

/** A table: headers, then rows of cells (text or nodes; a cell may be a ready <td>). */
export function table(headers, rows, { cls = "grid", empty = "None." } = {}) {
  if (!rows.length) return h("p", { class: "muted empty" }, empty);
  return h("table", { class: cls },
    h("thead", null, h("tr", null, headers.map((name) => h("th", null, name)))),
    h("tbody", null, rows.map((row) => h("tr", null, row.map(cell)))));
}

export function cell(value) {
  return value instanceof HTMLTableCellElement ? value : h("td", null, value);
}

/** A class-safe token of an enum value (the phase, a recommendation). */
export function token(value) {
  return String(value || "none").replace(/[^A-Za-z0-9_-]/g, "");
}

export function badge(value, kind) {
  return h("span", { class: `badge ${kind}-${token(value)}` }, value || "<none>");
}

/** kubectl's AGE: 42s, 7m, 3h, 12d. */
export function age(iso, now = Date.now()) {
  if (!iso) return "-";
  const seconds = Math.max(0, Math.floor((now - Date.parse(iso)) / 1000));
  if (seconds < 120) return `${seconds}s`;
  if (seconds < 7200) return `${Math.floor(seconds / 60)}m`;
  if (seconds < 172800) return `${Math.floor(seconds / 3600)}h`;
  return `${Math.floor(seconds / 86400)}d`;
}

/** A time as its age, with the exact time on hover. */
export function when(iso) {
  return h("time", { datetime: iso || "", title: iso || "" }, iso ? age(iso) : "-");
}

export function fmt(value) {
  if (value === null || value === undefined || value === "") return "-";
  if (typeof value === "number" && !Number.isInteger(value)) return String(Number(value.toPrecision(4)));
  return String(value);
}

export function pct(value) {
  return typeof value === "number" ? `${(value * 100).toFixed(1)}%` : "-";
}

export function bytes(value) {
  if (typeof value !== "number") return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let n = value, i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
  return `${n.toFixed(i ? 1 : 0)} ${units[i]}`;
}

/** A failure shown where the content would have been. */
export function problem(error) {
  const reason = error && error.reason ? ` (${error.reason})` : "";
  return h("p", { class: "error", role: "alert" }, `${error && error.message ? error.message : error}${reason}`);
}

/** An EventSource on the experiments watch, closed when signal aborts. */
export function watch(query, signal, onObject, onState) {
  const source = new EventSource(`/api/v1/watch/experiments${query ? `?${query}` : ""}`, { withCredentials: true });
  const handle = (event) => {
    try { onObject(JSON.parse(event.data).object, event.type); } catch (error) { console.error(error); }
  };
  source.addEventListener("ADDED", handle);
  source.addEventListener("MODIFIED", handle);
  if (onState) {
    source.addEventListener("open", () => onState("live"));
    source.addEventListener("error", () => onState(source.readyState === EventSource.CLOSED ? "closed" : "reconnecting"));
  }
  signal.addEventListener("abort", () => source.close());
  return source;
}
