"""The stratified estimator of accuracy and area (Olofsson et al. 2014, Remote Sensing of
Environment 148: 42-57, section 5), for a stratified random sample whose strata are the map classes.

Pure functions of the sample's error matrix (counts) and the mapped area of each stratum; no file is
read here. Equation numbers are the paper's. As in the paper, no finite population correction: the
strata hold thousands of sample units and more.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

Z_95 = 1.96  # the paper's 95% intervals are the estimate +/- 1.96 standard errors


@dataclass(frozen=True)
class Estimate:
    """A value, its standard error and 95% interval; NaN where the sample cannot give them."""

    value: float
    se: float

    @property
    def low(self) -> float:
        return self.value - Z_95 * self.se

    @property
    def high(self) -> float:
        return self.value + Z_95 * self.se

    @property
    def half_width(self) -> float:
        """The "+/-" of a 95% interval, as the paper prints it."""
        return Z_95 * self.se


@dataclass(frozen=True)
class ClassResult:
    """One class: accuracies, estimated area beside the mapped (pixel-count) area, sample counts."""

    index: int  # row and column of the class in the error matrix
    users: Estimate  # eqs. 2 and 6
    producers: Estimate  # eqs. 3 and 7
    proportion: Estimate  # area proportion by the reference, eqs. 9 and 10
    area: Estimate  # eqs. 11 and 12, in the unit of the mapped areas given
    mapped_area: float  # the map's own area of the class (pixel counting)
    map_samples: int  # n_i. : samples in the stratum (mapped as the class)
    reference_samples: int  # n_.j : samples the reference labels as the class


@dataclass(frozen=True)
class StratifiedEstimate:
    counts: np.ndarray  # (q, q) sample counts n_ij, rows = map class (stratum), columns = reference class
    proportions: np.ndarray  # (q, q) estimated area proportions p_ij, eq. 4
    weights: np.ndarray  # (q,) W_i, the mapped share of each stratum
    overall: Estimate  # eqs. 1 and 5
    classes: tuple[ClassResult, ...]
    total_area: float

    @property
    def thin_strata(self) -> tuple[int, ...]:
        """Indexes of strata with fewer than 2 samples: their variances (n_i. - 1 in the
        denominators) are undefined, and every standard error that sums over them is NaN."""
        return tuple(c.index for c in self.classes if c.map_samples < 2)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den, NaN where den is 0 (an undefined estimate is shown as such, never as 0)."""
    num, den = np.broadcast_arrays(np.asarray(num, float), np.asarray(den, float))
    out = np.full(num.shape, np.nan)
    np.divide(num, den, out=out, where=den != 0)
    return out


def stratified_estimate(counts: np.ndarray, mapped_area: np.ndarray) -> StratifiedEstimate:
    """Accuracy and area from a stratified random sample stratified by map class.

    counts: (q, q) integers, n_ij = samples mapped as class i (stratum i) whose reference is class j,
    the classes in the same order on both axes. mapped_area: (q,) the map's area of each class (the
    stratum sizes A_m,i, or pixel counts N_i.), in the unit the areas are wanted in.
    """
    n = np.asarray(counts, dtype=float)
    area_m = np.asarray(mapped_area, dtype=float)
    if n.ndim != 2 or n.shape[0] != n.shape[1] or area_m.shape != (n.shape[0],):
        raise ValueError(f"counts must be (q, q) and mapped_area (q,), got {n.shape} and {area_m.shape}")
    if (n < 0).any() or (area_m < 0).any() or area_m.sum() <= 0:
        raise ValueError("counts and mapped areas must be non-negative, with some mapped area")
    total = float(area_m.sum())
    w = area_m / total
    n_i = n.sum(axis=1)
    share = _ratio(n, n_i[:, None])  # n_ij / n_i. ; NaN on an empty row
    dof = n_i - 1.0  # the n_i. - 1 of eqs. 5, 6, 7 and 10

    p = np.where(n_i[:, None] > 0, w[:, None] * np.nan_to_num(share), 0.0)  # eq. 4
    users = np.diag(share)  # eq. 2: p_ii / p_i. = n_ii / n_i.
    var_users = _ratio(users * (1 - users), dof)  # eq. 6
    overall = float(np.trace(p))  # eq. 1
    var_overall = float(np.sum(w**2 * var_users))  # eq. 5

    p_ref = p.sum(axis=0)  # eq. 9: p_.k = sum_i W_i n_ik / n_i.
    var_p_ref = np.sum(w[:, None] ** 2 * _ratio(share * (1 - share), dof[:, None]), axis=0)  # eq. 10 squared
    producers = _ratio(np.diag(p), p_ref)  # eq. 3
    var_producers = _producers_variance(n, area_m, share, dof, users, producers)

    classes = tuple(
        ClassResult(
            index=k,
            users=Estimate(float(users[k]), float(np.sqrt(var_users[k]))),
            producers=Estimate(float(producers[k]), float(np.sqrt(var_producers[k]))),
            proportion=Estimate(float(p_ref[k]), float(np.sqrt(var_p_ref[k]))),
            area=Estimate(total * float(p_ref[k]), total * float(np.sqrt(var_p_ref[k]))),  # eqs. 11, 12
            mapped_area=float(area_m[k]),
            map_samples=int(n_i[k]),
            reference_samples=int(n[:, k].sum()),
        )
        for k in range(n.shape[0])
    )
    return StratifiedEstimate(
        counts=n.astype(np.int64), proportions=p, weights=w,
        overall=Estimate(overall, float(np.sqrt(var_overall))), classes=classes, total_area=total,
    )


def _producers_variance(
    n: np.ndarray, area_m: np.ndarray, share: np.ndarray, dof: np.ndarray, users: np.ndarray, producers: np.ndarray
) -> np.ndarray:
    """Eq. 7, with N_j. the mapped size of stratum j and N^_.j = sum_i N_i. n_ij / n_i. (eq. 8).

    The mapped sizes may be in any unit (pixels, hectares): they appear squared above and below.
    """
    n_hat = np.sum(area_m[:, None] * np.nan_to_num(share), axis=0)  # eq. 8
    terms = area_m[:, None] ** 2 * _ratio(share * (1 - share), dof[:, None])  # i != j part of eq. 7
    out = np.empty(n.shape[0])
    for j in range(n.shape[0]):
        own = area_m[j] ** 2 * (1 - producers[j]) ** 2 * users[j] * (1 - users[j]) / dof[j] if dof[j] > 0 else np.nan
        others = np.sum(np.delete(terms[:, j], j))
        out[j] = (own + producers[j] ** 2 * others) / n_hat[j] ** 2 if n_hat[j] > 0 else np.nan
    return out


def sample_size(weights: np.ndarray, users: np.ndarray, target_se: float) -> int:
    """Eq. 13: the total sample size giving a standard error ``target_se`` of overall accuracy,
    n = (sum_i W_i S(U_i) / S(O))^2 with S(U_i) = sqrt(U_i (1 - U_i)) from the assumed user's
    accuracies (rounded up)."""
    w = np.asarray(weights, dtype=float)
    u = np.asarray(users, dtype=float)
    if target_se <= 0 or not np.all((u > 0) & (u < 1)):
        raise ValueError("target_se must be > 0 and the assumed user's accuracies strictly between 0 and 1")
    return int(np.ceil((np.sum(w * np.sqrt(u * (1 - u))) / target_se) ** 2))
