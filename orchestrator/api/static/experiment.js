// One experiment: header, summary, conditions, metrics beside the baseline
// (table and chart), per-test outcomes, the diff, live logs, the audit trail
// and, for operators, Cancel. The watch (one name) redraws every part but the
// logs, which stream on their own and restart only when the phase moves on.

import { api, badge, enc, fmt, h, pct, problem, s, session, table, watch, when } from "./lib.js";

const FINISHED = new Set(["Succeeded", "Failed"]);
const MAX_DIFF_LINES = 20000; // beyond this a browser tab gets sluggish; the CLI shows the rest
const MAX_NAMES = 50;
// Worst first; anything else the outcome carries follows in its own order.
const TEST_ORDER = ["PASS_TO_FAIL", "FAIL_TO_FAIL", "FLAKY", "NOT_RUN", "REMOVED", "DECLARED_CHANGE", "NEW",
                    "FAIL_TO_PASS", "PASS_TO_PASS"];

function section(id, title, ...body) {
  return h("section", { id, class: "card" }, h("h2", null, title), ...body);
}

function header(obj, onCancel, cancelState) {
  const st = obj.status;
  const box = h("div", { class: "heading" },
    h("h1", { class: "mono" }, obj.metadata.name), badge(st.phase, "phase"), badge(st.recommendation, "rec"));
  if (st.reason) box.append(h("span", { id: "reason", class: "muted" }, st.reason));
  const lines = [box];
  if (st.message) lines.push(h("p", { id: "message", class: "message" }, st.message));
  if (session.me && session.me.may.includes("cancel")) lines.push(cancelControl(obj, onCancel, cancelState));
  return h("div", { id: "header" }, lines);
}

/** Cancel, asked twice. ``asking`` outlives the redraw an update makes between the two clicks. */
function cancelControl(obj, onCancel, { result, asking }) {
  const done = FINISHED.has(obj.status.phase);
  const ask = h("button", { type: "button", id: "cancel", class: "danger", hidden: asking.on && !done,
                            disabled: done || obj.status.cancelRequested },
    obj.status.cancelRequested && !done ? "Cancelling…" : "Cancel experiment");
  const confirm = h("span", { id: "cancel-confirm", hidden: !asking.on || done }, "Cancel and roll back? ",
    h("button", { type: "button", id: "cancel-yes", class: "danger" }, "Yes, cancel it"), " ",
    h("button", { type: "button", id: "cancel-no" }, "Keep it"));
  const setAsking = (on) => { asking.on = on; confirm.hidden = !on; ask.hidden = on; };
  ask.addEventListener("click", () => setAsking(true));
  confirm.querySelector("#cancel-no").addEventListener("click", () => setAsking(false));
  confirm.querySelector("#cancel-yes").addEventListener("click", async () => {
    asking.on = false;
    confirm.hidden = true;
    ask.hidden = false;
    ask.disabled = true;
    result.textContent = "Asking…";
    try {
      const answer = await api(`experiments/${enc(obj.metadata.name)}`, { method: "DELETE" });
      result.textContent = "Cancellation requested; the controller rolls it back.";
      onCancel(answer);
    } catch (error) {
      result.replaceChildren(problem(error));
      ask.disabled = false;
    }
  });
  return h("div", { class: "actions" }, ask, confirm, " ", result);
}

function summary(obj) {
  const { spec, status: st, metadata: meta } = obj;
  const labels = meta.labels || {};
  const changes = spec.changes || {};
  const rows = [
    ["Description", spec.description || changes.description || (spec.rawExcerpt ? "(request not parsed)" : "")],
    ["Instance", labels.instance_id], ["Type", labels.experiment_type], ["Risk", labels.risk_level],
    ["Repo", `${labels.repo || "-"}@${(st.commit || "").slice(0, 12) || spec.base_ref || "-"}`],
    ["Attempt", st.attempt], ["Priority", st.priority],
    ["Created", when(meta.creationTimestamp)], ["Started", when(st.startedAt)], ["Finished", when(st.finishedAt)],
    ["Sandbox", st.sandbox || "-"], ["Image", st.image || "-"], ["Trace ID", st.traceId || "-"],
  ];
  if (st.outcome && st.outcome.error) rows.push(["Error", `${st.outcome.error.code}: ${st.outcome.error.message}`]);
  if (spec.rawExcerpt) rows.push(["Request (as received)", h("pre", { class: "raw" }, spec.rawExcerpt)]);
  return section("summary", "Summary",
    h("dl", { class: "facts" }, rows.map(([k, v]) => [h("dt", null, k), h("dd", { dataset: { field: k } }, v ?? "-")])));
}

function conditions(obj) {
  const rows = (obj.status.conditions || []).map((c) =>
    [c.type, h("td", { class: `cond-${c.status === "True" ? "true" : c.status === "False" ? "false" : "unknown"}` }, c.status),
     c.reason, c.message, when(c.last_transition_time)]);
  return section("conditions", "Conditions", table(["Type", "Status", "Reason", "Message", "Since"], rows));
}

/** Grouped horizontal bars, each pair scaled to its larger value (the three figures share no unit). */
export function chart(m, b) {
  const groups = [["Success rate", m.success_rate * 100, b.success_rate * 100, "%"],
                  ["Tests", m.test_count, b.test_count, ""], ["Runtime", m.runtime_ms, b.runtime_ms, " ms"]];
  const width = 600, labelW = 110, barMax = 380, bar = 16, gap = 3, groupH = 2 * bar + gap + 16;
  const height = groups.length * groupH + 26;
  const svg = s("svg", { id: "metrics-chart", class: "chart", viewBox: `0 0 ${width} ${height}`, width, height,
                          role: "img", "aria-label": "Experiment beside baseline: success rate, tests, runtime" });
  groups.forEach(([label, exp, base, unit], i) => {
    const y = i * groupH + 4;
    const top = Math.max(exp, base) || 1;
    svg.append(s("text", { x: 0, y: y + bar + 2, class: "chart-label" }, label));
    [[exp, "bar-exp", y], [base, "bar-base", y + bar + gap]].forEach(([value, cls, at]) => {
      const w = Math.max(1, (barMax * value) / top);
      svg.append(s("rect", { x: labelW, y: at, width: w, height: bar, class: cls }, s("title", null, `${fmt(value)}${unit}`)),
                 s("text", { x: labelW + w + 6, y: at + bar - 4, class: "chart-value" }, `${fmt(value)}${unit}`));
    });
  });
  const legendY = height - 8;
  svg.append(s("rect", { x: labelW, y: legendY - 10, width: 12, height: 12, class: "bar-exp" }),
             s("text", { x: labelW + 18, y: legendY, class: "chart-label" }, "experiment"),
             s("rect", { x: labelW + 120, y: legendY - 10, width: 12, height: 12, class: "bar-base" }),
             s("text", { x: labelW + 138, y: legendY, class: "chart-label" }, "baseline"));
  return svg;
}

function metrics(obj) {
  const outcome = obj.status.outcome;
  if (!outcome || !outcome.metrics) return section("metrics", "Metrics", h("p", { class: "muted empty" }, "Not measured yet."));
  const m = outcome.metrics, b = outcome.baseline;
  const delta = (x, y) => (b && typeof x === "number" && typeof y === "number" ? fmt(x - y) : "");
  const rows = [["success_rate", pct(m.success_rate), b ? pct(b.success_rate) : "-", delta(m.success_rate, b && b.success_rate)],
                ["test_count", fmt(m.test_count), b ? fmt(b.test_count) : "-", delta(m.test_count, b && b.test_count)],
                ["runtime_ms", fmt(m.runtime_ms), b ? fmt(b.runtime_ms) : "-", delta(m.runtime_ms, b && b.runtime_ms)]];
  for (const name of ["regression", "llm_reduction", "performance_delta", "performance_noise", "failures", "errors",
                      "skipped", "pass_to_fail", "fail_to_pass", "flaky_tests", "protected_changed", "memory_peak_mb",
                      "cpu_usage_percent", "io_operations", "code_coverage_percent", "complexity_change"]) {
    if (m[name] !== undefined && m[name] !== null) rows.push([name, fmt(m[name]), "", ""]);
  }
  for (const [name, value] of Object.entries(m.custom || {})) rows.push([`custom.${name}`, fmt(value), "", ""]);
  return section("metrics", "Metrics",
    h("div", { class: "side" },
      h("div", null, table(["Metric", "Experiment", "Baseline", "Δ"], rows, { cls: "grid metrics-table" })),
      b ? chart(m, b) : h("p", { class: "muted" }, "No baseline to compare with.")));
}

function tests(obj) {
  const doc = obj.status.outcome && obj.status.outcome.tests;
  if (!doc) return section("tests", "Per-test outcomes", h("p", { class: "muted empty" }, "No per-test outcomes yet."));
  const categories = Object.keys(doc).filter((k) => doc[k] && typeof doc[k] === "object" && !Array.isArray(doc[k]) && "count" in doc[k]);
  categories.sort((a, b) => (TEST_ORDER.indexOf(a) + 1 || 99) - (TEST_ORDER.indexOf(b) + 1 || 99));
  // As the CLI: the categories that hold tests; the empty ones named on one line.
  const empty = categories.filter((c) => !doc[c].count);
  const rows = categories.filter((c) => doc[c].count).map((category) => {
    const { count, names = [] } = doc[category];
    const shown = names.slice(0, MAX_NAMES);
    const list = h("ul", { class: "names" }, shown.map((n) => h("li", { class: "mono" }, n)));
    if (count > shown.length) list.append(h("li", { class: "muted" }, `… ${count - shown.length} more`));
    return [h("td", { class: `category cat-${category.replace(/[^A-Z_]/g, "")}` }, category), h("td", { class: "num" }, count), h("td", null, list)];
  });
  const protectedEdited = doc.protected_edited || [];
  return section("tests", "Per-test outcomes",
    h("p", { class: "muted" }, `${doc.passes ?? 1} pass(es), ${doc.reruns ?? 0} rerun(s)`),
    table(["Category", "Count", "Tests"], rows, { empty: "No tests reported." }),
    empty.length ? h("p", { id: "tests-empty", class: "muted" }, `None: ${empty.join(", ")}`) : null,
    protectedEdited.length ? h("p", { class: "error" }, "Protected files edited: ", protectedEdited.join(", ")) : null);
}

function diffLine(line) {
  let cls = "ctx";
  if (line.startsWith("diff ") || line.startsWith("index ") || line.startsWith("+++") || line.startsWith("---")
      || line.startsWith("new file") || line.startsWith("deleted file")) cls = "meta";
  else if (line.startsWith("@@")) cls = "hunk";
  else if (line.startsWith("+")) cls = "add";
  else if (line.startsWith("-")) cls = "del";
  return h("span", { class: `line ${cls}` }, `${line}\n`);
}

function diff(obj) {
  const changes = obj.spec.changes || {};
  const parts = [];
  const files = changes.files || [];
  if (files.length) {
    parts.push(h("h3", null, `Files (${files.length})`), h("ul", { id: "changed-files", class: "files" }, files.map((f) => {
      const what = f.delete ? "delete" : f.content_b64 !== undefined ? `write ${f.content_b64.length} base64 chars`
        : `write ${(f.content || "").length} chars`;
      const item = h("li", null, h("span", { class: "mono path" }, f.path), " ", h("span", { class: "muted" }, what + (f.mode ? `, mode ${f.mode}` : "")));
      if (typeof f.content === "string") {
        item.append(h("details", null, h("summary", null, "content"),
          h("pre", { class: "diff" }, f.content.split("\n").slice(0, MAX_DIFF_LINES).map((l) => diffLine(`+${l}`)))));
      }
      return item;
    })));
  }
  if (changes.patch) {
    const lines = changes.patch.replace(/\n$/, "").split("\n");
    parts.push(h("h3", null, `Patch (${lines.length} lines)`),
      h("pre", { id: "patch", class: "diff" }, lines.slice(0, MAX_DIFF_LINES).map(diffLine)));
    if (lines.length > MAX_DIFF_LINES) parts.push(h("p", { class: "muted" }, `${lines.length - MAX_DIFF_LINES} more lines not shown.`));
  }
  if (!parts.length) parts.push(h("p", { class: "muted empty" }, "No changes recorded."));
  return section("diff", "Diff", parts);
}

function auditRows(list) {
  return list.items.map((e) => [when(e.at), e.action, e.actor, e.sandbox_name || "-", e.reason,
                                e.duration_ms === null || e.duration_ms === undefined ? "" : `${Math.round(e.duration_ms)} ms`]);
}

/** Stream the sandbox's output into pre; resolves when the stream ends. */
async function streamLogs(name, follow, pre, state, signal) {
  pre.replaceChildren();
  state.textContent = follow ? "following…" : "loading…";
  const response = await api(`experiments/${enc(name)}/logs${follow ? "?follow=true" : ""}`, { raw: true, signal });
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    pre.append(document.createTextNode(decoder.decode(value, { stream: true })));
    if (pre.scrollHeight - pre.scrollTop - pre.clientHeight < 80) pre.scrollTop = pre.scrollHeight;
  }
  pre.append(document.createTextNode(decoder.decode()));
  state.textContent = "ended";
}

function logsSection(name, signal) {
  const pre = h("pre", { id: "logs-text", class: "logs" });
  const state = h("span", { id: "logs-state", class: "muted" });
  const build = h("pre", { id: "build-logs", class: "logs", hidden: true });
  const buildButton = h("button", { type: "button", id: "show-build-logs" }, "Build logs");
  buildButton.addEventListener("click", async () => {
    build.hidden = false;
    build.textContent = "loading…";
    try {
      build.textContent = await (await api(`experiments/${enc(name)}/logs?build=true`, { raw: true, signal })).text();
    } catch (error) {
      build.replaceChildren(problem(error));
    }
  });
  let phaseStreamed = null, streaming = false;
  const follow = async (phase) => {
    if (streaming || phase === phaseStreamed || phase === "Pending") return;
    streaming = true;
    phaseStreamed = phase;
    try {
      await streamLogs(name, !FINISHED.has(phase), pre, state, signal);
    } catch (error) {
      if (error.name === "AbortError") return;
      state.textContent = error.status === 404 ? "no logs yet" : "";
      if (error.status !== 404) pre.replaceChildren(problem(error));
    } finally {
      streaming = false;
    }
  };
  const node = section("logs", "Logs", h("div", { class: "actions" }, state, " ", buildButton), pre, build);
  return { node, follow };
}

export async function renderExperiment(view, { signal }, name) {
  const slots = Object.fromEntries(["header", "summary", "conditions", "metrics", "tests", "diff"].map((k) => [k, h("div")]));
  const auditBox = section("audit", "Audit trail", h("p", { class: "muted" }, "Loading…"));
  const logs = logsSection(name, signal);
  view.append(h("p", null, h("a", { href: "#/experiments" }, "← Experiments")),
    slots.header, slots.summary, slots.conditions, slots.metrics, slots.tests, slots.diff, logs.node, auditBox);

  // Outside the header, which every update redraws: the answer to Cancel must stay in view.
  const cancelState = { result: h("span", { id: "cancel-result", role: "status" }), asking: { on: false } };
  let latest = null;
  const draw = (obj) => {
    if (latest && latest.status.updatedAt > obj.status.updatedAt) return;
    latest = obj;
    slots.header.replaceChildren(header(obj, draw, cancelState));
    slots.summary.replaceChildren(summary(obj));
    slots.conditions.replaceChildren(conditions(obj));
    slots.metrics.replaceChildren(metrics(obj));
    slots.tests.replaceChildren(tests(obj));
    if (!slots.diff.firstChild) slots.diff.replaceChildren(diff(obj)); // the spec never changes
    logs.follow(obj.status.phase);
    refreshAudit();
  };
  let auditPending = null;
  const refreshAudit = () => {
    if (auditPending) return;
    auditPending = api(`experiments/${enc(name)}/audit`, { signal }).then((list) => {
      auditBox.replaceChildren(h("h2", null, "Audit trail"),
        table(["When", "Action", "By", "Sandbox", "Reason", "Duration"], auditRows(list), { empty: "No entries yet." }));
    }).catch((error) => { if (error.name !== "AbortError") auditBox.append(problem(error)); })
      .finally(() => { auditPending = null; });
  };

  watch(new URLSearchParams({ fieldSelector: `metadata.name=${name}` }).toString(), signal, draw);
  draw(await api(`experiments/${enc(name)}`, { signal }));
}
