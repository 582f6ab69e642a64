import pytest
import tensorflow as tf

from app.model.preprocess import TagLookup
from app.text.stemming import OTHER, STEMMERS, build_normalized_vocabulary, language_group, stem
from app.text.tags import OOV_ID, Vocabulary

# (language, cleaned tags) of train photos: inflections in five languages, a homograph (fr `chat`),
# case, a multi-word tag, umlauts, undetected photos and a language without a stemmer (`vo`).
TRAIN = [
    ("de", ["katze", "katzen", "hund"]), ("de", ["katzen", "hunde", "Männer"]), ("de", ["katze", "strand"]),
    ("fr", ["chat", "chats", "chien"]), ("fr", ["chats", "chiens"]),
    ("es", ["gato", "gatos", "perro"]), ("es", ["gatos"]),
    ("en", ["cats", "dogs", "new york"]), ("en", ["cat", "dog", "Dogs"]), ("en", ["chat", "dogs"]),
    ("un", ["katzen", "dogs"]), ("un", ["gatos", "zzz"]), ("vo", ["hunde", "chats"]), ("un", ["katzen", "qqq"]),
]


def python_forms(photos, limit):
    """The normalisation written out from the module docstring, with Snowball directly."""
    votes = {}
    for language, tags in photos:
        if language in STEMMERS:
            for tag in tags[:limit]:
                votes.setdefault(tag, {}).setdefault(stem(language, tag), 0)
                votes[tag][stem(language, tag)] += 1
    majority = {tag: sorted(v.items(), key=lambda fc: (-fc[1], fc[0]))[0][0] for tag, v in votes.items()}

    def form(language, tag):
        return stem(language, tag) if language in STEMMERS else majority.get(tag, tag)

    return form


def test_snowball_vocabulary_merges_inflections_per_photo_language():
    vocab = build_normalized_vocabulary(TRAIN, limit=3, threshold=2, normalization="snowball")
    plain = build_normalized_vocabulary(TRAIN, limit=3, threshold=2)
    assert vocab.normalization == "snowball" and plain.normalization == "none" and not plain.forms
    counts = dict(zip(vocab.tokens, vocab.counts))
    # de katze/katzen -> katz (4 in de photos, 2 in un photos: their majority form), fr chat/chats -> chat (3, plus
    # en `chat` and the `vo` photo's chats), es gato/gatos -> gat (3, plus 1 un)
    assert counts["katz"] == 6 and counts["chat"] == 5 and counts["gat"] == 4
    assert counts["dog"] == 5  # en dogs/dog/Dogs/dogs (Snowball folds case) and the un photo's dogs
    assert "katzen" not in counts and "gatos" not in counts and plain.tokens.count("katzen") == 1
    assert sum(vocab.counts) > sum(plain.counts) + 5  # more of the train tags are in the vocabulary


def test_forms_table_gives_the_python_normalisation_for_every_train_pair_and_falls_back_for_unseen():
    vocab = build_normalized_vocabulary(TRAIN, limit=3, threshold=1, normalization="snowball")
    form = python_forms(TRAIN, 3)
    index = {t: i + 2 for i, t in enumerate(vocab.tokens)}
    lookup = TagLookup(vocab)
    languages = [language for language, _ in TRAIN]
    ids = lookup(tf.ragged.constant([tags for _, tags in TRAIN]), cleaned=True, languages=tf.constant(languages))
    expected = [[index.get(form(language, t), OOV_ID) for t in tags[:3]] for language, tags in TRAIN]
    assert ids.numpy().tolist() == [row + [0] * (3 - len(row)) for row in expected]
    # pairs never seen in train: (fr, katzen) takes katzen's most frequent train form; (de, Hunde) and
    # (it, gatto) were never seen in any language: looked up as written (OOV unless a form is spelt so)
    unseen = lookup(tf.ragged.constant([["katzen", "Hunde", "gatto", "hund"]]), languages=tf.constant(["fr"]))
    assert unseen.numpy().tolist() == [[index["katz"], OOV_ID, OOV_ID]]
    assert lookup(tf.ragged.constant([["hund", "chat"]]), languages=tf.constant(["it"])).numpy().tolist() == [
        [index["hund"], index["chat"], 0]]
    with pytest.raises(ValueError, match="pass each photo's language. Received: languages=None"):
        lookup(tf.ragged.constant([["katzen"]]))


def test_language_groups():
    assert language_group("de") == "de" and language_group("un") == OTHER and language_group("vo") == OTHER
    assert {"en", "de", "fr", "es", "it"} <= set(STEMMERS)


def test_normalised_vocabulary_file_round_trips(tmp_path):
    awkward = [("de", ["tab\there", "back\\slash"]), ("en", ["gatos"])]
    vocab = build_normalized_vocabulary(TRAIN + awkward, limit=3, threshold=1, normalization="snowball")
    assert vocab.forms[OTHER, "katzen"] == "katz" and vocab.forms[OTHER, "Männer"] == "mann"
    assert vocab.forms["en", "gatos"] == "gato"  # English Snowball; es (2 photos, the majority) gives `gat`
    vocab.forms[("fr", "new\nline")] = ""  # an out-of-vocabulary form, awkward characters
    vocab.save(tmp_path / "vocab.tsv")
    header = (tmp_path / "vocab.tsv").read_text(encoding="utf-8").splitlines()[0]
    assert "normalization=snowball" in header
    assert Vocabulary.load(tmp_path / "vocab.tsv") == vocab
    plain = Vocabulary(["a"], [1], 5, 1)
    plain.save(tmp_path / "plain.tsv")
    assert Vocabulary.load(tmp_path / "plain.tsv") == plain
    (tmp_path / "bad.tsv").write_text((tmp_path / "vocab.tsv").read_text(encoding="utf-8") + "de\tonly two\n",
                                      encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.tsv:\d+: expected 'language<TAB>tag<TAB>vocabulary tag'"):
        Vocabulary.load(tmp_path / "bad.tsv")


def test_unknown_normalisation_is_refused():
    with pytest.raises(ValueError, match="Received: 'porter'"):
        build_normalized_vocabulary(TRAIN, 3, 1, normalization="porter")
