"""Registers the project's Keras objects (layers, optimizer) with Keras, without starting TensorFlow.

`import app` calls `register_when_keras_loads()`, so that in a fresh interpreter

    import app
    import keras
    model = keras.saving.load_model("saved_models/contextual/model.keras")

finds every custom object. Importing Keras costs seconds and the CLIs import it only when they need
it, so registration waits for Keras: if it is already imported, the objects are registered at once;
otherwise a one-shot import hook registers them right after Keras itself has been imported. Nothing
here creates a tensor, so logical devices and multi-worker collectives can still be configured later.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys

CUSTOM_OBJECT_MODULES = ("app.model.layers", "app.training.optimizer")  # modules that only define classes


def register_custom_objects() -> None:
    """Imports the modules whose classes are `keras.saving.register_keras_serializable`."""
    for name in CUSTOM_OBJECT_MODULES:
        importlib.import_module(name)


class _AfterKerasImport(importlib.abc.MetaPathFinder):
    """Finds `keras` with the other finders and runs `register_custom_objects` once it has loaded.

    It stays in `sys.meta_path` until Keras is loaded: TensorFlow looks Keras up (`find_spec`)
    without loading it.
    """

    def __init__(self):
        self.looking = False

    def find_spec(self, fullname, path, target=None):
        if fullname != "keras" or self.looking:
            return None
        self.looking = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self.looking = False
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            register_custom_objects()

        spec.loader.exec_module = exec_module
        return spec


def register_when_keras_loads() -> None:
    """Registers the custom objects now if Keras is imported, else right after it is."""
    if "keras" in sys.modules:
        register_custom_objects()
    elif not any(isinstance(finder, _AfterKerasImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKerasImport())
