"""Contextualised image classifier: Open Images classes from a photo and its Flickr user tags.

`import app` is the one import a user needs to load the project's Keras models
(`keras.saving.load_model(".../model.keras")`): it registers every custom layer and the optimizer
with Keras (as soon as Keras is imported; see `app.registration`).
"""

from app.registration import register_when_keras_loads

__version__ = "0.1.0"

register_when_keras_loads()
