"""Learning across users: behaviour-based segments, memberships and empirical-Bayes prior strengths.

Pure (numpy, scipy, scikit-learn), like the rest of ``learning``. A surface's segments are fitted
from its users' evidence (per-arm play counts and reward sums, the state a count-based policy
keeps); a user's membership is the posterior over segments given their own evidence; their prior
is the membership-weighted mix of a finer mixture fitted beside the segments, as strong as its
components' users agree.
"""

from rewardloop.learning.segments.empirical_bayes import BetaPrior, beta_prior, pooled_strength
from rewardloop.learning.segments.model import SegmentModel, fit_segments, fit_segments_and_mixture

__all__ = ["BetaPrior", "SegmentModel", "beta_prior", "fit_segments", "fit_segments_and_mixture", "pooled_strength"]
