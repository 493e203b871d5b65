"""CamVid's label set as SegNet ships it, shared by the CamVid reader and the generated road scenes."""

CAMVID_CLASSES = (
    "Sky",
    "Building",
    "Pole",
    "Road",
    "Pavement",
    "Tree",
    "SignSymbol",
    "Fence",
    "Car",
    "Pedestrian",
    "Bicyclist",
)  # SegNet's label order (ids 0-10); id 11 is "Unlabelled", the ignore index
