"""Your own photos: manifests, NUS-WIDE and COCO through `prepare.py`, class lists, hierarchies, bad input."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from app import evaluate, predict, prepare, train
from app.sources.classes import read_class_list, read_hierarchy
from app.sources.photo import HashSplit
from app.records.dataset import DatasetInfo
from app.errors import InputError
from conftest import DATA

CLASSES = "name,id\nperson,p\nstaff,s\nlecturer,l\ncat,c\n"
TREE = {"LabelName": "all", "Subcategory": [
    {"LabelName": "person", "Subcategory": [{"LabelName": "lecturer"}]},
    {"LabelName": "s", "Subcategory": [{"LabelName": "l"}]},  # lecturer twice, under two parents; ids or names
    {"LabelName": "cat"}]}


def records(data_dir) -> dict:
    """`{image_id: {split, tags, text, pos, neg, image}}` read back with `tf.train.Example` (not our readers)."""
    info = DatasetInfo.load(data_dir)
    out = {}
    for split in ("train", "validation", "test"):
        for raw in tf.data.TFRecordDataset(info.shard_files(split)):
            f = tf.train.Example.FromString(raw.numpy()).features.feature
            out[f["image_id"].bytes_list.value[0].decode()] = {
                "split": split, "tags": [t.decode() for t in f["tags"].bytes_list.value],
                "text": f["text"].bytes_list.value[0].decode() if "text" in f else "",
                "pos": {info.classes[i][0] for i in f["verified_pos"].int64_list.value},
                "neg": {info.classes[i][0] for i in f["verified_neg"].int64_list.value},
                "image": bool(f["image"].bytes_list.value[0])}
    return out


def run_prepare(argv: list) -> dict:
    return prepare.main([*argv, "--no-progress", "--tag-threshold", "1"])


def fails(argv: list, capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        run_prepare(argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "img").mkdir()
    for name, green in (("a", 200), ("b", 100)):  # two images, not one under two names (a leak by content)
        Image.new("RGB", (16, 16), (10, green, 10)).save(tmp_path / "img" / f"{name}.jpg")
    (tmp_path / "img" / "broken.jpg").write_bytes(b"not a jpeg")
    (tmp_path / "classes.csv").write_text(CLASSES)
    (tmp_path / "tree.json").write_text(json.dumps(TREE, indent=1))
    return tmp_path


def manifest_args(folder, name="photos.csv", *extra) -> list:
    return ["--manifest", str(folder / name), "--images", str(folder / "img"), "--classes",
            str(folder / "classes.csv"), "--hierarchy", str(folder / "tree.json"), "--out", str(folder / "out"), *extra]


def test_manifest_csv_exhaustive_labels_hierarchy_images_and_text(folder):
    (folder / "photos.csv").write_text(
        "ImageID,image,tags,Caption,labels,split\n"
        "IMG 1.jpg,a.jpg,Lecture|Hall,A lecturer at the board,l,train\n"
        "photo/2,b.jpg,cat kitten,\"A cat, asleep\",cat,test\n"
        "3,broken.jpg,,,,validation\n"
        "4,gone.jpg,x,a person,person,train\n"
        "5,,x,,cat,unlabelled\n")
    stats = run_prepare(manifest_args(folder))
    got = records(folder / "out")
    assert got["IMG 1.jpg"]["pos"] == {"l", "p", "s"}  # expanded to both parents
    assert got["IMG 1.jpg"]["neg"] == {"c"}  # exhaustive: every other class a verified negative
    assert got["IMG 1.jpg"]["text"] == "A lecturer at the board" and got["IMG 1.jpg"]["tags"] == ["Lecture", "Hall"]
    assert got["photo/2"]["split"] == "test" and got["photo/2"]["text"] == "A cat, asleep"
    assert got["3"]["pos"] == set() and got["3"]["neg"] == {"p", "s", "l", "c"} and not got["3"]["image"]
    assert got["4"]["image"] is False and got["IMG 1.jpg"]["image"]
    assert stats["splits"]["yfcc"]["images"] == 1 and stats["splits"]["yfcc"]["with_targets"] == 1
    assert DatasetInfo.load(folder / "out").classes == [("p", "person"), ("s", "staff"), ("l", "lecturer"),
                                                        ("c", "cat")]
    bad, without = stats["bad_rows"]["by_reason"], stats["image_folder"]["without_image"]["by_reason"]
    assert bad == {"empty_text": 2, "image_not_an_image": 1}  # counted, the photos kept
    assert without == {"image_not_an_image": 1, "image_missing": 1, "no_image": 1}


def test_image_paths_escaping_the_images_folder_are_counted_and_odd_ids_kept_exactly(folder):
    (folder / "img" / "link.jpg").symlink_to(folder / "classes.csv")  # a link out of --images
    odd_ids = ['a,"b"', "../c", "d\ne", "\u202ef\u200b 🐈"]  # comma, quote, .., line break, RTL, zero-width, emoji
    rows = [[odd_ids[0], "../classes.csv"], [odd_ids[1], str(folder / "classes.csv")], [odd_ids[2], "link.jpg"],
            [odd_ids[3], "a.jpg"]]
    with open(folder / "photos.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "image", "text", "labels", "split"])
        writer.writerows([[i, image, f"text of {i}", "cat", "train"] for i, image in rows])
    stats = run_prepare(manifest_args(folder))
    got = records(folder / "out")
    kept = odd_ids[:3] + ["f 🐈"]  # by the text rule: the RTL override and the zero-width space go
    assert set(got) == set(kept) and got["d\ne"]["text"] == "text of d\ne"
    assert [got[i]["image"] for i in kept] == [False, False, False, True]
    assert stats["bad_rows"]["by_reason"] == {"image_outside_folder": 3}  # `..`, absolute, a link: counted


def test_manifest_jsonl_partial_labels_and_hash_split(folder):
    rows = [{"id": f"p{i}", "tags": ["t", f"u{i}"], "text": "x", "labels": ["person"] if i % 2 else [],
             "negatives": "cat|staff"} for i in range(40)]
    (folder / "photos.jsonl.gz").write_bytes(gzip.compress(("\n".join(json.dumps(r) for r in rows) + "\n").encode()))
    run_prepare(manifest_args(folder, "photos.jsonl.gz", "--labels", "partial", "--test-fraction", "0.5",
                              "--validation-fraction", "0.25"))
    got = records(folder / "out")
    split = HashSplit(0.5, 0.25)
    assert {k: v["split"] for k, v in got.items()} == {f"p{i}": split(f"p{i}") for i in range(40)}
    assert {v["split"] for v in got.values()} == {"train", "validation", "test"}
    assert got["p1"]["pos"] == {"p"} and got["p1"]["neg"] == {"c", "s", "l"}  # a negative reaches descendants
    assert got["p0"]["pos"] == set() and got["p0"]["neg"] == {"c", "s", "l"}  # partial: person stays unverified
    # Validation is cut from what test leaves: a larger validation share never moves a test photo.
    assert all(HashSplit(0.5, 0.4)(k) == "test" for k, v in got.items() if v["split"] == "test")


@pytest.mark.parametrize("name,content,message", [
    ("photos.csv", "id,labels,split\na,cat,train\nb,cat,test\na,cat,test\n",
     "photos.csv:4: id 'a' is in two splits (test here, train at "),
    ("photos.csv", "id,labels,split\na,cat,train\na,cat,train\n", "photos.csv:3: duplicate id 'a' (first at "),
    ("photos.csv", "id,labels\na,dog\n", "photos.csv:2: label 'dog' is not in the class list"),
    ("photos.csv", "id,labels\na,cat,extra\n", "photos.csv:2: expected 2 fields (id,labels), got 3"),
    ("photos.csv", "id,colour\na,red\n", "photos.csv:1: unknown column 'colour'"),
    ("photos.jsonl", '{"id": "a", "labels": ["cat"]}\n{"id": "b", labels: []}\n', "photos.jsonl:2: not a JSON object"),
    ("photos.jsonl", '{"id": "a", "labels": ["cat"], "id": "b"}\n', "photos.jsonl:1: not a JSON object: key 'id' given twice"),
    ("photos.csv", "id,labels,negatives\na,cat,person\n", "photos.csv:2: a negatives column with --labels exhaustive"),
    ("photos.csv", "id,labels,split\na,cat,holdout\n", "photos.csv:2: split 'holdout' is not one of"),
    ("photos.csv", "id,labels,split\na,cat,unlabelled\na,cat,test\n", "photos.csv:3: id 'a' is in two splits (test here, unlabelled at "),
])
def test_manifest_bad_input_is_one_error_line(folder, capsys, name, content, message):
    (folder / name).write_text(content)
    err = fails(manifest_args(folder, name), capsys)
    assert err.startswith(f"error: {folder / name}:") and message in err and err.count("\n") == 1
    assert not (folder / "out").exists()


def test_class_lists_and_hierarchies_refuse_repeats_and_cycles(tmp_path):
    (tmp_path / "c.csv").write_text("cat\ndog\ncat\n")
    with pytest.raises(InputError, match=r"c.csv:3: class name 'cat' repeats line 1"):
        read_class_list(tmp_path / "c.csv")
    (tmp_path / "c.csv").write_text("cat,1\ndog,cat\n")
    with pytest.raises(InputError, match=r"c.csv:1: class name 'cat' is the id of the class at line 2"):
        read_class_list(tmp_path / "c.csv")
    (tmp_path / "c.csv").write_text('cat\n"dog, big",d\nx,"a,b"\n')  # a comma: in a name, not in an id
    with pytest.raises(InputError, match=r"c.csv:3: class 'x' \(id 'a,b'\): ids cannot hold"):
        read_class_list(tmp_path / "c.csv")
    (tmp_path / "c.csv").write_text("cat\ndog\n")
    classes = read_class_list(tmp_path / "c.csv")
    cycle = {"LabelName": "root", "Subcategory": [{"LabelName": "cat", "Subcategory": [
        {"LabelName": "dog", "Subcategory": [{"LabelName": "cat"}]}]}]}
    (tmp_path / "t.json").write_text(json.dumps(cycle, indent=1))
    with pytest.raises(InputError, match=r"t.json:\d+: hierarchy has a cycle through"):
        read_hierarchy(tmp_path / "t.json", classes)
    (tmp_path / "c.csv").write_text("cat,c1\ndog,c2\n")  # a tree of names over a list with ids
    with pytest.raises(InputError, match=r"t.json:\d+: hierarchy has a cycle through 'c\d' \(class '(cat|dog)'\)"):
        read_hierarchy(tmp_path / "t.json", read_class_list(tmp_path / "c.csv"))
    (tmp_path / "t.json").write_text('{"LabelName": "root",\n "Subcategory": [}\n')
    with pytest.raises(InputError, match=r"t.json:2: not valid JSON"):
        read_hierarchy(tmp_path / "t.json", classes)


def test_nuswide_real_layout_with_train_test_labels(tmp_path):
    stats = run_prepare(["--nuswide", str(DATA / "nuswide_sample"), "--validation-fraction", "0",
                         "--out", str(tmp_path / "out")])
    got = records(tmp_path / "out")
    assert {k: v["split"] for k, v in got.items()} == {
        "actor/0001_2124494179": "train", "airport/0001_2096289306": "train",
        "actor/0002_174174086": "test", "animal/0001_1000092795": "test"}
    assert got["actor/0001_2124494179"]["tags"] == ["actor", "film", "hollywood"]
    assert got["actor/0002_174174086"]["tags"] == []
    assert got["actor/0001_2124494179"]["pos"] == {"person"} and got["actor/0001_2124494179"]["image"]
    assert got["airport/0001_2096289306"]["pos"] == {"airport"}  # its person value -1130179: counted, read as 0
    assert got["animal/0001_1000092795"]["pos"] == {"animal"} and got["animal/0001_1000092795"]["neg"] == {
        "airport", "person"}
    assert stats["bad_rows"]["by_reason"] == {"label_not_0_or_1": 1}
    assert stats["image_folder"]["without_image"]["by_reason"] == {"image_missing": 3}  # dead links: kept


@pytest.mark.parametrize("edit,message", [
    (("ImageList/TestImagelist.txt", "animal\\0001_1000092795.jpg", "airport\\0001_2096289306.jpg"),
     "TestImagelist.txt:2: airport/0001_2096289306.jpg is in two splits"),
    (("NUS_WID_Tags/All_Tags.txt", "2096289306", "2096289307"), "All_Tags.txt:3: photo id '2096289307', but"),
])
def test_nuswide_bad_layout_is_one_error_line(tmp_path, capsys, edit, message):
    root = tmp_path / "nus"
    shutil.copytree(DATA / "nuswide_sample", root)
    path, old, new = edit
    (root / path).write_bytes((root / path).read_bytes().replace(old.encode(), new.encode()))
    err = fails(["--nuswide", str(root), "--out", str(tmp_path / "out")], capsys)
    assert message in err and err.startswith("error: ")


@pytest.mark.parametrize("path", ["Groundtruth/TrainTestLabels/Labels_person_Train.txt", "NUS_WID_Tags/All_Tags.txt"])
def test_a_nuswide_file_longer_than_its_image_list_is_refused(tmp_path, capsys, path):
    root = tmp_path / "nus"
    shutil.copytree(DATA / "nuswide_sample", root)
    lines = (root / path).read_text().splitlines()
    (root / path).write_text("\n".join(lines + [lines[-1]]) + "\n\n")  # one line too many (blank lines pass)
    err = fails(["--nuswide", str(root), "--out", str(tmp_path / "out")], capsys)
    assert err.startswith("error: ") and f"{Path(path).name}:{len(lines) + 1}: a line past the end" in err
    assert not (tmp_path / "out").exists()


def _coco(root):
    (root / "annotations").mkdir(parents=True)
    categories = [{"id": 18, "name": "dog", "supercategory": "animal"}, {"id": 1, "name": "person",
                                                                         "supercategory": "person"}]
    for part, ids in (("train2017", [11, 12, 13]), ("val2017", [21, 22])):
        (root / part).mkdir()
        images = [{"id": i, "file_name": f"{i:012d}.jpg", "flickr_url": f"http://farm1.staticflickr.com/1/{i}0_ab.jpg"}
                  for i in ids]
        Image.new("RGB", (16, 16), (ids[0], 0, 0)).save(root / part / images[0]["file_name"])  # two images
        notes = [{"id": 100 + i, "image_id": i, "category_id": 18 if i % 2 else 1} for i in ids]
        (root / "annotations" / f"instances_{part}.json").write_text(json.dumps(
            {"images": images, "annotations": notes, "categories": categories}))
        captions = [{"id": 9 - k, "image_id": i, "caption": f"caption {k} of {i}"} for i in ids[:-1] for k in range(2)]
        (root / "annotations" / f"captions_{part}.json").write_text(json.dumps({"images": images,
                                                                                 "annotations": captions}))


def test_coco_val2017_is_test_and_captions_are_joined(tmp_path):
    _coco(tmp_path / "coco")
    for kind, note in (("instances", {"id": 7, "image_id": 99, "category_id": 1}),
                       ("captions", {"id": 8, "image_id": "11", "caption": "an id of another type"})):
        path = tmp_path / "coco" / "annotations" / f"{kind}_train2017.json"
        document = json.loads(path.read_text())
        document["annotations"].append(note)  # a note of no listed image: counted, never lost silently
        path.write_text(json.dumps(document))
    stats = run_prepare(["--coco", str(tmp_path / "coco"), "--validation-fraction", "0",
                         "--out", str(tmp_path / "out")])
    got = records(tmp_path / "out")
    assert {k: v["split"] for k, v in got.items()} == {"11": "train", "12": "train", "13": "train",
                                                       "21": "test", "22": "test"}
    assert got["11"]["text"] == "caption 1 of 11 caption 0 of 11"  # caption-id order
    assert got["11"]["pos"] == {"18"} and got["11"]["neg"] == {"1"} and got["11"]["image"]
    assert DatasetInfo.load(tmp_path / "out").classes == [("1", "person"), ("18", "dog")]
    assert stats["bad_rows"]["by_reason"] == {"empty_text": 2,  # the last photo of each part has no caption
                                              "annotation_image_not_listed": 1, "caption_image_not_listed": 1}


@pytest.mark.parametrize("part,key,value,message", [
    ("train2017", "images", {"file_name": "x.jpg"}, 'instances_train2017.json:1: image 4 needs "id" (int or str)'),
    ("val2017", "categories", {"id": None, "name": "cat"}, 'instances_val2017.json:1: category 3 needs "id" (int), '
                                                           'got null'),
    # Values of the wrong type: each was a traceback or a silent wrong record.
    ("train2017", "annotations", [1, 2], "instances_train2017.json:1: annotation 4 is not a JSON object, got list"),
    ("val2017", "images", {"id": 5, "file_name": "x.jpg", "flickr_url": None}, 'image 3 needs "flickr_url" (str), '
                                                                              'got null'),
    ("val2017", "annotations", {"image_id": 5, "category_id": "18"}, 'needs "category_id" (int), got str "18"'),
    # train2017's categories differ from val2017's: one more category was dropped silently.
    ("train2017", "categories", {"id": 90, "name": "toothbrush"}, "instances_train2017.json: its categories differ "
                                                                  "from instances_val2017.json's (category 90 "),
])
def test_coco_images_and_categories_without_an_id_are_one_error_line(tmp_path, capsys, part, key, value, message):
    _coco(tmp_path / "coco")
    path = tmp_path / "coco" / "annotations" / f"instances_{part}.json"
    document = json.loads(path.read_text())
    document[key].append(value)  # were a KeyError / TypeError traceback
    path.write_text(json.dumps(document))
    err = fails(["--coco", str(tmp_path / "coco"), "--out", str(tmp_path / "out")], capsys)
    assert err.startswith("error: ") and message in err


def test_coco_image_ids_follow_the_text_rule(tmp_path, capsys):
    _coco(tmp_path / "coco")
    path = tmp_path / "coco" / "annotations" / "instances_val2017.json"
    document = json.loads(path.read_text())
    document["images"].append({"id": "11\u200b", "file_name": "x.jpg", "flickr_url": ""})  # train's 11
    path.write_text(json.dumps(document))
    err = fails(["--coco", str(tmp_path / "coco"), "--out", str(tmp_path / "out")], capsys)  # was two photos
    assert err.startswith("error: ") and "id '11' is in two splits" in err


def test_coco_element_nested_5000_deep_is_one_error_line(tmp_path, capsys):
    _coco(tmp_path / "coco")
    path = tmp_path / "coco" / "annotations" / "instances_train2017.json"
    text = path.read_text()
    path.write_text(text.replace('"annotations": [', '"annotations": [\n' + "[" * 5000 + "]" * 5000 + ",\n", 1))
    err = fails(["--coco", str(tmp_path / "coco"), "--out", str(tmp_path / "out")], capsys)  # was a RecursionError
    assert err.startswith("error: ") and "instances_train2017.json:2: not valid JSON: a value nested too deeply" in err


def test_demo_world_as_manifest_and_nuswide_trains_and_scores(tmp_path, capsys):
    for kind in ("manifest", "nuswide"):
        stats = run_prepare(["--demo", "--demo-format", kind, "--demo-size", "60", "--seed", "2",
                             "--out", str(tmp_path / kind)])
        assert stats["collection"]["kind"] == kind and stats["splits"]["test"]["images"] == 50
    texts = [r["text"] for r in records(tmp_path / "manifest").values()]
    assert any(t.startswith("A photo of") for t in texts) and any(t.startswith(("Ein Foto", "Une photo", "Una foto"))
                                                                 for t in texts)
    run = tmp_path / "run"
    train.main(["--data", str(tmp_path / "nuswide"), "--model", "tags", "--out", str(run), "--epochs", "1",
                "--no-progress"])
    capsys.readouterr()
    result = evaluate.main(["--model", str(run), "--data", str(tmp_path / "nuswide"), "--protocol", "study"])
    out = capsys.readouterr().out
    assert "class mAP  photo mAP   CP@3" in out
    report = result.exhaustive[result.name]
    assert 0 < report["class_map"] <= 1 and 0 < report["photo_map"] <= 1 and report["top_k"]["k"] == 3
    assert np.isfinite(report["top_k"]["of1"])
    (tmp_path / "in.csv").write_text('image_id,image_path,tags\nmy photo 1,,"dog,hund"\n')
    predict.main(["--model", str(run), "--input", str(tmp_path / "in.csv"), "--output", str(tmp_path / "p.csv"),
                  "--format", "oid-csv", "--min-score", "0"])
    header, *rows = (tmp_path / "p.csv").read_text().splitlines()
    ids = [cid for cid, _ in DatasetInfo.load(tmp_path / "nuswide").classes]
    assert header == "ImageID,LabelName,Score" and sorted(r.split(",")[1] for r in rows) == sorted(ids)
    assert {r.split(",")[0] for r in rows} == {"my photo 1"}


def test_manifest_urls_are_fetched_by_download_and_found_by_prepare(folder):
    from photo_server import PhotoServer

    from app import download

    jpeg = (folder / "img" / "a.jpg").read_bytes()
    with PhotoServer({"a.jpg": jpeg}) as server:
        (folder / "photos.csv").write_text(
            "id,image,labels\n"
            f"IMG 1,{server.url}/ok/x/a.jpg,cat\n"  # an id that is not a file name: stored under its hash key
            f"p2,{server.url}/404/x/b.jpg,cat\n"
            "p3,b.jpg,cat\n")
        summary = download.main(["--manifest", str(folder / "photos.csv"), "--out", str(folder / "img"),
                                 "--no-progress", "--retries", "0"])
    assert (summary.ok, summary.failed) == (1, 1)
    stats = run_prepare(manifest_args(folder))
    got = records(folder / "out")
    assert got["IMG 1"]["image"] and got["p3"]["image"] and not got["p2"]["image"]
    assert stats["image_folder"]["without_image"]["by_reason"] == {"download_http_404": 1}


def test_json_stream_matches_json_loads_across_block_boundaries(tmp_path):
    from app.sources.json_stream import iter_array

    doc = {"info": {"v": [1.5, "x"]}, "images": [{"id": 12.25, "s": "a\\\"b ü"}, 1e-7, [True, None], -3],
           "n": 123456, "annotations": [], "more": {"images": [9]}}
    path = tmp_path / "d.json"
    for indent in (None, 1):
        path.write_text(json.dumps(doc, indent=indent, ensure_ascii=False), encoding="utf-8")
        for block in (1, 2, 3, 5, 8, 1 << 20):  # numbers such as 12.25 cut at a block's end
            assert list(iter_array(path, "images", block)) == doc["images"]
            assert list(iter_array(path, "annotations", block)) == [] == list(iter_array(path, "absent", block))
    path.write_text('{"images": [{"id": 1},\n {"id": 2,}]}')
    with pytest.raises(InputError, match=r"d.json:2: not valid JSON"):
        list(iter_array(path, "images", 4))
