// The operations panel: start an operation, follow its progress, cancel and resume it.
//
// Data: GET /api/operations/types (the types this server runs; the contract's
// list if that fails), GET /api/operations (those there are, shown newest
// first), POST /api/operations {"type", "params": {"path"}} to start one,
// POST /api/operations/{id}/cancel and /resume, and, for each operation that
// has not ended, the WebSocket /api/operations/{id}/progress: the current
// progress first, then each update, then one "status" message with the record.

import { api, backoff, socketUrl } from "./api.js";

// The contract's types, for a server that cannot list its own.
const CONTRACT_TYPES = [
  "codebase_indexing",
  "code_analysis",
  "dependency_analysis",
  "security_scan",
  "performance_profiling",
  "comprehensive_test_suite",
  "integration_testing",
  "performance_testing",
  "load_testing",
  "kb_population",
  "kb_optimization",
  "vector_indexing",
  "semantic_analysis",
  "backup_operation",
  "migration_operation",
  "cleanup_operation",
  "monitoring_collection",
];
const FINISHED = new Set(["completed", "failed", "cancelled", "timed_out"]);
const RESUMABLE = new Set(["failed", "cancelled", "timed_out"]);
const SHOWN = 30;

const $ = (id) => document.getElementById(id);

const ui = {
  form: $("operation-form"),
  type: $("operation-type"),
  path: $("operation-path"),
  start: $("operation-start"),
  list: $("operation-list"),
};

// id -> {record, progress, node, socket, attempt}
const operations = new Map();
let report = () => {};

function text(tag, className, content) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (content !== undefined) node.textContent = content;
  return node;
}

function setTypes(types) {
  const options = types.map((entry) => {
    const option = document.createElement("option");
    option.value = entry.type;
    option.textContent = entry.type;
    if (entry.description) option.title = entry.description;
    return option;
  });
  ui.type.replaceChildren(...options);
  if (types.some((entry) => entry.type === "codebase_indexing")) ui.type.value = "codebase_indexing";
}

async function loadTypes() {
  try {
    const data = await api("GET", "/api/operations/types");
    setTypes(data.types);
  } catch (error) {
    if (error.status === 0) throw error;
    setTypes(CONTRACT_TYPES.map((type) => ({ type })));
  }
}

function percent(entry) {
  if (entry.record.status === "completed") return 100;
  const value = Number(entry.progress?.progress_percentage ?? 0);
  return Math.max(0, Math.min(100, Number.isFinite(value) ? value : 0));
}

function formatRate(rate) {
  if (!rate) return "";
  return rate >= 10 ? `${Math.round(rate)} items/s` : `${rate.toFixed(2)} items/s`;
}

function formatEta(iso) {
  if (!iso) return "";
  const when = new Date(iso);
  if (Number.isNaN(when.getTime())) return "";
  const seconds = Math.max(0, Math.round((when.getTime() - Date.now()) / 1000));
  const left = seconds < 90 ? `${seconds} s` : `${Math.round(seconds / 60)} min`;
  return `done at ${when.toLocaleTimeString()} (in ${left})`;
}

function render(entry) {
  const { record, progress } = entry;
  const node = entry.node;
  node.dataset.status = record.status;
  const value = percent(entry);
  const bar = node.querySelector("progress");
  bar.value = value;
  bar.textContent = `${value.toFixed(0)} %`;
  node.querySelector(".op-status").textContent = record.status.replace("_", " ");
  const items =
    progress?.total_items != null
      ? `${progress.processed_items ?? 0}/${progress.total_items} items`
      : progress?.processed_items
        ? `${progress.processed_items} items`
        : "";
  const running = record.status === "running";
  const parts = [`${value.toFixed(1)} %`, items];
  if (running) parts.push(formatRate(progress?.items_per_second));
  if (running) parts.push(formatEta(progress?.estimated_completion));
  node.querySelector(".op-rate").textContent = parts.filter(Boolean).join(" · ");
  const problem = record.error?.message ?? (typeof record.error === "string" ? record.error : "");
  node.querySelector(".op-message").textContent = problem || progress?.status_message || "";
  node.querySelector(".op-message").classList.toggle("problem", Boolean(problem));
  node.querySelector("[data-testid=operation-cancel]").hidden = FINISHED.has(record.status);
  node.querySelector("[data-testid=operation-resume]").hidden = !RESUMABLE.has(record.status);
}

function buildNode(entry) {
  const node = text("li", "operation");
  node.dataset.testid = "operation";
  node.dataset.id = entry.record.id;
  const head = text("div", "op-head");
  head.append(text("span", "op-type", entry.record.type), text("span", "op-status"));
  const path = entry.record.params?.path;
  const where = text("div", "op-path", path ? path : "");
  const bar = document.createElement("progress");
  bar.max = 100;
  bar.value = 0;
  bar.setAttribute("aria-label", `${entry.record.type} progress`);
  const rate = text("div", "op-rate");
  rate.dataset.testid = "operation-rate";
  const message = text("div", "op-message");
  const buttons = text("div", "op-buttons");
  const cancel = text("button", "", "Cancel");
  cancel.type = "button";
  cancel.dataset.testid = "operation-cancel";
  cancel.addEventListener("click", () => act(entry, "cancel"));
  const resume = text("button", "", "Resume");
  resume.type = "button";
  resume.dataset.testid = "operation-resume";
  resume.addEventListener("click", () => act(entry, "resume"));
  buttons.append(cancel, resume);
  node.append(head, where, bar, rate, message, buttons);
  return node;
}

function track(record) {
  let entry = operations.get(record.id);
  if (!entry) {
    entry = { record, progress: record.progress, node: null, socket: null, attempt: 0 };
    entry.node = buildNode(entry);
    operations.set(record.id, entry);
    ui.list.prepend(entry.node);
  } else {
    entry.record = record;
    if (record.progress) entry.progress = record.progress;
  }
  render(entry);
  if (!FINISHED.has(record.status)) follow(entry);
  return entry;
}

function follow(entry) {
  if (entry.socket) return;
  const id = entry.record.id;
  const socket = new WebSocket(socketUrl(`/api/operations/${encodeURIComponent(id)}/progress`));
  entry.socket = socket;
  socket.addEventListener("open", () => {
    entry.attempt = 0;
  });
  socket.addEventListener("message", (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "progress_update" && message.data) {
      entry.progress = message.data;
      if (entry.record.status === "queued" && message.data.processed_items) {
        entry.record = { ...entry.record, status: "running" };
      }
    } else if (message.type === "status") {
      entry.record = message.data;
      if (message.data.progress) entry.progress = message.data.progress;
    }
    render(entry);
  });
  socket.addEventListener("close", () => {
    if (entry.socket !== socket) return;
    entry.socket = null;
    if (FINISHED.has(entry.record.status)) return;
    // Closed before the operation ended (a restart, a dropped connection): read the
    // record again after a pause, and follow it again if it still runs.
    const delay = backoff(entry.attempt);
    entry.attempt += 1;
    setTimeout(() => refresh(entry), delay * 1000);
  });
}

async function refresh(entry) {
  try {
    track(await api("GET", `/api/operations/${encodeURIComponent(entry.record.id)}`));
  } catch (error) {
    if (error.status === 404) {
      entry.node.remove();
      operations.delete(entry.record.id);
      return;
    }
    const delay = backoff(entry.attempt);
    entry.attempt += 1;
    setTimeout(() => refresh(entry), delay * 1000);
  }
}

async function act(entry, action) {
  try {
    const record = await api(
      "POST",
      `/api/operations/${encodeURIComponent(entry.record.id)}/${action}`,
    );
    track(record.operation ?? record);
  } catch (error) {
    report(error);
    refresh(entry);
  }
}

async function startOperation() {
  const type = ui.type.value;
  const path = ui.path.value.trim();
  if (!type) return;
  ui.start.disabled = true;
  try {
    const body = { type, params: path ? { path } : {} };
    const data = await api("POST", "/api/operations", body);
    track(data.operation ?? (await api("GET", `/api/operations/${data.operation_id}`)));
  } catch (error) {
    report(error);
  } finally {
    ui.start.disabled = false;
  }
}

async function loadOperations() {
  const data = await api("GET", "/api/operations");
  const records = [...data.operations]
    .sort((a, b) => (a.created_at < b.created_at ? -1 : 1))
    .slice(-SHOWN);
  for (const record of records) track(record);
}

/** Fill the panel and follow what runs; `options.showError(error)` reports failures. */
export async function startOperations(options) {
  report = options.showError;
  ui.form.addEventListener("submit", (event) => {
    event.preventDefault();
    startOperation();
  });
  try {
    await loadTypes();
    await loadOperations();
  } catch (error) {
    report(error);
  }
}
