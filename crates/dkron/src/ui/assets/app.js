// The dkron dashboard: plain JavaScript on the public /v1 API, hash routes, no build step.
// Everything the dashboard does, a script can do with the same calls.

import { aclEnabled, authHeaders, loginPage, showWho, signOut, signedIn } from "./auth.js";
import { familyDiagram, runStrip, statsChart } from "./charts.js";

const main = document.getElementById("main");

// ---- helpers ---------------------------------------------------------------------------

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

async function api(path, options = {}) {
  const res = await fetch("/v1" + path, {
    headers: { "Content-Type": "application/json", ...authHeaders() },
    ...options,
  });
  if (aclEnabled && (res.status === 401 || res.status === 403)) signOut();
  let body = null;
  const text = await res.text();
  try { body = text ? JSON.parse(text) : null; } catch { body = text; }
  if (!res.ok) {
    const err = new Error((body && body.error) || `${res.status} ${res.statusText}`);
    err.body = body;
    err.status = res.status;
    throw err;
  }
  return { body, total: Number(res.headers.get("X-Total-Count") ?? NaN), headers: res.headers };
}

const ZERO = "0001-01-01T00:00:00Z";
const isZero = (t) => !t || t.startsWith("0001-01-01");

function when(t) {
  if (isZero(t)) return "—";
  const d = new Date(t);
  return isNaN(d) ? esc(t) : `<time datetime="${esc(t)}" title="${esc(t)}">${esc(d.toLocaleString())}</time>`;
}

function duration(e) {
  if (isZero(e.started_at) || isZero(e.finished_at)) return "—";
  const ms = new Date(e.finished_at) - new Date(e.started_at);
  return ms < 1000 ? `${ms} ms` : `${(ms / 1000).toFixed(1)} s`;
}

function execState(e) {
  if (isZero(e.finished_at)) return "running";
  return e.success ? "success" : "failed";
}

function badge(s) {
  return `<span class="badge ${esc(s)}">${esc(s || "untriggered")}</span>`;
}

function tagsText(tags) {
  return Object.entries(tags ?? {}).map(([k, v]) => `${esc(k)}=${esc(v)}`).join(", ");
}

function set(html) {
  main.innerHTML = html;
}

function fail(e) {
  set(`<p class="error" role="alert">${esc(e.message)}</p>`);
}

function params() {
  const [, query = ""] = location.hash.split("?");
  return new URLSearchParams(query);
}

// ---- pages -----------------------------------------------------------------------------

async function dashboard() {
  const [leader, members, busy, stats] = await Promise.all([
    api("/leader").catch(() => ({ body: null })),
    api("/members"),
    api("/busy"),
    api("/stats?days=14").catch(() => ({ body: null })),
  ]);
  const counts = {};
  await Promise.all(["", "success", "failed", "partially_failed", "untriggered"].map(async (s) => {
    const r = await api(`/jobs?_start=0&_end=1${s ? "&status=" + s : ""}`);
    counts[s || "all"] = r.total;
  }));
  const failures = await api("/jobs?status=failed&_sort=last_error&_order=DESC&_start=0&_end=10");
  const next = await api("/jobs?_sort=next&_order=ASC&_start=0&_end=50");
  const soon = next.body.filter((j) => !isZero(j.next) && new Date(j.next) - Date.now() < 10 * 60000).slice(0, 10);
  set(`
    <h1>Dashboard</h1>
    <div class="grid">
      <div class="card"><div class="muted">Leader</div><div class="n">${esc(leader.body?.Name ?? "none")}</div></div>
      <div class="card"><div class="muted">Members</div><div class="n">${members.body.length}</div></div>
      <div class="card"><div class="muted">Jobs</div><div class="n">${counts.all}</div></div>
      <div class="card"><div class="muted">Running now</div><div class="n">${busy.total}</div></div>
      <div class="card"><div class="muted">Succeeded</div><div class="n success">${counts.success}</div></div>
      <div class="card"><div class="muted">Failed</div><div class="n failed">${counts.failed + counts.partially_failed}</div></div>
      <div class="card"><div class="muted">Not run yet</div><div class="n">${counts.untriggered}</div></div>
    </div>
    <h2>Executions per day</h2>
    ${stats.body ? statsChart(stats.body.stats, main.clientWidth - 32) : `<p class="muted">Statistics are not available.</p>`}
    <h2>Members</h2>${membersTable(members.body)}
    <h2>Recent failures</h2>
    ${failures.body.length ? `<ul>${failures.body.map((j) =>
      `<li><a href="#/job/${encodeURIComponent(j.name)}">${esc(j.name)}</a> — last error ${when(j.last_error)}</li>`).join("")}</ul>`
      : `<p class="muted">No failed jobs.</p>`}
    <h2>Next fires (10 minutes)</h2>
    ${soon.length ? `<ul>${soon.map((j) =>
      `<li>${when(j.next)} — <a href="#/job/${encodeURIComponent(j.name)}">${esc(j.name)}</a></li>`).join("")}</ul>`
      : `<p class="muted">Nothing due in the next ten minutes.</p>`}`);
}

function membersTable(members) {
  return `<div class="scroll"><table><thead><tr><th>Name</th><th>Address</th><th>Status</th><th>Role</th><th class="hide-small">Tags</th></tr></thead><tbody>
    ${members.map((m) => `<tr><td>${esc(m.Name)}</td><td>${esc(m.Addr)}:${esc(m.Port)}</td>
      <td>${badge(m.statusText)}</td><td>${m.Tags?.server === "true" ? "server" : "agent"}</td>
      <td class="hide-small">${tagsText(m.Tags)}</td></tr>`).join("")}
    </tbody></table></div>`;
}

const PAGE = 25;

async function jobs() {
  const p = params();
  const q = p.get("q") ?? "", status = p.get("status") ?? "", sort = p.get("sort") ?? "name";
  const order = p.get("order") ?? "ASC", page = Number(p.get("page") ?? 0);
  const meta = p.get("meta") ?? "", tags = p.get("tags") ?? "";
  let query = `/jobs?_start=${page * PAGE}&_end=${(page + 1) * PAGE}&_sort=${encodeURIComponent(sort)}&_order=${order}`;
  if (q) query += `&q=${encodeURIComponent(q)}`;
  if (status) query += `&status=${encodeURIComponent(status)}`;
  for (const [param, text] of [["metadata", meta], ["tags", tags]]) {
    for (const pair of text.split(",").filter((x) => x.includes("="))) {
      const [k, v] = pair.split("=");
      query += `&${param}[${encodeURIComponent(k.trim())}]=${encodeURIComponent(v.trim())}`;
    }
  }
  const r = await api(query);
  const pages = Math.max(1, Math.ceil(r.total / PAGE));
  const link = (changes) => {
    const n = new URLSearchParams({ q, status, sort, order, page, meta, tags, ...changes });
    return `#/jobs?${n}`;
  };
  set(`
    <h1>Jobs <span class="muted">(${r.total})</span></h1>
    <form id="filter" class="toolbar" role="search">
      <label>Search <input name="q" value="${esc(q)}" placeholder="name"></label>
      <label>Status <select name="status">
        ${["", "success", "failed", "partially_failed", "untriggered"].map((s) =>
          `<option value="${s}" ${s === status ? "selected" : ""}>${s || "any"}</option>`).join("")}
      </select></label>
      <label>Tags <input name="tags" value="${esc(tags)}" placeholder="key=value"></label>
      <label>Metadata <input name="meta" value="${esc(meta)}" placeholder="key=value"></label>
      <button type="submit">Filter</button>
    </form>
    <div class="toolbar">
      <button id="bulk-run">Run selected</button>
      <button id="bulk-toggle">Enable/disable selected</button>
      <button id="bulk-delete" class="danger">Delete selected</button>
      <span id="bulk-msg" role="status"></span>
    </div>
    <div class="scroll"><table>
      <thead><tr><th><input type="checkbox" id="all" aria-label="Select all"></th>
        ${[["name", "Name"], ["schedule", "Schedule"], ["status", "Status"], ["next", "Next"],
           ["success_count", "OK"], ["error_count", "Errors"]].map(([f, t]) =>
          `<th><a href="${link({ sort: f, order: sort === f && order === "ASC" ? "DESC" : "ASC", page: 0 })}">${t}${sort === f ? (order === "ASC" ? " ▲" : " ▼") : ""}</a></th>`).join("")}
        <th class="hide-small">Enabled</th></tr></thead>
      <tbody>${r.body.map((j) => `<tr>
        <td><input type="checkbox" class="pick" value="${esc(j.name)}" aria-label="Select ${esc(j.name)}"></td>
        <td><a href="#/job/${encodeURIComponent(j.name)}">${esc(j.displayname || j.name)}</a></td>
        <td><code>${esc(j.schedule)}</code>${j.timezone ? ` <span class="muted">${esc(j.timezone)}</span>` : ""}</td>
        <td>${badge(j.status)}</td><td>${when(j.next)}</td>
        <td>${j.success_count}</td><td>${j.error_count}</td>
        <td class="hide-small">${j.disabled ? "no" : "yes"}</td></tr>`).join("")}</tbody>
    </table></div>
    <div class="toolbar">
      ${page > 0 ? `<a class="button" href="${link({ page: page - 1 })}">Previous</a>` : ""}
      <span>Page ${page + 1} of ${pages}</span>
      ${page + 1 < pages ? `<a class="button" href="${link({ page: page + 1 })}">Next</a>` : ""}
    </div>`);
  document.getElementById("filter").onsubmit = (ev) => {
    ev.preventDefault();
    const f = new FormData(ev.target);
    location.hash = link({ q: f.get("q"), status: f.get("status"), meta: f.get("meta"), tags: f.get("tags"), page: 0 });
  };
  document.getElementById("all").onchange = (ev) =>
    document.querySelectorAll(".pick").forEach((c) => (c.checked = ev.target.checked));
  const picked = () => [...document.querySelectorAll(".pick:checked")].map((c) => c.value);
  const bulk = (what, method, suffix) => async () => {
    const names = picked();
    if (!names.length) return;
    if (what === "delete" && !confirm(`Delete ${names.length} job(s)?`)) return;
    const results = await Promise.allSettled(names.map((n) =>
      api(`/jobs/${encodeURIComponent(n)}${suffix}`, { method })));
    const failed = results.filter((x) => x.status === "rejected");
    document.getElementById("bulk-msg").textContent =
      `${what}: ${names.length - failed.length} done${failed.length ? `, ${failed.length} failed: ${failed[0].reason.message}` : ""}`;
    if (what !== "run") setTimeout(route, 300);
  };
  document.getElementById("bulk-run").onclick = bulk("run", "POST", "/run");
  document.getElementById("bulk-toggle").onclick = bulk("toggle", "POST", "/toggle");
  document.getElementById("bulk-delete").onclick = bulk("delete", "DELETE", "");
}

async function job(name) {
  const path = `/jobs/${encodeURIComponent(name)}`;
  const [j, ex, occ, upcoming] = await Promise.all([
    api(path),
    api(`${path}/executions?_sort=started_at&_order=DESC&_start=0&_end=30`),
    api(`${path}/occurrences?limit=20`).catch(() => ({ body: [] })),
    api(`${path}/next?count=10`).catch(() => ({ body: [] })),
  ]);
  const job = j.body;
  // The parent's and children's states, for the diagram (a job this token cannot read is
  // drawn without one).
  const relatives = {};
  await Promise.all([job.name, job.parent_job, ...(job.dependent_jobs ?? []).slice(0, 8)]
    .filter(Boolean).map(async (n) => {
      relatives[n] = n === job.name ? job : await api(`/jobs/${encodeURIComponent(n)}`).then((r) => r.body).catch(() => null);
    }));
  const diagram = familyDiagram(job, relatives);
  const described = job.schedule
    ? await api(`/schedule?count=1&schedule=${encodeURIComponent(job.schedule)}&timezone=${encodeURIComponent(job.timezone)}&name=${encodeURIComponent(job.name)}`)
        .then((r) => r.body.description).catch(() => "")
    : "Only when its parent job finishes successfully";
  const fields = Object.entries(job).filter(([k]) => !["executor_config", "tags", "metadata", "processors"].includes(k));
  set(`
    <h1>${esc(job.displayname || job.name)} ${badge(job.status)} ${job.disabled ? '<span class="badge">disabled</span>' : ""}</h1>
    <div class="toolbar">
      <button id="run" class="primary">Run now</button>
      <button id="toggle">${job.disabled ? "Enable" : "Disable"}</button>
      <a class="button" href="#/edit/${encodeURIComponent(job.name)}">Edit</a>
      <button id="delete" class="danger">Delete</button>
      <span id="msg" role="status"></span>
    </div>
    <p id="described"><strong>${esc(described)}</strong></p>
    <p>Runs <code>${esc(job.schedule)}</code> in ${esc(job.timezone || "UTC")}; next ${when(job.next)}.
      ${job.parent_job ? `Child of <a href="#/job/${encodeURIComponent(job.parent_job)}">${esc(job.parent_job)}</a>.` : ""}
      ${(job.dependent_jobs ?? []).length ? `Children: ${job.dependent_jobs.map((c) => `<a href="#/job/${encodeURIComponent(c)}">${esc(c)}</a>`).join(", ")}.` : ""}</p>
    <h2>Recent runs</h2>
    ${runStrip(ex.body, main.clientWidth - 32) || `<p class="muted">No runs yet.</p>`}
    ${diagram ? `<h2>Parent and dependent jobs</h2>${diagram}` : ""}
    <h2>Next fires</h2>
    ${upcoming.body.length ? `<ol id="upcoming">${upcoming.body.map((t) => `<li>${when(t)}</li>`).join("")}</ol>`
      : `<p class="muted">It will not fire on its own (manual, chained, disabled or expired).</p>`}
    <h2>Executions</h2>
    ${ex.body.length ? `<div class="scroll"><table><thead><tr><th>Started</th><th>Status</th><th>Node</th><th>Attempt</th><th>Duration</th><th>Output</th></tr></thead><tbody>
      ${ex.body.map((e, i) => `<tr><td>${when(e.started_at)}</td><td>${badge(execState(e))} ${isZero(e.finished_at) ? stopButton(e) : ""}</td><td>${esc(e.node_name)}</td>
        <td>${e.attempt ?? 1}</td><td>${duration(e)}</td>
        <td><details ${isZero(e.finished_at) ? "open" : ""}><summary>${isZero(e.finished_at) ? "live output" : "output"}</summary><pre id="out-${i}">${esc(e.output)}</pre></details></td></tr>`).join("")}
      </tbody></table></div>` : `<p class="muted">No executions yet.</p>`}
    <h2>Recent occurrences</h2>
    ${occ.body.length ? `<div class="scroll"><table><thead><tr><th>Scheduled</th><th>Outcome</th><th>Why</th></tr></thead><tbody>
      ${occ.body.slice().reverse().map((o) => `<tr><td>${when(o.scheduled_at)}</td><td>${badge(o.outcome)}</td>
        <td>${esc(o.why ?? (o.executions ?? []).map((e) => `${e.node_name} ${execState(e)}`).join(", "))}</td></tr>`).join("")}
      </tbody></table></div>` : `<p class="muted">No scheduled occurrences in the last hour.</p>`}
    <h2>Definition</h2>
    <dl>${fields.map(([k, v]) => `<dt>${esc(k)}</dt><dd>${esc(typeof v === "object" ? JSON.stringify(v) : v)}</dd>`).join("")}
      <dt>executor_config</dt><dd>${esc(JSON.stringify(job.executor_config ?? {}))}</dd>
      <dt>tags</dt><dd>${tagsText(job.tags) || "none (runs on every node)"}</dd>
      <dt>metadata</dt><dd>${tagsText(job.metadata) || "none"}</dd></dl>`);
  const msg = (t) => (document.getElementById("msg").textContent = t);
  wireStopButtons(msg);
  document.getElementById("run").onclick = async () => {
    try { await api(`${path}/run`, { method: "POST" }); msg("Started."); setTimeout(route, 1500); }
    catch (e) { msg(e.message); }
  };
  document.getElementById("toggle").onclick = async () => {
    try { await api(`${path}/toggle`, { method: "POST" }); route(); } catch (e) { msg(e.message); }
  };
  document.getElementById("delete").onclick = async () => {
    if (!confirm(`Delete ${name}?`)) return;
    try { await api(path, { method: "DELETE" }); location.hash = "#/jobs"; } catch (e) { msg(e.message); }
  };
  // While runs go, show what they printed so far (asked of the node running each, through
  // GET .../executions/:id) every second; when the last one ends, show the page again.
  // Otherwise look for a new run every 2 s (a run is claimed just after `run` answers,
  // and scheduled runs come on their own), and show the page again when one appears.
  // Only the latest rendering of this page keeps polling.
  const here = location.hash;
  const gen = ++jobPageGen;
  const current = () => gen === jobPageGen && location.hash === here;
  const live = ex.body.map((e, i) => [e, i]).filter(([e]) => isZero(e.finished_at));
  const tick = async () => {
    if (!current()) return;
    let still = false;
    for (const [e, i] of live) {
      const r = await api(`${path}/executions/${encodeURIComponent(e.id)}`).catch(() => null);
      if (!r || !isZero(r.body.finished_at)) continue;
      still = true;
      const pre = document.getElementById(`out-${i}`);
      if (pre) pre.textContent = r.body.output ?? "";
    }
    if (!current()) return;
    if (still) setTimeout(tick, 1000); else route();
  };
  const watch = async () => {
    if (!current()) return;
    const r = await api(`${path}/executions?_sort=started_at&_order=DESC&_start=0&_end=1`).catch(() => null);
    if (!current()) return;
    if (r && (r.total !== ex.total || r.body[0]?.id !== ex.body[0]?.id)) route();
    else setTimeout(watch, 2000);
  };
  if (live.length) tick(); else setTimeout(watch, 2000);
}

// Renderings of a job page so far; polling from an older one stops.
let jobPageGen = 0;

function kv(obj) {
  return Object.entries(obj ?? {}).map(([k, v]) => `${k}=${v}`).join("\n");
}

function parseKv(text, field) {
  const out = {};
  for (const line of text.split("\n").map((l) => l.trim()).filter(Boolean)) {
    const at = line.indexOf("=");
    if (at < 1) throw Object.assign(new Error(`${field}: "${line}" is not key=value`), { field });
    out[line.slice(0, at).trim()] = line.slice(at + 1).trim();
  }
  return out;
}

async function edit(name) {
  let job = { name: "", schedule: "@every 1m", timezone: "", executor: "shell", concurrency: "allow",
              executor_config: { command: "echo hello" }, retries: 0, catchup: "all" };
  if (name) job = (await api(`/jobs/${encodeURIComponent(name)}`)).body;
  const names = Object.keys(await executors());
  if (!names.length) names.push("shell", "http");
  if (job.executor && !names.includes(job.executor)) names.push(job.executor);
  const field = (id, label, input, hint = "") => `<div class="field"><label for="f-${id}">${label}</label>${input}
    ${hint ? `<div class="muted">${hint}</div>` : ""}<div class="field-error" id="e-${id}" role="alert"></div></div>`;
  set(`
    <h1>${name ? `Edit ${esc(name)}` : "New job"}</h1>
    <form id="job" novalidate>
      ${field("name", "Name", `<input id="f-name" name="name" value="${esc(job.name)}" ${name ? "readonly" : ""} required>`)}
      ${field("displayname", "Display name", `<input id="f-displayname" name="displayname" value="${esc(job.displayname)}">`)}
      ${field("schedule", "Schedule", `<input id="f-schedule" name="schedule" value="${esc(job.schedule)}">`,
        "6-field cron with seconds (<code>0 30 3 * * *</code>), <code>@daily</code>, <code>@every 10m</code>, <code>@at 2026-01-01T00:00:00Z</code>, <code>@manually</code>")}
      ${field("timezone", "Time zone", `<input id="f-timezone" name="timezone" value="${esc(job.timezone)}" placeholder="UTC">`, "IANA name, e.g. Europe/Berlin")}
      <div class="notice" aria-live="polite"><strong id="describe"></strong><br><strong>Next fires:</strong> <span id="preview" class="muted">…</span></div>
      ${field("executor", "Executor", `<select id="f-executor" name="executor">${names.map((x) =>
        `<option ${x === job.executor ? "selected" : ""}>${x}</option>`).join("")}</select>`)}
      ${field("executor_config", "Executor config (key=value per line)", `<textarea id="f-executor_config" name="executor_config">${esc(kv(job.executor_config))}</textarea>`)}
      ${field("tags", "Tags (key=value per line)", `<textarea id="f-tags" name="tags">${esc(kv(job.tags))}</textarea>`, "<code>server=true:1</code> runs on one server; none runs on every node")}
      ${field("metadata", "Metadata (key=value per line)", `<textarea id="f-metadata" name="metadata">${esc(kv(job.metadata))}</textarea>`)}
      ${field("concurrency", "Concurrency", `<select id="f-concurrency" name="concurrency">${["allow", "forbid", "replace"].map((x) =>
        `<option ${x === job.concurrency ? "selected" : ""}>${x}</option>`).join("")}</select>`)}
      ${field("catchup", "Catch-up of occurrences missed without a leader", `<select id="f-catchup" name="catchup">${["all", "latest", "none"].map((x) =>
        `<option ${x === (job.catchup || "all") ? "selected" : ""}>${x}</option>`).join("")}</select>`)}
      ${field("retries", "Retries", `<input id="f-retries" name="retries" type="number" min="0" value="${esc(job.retries ?? 0)}">`)}
      ${field("parent_job", "Parent job", `<input id="f-parent_job" name="parent_job" value="${esc(job.parent_job)}">`)}
      ${field("disabled", "Disabled", `<input id="f-disabled" name="disabled" type="checkbox" ${job.disabled ? "checked" : ""}>`)}
      <p id="form-error" class="error" role="alert"></p>
      <button type="submit" class="primary">${name ? "Save" : "Create"}</button>
      <a class="button" href="${name ? `#/job/${encodeURIComponent(name)}` : "#/jobs"}">Cancel</a>
    </form>`);
  let timer = null;
  const preview = () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      const sched = document.getElementById("f-schedule").value;
      const tz = document.getElementById("f-timezone").value;
      const out = document.getElementById("preview");
      try {
        const r = await api(`/schedule?count=5&schedule=${encodeURIComponent(sched)}&timezone=${encodeURIComponent(tz)}&name=${encodeURIComponent(document.getElementById("f-name").value)}`);
        document.getElementById("describe").textContent = r.body.description;
        out.innerHTML = r.body.next.length ? r.body.next.map(when).join(", ") : "none (it will not fire on its own)";
        document.getElementById("e-schedule").textContent = "";
      } catch (e) {
        out.textContent = "—";
        const errs = e.body?.errors ?? [];
        for (const { field, message } of errs) {
          const slot = document.getElementById(`e-${field}`);
          if (slot) slot.textContent = message;
        }
      }
    }, 250);
  };
  document.getElementById("f-schedule").oninput = preview;
  document.getElementById("f-timezone").oninput = preview;
  preview();
  document.getElementById("job").onsubmit = async (ev) => {
    ev.preventDefault();
    document.querySelectorAll(".field-error").forEach((e) => (e.textContent = ""));
    document.getElementById("form-error").textContent = "";
    const f = new FormData(ev.target);
    let body;
    try {
      body = {
        ...job,
        name: f.get("name"), displayname: f.get("displayname"), schedule: f.get("schedule"),
        timezone: f.get("timezone"), executor: f.get("executor"), concurrency: f.get("concurrency"),
        catchup: f.get("catchup"), retries: Number(f.get("retries") || 0), parent_job: f.get("parent_job"),
        disabled: f.get("disabled") === "on",
        executor_config: parseKv(f.get("executor_config"), "executor_config"),
        tags: parseKv(f.get("tags"), "tags"),
        metadata: parseKv(f.get("metadata"), "metadata"),
      };
    } catch (e) {
      document.getElementById(`e-${e.field}`).textContent = e.message;
      return;
    }
    try {
      const r = await api("/jobs", { method: "POST", body: JSON.stringify(body) });
      location.hash = `#/job/${encodeURIComponent(r.body.name)}`;
    } catch (e) {
      const errors = e.body?.errors ?? (e.body?.field ? [{ field: e.body.field, message: e.message }] : []);
      for (const { field, message } of errors) {
        const slot = document.getElementById(`e-${field.split(".")[0]}`);
        if (slot) slot.textContent = message;
      }
      document.getElementById("form-error").textContent = e.message;
    }
  };
}

function stopButton(e) {
  return `<button class="stop" data-job="${esc(e.job_name)}" data-id="${esc(e.id)}" aria-label="Stop ${esc(e.job_name)} ${esc(e.id)}">Stop</button>`;
}

// Stop: the run ends as failed ("stopped by ..."), not retried.
function wireStopButtons(say) {
  for (const b of main.querySelectorAll("button.stop")) {
    b.addEventListener("click", async () => {
      b.disabled = true;
      const path = `/jobs/${encodeURIComponent(b.dataset.job)}/executions/${encodeURIComponent(b.dataset.id)}/stop`;
      try { await api(path, { method: "POST" }); say(`Stopped ${b.dataset.job}.`); }
      catch (e) { say(e.message); b.disabled = false; }
    });
  }
}

async function busy() {
  const r = await api("/busy");
  set(`<h1>Running <span class="muted">(${r.total})</span></h1>
    ${r.body.length ? `<div class="scroll"><table><thead><tr><th>Job</th><th>Node</th><th>Started</th><th>Attempt</th><th></th></tr></thead><tbody>
      ${r.body.map((e) => `<tr><td><a href="#/job/${encodeURIComponent(e.job_name)}">${esc(e.job_name)}</a></td>
        <td>${esc(e.node_name)}</td><td>${when(e.started_at)}</td><td>${e.attempt ?? 1}</td>
        <td>${stopButton(e)}</td></tr>`).join("")}
      </tbody></table></div><p id="stop-msg" role="status"></p>` : `<p class="muted">Nothing is running.</p>`}`);
  wireStopButtons((t) => (document.getElementById("stop-msg").textContent = t));
  setTimeout(() => { if (location.hash.startsWith("#/busy")) route(); }, 3000);
}

// The executors this node runs, with their state, from /health (not under /v1).
async function executors() {
  try {
    const res = await fetch("/health", { headers: authHeaders() });
    return (await res.json()).executors || {};
  } catch { return {}; }
}

async function cluster() {
  const [leader, members, peers, execs] = await Promise.all([
    api("/leader").catch(() => ({ body: null })),
    api("/members"),
    api("/raft/peers").catch(() => ({ body: [] })),
    executors(),
  ]);
  set(`<h1>Cluster</h1>
    <p>Leader: <strong>${esc(leader.body?.Name ?? "none elected")}</strong></p>
    <h2>Members</h2>
    ${membersTable(members.body)}
    <h2>Raft peers</h2>
    <div class="scroll"><table><thead><tr><th>Node</th><th>Address</th><th>State</th><th>Voter</th></tr></thead><tbody>
      ${peers.body.map((p) => `<tr><td>${esc(p.node)}</td><td>${esc(p.address)}</td><td>${esc(p.state)}</td>
        <td>${p.voter ? "yes" : "no"}</td></tr>`).join("")}
    </tbody></table></div>
    <h2>Executors on this node</h2>
    <div class="scroll"><table id="executors"><thead><tr><th>Executor</th><th>State</th></tr></thead><tbody>
      ${Object.entries(execs).map(([n, e]) => `<tr><td>${esc(n)}</td><td>${esc(e.status)}</td></tr>`).join("")}
    </tbody></table></div>`);
}

// ---- routing ---------------------------------------------------------------------------

async function route() {
  const hash = location.hash || "#/";
  const [path] = hash.slice(1).split("?");
  const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
  try {
    if (parts[0] === "login" || !signedIn()) {
      if (parts[0] !== "login") { location.hash = "#/login"; return; }
      loginPage(main, esc);
      return;
    }
    if (parts.length === 0) await dashboard();
    else if (parts[0] === "jobs") await jobs();
    else if (parts[0] === "job" && parts[1]) await job(parts[1]);
    else if (parts[0] === "new") await edit(null);
    else if (parts[0] === "edit" && parts[1]) await edit(parts[1]);
    else if (parts[0] === "busy") await busy();
    else if (parts[0] === "cluster") await cluster();
    else set(`<p>No such page. <a href="#/">Dashboard</a></p>`);
  } catch (e) {
    fail(e);
  }
}

window.addEventListener("hashchange", () => { route(); main.focus(); });
const whom = document.getElementById("whom");
if (signedIn()) {
  api("/").then((r) => {
    whom.textContent = r.headers.get("X-Whom") ?? "";
    showWho(whom, esc);
  }).catch(() => {});
}
route();
