"""Method modules of distillzoo; each method lives in one file on top of :mod:`modules.core`."""
