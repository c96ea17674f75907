// Sandboxes, images and reports: read-only listings, as `genesis get` shows them.

import { api, badge, bytes, enc, fmt, h, table, when } from "./lib.js";

const EXPERIMENT_LABEL = "genesis.experiment-id";
const ROLE_LABEL = "genesis.role";

function page(view, id, title, ...body) {
  view.append(h("div", { id, class: "page" }, h("h1", null, title), ...body));
}

function experimentLink(name) {
  return name ? h("a", { href: `#/experiments/${enc(name)}`, class: "mono" }, name) : "-";
}

export async function renderSandboxes(view, { signal }) {
  const [list, usage] = await Promise.all([api("sandboxes", { signal }), api("usage", { signal }).catch(() => ({ items: [] }))]);
  const sampled = new Map();
  for (const u of usage.items) if (u.experiment.status.sandbox) sampled.set(u.experiment.status.sandbox, u.usage);
  const rows = list.items.map((sb) => {
    const labels = sb.labels || {};
    const use = sampled.get(sb.name);
    return [h("td", { class: "mono" }, sb.name), badge(sb.status, "sandbox"), labels[ROLE_LABEL] || "-",
            experimentLink(labels[EXPERIMENT_LABEL]), fmt(sb.exitCode), sb.oomKilled ? "yes" : "no",
            h("td", { class: "mono" }, sb.image || "-"), when(sb.startedAt),
            use ? `${fmt(use.cpuSeconds)} s CPU, ${bytes(use.memoryWorkingSetBytes)}` : "-"];
  });
  page(view, "sandboxes", "Sandboxes",
    table(["Name", "Status", "Role", "Experiment", "Exit", "OOM", "Image", "Started", "Usage"], rows,
          { empty: "No sandboxes." }));
}

export async function renderImages(view, { signal }) {
  const list = await api("images", { signal });
  const rows = list.items.map((im) => [im.tier, im.repo || "-", h("td", { class: "mono" }, im.tag),
    h("td", { class: "num" }, bytes(im.size_bytes)), when(im.created), when(im.last_used),
    h("td", { class: "num" }, fmt(im.uses)), im.in_use ? "yes" : "no", im.pinned ? "yes" : "no"]);
  page(view, "images", "Images",
    table(["Tier", "Repo", "Tag", "Size", "Created", "Last used", "Uses", "In use", "Pinned"], rows,
          { empty: "No images." }));
}

export async function renderReports(view, { signal }) {
  const list = await api("reports", { signal });
  const rows = list.items.map((r) => [h("a", { href: `#/reports/${enc(r.metadata.name)}`, class: "mono" }, r.metadata.name),
    r.metadata.labels.kind, r.metadata.labels.period, when(r.metadata.creationTimestamp)]);
  page(view, "reports", "Reports",
    h("p", { class: "muted" }, "Made by the controller's scheduled jobs (daily analysis, weekly summaries)."),
    table(["Name", "Kind", "Period", "Created"], rows, { empty: "No reports yet." }));
}

export async function renderReport(view, { signal }, name) {
  const report = await api(`reports/${enc(name)}`, { signal });
  page(view, "report", report.metadata.name,
    h("p", null, h("a", { href: "#/reports" }, "← Reports")),
    h("p", { class: "muted" }, `${report.metadata.labels.kind}, period ${report.metadata.labels.period}`),
    h("pre", { class: "raw" }, JSON.stringify(report.body, null, 2)));
}
