"""The page's explorer: erase what a word looked at, erase boxes by hand, and see which words looked at a point.

Runs after :mod:`captioner.web.page_js` in the same script (it uses its ``el``, ``ask``, ``shown``,
``captionView`` ...). Every erase goes through the API's ``erase`` field, in the photo's own pixels
(the ``width`` x ``height`` the server reports), so the page, ``captioner caption --erase`` and
``model.caption(erase=...)`` give the same caption for the same boxes. A word's region is its k most
attended cells, k as in the deletion test (:func:`captioner.evaluation.deletion.default_cells`), each cell
turned into a box as :func:`captioner.data.erase.cell_boxes` does.
"""

JS = r"""
// ---- the explorer: erase what a word looked at or boxes drawn by hand; which words looked at a point
const MAX_BOXES = 64;   // the API's limit
let steps = [];         // the eraser's boxes in undo order: [{label, boxes: [[x, y, w, h] in the photo's pixels]}]
let probe = null;       // the point the reverse view asks about, {x, y} in the photo's pixels
let eraseGen = 0;       // answers to an older erase are dropped

function roundHalfEven(x) {  // Python's round()
  const f = Math.floor(x), d = x - f;
  return d > 0.5 || (d === 0.5 && f % 2 === 1) ? f + 1 : f;
}
function defaultCells(g) { return Math.max(1, roundHalfEven(0.1 * (g * g))); }  // deletion.default_cells(g*g)
function topCells(grid, k) {  // the k most attended cells (row-major ids), ties to the lower id, as the deletion test
  const flat = grid.flat();
  return flat.map((a, i) => i).sort((i, j) => flat[j] - flat[i] || i - j).slice(0, k);
}
function cellBoxes(cells, g, W, H) {  // as erase.cell_boxes: the whole photo squeezed onto the grid
  return cells.map((cell) => {
    const r = Math.floor(cell / g), c = cell % g;
    const x0 = c * W / g, x1 = (c + 1) * W / g, y0 = r * H / g, y1 = (r + 1) * H / g;
    return [x0, y0, x1 - x0, y1 - y0];
  });
}
function gridOf(entry) { return modelInfo(entry.model).grid || entry.words[0].attention.length; }
function cellAt(entry, pt) {  // the cell of entry's grid under a point of the photo
  const g = gridOf(entry), clamp = (v) => Math.min(g - 1, Math.max(0, Math.floor(v)));
  return clamp(pt.y * g / entry.height) * g + clamp(pt.x * g / entry.width);
}
function currentBoxes() { return steps.flatMap((s) => s.boxes); }
function place(div, box, entry) {  // a box of the photo's pixels over its thumbnail, in percent
  const [x, y, w, h] = box;
  div.style.left = (100 * x / entry.width) + '%';
  div.style.top = (100 * y / entry.height) + '%';
  div.style.width = (100 * w / entry.width) + '%';
  div.style.height = (100 * h / entry.height) + '%';
}
function boxDiv(box, entry, className) {
  const d = el('div', {className});
  d.dataset.box = box.join(',');
  place(d, box, entry);
  return d;
}

// ---- the eraser's boxes: grey on every photo shown, sent with "Caption the edited photo"
function addStep(label, boxes) {
  if (currentBoxes().length + boxes.length > MAX_BOXES) {
    setError('at most ' + MAX_BOXES + ' boxes can be erased at once; undo or reset some first');
    return;
  }
  steps.push({label, boxes});
  redraw();
}
function undo() { if (steps.length) { steps.pop(); redraw(); } }
function resetEraser() {
  steps = [];
  eraseGen++;
  shown.forEach(clearResult);
  setError('');
  redraw();
}
function redraw() {
  const boxes = currentBoxes();
  shown.forEach((s) => s.boxes.replaceChildren(...boxes.map((b) => boxDiv(b, s.entry, 'box'))));
  $('eraser-count').textContent = boxes.length ? boxes.length + (boxes.length === 1 ? ' box' : ' boxes') + ' to grey'
                                               : 'no boxes yet';
  $('eraser').dataset.boxes = JSON.stringify(boxes);
  enable($('erase-undo'), steps.length > 0);
  enable($('erase-run'), boxes.length > 0);
  enable($('erase-reset'), boxes.length > 0 || shown.some((s) => !s.out.hidden));
}
function enable(button, on) {  // aria-disabled, not disabled: a focused button keeps the keyboard focus
  button.setAttribute('aria-disabled', String(!on));
}
function act(id, fn) {
  $(id).addEventListener('click', () => { if ($(id).getAttribute('aria-disabled') !== 'true') { fn(); } });
}
act('erase-undo', undo);
act('erase-reset', resetEraser);
act('erase-run', () => captionEdited());

function resetExplorer() {  // a new photo: no boxes, no point, no results
  shown.length = 0;
  steps = [];
  probe = null;
  eraseGen++;
  $('eraser').hidden = true;
}
function showEraser() {
  $('eraser').hidden = !shown.length;
  redraw();
}

// ---- erase what a word looked at: its k most attended cells, captioned again by every model shown
function eraseWordButton(view, i) {
  const w = view.entry.words[i].word;
  const b = el('button', {type: 'button', className: 'erase-word',
                          title: 'erase what "' + w + '" looked at and caption the edited photo'});
  b.setAttribute('aria-label', 'erase what "' + w + '" looked at');
  b.addEventListener('click', () => eraseWord(view.entry, i));
  return b;
}
function eraseWord(entry, i) {
  const g = gridOf(entry), cells = topCells(entry.words[i].attention, defaultCells(g));
  steps = [{label: 'what "' + entry.words[i].word + '" (' + entry.model + ') looked at',
            boxes: cellBoxes(cells, g, entry.width, entry.height)}];
  redraw();
  captionEdited();
}
function describe(boxes) {
  const what = steps.length === 1 ? steps[0].label : steps.length + ' regions';
  return what + ' (' + boxes.length + (boxes.length === 1 ? ' box' : ' boxes') + ')';
}
async function captionEdited() {
  const boxes = currentBoxes();
  if (!boxes.length || !shown.length) { return; }
  const gen = ++eraseGen, what = describe(boxes), slots = shown.slice();
  setError('');
  slots.forEach((s) => pending(s, what));
  setStatus('Captioning the photo with ' + what + ' greyed…');
  const answers = await askAll(slots.map((s) => s.entry.model), slots[0].beam, boxes);
  if (gen !== eraseGen) { return; }
  answers.forEach((a, i) => {
    if (a.status === 'fulfilled') { showResult(slots[i], a.value, what, boxes); }
    else { failResult(slots[i], what, a.reason.message); }
  });
  const failure = allFailed(answers);
  if (failure) { setError(failure); }
  setStatus(failure ? '' : 'Under each caption: the caption of the edited photo; hover its words for their maps.');
  redraw();
}

// ---- a panel's result: the new caption under the old, vanished words struck through, new ones highlighted
function unmatched(a, b) {  // per word of a: true when b has fewer of that word (counted in order)
  const left = new Map();
  b.forEach((w) => left.set(w, (left.get(w) || 0) + 1));
  return a.map((w) => {
    const n = left.get(w) || 0;
    left.set(w, n - 1);
    return n === 0;
  });
}
function markWords(view, flags, cls, note) {
  view.buttons.forEach((b, i) => {
    b.classList.toggle(cls, !!flags[i]);
    if (flags[i]) { b.setAttribute('aria-label', b.textContent + ' (' + note + ')'); }
    else { b.removeAttribute('aria-label'); }
  });
}
function clearResult(slot) {
  if (slot.result) { dropView(slot.fig, slot.result); }
  slot.result = null;
  markWords(slot.view, [], 'gone', '');
  slot.out.replaceChildren();
  slot.out.hidden = true;
}
function head(what) { return el('p', {className: 'result-head', textContent: 'After erasing ' + what + ':'}); }
function pending(slot, what) {
  clearResult(slot);
  slot.out.hidden = false;
  slot.out.append(head(what), el('p', {className: 'meta', textContent: 'working…'}));
}
function failResult(slot, what, message) {
  slot.out.replaceChildren(head(what), el('p', {className: 'bad', textContent: message}));
}
function legendLine(changed) {
  if (!changed) { return el('p', {className: 'legend', textContent: 'the same caption as before'}); }
  return el('p', {className: 'legend'}, [el('span', {className: 'key gone', textContent: 'struck through'}),
    ': vanished · ', el('span', {className: 'key added', textContent: 'highlighted'}), ': appeared']);
}
function showResult(slot, entry, what, boxes) {
  clearResult(slot);
  const view = captionView(slot.fig, entry, true);
  const before = slot.entry.words.map((w) => w.word), after = entry.words.map((w) => w.word);
  const gone = unmatched(before, after), added = unmatched(after, before);
  markWords(slot.view, gone, 'gone', 'vanished');
  markWords(view, added, 'added', 'appeared');
  slot.result = view;
  slot.out.hidden = false;
  slot.out.dataset.erase = JSON.stringify(boxes);
  slot.out.dataset.erased = JSON.stringify(entry.erased || []);
  slot.out.replaceChildren(head(what), view.el, legendLine(gone.includes(true) || added.includes(true)),
                           metaLine(entry, slot.beam));
  light(slot);
}

// ---- the reverse view: a point of the photo lights the words whose top-k cells (or hard-attention cell) hold it
function setProbe(pt) {
  probe = pt;
  shown.forEach(light);
}
function lookedHere(w, cell, g, k) {  // 'chosen' (hard attention's cell), 'top' (among its k most attended), or ''
  if (w.location && w.location[0] * g + w.location[1] === cell) { return 'chosen'; }
  return topCells(w.attention, k).includes(cell) ? 'top' : '';
}
function light(slot) {
  const entry = slot.entry, views = [slot.view].concat(slot.result ? [slot.result] : []);
  const g = gridOf(entry), k = defaultCells(g), cell = probe ? cellAt(entry, probe) : -1, found = [];
  views.forEach((v) => v.buttons.forEach((b, i) => {
    const how = probe ? lookedHere(v.entry.words[i], cell, g, k) : '';
    b.classList.toggle('lit', !!how);
    b.classList.toggle('chosen', how === 'chosen');
    if (how && v === slot.view) { found.push('"' + b.textContent + '"' + (how === 'chosen' ? ' (its cell)' : '')); }
  }));
  slot.panel.dataset.cell = probe ? cell : '';
  slot.reverse.hidden = !probe;
  if (!probe) { slot.marks.replaceChildren(); return; }
  const dot = el('div', {className: 'dot'});
  dot.style.left = (100 * probe.x / entry.width) + '%';
  dot.style.top = (100 * probe.y / entry.height) + '%';
  slot.marks.replaceChildren(boxDiv(cellBoxes([cell], g, entry.width, entry.height)[0], entry, 'probe'), dot);
  slot.reverse.textContent = 'row ' + (Math.floor(cell / g) + 1) + ', column ' + (cell % g + 1) + ': ' +
    (found.length ? 'looked at by ' + found.join(', ') : 'no word has this cell among its ' + k + ' most attended');
}

// ---- mouse and keyboard on a photo: drag a box, click a point; arrows pick a cell, Enter greys it
function pointOf(slot, e) {
  const r = slot.fig.root.getBoundingClientRect(), clamp = (v) => Math.min(1, Math.max(0, v));
  return {x: clamp((e.clientX - r.left) / r.width) * slot.entry.width,
          y: clamp((e.clientY - r.top) / r.height) * slot.entry.height};
}
function spanBox(a, b) {  // the whole pixels between two points
  const x0 = Math.floor(Math.min(a.x, b.x)), y0 = Math.floor(Math.min(a.y, b.y));
  return [x0, y0, Math.ceil(Math.max(a.x, b.x)) - x0, Math.ceil(Math.max(a.y, b.y)) - y0];
}
function attachFigure(slot) {
  const root = slot.fig.root;
  slot.boxes = el('div', {className: 'boxes'});
  slot.marks = el('div', {className: 'marks'});
  slot.fig.layer.append(slot.boxes, slot.marks);
  let drag = null;
  root.addEventListener('pointerdown', (e) => {
    if (e.button !== 0) { return; }
    e.preventDefault();
    root.focus({preventScroll: true});
    root.setPointerCapture(e.pointerId);
    drag = {from: pointOf(slot, e), x: e.clientX, y: e.clientY, ghost: el('div', {className: 'box ghost'})};
  });
  root.addEventListener('pointermove', (e) => {
    if (!drag) { return; }
    if (!drag.ghost.isConnected) { slot.boxes.append(drag.ghost); }
    place(drag.ghost, spanBox(drag.from, pointOf(slot, e)), slot.entry);
  });
  root.addEventListener('pointerup', (e) => {
    if (!drag) { return; }
    const d = drag, to = pointOf(slot, e);
    drag = null;
    d.ghost.remove();
    if (Math.abs(e.clientX - d.x) < 4 && Math.abs(e.clientY - d.y) < 4) { setProbe(to); }
    else { addStep('a box you drew', [spanBox(d.from, to)]); }
  });
  root.addEventListener('pointercancel', () => { if (drag) { drag.ghost.remove(); drag = null; } });
  root.addEventListener('keydown', (e) => { if (figureKey(slot, e.key)) { e.preventDefault(); } });
}
const MOVES = {ArrowLeft: [0, -1], ArrowRight: [0, 1], ArrowUp: [-1, 0], ArrowDown: [1, 0]};
function figureKey(slot, key) {  // true when the key was ours
  if (MOVES[key] || key === 'Enter' || key === ' ') { pickCell(slot, key); }
  else if (key === 'Backspace' || key === 'Delete') { undo(); }
  else if (key === 'Escape') { setProbe(null); }
  else { return false; }
  return true;
}
function pickCell(slot, key) {  // arrows move the point a cell, Enter/Space grey its cell; the first key starts at the centre
  const entry = slot.entry, g = gridOf(entry), half = Math.floor(g / 2);
  const start = probe ? cellAt(entry, probe) : half * g + half;
  const [dr, dc] = (probe && MOVES[key]) || [0, 0], clamp = (v) => Math.min(g - 1, Math.max(0, v));
  const cell = clamp(Math.floor(start / g) + dr) * g + clamp(start % g + dc);
  const box = cellBoxes([cell], g, entry.width, entry.height)[0], greys = probe && !MOVES[key];
  setProbe({x: box[0] + box[2] / 2, y: box[1] + box[3] / 2});
  if (greys) { addStep('a cell you picked', [box]); }
}
"""
