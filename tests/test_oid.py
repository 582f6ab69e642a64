import gzip
import json

import pytest

from app.data import oid
from app.data.badrows import BadRows
from app.data.hierarchy import Hierarchy
from app import resources
from conftest import DATA


def test_real_image_metadata_sample_parses_byte_exact():
    bad = BadRows()
    rows = list(oid.read_images(DATA / "train-images-boxable-with-rotation.sample.csv", bad))
    assert bad.total == 0
    assert [(r.image_id, r.flickr_id, r.md5, r.rotation) for r in rows] == [
        ("4fa8054781a4c382", 5898076654, "KFukvivpCM5QXl5SqKe41g==", 0.0),
        ("b37f763ae67d0888", 197493648, "9IzEn38GRNsVpATuv7gzEA==", 0.0),
    ]


@pytest.mark.parametrize("name,count", [
    ("train-annotations-human-imagelabels-boxable.sample.csv", None),
    ("v3-annotations-human.sample.csv", None),
    ("mmdet-test-annotations-human-imagelabels-boxable.csv", 1),
])
def test_real_human_label_samples_parse(name, count):
    bad = BadRows()
    rows = list(oid.read_labels(DATA / name, bad))
    assert bad.total == 0 and rows
    assert all(c in (0.0, 1.0) and m.startswith("/m/") for _, m, c in rows)
    lines = (DATA / name).read_text().splitlines()
    assert len(rows) == (count if count is not None else len(lines) - 1)


def test_real_machine_label_sample_parses_with_fractional_confidence():
    bad = BadRows()
    rows = list(oid.read_labels(DATA / "v3-annotations-machine.sample.csv", bad, machine=True))
    assert bad.total == 0
    assert rows[0] == ("000002b66c9c498e", "/m/05_4_", 0.7)
    bad_as_human = BadRows()
    list(oid.read_labels(DATA / "v3-annotations-machine.sample.csv", bad_as_human))
    assert bad_as_human.counts["human_label_bad_value"] == len(rows)


@pytest.mark.parametrize("url,expected", [
    ("https://farm3.staticflickr.com/5310/5898076654_51085e157c_o.jpg", 5898076654),
    ("https://c1.staticflickr.com/1/67/197493648_628a7cb2ee_o.jpg", 197493648),
    ("https://live.staticflickr.com/65535/49012345678_abcdef1234_b.jpg", 49012345678),
    ("http://static.flickr.com/2/1418878_1e92283336.jpg", 1418878),
    ("https://farm3.staticflickr.com//5310//5898076654_51085e157c_o.jpg", 5898076654),
    ("https://c3.staticflickr.com/1/67/197493648_628a7cb2ee_z.jpg?zz=1", 197493648),
    ("https://www.flickr.com/photos/michael-beat/5898076654", 5898076654),
    ("https://example.com/5898076654_51085e157c_o.jpg", None),
    ("not a url", None),
])
def test_flickr_id_from_every_url_form(url, expected):
    assert oid.flickr_id_from_url(url) == expected


def test_bad_image_rows_are_counted_with_file_and_line(tmp_path):
    path = tmp_path / "validation-images-with-rotation.csv"
    path.write_text(
        "ImageID,Subset,OriginalURL,OriginalMD5,Rotation\n"
        "0123456789abcdef,validation,https://farm1.staticflickr.com/1/111_abc_o.jpg,x==,0.0\n"
        "NOTANID,validation,https://farm1.staticflickr.com/1/222_abc_o.jpg,x==,0.0\n"
        "1123456789abcdef,validation,https://example.com/a.jpg,x==,0.0\n"
        "2123456789abcdef,validation,https://farm1.staticflickr.com/1/333_abc_o.jpg,x==\n"
        "3123456789abcdef,validation,https://farm1.staticflickr.com/1/444_abc_o.jpg,x==,ninety\n"
    )
    bad = BadRows()
    rows = list(oid.read_images(path, bad))
    assert [r.flickr_id for r in rows] == [111]
    assert dict(bad.counts) == {"oid_bad_image_id": 1, "oid_no_flickr_id": 1, "oid_field_count": 1,
                                "oid_bad_rotation": 1}
    assert bad.examples["oid_bad_image_id"][0].startswith(f"{path}:3:")


def test_bad_label_rows_and_gzip_input(tmp_path):
    path = tmp_path / "labels.csv.gz"
    with gzip.open(path, "wt") as handle:
        handle.write("ImageID,Source,LabelName,Confidence\na,verification,/m/01,1\nb,verification,/m/02,0.5\n"
                     "c,verification,/m/03,yes\nd,verification,/m/04\n")
    bad = BadRows()
    assert list(oid.read_labels(path, bad)) == [("a", "/m/01", 1.0)]
    assert dict(bad.counts) == {"human_label_bad_value": 1, "human_label_bad_confidence": 1,
                                "human_label_field_count": 1}


def test_missing_columns_name_the_file(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("ImageID,Foo\n1,2\n")
    with pytest.raises(ValueError, match="x.csv:1: missing columns"):
        list(oid.read_labels(path, BadRows()))


def test_real_class_lists():
    challenge = oid.read_classes(resources.CHALLENGE_CLASSES_CSV)
    boxable = oid.read_classes(resources.BOXABLE_CLASSES_CSV)
    assert len(challenge) == 500 and len(boxable) == 601
    assert challenge[0] == ("/m/061hd_", "Infant bed")
    assert set(m for m, _ in challenge) <= set(m for m, _ in boxable)


MULTI_PARENT = {"LabelName": "/root", "Subcategory": [
    {"LabelName": "animal", "Subcategory": [{"LabelName": "bear", "Subcategory": [{"LabelName": "teddy"}]}]},
    {"LabelName": "toy", "Subcategory": [{"LabelName": "teddy"}, {"LabelName": "ball"}], "Part": [{"LabelName": "wheel"}]},
]}


def test_expansion_with_a_multi_parent_class():
    h = Hierarchy(MULTI_PARENT)
    assert h.ancestors["teddy"] == {"bear", "animal", "toy"}
    assert "wheel" not in h.ancestors  # Part is not followed
    # positive -> every ancestor; negative -> every descendant; positive wins
    assert h.expand([("teddy", 1)]) == {"teddy": 1, "bear": 1, "animal": 1, "toy": 1}
    assert h.expand([("toy", 0)]) == {"toy": 0, "teddy": 0, "ball": 0}
    assert h.expand([("toy", 0), ("teddy", 1)]) == {"toy": 1, "teddy": 1, "ball": 0, "bear": 1, "animal": 1}
    assert h.expand([("teddy", 1), ("toy", 0)]) == h.expand([("toy", 0), ("teddy", 1)])


def test_restricted_hierarchy_keeps_nearest_ancestors_in_the_class_set():
    h = Hierarchy(MULTI_PARENT, ["animal", "teddy", "ball"])
    assert h.ancestors["teddy"] == {"animal"}
    assert h.parents["teddy"] == {"animal"}
    assert h.level("teddy") == 2 and h.level("animal") == 1
    # labels on classes outside the set still reach relatives inside it
    assert h.expand([("bear", 1)]) == {"animal": 1}


def test_golden_semantics_file_is_the_one_we_test_against():
    cases = json.loads((DATA / "oid_map_cases.json").read_text())["cases"]
    assert {c["name"] for c in cases} >= {"flat", "hierarchy", "oid600_random"}


def test_real_hierarchy_restricted_to_challenge_classes():
    mids = [m for m, _ in oid.read_classes(resources.CHALLENGE_CLASSES_CSV)]
    h = Hierarchy.from_json(resources.HIERARCHY_JSON, mids)
    names = dict(oid.read_classes(resources.CHALLENGE_CLASSES_CSV))
    teddy = next(m for m, n in names.items() if n == "Teddy bear")
    assert {names[a] for a in h.ancestors[teddy]} == {"Toy", "Bear", "Carnivore", "Animal"}


def test_oid_paths_find_real_names_and_report_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match="image metadata for train"):
        oid.OidPaths.find(tmp_path)


def test_oid_paths_find_by_real_names_and_overrides(tmp_path):
    for split in oid.SPLITS:
        name = "train-images-with-labels-with-rotation.csv" if split == "train" else f"{split}-images-with-rotation.csv"
        (tmp_path / name).write_text("ImageID,OriginalURL,OriginalMD5\n")
        (tmp_path / f"{split}-annotations-human-imagelabels-boxable.csv").write_text("x\n")
    (tmp_path / "bbox_labels_600_hierarchy.json").write_text("{}")
    found = oid.OidPaths.find(tmp_path)
    assert found.images["train"].name == "train-images-with-labels-with-rotation.csv"
    assert found.hierarchy == tmp_path / "bbox_labels_600_hierarchy.json"
    assert found.classes == resources.CHALLENGE_CLASSES_CSV  # shipped fallback
    assert found.machine_labels["test"] is None
    mine = tmp_path / "mine.csv"
    assert oid.OidPaths.find(tmp_path, classes=mine, hierarchy=None).classes == mine
    with pytest.raises(TypeError, match="unknown OidPaths overrides"):
        oid.OidPaths.find(tmp_path, clases=mine)
