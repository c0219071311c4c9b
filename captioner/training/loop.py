"""`captioner train`: data -> cached features -> decoder training with real-decoding validation.

Split like torchvision's reference scripts: :func:`train_one_epoch`, :func:`validate`, :func:`main`.
Everything random draws from torch's generator seeded by ``cfg.seed``, and the full training state
(weights, optimizer, schedule, epoch, position in the epoch, RNG) is saved so that ``--resume``
continues exactly where a run stopped, even after Ctrl-C mid-epoch.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
import torch.distributed as dist
from tqdm import tqdm

from .batches import Pairs, epoch_batches, make_pairs
from ..config import to_dict
from .config import TrainConfig
from ..data.formats import load_records
from ..data.records import Record
from ..model.search import DecodeOptions, decode
from .ema import WeightAverage
from ..errors import CaptionerError, CheckpointError, ConfigError, DataError, DiskFullError
from ..data.feature_cache import FeatureStore, LiveImages, cache_features
from ..atomic import atomic_path, disk_full, write_bytes, write_json, write_text
from .losses import update_baseline, update_word_baseline
from ..model.caption_model import CaptionModel, resolve_device
from .objectives import scst_terms, xe_terms
from .runs import METRICS_FILE, STATE_FILE, claim_run
from .self_critical import CaptionReward
from ..data.vocab import Vocab, detokenize
from ..model.checkpoint import save_checkpoint


@dataclass
class TrainState:
    """Everything besides the weights that an exact resume needs."""

    epoch: int = 0
    step: int = 0  # batches already done in this epoch
    best: float = -1.0
    bad_epochs: int = 0
    baseline: float | None = None
    word_baseline: list[float] | None = None  # hard attention, token estimator: per-word moving average of log p
    history: list[dict[str, Any]] = field(default_factory=list)


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
    bar = tqdm(total=len(batches), initial=state.step, desc=f"epoch {state.epoch + 1}", unit="batch",
               disable=not (cfg.progress and rank == 0), dynamic_ncols=True)
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
        if hard and cfg.objective == "xe":
            log_p = logs.pop("log_p")
            if world > 1:  # one baseline for all ranks, so they stay in step
                t = torch.tensor([log_p], dtype=torch.float64)
                dist.all_reduce(t)
                log_p = float(t) / world
            state.baseline = update_baseline(state.baseline, log_p)
            word_rewards = logs.pop("word_rewards", None)
            if word_rewards is not None:
                word_sums, counts = word_rewards
                if world > 1:  # one baseline for all ranks
                    dist.all_reduce(word_sums)
                    dist.all_reduce(counts)
                old = torch.tensor(state.word_baseline, dtype=torch.float64) if state.word_baseline is not None else None
                state.word_baseline = update_word_baseline(old, word_sums, counts).tolist()
        logs.pop("log_p", None)
        state.step = i + 1
        if first_ce is None:
            first_ce = logs["ce"]
            if world > 1:  # the mean over ranks is the loss of the whole global batch
                t = torch.tensor([first_ce], dtype=torch.float64)
                dist.all_reduce(t)
                first_ce = float(t) / world
        for k, v in (("loss", float(total.detach())), *logs.items()):
            sums[k] = sums.get(k, 0.0) + v
        count += 1
        captions += n_captions * world
        rate = captions / max(time.perf_counter() - t0, 1e-9)
        bar.update(1)
        shown = {"reward": f"{logs['reward']:.3f}"} if "reward" in logs else {"loss": f"{logs['ce']:.3f}"}
        bar.set_postfix(**shown, caps_s=f"{rate:.0f}")
        if on_step is not None:
            on_step(i)
    bar.close()
    elapsed = time.perf_counter() - t0
    keys = ("loss", "ce", "ds", "reinforce") if cfg.objective == "xe" else ("loss", "ce", "ds", "policy", "reward")
    if "box" in sums:
        keys += ("box",)
    if cfg.objective == "scst" and cfg.scst_xe_weight > 0:
        keys += ("reference_ce",)
    result = {k: sums[k] / count if count else math.nan for k in keys}  # nan: nothing left to train
    result.update(captions_per_s=captions / max(elapsed, 1e-9), epoch_seconds=elapsed,
                  first_ce=first_ce if first_ce is not None else math.nan)
    return result


@torch.no_grad()
def validate(model: CaptionModel, records: list[Record], store: FeatureStore, cfg: TrainConfig,
             device: torch.device, metrics: tuple[str, ...] = ("BLEU-1", "BLEU-2", "BLEU-3", "BLEU-4", "CIDEr")) -> dict[str, float]:
    """Decode the validation images for real (beam search, never teacher-forced) and score them."""
    from ..metrics.corpus import score_captions

    records = [r for r in records if store.valid[store.row[r.image_path]]][: cfg.val_max_images or None]
    preds: dict[str, str] = {}
    opts = DecodeOptions(beam=cfg.val_beam, max_len=cfg.max_len)
    was_training = model.training
    model.eval()  # fine-tuned encoder blocks too: no drop-connect, no batch statistics from validation images
    try:
        for i in range(0, len(records), 100):
            chunk = records[i : i + 100]
            inputs = store.get([store.row[r.image_path] for r in chunk]).to(device)
            feats = model.annotations(inputs, store.live)
            for r, res in zip(chunk, decode(model.decoder, feats, model.vocab, opts)):
                preds[r.image_id] = detokenize(res.words)
    finally:
        model.train(was_training)
    refs = {r.image_id: list(r.captions) for r in records}
    return score_captions(preds, refs, metrics=list(metrics))


def prepare_data(cfg: TrainConfig) -> tuple[list[Record], list[Record]]:
    """Training and validation records for the configured format."""
    if not cfg.data:
        raise ConfigError("no training data given; pass --data FILE_OR_FOLDER (and --format)")
    train = load_records(cfg.data_format, cfg.data, cfg.images, split=cfg.train_split, skip_missing=cfg.skip_missing)
    if cfg.data_format == "coco":
        if not cfg.val_data:
            raise ConfigError("COCO format needs --val-data captions_val.json for validation")
        val = load_records("coco", cfg.val_data, cfg.val_images or cfg.images, split=cfg.val_split,
                           skip_missing=cfg.skip_missing)
    else:
        val = load_records(cfg.data_format, cfg.data, cfg.val_images or cfg.images, split=cfg.val_split,
                           skip_missing=cfg.skip_missing)
    return train, val


def _save_state(path: Path, model: CaptionModel, optimizer: torch.optim.Optimizer, state: TrainState,
                cfg: TrainConfig, average: WeightAverage | None) -> None:
    blob = {"model": model.checkpoint_state(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
            "state": json.dumps(state.__dict__), "config": json.dumps(to_dict(cfg))}
    if average is not None:
        blob["average"] = average.state_dict()
    buf = io.BytesIO()  # serialised in memory, then written: a full disk is then a clear OSError
    torch.save(blob, buf)
    write_bytes(path, buf.getvalue())


def _load_state(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: nothing to resume (no training state); start without --resume")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
        json.loads(blob["state"]), blob["model"], blob["optimizer"], blob["rng"]
    except Exception as exc:
        raise CheckpointError(f"{path}: corrupt training state, cannot resume ({str(exc).splitlines()[0][:120]})") from None
    return blob


@contextlib.contextmanager
def _resume_advice(out: Path) -> Iterator[None]:
    """A disk that fills mid-run: the error says how to go on from what was saved (nothing is half-written)."""
    try:
        yield
    except DiskFullError as exc:
        then = ("continue with --resume (what was saved before is intact)" if (out / STATE_FILE).is_file()
                else "start again with --overwrite")
        raise disk_full(Path(exc.path or out), then) from None


def _write_metrics(path: Path, history: list[dict[str, Any]]) -> None:
    """The log, one JSON row per epoch, rewritten whole each time: never a half-written last line."""
    write_text(path, "".join(json.dumps(row) + "\n" for row in history))


def _plot_curves(history: list[dict[str, Any]], path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5))
    ax1, ax2 = fig.subplots(1, 2)
    ep = [h["epoch"] for h in history]
    if "reward" in history[-1]:  # self-critical: the reward is what training raises
        ax1.plot(ep, [h.get("reward", math.nan) for h in history], marker="o")
        ax1.set(title="training reward (mean over samples)", xlabel="epoch")
    else:
        ax1.plot(ep, [h.get("ce", math.nan) for h in history], marker="o")
        ax1.set(title="training cross-entropy", xlabel="epoch")
    ax2.plot(ep, [h.get("BLEU-4", math.nan) for h in history], marker="o", color="tab:green")
    ax2.set(title="validation BLEU-4 (beam decoding)", xlabel="epoch")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def init_weights(model: CaptionModel, path: str) -> None:
    """Warm start: copy every matching tensor from another checkpoint with the same vocabulary.

    The attention type may differ (soft -> hard shares every parameter); anything else that differs in
    shape is an error, and parameters the source lacks (a local-attention window) keep their init. A
    source whose encoder was fine-tuned passes its encoder on too, which needs at least as many of its
    last blocks trainable here: frozen blocks are read from the feature cache, made with the original weights.
    """
    from ..model.checkpoint import check_shapes, read_checkpoint
    from ..model.registry import resolve_model_path

    src = resolve_model_path(path)
    tensors, src_cfg, src_vocab, extra = read_checkpoint(src)
    if src_vocab != model.vocab:
        raise CheckpointError(f"{src}: its vocabulary ({len(src_vocab)} words) differs from this data's "
                              f"({len(model.vocab)}); --init-from needs the same data and --min-word-count")
    enc = {k[8:]: v for k, v in tensors.items() if k.startswith("encoder.")}
    if enc:
        tuned = int(extra.get("fine_tune_blocks", 0))
        if src_cfg.encoder != model.cfg.encoder or tuned > model.encoder.fine_tune_blocks:
            raise CheckpointError(f"{src}: its {src_cfg.encoder} encoder has its last {tuned} blocks fine-tuned; "
                                  f"continue with --encoder {src_cfg.encoder} --fine-tune-blocks {tuned} (or more)")
        check_shapes(src, model.encoder.state_dict(), enc)
        model.encoder.load_state_dict(enc)
    own = model.decoder.state_dict()
    dec = {k[8:]: v for k, v in tensors.items() if k.startswith("decoder.")}
    for k, v in dec.items():
        if k in own and own[k].shape != v.shape:
            raise CheckpointError(f"{src}: tensor {k} has shape {tuple(v.shape)}, this model needs "
                                  f"{tuple(own[k].shape)}; --init-from needs the same model sizes")
    model.decoder.load_state_dict({k: v for k, v in dec.items() if k in own}, strict=False)


def _distributed() -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() and os.environ.get("CAPTIONER_BACKEND") != "gloo" else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _all_ranks_agree(ok: bool, world: int) -> bool:
    """Rank 0's ``ok`` on every rank, so that when rank 0 cannot start the others stop too, not hang."""
    if world == 1:
        return ok
    flag = torch.tensor([1 if ok else 0], dtype=torch.int64)
    dist.broadcast(flag, 0)
    return bool(flag)


def main(cfg: TrainConfig, resume: bool = False, on_step: Callable[[int], None] | None = None,
         overwrite: bool = False) -> dict[str, Any]:
    """Run training as configured; returns the final history and best score.

    ``cfg.out`` is claimed first (see :func:`captioner.runs.claim_run`): a folder that holds a run needs
    ``resume`` or ``overwrite``, and a folder another training is writing is refused. Under torchrun,
    rank 0 holds the folder for all ranks.
    """
    cfg.validate()
    if resume and overwrite:
        raise ConfigError("--resume continues the run in --out and --overwrite starts a new one; pass only one")
    rank, world = _distributed()
    try:
        with contextlib.ExitStack() as stack:
            failure: CaptionerError | None = None
            if rank == 0:
                try:
                    stack.enter_context(claim_run(cfg.out, resume=resume, overwrite=overwrite))
                except CaptionerError as exc:
                    failure = exc
            if not _all_ranks_agree(failure is None, world):
                raise failure or ConfigError(f"rank 0 could not start the run in {cfg.out}; its error says why")
            return _train(cfg, rank, world, resume, on_step)
    finally:
        if world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def rank_device(device: str, rank: int, world: int) -> torch.device:
    """This process's device: ``device`` resolved (``auto``: CUDA when there is a GPU); under torchrun each rank
    takes its own GPU, so ``cuda`` on rank 1 means ``cuda:1``."""
    dev = resolve_device(device)
    return torch.device("cuda", rank) if world > 1 and dev.type == "cuda" else dev


def _train(cfg: TrainConfig, rank: int, world: int, resume: bool,
           on_step: Callable[[int], None] | None) -> dict[str, Any]:
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    device = rank_device(cfg.device, rank, world)
    out = Path(cfg.out)
    torch.manual_seed(cfg.seed)
    train_recs, val_recs = prepare_data(cfg)
    vocab = Vocab.build((c for r in train_recs for c in r.captions), min_count=cfg.min_word_count)
    model_cfg = cfg.model
    from ..model.encoder import feature_dims

    model_cfg.vocab_size = len(vocab)
    for k, v in feature_dims(model_cfg.encoder, model_cfg.features).items():
        setattr(model_cfg, k, v)
    model = CaptionModel(model_cfg, vocab,
                         encoder_weights=cfg.encoder_weights, fine_tune_blocks=cfg.fine_tune_blocks, name=out.name)
    paths = sorted({r.image_path for r in train_recs} | {r.image_path for r in val_recs})
    store: FeatureStore | LiveImages
    if cfg.feature_cache:
        store = cache_features(model.encoder, paths, cfg.cache_dir,
                               progress=cfg.progress and rank == 0, workers=cfg.workers, device=device)
    else:
        store = LiveImages(paths, model.preprocess)
    pairs = make_pairs(train_recs, store, vocab, cfg.max_len)
    if cfg.instances:
        from .boxes import box_targets
        from ..data.instances import load_instances

        pairs.boxes = box_targets(pairs.records, load_instances(cfg.instances), vocab, model_cfg.grid)
    reward = (CaptionReward(pairs.references, cfg.scst_meteor_weight)
              if cfg.objective == "scst" else None)
    if reward is not None and not (cfg.init_from or resume) and rank == 0:
        warnings.warn("self-critical training from random weights rarely learns; start from a cross-entropy "
                      "model with --init-from", stacklevel=2)
    if (reward is not None and model_cfg.attention == "hard" and cfg.scst_locations == "sample" and rank == 0
            and (cfg.location_samples > 1 or cfg.hard_estimator != "paper")):
        warnings.warn("--hard-estimator and --location-samples are not used by self-critical training with "
                      "--scst-locations sample (the sampled locations share each caption's advantage); "
                      "--scst-locations argmax trains the locations with them", stacklevel=2)
    if pairs.n_images < cfg.batch_size * world:
        raise DataError(f"dataset too small: {pairs.n_images} training images for a batch of {cfg.batch_size}"
                        f" x {world} process(es); lower --batch-size")
    model.to(device)
    net: torch.nn.Module = model
    if world > 1:
        net = torch.nn.parallel.DistributedDataParallel(model)
    groups = [{"params": list(model.decoder.parameters()), "lr": cfg.lr}]
    tuned = [p for p in model.encoder.parameters() if p.requires_grad]
    if tuned:
        groups.append({"params": tuned, "lr": cfg.encoder_lr})
    optimizer = torch.optim.Adam(groups, lr=cfg.lr)
    if cfg.init_from and not resume:
        init_weights(model, cfg.init_from)
    state = TrainState()
    if resume:
        blob = _load_state(out / STATE_FILE)
        try:
            model.load_checkpoint_state(out / STATE_FILE, blob["model"])
            optimizer.load_state_dict(blob["optimizer"])
        except (RuntimeError, ValueError, KeyError, CheckpointError) as exc:
            raise CheckpointError(f"{out / STATE_FILE}: training state does not match this configuration "
                                  f"({str(exc).splitlines()[0][:120]})") from None
        state = TrainState(**json.loads(blob["state"]))
        torch.set_rng_state(blob["rng"])
        if rank == 0:  # the log as of the saved state: drops rows of an epoch whose state was never saved
            _write_metrics(out / METRICS_FILE, state.history)
    average = WeightAverage(model, cfg.ema_decay) if cfg.ema_decay else None
    if resume and average is not None:
        try:
            average.load_state_dict(blob.get("average", {}))
        except (ValueError, KeyError) as exc:
            raise CheckpointError(f"{out / STATE_FILE}: training state does not match this configuration "
                                  f"({'it has no weight average' if 'average' not in blob else exc})") from None
    averaged = average.applied if average is not None else contextlib.nullcontext
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / "config.json", to_dict(cfg), indent=2)
        vocab.save(out / "vocab.json")

    def save_all(tag: str | None = None) -> None:
        if rank != 0:
            return
        extra = {"name": out.name, "epoch": state.epoch, "fine_tune_blocks": cfg.fine_tune_blocks,
                 "weights": "moving average" if average is not None else "last step"}
        with _resume_advice(out), averaged():  # the checkpoints hold the weights that were validated
            if tag:
                save_checkpoint(out / f"{tag}.safetensors", model.checkpoint_state(), model_cfg, vocab,
                                extra={**extra, "val": state.history[-1] if state.history else {}})
            save_checkpoint(out / "last.safetensors", model.checkpoint_state(), model_cfg, vocab, extra=extra)
        # the state last: until it is written, --resume redoes this epoch and rewrites the checkpoints
        with _resume_advice(out):
            _save_state(out / STATE_FILE, model, optimizer, state, cfg, average)

    def validated_bleu4(scores: dict[str, float]) -> float:
        bleu4 = scores.get("BLEU-4", 0.0)
        if world > 1:  # rank 0 decodes; every rank takes the same early-stopping decisions
            t = torch.tensor([bleu4], dtype=torch.float64)
            dist.broadcast(t, 0)
            bleu4 = float(t)
        return bleu4

    def log_row(row: dict[str, Any]) -> None:
        state.history.append(row)
        if rank == 0:
            with _resume_advice(out):
                _write_metrics(out / METRICS_FILE, state.history)
                _plot_curves(state.history, out / "curves.png")

    if cfg.init_from and not resume:
        # the warm start is the score to beat: "best" is only replaced by an epoch that improves on it
        scores = validate(model, val_recs, store, cfg, device) if rank == 0 else {}
        state.best = validated_bleu4(scores)
        log_row({"epoch": 0, **scores, "lr": optimizer.param_groups[0]["lr"]})
        if rank == 0:
            print(f"epoch 0 (from {cfg.init_from}): val BLEU-4 {state.best:.2f}", flush=True)
        save_all("best")
    interrupted = {"flag": False}
    while state.epoch < cfg.epochs and state.bad_epochs < cfg.early_stop:
        try:
            stats = train_one_epoch(model, net, optimizer, pairs, store, cfg, state, device,
                                    rank, world, on_step, reward, average)
            t_val = time.perf_counter()
            with averaged():
                scores = validate(model, val_recs, store, cfg, device) if rank == 0 else {}
            val_seconds = time.perf_counter() - t_val
        except KeyboardInterrupt:  # Ctrl-C: keep every finished batch; --resume redoes nothing twice
            interrupted["flag"] = True
            save_all()
            if rank == 0:
                print(f"interrupted: saved {out / STATE_FILE} at epoch {state.epoch + 1}, batch {state.step}; "
                      f"continue with --resume", flush=True)
            break
        bleu4 = validated_bleu4(scores)
        state.epoch += 1
        state.step = 0
        improved = bleu4 > state.best
        state.best, state.bad_epochs = (bleu4, 0) if improved else (state.best, state.bad_epochs + 1)
        if not improved and state.bad_epochs % max(cfg.lr_patience, 1) == 0:
            for g in optimizer.param_groups:
                g["lr"] *= cfg.lr_decay
        log_row({"epoch": state.epoch, **stats, **scores, "val_seconds": val_seconds,
                 "lr": optimizer.param_groups[0]["lr"]})
        if rank == 0:
            train_fig = (f"reward of samples {stats['reward']:.3f}" if "reward" in stats
                         else f"loss {stats['ce']:.3f}")
            print(f"epoch {state.epoch}: {train_fig}, val BLEU-4 {bleu4:.2f}"
                  f"{' (best)' if improved else ''}, {stats['captions_per_s']:.0f} captions/s", flush=True)
        save_all("best" if improved else None)
    if reward is not None:
        reward.close()  # METEOR's JVM ends with the run
    return {"history": state.history, "best": state.best, "interrupted": interrupted["flag"], "out": str(out)}
