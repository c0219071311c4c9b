"""The one HTML page of ``captioner serve``: inline CSS and JS only, so it works with no internet at all.

Kept apart from the server code so each file reads on its own. The page asks the JSON endpoint for
each selected model (with ``overlays=1``: the server renders every word's heatmap with
:func:`captioner.visualize.overlay`, the same code as the PNG/GIF/HTML outputs) and swaps the
heatmap over the photo when a word is hovered, focused or clicked. All heatmaps of one caption share
its colour scale (0 .. the caption's max α, as in the files), and the page writes each word's peak
(and, for a visual-sentinel model, image) weight with ``pct()``, the twin of
:func:`captioner.visualize.percent`, from the ``peak``/``image_weight`` figures the server sends.
"""

from __future__ import annotations

import html
import json
from typing import Any

_CSS = """
:root{--accent:#ffb300;--ink:#1d2330;--muted:#5d6575;--line:#d9dde5;--bad:#b3261e}
*{box-sizing:border-box}
[hidden]{display:none !important}
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:var(--ink);background:#f4f5f8}
header{padding:1rem 1.5rem .25rem}
h1{font-size:1.35rem;margin:0}
header p{margin:.25rem 0 0;color:var(--muted)}
main{padding:.5rem 1.5rem 2rem}
.controls{display:flex;flex-wrap:wrap;gap:1rem;align-items:flex-end;margin:.75rem 0}
.controls label{display:flex;flex-direction:column;font-size:.85rem;color:var(--muted);gap:.2rem}
select{font:inherit;padding:.3rem .4rem;border:1px solid var(--line);border-radius:6px;background:#fff;min-width:9rem}
.drop{display:flex;align-items:center;justify-content:center;text-align:center;min-height:6.5rem;padding:1rem;
  border:2px dashed #9aa3b5;border-radius:10px;background:#fff;cursor:pointer;color:var(--muted)}
.drop:hover,.drop:focus-within,.drop.over{border-color:var(--accent);background:#fffaf0;color:var(--ink)}
.drop strong{color:var(--ink)}
.visually-hidden{position:absolute;width:1px;height:1px;overflow:hidden;clip:rect(0 0 0 0);white-space:nowrap}
.demos{display:flex;flex-wrap:wrap;gap:.5rem;align-items:center;margin:.75rem 0;color:var(--muted);font-size:.85rem}
.demos button{padding:0;border:2px solid transparent;border-radius:6px;background:none;cursor:pointer;line-height:0}
.demos button:hover,.demos button:focus-visible,.demos button.on{border-color:var(--accent)}
.demos img{width:64px;height:64px;object-fit:cover;border-radius:4px}
#status{min-height:1.4em;color:var(--muted);margin:.5rem 0}
#error{color:var(--bad);background:#fdecea;border:1px solid #f3b8b3;border-radius:8px;padding:.6rem .8rem;
  margin:.5rem 0}
#results{display:flex;flex-wrap:wrap;gap:1.25rem;align-items:flex-start}
.panel{background:#fff;border:1px solid var(--line);border-radius:10px;padding:1rem;width:min(100%,26rem)}
.panel h2{font-size:1rem;margin:0 0 .6rem}
.panel h2 small{font-weight:normal;color:var(--muted)}
.figure{position:relative;line-height:0;border-radius:6px;overflow:hidden;background:#222}
.figure img{width:100%;height:auto;display:block}
.figure img.heat{position:absolute;inset:0}
.lookat{min-height:2.6em;margin:.35rem 0 0;font-size:.85rem;color:var(--muted)}
.caption{font-size:1.15rem;margin:.6rem 0 .3rem;line-height:1.9}
.caption button{font:inherit;color:inherit;background:none;border:0;border-radius:4px;padding:0 .15rem;
  margin:0 .05rem;cursor:pointer}
.caption button:hover,.caption button:focus-visible,.caption button.on{background:#ffd54f;outline:none}
.caption button.pinned{box-shadow:inset 0 -3px 0 var(--accent)}
.meta{font-size:.8rem;color:var(--muted);margin:0}
.familiarity{font-size:.85rem;margin:0 0 .3rem}
.panel .bad{color:var(--bad)}
"""

_JS = r"""
'use strict';
const cfg = JSON.parse(document.getElementById('config').textContent);
const $ = (id) => document.getElementById(id);
const modelSel = $('model'), compareSel = $('compare'), beamSel = $('beam'), fileInput = $('file');
let source = null;      // {file: File} or {demo: name}
let generation = 0;     // answers to an older request are dropped

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
function famLine(entry) {  // as familiarity.familiarity_text() writes it; absent for models without the data
  if (typeof entry.familiarity !== 'number') { return null; }
  const m = cfg.models.find((x) => x.name === entry.model) || {};
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

async function ask(model, beam) {
  const fd = new FormData();
  if (source.file) { fd.append('image', source.file, source.file.name); } else { fd.append('demo', source.demo); }
  fd.append('model', model);
  fd.append('beam', beam);
  fd.append('overlays', '1');
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

async function run() {
  const gen = ++generation;
  const models = [modelSel.value];
  if (compareSel.value && compareSel.value !== modelSel.value) { models.push(compareSel.value); }
  const beam = beamSel.value;
  const label = source.file ? source.file.name : source.demo;
  setError('');
  setStatus('Captioning ' + label + ' with ' + models.join(' and ') + ' (beam ' + beam + ')…');
  const panels = models.map((m) => el('section', {className: 'panel'},
    [el('h2', {textContent: m}), el('p', {className: 'meta', textContent: 'working…'})]));
  $('results').replaceChildren(...panels);
  const answers = await Promise.allSettled(models.map((m) => ask(m, beam)));
  if (gen !== generation) { return; }
  const failed = answers.filter((a) => a.status === 'rejected');
  if (failed.length === answers.length) {
    $('results').replaceChildren();
    setStatus('');
    setError(failed[0].reason.message);
    return;
  }
  answers.forEach((a, i) => {
    if (a.status === 'fulfilled') { fill(panels[i], a.value, beam); }
    else {
      panels[i].replaceChildren(el('h2', {textContent: models[i]}),
                                el('p', {className: 'bad', textContent: a.reason.message}));
    }
  });
  setStatus('Hover or click a word to see where the model looked.');
}

function fill(panel, entry, beam) {
  const attn = (cfg.models.find((m) => m.name === entry.model) || {}).attention || '';
  const base = el('img', {className: 'base', src: entry.thumbnail, alt: entry.image});
  const heat = el('img', {className: 'heat', alt: '', hidden: true});
  const lookat = el('p', {className: 'lookat'});
  const caption = el('p', {className: 'caption'});
  let pinned = null;
  const buttons = entry.words.map((w, i) => {
    const b = el('button', {type: 'button', textContent: w.word,
                            title: 'show where the model looked for "' + w.word + '" (' + figures(entry, w) + ')'});
    b.dataset.i = i;
    b.dataset.figures = figures(entry, w);
    b.addEventListener('mouseenter', () => show(i));
    b.addEventListener('focus', () => show(i));
    b.addEventListener('mouseleave', () => show(pinned));
    b.addEventListener('blur', () => show(pinned));
    b.addEventListener('click', () => {  // pin (or unpin) this word's map
      pinned = pinned === i ? null : i;
      show(pinned === null ? i : pinned);
      mark();
    });
    caption.append(b, ' ');
    return b;
  });
  function mark() { buttons.forEach((b, j) => b.classList.toggle('pinned', j === pinned)); }
  // Every heatmap is drawn on one scale, 0 .. the caption's largest weight (entry.attention_max).
  const legend = 'colour scale 0–' + pct(entry.attention_max) + ', shared by all words';
  function show(i) {
    buttons.forEach((b, j) => b.classList.toggle('on', j === i));
    if (i === null || i === undefined) {
      heat.hidden = true; heat.removeAttribute('src');
      lookat.textContent = 'Hover a word to see its attention map (' + legend + ').';
      return;
    }
    heat.src = entry.overlays[i];
    heat.alt = 'attention for "' + entry.words[i].word + '"';
    heat.hidden = false;
    const loc = entry.words[i].location;  // 0-based [row, col] in the JSON; people count from 1
    const where = loc ? ' · hard attention cell: row ' + (loc[0] + 1) + ', column ' + (loc[1] + 1) : '';
    lookat.textContent = 'attention for "' + entry.words[i].word + '" (' + (i + 1) + '/' + entry.words.length + ')' +
                         ' · ' + figures(entry, entry.words[i]) + where;
  }
  show(null);
  if (!entry.words.length) { caption.textContent = '(empty caption)'; }
  const meta = el('p', {className: 'meta',
                        textContent: 'score ' + entry.score.toFixed(3) + ' · beam ' + beam + ' · ' + attn +
                                     ' attention' + (entry.words.length ? ' · ' + legend : '')});
  const fam = famLine(entry);
  panel.replaceChildren(el('h2', {}, [entry.model + ' ', el('small', {textContent: attn})]),
                        el('div', {className: 'figure'}, [base, heat]), lookat, caption, ...(fam ? [fam] : []), meta);
  panel.dataset.model = entry.model;
  panel.dataset.vmax = entry.attention_max;
}
"""

_BODY = """
<header><h1>captioner</h1>
<p>Caption a photo and see where the model looked for each word (Show, Attend and Tell).</p></header>
<main>
<label class="drop" id="drop"><input type="file" id="file" class="visually-hidden" accept="image/*">
<span><strong>Drop a photo here</strong> or click to choose one<br><small>JPEG, PNG, WebP, GIF, BMP or TIFF,
up to {limit}</small></span></label>
<div class="demos" id="demos"><span>or try a demo photo:</span><span id="demo-list" class="demos"></span></div>
<div class="controls">
<label>model <select id="model"></select></label>
<label id="compare-label">compare with <select id="compare"><option value="">(none)</option></select></label>
<label>beam size <select id="beam"></select></label>
</div>
<div id="error" role="alert" hidden></div>
<p id="status" aria-live="polite"></p>
<div id="results"></div>
</main>
"""


def size_text(n: int) -> str:
    """Bytes as people read them; the page's sizeText() writes the same."""
    return f"{n / 1048576:.3g} MB" if n >= 1048576 else f"{max(1, round(n / 1024))} KB"


def render_page(config: dict[str, Any], nonce: str) -> str:
    """The whole page; ``config`` (models, demos, limits) is embedded as JSON, scripts carry ``nonce``."""
    data = json.dumps(config).replace("<", "\\u003c")  # never lets a name close the <script> element
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1"><title>captioner</title>'
        '<link rel="icon" href="data:,">'
        f'<style nonce="{nonce}">{_CSS}</style></head><body>'
        + _BODY.format(limit=html.escape(size_text(int(config["max_upload_bytes"]))))
        + f'<script id="config" type="application/json">{data}</script>'
        f'<script nonce="{nonce}">{_JS}</script></body></html>\n'
    )
