"""Stage B teachers: class-agnostic mask tracks turned into distillation targets.

Every teacher is a *propagator* (SAM2, dense optical flow, ground-truth tracks) driven by one
shared prompt / propagate / merge / vote / render path in `targets.py`, so all of them produce
the reference target format.
"""
