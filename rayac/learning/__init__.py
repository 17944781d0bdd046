"""Learning: the learner of a run, in this process or an actor, behind one ``LearnerHandle``."""

from rayac.learning.handle import LearnerHandle

__all__ = ["LearnerHandle"]
