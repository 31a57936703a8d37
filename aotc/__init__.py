"""aotc: ahead-of-time kernel compiler and cubin cache for SM120/SM121 Blackwell GPUs."""

__version__ = "0.1.0"
# Bumped when the cache/manifest/launch ABI changes; part of every key and checked by wheels.
ABI_VERSION = 1
