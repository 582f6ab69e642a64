"""Text: tag cleaning, the tag limit and vocabulary, language detection, stemming, the text encoder (`encoders`)."""
