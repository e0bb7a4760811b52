// Pictures for the dashboard, drawn as inline SVG from API data: no library, no build step.
// Each function takes what the API answered and returns markup; colours come from style.css,
// so light and dark themes both work. Every picture has a text alternative (aria-label) and
// a tooltip per mark (<title>).

const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) =>
  ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);

const isZero = (t) => !t || t.startsWith("0001-01-01");

// A round, even axis maximum at or above `n` (2, 4, 6, 8, 10, 20, 40, ...), so the middle
// grid line is a whole count.
function niceMax(n) {
  if (n <= 2) return 2;
  const p = 10 ** Math.floor(Math.log10(n));
  for (const m of [1, 2, 4, 6, 8, 10]) if (m * p >= n) return m * p;
  return 10 * p;
}

// Pictures are drawn at the pixel width they get (text stays 11 px at every screen width).
const fit = (width) => Math.round(Math.max(300, Math.min(1200, width || 720)));

function ms(n) {
  if (n < 1000) return `${Math.round(n)} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(1)} s`;
  return `${(n / 60000).toFixed(1)} min`;
}

// Executions per day from GET /v1/stats, stacked by outcome: successes below, failures on top.
export function statsChart(stats, width) {
  const W = fit(width), H = 200, left = 40, right = 8, top = 12, bottom = 26;
  const days = stats ?? [];
  const totals = days.map((d) => d.success_count + d.failed_count);
  const max = niceMax(Math.max(0, ...totals));
  const plotW = W - left - right, plotH = H - top - bottom;
  const slot = plotW / Math.max(1, days.length);
  const barW = Math.max(2, slot * 0.72);
  const y = (v) => top + plotH - (v / max) * plotH;
  const labelEvery = Math.ceil(days.length / Math.max(2, Math.floor(plotW / 70)));
  const sum = (k) => days.reduce((a, d) => a + d[k], 0);
  const ok = sum("success_count"), bad = sum("failed_count");
  const summary = `Executions per day over ${days.length} days: ${ok} succeeded, ${bad} failed`;
  const grid = [0, max / 2, max].map((v) =>
    `<line class="grid" x1="${left}" x2="${W - right}" y1="${y(v)}" y2="${y(v)}"/>` +
    `<text class="axis" x="${left - 6}" y="${y(v) + 4}" text-anchor="end">${v}</text>`).join("");
  const bars = days.map((d, i) => {
    const x = left + i * slot + (slot - barW) / 2;
    const date = d.date.slice(0, 10);
    const hOk = (d.success_count / max) * plotH, hBad = (d.failed_count / max) * plotH;
    const base = top + plotH;
    const label = i % labelEvery === 0
      ? `<text class="axis" x="${x + barW / 2}" y="${H - 8}" text-anchor="middle">${date.slice(5)}</text>` : "";
    return `<g class="day" data-date="${date}" data-success="${d.success_count}" data-failed="${d.failed_count}">
      <title>${date}: ${d.success_count} succeeded, ${d.failed_count} failed</title>
      <rect class="ok" x="${x}" y="${base - hOk}" width="${barW}" height="${hOk}"/>
      <rect class="bad" x="${x}" y="${base - hOk - hBad}" width="${barW}" height="${hBad}"/>
      <rect class="hit" x="${left + i * slot}" y="${top}" width="${slot}" height="${plotH}"/>${label}</g>`;
  }).join("");
  const empty = ok + bad === 0
    ? `<text class="axis" x="${left + plotW / 2}" y="${top + plotH / 2}" text-anchor="middle">No executions in these days</text>` : "";
  return `<figure class="chart">
    <svg id="stats-chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(summary)}">${grid}${bars}${empty}</svg>
    <figcaption><span class="key ok"></span>succeeded ${ok} <span class="key bad"></span>failed ${bad}</figcaption>
  </figure>`;
}

// A job's recent runs, oldest left: bar height is the run's duration, colour its outcome;
// a dot above a bar marks a scheduled run that started more than a second late.
export function runStrip(executions, width) {
  const runs = (executions ?? []).slice().sort((a, b) => new Date(a.started_at) - new Date(b.started_at));
  if (!runs.length) return "";
  const W = fit(width), H = 90, top = 14, bottom = 4;
  const slot = W / Math.max(runs.length, 20);
  const barW = Math.max(3, slot * 0.7);
  const now = Date.now();
  const took = (e) => (isZero(e.finished_at) ? now : new Date(e.finished_at)) - new Date(e.started_at);
  const late = (e) => (e.scheduled_at && (e.attempt ?? 1) <= 1 ? new Date(e.started_at) - new Date(e.scheduled_at) : null);
  const longest = Math.max(1, ...runs.map(took));
  const plotH = H - top - bottom;
  const state = (e) => (isZero(e.finished_at) ? "running" : e.success ? "success" : "failed");
  const marks = runs.map((e, i) => {
    const d = Math.max(0, took(e));
    const h = Math.max(3, Math.sqrt(d / longest) * plotH);
    const x = i * slot + (slot - barW) / 2;
    const l = late(e);
    const lateText = l === null ? "" : ` · ${ms(Math.max(0, l))} late`;
    const dot = l !== null && l > 1000
      ? `<circle class="late" cx="${x + barW / 2}" cy="${top - 7}" r="3"/>` : "";
    return `<g class="run ${state(e)}" data-id="${esc(e.id)}" data-duration-ms="${d}">
      <title>${esc(new Date(e.started_at).toLocaleString())} on ${esc(e.node_name)} · ${state(e)} · took ${ms(d)}${lateText}</title>
      <rect x="${x}" y="${top + plotH - h}" width="${barW}" height="${h}" rx="1"/>${dot}</g>`;
  }).join("");
  const failed = runs.filter((e) => state(e) === "failed").length;
  const summary = `${runs.length} recent runs, ${failed} failed, the longest took ${ms(longest)}`;
  return `<figure class="chart">
    <svg id="run-strip" viewBox="0 0 ${W} ${H}" role="img" aria-label="${esc(summary)}">${marks}</svg>
    <figcaption>Bar height: duration (longest ${ms(longest)}). <span class="key ok"></span>success
      <span class="key bad"></span>failed <span class="key warn"></span>running; a dot: started over 1 s late.</figcaption>
  </figure>`;
}

// The job between its parent (above) and its dependent jobs (below); each box links to its
// job page and is coloured by that job's status. `jobs` maps names to what GET /v1/jobs/:name
// answered (missing: not readable or gone).
export function familyDiagram(job, jobs) {
  const parent = job.parent_job || null;
  const children = job.dependent_jobs ?? [];
  if (!parent && !children.length) return "";
  const shown = children.slice(0, 8);
  const more = children.length - shown.length;
  const boxW = 150, boxH = 34, gap = 16, rowGap = 46;
  const cols = Math.max(1, shown.length + (more > 0 ? 1 : 0));
  const W = Math.max(boxW + 40, cols * (boxW + gap) + gap);
  const rows = (parent ? 1 : 0) + 1 + (children.length ? 1 : 0);
  const H = rows * boxH + (rows - 1) * rowGap + 16;
  const rowY = (r) => 8 + r * (boxH + rowGap);
  const short = (n) => (n.length > 19 ? n.slice(0, 18) + "…" : n);
  const box = (name, x, y, role) => {
    const j = jobs[name];
    const status = j ? (j.disabled ? "disabled" : j.status || "untriggered") : "unknown";
    return `<a href="#/job/${encodeURIComponent(name)}" class="node ${role}" data-job="${esc(name)}">
      <title>${esc(name)}: ${esc(status)}</title>
      <rect class="status-${esc(status)}" x="${x}" y="${y}" width="${boxW}" height="${boxH}" rx="6"/>
      <text x="${x + boxW / 2}" y="${y + boxH / 2 + 4}" text-anchor="middle">${esc(short(name))}</text></a>`;
  };
  const arrow = (x1, y1, x2, y2) =>
    `<line class="edge" x1="${x1}" y1="${y1}" x2="${x2}" y2="${y2}" marker-end="url(#arrowhead)"/>`;
  let out = "", row = 0;
  const cx = W / 2;
  if (parent) {
    out += box(parent, cx - boxW / 2, rowY(row), "parent");
    out += arrow(cx, rowY(row) + boxH, cx, rowY(row + 1) - 2);
    row++;
  }
  out += box(job.name, cx - boxW / 2, rowY(row), "self");
  if (children.length) {
    const startX = (W - (cols * boxW + (cols - 1) * gap)) / 2;
    shown.forEach((c, i) => {
      const x = startX + i * (boxW + gap);
      out += arrow(cx, rowY(row) + boxH, x + boxW / 2, rowY(row + 1) - 2);
      out += box(c, x, rowY(row + 1), "child");
    });
    if (more > 0) {
      const x = startX + shown.length * (boxW + gap);
      out += `<text class="axis" x="${x + boxW / 2}" y="${rowY(row + 1) + boxH / 2 + 4}" text-anchor="middle">+${more} more</text>`;
    }
  }
  const summary = `${parent ? `Runs after ${parent} succeeds. ` : ""}${children.length ? `Starts ${children.join(", ")} when it succeeds.` : ""}`;
  return `<figure class="chart">
    <svg id="family" viewBox="0 0 ${W} ${H}" style="max-width:${W}px" role="img" aria-label="${esc(summary)}">
      <defs><marker id="arrowhead" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse">
        <path d="M0,0 L10,5 L0,10 z" class="edge-head"/></marker></defs>${out}</svg>
  </figure>`;
}
