"""Data: source readers, Flickr-ID join, tag processing, TFRecord shards, tf.data pipelines."""
