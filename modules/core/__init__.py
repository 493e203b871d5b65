"""The shared, domain-free distillation core: teachers, feature taps, projectors, losses, module."""

from modules.core.losses import cosine_distance, feature_mse, feature_smooth_l1, kd_kl
from modules.core.module import DistillModule, init_args_from, module_spec
from modules.core.multi_teacher import TeacherSet, masked_cosine_distance, masked_mean
from modules.core.projectors import make_projector, projector_for
from modules.core.taps import FeatureTaps
from modules.core.teacher import Teacher, as_teachers

__all__ = [
    "DistillModule",
    "FeatureTaps",
    "Teacher",
    "TeacherSet",
    "as_teachers",
    "cosine_distance",
    "feature_mse",
    "feature_smooth_l1",
    "init_args_from",
    "kd_kl",
    "make_projector",
    "masked_cosine_distance",
    "masked_mean",
    "module_spec",
    "projector_for",
]
