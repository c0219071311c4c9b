"""The page's style sheet, inlined by :func:`captioner.web.page.render_page` under the CSP nonce."""

CSS = """
:root{--accent:#ffb300;--ink:#1d2330;--muted:#5d6575;--line:#d9dde5;--bad:#b3261e;--probe:#00acc1;
  --focus:#1a73e8}
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
.caption .w{white-space:nowrap}
.caption button{font:inherit;color:inherit;background:none;border:0;border-radius:4px;padding:0 .15rem;
  margin:0 .05rem;cursor:pointer}
.caption button.word:hover,.caption button.word:focus-visible,.caption button.on{background:#ffd54f}
.caption button.pinned{box-shadow:inset 0 -3px 0 var(--accent)}
.caption button.erase-word{width:.75em;height:.75em;padding:0;margin:0 .2rem 0 0;vertical-align:.1em;
  background:rgb(124,116,104);border:1px solid #4b463f;border-radius:2px;opacity:.3}
.caption .w:hover .erase-word,.caption button.erase-word:focus-visible{opacity:1}
.caption button.lit{outline:2px solid var(--probe);outline-offset:-1px;background:#e0f7fa}
.caption button.chosen{outline-width:3px;font-weight:600}
.caption button.gone,.key.gone{text-decoration:line-through 2px;color:var(--bad)}
.caption button.added,.key.added{background:#c8f0c0;color:#0b5d1e;font-weight:600}
button:focus-visible,.figure:focus-visible{outline:3px solid var(--focus);outline-offset:2px}
.figure{cursor:crosshair;touch-action:none;user-select:none}
.figure img,.layer{pointer-events:none}
.layer,.boxes,.marks{position:absolute;inset:0}
.box{position:absolute;background:rgb(124,116,104);outline:1px dashed #fff}
.figure.heated .box{opacity:.55}
.box.ghost{background:rgba(124,116,104,.6);outline:2px dashed var(--accent)}
.probe{position:absolute;outline:2px solid var(--probe);box-shadow:inset 0 0 0 1px #000}
.dot{position:absolute;width:10px;height:10px;margin:-5px 0 0 -5px;border-radius:50%;background:var(--probe);
  border:2px solid #000}
.reverse{font-size:.85rem;margin:.2rem 0 0;color:#006064}
.eraser{display:flex;flex-wrap:wrap;gap:.4rem .6rem;align-items:center;background:#fff;border:1px solid var(--line);
  border-radius:10px;padding:.5rem .75rem;margin:.5rem 0 1rem;font-size:.9rem}
.eraser .hint{color:var(--muted);font-size:.8rem;flex:1 1 18rem}
.eraser button{font:inherit;padding:.3rem .7rem;border:1px solid #9aa3b5;border-radius:6px;background:#fff;cursor:pointer}
.eraser button.primary{background:var(--ink);color:#fff;border-color:var(--ink)}
.eraser button[aria-disabled="true"]{opacity:.45;cursor:default}
.result{border-top:1px solid var(--line);margin-top:.6rem;padding-top:.4rem}
.result-head{font-size:.85rem;color:var(--muted);margin:0}
.legend{font-size:.8rem;color:var(--muted);margin:0 0 .3rem}
.key{padding:0 .2rem;border-radius:3px}
.meta{font-size:.8rem;color:var(--muted);margin:0}
.familiarity{font-size:.85rem;margin:0 0 .3rem}
.panel .bad{color:var(--bad)}
"""
