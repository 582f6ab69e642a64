"""Text search over a prepared dataset's photos (`app/search.py`), one concern per module.

    vector_index.py   the nearest-neighbour index (faiss): add, search, save, load; its folder format
    fingerprint.py    what an index was made from, and the refusals of another dataset or text encoder
    photo_vectors.py  photo vectors streamed from a dataset split: the mean of a photo's tag vectors
    indexing.py       building an index, or adding a grown dataset's new photos to it
    query.py          text queries: checked, encoded, answered with ranked photos
"""
