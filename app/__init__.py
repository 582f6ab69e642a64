"""Contextualised image classifier: Open Images classes from a photo and its Flickr user tags."""

__version__ = "0.1.0"
