"""Build side of the FlashInfer integration: FlashInfer's own modules compiled ahead of time (through
its generators, in a worker process), verified and stored in the aotc cache. The serving side (the
hook that loads them) is aotc.flashinfer.
"""
