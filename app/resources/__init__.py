"""Real Open Images / YFCC100M reference data shipped with the package."""

from pathlib import Path

RESOURCES = Path(__file__).resolve().parent
CHALLENGE_CLASSES_CSV = RESOURCES / "challenge-2019-classes-description-500.csv"
BOXABLE_CLASSES_CSV = RESOURCES / "class-descriptions-boxable.csv"
HIERARCHY_JSON = RESOURCES / "bbox_labels_600_hierarchy.json"
ALIGNED_AUTOTAGS = RESOURCES / "aligned_autotags.txt"
