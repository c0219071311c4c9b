"""METEOR 1.5 through pycocoevalcap's own jar: one JVM, and a clean end to it whatever happens.

Both the corpus METEOR of evaluation and the sentence METEOR of the self-critical reward talk to the
same ``java -jar meteor-1.5.jar -stdio`` process through pycocoevalcap's wrapper; this module owns that
exchange so that a dead JVM becomes a one-line error and an interrupt never leaves a process behind.
"""

from __future__ import annotations

from typing import Any

from ..errors import CaptionerError


def start_meteor() -> Any:
    from pycocoevalcap.meteor.meteor import Meteor
    return Meteor()  # spawns `java -jar meteor-1.5.jar ... -stdio`


def meteor_scores(meteor: Any, gts: dict, res: dict, remedy: str) -> tuple[float, list[float]]:
    """pycocoevalcap's ``compute_score`` (the set's METEOR, each caption's), ending the JVM if it fails.

    An exchange that breaks off leaves the JVM's replies out of step and the wrapper's lock held, so the
    process is ended whatever stopped it: a dead JVM (an error naming ``remedy``) or an interrupt.
    """
    try:
        score, per_caption = meteor.compute_score(gts, res)
    except (ValueError, OSError) as exc:  # the JVM died: empty reply or broken pipe
        err = close_meteor(meteor).strip().splitlines()
        raise CaptionerError(f"METEOR (java) failed: {err[-1] if err else exc}; check that Java runs with "
                             f"a 2 GB heap, or {remedy}") from None
    except BaseException:  # Ctrl-C mid-exchange
        close_meteor(meteor)
        raise
    return float(score), [float(x) for x in per_caption]


def close_meteor(meteor: Any) -> str:
    """End METEOR's JVM now, not whenever the garbage collector runs ``Meteor.__del__``; return its stderr.

    ``compute_score`` leaves its lock held if it raises, and ``__del__`` would then block forever
    taking it, so release it first; the later ``__del__`` then finds a finished process and returns.
    """
    if meteor is None:
        return ""
    if meteor.lock.locked():
        meteor.lock.release()
    proc = meteor.meteor_p
    try:
        proc.stdin.close()  # a dead JVM leaves unflushed bytes: close once here, so __del__ finds it closed
    except OSError:
        pass
    proc.kill()  # no-op once the process has been reaped
    proc.wait()
    err = "" if proc.stderr.closed else proc.stderr.read().decode("utf-8", "replace")
    proc.stdout.close()
    proc.stderr.close()
    return err
