"""Multi-view datamodules (UNIEGO): :mod:`.views` (``MultiViewDataModule``), :mod:`.mfeat` (the UCI Multiple
Features digits and the embedded generated default) and :mod:`.features` (teacher feature files, list files)."""

from datamodules.multiview.features import read_student_input, read_teacher_features, write_teacher_features
from datamodules.multiview.mfeat import UCI_MFEAT_URL, UCI_MFEAT_WIDTHS, generated_multiview, read_uci_mfeat
from datamodules.multiview.views import MultiViewDataModule, collate_multiview
from datamodules.splits import stratified_split

__all__ = [
    "MultiViewDataModule",
    "UCI_MFEAT_URL",
    "UCI_MFEAT_WIDTHS",
    "collate_multiview",
    "generated_multiview",
    "read_student_input",
    "read_teacher_features",
    "read_uci_mfeat",
    "stratified_split",
    "write_teacher_features",
]
