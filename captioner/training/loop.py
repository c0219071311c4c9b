"""`captioner train`: data -> cached features -> decoder training with real-decoding validation.

Split like torchvision's reference scripts: :func:`train_one_epoch`, validation (:mod:`.validation`),
:func:`main`. Everything random draws from torch's generator seeded by ``cfg.seed``, and the full
training state (weights, optimizer, schedule, epoch, position in the epoch, RNG) is saved so that
``--resume`` continues exactly where a run stopped, even after Ctrl-C mid-epoch.
"""

from __future__ import annotations

import contextlib
import math
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from ..atomic import write_json
from ..config import to_dict
from ..data.feature_cache import FeatureStore, LiveImages, cache_features
from ..data.records import Record
from ..data.vocab import Vocab
from ..errors import CaptionerError, ConfigError, DataError
from ..model.caption_model import CaptionModel
from ..model.checkpoint import save_checkpoint
from ..model.encoder import feature_dims
from ..progress import progress_bar
from . import distributed
from .batches import Pairs, epoch_batches, make_pairs, prepare_data
from .config import TrainConfig
from .ema import WeightAverage
from .losses import update_baseline, update_word_baseline
from .objectives import scst_terms, xe_terms
from .runs import STATE_FILE, claim_run, resume_advice, write_log
from .self_critical import CaptionReward
from .state import TrainState, init_weights, load_state, restore, save_state
from .validation import validate


def train_one_epoch(model: CaptionModel, net: torch.nn.Module, optimizer: torch.optim.Optimizer,
                    pairs: Pairs, store: FeatureStore, cfg: TrainConfig, state: TrainState, device: torch.device,
                    rank: int = 0, world: int = 1, on_step: Callable[[int], None] | None = None,
                    reward: CaptionReward | None = None, average: WeightAverage | None = None) -> dict[str, float]:
    """One pass over the training images (from ``state.step`` on); returns mean loss terms and speed.

    ``cfg.objective`` picks the loss: ``xe`` trains on the reference captions, ``scst`` on captions the
    model samples itself, scored by ``reward`` against each image's references.
    """
    batches = epoch_batches(pairs.n_images, cfg.batch_size, cfg.seed, state.epoch, rank, world)
    if cfg.limit_batches:  # the first N of the epoch's shuffled batches: every epoch still sees other images
        batches = batches[: cfg.limit_batches]
    if not batches:
        raise DataError(f"dataset too small: {pairs.n_images} training images for a batch of "
                        f"{cfg.batch_size} x {world} process(es); lower --batch-size")
    if cfg.objective == "scst" and reward is None:
        raise ValueError("self-critical training needs a reward")
    net.train()
    hard = model.cfg.attention == "hard"
    sums: dict[str, float] = {}
    count, captions, t0 = 0, 0, time.perf_counter()
    first_ce: float | None = None
    bar = progress_bar(len(batches), f"epoch {state.epoch + 1}", "batch", enabled=cfg.progress and rank == 0)
    bar.update(state.step)
    for i in range(state.step, len(batches)):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16"):
            if cfg.objective == "scst":
                total, logs, n_captions = scst_terms(net, model, reward, pairs, batches[i], store, cfg, device)
            else:
                word_baseline = torch.tensor(state.word_baseline) if state.word_baseline is not None else None
                total, logs, n_captions = xe_terms(net, hard, pairs, batches[i], store, cfg, state.baseline, device,
                                                   word_baseline)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        if cfg.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
        optimizer.step()
        if average is not None:
            average.update()
        _update_baselines(state, logs, world, hard and cfg.objective == "xe")
        state.step = i + 1
        if first_ce is None:
            first_ce = distributed.mean(logs["ce"], world)  # the loss of the whole global batch
        for k, v in (("loss", float(total.detach())), *logs.items()):
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        captions += n_captions * world
        bar.update(1)
        shown = {"reward": f"{logs['reward']:.3f}"} if "reward" in logs else {"loss": f"{logs['ce']:.3f}"}
        bar.set_postfix(**shown, caps_s=f"{captions / max(time.perf_counter() - t0, 1e-9):.0f}")
        if on_step is not None:
            on_step(i)
    bar.close()
    elapsed = time.perf_counter() - t0
    result = {k: sums[k] / count if count else math.nan for k in _logged_terms(cfg, sums)}  # nan: nothing left
    result.update(captions_per_s=captions / max(elapsed, 1e-9), epoch_seconds=elapsed,
                  first_ce=first_ce if first_ce is not None else math.nan)
    return result


def _update_baselines(state: TrainState, logs: dict[str, Any], world: int, reinforced: bool) -> None:
    """Hard attention's moving REINFORCE baselines (``reinforced``: this batch had a REINFORCE term), shared by
    all ranks so they stay in step; both are taken out of ``logs``, which keeps only scalars to average."""
    log_p = logs.pop("log_p", None)
    word_rewards = logs.pop("word_rewards", None)
    if not reinforced:
        return
    state.baseline = update_baseline(state.baseline, distributed.mean(log_p, world))
    if word_rewards is not None:
        word_sums, counts = (distributed.total(t, world) for t in word_rewards)
        old = torch.tensor(state.word_baseline, dtype=torch.float64) if state.word_baseline is not None else None
        state.word_baseline = update_word_baseline(old, word_sums, counts).tolist()


def _logged_terms(cfg: TrainConfig, sums: dict[str, float]) -> tuple[str, ...]:
    """The loss terms an epoch reports, by objective."""
    keys = ("loss", "ce", "ds", "reinforce") if cfg.objective == "xe" else ("loss", "ce", "ds", "policy", "reward")
    if "box" in sums:
        keys += ("box",)
    if cfg.objective == "scst" and cfg.scst_xe_weight > 0:
        keys += ("reference_ce",)
    return keys


def main(cfg: TrainConfig, resume: bool = False, on_step: Callable[[int], None] | None = None,
         overwrite: bool = False) -> dict[str, Any]:
    """Run training as configured; returns the final history and best score.

    ``cfg.out`` is claimed first (see :func:`captioner.training.runs.claim_run`): a folder that holds a run
    needs ``resume`` or ``overwrite``, and a folder another training is writing is refused. Under
    torchrun, rank 0 holds the folder for all ranks.
    """
    cfg.validate()
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite starts a new one; pass only one")
    rank, world = distributed.start()
    try:
        with contextlib.ExitStack() as stack:
            failure: CaptionerError | None = None
            if rank == 0:
                try:
                    stack.enter_context(claim_run(cfg.out, resume=resume, overwrite=overwrite))
                except CaptionerError as exc:
                    failure = exc
            if not distributed.all_ranks_agree(failure is None, world):
                raise failure or ConfigError(f"rank 0 could not start the run in {cfg.out}; its error says why")
            return Run(cfg, rank, world, resume).fit(on_step)
    finally:
        distributed.stop(world)


class Run:
    """One training run in its folder: the data, model, optimizer and state, and how they are saved."""

    def __init__(self, cfg: TrainConfig, rank: int, world: int, resume: bool) -> None:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.cfg, self.rank, self.world, self.resume = cfg, rank, world, resume
        self.device = distributed.rank_device(cfg.device, rank, world)
        self.out = Path(cfg.out)
        torch.manual_seed(cfg.seed)
        train_recs, self.val_recs = prepare_data(cfg)
        self.vocab = Vocab.build((c for r in train_recs for c in r.captions), min_count=cfg.min_word_count)
        self.model = self._build_model()
        self.store = self._features(train_recs, self.val_recs)
        self.pairs = self._pairs(train_recs)
        self.reward = CaptionReward(self.pairs.references, cfg.scst_meteor_weight) if cfg.objective == "scst" else None
        self._warn_about_options()
        self.model.to(self.device)
        self.net: torch.nn.Module = self.model
        if world > 1:
            self.net = torch.nn.parallel.DistributedDataParallel(self.model)
        groups = [{"params": list(self.model.decoder.parameters()), "lr": cfg.lr}]
        tuned = [p for p in self.model.encoder.parameters() if p.requires_grad]
        if tuned:
            groups.append({"params": tuned, "lr": cfg.encoder_lr})
        self.optimizer = torch.optim.Adam(groups, lr=cfg.lr)
        if cfg.init_from and not resume:
            init_weights(self.model, cfg.init_from)
        self.average = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.state = TrainState()
        if resume:
            self.state = restore(self.out / STATE_FILE, load_state(self.out / STATE_FILE), self.model,
                                 self.optimizer, self.average)
            if rank == 0:  # the log as of the saved state: drops rows of an epoch whose state was never saved
                write_log(self.out, self.state.history)
        if rank == 0:
            self.out.mkdir(parents=True, exist_ok=True)
            write_json(self.out / "config.json", to_dict(cfg), indent=2)
            self.vocab.save(self.out / "vocab.json")

    def _build_model(self) -> CaptionModel:
        model_cfg = self.cfg.model
        model_cfg.vocab_size = len(self.vocab)
        for k, v in feature_dims(model_cfg.encoder, model_cfg.features).items():
            setattr(model_cfg, k, v)
        return CaptionModel(model_cfg, self.vocab, encoder_weights=self.cfg.encoder_weights,
                            fine_tune_blocks=self.cfg.fine_tune_blocks, name=self.out.name)

    def _features(self, train_recs: list[Record], val_recs: list[Record]) -> FeatureStore | LiveImages:
        paths = sorted({r.image_path for r in train_recs} | {r.image_path for r in val_recs})
        if not self.cfg.feature_cache:
            return LiveImages(paths, self.model.preprocess)
        return cache_features(self.model.encoder, paths, self.cfg.cache_dir, progress=self.cfg.progress and self.rank == 0,
                              device=self.device)

    def _pairs(self, train_recs: list[Record]) -> Pairs:
        pairs = make_pairs(train_recs, self.store, self.vocab, self.cfg.max_len)
        if self.cfg.instances:
            from ..data.instances import load_instances
            from .boxes import box_targets

            pairs.boxes = box_targets(pairs.records, load_instances(self.cfg.instances), self.vocab, self.cfg.model.grid)
        if pairs.n_images < self.cfg.batch_size * self.world:
            raise DataError(f"dataset too small: {pairs.n_images} training images for a batch of {self.cfg.batch_size}"
                            f" x {self.world} process(es); lower --batch-size")
        return pairs

    def _warn_about_options(self) -> None:
        cfg = self.cfg
        if self.reward is None or self.rank != 0:
            return
        if not (cfg.init_from or self.resume):
            warnings.warn("self-critical training from random weights rarely learns; start from a cross-entropy "
                          "model with --init-from", stacklevel=3)
        if cfg.model.attention == "hard" and cfg.scst_locations == "sample" and \
                (cfg.location_samples > 1 or cfg.hard_estimator != "paper"):
            warnings.warn("--hard-estimator and --location-samples are not used by self-critical training with "
                          "--scst-locations sample (the sampled locations share each caption's advantage); "
                          "--scst-locations argmax trains the locations with them", stacklevel=3)

    def averaged(self) -> contextlib.AbstractContextManager:
        """The weights that are validated and saved: the moving average when there is one."""
        return self.average.applied() if self.average is not None else contextlib.nullcontext()

    def save(self, tag: str | None = None) -> None:
        """``last`` (and ``tag``, e.g. ``best``) checkpoints, then the training state, on rank 0."""
        if self.rank != 0:
            return
        state, model, cfg = self.state, self.model, self.cfg
        extra = {"name": self.out.name, "epoch": state.epoch, "fine_tune_blocks": cfg.fine_tune_blocks,
                 "weights": "moving average" if self.average is not None else "last step"}
        with resume_advice(self.out), self.averaged():  # the checkpoints hold the weights that were validated
            if tag:
                save_checkpoint(self.out / f"{tag}.safetensors", model.checkpoint_state(), cfg.model, self.vocab,
                                extra={**extra, "val": state.history[-1] if state.history else {}})
            save_checkpoint(self.out / "last.safetensors", model.checkpoint_state(), cfg.model, self.vocab, extra=extra)
        # the state last: until it is written, --resume redoes this epoch and rewrites the checkpoints
        with resume_advice(self.out):
            save_state(self.out / STATE_FILE, model, self.optimizer, state, cfg, self.average)

    def validated_bleu4(self) -> tuple[dict[str, float], float]:
        """Rank 0 decodes the validation images; every rank gets its BLEU-4 (the same decisions everywhere)."""
        with self.averaged():
            scores = validate(self.model, self.val_recs, self.store, self.cfg, self.device) if self.rank == 0 else {}
        return scores, distributed.from_rank0(scores.get("BLEU-4", 0.0), self.world)

    def log(self, row: dict[str, Any]) -> None:
        self.state.history.append(row)
        if self.rank == 0:
            with resume_advice(self.out):
                write_log(self.out, self.state.history)

    def say(self, line: str) -> None:
        if self.rank == 0:
            print(line, flush=True)

    def fit(self, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
        """Epochs until ``cfg.epochs`` or early stopping; Ctrl-C saves the exact state and returns."""
        cfg, state = self.cfg, self.state
        if cfg.init_from and not self.resume:
            # the warm start is the score to beat: "best" is only replaced by an epoch that improves on it
            scores, state.best = self.validated_bleu4()
            self.log({"epoch": 0, **scores, "lr": self.optimizer.param_groups[0]["lr"]})
            self.say(f"epoch 0 (from {cfg.init_from}): val BLEU-4 {state.best:.2f}")
            self.save("best")
        interrupted = False
        while state.epoch < cfg.epochs and state.bad_epochs < cfg.early_stop:
            try:
                stats = train_one_epoch(self.model, self.net, self.optimizer, self.pairs, self.store, cfg, state,
                                        self.device, self.rank, self.world, on_step, self.reward, self.average)
                t_val = time.perf_counter()
                scores, bleu4 = self.validated_bleu4()
                val_seconds = time.perf_counter() - t_val
            except KeyboardInterrupt:  # Ctrl-C: keep every finished batch; --resume redoes nothing twice
                interrupted = True
                self.save()
                self.say(f"interrupted: saved {self.out / STATE_FILE} at epoch {state.epoch + 1}, batch {state.step}; "
                         f"continue with --resume")
                break
            improved = self._end_epoch(bleu4)
            self.log({"epoch": state.epoch, **stats, **scores, "val_seconds": val_seconds,
                      "lr": self.optimizer.param_groups[0]["lr"]})
            shown = f"reward of samples {stats['reward']:.3f}" if "reward" in stats else f"loss {stats['ce']:.3f}"
            self.say(f"epoch {state.epoch}: {shown}, val BLEU-4 {bleu4:.2f}{' (best)' if improved else ''}, "
                     f"{stats['captions_per_s']:.0f} captions/s")
            self.save("best" if improved else None)
        if self.reward is not None:
            self.reward.close()  # METEOR's JVM ends with the run
        return {"history": state.history, "best": state.best, "interrupted": interrupted, "out": str(self.out)}

    def _end_epoch(self, bleu4: float) -> bool:
        """Count the epoch, keep the best score, decay the learning rates after a plateau; True if it improved."""
        state, cfg = self.state, self.cfg
        state.epoch += 1
        state.step = 0
        improved = bleu4 > state.best
        state.best, state.bad_epochs = (bleu4, 0) if improved else (state.best, state.bad_epochs + 1)
        if not improved:
            for g in self.optimizer.param_groups:
                g["lr"] *= cfg.lr_decay
        return improved
