"""Records and datasets: the record schema, the shard writer, the dataset folder and its builder, tf.data, TFDS."""
