"""Sources: the `Source` interface (`base`), one reader per dataset (Open Images ⋈ YFCC100M, manifest, NUS-WIDE,
COCO), class lists and hierarchies, where photos find their images, streaming file readers."""
