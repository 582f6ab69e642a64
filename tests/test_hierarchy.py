import json

import numpy as np
import pytest

from app import resources
from app.sources.hierarchy import Hierarchy
from app.sources.oid import read_classes
from app.errors import InputError

TREE = {"LabelName": "/m/root", "Subcategory": [
    {"LabelName": "/m/animal", "Subcategory": [{"LabelName": "/m/dog"}, {"LabelName": "/m/cat"}]},
    {"LabelName": "/m/car"}]}


def write(tmp_path, tree) -> str:
    path = tmp_path / "h.json"
    path.write_text(json.dumps(tree) if not isinstance(tree, str) else tree, encoding="utf-8")
    return path


@pytest.mark.parametrize("tree,classes,message", [
    ({"LabelName": "/m/root", "Subcategory": [{"LabelName": "/m/a", "Subcategory": [
        {"LabelName": "/m/b", "Subcategory": [{"LabelName": "/m/a"}]}]}]}, None, "cycle through '/m/"),
    ({"LabelName": "/m/root", "Subcategory": [{"LabelName": "/m/a"}, {"Label": "/m/b"}]}, None,
     "the node at /m/root Subcategory\\[1\\] has no 'LabelName'"),
    ({"LabelName": "/m/root", "Subcategory": {"LabelName": "/m/a"}}, None, "'Subcategory' of /m/root is not a list"),
    (TREE, ["/m/dog", "/m/horse", "/m/cow"], "lacks 2 of the 3 classes of the class list, e.g. /m/horse, /m/cow"),
    ("{\"LabelName\": ", None, ":1: not valid JSON"),
    ([TREE], None, "needs a root object with 'LabelName'"),
])
def test_bad_hierarchies_stop_with_one_line_naming_the_file(tmp_path, tree, classes, message):
    path = write(tmp_path, tree)
    with pytest.raises(InputError, match=f"{path}.*{message}") as info:
        Hierarchy.from_json(path, classes)
    assert "\n" not in str(info.value)


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "h.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(TREE).encode())
    assert Hierarchy.from_json(path, ["/m/dog", "/m/animal"]).ancestors["/m/dog"] == {"/m/animal"}


def test_known_mids_are_every_node():
    assert Hierarchy(TREE, ["/m/dog"]).known_mids() == ["/m/root", "/m/animal", "/m/car", "/m/cat", "/m/dog"]


def test_vectorised_expansion_equals_the_per_image_expansion_on_the_real_hierarchy():
    mids = [m for m, _ in read_classes(resources.CHALLENGE_CLASSES_CSV)]
    hierarchy = Hierarchy.from_json(resources.HIERARCHY_JSON, mids)
    known = hierarchy.known_mids()
    rng = np.random.default_rng(0)
    images, count = 300, 4000
    image, label, positive = rng.integers(0, images, count), rng.integers(0, len(known), count), rng.random(count) < 0.5
    source, cls, sign = hierarchy.expand_arrays(label, positive, known)
    vectorised = np.full((images, len(mids)), -1, np.int8)
    vectorised[image[source[~sign]], cls[~sign]] = 0
    vectorised[image[source[sign]], cls[sign]] = 1
    index = {m: i for i, m in enumerate(mids)}
    for i in range(images):
        expanded = hierarchy.expand([(known[m], int(p)) for m, p in zip(label[image == i], positive[image == i])])
        row = np.full(len(mids), -1, np.int8)
        row[[index[m] for m in expanded]] = list(expanded.values())
        np.testing.assert_array_equal(vectorised[i], row)
    assert (vectorised == 1).sum() > count / 2 and (vectorised == 0).sum() > count / 4  # both signs expanded
