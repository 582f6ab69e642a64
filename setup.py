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
    ],
    extras_require={"test": ["pytest>=8,<10", "scikit-learn>=1.4,<2"]},
    entry_points={
        "console_scripts": [
            "cic-prepare=app.prepare:main",
            "cic-download=app.download:main",
            "cic-train=app.train:main",
            "cic-pseudo-label=app.pseudo_label:main",
            "cic-evaluate=app.evaluate:main",
            "cic-export=app.export:main",
            "cic-predict=app.predict:main",
            "cic-search=tuning.search:main",
        ]
    },
)
