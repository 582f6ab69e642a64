"""Issue 24 through prepare's command line, on copies of the tiny world's raw sources: a photo in two
splits, label rows outside their split, splits without labels, tags holding line breaks, and a
dataset that does not read back."""

import json
import shutil
from urllib.parse import quote

import pytest

from app import prepare, train
from app.records.dataset import DatasetError, DatasetInfo
from app.fileio import FIELD_BREAKS, LINE_BREAKS


@pytest.fixture
def raw(tiny_world, tmp_path):
    """A writable copy of the tiny world's Open Images folder, and the prepare command for it."""
    sources, _ = tiny_world
    oid_dir = tmp_path / "oid"
    shutil.copytree(sources.oid.classes.parent, oid_dir)

    def run(capsys, *extra, out="out"):
        try:
            stats = prepare.main(["--oid-dir", str(oid_dir), "--yfcc", str(extra_yfcc(tmp_path, sources)), "--out",
                                  str(tmp_path / out), "--no-progress", "--tag-limit", "20", "--tag-threshold", "2",
                                  *extra])
            code = 0
        except SystemExit as stop:
            stats, code = None, stop.code
        out_text, err = capsys.readouterr()
        return code, stats, out_text, err

    return oid_dir, run


def extra_yfcc(tmp_path, sources):
    """The world's YFCC100M file, or the one a test wrote into `tmp_path`."""
    mine = tmp_path / "yfcc100m_dataset"
    return mine if mine.exists() else sources.yfcc


def lines(path):
    return path.read_text(encoding="utf-8").splitlines()


def test_a_photo_in_two_splits_is_an_error_naming_both_lines(raw, capsys, tmp_path):
    oid_dir, run = raw
    train_list = oid_dir / "train-images-with-labels-with-rotation.csv"
    test_list = oid_dir / "test-images-with-rotation.csv"
    validation_list = oid_dir / "validation-images-with-rotation.csv"
    original_test, original_validation = test_list.read_text(), validation_list.read_text()
    row = lines(train_list)[1]
    image_id = row.split(",")[0]
    test_list.write_text(original_test + row.replace(",train,", ",test,") + "\n")  # the same ImageID
    code, _, _, err = run(capsys)
    at = len(lines(test_list))
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(f"error: {test_list}:{at}: ImageID {image_id} is also in the train split "
                          f"({train_list}:2)"), err
    test_list.write_text(original_test)
    other = "f" * 16  # the same Flickr photo behind another ImageID
    validation_list.write_text(original_validation + other + "," + row.split(",", 1)[1] + "\n")
    code, _, _, err = run(capsys)
    assert code == 2 and err.startswith(f"error: {validation_list}:{len(lines(validation_list))}: ImageID {other} "
                                        f"is Flickr photo "), err
    assert f"which the train split has as ImageID {image_id} ({train_list}:2)" in err
    assert not (tmp_path / "out").exists()


def test_label_rows_outside_their_split_and_splits_without_labels_are_counted_and_warned(raw, capsys, tmp_path):
    oid_dir, run = raw
    train_labels = oid_dir / "train-annotations-human-imagelabels-boxable.csv"
    validation_labels = lines(oid_dir / "validation-annotations-human-imagelabels-boxable.csv")
    # The validation labels appended to one train label, and a row for a photo that no list has.
    train_lines = [lines(train_labels)[0], lines(train_labels)[1], *validation_labels[1:],
                   f"{'e' * 16},verification,{lines(train_labels)[1].split(',')[2]},1"]
    train_labels.write_text("\n".join(train_lines) + "\n")
    test_list = oid_dir / "test-images-with-rotation.csv"
    test_list.write_text(test_list.read_text().replace(",test,", ",train,", 2))  # semantic nonsense: 2 rows
    code, stats, out, _ = run(capsys)
    assert code == 0
    bad = stats["bad_rows"]
    assert bad["by_reason"]["human_label_image_in_other_split"] == len(validation_labels) - 1
    assert all(e.startswith(f"{train_labels}:") for e in bad["examples"]["human_label_image_in_other_split"])
    assert bad["skipped"]["by_reason"]["human_label_image_not_listed"] == 1
    assert bad["skipped"]["examples"]["human_label_image_not_listed"] == [
        f"{train_labels}:{len(train_lines)}: '{'e' * 16}'"]
    images = stats["splits"]["train"]["images"]
    rare = f"train: only 1 of {images} images ({1 / images:.2%}) have verified labels, against 100.00% in validation"
    assert any(w.startswith(rare) for w in bad["warnings"]), bad["warnings"]
    assert "human_label_image_in_other_split" in out and f"warning: {rare}" in out
    assert f"warning: {test_list}: 2 rows whose Subset is not test (e.g. line 2: 'train')" in out
    # No train label at all: a warning; and with no machine label either, training is refused.
    train_labels.write_text(lines(train_labels)[0] + "\n")
    machine = oid_dir / "train-annotations-machine-imagelabels.csv"
    machine.write_text(lines(machine)[0] + "\n")
    code, stats, out, _ = run(capsys, out="bare")
    assert code == 0 and stats["splits"]["train"]["with_targets"] == 0
    assert f"warning: train: 0 images with verified labels ({train_labels})" in out
    with pytest.raises(SystemExit) as stop:
        train.main(["--data", str(tmp_path / "bare"), "--out", str(tmp_path / "run"), "--epochs", "1",
                    "--no-progress"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "none of the" in err and "has a target" in err, err
    assert not (tmp_path / "run").exists()


def test_every_line_or_field_break_in_a_frequent_tag_reads_back_from_vocab_tsv(raw, capsys, tmp_path, tiny_world):
    sources, _ = tiny_world
    breaks = [f"c{ch}d" for ch in FIELD_BREAKS] + ["back\\slash", "\\u2028 as text"]
    assert set("\t\n\r\v\f\x1c\x1d\x1e\x85\u2028\u2029") == set(FIELD_BREAKS)
    field = ",".join(quote(tag) for tag in breaks)
    rows = []
    for line in sources.yfcc.read_text(encoding="utf-8").splitlines(keepends=True):
        fields = line.split("\t")
        fields[10] = field + ("," + fields[10] if fields[10] else "")
        rows.append("\t".join(fields))
    (tmp_path / "yfcc100m_dataset").write_text("".join(rows), encoding="utf-8")
    _, run = raw
    code, _, _, err = run(capsys)
    assert code == 0, err
    info = DatasetInfo.load(tmp_path / "out")  # what train, evaluate and search read first
    assert set(breaks) <= set(info.vocab.tokens)
    text = (tmp_path / "out" / "vocab.tsv").read_text(encoding="utf-8")
    assert len(text.splitlines()) == 1 + len(info.vocab.tokens)  # no line broken, for any line reader
    assert all(line.count("\t") == 1 for line in text.splitlines()[1:])


def test_a_dataset_that_does_not_read_back_is_never_put_in_place(tiny_world, tmp_path):
    from app.records.dataset import CLASSES, HIERARCHY, STATS, VOCAB, DatasetWriter

    _, data = tiny_world
    target = tmp_path / "d"
    with pytest.raises(DatasetError, match="does not read back"):
        with DatasetWriter(target) as writer:
            for name in (CLASSES, HIERARCHY, STATS):
                shutil.copy(data / name, writer.path / name)
            (writer.path / VOCAB).write_text((data / VOCAB).read_text() + "a\rb\t3\n")  # a raw CR
            writer.commit()
    assert not target.exists()


@pytest.mark.parametrize("char", list(LINE_BREAKS.replace("\n", "")))
def test_a_class_name_with_a_line_break_is_refused(tmp_path, char):
    from app.sources.oid import read_classes
    from app.errors import InputError

    path = tmp_path / "classes.csv"
    path.write_text(f"/m/01,fine\n/m/02,a{char}b\n", encoding="utf-8")
    with pytest.raises(InputError) as refused:  # (a CR is already a CSV error: csv's own message)
        read_classes(path)
    assert str(refused.value).startswith(f"{path}:2: ")


def test_predict_json_lines_hold_no_raw_line_separator():
    from app.serving.writers import json_line

    record = {"tags": [f"a{ch}b" for ch in FIELD_BREAKS]}
    text = json_line(record)
    assert len(text.splitlines()) == 1 and json.loads(text) == record


def test_quoted_class_names_round_trip_and_an_edited_metadata_file_is_refused(raw, capsys, tmp_path, tiny_world):
    oid_dir, run = raw
    classes = oid_dir / tiny_world[0].oid.classes.name
    rows = lines(classes)
    mid = rows[0].split(",")[0]
    classes.write_text("\n".join([f'{mid},"An ""odd"", name"', *rows[1:]]) + "\n")
    code, _, _, err = run(capsys)
    assert code == 0, err
    assert DatasetInfo.load(tmp_path / "out").classes[0] == (mid, 'An "odd", name')
    vocab = tmp_path / "out" / "vocab.tsv"
    text = vocab.read_text(encoding="utf-8")
    vocab.write_text(text.replace("\t", "\t9", 1)[:-1] if text.endswith("\n") else text)  # same size, edited
    assert vocab.stat().st_size == len(text.encode())
    with pytest.raises(DatasetError, match="edited since the prepare run wrote it"):
        DatasetInfo.load(tmp_path / "out")


def test_a_crlf_yfcc100m_file_gives_the_same_yfcc_split_and_an_empty_one_is_a_warning(raw, capsys, tmp_path,
                                                                                         tiny_world):
    sources, _ = tiny_world
    _, run = raw
    code, plain, _, _ = run(capsys, out="plain")
    text = sources.yfcc.read_text(encoding="utf-8")
    (tmp_path / "yfcc100m_dataset").write_text(text.replace("\n", "\r\n"), encoding="utf-8")
    code, crlf, _, _ = run(capsys, out="crlf")  # the photo/video marker was read as `0\r`: no photo at all
    assert code == 0 and crlf["splits"]["yfcc"] == plain["splits"]["yfcc"] and plain["splits"]["yfcc"]["images"]
    videos = "".join(line[:-1] + "1\n" for line in text.splitlines(keepends=True))  # every line a video
    (tmp_path / "yfcc100m_dataset").write_text(videos, encoding="utf-8")
    code, stats, out, _ = run(capsys, out="videos")
    assert code == 0 and stats["splits"]["yfcc"]["images"] == 0
    assert "warning: yfcc: 0 photos;" in out
