"""The page's script: choosing a photo, asking the API, drawing each caption with its heatmaps.

Plain JavaScript with no library, inlined under the CSP nonce (no eval, no inline handlers); the
explorer (:mod:`captioner.web.explorer_js`) follows it in the same script.
"""

JS = r"""
'use strict';
const cfg = JSON.parse(document.getElementById('config').textContent);
const $ = (id) => document.getElementById(id);
const modelSel = $('model'), compareSel = $('compare'), beamSel = $('beam'), fileInput = $('file');
let source = null;      // {file: File} or {demo: name}
let generation = 0;     // answers to an older request are dropped
const shown = [];       // one slot per panel on show: {panel, entry, beam, fig, view, result}

function el(tag, props, kids) {
  const e = document.createElement(tag);
  Object.assign(e, props || {});
  (kids || []).forEach((k) => e.append(k));
  return e;
}
function setError(msg) { $('error').textContent = msg || ''; $('error').hidden = !msg; }
function setStatus(msg) { $('status').textContent = msg || ''; }
function pct(x) {  // as visualize.percent() writes it: rounded half up, one decimal below 1%
  const p = x * 100, whole = Math.floor(p + 0.5);
  if (whole >= 1) { return whole + '%'; }
  const tenth = Math.floor(p * 10 + 0.5) / 10;
  return tenth > 0 ? tenth.toFixed(1) + '%' : '0%';
}
function figures(entry, w) {  // as AttentionScale.label() writes it
  return 'peak ' + pct(w.peak) + (entry.show_image_weight ? ' · img ' + pct(w.image_weight) : '');
}
function modelInfo(name) {  // what /api/models says of a served model: attention, grid, familiarity_threshold
  return cfg.models.find((m) => m.name === name) || {};
}
function famLine(entry) {  // as familiarity.familiarity_text() writes it; absent for models without the data
  if (typeof entry.familiarity !== 'number') { return null; }
  const m = modelInfo(entry.model);
  const low = typeof m.familiarity_threshold === 'number' && entry.familiarity < m.familiarity_threshold;
  return el('p', {className: low ? 'familiarity bad' : 'familiarity',
                  textContent: 'familiarity ' + entry.familiarity.toFixed(2) +
                               (low ? ' (unlike the training photos: the caption may be wrong)' : ''),
                  title: 'how close the photo lies to the training photos: the share of dev photos at least as far'});
}
function sizeText(n) {  // as the server writes it (size_text)
  return n >= 1048576 ? parseFloat((n / 1048576).toPrecision(3)) + ' MB' : Math.max(1, Math.round(n / 1024)) + ' KB';
}

cfg.models.forEach((m) => {
  modelSel.append(el('option', {value: m.name, textContent: m.name + ' (' + m.attention + ')'}));
  compareSel.append(el('option', {value: m.name, textContent: m.name + ' (' + m.attention + ')'}));
});
if (cfg.models.length < 2) { $('compare-label').hidden = true; }
if (cfg.compare) { compareSel.value = cfg.compare; }
cfg.beams.forEach((b) => beamSel.append(el('option', {value: b, textContent: b === 1 ? '1 (greedy)' : String(b)})));
beamSel.value = String(cfg.beam);

cfg.demos.forEach((name) => {
  const img = el('img', {src: 'demo/' + encodeURIComponent(name), alt: name});
  const b = el('button', {type: 'button', title: name, className: 'demo'}, [img]);
  b.dataset.demo = name;
  b.addEventListener('click', () => choose({demo: name}));
  $('demo-list').append(b);
});
if (!cfg.demos.length) { $('demos').hidden = true; }

const drop = $('drop');
['dragenter', 'dragover', 'dragleave', 'drop'].forEach((t) => drop.addEventListener(t, (e) => {
  e.preventDefault();
  drop.classList.toggle('over', t === 'dragenter' || t === 'dragover');
}));
drop.addEventListener('drop', (e) => { const f = e.dataTransfer.files[0]; if (f) { choose({file: f}); } });
fileInput.addEventListener('change', () => { if (fileInput.files[0]) { choose({file: fileInput.files[0]}); } });
[modelSel, compareSel, beamSel].forEach((s) => s.addEventListener('change', () => { if (source) { run(); } }));

function choose(src) {
  document.querySelectorAll('.demos button').forEach((b) => b.classList.toggle('on', b.dataset.demo === src.demo));
  if (src.file && src.file.size > cfg.max_upload_bytes) {
    source = null; generation++;
    $('results').replaceChildren();
    setStatus('');
    setError(src.file.name + ': file is ' + sizeText(src.file.size) + ', over the upload limit of ' +
             sizeText(cfg.max_upload_bytes) + '; choose a smaller photo');
    return;
  }
  source = src;
  run();
}

async function ask(model, beam, erase) {
  const fd = new FormData();
  if (source.file) { fd.append('image', source.file, source.file.name); } else { fd.append('demo', source.demo); }
  fd.append('model', model);
  fd.append('beam', beam);
  fd.append('overlays', '1');
  if (erase) { fd.append('erase', JSON.stringify(erase)); }
  let r;
  try { r = await fetch('api/caption', {method: 'POST', body: fd}); }
  catch (e) { throw new Error('cannot reach the captioner server (' + e.message + '); is it still running?'); }
  let body = null;
  try { body = await r.json(); } catch (e) { /* not JSON: use the status line below */ }
  if (!r.ok || !body || body.error) {
    throw new Error((body && body.error) || ('the server answered ' + r.status + ' ' + r.statusText));
  }
  return body;
}
function askAll(models, beam, erase) {  // one request per model, side by side
  return Promise.allSettled(models.map((m) => ask(m, beam, erase)));
}
function allFailed(answers) {  // the first error when every answer failed (shown above the results), else null
  const failed = answers.filter((a) => a.status === 'rejected');
  return failed.length === answers.length ? failed[0].reason.message : null;
}

async function run() {
  const gen = ++generation;
  const models = [modelSel.value];
  if (compareSel.value && compareSel.value !== modelSel.value) { models.push(compareSel.value); }
  const beam = beamSel.value;
  const label = source.file ? source.file.name : source.demo;
  setError('');
  resetExplorer();
  setStatus('Captioning ' + label + ' with ' + models.join(' and ') + ' (beam ' + beam + ')…');
  const panels = models.map((m) => el('section', {className: 'panel'},
    [el('h2', {textContent: m}), el('p', {className: 'meta', textContent: 'working…'})]));
  $('results').replaceChildren(...panels);
  const answers = await askAll(models, beam);
  if (gen !== generation) { return; }
  const failure = allFailed(answers);
  if (failure) {
    $('results').replaceChildren();
    setStatus('');
    setError(failure);
    return;
  }
  answers.forEach((a, i) => {
    if (a.status === 'fulfilled') { fill(panels[i], a.value, beam); }
    else {
      panels[i].replaceChildren(el('h2', {textContent: models[i]}),
                                el('p', {className: 'bad', textContent: a.reason.message}));
    }
  });
  showEraser();
  setStatus('Hover or click a word to see where the model looked; click the photo to see which words looked there.');
}

// ---- a figure: the photo, one heatmap at a time over it (from any caption drawn on it), the eraser's boxes
function legendOf(entry) {  // every heatmap of a caption is drawn on one scale, 0 .. its largest weight
  return 'colour scale 0–' + pct(entry.attention_max) + ', shared by all words';
}
function makeFigure(entry) {
  const base = el('img', {className: 'base', src: entry.thumbnail, alt: entry.image, draggable: false});
  const heat = el('img', {className: 'heat', alt: '', hidden: true, draggable: false});
  const layer = el('div', {className: 'layer'});
  const root = el('div', {className: 'figure', tabIndex: 0}, [base, heat, layer]);
  root.setAttribute('role', 'group');
  root.setAttribute('aria-label', 'photo: drag to grey a box; arrow keys pick a cell and light the words that ' +
                                  'looked there, Enter greys that cell, Backspace undoes, Escape clears');
  const fig = {root, heat, layer, entry, lookat: el('p', {className: 'lookat'}), views: [], pinned: null};
  showWord(fig, null);
  return fig;
}
function showWord(fig, view, i) {  // the heatmap of word i of view (null: none) over the photo
  fig.views.forEach((v) => v.buttons.forEach((b, j) => b.classList.toggle('on', v === view && j === i)));
  fig.root.classList.toggle('heated', !!view);
  if (!view) {
    fig.heat.hidden = true; fig.heat.removeAttribute('src');
    fig.lookat.textContent = 'Hover a word to see its attention map (' + legendOf(fig.entry) + ').';
    return;
  }
  const entry = view.entry, w = entry.words[i];
  fig.heat.src = entry.overlays[i];
  fig.heat.alt = 'attention for "' + w.word + '"';
  fig.heat.hidden = false;
  const loc = w.location;  // 0-based [row, col] in the JSON; people count from 1
  const where = loc ? ' · hard attention cell: row ' + (loc[0] + 1) + ', column ' + (loc[1] + 1) : '';
  fig.lookat.textContent = (view.edited ? 'edited photo: ' : '') + 'attention for "' + w.word + '" (' + (i + 1) +
                           '/' + entry.words.length + ') · ' + figures(entry, w) + where;
}
function showPinned(fig) {
  if (fig.pinned) { showWord(fig, fig.pinned.view, fig.pinned.i); } else { showWord(fig, null); }
}
function togglePin(fig, view, i) {  // a click pins (or unpins) a word's map
  const same = fig.pinned && fig.pinned.view === view && fig.pinned.i === i;
  fig.pinned = same ? null : {view, i};
  fig.views.forEach((v) => v.buttons.forEach((b, j) => b.classList.toggle('pinned', !same && v === view && j === i)));
  showWord(fig, view, i);
}
function dropView(fig, view) {  // a caption taken off the figure (an older erase result)
  fig.views = fig.views.filter((v) => v !== view);
  if (fig.pinned && fig.pinned.view === view) { fig.pinned = null; }
  showPinned(fig);
}

// ---- a caption as a row of word buttons, each showing its heatmap on the figure
function wordButton(view, i) {
  const entry = view.entry, fig = view.fig, w = entry.words[i];
  const b = el('button', {type: 'button', className: 'word', textContent: w.word,
                          title: 'show where the model looked for "' + w.word + '" (' + figures(entry, w) + ')'});
  b.dataset.i = i;
  b.dataset.figures = figures(entry, w);
  b.addEventListener('mouseenter', () => showWord(fig, view, i));
  b.addEventListener('focus', () => showWord(fig, view, i));
  b.addEventListener('mouseleave', () => showPinned(fig));
  b.addEventListener('blur', () => showPinned(fig));
  b.addEventListener('click', () => togglePin(fig, view, i));
  return b;
}
function captionView(fig, entry, edited) {  // edited: the caption of the erased photo (no erase actions)
  const view = {fig, entry, edited, el: el('p', {className: edited ? 'caption edited' : 'caption'})};
  view.buttons = entry.words.map((w, i) => {
    const b = wordButton(view, i);
    view.el.append(el('span', {className: 'w'}, edited ? [b] : [b, eraseWordButton(view, i)]), ' ');
    return b;
  });
  if (!entry.words.length) { view.el.textContent = '(empty caption)'; }
  fig.views.push(view);
  return view;
}
function metaLine(entry, beam) {
  const attn = modelInfo(entry.model).attention || '';
  return el('p', {className: 'meta', textContent: 'score ' + entry.score.toFixed(3) + ' · beam ' + beam + ' · ' +
                  attn + ' attention' + (entry.words.length ? ' · ' + legendOf(entry) : '')});
}

function fill(panel, entry, beam) {
  const attn = modelInfo(entry.model).attention || '';
  const fig = makeFigure(entry);
  const view = captionView(fig, entry, false);
  const slot = {panel, entry, beam, fig, view, result: null, reverse: el('p', {className: 'reverse', hidden: true}),
                out: el('div', {className: 'result', hidden: true})};
  const fam = famLine(entry);
  panel.replaceChildren(el('h2', {}, [entry.model + ' ', el('small', {textContent: attn})]), fig.root, fig.lookat,
                        slot.reverse, view.el, ...(fam ? [fam] : []), metaLine(entry, beam), slot.out);
  panel.dataset.model = entry.model;
  panel.dataset.vmax = entry.attention_max;
  attachFigure(slot);
  shown.push(slot);
}
"""
