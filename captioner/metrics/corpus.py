"""Caption metrics (BLEU-1..4, METEOR, ROUGE-L, CIDEr) and caption diversity.

Scores come from ``pycocoevalcap``, the COCO evaluation code every captioning paper reports, so our
numbers are comparable with theirs: captions are lower-cased and tokenised by Stanford's PTB tokenizer
(Java), every reference caption of an image is used, and scores are reported as percentages (×100,
CIDEr included), the convention of Xu et al. 2015 and of most later tables.

Without Java we fall back to a pure-Python imitation of the PTB tokenizer (:func:`ptb_tokenize`) and skip
METEOR (a Java program); the other metrics then agree with the official ones on ordinary captions.

"""

from __future__ import annotations

import html
import re
import shutil
import subprocess
import tempfile
import warnings
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import CaptionerError, ConfigError, DataError
from .meteor_jvm import close_meteor, meteor_scores, start_meteor

METRICS: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "METEOR", "ROUGE-L", "CIDEr")
_METRIC_KEYS = {re.sub(r"[^a-z0-9]", "", name.lower()): name for name in METRICS}

# pycocoevalcap.tokenizer.ptbtokenizer.PUNCTUATIONS: tokens dropped after PTB tokenisation. The bracket
# tokens are listed upper-case there but the tokenizer runs with -lowerCase, so "-lrb-" etc. survive;
# we keep that quirk so the fallback scores like the official code.
_PTB_DROPPED = frozenset(["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-",
                          ".", "?", "!", ",", ":", "-", "--", "...", ";"])
_NO_JAVA_MSG = ("Java not found: scoring with a pure-Python PTB tokenizer and without METEOR; "
                "install Java 17 for the official COCO numbers")
_JAVA_OFF_MSG = "java=False: scoring with a pure-Python PTB tokenizer and without METEOR"


# ----------------------------------------------------------------------------------------- scoring
def score_captions(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
                   metrics: Sequence[str] | None = None, java: bool | None = None,
                   source: str = "the predictions") -> dict[str, float]:
    """Corpus scores of one caption per image against all its references, as percentages (×100).

    ``metrics`` picks a subset of :data:`METRICS` (default all); validation during training asks for
    ``["BLEU-4"]`` and pays only for tokenisation and BLEU. ``java``: None uses Java when it is on the
    PATH, True requires it, False never uses it. Without Java, METEOR is left out of the result.
    Images with references but no prediction are skipped with a warning; the reverse is an error.
    """
    wanted = _resolve_metrics(metrics)
    gts, res = _pair_up(predictions, references, source)
    use_java = _use_java(java)
    if not use_java:
        warnings.warn(_NO_JAVA_MSG if java is None else _JAVA_OFF_MSG, stacklevel=2)

    # METEOR's JVM spends seconds loading its paraphrase table: start it first so that the loading
    # overlaps tokenisation and the other metrics.
    meteor = start_meteor() if use_java and "METEOR" in wanted else None
    try:
        keys = list(gts)
        texts = [c for k in keys for c in gts[k]] + [res[k][0] for k in keys]
        tokens = _ptb_tokenize_java(texts) if use_java else [ptb_tokenize(t) for t in texts]
        it = iter(tokens)
        gts_tok = {k: [next(it) for _ in gts[k]] for k in keys}
        res_tok = {k: [next(it)] for k in keys}
        scores = _python_scores(gts_tok, res_tok, wanted)
        if meteor is not None:
            scores["METEOR"] = meteor_scores(meteor, gts_tok, res_tok, "leave METEOR out of the metrics")[0]
    finally:
        close_meteor(meteor)
    return {name: 100.0 * scores[name] for name in METRICS if name in scores}


def _resolve_metrics(metrics: Sequence[str] | None) -> set[str]:
    """Map user spellings ("bleu4", "Bleu_4", "ROUGE_L") to canonical names; unknown ones are an error."""
    if metrics is None:
        return set(METRICS)
    if isinstance(metrics, str):
        metrics = [metrics]
    wanted = set()
    for name in metrics:
        key = re.sub(r"[^a-z0-9]", "", str(name).lower())
        if key not in _METRIC_KEYS:
            raise ConfigError(f"unknown metric {name!r}; choose from {', '.join(METRICS)}")
        wanted.add(_METRIC_KEYS[key])
    if not wanted:
        raise ConfigError(f"no metrics asked for; choose from {', '.join(METRICS)}")
    return wanted


def _first(ids: Sequence[Any], n: int = 3) -> str:
    shown = ", ".join(repr(i) if isinstance(i, str) else str(i) for i in ids[:n])
    return shown + (", ..." if len(ids) > n else "")


def _pair_up(predictions: Mapping[Hashable, str], references: Mapping[Hashable, Sequence[str]],
             source: str = "the predictions") -> tuple[dict[Hashable, list[str]], dict[Hashable, list[str]]]:
    """Check the inputs and return pycocoevalcap's shapes: {id: [refs...]}, {id: [prediction]}."""
    if not predictions:
        raise DataError("empty split: no predicted captions to score; check the split name and the predictions")
    bad_refs = [k for k, v in references.items() if isinstance(v, str) or not isinstance(v, Sequence)]
    if bad_refs:
        raise DataError(f"references must be a list of captions per image, {len(bad_refs)} are not "
                        f"(first: {_first(bad_refs)}); wrap single captions in a list")
    empty = [k for k, v in references.items() if len(v) == 0]
    if empty:
        raise DataError(f"{len(empty)} images have an empty reference caption list (first: {_first(empty)}); "
                        f"drop them from the references or fix the captions file")
    not_str = [k for k, v in references.items() if not all(isinstance(c, str) for c in v)]
    not_str += [k for k, v in predictions.items() if not isinstance(v, str)]
    if not_str:
        raise DataError(f"captions must be strings, {len(not_str)} images have other values "
                        f"(first: {_first(not_str)}); detokenise word lists with ' '.join")
    stray = [k for k in predictions if k not in references]
    if stray:
        raise DataError(f"{len(stray)} of {len(predictions)} images in {source} have no reference captions "
                        f"(first: {_first(stray)}); are predictions and references from the same split?")
    missing = [k for k in references if k not in predictions]
    if missing:
        warnings.warn(f"{len(missing)} of {len(references)} reference images have no prediction in {source} "
                      f"(first: {_first(missing)}); scoring only the {len(predictions)} predicted images",
                      stacklevel=3)
    keys = [k for k in references if k in predictions]
    return {k: list(references[k]) for k in keys}, {k: [predictions[k]] for k in keys}


def _use_java(java: bool | None) -> bool:
    found = shutil.which("java") is not None
    if java and not found:
        raise CaptionerError("java=True but no 'java' on the PATH; install Java 17 or pass java=None/False")
    return found if java is None else bool(java)


def _python_scores(gts: dict, res: dict, wanted: set[str]) -> dict[str, float]:
    """BLEU, ROUGE-L and CIDEr from pycocoevalcap on tokenised text, only those asked for."""
    scores: dict[str, float] = {}
    if any(m.startswith("BLEU") for m in wanted):
        from pycocoevalcap.bleu.bleu import Bleu
        bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
        scores.update({f"BLEU-{n + 1}": float(b) for n, b in enumerate(bleu)})
    if "ROUGE-L" in wanted:
        from pycocoevalcap.rouge.rouge import Rouge
        scores["ROUGE-L"] = float(Rouge().compute_score(gts, res)[0])
    if "CIDEr" in wanted:
        from pycocoevalcap.cider.cider import Cider
        scores["CIDEr"] = float(Cider().compute_score(gts, res)[0])
    return {k: v for k, v in scores.items() if k in wanted}


# ------------------------------------------------------------------------------- PTB tokenisation
def _ptb_tokenize_java(texts: Sequence[str]) -> list[str]:
    """What pycocoevalcap's PTBTokenizer does, in one JVM for all texts, without writing into site-packages.

    Same jar and flags (``-preserveLines -lowerCase``), same punctuation dropped. Whitespace runs (a
    stray ``\\r`` would split a line and misalign every caption after it) collapse to single spaces and
    blank captions are not sent, as the tokenizer would emit no line for a trailing blank.
    """
    from pycocoevalcap.tokenizer import ptbtokenizer

    jar = Path(ptbtokenizer.__file__).with_name(ptbtokenizer.STANFORD_CORENLP_3_4_1_JAR)
    clean = [" ".join(t.split()) for t in texts]
    todo = [t for t in clean if t]
    lines: list[str] = []
    if todo:
        with tempfile.TemporaryDirectory(prefix="captioner-ptb-") as tmp:
            src = Path(tmp) / "captions.txt"
            src.write_text("\n".join(todo), encoding="utf-8")
            proc = subprocess.run(["java", "-cp", str(jar), "edu.stanford.nlp.process.PTBTokenizer",
                                   "-preserveLines", "-lowerCase", str(src)],
                                  capture_output=True, check=False)
        lines = proc.stdout.decode("utf-8").split("\n")
        if proc.returncode != 0 or len(lines) < len(todo):
            err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
            raise CaptionerError(f"PTB tokenizer (java) failed: {err[-1] if err else 'no output'}; "
                                 f"check the Java install or pass java=False")
    it = iter(lines)
    out = []
    for t in clean:
        line = next(it).rstrip() if t else ""
        out.append(" ".join(w for w in line.split(" ") if w and w not in _PTB_DROPPED))
    return out


_CHAR_FIXES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"',
                             "\u2026": " ... ", "\u2013": " -- ", "\u2014": " -- "})
_PTB_TOKEN = re.compile(r"""
      \d+(?:[.,:/]\d+)+                          # 3.5  1,000  3:30  1/2
    | (?:[a-z]\.){2,}                            # u.s.  p.m.
    | (?:mr|mrs|ms|dr|st|jr|sr|inc|ltd|co|vs|etc|mt|prof)\.(?!\w)
    | '(?:\d0s|em)\b                             # '90s  'em
    | '(?:s|m|d|re|ll|ve)(?!\w) | n't(?!\w)        # clitics already split off: "boy 's"
    | (?-i:[A-Z]+&[A-Z]+)                        # AT&T (but fish & chips)
    | (?-i:[A-Z])\.(?!\w) | 'n'                   # initials "U."; slip 'n' slide
    | \w+(?:[-'/.]\w+)*                          # words, inner hyphens / apostrophes / slashes / dots
    | \.{3,} | [!?]{2,} | -{2,}
    | \S
    """, re.VERBOSE | re.IGNORECASE)
_CONTRACTION = re.compile(r"(?i)(\w+)(n't|'s|'m|'re|'ll|'ve|'d)")
_SPLIT_WORDS = {"cannot": "can not", "gonna": "gon na", "gotta": "got ta", "wanna": "wan na",
                "lemme": "lem me", "gimme": "gim me"}
_BRACKETS = {'"': "''", "(": "-lrb-", ")": "-rrb-", "[": "-lsb-", "]": "-rsb-", "{": "-lcb-", "}": "-rcb-"}


def ptb_tokenize(text: str) -> str:
    """Pure-Python stand-in for pycocoevalcap's PTB tokenisation: lower-cased tokens, punctuation dropped.

    Splits clitics like the PTB tokenizer (``"dog's" -> "dog 's"``, ``"don't" -> "do n't"``), keeps
    inner hyphens, numbers and abbreviations, and maps brackets to ``-lrb-``-style tokens. It matches
    the Java tokenizer on ordinary captions; rare constructs (e.g. ``"rock'n'roll"``) may differ.
    """
    text = html.unescape(text).translate(_CHAR_FIXES)
    out: list[str] = []
    for tok in _PTB_TOKEN.findall(text):
        tok = tok.lower()
        if tok in _BRACKETS:
            out.append(_BRACKETS[tok])
        elif tok in _SPLIT_WORDS:
            out.extend(_SPLIT_WORDS[tok].split())
        elif tok.startswith(".."):
            out.append("...")
        elif tok.startswith("--"):
            out.append("--")
        else:
            m = _CONTRACTION.fullmatch(tok)
            out.extend(m.groups() if m else (tok,))
    return " ".join(t for t in out if t not in _PTB_DROPPED)
