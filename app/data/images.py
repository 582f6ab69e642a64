"""Image limits shared by prepare, download, serving and predict."""

# Photos whose header declares more pixels than this are refused before decoding (decompression
# bombs): 64 Mpx, e.g. 8192 x 8192. Real Open Images originals are far smaller.
MAX_IMAGE_PIXELS = 1 << 26
