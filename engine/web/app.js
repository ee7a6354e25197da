// delf-engine web page: plain JavaScript over the server's JSON API.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { health: null, photos: [] };

function el(tag, props = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function api(path, options = {}) {
  const response = await fetch(path, options);
  let body = null;
  try { body = await response.json(); } catch (e) { /* not JSON */ }
  if (!response.ok) {
    throw new Error((body && body.error) || `${response.status} ${response.statusText}`);
  }
  return body;
}

const fmt = (x, digits = 3) => (x === null || x === undefined ? "–" : Number(x).toFixed(digits));
const photoUrl = (name, side) =>
  "/photos/" + name.split("/").map(encodeURIComponent).join("/") + "/image" + (side ? `?max_side=${side}` : "");

// ------------------------------------------------------------------ views

function showView() {
  const view = (location.hash || "#search").slice(1);
  const known = ["search", "compare", "photos"].includes(view) ? view : "search";
  for (const section of document.querySelectorAll(".view")) section.hidden = section.id !== `view-${known}`;
  for (const tab of document.querySelectorAll(".tabs a")) tab.classList.toggle("active", tab.dataset.view === known);
  if (known === "photos") loadPhotos();
}

async function refreshStatus() {
  try {
    const h = await api("/health");
    state.health = h;
    $("index-status").textContent =
      `${h.photos} photo${h.photos === 1 ? "" : "s"} indexed · threshold ${fmt(h.threshold, 2)}`;
  } catch (e) {
    $("index-status").textContent = "server unreachable";
  }
  try {
    const s = await api("/stats");
    const lat = s.p50_ms === null ? "" : ` · p50 ${Math.round(s.p50_ms)} ms · p95 ${Math.round(s.p95_ms)} ms`;
    $("stats").textContent = `${s.queries_served} search${s.queries_served === 1 ? "" : "es"} served${lat} · ` +
      `${s.descriptors} descriptors · ` +
      `index generation ${s.generation}`;
  } catch (e) { /* the status line says it */ }
}

// ------------------------------------------------------------------ drop zones

function dropzone(zoneId, inputId, previewId, onFile) {
  const zone = $(zoneId), input = $(inputId), preview = $(previewId);
  const take = (file) => {
    if (!file) return;
    if (preview.src) URL.revokeObjectURL(preview.src);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    zone.classList.add("filled");
    onFile(file, preview);
  };
  input.addEventListener("change", () => take(input.files[0]));
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    take(e.dataTransfer.files[0]);
  });
}

// ------------------------------------------------------------------ search

function setVerdict(kind, label, detail) {
  $("verdict").className = `verdict ${kind}`;
  $("verdict-label").textContent = label;
  $("verdict-detail").replaceChildren(...(Array.isArray(detail) ? detail : [detail]));
  $("meter").hidden = true;
  $("verdict-meta").textContent = "";
}

function showQueryInfo(file, preview) {
  const info = $("query-info");
  const size = file.size > 1048576 ? `${(file.size / 1048576).toFixed(1)} MB` : `${Math.ceil(file.size / 1024)} kB`;
  const show = () => info.replaceChildren(el("b", { text: file.name, title: file.name }),
    el("span", { text: preview.naturalWidth ? `${preview.naturalWidth} × ${preview.naturalHeight} · ${size}` : size }));
  show();
  preview.onload = show;
  info.hidden = false;
}

async function runSearch(file, preview) {
  showQueryInfo(file, preview);
  setVerdict("busy", "Searching…", `${file.name}: extracting features, searching, verifying candidates`);
  $("search-picture").hidden = true;
  $("search-placeholder").textContent = "";
  $("results").replaceChildren();
  $("results-note").textContent = "";
  const form = new FormData();
  form.append("photo", file, file.name);
  form.append("top", $("search-top").value || "5");
  if ($("search-threshold").value) form.append("threshold", $("search-threshold").value);
  form.append("draw", "true");
  try {
    renderAnswer(await api("/search", { method: "POST", body: form }));
  } catch (e) {
    setVerdict("error", "Could not search", e.message);
  }
  refreshStatus();
}

function renderAnswer(a) {
  const best = a.results[0];
  const match = a.decision === "match";
  const detail = best
    ? [match ? "Same place as " : "Closest photo ", el("b", { text: best.name }),
       ` · confidence ${fmt(a.confidence)} ${a.confidence >= a.threshold ? "≥" : "<"} threshold ${fmt(a.threshold, 2)}`]
    : ["No candidate in the index."];
  if (a.predicted_label) detail.push(" · label ", el("b", { text: a.predicted_label }));
  setVerdict(match ? "match" : "nomatch", match ? "MATCH" : "No match", detail);
  $("meter").hidden = false;
  $("meter-fill").style.width = `${Math.max(1, a.confidence * 100)}%`;
  $("meter-threshold").style.left = `calc(${a.threshold * 100}% - 1px)`;
  const t = a.timing_ms || {};
  $("verdict-meta").textContent = `${a.n_query_features} query features · search ${Math.round(t.search)} ms · ` +
    `verification ${Math.round(t.verify)} ms · ${Math.round(t.total)} ms in all`;
  if (a.picture_url) {
    $("search-picture-img").src = a.picture_url;
    $("search-picture-caption").textContent =
      `${best.inliers} inliers between ${a.query} (left) and ${best.name} (right)`;
    $("search-picture").hidden = false;
  } else {
    $("search-placeholder").textContent = !best ? "The index holds no photo to compare with."
      : best.inliers <= 0 ? `No geometric match: no indexed photo shares verified features with ${a.query}.`
      : state.health && !state.health.images ? "Start the server with --db-images to see the inliers drawn."
      : "No picture of the inliers for this result.";
  }
  $("results-note").textContent = a.results.length
    ? `${a.results.length} shown · ★ at or above the threshold`
    : "";
  const cards = a.results.map((r, i) => resultCard(r, i + 1, a.threshold));
  $("results").replaceChildren(...(cards.length ? cards : [el("div", { class: "empty", text: "No results." })]));
}

function resultCard(r, rank, threshold) {
  const above = r.confidence >= threshold;
  const thumb = el("div", { class: "thumb" }, [
    r.image_url
      ? el("img", { src: `${r.image_url}?max_side=480`, alt: r.name, loading: "lazy" })
      : el("div", { class: "noimg", text: "no image (start the server with --db-images)" }),
    el("span", { class: "rank", text: `#${rank}` }),
  ]);
  // A photo diffusion brought (or lifted) names the result it came through.
  const inliers = (r.inliers < 0 ? "not verified" : `${r.inliers} inliers`) + (r.via ? ` · via ${r.via}` : "");
  return el("div", { class: `card result${rank === 1 && above ? " best" : ""}` }, [
    thumb,
    el("div", { class: "body" }, [
      el("div", { class: "title", title: r.name, text: r.name }),
      el("div", { class: "figures" }, [
        el("span", { class: `conf ${above ? "above" : "below"}`, text: `${above ? "★ " : ""}${fmt(r.confidence)}` }),
        el("span", { text: inliers + (r.label ? ` · ${r.label}` : "") }),
      ]),
    ]),
  ]);
}

// ------------------------------------------------------------------ compare

const pair = [null, null];

async function runCompare() {
  const button = $("compare-run");
  button.disabled = true;
  button.textContent = "Verifying…";
  const form = new FormData();
  form.append("photo1", pair[0], pair[0].name);
  form.append("photo2", pair[1], pair[1].name);
  $("compare-result").hidden = false;
  try {
    const m = await api("/match", { method: "POST", body: form });
    $("compare-verdict").className = `verdict ${m.match ? "match" : "nomatch"}`;
    $("compare-label").textContent = m.match ? "MATCH" : "No match";
    $("compare-detail").textContent = `${m.inliers} inliers (${m.unique_inliers} unique) of ${m.putative} ` +
      `putative matches · confidence ${fmt(m.confidence)} (threshold ${fmt(m.threshold, 2)})`;
    $("compare-picture").src = m.picture_url;
    $("compare-picture").hidden = false;
  } catch (e) {
    $("compare-verdict").className = "verdict error";
    $("compare-label").textContent = "Could not verify";
    $("compare-detail").textContent = e.message;
    $("compare-picture").hidden = true;
  }
  button.disabled = false;
  button.textContent = "Verify the two photos";
}

// ------------------------------------------------------------------ photos

function authHeaders() {
  const token = $("token").value.trim();
  sessionStorage.setItem("delf-token", token);
  return token ? { Authorization: `Bearer ${token}` } : {};
}

function notice(text, isError) {
  const box = $("add-notice");
  box.hidden = false;
  box.className = `notice${isError ? " error" : ""}`;
  box.textContent = text;
}

async function loadPhotos() {
  try {
    const p = await api("/photos");
    state.photos = p.photos;
    state.images = p.images;
    renderGallery();
  } catch (e) {
    notice(`Could not list the photos: ${e.message}`, true);
  }
}

function renderGallery() {
  const filter = $("photo-filter").value.trim().toLowerCase();
  const names = state.photos.filter((n) => n.toLowerCase().includes(filter));
  $("photo-count").textContent = `(${state.photos.length})`;
  const shown = names.slice(0, 500).map((name) => el("div", { class: "card photo" }, [
    state.images
      ? el("img", { src: photoUrl(name, 300), alt: name, loading: "lazy" })
      : el("div", { class: "noimg", text: "no image" }),
    el("div", { class: "caption" }, [
      el("span", { title: name, text: name }),
      el("button", { title: `Remove ${name} from the index`, "aria-label": `Remove ${name}`, text: "✕",
                     onclick: () => removePhoto(name) }),
    ]),
  ]));
  $("gallery").replaceChildren(...(shown.length ? shown : [el("div", { class: "empty", text: "No photos." })]));
}

async function removePhoto(name) {
  if (!confirm(`Remove ${name} from the index?`)) return;
  try {
    await api(photoUrl(name).replace(/\/image$/, ""), { method: "DELETE", headers: authHeaders() });
    notice(`Removed ${name}.`);
  } catch (e) {
    notice(`Could not remove ${name}: ${e.message}`, true);
  }
  loadPhotos();
  refreshStatus();
}

async function addPhotos(event) {
  event.preventDefault();
  const files = $("add-files").files;
  if (!files.length) { notice("Choose one or more photos first.", true); return; }
  const form = new FormData();
  for (const f of files) form.append("photo", f, f.name);
  $("add-run").disabled = true;
  notice(`Adding ${files.length} photo${files.length === 1 ? "" : "s"}…`);
  try {
    const r = await api("/photos", { method: "POST", body: form, headers: authHeaders() });
    notice(`Added ${r.added.join(", ")}; the index now holds ${r.count} photos.`);
    $("add-files").value = "";
  } catch (e) {
    notice(`Could not add: ${e.message}`, true);
  }
  $("add-run").disabled = false;
  loadPhotos();
  refreshStatus();
}

// ------------------------------------------------------------------ start

dropzone("search-drop", "search-file", "search-preview", runSearch);
dropzone("compare-drop-1", "compare-file-1", "compare-preview-1", (f) => { pair[0] = f; $("compare-run").disabled = !pair[1]; });
dropzone("compare-drop-2", "compare-file-2", "compare-preview-2", (f) => { pair[1] = f; $("compare-run").disabled = !pair[0]; });
$("compare-run").addEventListener("click", runCompare);
$("add-form").addEventListener("submit", addPhotos);
$("photo-filter").addEventListener("input", renderGallery);
$("token").value = sessionStorage.getItem("delf-token") || "";
window.addEventListener("hashchange", showView);
showView();
refreshStatus();
setInterval(refreshStatus, 15000);
