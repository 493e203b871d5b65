"""The shared, domain-free distillation core: teachers, feature taps, projectors, losses, module."""

from modules.core.losses import cosine_distance, feature_mse, feature_smooth_l1, kd_kl
from modules.core.module import DistillModule, ema_update_
from modules.core.multi_teacher import TeacherSet, masked_cosine_distance, masked_mean
from modules.core.projectors import make_projector, projector_for
from modules.core.taps import FeatureTaps
from modules.core.teacher import Teacher, as_teachers
from zoo.specs import exportable, module_spec

__all__ = [
    "DistillModule",
    "FeatureTaps",
    "Teacher",
    "TeacherSet",
    "as_teachers",
    "cosine_distance",
    "feature_mse",
    "feature_smooth_l1",
    "ema_update_",
    "exportable",
    "kd_kl",
    "make_projector",
    "masked_cosine_distance",
    "masked_mean",
    "module_spec",
    "projector_for",
]
