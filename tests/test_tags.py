import pytest
import tensorflow as tf

from app.text.language import detect_language
from app.model.preprocess import TagLookup
from app.text.tags import OOV_ID, PAD_ID, TagDecodeError, Vocabulary, build_vocabulary, clean_tags, decode_field, decode_tags


def test_percent_decoding_unicode_comma_and_plus():
    assert decode_tags("caf%C3%A9,new+york,rock%2C+paper,%E2%9D%A4") == ["café", "new york", "rock, paper", "❤"]
    assert decode_field("a+b%2Bc") == "a b+c"
    with pytest.raises(TagDecodeError) as err:
        decode_field("100%")
    assert err.value.reason == "bad_escape"
    with pytest.raises(TagDecodeError) as err:
        decode_field("%FF%FE")
    assert err.value.reason == "non_utf8"


def test_cleaning_drops_digit_only_and_repeats_and_keeps_order():
    assert clean_tags(["2009", "dog", " cat ", "", "dog", "d90", "50mm", "123"]) == ["dog", "cat", "d90", "50mm"]
    assert clean_tags(["Dog", "dog"]) == ["Dog", "dog"]
    assert clean_tags(["Dog", "dog"], lowercase=True) == ["dog"]


def test_the_studys_limit_threshold_example():
    vocab = build_vocabulary([["dog", "cat", "pet", "cute", "woof"], ["pet", "dog"]], limit=2, threshold=2)
    assert vocab.tokens == ["dog"] and vocab.counts == [2]


def test_vocabulary_ids_pad_and_oov_are_distinct(tmp_path):
    vocab = build_vocabulary([["a", "b"], ["a", "c"], ["b", "a"]], limit=5, threshold=2)
    assert vocab.tokens == ["a", "b"] and vocab.size == 4
    assert PAD_ID != OOV_ID
    ids = TagLookup(vocab)(tf.ragged.constant([["b", "zzz", "a"]])).numpy().tolist()
    assert ids == [[3, OOV_ID, 2, PAD_ID, PAD_ID]]
    vocab.lowercase = True
    vocab.save(tmp_path / "vocab.tsv")
    again = Vocabulary.load(tmp_path / "vocab.tsv")
    assert again == vocab  # tokens, counts, limit, threshold and case folding: all a TagLookup needs


def test_vocabulary_file_round_trips_awkward_tags(tmp_path):
    vocab = Vocabulary(["tab\there", "back\\slash", "new\nline", "東京"], [4, 3, 2, 1], 20, 1)
    vocab.save(tmp_path / "v.tsv")
    assert Vocabulary.load(tmp_path / "v.tsv").tokens == vocab.tokens


def test_bad_limit_or_threshold():
    with pytest.raises(ValueError, match="limit=0"):
        build_vocabulary([], limit=0, threshold=1)


def test_language_detection_and_its_short_text_guard():
    assert detect_language(["hund", "katze", "strand", "sommer", "urlaub"]) == "de"
    assert detect_language(["dog", "cat", "beach", "sunset", "holiday"]) == "en"
    assert detect_language(["chien", "chat", "plage"]) == "fr"  # best effort on three tags
    assert detect_language(["canon"]) == "un"  # one word: cld2 would guess wildly
    assert detect_language([]) == "un"
