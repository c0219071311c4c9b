"""Vocabulary: tokenisation, deterministic building, encode/decode and the JSON round trip."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from captioner.errors import ConfigError, DataError
from captioner.data.vocab import END, PAD, START, UNK, Vocab, detokenize, tokenize

CAPTIONS = [
    "A dog runs on the grass.",
    "The dog's ball is red!",
    "A black dog, a red ball.",
    "A man in a t-shirt.",
]  # counts: a=5, dog=2, the=2, red=2, ball=2, others 1 ("dog's" is its own word)


def test_tokenize() -> None:
    assert tokenize("A Dog's T-shirt, 3-year-old!  Running...") == ["a", "dog's", "t-shirt", "3-year-old", "running"]
    assert tokenize("well- -done 'quoted' it\u2019s") == ["well", "done", "quoted", "it's"]
    assert tokenize(" ,.!? ") == []
    assert detokenize(tokenize("Two  dogs.")) == "two dogs"


def test_build_keeps_frequent_words_in_a_fixed_order() -> None:
    vocab = Vocab.build(CAPTIONS, min_count=2)
    assert vocab.itos == [PAD, START, END, UNK, "a", "ball", "dog", "red", "the"]
    assert (vocab.pad_id, vocab.start_id, vocab.end_id, vocab.unk_id) == (0, 1, 2, 3)
    shuffled = CAPTIONS[:]
    random.Random(0).shuffle(shuffled)
    assert Vocab.build(shuffled, min_count=2) == vocab
    assert len(Vocab.build(CAPTIONS, min_count=1)) > len(vocab)
    assert Vocab.build(CAPTIONS, min_count=2, max_size=6).itos == [PAD, START, END, UNK, "a", "ball"]


def test_empty_vocabulary_is_a_data_error() -> None:
    with pytest.raises(DataError, match="no word occurs at least 9 times in 4 captions; lower --min-word-count"):
        Vocab.build(CAPTIONS, min_count=9)
    with pytest.raises(ConfigError):
        Vocab.build(CAPTIONS, min_count=0)


def test_encode_decode() -> None:
    vocab = Vocab.build(CAPTIONS, min_count=2)
    ids = vocab.encode("A red zebra!")
    assert ids == [vocab.start_id, vocab.stoi["a"], vocab.stoi["red"], vocab.unk_id, vocab.end_id]
    assert vocab.encode(["a", "red", "zebra"]) == ids
    assert vocab.decode(ids + [vocab.pad_id] * 3) == ["a", "red", UNK]
    assert vocab.decode([vocab.stoi["dog"], vocab.end_id, vocab.stoi["red"]]) == ["dog"]  # stops at END


def test_encode_truncates_to_max_len() -> None:
    vocab = Vocab.build(CAPTIONS, min_count=2)
    ids = vocab.encode("the red dog a ball", max_len=2)
    assert ids == [vocab.start_id, vocab.stoi["the"], vocab.stoi["red"], vocab.end_id]
    assert vocab.encode("the red dog", max_len=0) == [vocab.start_id, vocab.end_id]
    assert len(vocab.encode("the red dog", max_len=10)) == 5


def test_json_round_trip(tmp_path: Path) -> None:
    vocab = Vocab.build(CAPTIONS, min_count=1)
    path = tmp_path / "sub" / "vocab.json"
    vocab.save(path)
    assert json.loads(path.read_text())["itos"] == vocab.itos
    loaded = Vocab.load(path)
    assert loaded == vocab and loaded.stoi == vocab.stoi
    assert Vocab.from_dict(vocab.to_dict()).encode(CAPTIONS[1]) == vocab.encode(CAPTIONS[1])


def test_load_errors_name_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "missing.json"
    with pytest.raises(DataError, match="no such file") as e:
        Vocab.load(missing)
    assert str(missing) in str(e.value)
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"itos": [', encoding="utf-8")
    with pytest.raises(DataError, match="not valid JSON") as e:
        Vocab.load(corrupt)
    assert str(corrupt) in str(e.value)
    wrong = tmp_path / "wrong.json"
    wrong.write_text('{"itos": ["a", "b"]}', encoding="utf-8")
    with pytest.raises(DataError, match="must start with") as e:
        Vocab.load(wrong)
    assert str(wrong) in str(e.value)


@pytest.mark.parametrize(
    "d, needle",
    [
        ([PAD, START, END, UNK], "expected an object"),
        ({"words": []}, "expected an object"),
        ({"itos": "abc"}, "list of strings"),
        ({"itos": [PAD, START, END, UNK, 5]}, "list of strings"),
        ({"itos": [START, PAD, END, UNK, "a"]}, "must start with"),
        ({"itos": [PAD, START, END, UNK, "a", "b", "a"]}, "'a' appears more than once"),
    ],
)
def test_from_dict_validates(d: object, needle: str) -> None:
    with pytest.raises(DataError, match=needle):
        Vocab.from_dict(d)
