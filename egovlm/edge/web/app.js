// egovlm edge web page: live keyframe strip, question box, streamed answer, cited frames
// highlighted. Plain browser JavaScript, no build step and no dependencies.
//
// A server started with --token needs the token on API calls: open the page as
// http://HOST:PORT/#token=SECRET (the fragment never leaves the browser). Thumbnails are then
// fetched with the Authorization header and shown from blob URLs.
"use strict";

const token = (() => {
  const m = location.hash.match(/token=([^&]+)/);
  if (m) {
    sessionStorage.setItem("egovlm-token", decodeURIComponent(m[1]));
    history.replaceState(null, "", location.pathname);
  }
  return sessionStorage.getItem("egovlm-token");
})();

const $ = (id) => document.getElementById(id);
let stripVersion = -1;
let citedIds = new Set();
const blobUrls = new Map(); // keyframe id -> object URL (token mode)

function headers(extra = {}) {
  return token ? { ...extra, Authorization: `Bearer ${token}` } : extra;
}

async function api(path, options = {}) {
  const res = await fetch(path, { ...options, headers: headers(options.headers || {}) });
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${res.status}: ${detail}`);
  }
  return res;
}

async function setThumb(img, kf) {
  if (!token) { img.src = kf.thumbnail_url; return; }
  if (!blobUrls.has(kf.id)) {
    const res = await api(new URL(kf.thumbnail_url, location.href).pathname); // relative or absolute
    blobUrls.set(kf.id, URL.createObjectURL(await res.blob()));
  }
  img.src = blobUrls.get(kf.id);
}

function figure(kf, label) {
  const fig = document.createElement("figure");
  fig.className = "kf" + (citedIds.has(kf.id) ? " cited" : "");
  fig.dataset.id = kf.id;
  const img = document.createElement("img");
  img.alt = `keyframe ${kf.id} at ${kf.t.toFixed(1)} s`;
  setThumb(img, kf).catch((e) => console.warn(e));
  const cap = document.createElement("figcaption");
  cap.textContent = label || `t=${kf.t.toFixed(1)} s`;
  fig.append(img, cap);
  return fig;
}

function markCited() {
  for (const fig of document.querySelectorAll("#strip .kf")) {
    fig.classList.toggle("cited", citedIds.has(Number(fig.dataset.id)));
  }
}

async function refreshStrip() {
  try {
    const data = await (await api("/v1/keyframes")).json();
    const health = await (await api("/healthz")).json();
    const st = data.ingest;
    // /healthz per component: the ones not ok, with their last error (e.g. the camera is lost)
    const problems = Object.entries(health.components || {})
      .filter(([, c]) => c.status === "degraded")
      .map(([name, c]) => ` · ${name}: ${c.detail}${c.last_error ? ` (${c.last_error})` : ""}`);
    showCapture(health.capture);
    $("status").classList.toggle("bad", health.status === "degraded" || (!!st && st.state !== "running"));
    $("status").textContent = `${health.status}` + (st
      ? ` · ${st.source} · ${st.state} · ${st.fps_in.toFixed(1)} fps · ${st.frames_received} frames · ` +
        `${st.frames_dropped} dropped · ${data.keyframes.length} keyframes`
      : ` · ${data.keyframes.length} keyframes`) + problems.join("");
    if (data.version !== stripVersion) {
      stripVersion = data.version;
      // a thumbnail the server dropped (evicted, past retention, forgotten) goes from this page too
      const live = new Set(data.keyframes.map((kf) => kf.id));
      for (const [id, url] of blobUrls) {
        if (!live.has(id) && !citedIds.has(id)) { URL.revokeObjectURL(url); blobUrls.delete(id); }
      }
      $("strip").replaceChildren(...data.keyframes.map((kf) => figure(kf)));
    }
  } catch (e) {
    $("status").classList.add("bad");
    $("status").textContent = `offline (${e.message})`;
  }
}

// --- privacy: capture state, pause/resume, forget ------------------------------------------
const CAPTURE_TEXT = { on: "● recording", paused: "❚❚ paused", off: "○ camera off" };

function showCapture(state) {
  const el = $("capture");
  el.className = state;
  el.textContent = CAPTURE_TEXT[state] || `capture ${state}`;
  document.body.dataset.capture = state;
  $("pause-button").textContent = state === "paused" ? "Resume" : "Pause";
}

async function togglePause() {
  const resume = document.body.dataset.capture === "paused";
  try {
    const r = await (await api(`/v1/capture/${resume ? "resume" : "pause"}`, { method: "POST" })).json();
    showCapture(r.capture);
  } catch (e) { $("error").textContent = e.message; }
}

function forgetShown() {
  // Nothing the page shows or holds of the camera stays: thumbnails (and their blob copies),
  // the answer with its cited frames, the last transcript.
  for (const url of blobUrls.values()) URL.revokeObjectURL(url);
  blobUrls.clear();
  citedIds = new Set();
  stripVersion = -1;
  $("strip").replaceChildren();
  resetAnswer();
  for (const id of ["voice-transcript", "voice-note", "voice-latency"]) $(id).textContent = "";
}

async function forget() {
  try {
    await api("/v1/keyframes", { method: "DELETE" });
    forgetShown();
    document.body.dataset.forgotten = "1";
  } catch (e) { $("error").textContent = e.message; }
  refreshStrip();
}

function parseOptions(text) {
  const options = {};
  for (const line of text.split("\n")) {
    const m = line.match(/^\s*\(?([A-Z])[.):]\s+(.+?)\s*$/);
    if (m) options[m[1]] = m[2];
  }
  return Object.keys(options).length ? options : null;
}

function showAnswer(a) {
  const main = $("answer-main");
  main.classList.toggle("format-bad", !a.format_ok);
  if (a.answer) {
    main.textContent = a.options && a.options[a.answer] ? `${a.answer}. ${a.options[a.answer]}` : a.answer;
  } else {
    main.textContent = "(no parseable answer: " + (a.problems.join("; ") || "format error") + ")";
  }
  $("think").textContent = a.think ? `Reasoning: ${a.think}` : "";
  citedIds = new Set(a.cited.map((c) => c.id));
  const byId = new Map(a.frames.map((f) => [f.id, f]));
  $("cited").replaceChildren(...a.cited.map((c) =>
    figure(byId.get(c.id) || { id: c.id, t: c.t, thumbnail_url: c.thumbnail_url }, `frame ${c.index} · t=${c.t.toFixed(1)} s`)));
  for (const fig of $("cited").children) fig.classList.add("cited");
  markCited();
  const l = a.latency;
  $("latency").textContent =
    `TTFT ${l.ttft_ms.toFixed(0)} ms · total ${l.total_ms.toFixed(0)} ms · ${l.n_new_tokens} tokens at ` +
    `${l.decode_tok_s.toFixed(1)} tok/s · prefilled ${l.n_prefill_tokens} of ${l.n_prompt_tokens} prompt tokens` +
    (a.cached ? " (cached frames)" : " (from scratch)") + (a.format_ok ? "" : " · format not followed");
  document.body.dataset.answered = "1";
}

// Server-Sent Events over a POST response (EventSource only does GET).
async function readEvents(res, onEvent) {
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let cut;
    while ((cut = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, cut);
      buffer = buffer.slice(cut + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) onEvent(event, JSON.parse(data.join("\n")));
    }
  }
}

function resetAnswer() {
  delete document.body.dataset.answered;
  for (const id of ["answer-main", "answer-stream", "think", "latency", "error"]) $(id).textContent = "";
  $("cited").replaceChildren();
}

async function ask(ev) {
  ev.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  $("ask-button").disabled = true;
  resetAnswer();
  try {
    const res = await api("/v1/ask", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ question, options: parseOptions($("options").value), stream: true }),
    });
    await readEvents(res, (event, data) => {
      if (event === "token") $("answer-stream").textContent += data.text;
      else if (event === "answer") showAnswer(data);
      else if (event === "error") $("error").textContent = data.detail;
    });
  } catch (e) {
    $("error").textContent = e.message;
  } finally {
    $("ask-button").disabled = false;
  }
}

// --- voice: spoken questions (the device's microphone or this browser's) -------------------
// The server's /v1/voice reports the assistant's state and its recent spoken turns; a new turn
// (heard by the device's microphone, or uploaded) shows its transcript and answer here.
let lastTurnId = null;
let recorder = null;

function voiceLatencyText(v) {
  const waited = v.endpoint_ms > 0 ? `silence wait ${v.endpoint_ms.toFixed(0)} ms, ` : "";
  return `end of speech → transcript ${v.transcript_ms.toFixed(0)} ms (${waited}ASR ${v.asr_ms.toFixed(0)} ms) → ` +
    `first token ${v.first_token_ms.toFixed(0)} ms` +
    (v.spoken_ms != null ? ` → answer spoken ${v.spoken_ms.toFixed(0)} ms` : "");
}

function showTurn(t) {
  $("voice-transcript").textContent = t.transcript ? `You said: “${t.transcript.text}”` : "";
  $("voice-note").textContent = t.ignored ? `Not a question: ${t.ignored}` : (t.error ? `Error: ${t.error}` : "");
  $("voice-latency").textContent = t.voice_latency ? voiceLatencyText(t.voice_latency) : "";
  if (t.answer) {
    resetAnswer();
    $("answer-stream").textContent = t.answer.text;
    showAnswer(t.answer);
  }
}

async function refreshVoice() {
  try {
    const v = await (await api("/v1/voice")).json();
    $("voice").hidden = !v.enabled;
    if (!v.enabled) return;
    $("talk-button").hidden = !v.source;
    $("record-button").hidden = !(navigator.mediaDevices && window.MediaRecorder);
    $("talk-button").classList.toggle("on", v.ptt_pressed);
    const mic = v.source ? ` · mic ${v.source.state}, ${v.source.level_dbfs.toFixed(0)} dBFS` : "";
    const wake = v.wake_phrase ? ` · start with “${v.wake_phrase}”` : "";
    $("voice-state").textContent = `${v.state}${v.speaking ? " (speaking)" : ""}${mic}${wake}`;
    const turn = v.turns[0];
    if (turn && turn.id !== lastTurnId) {
      lastTurnId = turn.id;
      showTurn(turn);
    }
  } catch (e) { /* refreshStrip reports connection problems */ }
}

async function toggleTalk() {
  const pressed = !$("talk-button").classList.contains("on");
  $("talk-button").classList.toggle("on", pressed);
  $("talk-button").textContent = pressed ? "Done" : "Talk";
  try {
    await api("/v1/voice/ptt", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ pressed }),
    });
  } catch (e) { $("voice-note").textContent = e.message; }
}

async function toggleRecord() {
  const button = $("record-button");
  if (recorder) { recorder.stop(); return; }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({ audio: true });
  } catch (e) { $("voice-note").textContent = `microphone: ${e.message}`; return; }
  const chunks = [];
  recorder = new MediaRecorder(stream);
  recorder.ondataavailable = (ev) => chunks.push(ev.data);
  recorder.onstop = async () => {
    stream.getTracks().forEach((track) => track.stop());
    recorder = null;
    button.classList.remove("on");
    button.textContent = "Ask by voice";
    const blob = new Blob(chunks, { type: chunks[0] ? chunks[0].type : "audio/webm" });
    const options = parseOptions($("options").value);
    const query = options ? `?options=${encodeURIComponent(JSON.stringify(options))}` : "";
    resetAnswer();
    $("voice-note").textContent = "transcribing…";
    try {
      const a = await (await api(`/v1/ask/audio${query}`, {
        method: "POST", headers: { "Content-Type": blob.type || "audio/webm" }, body: blob,
      })).json();
      if (a.command) {  // "pause recording", "forget that": carried out, nothing to answer
        if (a.command === "forget") forgetShown();
        $("voice-note").textContent = a.spoken_text;
        showCapture(a.capture);
      } else {
        showTurn({ transcript: a.transcript, voice_latency: a.voice_latency, answer: a });
      }
    } catch (e) {
      $("voice-note").textContent = e.message;
    }
  };
  recorder.start();
  button.classList.add("on");
  button.textContent = "Stop and ask";
}

$("talk-button").addEventListener("click", toggleTalk);
$("record-button").addEventListener("click", toggleRecord);
$("hush-button").addEventListener("click", () => api("/v1/voice/stop", { method: "POST" }).catch(() => {}));

$("pause-button").addEventListener("click", togglePause);
$("forget-button").addEventListener("click", forget);
$("ask-form").addEventListener("submit", ask);
refreshStrip();
setInterval(refreshStrip, 1000);
refreshVoice();
setInterval(refreshVoice, 1000);
