// The city's web map (served at /map): the layers the caller may see, drawn from our vector tiles with
// the styles /map/style.json converts from styles/*.qml; a layer list by domain, a date slider (the
// tiles' `datetime`), attributes on click, and a proposal drawn by clicks and run through the overlap
// check. Credentials: the page's ?api_key= goes out as the X-API-Key header of every request to us.
/* global maplibregl */
'use strict';

const apiKey = new URLSearchParams(window.location.search).get('api_key');
const DAY_MS = 86400000;
const DOMAINS = {
  base: '基础地理 · Base', pipeline: '地下管线 · Pipelines', planning: '规划 · Planning',
  environment: '生态环境 · Environment', policing: '公安 · Policing',
};

const state = {
  map: null, style: null, collections: new Map(), tiles: {}, datetime: null,
  drawing: false, points: [], proposal: null,
};

function $(id) { return document.getElementById(id); }

function ours(url) { return new URL(url, window.location.href).origin === window.location.origin; }

function withKey(path) {
  if (!apiKey) return path;
  return `${path}${path.includes('?') ? '&' : '?'}api_key=${encodeURIComponent(apiKey)}`;
}

function setStatus(text, isError = false) {
  const status = $('status');
  status.textContent = text;
  status.classList.toggle('error', isError);
}

// The path the service sits under behind a proxy (/gis), set on <html> by the service; '' at the root.
const ROOT = document.documentElement.dataset.root || '';

async function fetchJSON(path, init = {}) {
  const headers = { Accept: 'application/json', ...(init.headers || {}) };
  if (apiKey) headers['X-API-Key'] = apiKey;
  const response = await fetch(path.startsWith('/') ? ROOT + path : path, { ...init, headers });
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    throw new Error(body && body.description ? body.description : `${response.status} ${response.statusText}`);
  }
  return body;
}

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === 'className') node.className = value; else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  return node;
}

// -- images the style names (gis/map_style.py): drawn here the first time the map asks ---------------

function rgba(text) {
  const [r, g, b, a] = text.split(',').map(Number);
  return `rgba(${r},${g},${b},${a / 255})`;
}

function regular(ctx, c, r, sides, turn) {
  for (let i = 0; i < sides; i += 1) {
    const angle = turn + (i * 2 * Math.PI) / sides;
    ctx[i ? 'lineTo' : 'moveTo'](c + r * Math.cos(angle), c + r * Math.sin(angle));
  }
  ctx.closePath();
}

function markerPath(ctx, shape, c, r) {
  const up = -Math.PI / 2;
  ctx.beginPath();
  if (shape === 'square' || shape === 'rectangle') ctx.rect(c - r, c - r, 2 * r, 2 * r);
  else if (shape === 'diamond') regular(ctx, c, r, 4, up);
  else if (shape === 'triangle' || shape === 'equilateral_triangle') regular(ctx, c, r, 3, up);
  else if (shape === 'pentagon') regular(ctx, c, r, 5, up);
  else if (shape === 'hexagon') regular(ctx, c, r, 6, up);
  else if (shape === 'star') {
    for (let i = 0; i < 10; i += 1) {
      const radius = i % 2 ? r * 0.4 : r;
      const angle = up + (i * Math.PI) / 5;
      ctx[i ? 'lineTo' : 'moveTo'](c + radius * Math.cos(angle), c + radius * Math.sin(angle));
    }
    ctx.closePath();
  } else if (shape === 'line') {
    ctx.moveTo(c, c - r); ctx.lineTo(c, c + r);
  } else if (shape === 'cross' || shape === 'cross2' || shape === 'x') {
    const d = shape === 'cross' ? 0 : r * Math.SQRT1_2;
    const e = shape === 'cross' ? r : d;
    ctx.moveTo(c - e, c - d); ctx.lineTo(c + e, c + d); ctx.moveTo(c + d, c - e); ctx.lineTo(c - d, c + e);
  } else ctx.arc(c, c, r, 0, 2 * Math.PI);
}

function canvas(size, ratio) {
  const node = document.createElement('canvas');
  node.width = Math.max(1, Math.ceil(size * ratio));
  node.height = node.width;
  const ctx = node.getContext('2d');
  ctx.scale(ratio, ratio);
  return [node, ctx];
}

// qgis-marker:<shape>:<size>:<fill>:<stroke>:<stroke width>
function markerCanvas(name, ratio) {
  const [, shape, size, fill, stroke, strokeWidth] = name.split(':');
  const width = Number(strokeWidth);
  const side = Number(size) + 2 * width;
  const [node, ctx] = canvas(side, ratio);
  markerPath(ctx, shape, side / 2, Number(size) / 2);
  const open = shape === 'line' || shape.startsWith('cross') || shape === 'x';
  if (open) {
    ctx.strokeStyle = rgba(stroke); // QGIS draws its open shapes with the outline pen
    ctx.lineWidth = Math.max(width, 1);
    ctx.stroke();
  } else {
    ctx.fillStyle = rgba(fill);
    ctx.fill();
    if (width > 0) { ctx.strokeStyle = rgba(stroke); ctx.lineWidth = width; ctx.stroke(); }
  }
  return node;
}

// qgis-hatch:<angles>:<tile>:<line width>:<colour>: one repeat of the hatch lines, so tiles join seamlessly
function hatchCanvas(name, ratio) {
  const [, angles, tileText, widthText, colour] = name.split(':');
  const tile = Number(tileText);
  const [node, ctx] = canvas(tile, ratio);
  ctx.strokeStyle = rgba(colour);
  ctx.lineWidth = Number(widthText);
  ctx.beginPath();
  for (const angle of angles.split(',').map(Number)) {
    if (angle === 0) { ctx.moveTo(0, tile / 2); ctx.lineTo(tile, tile / 2); }
    if (angle === 90) { ctx.moveTo(tile / 2, 0); ctx.lineTo(tile / 2, tile); }
    for (const shift of [-tile, 0, tile]) {
      if (angle === 45) { ctx.moveTo(shift, tile); ctx.lineTo(shift + tile, 0); }
      if (angle === 135) { ctx.moveTo(shift, 0); ctx.lineTo(shift + tile, tile); }
    }
  }
  ctx.stroke();
  return node;
}

function addStyleImage(map, name) {
  const ratio = window.devicePixelRatio || 1;
  let node = null;
  if (name.startsWith('qgis-marker:')) node = markerCanvas(name, ratio);
  else if (name.startsWith('qgis-hatch:')) node = hatchCanvas(name, ratio);
  if (!node || map.hasImage(name)) return;
  const data = node.getContext('2d').getImageData(0, 0, node.width, node.height);
  map.addImage(name, data, { pixelRatio: ratio });
}

// -- the layer list -----------------------------------------------------------------------------------

function setVisible(layerId, visible) {
  const info = state.style.layers.get(layerId);
  for (const styleLayer of info.styleLayers) {
    state.map.setLayoutProperty(styleLayer, 'visibility', visible ? 'visible' : 'none');
  }
}

function legendEntry(entry) {
  let swatch;
  if (entry.image) swatch = markerCanvas(entry.image, window.devicePixelRatio || 1);
  else swatch = el('i', { className: 'swatch', style: `background:${entry.color}` });
  return el('span', {}, swatch, entry.label);
}

function buildLayerList() {
  const byDomain = new Map(Object.keys(DOMAINS).map((domain) => [domain, []]));
  for (const collection of state.collections.values()) {
    const info = state.style.layers.get(collection.id);
    const domain = collection.domain || (info && info.domain) || 'other';
    if (!byDomain.has(domain)) byDomain.set(domain, []);
    byDomain.get(domain).push(collection);
  }
  const root = $('layers');
  root.replaceChildren();
  for (const [domain, members] of byDomain) {
    if (!members.length) continue;
    const boxes = [];
    const domainBox = el('input', { type: 'checkbox', 'data-domain': domain });
    const list = el('ul');
    for (const collection of members) {
      const info = state.style.layers.get(collection.id);
      const label = `${collection.titles.zh} · ${collection.titles.en}`;
      if (!info) {
        list.append(el('li', { className: 'unavailable', title: 'not available as map tiles for this caller' },
          label));
        continue;
      }
      const box = el('input', { type: 'checkbox', 'data-layer': collection.id });
      box.checked = info.visible;
      box.addEventListener('change', () => setVisible(collection.id, box.checked));
      boxes.push(box);
      const legend = el('div', { className: 'legend' }, ...info.legend.map(legendEntry));
      list.append(el('li', {}, el('label', {}, box, ` ${label}`), legend));
    }
    domainBox.addEventListener('change', () => {
      for (const box of boxes) { box.checked = domainBox.checked; setVisible(box.dataset.layer, box.checked); }
    });
    domainBox.checked = boxes.some((box) => box.checked);
    root.append(el('h3', {}, el('label', {}, domainBox, ` ${DOMAINS[domain] || domain}`)), list);
  }
}

// -- time -------------------------------------------------------------------------------------------

function dayOf(iso) { return Math.floor(Date.parse(iso) / DAY_MS); }

function isoDay(day) { return new Date(day * DAY_MS).toISOString().slice(0, 10); }

function setupTime() {
  const days = [];
  for (const collection of state.collections.values()) {
    const interval = collection.extent && collection.extent.temporal && collection.extent.temporal.interval[0];
    for (const bound of interval || []) if (bound) days.push(dayOf(bound));
  }
  const today = Math.floor(Date.now() / DAY_MS);
  const slider = $('time');
  slider.min = String(Math.min(today, ...days));
  slider.max = String(Math.max(today, ...days) + 365); // a year past the last change (plans in force)
  slider.value = String(today);
  const onOff = $('time-on');
  const apply = () => {
    slider.disabled = !onOff.checked;
    setDatetime(onOff.checked ? isoDay(Number(slider.value)) : null);
  };
  onOff.addEventListener('change', apply);
  slider.addEventListener('input', () => { $('time-label').textContent = isoDay(Number(slider.value)); });
  slider.addEventListener('change', apply);
}

function setDatetime(day) {
  state.datetime = day;
  $('time-label').textContent = day || 'now · 现状';
  for (const [source, template] of Object.entries(state.tiles)) {
    const url = day ? `${template}${template.includes('?') ? '&' : '?'}datetime=${encodeURIComponent(day)}` : template;
    state.map.getSource(source).setTiles([url]);
  }
}

// -- attributes on click ----------------------------------------------------------------------------

function showAttributes(point) {
  const box = [[point.x - 4, point.y - 4], [point.x + 4, point.y + 4]];
  const seen = new Set();
  const found = [];
  for (const feature of state.map.queryRenderedFeatures(box)) {
    // the MVT layer is named after its collection, whether its tiles hold one layer or the dataset's
    const collection = state.collections.get(feature.sourceLayer);
    // below z12 a line layer's tiles hold merged lines (gis:merged): no fid, a synthetic gis:id
    const key = `${feature.sourceLayer}/${feature.properties.fid ?? feature.properties['gis:id']}`;
    if (!collection || seen.has(key)) continue;
    seen.add(key);
    found.push([collection, feature]);
  }
  const panel = $('attributes');
  panel.replaceChildren();
  if (!found.length) { panel.append(el('p', { className: 'hint' }, 'Nothing here.')); return; }
  for (const [collection, feature] of found) {
    const rows = Object.entries(feature.properties).map(([name, value]) => el('tr', {}, el('th', {}, name),
      el('td', {}, value === null || value === undefined ? '' : value)));
    if (feature.properties['gis:merged']) {  // many features merged into one line: nothing to link to
      panel.append(el('div', { className: 'feature', 'data-layer': collection.id },
        el('h3', {}, `${collection.titles.zh} · merged lines (zoom in to pick one)`), el('table', {}, ...rows)));
      continue;
    }
    const fid = feature.properties.fid;
    let href = `${ROOT}/collections/${encodeURIComponent(collection.id)}/items/${encodeURIComponent(fid)}?f=html`;
    if (state.datetime) href += `&datetime=${encodeURIComponent(state.datetime)}`;
    panel.append(el('div', { className: 'feature', 'data-layer': collection.id, 'data-fid': fid },
      el('h3', {}, `${collection.titles.zh} · `, el('a', { href: withKey(href) }, fid)),
      el('table', {}, ...rows)));
  }
}

// -- a proposal, drawn by clicks, and its overlap check -----------------------------------------------

function ring() { return state.points.length ? [...state.points, state.points[0]] : []; }

function showProposal() {
  const features = state.points.map((p) => ({ type: 'Feature', geometry: { type: 'Point', coordinates: p } }));
  if (state.points.length >= 3) {
    features.push({ type: 'Feature', geometry: { type: 'Polygon', coordinates: [ring()] } });
  } else if (state.points.length === 2) {
    features.push({ type: 'Feature', geometry: { type: 'LineString', coordinates: state.points } });
  }
  state.map.getSource('proposal').setData({ type: 'FeatureCollection', features });
  $('finish').disabled = !(state.drawing && state.points.length >= 3);
  $('clear').disabled = !state.points.length;
  $('check').disabled = !state.proposal;
}

function setDrawing(on) {
  // while drawing, a double-click closes the proposal instead of zooming
  state.drawing = on;
  if (on) {
    state.map.doubleClickZoom.disable();
  } else {
    state.map.doubleClickZoom.enable();
  }
  $('map').classList.toggle('drawing', on);
}

function resetProposal() {
  state.points = [];
  state.proposal = null;
  showOverlaps(null);
  showProposal();
}

function startDrawing() {
  setDrawing(true);
  resetProposal();
  setStatus('click the corners of the proposal; double-click or Finish to close it');
}

function finishDrawing() {
  // a double-click also clicked twice: drop repeated corners
  state.points = state.points.filter((p, i, all) => i === 0 || p[0] !== all[i - 1][0] || p[1] !== all[i - 1][1]);
  setDrawing(false);
  state.proposal = state.points.length >= 3 ? { type: 'Polygon', coordinates: [ring()] } : null;
  showProposal();
  setStatus(state.proposal ? 'proposal ready: choose a use and check it' : 'a proposal needs three corners');
}

function clearProposal() {
  setDrawing(false);
  resetProposal();
}

function showOverlaps(report) {
  const features = [];
  const result = $('result');
  result.replaceChildren();
  if (report) {
    const rows = report.rules.map((rule) => {
      if (rule.geometry) {
        features.push({ type: 'Feature', geometry: rule.geometry, properties: { rule: rule.id, status: rule.status } });
      }
      return el('tr', { 'data-rule': rule.id, 'data-status': rule.status },
        el('td', {}, `${rule.title.zh} · ${rule.title.en}`), el('td', { className: rule.status }, rule.status),
        el('td', {}, rule.area_m2.toLocaleString('en', { maximumFractionDigits: 0 })),
        el('td', {}, `${(rule.share * 100).toFixed(1)}%`), el('td', {}, rule.features.length));
    });
    result.append(
      el('p', { id: 'verdict', 'data-verdict': report.verdict, className: report.verdict },
        `verdict: ${report.verdict} · proposal ${report.proposal.area_m2.toLocaleString('en')} m²`
        + (report.as_of ? ` · as of ${report.as_of}` : '')),
      el('table', {}, el('tr', {}, el('th', {}, 'rule'), el('th', {}, 'status'), el('th', {}, 'area m²'),
        el('th', {}, 'share'), el('th', {}, 'hit')), ...rows),
    );
  }
  state.map.getSource('overlaps').setData({ type: 'FeatureCollection', features });
}

async function runCheck() {
  if (!state.proposal) return;
  const body = { geometry: state.proposal };
  if ($('use').value) body.proposed_use = $('use').value;
  if (state.datetime) body.datetime = state.datetime;
  setStatus('checking the proposal…');
  $('check').disabled = true;
  try {
    const report = await fetchJSON('/api/planning/overlap-checks', {
      method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' },
    });
    showOverlaps(report);
    setStatus(`overlap check: ${report.verdict}`);
  } catch (error) {
    setStatus(`overlap check: ${error.message}`, true);
  } finally {
    $('check').disabled = !state.proposal;
  }
}

async function setupProposal() {
  const map = state.map;
  map.addSource('proposal', { type: 'geojson', data: { type: 'FeatureCollection', features: [] } });
  map.addSource('overlaps', { type: 'geojson', data: { type: 'FeatureCollection', features: [] } });
  map.addLayer({ id: 'overlap-fill', type: 'fill', source: 'overlaps', paint: { 'fill-color': '#d62728', 'fill-opacity': 0.55 } });
  map.addLayer({ id: 'overlap-line', type: 'line', source: 'overlaps', paint: { 'line-color': '#7a0010', 'line-width': 2 } });
  map.addLayer({
    id: 'proposal-fill', type: 'fill', source: 'proposal', filter: ['==', ['geometry-type'], 'Polygon'],
    paint: { 'fill-color': '#1d4e89', 'fill-opacity': 0.15 },
  });
  map.addLayer({
    id: 'proposal-line', type: 'line', source: 'proposal', filter: ['!=', ['geometry-type'], 'Point'],
    paint: { 'line-color': '#1d4e89', 'line-width': 2, 'line-dasharray': [3, 1] },
  });
  map.addLayer({
    id: 'proposal-vertices', type: 'circle', source: 'proposal', filter: ['==', ['geometry-type'], 'Point'],
    paint: { 'circle-radius': 4, 'circle-color': '#fff', 'circle-stroke-color': '#1d4e89', 'circle-stroke-width': 2 },
  });
  $('draw').addEventListener('click', startDrawing);
  $('finish').addEventListener('click', finishDrawing);
  $('clear').addEventListener('click', clearProposal);
  $('check').addEventListener('click', runCheck);
  map.on('dblclick', (event) => { if (state.drawing) { event.preventDefault(); finishDrawing(); } });
  try {
    const rules = await fetchJSON('/api/planning/overlap-rules');
    for (const code of rules.use_codes) $('use').append(el('option', { value: code }, code));
  } catch (error) {
    setStatus(`overlap rules: ${error.message}`, true);
  }
}

// -- start ------------------------------------------------------------------------------------------

async function start() {
  // MapLibre's workers (each parses the library) start while the style and the collections are fetched
  maplibregl.prewarm();
  const [style, collections] = await Promise.all([fetchJSON('/map/style.json'), fetchJSON('/collections')]);
  for (const collection of collections.collections) state.collections.set(collection.id, collection);
  state.style = { layers: new Map(style.metadata['gis:layers'].map((info) => [info.id, info])) };
  for (const [id, source] of Object.entries(style.sources)) state.tiles[id] = source.tiles[0];
  const map = new maplibregl.Map({
    container: 'map', style, hash: true, fadeDuration: 0, attributionControl: false,
    transformRequest: (url) => (apiKey && ours(url) ? { url, headers: { 'X-API-Key': apiKey } } : { url }),
  });
  state.map = map;
  window.gisMap = map; // for the browser tests and the curious
  map.addControl(new maplibregl.NavigationControl(), 'top-right');
  map.addControl(new maplibregl.ScaleControl({ unit: 'metric' }), 'bottom-left');
  map.on('styleimagemissing', (event) => addStyleImage(map, event.id));
  map.on('error', (event) => {
    console.error(event.error); // eslint-disable-line no-console
    setStatus(event.error && event.error.message ? event.error.message : 'map error', true);
  });
  if (!window.location.hash && style.metadata['gis:bounds']) {
    const [w, s, e, n] = style.metadata['gis:bounds'];
    map.fitBounds([[w, s], [e, n]], { padding: 20, animate: false });
  }
  map.on('click', (event) => {
    if (state.drawing) { state.points.push([event.lngLat.lng, event.lngLat.lat]); showProposal(); } else showAttributes(event.point);
  });
  map.on('idle', () => {
    if (!$('status').classList.contains('error') && !state.drawing) {
      setStatus(`${state.style.layers.size} layers · zoom ${map.getZoom().toFixed(1)}${state.datetime ? ` · ${state.datetime}` : ''}`);
    }
  });
  buildLayerList();
  setupTime();
  map.on('load', setupProposal);
}

document.addEventListener('DOMContentLoaded', () => {
  start().catch((error) => {
    console.error(error); // eslint-disable-line no-console
    setStatus(error.message, true);
  });
});
