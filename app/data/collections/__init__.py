"""Photo collections beyond Open Images: a manifest (CSV or JSONL), NUS-WIDE and COCO in their real
layouts, with a class list of any size (and optionally a hierarchy).

Each reader streams `CollectionPhoto`s (`photo.py`); `build.py` turns them into a normal dataset
folder. The formats are described in docs/your-own-photos.md.
"""
