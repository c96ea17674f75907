// Genesis web UI: sign-in, a hash router and the top bar. Each page lives in
// its own module and gets an AbortSignal that fires when the user leaves it,
// which closes its watch and its log stream (a browser opens only six
// connections per server; leaked streams would starve the next page).

import { api, ApiError, h, problem, session } from "./lib.js";
import { renderExperiments } from "./experiments.js";
import { renderExperiment } from "./experiment.js";
import { renderImages, renderReport, renderReports, renderSandboxes } from "./resources.js";

const ROUTES = [
  [/^experiments$/, (view, ctx) => renderExperiments(view, ctx)],
  [/^experiments\/([^/]+)$/, (view, ctx, name) => renderExperiment(view, ctx, name)],
  [/^sandboxes$/, (view, ctx) => renderSandboxes(view, ctx)],
  [/^images$/, (view, ctx) => renderImages(view, ctx)],
  [/^reports$/, (view, ctx) => renderReports(view, ctx)],
  [/^reports\/([^/]+)$/, (view, ctx, name) => renderReport(view, ctx, name)],
];

const view = document.getElementById("view");
let leaving = null;

/** The current route: its path (no leading #/) and its query (filters, kept in the address). */
export function here() {
  const hash = location.hash.replace(/^#\/?/, "");
  const at = hash.indexOf("?");
  return { path: at < 0 ? hash : hash.slice(0, at), query: new URLSearchParams(at < 0 ? "" : hash.slice(at + 1)) };
}

function route() {
  if (leaving) leaving.abort();
  leaving = new AbortController();
  if (!session.me) return signIn();
  const { path, query } = here();
  if (!path) { location.replace("#/experiments"); return; }
  for (const link of document.querySelectorAll("#nav a")) {
    link.classList.toggle("active", path.split("/")[0] === link.dataset.section);
  }
  view.replaceChildren();
  for (const [pattern, render] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      const args = match.slice(1).map(decodeURIComponent);
      Promise.resolve(render(view, { signal: leaving.signal, query }, ...args)).catch((error) => {
        if (error.name !== "AbortError") view.append(problem(error));
      });
      return;
    }
  }
  view.append(h("h1", null, "Not found"), h("p", null, h("a", { href: "#/experiments" }, "Back to experiments")));
}

function showMe() {
  const me = session.me;
  document.getElementById("nav").hidden = !me;
  const box = document.getElementById("me");
  if (!me) { box.replaceChildren(); return; }
  box.replaceChildren(
    h("span", { id: "whoami" }, me.name), " ", h("span", { class: "badge role", id: "role" }, me.role), " ",
    h("button", { type: "button", id: "sign-out", class: "link", onclick: signOut }, "Sign out"));
}

function signIn(message) {
  showMe();
  const input = h("input", { type: "password", id: "token", name: "token", autocomplete: "off", required: true,
                             placeholder: "genesis tokens create NAME --role viewer", size: 48 });
  const status = h("p", { id: "sign-in-status", role: "status" }, message || "");
  const form = h("form", { id: "sign-in", class: "card narrow" },
    h("h1", null, "Sign in"),
    h("p", { class: "muted" }, "Paste an API token. It is traded for a session cookie; the page never stores it."),
    h("label", { for: "token" }, "Token"), input,
    h("button", { type: "submit" }, "Sign in"), status);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    status.textContent = "Signing in…";
    try {
      session.me = await api("session", { method: "POST", body: { token: input.value.trim() } });
      session.me = { ...session.me, ...(await api("whoami")) };
      input.value = "";
      showMe();
      route();
    } catch (error) {
      status.replaceChildren(problem(error));
    }
  });
  view.replaceChildren(form);
  input.focus();
}

async function signOut() {
  try { await api("session", { method: "DELETE" }); } catch { /* gone already */ }
  session.me = null;
  route();
}

window.addEventListener("genesis:signed-out", () => {
  if (!session.me) return;
  session.me = null;
  if (leaving) leaving.abort();
  signIn("Your session ended; sign in again.");
});
window.addEventListener("hashchange", route);

async function start() {
  try {
    session.me = await api("whoami");
  } catch (error) {
    if (!(error instanceof ApiError && error.status === 401)) {
      view.replaceChildren(problem(error));
      return;
    }
  }
  showMe();
  route();
}

start();
