"""The build side: spec loading, rules, render, toolchain, compile, verify, the build pipeline, wheel
packing and FlashInfer module builds. Needs Jinja2, nvcc and CUTLASS; a serving process never
imports anything under aotc.build (tests/test_runtime.py checks it).
"""
