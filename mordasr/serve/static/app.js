// The mordasr page: stage files, submit one job per image, poll progress, compare results.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { options: null, staged: [], selected: null, userSelected: false };
// The server's token: every API call carries it, so other sites' pages cannot drive the server.
const token = document.querySelector('meta[name="mordasr-token"]').content;

// A link to the API (image, download) that carries the token, as links cannot send headers.
function withToken(path) {
  const url = new URL(path, window.location.href);
  url.searchParams.set("token", token);
  return url.pathname + url.search;
}

async function api(path, init = {}) {
  const headers = new Headers(init.headers);
  headers.set("X-Mordasr-Token", token);
  const response = await fetch(path, { ...init, headers });
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const detail = body && body.detail ? body.detail : `${response.status} ${response.statusText}`;
    throw new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return body;
}

function fillSelect(select, items, chosen) {
  select.replaceChildren(
    ...items.map(([value, label]) => {
      const option = new Option(label, String(value));
      option.selected = String(value) === String(chosen);
      return option;
    }),
  );
}

function showError(message) {
  const item = document.createElement("li");
  item.textContent = String(message).replace(/\s+/g, " ").trim();
  item.title = item.textContent;
  const list = $("errors");
  list.prepend(item);
  while (list.children.length > 5) list.lastChild.remove();
}

function renderStaged() {
  $("staged").replaceChildren(
    ...state.staged.map((file) => {
      const item = document.createElement("li");
      item.textContent = `${file.name} (${Math.ceil(file.size / 1024)} KB)`;
      return item;
    }),
  );
  $("start").disabled = state.staged.length === 0;
  $("start").textContent = state.staged.length > 1 ? `Upscale ${state.staged.length} images` : "Upscale";
}

function stage(files) {
  state.staged.push(...files);
  renderStaged();
}

async function start() {
  const files = state.staged.splice(0);
  renderStaged();
  for (const file of files) {
    const form = new FormData();
    form.append("file", file, file.name);
    form.append("model", $("model").value);
    form.append("tile", $("tile").value);
    form.append("format", $("format").value);
    form.append("strength", $("strength").value);
    if ($("outscale").value) form.append("outscale", $("outscale").value);
    try {
      await api("/api/jobs", { method: "POST", body: form });
    } catch (error) {
      showError(error.message);
    }
    refresh();
  }
}

function stateText(job) {
  switch (job.state) {
    case "running":
      return job.tiles_total > 0 ? `running ${job.tiles_done}/${job.tiles_total}` : "running";
    case "done":
      return `done in ${job.seconds}s`;
    default:
      return job.state;
  }
}

function jobRow(job) {
  let row = document.querySelector(`.job[data-id="${job.id}"]`);
  if (row) return row;
  row = document.createElement("li");
  row.className = "job";
  row.dataset.id = job.id;
  row.innerHTML =
    '<span class="name"></span><span class="state"></span><progress max="1"></progress>' +
    '<span class="actions"><button type="button" class="compare secondary">Compare</button>' +
    '<a class="download button" download>Download</a>' +
    '<button type="button" class="cancel secondary">Cancel</button></span>' +
    '<div class="error"></div>';
  row.querySelector(".compare").addEventListener("click", () => {
    state.userSelected = true;
    select(job.id);
  });
  row.querySelector(".cancel").addEventListener("click", async () => {
    try {
      await api(`/api/jobs/${job.id}/cancel`, { method: "POST" });
    } catch (error) {
      showError(error.message);
    }
    refresh();
  });
  $("jobs").append(row);
  return row;
}

function renderJob(job) {
  const row = jobRow(job);
  row.dataset.state = job.state;
  row.classList.toggle("selected", job.id === state.selected);
  row.querySelector(".name").textContent = job.name;
  row.querySelector(".name").title = `${job.name}: ${job.input_size.join("x")}, ${job.settings.model}`;
  row.querySelector(".state").textContent = stateText(job);
  const bar = row.querySelector("progress");
  if (job.state === "done") bar.value = 1;
  else if (job.state === "running" && job.tiles_total > 0) bar.value = job.tiles_done / job.tiles_total;
  else if (job.state === "running") bar.removeAttribute("value");
  else bar.value = 0;
  const finished = ["done", "failed", "cancelled"].includes(job.state);
  row.querySelector(".cancel").hidden = finished;
  row.querySelector(".compare").hidden = job.state !== "done";
  const download = row.querySelector(".download");
  download.hidden = !job.download_url;
  if (job.download_url) download.href = withToken(job.download_url);
  const error = row.querySelector(".error");
  error.textContent = job.error || "";
  error.hidden = !job.error;
}

async function refresh() {
  let jobs;
  try {
    jobs = (await api("/api/jobs")).jobs;
  } catch {
    return; // the server stopped or is busy; the next poll tries again
  }
  jobs.forEach(renderJob);
  $("empty").hidden = jobs.length > 0;
  const done = jobs.filter((job) => job.state === "done");
  $("zip").hidden = done.length === 0;
  if (!state.userSelected && done.length && state.selected !== done[done.length - 1].id) {
    select(done[done.length - 1].id, jobs);
  }
  state.jobs = jobs;
}

function select(id, jobs = state.jobs) {
  const job = jobs.find((item) => item.id === id);
  if (!job || job.state !== "done") return;
  state.selected = id;
  document.querySelectorAll(".job").forEach((row) => {
    row.classList.toggle("selected", row.dataset.id === id);
  });
  $("compare").hidden = false;
  const video = job.kind === "video";
  $("video").hidden = !video;
  $("stage").hidden = video;
  document.querySelectorAll("#compare .row label").forEach((label) => {
    label.hidden = video;
  });
  if (video) {
    $("compare-title").textContent = `Result: ${job.name}`;
    $("compare-info").textContent =
      `input ${job.input_size.join("x")} -> result ${job.result_size.join("x")} ` +
      `(${job.settings.model}, ${job.seconds}s), with its sound.`;
    $("video").src = withToken(job.result_url);
    return;
  }
  $("video").removeAttribute("src");
  $("compare-title").textContent = `Before / after: ${job.name}`;
  $("compare-info").textContent =
    `input ${job.input_size.join("x")} -> result ${job.result_size.join("x")} ` +
    `(${job.settings.model}, ${job.seconds}s). Drag on the image or use the split slider; ` +
    "100% zoom shows the result at full resolution.";
  $("before").src = withToken(job.input_url);
  $("after").src = withToken(job.result_url);
}

function applyZoom() {
  const after = $("after");
  if (!after.naturalWidth) return;
  const width = after.naturalWidth;
  const height = after.naturalHeight;
  let zoom = Number($("zoom").value);
  if ($("zoom").value === "fit") {
    const stage = $("stage");
    zoom = Math.min(stage.clientWidth / width, (window.innerHeight * 0.75) / height);
  }
  const frame = $("frame");
  frame.style.width = `${Math.round(width * zoom)}px`;
  frame.style.height = `${Math.round(height * zoom)}px`;
  frame.classList.toggle("pixelated", zoom >= 2);
}

function setSplit(percent) {
  const value = Math.min(100, Math.max(0, percent));
  $("slider").value = String(value);
  $("before").style.clipPath = `inset(0 ${100 - value}% 0 0)`;
  $("divider").style.left = `calc(${value}% - 1px)`;
}

function wireCompare() {
  $("after").addEventListener("load", applyZoom);
  $("zoom").addEventListener("change", applyZoom);
  window.addEventListener("resize", applyZoom);
  $("slider").addEventListener("input", () => setSplit(Number($("slider").value)));
  const frame = $("frame");
  let dragging = false;
  const follow = (event) => {
    const box = frame.getBoundingClientRect();
    setSplit(((event.clientX - box.left) / box.width) * 100);
  };
  frame.addEventListener("pointerdown", (event) => {
    dragging = true;
    frame.setPointerCapture(event.pointerId);
    follow(event);
  });
  frame.addEventListener("pointermove", (event) => dragging && follow(event));
  frame.addEventListener("pointerup", () => {
    dragging = false;
  });
  setSplit(50);
}

function wireUpload() {
  const drop = $("drop");
  $("files").addEventListener("change", (event) => {
    stage([...event.target.files]);
    event.target.value = "";
  });
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => {
      event.preventDefault();
      drop.classList.add("over");
    });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  // Files dropped anywhere on the page are staged (instead of the browser opening them).
  window.addEventListener("dragover", (event) => event.preventDefault());
  window.addEventListener("drop", (event) => {
    event.preventDefault();
    stage([...event.dataTransfer.files]);
  });
  $("start").addEventListener("click", start);
  $("strength").addEventListener("input", () => {
    $("strength-value").textContent = Number($("strength").value).toFixed(2);
  });
}

async function init() {
  const options = await api("/api/options");
  state.options = options;
  $("zip").href = withToken("/api/results.zip");
  $("version").textContent = `v${options.version}`;
  fillSelect($("model"), options.models.map((name) => [name, name]), options.default_model);
  fillSelect(
    $("tile"),
    options.tiles.map((tile) => [tile, tile === 0 ? "whole image" : String(tile)]),
    options.default_tile,
  );
  fillSelect(
    $("format"),
    options.formats.map((format) => [format, format === "auto" ? "same as input" : format]),
    "auto",
  );
  fillSelect($("outscale"), [["", "model's (x4)"], [1, "x1"], [2, "x2"], [3, "x3"], [4, "x4"]], "");
  wireUpload();
  wireCompare();
  state.jobs = [];
  await refresh();
  setInterval(refresh, 800);
}

init().catch((error) => showError(`cannot start the page: ${error.message}`));
