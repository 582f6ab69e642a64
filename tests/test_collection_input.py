"""What a new user and an attacker feed the collection readers: Unicode forms and invisible characters, JSON
values of the wrong type, special files under --images, repeats, true lines in errors, and collections from
which nothing can be learned (issue 32)."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import time
import unicodedata

import pytest
from PIL import Image

from app import prepare
from app.errors import InputError
from app.serving.rows import make_row, read_rows
from app.sources.classes import read_class_list, read_hierarchy
from app.badrows import BadRows
from conftest import DATA
from test_collections import fails, folder, manifest_args, records, run_prepare  # noqa: F401 (a fixture)

CAFE, CAFE_NFD = "caf\u00e9", unicodedata.normalize("NFD", "caf\u00e9")


def test_one_form_at_the_manifest_door_and_one_tag_list_rule(folder):
    (folder / "classes.csv").write_text(f"name,id\nperson,p\nstaff,s\nlecturer,l\n{CAFE},c\n", encoding="utf-8")
    rows = [{"id": "a", "image": "a.jpg", "tags": f"cat,pet|new york, {CAFE}", "labels": CAFE_NFD, "split": "train"},
            {"id": "b\u200b", "image": "b.jpg", "tags": [CAFE_NFD, "\u200b\u202e", "Pet"], "split": "train"},
            {"id": "c", "tags": "\ufeffcat", "labels": f"\u2066{CAFE}\u2069", "split": "train"}]
    (folder / "photos.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    stats = run_prepare(manifest_args(folder, "photos.jsonl"))
    got = records(folder / "out")
    assert set(got) == {"a", "b", "c"}  # `b` + a zero-width space is `b`
    assert got["a"]["tags"] == ["cat", "pet", "new york", CAFE] and got["b"]["tags"] == [CAFE, "Pet"]
    assert got["a"]["pos"] == got["c"]["pos"] == {"c"}  # a label in another form, or wrapped in bidi isolates
    vocab = [line.split("\t")[0] for line in (folder / "out" / "vocab.tsv").read_text("utf-8").splitlines()[1:]]
    assert vocab.count(CAFE) == 1 and CAFE_NFD not in vocab and not any("\u200b" in t for t in vocab)
    assert stats["bad_rows"]["by_reason"]["tag_only_invisible"] == 1  # counted, not a vocabulary entry


BAD_UTF8_AT_500 = ("id,labels\n" + "".join(f"p{i},cat\n" for i in range(2, 500))).encode() + b"p\xff,cat\np501,cat\n"


@pytest.mark.parametrize("name,content,message", [
    # One photo under two forms of one id: a repeat, or a leak by hash split.
    ("photos.csv", "id,labels\np1,cat\np1\u200b,cat\n", "photos.csv:3: duplicate id 'p1' (first at "),
    ("photos.csv", f"id,labels,split\n{CAFE}0,cat,train\n{CAFE_NFD}0,cat,test\n",
     f"photos.csv:3: id '{CAFE}0' is in two splits (test here, train at "),
    ("photos.csv", "id,labels\n\u200b\u200f,cat\n", "photos.csv:2: empty id (only invisible characters"),
    # JSON values of the wrong type: were stored as their repr, or a traceback.
    ("photos.jsonl", '{"id": "a", "text": ["A", "cat"]}\n', 'photos.jsonl:1: text must be a string, got list ["A"'),
    ("photos.jsonl", '{"id": "a", "tags": {"x": 1}}\n', "photos.jsonl:1: tags must be a string or a list of strings, "
                                                        "got dict"),
    ("photos.jsonl", '{"id": "a"}\n{"id": "b", "tags": [true, 1.5]}\n', "photos.jsonl:2: tags must be a string or a "
                                                                         "list of strings, got list [true, 1.5]"),
    ("photos.jsonl", '{"id": 1.5}\n', "photos.jsonl:1: id must be a string or an integer, got float 1.5"),
    ("photos.jsonl", '{"id": "a", "labels": [null]}\n', "photos.jsonl:1: labels must be a string or a list of strings "
                                                        "or integers, got list [null]"),
    ("photos.jsonl", '{"id": "a", "x": ' + "[" * 5000 + "]" * 5000 + "}\n", "photos.jsonl:1: not a manifest row: JSON "
                                                                             "nested too deeply"),
    # No value wins silently.
    ("photos.jsonl", '{"ID": "p1", "id": "p2"}\n', "photos.jsonl:1: the keys 'ID' and 'id' both give the id"),
    ("photos.jsonl", '{"id": "p1", "image_id": "p2"}\n', "photos.jsonl:1: the keys 'id' and 'image_id' both give"),
    # A JSON escape naming a lone surrogate: was a traceback-free crash with no file or line.
    ("photos.jsonl", '{"id": "a", "tags": "cat"}\n{"id": "b", "tags": ["dog", "\\ud800"]}\n',
     "photos.jsonl:2: value 2 of tags is not valid Unicode: lone surrogate U+D800 at character 1"),
    ("photos.jsonl", '{"id": "a", "text": "x\\udfff"}\n', "photos.jsonl:1: text is not valid Unicode: lone surrogate "
                                                          "U+DFFF at character 2"),
    # Errors at the true line: a bad byte on line 500, a quote opened on line 3.
    ("photos.csv", BAD_UTF8_AT_500, "photos.csv:500: not UTF-8 (byte 0xff in field 1)"),
    ("photos.csv", 'id,labels\na,cat\n"b,cat\nc,cat\nd,cat\n', "photos.csv:3: cannot parse CSV"),
], ids=["zero-width-repeat", "nfc-nfd-leak", "invisible-id", "text-list", "tags-object", "tags-bool-float",
        "id-float", "label-null", "deep", "key-case", "key-alias", "surrogate-tag", "surrogate-text", "utf8-line-500", "unclosed-quote"])
def test_bad_manifest_values_are_one_error_line_at_the_true_line(folder, capsys, name, content, message):
    data = content if isinstance(content, bytes) else content.encode("utf-8")
    (folder / name).write_bytes(data)
    err = fails(manifest_args(folder, name), capsys)
    assert err.startswith(f"error: {folder / name}:") and message in err and err.count("\n") == 1, err
    assert not (folder / "out").exists()


@pytest.mark.parametrize("tree,message", [
    ({"LabelName": "all", "Subcategory": {"LabelName": "cat"}}, ":1: 'Subcategory' of all is not a list"),
    ({"LabelName": "all", "Subcategory": [{"LabelName": "cat"}, 5]}, "has no 'LabelName': int 5"),
    ("deep", "nested 101 levels deep (at most 100)"),
    ("deeper", "nested"),  # too deep for the JSON parser, or for the depth check: either way one line
])
def test_bad_hierarchies_are_one_error_line(tmp_path, tree, message):
    (tmp_path / "c.csv").write_text("cat\ndog\n")
    if tree in ("deep", "deeper"):  # 101 levels parse, 900 do not; neither is a RecursionError traceback
        levels = 101 if tree == "deep" else 900
        text = '{"LabelName": "n", "Subcategory": [' * levels + '{"LabelName": "cat"}' + "]}" * levels
    else:
        text = json.dumps(tree)
    (tmp_path / "t.json").write_text(text)
    with pytest.raises(InputError) as err:
        read_hierarchy(tmp_path / "t.json", read_class_list(tmp_path / "c.csv"))
    assert message in str(err.value) and str(tmp_path / "t.json") in str(err.value)
    (tmp_path / "t.json").write_bytes(b'{"LabelName": "all",\n "Subcategory": [{"LabelName": "c\xffat"}]}')
    with pytest.raises(InputError, match=r"t.json:2: not UTF-8 \(byte 0xff\)"):  # was replaced silently
        read_hierarchy(tmp_path / "t.json", read_class_list(tmp_path / "c.csv"))


def test_hierarchy_nodes_that_are_not_classes_are_counted_and_names_follow_the_text_rule(tmp_path):
    (tmp_path / "c.csv").write_text("cat\ntraffic light\nanimal\n")
    tree = {"LabelName": "all", "Subcategory": [
        {"LabelName": "animal", "Subcategory": [{"LabelName": "kat"}, {"LabelName": "cat"}]},
        {"LabelName": "things", "Subcategory": [{"LabelName": "traffic light "}]}]}
    (tmp_path / "t.json").write_text(json.dumps(tree, indent=1))
    bad = BadRows()
    _, hierarchy = read_hierarchy(tmp_path / "t.json", read_class_list(tmp_path / "c.csv"), bad)
    assert bad.skipped == {"hierarchy_node_not_a_class": 1} and "t.json:8: 'kat'" in bad.skipped_examples[
        "hierarchy_node_not_a_class"][0]
    assert hierarchy.ancestors["cat"] == {"animal"} and hierarchy.parents["traffic light"] == frozenset()


def test_class_names_follow_the_text_rule(tmp_path):
    (tmp_path / "c.csv").write_text(f"{CAFE_NFD}\n{CAFE}\n", encoding="utf-8")
    with pytest.raises(InputError, match=f"c.csv:2: class name '{CAFE}' repeats line 1"):
        read_class_list(tmp_path / "c.csv")
    (tmp_path / "c.csv").write_text("cat\n\u200b\n", encoding="utf-8")
    with pytest.raises(InputError, match="c.csv:2: "):
        read_class_list(tmp_path / "c.csv")


def test_special_files_under_images_are_counted_skips_and_a_missing_folder_an_error(folder, capsys):
    img = folder / "img"
    (img / "loop.jpg").symlink_to(img / "loop.jpg")
    os.mkfifo(img / "fifo.jpg")  # was a hang: read_bytes() waits for a writer forever
    (img / "dir.jpg").mkdir()
    names = ["loop", "fifo", "dir", "a"]
    (folder / "photos.csv").write_text("id,image,labels\n" + "".join(f"{n},{n}.jpg,cat\n" for n in names))
    started = time.monotonic()
    stats = run_prepare(manifest_args(folder))
    assert time.monotonic() - started < 60
    assert stats["bad_rows"]["by_reason"] == {"image_unreadable": 1, "image_not_a_file": 2}
    assert "a FIFO, not a regular file" in str(stats["bad_rows"]["examples"]["image_not_a_file"])
    assert [records(folder / "out")[n]["image"] for n in names] == [False, False, False, True]
    assert not list(folder.glob(".out.tmp-*"))
    argv = manifest_args(folder)
    argv[argv.index("--images") + 1] = str(folder / "nonexistent")  # was exit 0 with image_missing for every photo
    err = fails(argv, capsys)
    assert err.startswith(f"error: {folder / 'nonexistent'}: --images is not a folder")


def test_one_image_under_ids_in_two_splits_is_a_leak_and_within_a_split_a_counted_repeat(folder, capsys):
    shutil.copy(folder / "img" / "a.jpg", folder / "img" / "a-copy.jpg")
    (folder / "photos.csv").write_text("id,image,labels,split\np1,a.jpg,cat,train\np2,a-copy.jpg,cat,train\n"
                                       "p3,b.jpg,cat,test\n")
    stats = run_prepare(manifest_args(folder))
    assert stats["bad_rows"]["by_reason"] == {"image_repeated": 1}
    (folder / "photos.csv").write_text("id,image,labels,split\np1,a.jpg,cat,train\np2,b.jpg,cat,train\n"
                                       "p3,a-copy.jpg,cat,test\n")
    err = fails(manifest_args(folder), capsys)
    assert "photos.csv:4: photo 'p3' (test) has the same image bytes as photo 'p1' (train at " in err
    assert "a train/test leak by content" in err


def test_collections_with_nothing_to_learn_say_so(folder, capsys):
    (folder / "photos.csv").write_text("id,image,tags,labels\n")  # only a header: was exit 0
    assert "photos.csv: no photos (only a header" in fails(manifest_args(folder), capsys)
    (folder / "photos.csv").write_text("id,labels,split\n" + "".join(f"p{i},,unlabelled\n" for i in range(4)))
    warnings = run_prepare(manifest_args(folder))["bad_rows"]["warnings"]
    assert any(w.startswith("train: 0 photos: training learns nothing") for w in warnings), warnings
    tags = "".join(f"p{i},{'cat' if i % 2 else ''},tag{i}|common{i % 3}\n" for i in range(30))
    (folder / "photos.csv").write_text("id,labels,tags\n" + tags)  # a small collection, the default threshold
    stats = prepare.main(manifest_args(folder) + ["--no-progress", "--test-fraction", "0.1"])
    printed = capsys.readouterr().out
    hint = "the model gets almost no tags; on a small collection pass a lower --tag-threshold (1 keeps"
    assert stats["vocabulary_size"] == 2 and hint in printed
    assert any(hint in w for w in stats["bad_rows"]["warnings"])


def test_a_repeated_flag_is_refused(folder, capsys):
    (folder / "photos.csv").write_text("id,labels\na,cat\n")
    (folder / "other.csv").write_text("id,labels\nb,cat\n")
    with pytest.raises(SystemExit) as stop:  # was: other.csv alone, photos.csv dropped without a word
        prepare.main(manifest_args(folder) + ["--manifest", str(folder / "other.csv")])
    assert stop.value.code == 2 and "--manifest given twice" in capsys.readouterr().err


def test_nuswide_names_the_missing_alllabels_file_counts_invisible_tags_and_refuses_empty_lists(tmp_path, capsys):
    root = tmp_path / "nus"
    shutil.copytree(DATA / "nuswide_sample", root)
    tags = root / "NUS_WID_Tags" / "All_Tags.txt"
    tags.write_bytes(tags.read_bytes().replace(b"actor film", "actor \u200b\u200b film".encode()))
    stats = run_prepare(["--nuswide", str(root), "--out", str(tmp_path / "out")])
    assert stats["bad_rows"]["by_reason"]["tag_only_invisible"] == 1
    assert records(tmp_path / "out")["actor/0001_2124494179"]["tags"] == ["actor", "film", "hollywood"]
    (root / "Groundtruth" / "AllLabels").mkdir()
    for concept in ("animal", "person"):  # airport's is missing: it was reported as a missing TrainTestLabels file
        (root / "Groundtruth" / "AllLabels" / f"Labels_{concept}.txt").write_text("0\n" * 4)
    err = fails(["--nuswide", str(root), "--out", str(tmp_path / "out2")], capsys)
    assert err.startswith(f"error: {root / 'Groundtruth' / 'AllLabels' / 'Labels_airport.txt'}: missing"), err
    shutil.rmtree(root / "Groundtruth" / "AllLabels")
    for name in ("Imagelist.txt", "TrainImagelist.txt", "TestImagelist.txt"):
        (root / "ImageList" / name).write_text("")
    tags.write_text("")
    for path in (root / "Groundtruth" / "TrainTestLabels").iterdir():
        path.write_text("")
    assert "no photos (only a header, or empty image lists)" in fails(["--nuswide", str(root), "--out",
                                                                       str(tmp_path / "out3")], capsys)


def test_predict_input_follows_the_same_rules(tmp_path):
    row = make_row("--tags", "", f"cat,pet|d\u200bog, {CAFE_NFD},\u200b", image_id="p1\u200b", text=f"A {CAFE_NFD}")
    assert row.tags == ["cat", "pet", "dog", CAFE] and row.image_id == "p1" and row.text == f"A {CAFE}"
    assert make_row("x", "", ["a|b"]).tags == ["a|b"]  # a JSON list is taken as it is: one tag per element
    (tmp_path / "in.csv").write_text("image_path,tags,tags\nx.jpg,a,b\n")
    with pytest.raises(ValueError, match=r"in.csv:1: the column 'tags' repeats"):  # was: the last column won
        list(read_rows(tmp_path / "in.csv"))


def test_gzip_manifest_bad_byte_is_reported_at_its_line(folder, capsys):
    (folder / "photos.csv.gz").write_bytes(gzip.compress(BAD_UTF8_AT_500))
    err = fails(manifest_args(folder, "photos.csv.gz"), capsys)
    assert "photos.csv.gz:500: not UTF-8" in err
