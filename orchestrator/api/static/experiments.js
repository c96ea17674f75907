// The experiments table: `genesis get experiments -o wide` in a browser, with
// filters kept in the address and rows updated in place from the watch.
//
// A first paint reads one page (PAGE rows) however many experiments are
// stored; "Load more" follows the list's continue token. Rows live in a Map
// by name, so an update touches one <tr>, never the table.

import { age, api, badge, enc, h, pct, problem, token, watch } from "./lib.js";

const PAGE = 200; // one screenful many times over, and cheap to paint
const PHASES = ["Pending", "Building", "Running", "Collecting", "Succeeded", "Failed"];
const RECOMMENDATIONS = ["merge", "merge_with_adaptations", "rollback"];
const HEADERS = ["Name", "Instance", "Type", "Risk", "Phase", "Recommendation", "Age", "Success", "Regression"];

/** The list and watch query for the filters: phase and instance are labels, the recommendation a field. */
export function selectors(filters) {
  const labels = [];
  if (filters.phase) labels.push(`phase=${filters.phase}`);
  if (filters.instance) labels.push(`instance_id=${filters.instance}`);
  if (filters.labels) labels.push(filters.labels);
  const query = new URLSearchParams();
  if (labels.length) query.set("labelSelector", labels.join(","));
  if (filters.recommendation) query.set("fieldSelector", `status.recommendation=${filters.recommendation}`);
  return query;
}

function select(name, label, values, current) {
  return h("label", null, label, " ",
    h("select", { name, id: `filter-${name}` },
      h("option", { value: "" }, "any"),
      values.map((v) => h("option", { value: v, selected: v === current }, v))));
}

function filterForm(filters) {
  const form = h("form", { id: "filters", class: "filters" },
    select("phase", "Phase", PHASES, filters.phase),
    h("label", null, "Instance ", h("input", { name: "instance", id: "filter-instance", value: filters.instance, size: 14 })),
    select("recommendation", "Recommendation", RECOMMENDATIONS, filters.recommendation),
    h("label", null, "Labels ", h("input", { name: "labels", id: "filter-labels", value: filters.labels, size: 28,
                                             placeholder: "risk_level in (high,critical)" })),
    h("button", { type: "submit" }, "Apply"),
    h("a", { href: "#/experiments", class: "clear" }, "Clear"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [key, value] of new FormData(form)) if (String(value).trim()) query.set(key, String(value).trim());
    const text = query.toString();
    location.hash = `#/experiments${text ? `?${text}` : ""}`;
  });
  form.addEventListener("change", (event) => { if (event.target.tagName === "SELECT") form.requestSubmit(); });
  return form;
}

function rowOf(obj, now) {
  const { metadata: meta, status } = obj;
  const labels = meta.labels || {};
  const metrics = (status.outcome && status.outcome.metrics) || {};
  const tr = h("tr", { dataset: { name: meta.name, created: meta.creationTimestamp, phase: token(status.phase) } },
    h("td", { class: "name" }, h("a", { href: `#/experiments/${enc(meta.name)}` }, meta.name)),
    h("td", null, labels.instance_id), h("td", null, labels.experiment_type), h("td", null, labels.risk_level),
    h("td", { class: "phase" }, badge(status.phase, "phase"),
      status.cancelRequested && !["Succeeded", "Failed"].includes(status.phase) ? " cancelling" : ""),
    h("td", { class: "recommendation" }, badge(status.recommendation, "rec")),
    h("td", { class: "age" }, h("time", { datetime: meta.creationTimestamp, title: meta.creationTimestamp },
                                 age(meta.creationTimestamp, now))),
    h("td", { class: "num" }, pct(metrics.success_rate)), h("td", { class: "num" }, pct(metrics.regression)));
  return tr;
}

export async function renderExperiments(view, { signal, query }) {
  const filters = Object.fromEntries(["phase", "instance", "recommendation", "labels"].map((k) => [k, query.get(k) || ""]));
  const selector = selectors(filters);
  const liveState = h("span", { id: "live", class: "live", dataset: { state: "connecting" } }, "connecting…");
  const count = h("span", { id: "count", class: "muted" });
  const tbody = h("tbody", { id: "experiments-body" });
  const more = h("button", { type: "button", id: "load-more", hidden: true }, "Load more");
  const status = h("div", { id: "list-status" });
  view.append(
    h("div", { class: "heading" }, h("h1", null, "Experiments"), liveState, count),
    filterForm(filters),
    h("table", { class: "grid", id: "experiments" },
      h("thead", null, h("tr", null, HEADERS.map((name) => h("th", null, name)))), tbody),
    status, more);

  const rows = new Map(); // name -> {tr, updatedAt}
  let next = null; // the continue token; null: every match is on the page

  const showCount = () => { count.textContent = `${rows.size} shown${next ? ", more on request" : ""}`; };

  /** Put obj's row in place: replace it, or insert it by creation time (newest first). */
  function upsert(obj, fromWatch) {
    const name = obj.metadata.name;
    const known = rows.get(name);
    const updatedAt = obj.status.updatedAt || "";
    if (known && known.updatedAt > updatedAt) return; // an older copy (the list raced the watch)
    const tr = rowOf(obj, Date.now());
    if (known) {
      known.tr.replaceWith(tr);
    } else {
      const created = obj.metadata.creationTimestamp;
      let before = null;
      if (fromWatch) {
        for (const other of tbody.children) {
          if (other.dataset.created < created) { before = other; break; }
        }
        // Older than every row while more pages remain: it belongs to a page not loaded yet.
        if (!before && next) return;
      }
      tbody.insertBefore(tr, before);
    }
    if (fromWatch) tr.classList.add("flash");
    rows.set(name, { tr, updatedAt });
  }

  async function load() {
    const page = new URLSearchParams(selector);
    page.set("limit", String(PAGE));
    if (next) page.set("continue", next);
    more.disabled = true;
    try {
      const list = await api(`experiments?${page}`, { signal });
      const fragment = document.createDocumentFragment();
      const now = Date.now();
      for (const obj of list.items) {
        const known = rows.get(obj.metadata.name);
        if (known) { if (known.updatedAt <= (obj.status.updatedAt || "")) upsert(obj, false); continue; }
        const tr = rowOf(obj, now);
        fragment.append(tr);
        rows.set(obj.metadata.name, { tr, updatedAt: obj.status.updatedAt || "" });
      }
      tbody.append(fragment);
      next = (list.metadata && list.metadata.continue) || null;
      status.replaceChildren(rows.size ? "" : h("p", { class: "muted empty" }, "No experiments match."));
    } catch (error) {
      if (error.name === "AbortError") return;
      status.replaceChildren(problem(error));
    } finally {
      more.hidden = !next;
      more.disabled = false;
      showCount();
    }
  }
  more.addEventListener("click", load);

  // The watch first, so nothing that changes while the first page loads is missed.
  watch(selector.toString(), signal, (obj) => {
    upsert(obj, true);
    if (rows.size) status.replaceChildren();
    showCount();
  }, (state) => { liveState.dataset.state = state; liveState.textContent = state; });

  const ticker = setInterval(() => {
    const now = Date.now();
    for (const t of tbody.querySelectorAll("td.age time")) t.textContent = age(t.getAttribute("datetime"), now);
  }, 5000);
  signal.addEventListener("abort", () => clearInterval(ticker));
  await load();
}
