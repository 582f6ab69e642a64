import bz2
import gzip
import json

import numpy as np
import pyarrow as pa
import pytest

from app.sources import oid
from app.sources import yfcc
from app.badrows import BadRows
from app.sources.csvread import CsvReader
from app.sources.hierarchy import Hierarchy
from app import resources
from app.errors import InputError
from conftest import DATA, image_lines, label_lines


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
        handle.write("ImageID,Source,LabelName,Confidence\n000000000000000a,verification,/m/01,1\n"
                     "000000000000000b,verification,/m/02,0.5\n000000000000000c,verification,/m/03,yes\n"
                     "000000000000000d,verification,/m/04\nIMG-E,verification,/m/05,1\n")
    bad = BadRows()
    assert list(oid.read_labels(path, bad)) == [("000000000000000a", "/m/01", 1.0)]
    assert dict(bad.counts) == {"human_label_bad_value": 1, "human_label_bad_confidence": 1,
                                "human_label_field_count": 1, "human_label_bad_image_id": 1}


def test_missing_columns_name_the_file(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("ImageID,Foo\n1,2\n")
    with pytest.raises(InputError, match="x.csv:1: missing columns"):
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


# --- bad bytes, quotes, line ends, empty and truncated files (issue 12) ---------------------------


def write_lines(path, lines, end="\n", prefix=b""):
    path.write_bytes(prefix + end.join(lines).encode("utf-8") + end.encode())
    return path


def read_all(kind, path):
    bad = BadRows()
    rows = list(oid.read_images(path, bad) if kind == "images" else oid.read_labels(path, bad))
    return [(r.image_id, r.flickr_id, r.md5) if kind == "images" else r for r in rows], bad


BUILDERS = {"images": image_lines, "labels": label_lines}
PREFIX = {"images": "oid", "labels": "human_label"}


@pytest.mark.parametrize("kind", ["images", "labels"])
def test_an_unclosed_quote_costs_its_own_line_only(tmp_path, kind):
    lines = BUILDERS[kind](300)
    lines[100] = lines[100].replace(",", ',"', 2)  # an opening quote that never closes, data line 100
    lines[200] = lines[200].replace(",Michael Beat,", ',"Beat, ""Michael""",')  # well-formed quoting (images)
    rows, bad = read_all(kind, write_lines(tmp_path / "f.csv", lines))
    assert dict(bad.counts) == {f"{PREFIX[kind]}_bad_quoting": 1}
    assert bad.examples[f"{PREFIX[kind]}_bad_quoting"][0].startswith(f"{tmp_path / 'f.csv'}:101: ")
    expected, _ = read_all(kind, write_lines(tmp_path / "g.csv", BUILDERS[kind](300)))
    assert len(rows) == 299 and rows == expected[:99] + expected[100:]


@pytest.mark.parametrize("kind", ["images", "labels"])
def test_a_non_utf8_byte_on_data_line_250_is_one_bad_row_at_file_line_251(tmp_path, kind):
    lines = [line.encode() for line in BUILDERS[kind](300)]
    lines[250] = lines[250][:20] + b"\xff" + lines[250][20:]
    path = tmp_path / "f.csv"
    path.write_bytes(b"\n".join(lines) + b"\n")
    rows, bad = read_all(kind, path)
    assert dict(bad.counts) == {f"{PREFIX[kind]}_non_utf8": 1} and len(rows) == 299
    assert bad.examples[f"{PREFIX[kind]}_non_utf8"][0].startswith(f"{path}:251: ")


@pytest.mark.parametrize("kind", ["images", "labels"])
def test_a_byte_order_mark_and_crlf_line_ends_read_like_plain_lines(tmp_path, kind):
    plain, plain_bad = read_all(kind, write_lines(tmp_path / "plain.csv", BUILDERS[kind](300)))
    windows_path = write_lines(tmp_path / "win.csv", BUILDERS[kind](300), "\r\n", b"\xef\xbb\xbf")
    windows, windows_bad = read_all(kind, windows_path)
    assert windows == plain and len(plain) == 300
    assert windows_bad.total == plain_bad.total == 0


def test_blank_lines_and_multi_line_records_are_bad_rows_that_keep_their_neighbours(tmp_path):
    lines = label_lines(10)
    lines[3] = ""
    lines[6] = lines[6].replace(",/m/", ',"/m/\nsplit', 1) + '"'  # a quoted line break: two physical lines
    rows, bad = read_all("labels", write_lines(tmp_path / "f.csv", lines))
    assert len(rows) == 8 and bad.total == 3 and bad.counts["human_label_blank_line"] == 1
    assert [e.split(": ")[0] for r in bad.examples for e in bad.examples[r]] == [
        f"{tmp_path / 'f.csv'}:4", f"{tmp_path / 'f.csv'}:7", f"{tmp_path / 'f.csv'}:8"]


def test_line_numbers_are_exact_whatever_the_block_size(tmp_path):
    lines = [line.encode() for line in label_lines(300)]
    for i, bad_line in ((5, b"x"), (61, b'a,"b'), (62, b""), (150, lines[150] + b"\xfe"), (299, b"1,2,3,4,5")):
        lines[i] = bad_line
    path = tmp_path / "f.csv"
    path.write_bytes(b"\n".join(lines))  # no final newline

    def read(block_bytes):
        chunks = list(CsvReader(path, oid.LABEL_COLUMNS, numbers=("Confidence",), block_bytes=block_bytes))
        return ([int(n) for c in chunks for n in c.lines], [(r.line, r.reason) for c in chunks for r in c.rejects],
                [x for c in chunks for x in c.columns["LabelName"].to_pylist()])

    whole = read(1 << 20)
    assert whole[1] == [(6, "field_count"), (62, "bad_quoting"), (63, "blank_line"), (151, "non_utf8"),
                        (300, "field_count")]
    assert len(whole[0]) == 295 and whole[0][:5] == [2, 3, 4, 5, 6 + 1]
    for block_bytes in (40, 333, 4096):
        assert read(block_bytes) == whole


def test_real_samples_hold_one_record_per_physical_line():
    for path in sorted(DATA.glob("*.csv")):
        text = path.read_text(encoding="utf-8")
        reader = CsvReader(path, [text.split(",", 1)[0]])
        chunks = list(reader)
        assert not [r for c in chunks for r in c.rejects], path
        assert sum(len(c) for c in chunks) == reader.data_lines == text.count("\n") - 1, path


@pytest.mark.parametrize("kind", ["images", "labels"])
@pytest.mark.parametrize("content,warning", [(b"", "empty file (0 bytes)"), (None, "no data rows (header only)")])
def test_empty_and_header_only_files_are_warnings(tmp_path, kind, content, warning):
    path = tmp_path / "f.csv"
    path.write_bytes(content if content is not None else BUILDERS[kind](0)[0].encode() + b"\r\n")
    rows, bad = read_all(kind, path)
    assert rows == [] and bad.total == 0 and bad.warnings == [f"{path}: {warning}"]


@pytest.mark.parametrize("opener,kind", [(gzip.open, "gzip"), (bz2.open, "bz2")])
def test_truncated_compressed_files_stop_naming_the_file(tmp_path, opener, kind):
    whole = tmp_path / "whole"
    with opener(whole, "wt") as handle:
        handle.write("\n".join(label_lines(3000)) + "\n")
    path = tmp_path / f"labels.csv.{kind}"
    path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match=f"{path}: truncated or corrupt {kind} file"):
        list(oid.read_labels(path, BadRows()))
    yfcc_path = tmp_path / f"yfcc100m_dataset.{kind}"
    with opener(whole, "wt") as handle:
        handle.write((DATA / "yfcc100m_dataset.sample.tsv").read_text() * 3000)
    yfcc_path.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match=f"{yfcc_path}: truncated or corrupt {kind} file"):
        list(yfcc.scan_dataset(yfcc_path, {b"1"}, BadRows()))


def test_load_labels_counts_unknown_classes_duplicates_and_conflicts(tmp_path):
    lines = label_lines(4)  # /m/014j1m 0, /m/014sv8 1, /m/01599 0, /m/015p6 0 on images 0..3
    lines += ["0000000000000001,verification,/m/014sv8,1",  # line 6: duplicate of line 3
              "0000000000000000,verification,/m/014j1m,1",  # line 7: conflicts with line 2; the positive wins
              "0000000000000002,verification,/m/0unknown,1"]  # line 8: not in the MID list
    path = write_lines(tmp_path / "f.csv", lines)
    bad = BadRows()
    mids = ["/m/014j1m", "/m/014sv8", "/m/01599", "/m/015p6"]
    table = oid.load_labels(path, bad, mids)
    assert dict(bad.counts) == {"human_label_duplicate": 1, "human_label_conflict": 1, "human_label_unknown_class": 1}
    assert bad.examples["human_label_duplicate"] == [f"{path}:6: '0000000000000001,/m/014sv8,1 (first at line 3)'"]
    assert bad.examples["human_label_conflict"] == [f"{path}:7: '0000000000000000,/m/014j1m,1 (first at line 2)'"]
    assert bad.examples["human_label_unknown_class"][0].startswith(f"{path}:8: ")
    assert table.image_ids() == [f"{i:016x}" for i in range(4)]
    assert [(table.image_ids()[i], mids[m], v) for i, m, v in zip(table.image, table.label, table.value)] == [
        ("0000000000000000", "/m/014j1m", 1.0), ("0000000000000001", "/m/014sv8", 1.0),
        ("0000000000000002", "/m/01599", 0.0), ("0000000000000003", "/m/015p6", 0.0)]


def test_machine_labels_outside_the_class_list_are_counted_skips_not_bad_rows(tmp_path):
    bad = BadRows()
    table = oid.load_labels(DATA / "v3-annotations-machine.sample.csv", bad, ["/m/05_4_", "/m/0krfg"], machine=True)
    assert bad.total == 0 and bad.skipped["machine_label_outside_classes"] == 7  # 9 rows, 2 of these classes
    assert sorted(table.value.tolist()) == [0.7, 0.7]
    assert bad.to_dict()["skipped"]["by_reason"] == {"machine_label_outside_classes": 7}
    path = tmp_path / "machine.csv"
    path.write_text((DATA / "v3-annotations-machine.sample.csv").read_text() + "000002b66c9c498e,machine,/m/05_4_,0.9\n")
    table = oid.load_labels(path, bad, ["/m/05_4_", "/m/0krfg"], machine=True)
    assert bad.examples["machine_label_duplicate"] == [f"{path}:11: '000002b66c9c498e,/m/05_4_,0.9 (first at line 2)'"]
    assert table.value.tolist() == [0.9, 0.7]  # the highest confidence is kept


def test_a_file_whose_only_row_is_bad(tmp_path):
    rows, bad = read_all("labels", write_lines(tmp_path / "f.csv", [label_lines(0)[0], "0,1"]))
    assert rows == [] and dict(bad.counts) == {"human_label_field_count": 1}


def test_image_keys_sort_like_the_ids_and_flag_malformed_ones():
    ids = ["ffffffffffffffff", "0000000000000000", "00000000000000a1", "8000000000000000", "123",
           "ABCDEF0123456789", "0123456789abcdeg", "0123456789abcdef0"]
    keys, ok = oid.image_keys(pa.array(ids))
    assert ok.tolist() == [True] * 4 + [False] * 4
    assert [oid.image_id_text(k) for k in keys[:4]] == ids[:4]
    assert np.argsort(keys[:4]).tolist() == sorted(range(4), key=ids.__getitem__)


def test_class_list_accepts_bom_and_crlf_and_rejects_repeats(tmp_path):
    path = tmp_path / "c.csv"
    path.write_bytes(b'\xef\xbb\xbf/m/01,Dog\r\n/m/02,"Chest, of drawers"\r\n')
    assert oid.read_classes(path) == [("/m/01", "Dog"), ("/m/02", "Chest, of drawers")]
    for content, message in ((b"/m/01,Dog\n/m/01,Cat\n", ":2: class /m/01 repeats line 1"),
                             (b"/m/01,Dog\nDog,/m/01\n", ":2: expected a MID"), (b"", ": no classes"),
                             (b"/m/01,Dog\n/m/02\n", ":2: expected 'MID,DisplayName'")):
        path.write_bytes(content)
        with pytest.raises(InputError, match=f"{path}{message}"):
            oid.read_classes(path)
