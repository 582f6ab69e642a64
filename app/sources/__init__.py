"""Sources: one reader per dataset (Open Images, YFCC100M, manifest, NUS-WIDE, COCO), class lists and hierarchies, streaming file readers."""
