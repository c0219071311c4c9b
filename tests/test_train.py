"""`captioner train` end to end on a tiny synthetic dataset: logs, checkpoints, exact resume, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_config, train_config
from safetensors.torch import load_file

import captioner
from captioner.cli.main import main as cli_main
from captioner.errors import CheckpointError, ConfigError, DataError
from captioner.training.loop import main as train_main

make_cfg = train_config

def test_training_writes_logs_curves_and_checkpoints(shapes, tmp_path):
    result = train_main(make_cfg(shapes, tmp_path / "run"))
    run = tmp_path / "run"
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all("BLEU-4" in r and "ce" in r for r in rows)
    assert rows[1]["ce"] < rows[0]["ce"]  # it learns
    for name in ("best.safetensors", "last.safetensors", "last.state.pt", "config.json", "vocab.json", "curves.png"):
        assert (run / name).is_file(), name
    assert json.loads((run / "config.json").read_text())["model"]["attention"] == "hard"
    assert result["best"] >= 0
    import captioner

    model = captioner.load_model(str(run / "best.safetensors"))
    assert model.caption(Path(shapes / "images" / "val").glob("*.jpg").__next__(), beam=2).words


@pytest.mark.parametrize("extra", [dict(hard_estimator="token", location_samples=1),
                                   dict(hard_estimator="token", location_samples=3)])
def test_every_hard_estimator_trains_and_keeps_its_baselines(shapes, tmp_path, extra):
    result = train_main(make_cfg(shapes, tmp_path / "run", **extra))
    rows = result["history"]
    assert len(rows) == 2 and all(r["reinforce"] == r["reinforce"] for r in rows)  # not NaN
    state = torch.load(tmp_path / "run" / "last.state.pt", weights_only=True)
    assert json.loads(state["state"])["word_baseline"] is not None  # the per-word baseline was kept


def test_same_seed_same_training_curve(shapes, tmp_path):
    a = train_main(make_cfg(shapes, tmp_path / "a", epochs=1))["history"]
    b = train_main(make_cfg(shapes, tmp_path / "b", epochs=1))["history"]
    assert a[0]["ce"] == b[0]["ce"] and a[0]["BLEU-4"] == b[0]["BLEU-4"]


def test_interrupted_run_resumes_to_identical_weights(shapes, tmp_path):
    train_main(make_cfg(shapes, tmp_path / "full"))
    calls = {"n": 0}

    def interrupt(step: int) -> None:
        calls["n"] += 1
        if calls["n"] == 5:  # mid-way through the second epoch
            raise KeyboardInterrupt

    first = train_main(make_cfg(shapes, tmp_path / "cut"), on_step=interrupt)
    assert first["interrupted"]
    train_main(make_cfg(shapes, tmp_path / "cut"), resume=True)
    full = load_file(str(tmp_path / "full" / "last.safetensors"))
    resumed = load_file(str(tmp_path / "cut" / "last.safetensors"))
    assert full.keys() == resumed.keys()
    for k in full:
        torch.testing.assert_close(full[k], resumed[k], rtol=0, atol=0, msg=k)


def test_resume_rejects_corrupt_or_missing_state(shapes, tmp_path):
    with pytest.raises(CheckpointError, match="nothing to resume"):
        train_main(make_cfg(shapes, tmp_path / "none"), resume=True)
    run = tmp_path / "bad"
    run.mkdir()
    (run / "last.state.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt"):
        train_main(make_cfg(shapes, run), resume=True)


def test_resume_rejects_a_mismatched_model(shapes, tmp_path):
    train_main(make_cfg(shapes, tmp_path / "run", epochs=1))
    cfg = make_cfg(shapes, tmp_path / "run", epochs=2)
    cfg.model.hidden_dim = 48
    with pytest.raises(CheckpointError, match="does not match"):
        train_main(cfg, resume=True)


def test_dataset_too_small_for_the_batch(shapes, tmp_path):
    with pytest.raises(DataError, match="too small"):
        train_main(make_cfg(shapes, tmp_path / "run", batch_size=1000))


def test_cli_errors_are_one_line(shapes, tmp_path, capsys):
    cfg_file = tmp_path / "cfg.yaml"
    cfg_file.write_text("epochs: 1\nbatch_sise: 4\n")
    assert cli_main(["train", "--config", str(cfg_file)]) == 2
    err = capsys.readouterr().err
    assert "unknown key(s) batch_sise" in err and "Traceback" not in err and err.count("\n") == 1
    for flag, value in (("--attention", "sparse"), ("--score", "cosine"), ("--encoder", "alexnet")):
        assert cli_main(["train", "--data", str(shapes / "captions_train.json"), flag, value,
                         "--out", str(tmp_path / "x")]) == 2
        err = capsys.readouterr().err
        assert "unknown" in err and value in err and err.count("\n") == 1


def test_config_file_and_flags_precedence(tmp_path):
    import argparse

    from captioner.cli.train import add_arguments, config_from_args

    cfg_file = tmp_path / "cfg.json"
    cfg_file.write_text(json.dumps({"epochs": 7, "lr": 0.01, "model": {"attention": "local"}}))
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    cfg = config_from_args(parser.parse_args(["--config", str(cfg_file), "--lr", "0.002", "--score", "dot"]))
    assert (cfg.epochs, cfg.lr, cfg.model.attention, cfg.model.score) == (7, 0.002, "local", "dot")
    with pytest.raises(ConfigError):
        (tmp_path / "bad.json").write_text("{not json")
        config_from_args(parser.parse_args(["--config", str(tmp_path / "bad.json")]))


def test_fine_tuning_trains_only_the_last_blocks(shapes, tmp_path):
    from captioner.model.caption_model import load_model

    cfg = make_cfg(shapes, tmp_path / "ft", epochs=1, fine_tune_blocks=1, encoder_lr=1e-3)
    train_main(cfg)
    tuned = load_model(str(tmp_path / "ft" / "last.safetensors"))
    fresh = load_model(str(tmp_path / "ft" / "last.safetensors"))
    from captioner.model.encoder import Encoder

    base = Encoder("efficientnet-lite0", 2)
    last = dict(tuned.encoder.trunk.blocks()[-1].named_parameters())
    first = dict(tuned.encoder.trunk.blocks()[0].named_parameters())
    base_last = dict(base.trunk.blocks()[-1].named_parameters())
    base_first = dict(base.trunk.blocks()[0].named_parameters())
    assert any(not torch.equal(last[k], base_last[k]) for k in last), "last block did not change"
    assert all(torch.equal(first[k], base_first[k]) for k in first), "a frozen block changed"
    assert not tuned.encoder.frozen and fresh.caption(next((shapes / "images" / "val").glob("*.jpg")), beam=1).words


def test_fine_tuning_from_cached_activations_trains_like_the_live_encoder(shapes, tmp_path):
    kw = dict(epochs=1, fine_tune_blocks=2, encoder_lr=1e-3, model=tiny_config("soft", grid=2))
    cached = train_main(make_cfg(shapes, tmp_path / "cached", **kw))["history"][0]
    live = train_main(make_cfg(shapes, tmp_path / "live", feature_cache=False, **kw))["history"][0]
    assert cached["first_ce"] == pytest.approx(live["first_ce"], abs=2e-3)  # the cache holds fp16 activations
    assert cached["ce"] == pytest.approx(live["ce"], rel=2e-3)


def test_init_from_a_fine_tuned_model_carries_its_encoder(shapes, tmp_path):
    import captioner
    from captioner.model.caption_model import CaptionModel
    from captioner.training.state import init_weights

    train_main(make_cfg(shapes, tmp_path / "ft", epochs=1, fine_tune_blocks=1, encoder_lr=1e-2))
    source = tmp_path / "ft" / "best.safetensors"
    src = captioner.load_model(str(source))
    target = CaptionModel(src.cfg, src.vocab, fine_tune_blocks=1)
    head = "trunk.net._conv_head.weight"
    assert not torch.equal(target.encoder.state_dict()[head], src.encoder.state_dict()[head])  # it was tuned
    init_weights(target, str(source))
    for (k, v), w in zip(src.encoder.state_dict().items(), target.encoder.state_dict().values()):
        torch.testing.assert_close(w, v, msg=k)
    with pytest.raises(CheckpointError, match="--fine-tune-blocks 1"):  # its tuned head cannot come from a frozen cache
        init_weights(CaptionModel(src.cfg, src.vocab), str(source))


def test_validation_runs_the_fine_tuned_blocks_in_eval_mode(shapes, tmp_path, monkeypatch):
    from captioner.data.feature_cache import cache_features
    from captioner.data.vocab import Vocab
    from captioner.model.caption_model import CaptionModel
    from captioner.training import validation as train
    from captioner.training.batches import prepare_data

    cfg = make_cfg(shapes, tmp_path / "v", fine_tune_blocks=2, model=tiny_config("soft", grid=2))
    _, val = prepare_data(cfg)
    vocab = Vocab.build([c for r in val for c in r.captions], min_count=1)
    cfg.model.vocab_size = len(vocab)
    model = CaptionModel(cfg.model, vocab, fine_tune_blocks=2).train()
    net = model.encoder.trunk.net  # EfficientNet-Lite0: its last block and head are the tuned ones
    store = cache_features(model.encoder, [r.image_path for r in val], tmp_path / "cache", progress=False)
    seen = []

    def spy(decoder, feats, vocab, opts):
        seen.append((feats.clone(), [net._blocks[-1].training, net._conv_head.training]))
        return real(decoder, feats, vocab, opts)

    real = train.decode
    monkeypatch.setattr(train, "decode", spy)
    train.validate(model, val, store, cfg, torch.device("cpu"))
    train.validate(model, val, store, cfg, torch.device("cpu"))
    assert torch.equal(seen[0][0], seen[1][0])  # no drop-connect: the same features both times
    assert seen[0][1] == [False, False] and model.training and net._blocks[-1].training and net._conv_head.training


def test_validation_decodes_as_captioning_does(shapes, tmp_path, monkeypatch):
    from captioner.data.feature_cache import cache_features
    from captioner.data.vocab import Vocab
    from captioner.model.caption_model import CaptionModel
    from captioner.model.search import DecodeOptions
    from captioner.training import validation as train
    from captioner.training.batches import prepare_data

    cfg = make_cfg(shapes, tmp_path / "v", model=tiny_config("soft", grid=2))
    _, val = prepare_data(cfg)
    vocab = Vocab.build([c for r in val for c in r.captions], min_count=1)
    cfg.model.vocab_size = len(vocab)
    model = CaptionModel(cfg.model, vocab)
    store = cache_features(model.encoder, [r.image_path for r in val], tmp_path / "cache", progress=False)
    seen = []
    real = train.decode
    monkeypatch.setattr(train, "decode", lambda d, f, v, opts: seen.append(opts) or real(d, f, v, opts))
    train.validate(model, val, store, cfg, torch.device("cpu"))
    assert seen and all(o.no_repeat_ngram == DecodeOptions().no_repeat_ngram and o.beam == cfg.val_beam for o in seen)


def test_bf16_training_learns_like_fp32(shapes, tmp_path):
    fp32 = train_main(make_cfg(shapes, tmp_path / "fp32", epochs=2))["history"]
    bf16 = train_main(make_cfg(shapes, tmp_path / "bf16", epochs=2, precision="bf16"))["history"]
    assert bf16[1]["ce"] < bf16[0]["ce"]
    assert abs(bf16[1]["ce"] - fp32[1]["ce"]) < 0.1 * fp32[1]["ce"]
    with pytest.raises(ConfigError, match="precision"):
        train_main(make_cfg(shapes, tmp_path / "x", precision="fp8"))


def test_init_from_warm_starts_hard_attention_from_a_soft_model(shapes, tmp_path):
    import captioner
    from captioner.data.vocab import Vocab
    from captioner.model.caption_model import CaptionModel
    from captioner.training.state import init_weights

    train_main(make_cfg(shapes, tmp_path / "soft", epochs=1, model=tiny_config("soft", grid=2)))
    source = tmp_path / "soft" / "best.safetensors"
    src = load_file(str(source))
    vocab = captioner.load_model(str(source)).vocab
    hard = CaptionModel(tiny_config("hard", grid=2, vocab_size=len(vocab)), vocab)
    init_weights(hard, str(source))
    for k, v in hard.decoder.state_dict().items():
        torch.testing.assert_close(v, src[f"decoder.{k}"])
    other = Vocab.build(["x y z"], min_count=1)
    with pytest.raises(CheckpointError, match="vocabulary"):
        init_weights(CaptionModel(tiny_config("hard", grid=2, vocab_size=len(other)), other), str(source))
    # through training: the warm-started model starts from a lower loss than a cold start
    warm = train_main(make_cfg(shapes, tmp_path / "warm", epochs=1, init_from=str(source)))["history"]
    cold = train_main(make_cfg(shapes, tmp_path / "cold", epochs=1))["history"]
    assert warm[0]["epoch"] == 0 and "BLEU-4" in warm[0]  # the warm start is scored before training
    assert warm[1]["first_ce"] < cold[0]["first_ce"] - 0.1


def test_a_recipe_file_runs_its_stages_in_turn_and_exports_the_model(shapes, tmp_path, capsys):
    """`captioner train --config recipe.yaml`: stage 2 starts from stage 1, the model is exported, the time kept;
    --resume skips finished stages."""
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(f"""
format: coco
batch_size: 4
min_word_count: 1
max_len: 12
val_beam: 2
seed: 3
progress: false
cache_dir: {tmp_path / 'cache'}
model: {{attention: soft, grid: 2, embed_dim: 16, hidden_dim: 32, attention_dim: 16, proj_dim: 24, dropout: 0.0}}
stages:
  - {{name: xe, epochs: 1, lr: 0.001}}
  - {{name: scst, init_from: previous, objective: scst, scst_samples: 2, epochs: 1, lr: 0.0001}}
export: {{name: tiny, checkpoint: last}}
""".replace("format: coco", "data_format: coco"))
    out = tmp_path / "recipe-run"
    args = ["train", "--config", str(recipe), "--data", str(shapes / "captions_train.json"),
            "--val-data", str(shapes / "captions_val.json"), "--out", str(out)]
    assert cli_main(args) == 0
    record = json.loads((out / "recipe.json").read_text())
    assert list(record["stages"]) == ["xe", "scst"] and record["total_seconds"] > 0
    scst_log = [json.loads(line) for line in (out / "scst" / "metrics.jsonl").read_text().splitlines()]
    assert scst_log[0]["epoch"] == 0 and "reward" in scst_log[-1]  # started from stage 1's model
    assert scst_log[0]["BLEU-4"] == json.loads((out / "xe" / "metrics.jsonl").read_text().splitlines()[-1])["BLEU-4"]
    exported = captioner.load_model(str(out / "tiny.safetensors"))
    assert exported.name == "tiny" and exported.cfg.grid == 2
    capsys.readouterr()
    assert cli_main(args + ["--resume"]) == 0
    assert capsys.readouterr().out.count("finished before, skipped") == 2


@pytest.mark.parametrize("recipe", sorted((Path(__file__).parents[1] / "weights" / "recipes").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_shipped_recipes_are_valid_configs(recipe, tmp_path):
    """Each weights/recipes file names real options and exports the model it is named after."""
    from captioner.config import load_config_file
    from captioner.training.recipe import stage_configs

    base = load_config_file(recipe)
    stages = base.pop("stages")
    export = base.pop("export")
    configs = stage_configs({**base, "data": "DATA"}, stages, tmp_path, str(recipe))
    assert export["name"] == recipe.stem and export["checkpoint"] in ("best", "last")
    for (_, prev), (_, cfg) in zip(configs, configs[1:]):
        assert cfg.init_from == str(Path(prev.out) / "best.safetensors")
