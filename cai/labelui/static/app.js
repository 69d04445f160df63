// The comparison page. Model output is only ever assigned to textContent (never innerHTML), and the
// server's Content-Security-Policy forbids inline script: a response containing <script> is shown as text.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { headers: null, pair: null, answered: false, shownAt: 0, busy: false };

// With annotator tokens the token lives in an HttpOnly session cookie (set by the server from the link's
// ?token= or by the sign-in form); this script never holds it and only vouches with X-Cai-Session.
function identity(cfg) {
  if (cfg.tokens_required) return { "X-Cai-Session": "1" };
  const name = localStorage.getItem("cai-annotator");
  return name ? { "X-Cai-Annotator": name } : null;
}

async function api(path, body) {
  const init = { headers: { ...state.headers } };
  if (body !== undefined) {
    init.method = "POST";
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(typeof data.detail === "string" ? data.detail : `HTTP ${r.status}`);
  return data;
}

function showProgress(p) {
  const answered = p.labelled + p.skipped;
  $("progress").textContent = `${answered} / ${p.total} answered (${p.labelled} labelled, ${p.skipped} skipped)`;
  $("progress-bar").style.width = p.total ? `${(100 * answered) / p.total}%` : "0";
}

function renderConversation(messages) {
  const box = $("conversation");
  box.replaceChildren();
  for (const m of messages) {
    const turn = document.createElement("div");
    turn.className = "turn";
    const role = document.createElement("div");
    role.className = "role";
    role.textContent = m.role;
    const content = document.createElement("div");
    content.className = "content";
    content.textContent = m.content;
    turn.append(role, content);
    box.append(turn);
  }
}

async function loadNext() {
  $("error").textContent = "";
  const data = await api("/api/next");
  $("who").textContent = `annotator: ${data.annotator}`;
  showProgress(data.progress);
  if (!data.pair) {
    $("work").hidden = true;
    $("done").hidden = false;
    $("done-summary").textContent = $("progress").textContent;
    return;
  }
  state.pair = data.pair;
  state.answered = false;
  state.shownAt = performance.now();
  renderConversation(data.pair.prompt);
  $("left-text").textContent = data.pair.left;
  $("right-text").textContent = data.pair.right;
  for (const id of ["left", "right"]) {
    $(id).classList.remove("picked", "ai");
    $(`${id}-you`).hidden = true;
    $(`${id}-ai`).hidden = true;
  }
  $("note").value = "";
  $("reveal").hidden = true;
  for (const b of document.querySelectorAll("[data-choice]")) b.disabled = false;
  $("work").hidden = false;
}

const CHOICE_TEXT = { left: "A is better", right: "B is better", tie: "a tie", skip: "skip" };

async function answer(choice) {
  if (!state.pair || state.answered || state.busy) return;
  state.busy = true;
  try {
    const seconds = Math.round((performance.now() - state.shownAt) / 100) / 10;
    const res = await api("/api/label", { pair_id: state.pair.id, choice, note: $("note").value, seconds });
    state.answered = true;
    for (const b of document.querySelectorAll("[data-choice]")) b.disabled = true;
    if (choice === "left" || choice === "right") {
      $(choice).classList.add("picked");
      $(`${choice}-you`).hidden = false;
    }
    showProgress(res.progress);
    reveal(choice, res.reveal);
  } catch (e) {
    $("error").textContent = `not saved: ${e.message}`;
  } finally {
    state.busy = false;
  }
}

function reveal(choice, r) {
  $("reveal-you").textContent = `Saved: ${CHOICE_TEXT[choice]}.`;
  if (r.ai) {
    $(r.ai).classList.add("ai");
    $(`${r.ai}-ai`).hidden = false;
    const p = r.p_chosen === null ? "" : ` with p = ${r.p_chosen.toFixed(2)}`;
    const who = r.source === "prefs" && r.p_chosen === null ? "The revision (by construction)" : "The AI judge";
    $("reveal-ai").textContent = `${who} preferred ${r.ai === "left" ? "A" : "B"}${p}.`;
  } else {
    $("reveal-ai").textContent = "No AI label for this pair.";
  }
  const list = $("reveal-principles");
  list.replaceChildren();
  for (const pr of r.principles) {
    const li = document.createElement("li");
    li.textContent = pr.text ? `${pr.id}: ${pr.text}` : pr.id;
    list.append(li);
  }
  $("reveal").hidden = false;
  $("next").focus();
}

function onKey(ev) {
  if (ev.target instanceof HTMLTextAreaElement || ev.target instanceof HTMLInputElement) {
    if (ev.key === "Escape") ev.target.blur();
    return;
  }
  if (ev.ctrlKey || ev.metaKey || ev.altKey || $("work").hidden) return;
  const k = ev.key.toLowerCase();
  if (!state.answered) {
    const choice = { a: "left", b: "right", t: "tie", s: "skip" }[k];
    if (choice) { ev.preventDefault(); answer(choice); }
  } else if (k === "enter" || k === "n") {
    ev.preventDefault();
    loadNext().catch((e) => { $("error").textContent = e.message; });
  }
}

async function start() {
  const cfg = await (await fetch("/api/config")).json();
  $("dataset").textContent = cfg.data;
  state.headers = identity(cfg);
  if (state.headers) {
    try {
      await loadNext();
      return;
    } catch (e) {  // no session yet, or a stored name or token the server refuses: ask
      localStorage.removeItem("cai-annotator");
      if (!cfg.tokens_required) $("login-error").textContent = e.message;
    }
  }
  $("login").hidden = false;
  $("login-name").hidden = cfg.tokens_required;
  $("login-token").hidden = !cfg.tokens_required;
  $(cfg.tokens_required ? "login-token" : "login-name").focus();
  $("login-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    try {
      if (cfg.tokens_required) {
        state.headers = identity(cfg);
        await api("/api/session", { token: $("login-token").value.trim() });
      } else {
        localStorage.setItem("cai-annotator", $("login-name").value.trim());
        state.headers = identity(cfg);
      }
      await loadNext();
      $("login").hidden = true;
      $("login-error").textContent = "";
    } catch (e) {
      $("login-error").textContent = e.message;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  for (const b of document.querySelectorAll("[data-choice]")) {
    b.addEventListener("click", () => answer(b.dataset.choice));
  }
  $("next").addEventListener("click", () => loadNext().catch((e) => { $("error").textContent = e.message; }));
  document.addEventListener("keydown", onKey);
  start().catch((e) => { $("error").textContent = e.message; });
});
