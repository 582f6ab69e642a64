"""MIRFLICKR-25K through `prepare.py --mirflickr`, on byte-exact samples of its files (lines 41-70 of
all_imgs.txt, all_tags.txt and all_labels.txt: CRLF line breaks, non-ASCII tags)."""

from __future__ import annotations

import shutil

import pytest
from PIL import Image

from app.sources.mirflickr import LABELS
from app.sources.photo import HashSplit
from conftest import DATA
from test_collections import fails, records, run_prepare

SAMPLE = DATA / "mirflickr_sample"


def sample_copy(tmp_path):
    root = tmp_path / "mirflickr25k"
    shutil.copytree(SAMPLE, root)
    return root


def test_the_sample_is_byte_exact_crlf():
    for name in ("all_imgs.txt", "all_tags.txt", "all_labels.txt"):
        data = (SAMPLE / name).read_bytes()
        assert data.count(b"\r\n") == data.count(b"\n") == 30, name


def test_import_keeps_tags_exhaustive_labels_and_a_seeded_split(tmp_path):
    stats = run_prepare(["--mirflickr", str(SAMPLE), "--split-seed", "3", "--out", str(tmp_path / "out")])
    got = records(tmp_path / "out")
    ids = [line.split("/")[1].split(".")[0] for line in (SAMPLE / "all_imgs.txt").read_text().splitlines()]
    assert sorted(got) == sorted(ids) and len(ids) == 30
    split = HashSplit(0.3, 0.1, seed=3)  # MIRFLICKR's default: 60/10/30
    assert {k: v["split"] for k, v in got.items()} == {i: split(i) for i in ids}
    assert any(HashSplit(0.3, 0.1)(i) != split(i) for i in ids)  # another seed, another split
    assert got["im76"]["tags"] == ["japan", "flower", "日本", "canon", "400d", "abigfave"]  # line 16, UTF-8
    assert got["im61"]["pos"] == {"structures"}  # line 1: a single 1, in column 20
    assert got["im63"]["pos"] == {"animals", "flower", "plant_life"}  # line 3: columns 1, 8 and 15
    assert all(v["pos"] | v["neg"] == set(LABELS) and not v["pos"] & v["neg"] for v in got.values())  # exhaustive
    assert stats["collection"]["kind"] == "mirflickr" and stats["collection"]["hash_split"]["seed"] == 3
    assert stats["image_folder"]["without_image"]["by_reason"] == {"no_images_folder": 30}


def test_photos_in_the_mirflickr_folder_are_used_and_a_split_file_decides(tmp_path):
    root = sample_copy(tmp_path)
    (root / "mirflickr").mkdir()
    Image.new("RGB", (8, 8)).save(root / "mirflickr" / "im61.jpg")
    ids = [f"im{n}" for n in range(61, 91)]
    chosen = {i: ("test" if n % 3 == 0 else "validation" if n % 3 == 1 else "train") for n, i in enumerate(ids)}
    lines = ["id,split", "mirflickr/im61.jpg," + chosen["im61"]] + [f"{i},{s}" for i, s in chosen.items() if i != "im61"]
    (tmp_path / "split.csv").write_bytes("\r\n".join(lines).encode() + b"\r\n")
    stats = run_prepare(["--mirflickr", str(root), "--split-file", str(tmp_path / "split.csv"),
                         "--out", str(tmp_path / "out")])
    got = records(tmp_path / "out")
    assert {k: v["split"] for k, v in got.items()} == chosen
    assert got["im61"]["image"] and not got["im62"]["image"]
    assert stats["image_folder"]["without_image"]["by_reason"] == {"image_missing": 29}


def _drop_last_line(root, name):
    path = root / name
    path.write_bytes(b"".join(path.read_bytes().splitlines(keepends=True)[:-1]))


def _replace(root, name, old, new):
    path = root / name
    path.write_bytes(path.read_bytes().replace(old, new, 1))


def _old_mac_line_ends(root):
    for path in root.glob("*.txt"):
        path.write_bytes(path.read_bytes().replace(b"\r\n", b"\r"))


@pytest.mark.parametrize("edit,message", [
    ((_drop_last_line, "all_tags.txt"), "the files disagree in line count (all_imgs.txt 30, all_tags.txt 29, "
                                        "all_labels.txt 30)"),
    ((_replace, "all_labels.txt", b"0 1 0 0 0 0\r\n", b"0 1 0 0 0\r\n"),
     "all_labels.txt:1: 23 label values, expected 24"),
    ((_replace, "all_labels.txt", b"0 1 0 0 0 0\r\n", b"0 2 0 0 0 0\r\n"),
     "all_labels.txt:1: label 'structures' (column 20) is '2', not 0 or 1"),
    ((_old_mac_line_ends,), "all_imgs.txt:1: a line break that is a lone CR"),  # was '720 label values' on line 1
    ((_replace, "all_tags.txt", b"\r\n", b"\r"),  # one file's lone CR: its line count differs, and why is said
     "all_tags.txt 29, all_labels.txt 30); line i of each must be the same photo (all_tags.txt: line breaks that are "
     "a lone CR, convert"),
])
def test_a_bad_mirflickr_folder_is_one_error_line(tmp_path, capsys, edit, message):
    root = sample_copy(tmp_path)
    edit[0](root, *edit[1:])
    err = fails(["--mirflickr", str(root), "--out", str(tmp_path / "out")], capsys)
    assert err.startswith("error: ") and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("lines,message", [
    (["im61,train", "im62,dev"], "split.csv:2: split 'dev' is not one of train, validation, test"),
    (["im61,train", "mirflickr/im61.jpg,test"], "split.csv:2: im61 repeats (first on line 1)"),
    (["im61,train"], "all_imgs.txt:2: im62 is not in the split file"),
    ([f"im{n},train" for n in range(61, 91)] + ["im5,test"], "split.csv:31: im5 is not in"),
])
def test_a_bad_split_file_is_one_error_line(tmp_path, capsys, lines, message):
    (tmp_path / "split.csv").write_text("\n".join(lines) + "\n")
    err = fails(["--mirflickr", str(SAMPLE), "--split-file", str(tmp_path / "split.csv"),
                 "--out", str(tmp_path / "out")], capsys)
    assert err.startswith("error: ") and message in err


def test_ids_and_tags_follow_the_text_and_tag_list_rules_and_a_bom_is_no_content(tmp_path, capsys):
    root = sample_copy(tmp_path)
    for name in ("all_imgs.txt", "all_labels.txt"):  # a byte-order mark was part of the first id or label
        (root / name).write_bytes(b"\xef\xbb\xbf" + (root / name).read_bytes())
    tags = (root / "all_tags.txt").read_bytes().split(b"\r\n")
    tags[1] = "sky|sea,\u200b\u200d".encode()  # `|` separates tags; a tag of only invisible characters is counted
    (root / "all_tags.txt").write_bytes(b"\r\n".join(tags))
    stats = run_prepare(["--mirflickr", str(root), "--out", str(tmp_path / "out")])
    got = records(tmp_path / "out")
    assert got["im61"]["pos"] == {"structures"} and got["im62"]["tags"] == ["sky", "sea"]
    assert stats["bad_rows"]["by_reason"] == {"tag_only_invisible": 1}
    imgs = (root / "all_imgs.txt").read_bytes().split(b"\r\n")
    imgs[2] = imgs[0].replace(b"\xef\xbb\xbf", b"").replace(b".jpg", "\u200b.jpg".encode())  # im61 again
    (root / "all_imgs.txt").write_bytes(b"\r\n".join(imgs))
    err = fails(["--mirflickr", str(root), "--out", str(tmp_path / "again")], capsys)
    assert "all_imgs.txt:3: duplicate id 'im61' (first at" in err  # were two photos
