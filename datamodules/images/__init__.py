"""Image datamodules (one file per dataset family, on :class:`datamodules.base.BaseDataModule` and
:mod:`datamodules.splits`); filled by the next issue."""
