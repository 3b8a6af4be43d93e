// srcube view: the cube on a canvas map in its own pixel grid and CRS. Tiles come from this server only
// (/tiles/LEVEL/TY/TX.png?t=DATE&layer=LAYER); the level is the coarsest one that still has a pixel per screen pixel,
// and only the tiles in view are asked for. Everything the cube says is shown as text, never as markup.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("canvas");
  const ctx = canvas.getContext("2d");
  const state = {t: 0, composite: "true", zoom: 1, cx: 0, cy: 0, swipe: false, swipePos: 0.5, overlays: {}};
  const cache = new Map(); // tile URL -> {img, done, ok}
  const CACHE_MAX = 1500;
  let info = null;
  let needed = [];
  let pending = 0;
  let drawQueued = false;
  let firstPaint = null;
  let requested = 0;

  // --- view geometry ------------------------------------------------------------------------------------------

  function size() {
    return {w: canvas.clientWidth, h: canvas.clientHeight};
  }

  function levelFor(zoom) {
    // the coarsest level with at least one of its pixels per screen pixel (full resolution when zoomed in)
    let best = info.levels[0];
    for (const lvl of info.levels) if (lvl.factor <= 1 / zoom + 1e-9) best = lvl;
    return best;
  }

  function origin() {
    // screen position of the cube's pixel (0, 0) corner, on whole screen pixels
    const {w, h} = size();
    return {ox: Math.round(w / 2 - state.cx * state.zoom), oy: Math.round(h / 2 - state.cy * state.zoom)};
  }

  function fitZoom() {
    const {w, h} = size();
    return Math.min(w / info.width, h / info.height);
  }

  function clampView() {
    const lo = fitZoom() / 8, hi = 64;
    state.zoom = Math.min(hi, Math.max(lo, state.zoom));
    state.cx = Math.min(info.width, Math.max(0, state.cx));
    state.cy = Math.min(info.height, Math.max(0, state.cy));
  }

  function tilesIn(lvl, x0, x1, y0, y1) {
    // [ty, tx] of the level's tiles that intersect the screen rectangle x0..x1, y0..y1
    const {ox, oy} = origin();
    const span = info.tile * lvl.factor * state.zoom;
    const [rows, cols] = lvl.tiles;
    const out = [];
    const tx0 = Math.max(0, Math.floor((x0 - ox) / span)), tx1 = Math.min(cols - 1, Math.floor((x1 - 1 - ox) / span));
    const ty0 = Math.max(0, Math.floor((y0 - oy) / span)), ty1 = Math.min(rows - 1, Math.floor((y1 - 1 - oy) / span));
    for (let ty = ty0; ty <= ty1; ty++) for (let tx = tx0; tx <= tx1; tx++) out.push([ty, tx]);
    return out;
  }

  // --- tiles --------------------------------------------------------------------------------------------------

  function tileUrl(factor, ty, tx, layer) {
    return `/tiles/${factor}/${ty}/${tx}.png?t=${state.t}&layer=${encodeURIComponent(layer)}`;
  }

  function tile(url) {
    let e = cache.get(url);
    if (e) {
      cache.delete(url); // most recently used last
      cache.set(url, e);
      return e;
    }
    e = {img: new Image(), done: false, ok: false};
    pending++;
    requested++;
    e.img.onload = () => { e.done = true; e.ok = true; pending--; schedule(); };
    e.img.onerror = () => { e.done = true; pending--; schedule(); };
    e.img.src = url;
    cache.set(url, e);
    for (const [key, old] of cache) { // forget the least recently used finished tiles
      if (cache.size <= CACHE_MAX) break;
      if (old.done) cache.delete(key);
    }
    return e;
  }

  function drawLayer(layer, x0, x1, y0, y1, want) {
    const {w, h} = size();
    x0 = Math.max(0, x0); x1 = Math.min(w, x1); y0 = Math.max(0, y0); y1 = Math.min(h, y1);
    if (x1 <= x0 || y1 <= y0) return;
    const lvl = levelFor(state.zoom);
    const {ox, oy} = origin();
    const span = info.tile * lvl.factor * state.zoom;
    ctx.save();
    ctx.beginPath();
    ctx.rect(x0, y0, x1 - x0, y1 - y0);
    ctx.clip();
    ctx.imageSmoothingEnabled = lvl.factor * state.zoom < 1;
    for (const [ty, tx] of tilesIn(lvl, x0, x1, y0, y1)) {
      const url = tileUrl(lvl.factor, ty, tx, layer);
      want.push(url);
      const e = tile(url);
      const sx = ox + tx * span, sy = oy + ty * span;
      if (e.ok) {
        const k = lvl.factor * state.zoom;
        ctx.drawImage(e.img, sx, sy, e.img.naturalWidth * k, e.img.naturalHeight * k);
      } else {
        drawFallback(layer, lvl, ty, tx, sx, sy, span);
      }
    }
    ctx.restore();
  }

  function drawFallback(layer, lvl, ty, tx, sx, sy, span) {
    // while a tile loads: a coarser level's tile that is already here, cut to the tile's place (nothing is asked for)
    for (const coarse of info.levels) {
      if (coarse.factor <= lvl.factor) continue;
      const r = coarse.factor / lvl.factor;
      const pty = Math.floor(ty / r), ptx = Math.floor(tx / r);
      const e = cache.get(tileUrl(coarse.factor, pty, ptx, layer));
      if (!e || !e.ok) continue;
      const {ox, oy} = origin();
      const k = coarse.factor * state.zoom;
      ctx.save();
      ctx.beginPath();
      ctx.rect(sx, sy, span, span);
      ctx.clip();
      ctx.imageSmoothingEnabled = k < 1;
      const pspan = info.tile * k;
      ctx.drawImage(e.img, ox + ptx * pspan, oy + pty * pspan, e.img.naturalWidth * k, e.img.naturalHeight * k);
      ctx.restore();
      return;
    }
  }

  function draw() {
    drawQueued = false;
    if (!info) return;
    const dpr = window.devicePixelRatio || 1;
    const {w, h} = size();
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(h * dpr);
    }
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.clearRect(0, 0, w, h);
    const want = [];
    const split = state.swipe ? Math.round(state.swipePos * w) : w;
    drawLayer(state.composite, 0, split, 0, h, want);
    if (state.swipe) drawLayer(`${state.composite}-input`, split, w, 0, h, want);
    for (const o of info.overlays) {
      const ov = state.overlays[o.id];
      if (!ov.on || ov.opacity <= 0) continue;
      ctx.globalAlpha = ov.opacity;
      drawLayer(o.id, 0, w, 0, h, want);
      ctx.globalAlpha = 1;
    }
    if (state.swipe) {
      ctx.fillStyle = "#fff";
      ctx.fillRect(split - 1, 0, 2, h);
      const labels = $("swipe-labels");
      labels.hidden = false;
      $("swipe-left").style.right = `${w - split + 8}px`;
      $("swipe-right").style.left = `${split + 8}px`;
    } else {
      $("swipe-labels").hidden = true;
    }
    needed = want;
    const lvl = levelFor(state.zoom);
    const res = Math.abs(info.transform[0]);
    $("status").textContent = `level x${lvl.factor} (${lvl.factor === 1 ? "full resolution" : lvl.source}); ` +
      `1 screen pixel = ${(1 / state.zoom).toPrecision(3)} cube pixels (${(res / state.zoom).toPrecision(3)} m); ` +
      `${want.length} tiles in view, ${pending} loading`;
    if (firstPaint === null && idle()) firstPaint = performance.now();
  }

  function schedule() {
    if (!drawQueued) {
      drawQueued = true;
      requestAnimationFrame(draw);
    }
  }

  function idle() {
    return !drawQueued && needed.every((url) => { const e = cache.get(url); return e && e.done; });
  }

  // --- state: controls and the URL's hash ---------------------------------------------------------------------

  function readHash() {
    const p = new URLSearchParams(location.hash.slice(1));
    const num = (k) => (p.has(k) && isFinite(parseFloat(p.get(k))) ? parseFloat(p.get(k)) : null);
    if (num("t") !== null) state.t = Math.min(info.dates.length - 1, Math.max(0, Math.round(num("t"))));
    if (p.has("c") && info.composites.some((c) => c.id === p.get("c"))) state.composite = p.get("c");
    if (num("z") !== null && num("z") > 0) state.zoom = num("z");
    if (num("x") !== null) state.cx = num("x");
    if (num("y") !== null) state.cy = num("y");
    if (num("swipe") !== null) { state.swipe = true; state.swipePos = Math.min(1, Math.max(0, num("swipe"))); }
    for (const o of info.overlays) {
      if (num(o.id) !== null) state.overlays[o.id] = {on: num(o.id) > 0, opacity: Math.min(1, num(o.id))};
    }
  }

  function writeHash() {
    const p = new URLSearchParams({t: state.t, c: state.composite, z: +state.zoom.toPrecision(6),
                                   x: +state.cx.toFixed(2), y: +state.cy.toFixed(2)});
    if (state.swipe) p.set("swipe", state.swipePos.toFixed(3));
    for (const o of info.overlays) if (state.overlays[o.id].on) p.set(o.id, state.overlays[o.id].opacity.toFixed(2));
    history.replaceState(null, "", `#${p}`);
  }

  function syncControls() {
    $("date").value = String(state.t);
    $("composite").value = state.composite;
    $("swipe-on").checked = state.swipe;
    for (const o of info.overlays) {
      $(`${o.id}-on`).checked = state.overlays[o.id].on;
      $(`${o.id}-opacity`).value = String(Math.round(state.overlays[o.id].opacity * 100));
    }
  }

  async function updateLegend() {
    const parts = [];
    const stretch = await (await fetch(`/legend.json?t=${state.t}&layer=${state.composite}`)).json();
    if (stretch.bands) {
      parts.push(`${stretch.bands.join("/")} stretched ${stretch.lo.toFixed(4)}..${stretch.hi.toFixed(4)} ` +
                 `reflectance (${info.stretch})`);
    }
    for (const o of info.overlays) {
      if (!state.overlays[o.id].on) continue;
      parts.push(o.id === "clear" ? "orange: not clear" :
        `consistency error ${info.consistency_ramp[0]}..${info.consistency_ramp[1]} (log; blue..yellow)`);
    }
    $("legend").textContent = parts.join(". ");
  }

  function changed(legend) {
    clampView();
    syncControls();
    writeHash();
    schedule();
    if (legend) updateLegend().catch(() => {});
  }

  function option(select, value, text) {
    const o = document.createElement("option");
    o.value = value;
    o.textContent = text;
    select.appendChild(o);
  }

  function setUp() {
    document.title = `srcube view: ${info.name}`;
    $("title").textContent = info.name;
    $("meta").textContent = `${info.crs}, ${info.width} x ${info.height} px at ${info.resolution} m; model ` +
      `${info.model} x${info.scale}; ${info.dates.length} dates; consistency projection ` +
      `${info.consistency_projection ? "on" : "off"}`;
    info.dates.forEach((d, i) => option($("date"), String(i), d));
    for (const c of info.composites) option($("composite"), c.id, `${c.name} (${c.bands.join(", ")})`);
    $("input-note").textContent = `The bicubic view of the input is ${info.input_view.text}`;
    state.t = info.dates.length - 1;
    state.composite = info.composites[0].id;
    for (const o of info.overlays) {
      state.overlays[o.id] = {on: false, opacity: o.id === "clear" ? 0.5 : 0.7};
      const label = document.createElement("label");
      const box = document.createElement("input");
      box.type = "checkbox";
      box.id = `${o.id}-on`;
      label.append(box, ` ${o.name}`);
      const range = document.createElement("input");
      range.type = "range";
      range.min = "0";
      range.max = "100";
      range.id = `${o.id}-opacity`;
      range.title = "opacity";
      box.addEventListener("change", () => { state.overlays[o.id].on = box.checked; changed(true); });
      range.addEventListener("input", () => { state.overlays[o.id].opacity = range.value / 100; changed(false); });
      $("overlays").append(label, range);
    }
    if (!info.overlays.length) $("overlays").textContent = "none in this cube";
    state.zoom = fitZoom();
    state.cx = info.width / 2;
    state.cy = info.height / 2;
    readHash();
    $("date").addEventListener("change", () => { state.t = +$("date").value; changed(true); });
    $("composite").addEventListener("change", () => { state.composite = $("composite").value; changed(true); });
    $("swipe-on").addEventListener("change", () => { state.swipe = $("swipe-on").checked; changed(false); });
    $("zoom-in").addEventListener("click", () => { state.zoom *= 2; changed(false); });
    $("zoom-out").addEventListener("click", () => { state.zoom /= 2; changed(false); });
    $("fit").addEventListener("click", () => {
      state.zoom = fitZoom(); state.cx = info.width / 2; state.cy = info.height / 2; changed(false);
    });
    $("full").addEventListener("click", () => { state.zoom = 1; changed(false); });
    window.addEventListener("resize", schedule);
    window.addEventListener("hashchange", () => { readHash(); changed(true); });
    interaction();
    changed(true);
  }

  // --- pointer: pan, zoom, swipe, cursor coordinates ----------------------------------------------------------

  function interaction() {
    let drag = null;
    canvas.addEventListener("pointerdown", (ev) => {
      const split = state.swipePos * size().w;
      drag = {x: ev.offsetX, y: ev.offsetY, cx: state.cx, cy: state.cy,
              swipe: state.swipe && Math.abs(ev.offsetX - split) < 8};
      canvas.setPointerCapture(ev.pointerId);
      canvas.classList.add(drag.swipe ? "swiping" : "dragging");
    });
    canvas.addEventListener("pointermove", (ev) => {
      showCursor(ev.offsetX, ev.offsetY);
      if (!drag) {
        canvas.classList.toggle("swiping", state.swipe && Math.abs(ev.offsetX - state.swipePos * size().w) < 8);
        return;
      }
      if (drag.swipe) {
        state.swipePos = Math.min(1, Math.max(0, ev.offsetX / size().w));
      } else {
        state.cx = drag.cx - (ev.offsetX - drag.x) / state.zoom;
        state.cy = drag.cy - (ev.offsetY - drag.y) / state.zoom;
      }
      changed(false);
    });
    const end = () => { drag = null; canvas.classList.remove("dragging", "swiping"); };
    canvas.addEventListener("pointerup", end);
    canvas.addEventListener("pointercancel", end);
    canvas.addEventListener("wheel", (ev) => {
      ev.preventDefault();
      const {w, h} = size();
      const before = {x: state.cx + (ev.offsetX - w / 2) / state.zoom, y: state.cy + (ev.offsetY - h / 2) / state.zoom};
      state.zoom *= Math.pow(2, -ev.deltaY / 300);
      clampView();
      state.cx = before.x - (ev.offsetX - w / 2) / state.zoom; // the point under the cursor stays there
      state.cy = before.y - (ev.offsetY - h / 2) / state.zoom;
      changed(false);
    }, {passive: false});
    canvas.addEventListener("pointerleave", () => { $("cursor").textContent = ""; });
  }

  function showCursor(sx, sy) {
    const {ox, oy} = origin();
    const col = (sx - ox) / state.zoom, row = (sy - oy) / state.zoom;
    if (col < 0 || row < 0 || col >= info.width || row >= info.height) {
      $("cursor").textContent = `${info.crs}: outside the cube`;
      return;
    }
    const T = info.transform;
    const x = T[0] * col + T[1] * row + T[2], y = T[3] * col + T[4] * row + T[5];
    $("cursor").textContent = `${info.crs}  x ${x.toFixed(1)}  y ${y.toFixed(1)}  ` +
      `(pixel ${Math.floor(col)}, ${Math.floor(row)})`;
  }

  // --- what tests and benches read --------------------------------------------------------------------------

  window.srcubeView = {
    get info() { return info; },
    get state() { return JSON.parse(JSON.stringify(state)); },
    set(patch) {
      for (const [k, v] of Object.entries(patch)) {
        if (k === "overlays") for (const [id, o] of Object.entries(v)) Object.assign(state.overlays[id], o);
        else state[k] = v;
      }
      changed(true);
    },
    idle,
    origin() { return {...origin(), zoom: state.zoom, level: levelFor(state.zoom).factor, ...size()}; },
    tilesInView() { return needed.slice(); },
    firstPaint() { return firstPaint; },
    requested() { return requested; },
  };

  fetch("/info.json").then((r) => r.json()).then((doc) => { info = doc; setUp(); })
    .catch((err) => { $("status").textContent = `cannot read the cube: ${err}`; });
})();
