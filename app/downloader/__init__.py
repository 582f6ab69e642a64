"""The photo downloader, one module per stage: what to fetch, fetching, checking and resizing, writing."""
