// Read-only viewer of a `cai critique` trace: the prompt, the initial answer, then per round the sampled
// principle, the critique request and critique, the revision request and revision. Text only (textContent).
"use strict";

const $ = (id) => document.getElementById(id);

// With annotator tokens (a remote bind) the trace API wants the session cookie the comparison page's sign-in
// set; X-Cai-Session vouches that this request comes from the app's own script.
function get(path) {
  return fetch(path, { headers: { "X-Cai-Session": "1" } });
}

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined && text !== null) e.textContent = text;
  return e;
}

async function showList() {
  const r = await get("/api/traces?limit=1000");
  if (!r.ok) throw new Error("sign in on the comparison page first (annotator token)");
  const data = await r.json();
  $("count").textContent = `${data.total} conversations`;
  $("empty").hidden = data.total > 0;
  const list = $("trace-list");
  list.replaceChildren();
  for (const item of data.items) {
    const li = el("li", null, `${item.id} · ${item.status} · ${item.rounds} round(s) · ${String(item.prompt).slice(0, 120)}`);
    li.addEventListener("click", () => { location.hash = encodeURIComponent(item.id); });
    list.append(li);
  }
  list.hidden = false;
  $("trace").hidden = true;
}

async function showTrace(id) {
  const r = await get(`/api/traces/${encodeURIComponent(id)}`);
  if (!r.ok) { location.hash = ""; return; }
  const c = await r.json();
  $("trace-title").textContent = `${c.id} (${c.status}${c.error ? ": " + c.error : ""})`;
  $("trace-prompt").textContent = c.prompt;
  $("trace-init").textContent = c.init_response;
  const rounds = $("trace-rounds");
  rounds.replaceChildren();
  for (const rd of c.rounds) {
    const box = el("div", "trace-round");
    box.append(el("h4", null, `Round ${rd.round}: principle ${rd.principle_id}`));
    if (rd.principle_text) box.append(el("div", "muted", rd.principle_text));
    for (const [label, key] of [["critique request", "critique_request"], ["critique", "critique"],
                                ["revision request", "revision_request"], ["revision", "revision"]]) {
      box.append(el("div", "label", label), el("div", "content text", rd[key] ?? "(not reached)"));
    }
    rounds.append(box);
  }
  $("trace-list").hidden = true;
  $("trace").hidden = false;
}

function route() {
  const id = decodeURIComponent(location.hash.slice(1));
  (id ? showTrace(id) : showList()).catch((e) => { $("count").textContent = e.message; });
}

document.addEventListener("DOMContentLoaded", () => {
  $("back").addEventListener("click", (ev) => { ev.preventDefault(); location.hash = ""; });
  window.addEventListener("hashchange", route);
  route();
});
