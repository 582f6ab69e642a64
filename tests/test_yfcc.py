import bz2
import gzip

import pytest

from app.sources import textfiles, yfcc
from app.badrows import BadRows
from app.errors import InputError
from conftest import DATA

REAL = (DATA / "yfcc100m_dataset.sample.tsv").read_text(encoding="utf-8")  # one real 25-field line, no newline


def line(photo_id: int, tags: str = "dog,cat", n: int = 25, title: str = "t") -> str:
    fields = [str(photo_id)] * n
    layout = yfcc.LAYOUTS[n]
    fields[layout["id"]] = str(photo_id)
    fields[layout["user_tags"]] = tags
    fields[layout["title"]] = title
    return "\t".join(fields)


def scan(path, wanted, **kw):
    bad = BadRows()
    return list(yfcc.scan_dataset(path, {str(w).encode() for w in wanted}, bad, **kw)), bad


def test_real_line_byte_exact(tmp_path):
    path = tmp_path / "yfcc100m_dataset"
    path.write_text(REAL, encoding="utf-8")
    photos, bad = scan(path, [6162540254])
    assert bad.total == 0
    assert photos == [yfcc.YfccPhoto(6162540254, ("helsinki", "party", "waterpipe"), "Around the waterpipe", 1,
                                     "http://farm7.staticflickr.com/6167/6162540254_5d22abd711.jpg")]


def test_23_field_release_is_detected(tmp_path):
    path = tmp_path / "yfcc100m_dataset-0"
    path.write_text("\n".join(line(i, f"t{i}", n=23) for i in (5, 6, 7)) + "\n")
    assert yfcc.detect_layout(path) == 23
    photos, bad = scan(path, [6])
    assert [(p.photo_id, p.user_tags) for p in photos] == [(6, ("t6",))] and bad.total == 0


@pytest.mark.parametrize("opener,suffix", [(gzip.open, ".gz"), (bz2.open, ".bz2")])
def test_compressed_input(tmp_path, opener, suffix):
    path = tmp_path / f"yfcc100m_dataset{suffix}"
    with opener(path, "wt", encoding="utf-8") as handle:
        handle.write("\n".join(line(i) for i in range(1, 50)) + "\n")
    photos, bad = scan(path, [3, 40])
    assert [p.photo_id for p in photos] == [3, 40] and bad.total == 0


def test_each_bad_row_reason_is_counted_and_none_stops_the_scan(tmp_path):
    rows = [
        line(1).encode(),
        b"only\tthree\tfields",                       # yfcc_field_count
        line(2).replace("\t2\t", "\tx2\t", 1).encode(),  # yfcc_bad_id (id field not numeric)
        line(3, "caf\xe9").encode("latin-1"),          # yfcc_non_utf8 (raw byte 0xe9)
        line(4, "dog,50%").encode(),                   # yfcc_bad_escape
        line(5, "%C3%28").encode(),                    # yfcc_non_utf8 inside an escape
        line(1, "again").encode(),                     # yfcc_duplicate
        b"",                                           # yfcc_blank_line
        line(6).encode(),
    ]
    path = tmp_path / "yfcc100m_dataset"
    path.write_bytes(b"\n".join(rows) + b"\n")
    photos, bad = scan(path, [1, 3, 4, 5, 6])
    assert [p.photo_id for p in photos] == [1, 6]
    assert dict(bad.counts) == {"yfcc_field_count": 1, "yfcc_bad_id": 1, "yfcc_non_utf8": 2, "yfcc_bad_escape": 1,
                                "yfcc_duplicate": 1, "yfcc_blank_line": 1}
    assert bad.examples["yfcc_field_count"][0].startswith(f"{path}:2:")
    assert bad.examples["yfcc_bad_escape"][0].startswith(f"{path}:5:")


def test_lines_across_chunk_boundaries_and_missing_final_newline(tmp_path, monkeypatch):
    monkeypatch.setattr(yfcc, "CHUNK_BYTES", 37)
    path = tmp_path / "yfcc100m_dataset"
    path.write_text("\n".join(line(i, f"tag{i}") for i in range(100, 160)))
    photos, bad = scan(path, range(100, 160, 7))
    assert [p.photo_id for p in photos] == list(range(100, 160, 7))
    assert [p.line_no for p in photos] == [i - 99 for i in range(100, 160, 7)]
    assert photos[-1].user_tags == ("tag156",) and bad.total == 0


def test_tags_are_decoded_exactly_and_keep_order(tmp_path):
    path = tmp_path / "yfcc100m_dataset"
    path.write_text(line(9, "zebra,new+york,caf%C3%A9,rock%2C+paper,2009,%E6%9D%B1%E4%BA%AC", title="A+b%2Cc") + "\n")
    (photo,), bad = scan(path, [9])
    assert photo.user_tags == ("zebra", "new york", "café", "rock, paper", "2009", "東京")
    assert photo.title == "A b,c"


def test_autotags_and_extra_tags(tmp_path):
    auto = tmp_path / "yfcc100m_autotags"
    auto.write_text("1\tdog:0.9,arabian+camel:0.75\n2\t\n3\tcat:1.7\n4 broken\n")
    bad = BadRows()
    assert list(yfcc.read_autotags(auto, None, bad)) == [(1, {"dog": 0.9, "arabian camel": 0.75}), (2, {})]
    assert dict(bad.counts) == {"autotags_bad_value": 1, "autotags_malformed": 1}
    extra = tmp_path / "extra.tsv"
    extra.write_text("7\tdog,hund,new+york\n8\tbad%zz\n")
    bad = BadRows()
    assert list(yfcc.read_extra_tags(extra, {b"7", b"8"}, bad)) == [(7, ("dog", "hund", "new york"))]
    assert dict(bad.counts) == {"extra_tags_bad_escape": 1}


def test_no_valid_line_is_a_clear_error(tmp_path):
    path = tmp_path / "yfcc100m_dataset"
    path.write_text("a\tb\n")
    with pytest.raises(InputError, match="25 .* or 23"):
        scan(path, [1])


@pytest.mark.parametrize("parts", [1, 3, 7, 40])
def test_byte_spans_read_every_line_once_with_its_number(tmp_path, parts):
    """A line belongs to the span where it starts: the spans, scanned one by one after their
    counted lines, give the whole scan's photos, line numbers and bad rows."""
    rows = [line(i, f"tag{i}").encode() for i in range(100, 130)]
    rows[4], rows[11], rows[20] = b"only\tthree\tfields", b"", line(7, "caf\xe9").encode("latin-1")
    path = tmp_path / "yfcc100m_dataset"
    path.write_bytes(b"\n".join(rows))  # no final newline
    wanted = yfcc.id_array([7] + list(range(100, 130, 3)))
    whole_bad, span_bad = BadRows(), BadRows()
    whole = list(yfcc.scan_dataset(path, wanted, whole_bad))
    spans, first, spread = textfiles.line_spans(path, parts), 0, []
    for span in spans:
        spread += yfcc.scan_dataset(path, wanted, span_bad, span=span, first_line=first)
        first += textfiles.count_lines(path, span)
    assert spread == whole and first == len(rows) and len(spans) == parts
    assert span_bad.to_dict() == whole_bad.to_dict() and whole_bad.total == 3
