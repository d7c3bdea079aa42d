"""The investigator console: one self-contained page (no CDN, no build) over the investigator API.

The page holds no data. It asks for the API key (kept in the tab's sessionStorage, sent as
`X-Case-Api-Key`), then shows the queue (filter by state), a case (the decision's action, score,
reasons, rules and top contributions, the flow's features, the timeline in sequence order, the
labels known now) and lets the person assign, add a note, assert a label and resolve. Everything
it shows is text set with `textContent`, never HTML built from data.
"""

from __future__ import annotations

from typing import Final

CONSOLE_HTML: Final = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fraudrt investigator console</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1b1f24;background:#f5f6f8}
header{background:#1f2937;color:#fff;padding:10px 16px;display:flex;gap:16px;align-items:center}
header h1{font-size:16px;margin:0}
main{display:grid;grid-template-columns:minmax(360px,38%) 1fr;gap:12px;padding:12px}
section{background:#fff;border:1px solid #d8dde3;border-radius:6px;padding:10px;overflow:auto}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 6px;border-bottom:1px solid #eceff3}
tr.case{cursor:pointer}tr.case:hover{background:#eef4ff}tr.sel{background:#dbe8ff}
.pill{display:inline-block;padding:1px 6px;border-radius:9px;font-size:12px;background:#e5e7eb}
.OPEN{background:#fde68a}.IN_REVIEW{background:#bfdbfe}.RESOLVED{background:#bbf7d0}
.DECLINE{background:#fecaca}.REVIEW{background:#fed7aa}
h2{font-size:15px;margin:6px 0}h3{font-size:13px;margin:10px 0 4px}
form{display:flex;gap:6px;flex-wrap:wrap;align-items:center;margin:4px 0}
input,select,button,textarea{font:inherit}textarea{width:100%;min-height:40px}
#msg{color:#fca5a5;min-height:1em}#msg.muted,.muted{color:#9ca3af}
</style></head>
<body>
<header><h1>fraudrt investigator console</h1>
<form id="keyform"><input id="key" type="password" placeholder="API key (X-Case-Api-Key)" size="32">
<button>Use key</button></form>
<label>state <select id="state"><option value="">all</option><option>OPEN</option><option>IN_REVIEW</option>
<option>RESOLVED</option></select></label><button id="refresh">Refresh</button><span id="msg"></span></header>
<main>
<section><h2>Case queue</h2><table><thead><tr><th>case</th><th>state</th><th>actions</th><th>score</th>
<th>triggers</th><th>age</th></tr></thead><tbody id="queue"></tbody></table></section>
<section id="detail"><p class="muted">Select a case.</p></section>
</main>
<script>
"use strict";
const api = (path, opts = {}) => fetch(path, {...opts, headers: {"Content-Type": "application/json",
  "X-Case-Api-Key": sessionStorage.getItem("case_api_key") || ""}}).then(async r => {
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(r.status + " " + (body.error || "") + (body.detail ? ": " + body.detail : ""));
  return body; });
const el = (tag, text, cls) => { const e = document.createElement(tag); if (text !== undefined && text !== null)
  e.textContent = String(text); if (cls) e.className = cls; return e; };
const msg = (t, error = true) => { const m = document.getElementById("msg"); m.textContent = t || "";
  m.className = error ? "" : "muted"; };
let selected = null;
function row(cells) { const tr = el("tr"); for (const c of cells) { const td = el("td");
  if (c instanceof Node) td.append(c); else td.textContent = c === null || c === undefined ? "" : String(c);
  tr.append(td); } return tr; }
async function loadQueue() {
  const state = document.getElementById("state").value;
  try { const page = await api("/v1/cases?limit=200" + (state ? "&state=" + state : ""));
    const tbody = document.getElementById("queue"); tbody.replaceChildren();
    for (const c of page.cases) { const tr = row([c.case_id.slice(0, 10), el("span", c.state, "pill " + c.state),
        c.actions.join(" "), c.max_score === null ? "" : c.max_score.toFixed(3), c.trigger_types.join(" "),
        Math.round(c.age_seconds) + "s"]);
      tr.className = "case" + (c.case_id === selected ? " sel" : ""); tr.dataset.id = c.case_id;
      tr.onclick = () => loadCase(c.case_id); tbody.append(tr); }
    msg(page.cases.length + " case(s)", false); } catch (e) { msg(e.message); } }
function kv(obj) { const t = el("table"); for (const [k, v] of Object.entries(obj || {}))
  t.append(row([k, v === null || v === undefined ? "" : typeof v === "object" ? JSON.stringify(v) : v]));
  return t; }
async function act(caseId, action, body) {
  try { await api("/v1/cases/" + caseId + "/" + action, {method: "POST", body: JSON.stringify(body)});
    await loadCase(caseId); await loadQueue(); } catch (e) { msg(e.message); } }
function actionForm(caseId, c) {
  const box = el("div"); const who = el("input"); who.placeholder = "your name"; who.id = "actor";
  who.value = sessionStorage.getItem("actor") || ""; who.onchange = () => sessionStorage.setItem("actor", who.value);
  const base = () => ({actor: who.value, expected_version: c.version});
  const assign = el("form"); const assignee = el("input"); assignee.placeholder = "assignee"; assignee.id = "assignee";
  assign.append(who, assignee, el("button", "Assign"));
  assign.onsubmit = e => { e.preventDefault(); act(caseId, "assign", {...base(), assignee: assignee.value}); };
  const note = el("form"); const text = el("textarea"); text.id = "note"; text.placeholder = "note";
  note.append(text, el("button", "Add note"));
  note.onsubmit = e => { e.preventDefault(); act(caseId, "notes", {...base(), text: text.value}); };
  const label = el("form"); const value = el("select"); value.id = "label_value";
  for (const v of ["FRAUD_CONFIRMED", "FRAUD_SUSPECTED", "LEGIT_CONFIRMED"]) value.append(el("option", v));
  label.append(el("span", "fraud_disposition"), value, el("button", "Assert label"));
  label.onsubmit = e => { e.preventDefault();
    act(caseId, "labels", {...base(), label_type: "fraud_disposition", label_value: value.value}); };
  const resolve = el("form"); const res = el("select"); res.id = "resolution";
  for (const v of ["FRAUD_CONFIRMED", "LEGIT_CONFIRMED", "INCONCLUSIVE"]) res.append(el("option", v));
  resolve.append(res, el("button", "Resolve"));
  resolve.onsubmit = e => { e.preventDefault(); act(caseId, "resolve", {...base(), resolution: res.value}); };
  box.append(el("h3", "Act"), assign, note, label, resolve); return box; }
async function loadCase(caseId) {
  selected = caseId;
  try { const d = await api("/v1/cases/" + caseId); const c = d.case; const box = document.getElementById("detail");
    box.replaceChildren(el("h2", "Case " + c.case_id));
    box.append(kv({state: c.state, assignee: c.assignee, resolution: c.resolution, version: c.version,
      subject: c.subject_class + " " + c.subject_id, first_event_time: c.first_event_time, opened: c.created_at}));
    box.append(el("h3", "Decision evidence"));
    for (const t of d.evidence) { const p = t.trigger_payload || {};
      box.append(kv({trigger: t.trigger_type, action: p.action, score: p.score,
        reasons: (p.reason_codes || []).join(", "), rules_fired: (p.rules_fired || []).join(", "),
        escalation: (p.escalation_reasons || []).join(", "),
        outcome: p.outcome_status, chain: p.chain_status}));
      if ((p.top_features || []).length) { const t2 = el("table");
        t2.append(row(["feature", "value", "contribution"]));
        for (const f of p.top_features) t2.append(row([f.name, f.value, f.contribution.toFixed(4)]));
        box.append(t2); } }
    box.append(el("h3", "Features"));
    for (const f of d.features) { box.append(el("div", "flow " + f.flow_id + (f.unavailable.length ?
      " (" + f.unavailable.join("; ") + ")" : ""), "muted")); if (f.graph) box.append(kv(f.graph));
      if (f.online) box.append(kv(f.online)); }
    box.append(el("h3", "Labels known now"));
    for (const l of d.labels_now) box.append(el("div", l.event_id.slice(0, 16) + "… " + l.status + " " +
      (l.label_value || "") + " (" + l.candidates.map(x => x.source_type + ":" + x.label_value).join(", ") + ")"));
    box.append(el("h3", "Timeline"));
    const tl = el("table"); tl.append(row(["seq", "event", "actor", "event time", "recorded", "detail"]));
    for (const e of d.timeline) tl.append(row([e.seq, e.event_type, e.actor_id, e.event_time || "", e.recorded_at,
      JSON.stringify(e.payload.request || e.payload)]));
    box.append(tl, actionForm(caseId, c)); } catch (e) { msg(e.message); } }
document.getElementById("keyform").onsubmit = e => { e.preventDefault();
  sessionStorage.setItem("case_api_key", document.getElementById("key").value); loadQueue(); };
document.getElementById("refresh").onclick = loadQueue;
document.getElementById("state").onchange = loadQueue;
if (sessionStorage.getItem("case_api_key")) loadQueue();
</script></body></html>
"""
