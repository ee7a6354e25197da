"""Numba kernels of the RANSAC verifier.

Every function here takes plain arrays and scalars and returns arrays or
scalars; nothing validates input (``verify.ransac`` does that) and nothing
touches Python objects, so every kernel also runs as plain NumPy through its
``.py_func`` (the tests compare the two).

Conventions inside the kernels:

* a model is a 3x3 float64 matrix mapping homogeneous source points to
  destination points (affine and similarity models keep ``[0, 0, 1]`` as the
  last row);
* points are kept as four separate coordinate vectors (sx, sy, dx, dy), which
  keeps the scoring loop free of strided loads;
* the random state is a one-element uint64 array advanced by xorshift64*, so
  a result depends only on the seed, never on a thread or a global state.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

AFFINE = 0
SIMILARITY = 1
HOMOGRAPHY = 2
MODEL_IDS = {"affine": AFFINE, "similarity": SIMILARITY, "homography": HOMOGRAPHY}
SAMPLE_SIZES = {"affine": 3, "similarity": 2, "homography": 4}

# Twice the area of a sample triangle, in normalised units (points spread over
# about sqrt(2) around their centroid), below which the sample is collinear:
# about 0.05 px^2 in a 1000 px photo.
_COLLINEAR_EPS = 1e-7
# Reach of the final reweighted refit, in thresholds (see ransac_core).
# Tried and dropped: shrinking it for homographies to 4 inlier noise scales
# (estimated from the median squared residual). On SIFT matches of warped
# landmarks/ photos with exact ground truth it lowered corner errors by about
# 10%, but on the real homography/ pairs it was worse (10 of 20 pairs no
# worse than OpenCV's MAGSAC++, against 14 with this fixed reach): real
# inlier errors are heavier-tailed than a warp's, and wider weights average more.
_FINAL_REACH = 1.5
# Samples closer than this (normalised units) count as the same point.
_DUPLICATE_EPS2 = 1e-12

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_STAR = np.uint64(0x2545F4914F6CDD1D)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S12 = np.uint64(12)
_S25 = np.uint64(25)
_S11 = np.uint64(11)
_ONE_STATE = np.uint64(0x853C49E6748FEA9B)


# ---------------------------------------------------------------- random numbers


@njit(cache=True)
def splitmix64(x):
    """One step of SplitMix64: a well-mixed uint64 from any uint64 (seeding)."""
    z = x + _GOLDEN
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


@njit(cache=True)
def pair_seed(seed, index):
    """Seed of pair ``index`` in a batch run with ``seed`` (both uint64)."""
    return splitmix64(np.uint64(seed) ^ splitmix64(np.uint64(index) + _GOLDEN))


@njit(cache=True)
def rng_init(seed):
    state = np.empty(1, dtype=np.uint64)
    s = splitmix64(np.uint64(seed))
    # xorshift never leaves the all-zero state.
    state[0] = s if s != np.uint64(0) else _ONE_STATE
    return state


@njit(cache=True)
def rng_next(state):
    x = state[0]
    x ^= x >> _S12
    x ^= x << _S25
    x ^= x >> _S27
    state[0] = x
    return x * _STAR


@njit(cache=True)
def rng_below(state, n):
    """Uniform integer in [0, n) for 0 < n < 2**31 (top 32 bits, multiply-shift)."""
    hi = rng_next(state) >> np.uint64(32)
    return np.int64((hi * np.uint64(n)) >> np.uint64(32))


@njit(cache=True)
def draw_distinct(state, low, high, k, out, start):
    """Fill out[start:start+k] with distinct integers drawn uniformly from [low, high)."""
    for i in range(start, start + k):
        while True:
            j = low + rng_below(state, high - low)
            fresh = True
            for q in range(i):
                if out[q] == j:
                    fresh = False
                    break
            if fresh:
                out[i] = j
                break


# ---------------------------------------------------------------- trial count


@njit(cache=True)
def adaptive_trials(inlier_ratio, sample_size, confidence, min_trials, max_trials):
    """Trials needed to draw one all-inlier sample with probability ``confidence``.

    ``ceil(log(1 - confidence) / log(1 - inlier_ratio ** sample_size))``,
    clamped to [min_trials, max_trials].
    """
    if inlier_ratio <= 0.0:
        return max_trials
    p_good = inlier_ratio**sample_size
    if p_good >= 1.0 or confidence <= 0.0:
        n = 0
    elif confidence >= 1.0:
        return max_trials
    else:
        p_bad = 1.0 - p_good
        if p_bad <= 0.0:
            n = 0
        else:
            lp = math.log(p_bad)
            if lp >= 0.0:
                return max_trials
            x = math.log(1.0 - confidence) / lp
            if x >= max_trials:
                return max_trials
            # Guards against 34.0000000001 becoming 35 through rounding noise.
            n = int(math.ceil(x - 1e-9))
    if n < min_trials:
        n = min_trials
    if n > max_trials:
        n = max_trials
    return n


# ---------------------------------------------------------------- normalisation


@njit(cache=True)
def normalisation(xs, ys):
    """Centroid and isotropic scale that move points to mean distance sqrt(2) from 0."""
    n = xs.shape[0]
    cx = 0.0
    cy = 0.0
    for i in range(n):
        cx += xs[i]
        cy += ys[i]
    cx /= n
    cy /= n
    d = 0.0
    for i in range(n):
        d += math.sqrt((xs[i] - cx) ** 2 + (ys[i] - cy) ** 2)
    d /= n
    s = math.sqrt(2.0) / d if d > 0.0 else 1.0
    return cx, cy, s


# ---------------------------------------------------------------- geometry helpers


@njit(cache=True)
def cross3(xs, ys, i, j, k):
    """Twice the signed area of triangle (i, j, k)."""
    return (xs[j] - xs[i]) * (ys[k] - ys[i]) - (ys[j] - ys[i]) * (xs[k] - xs[i])


@njit(cache=True)
def sample_ok(model_id, sx, sy, dx, dy, idx, allow_reflection):
    """Cheap degeneracy test of a minimal sample before any model is fitted.

    Rejects collinear (or repeated) points in either photo and, unless
    reflections are allowed, samples whose orientation flips between the two
    photos: an orientation-preserving map keeps the sign of every triangle.
    """
    if model_id == SIMILARITY:
        i = idx[0]
        j = idx[1]
        if (sx[i] - sx[j]) ** 2 + (sy[i] - sy[j]) ** 2 < _DUPLICATE_EPS2:
            return False
        if (dx[i] - dx[j]) ** 2 + (dy[i] - dy[j]) ** 2 < _DUPLICATE_EPS2:
            return False
        return True
    if model_id == AFFINE:
        a = cross3(sx, sy, idx[0], idx[1], idx[2])
        b = cross3(dx, dy, idx[0], idx[1], idx[2])
        if abs(a) < _COLLINEAR_EPS or abs(b) < _COLLINEAR_EPS:
            return False
        if not allow_reflection and a * b < 0.0:
            return False
        return True
    # Homography: all four triangles of the sample.
    sign = 0.0
    for t in range(4):
        i = idx[(t + 1) % 4]
        j = idx[(t + 2) % 4]
        k = idx[(t + 3) % 4]
        a = cross3(sx, sy, i, j, k)
        b = cross3(dx, dy, i, j, k)
        if abs(a) < _COLLINEAR_EPS or abs(b) < _COLLINEAR_EPS:
            return False
        s = 1.0 if a * b > 0.0 else -1.0
        if t == 0:
            sign = s
        elif s != sign:
            # Mixed signs: no homography with all points in front maps it.
            return False
    if not allow_reflection and sign < 0.0:
        return False
    return True


@njit(cache=True)
def model_ok(model_id, H, min_scale2, max_scale2, allow_reflection):
    """Rejects singular models, reflections and implausible zooms.

    ``min_scale2``/``max_scale2`` bound det of the linear part (squared
    scale), already converted to the normalised units H lives in.
    """
    for r in range(3):
        for c in range(3):
            if not np.isfinite(H[r, c]):
                return False
    if model_id == HOMOGRAPHY:
        det = (
            H[0, 0] * (H[1, 1] * H[2, 2] - H[1, 2] * H[2, 1])
            - H[0, 1] * (H[1, 0] * H[2, 2] - H[1, 2] * H[2, 0])
            + H[0, 2] * (H[1, 0] * H[2, 1] - H[1, 1] * H[2, 0])
        )
        return abs(det) > 1e-12
    det = H[0, 0] * H[1, 1] - H[0, 1] * H[1, 0]
    if det < 0.0:
        if not allow_reflection:
            return False
        det = -det
    return min_scale2 <= det <= max_scale2


# ---------------------------------------------------------------- minimal solvers


@njit(cache=True)
def sample_size(model_id):
    return 3 if model_id == AFFINE else (2 if model_id == SIMILARITY else 4)


@njit(cache=True)
def set_affine(H, a, b, c, d, tx, ty):
    """H = [[a, b, tx], [c, d, ty], [0, 0, 1]]."""
    H[0, 0] = a
    H[0, 1] = b
    H[0, 2] = tx
    H[1, 0] = c
    H[1, 1] = d
    H[1, 2] = ty
    H[2, 0] = 0.0
    H[2, 1] = 0.0
    H[2, 2] = 1.0


@njit(cache=True)
def fit_affine3(sx, sy, dx, dy, idx, H):
    """Affine map through three correspondences (Cramer's rule). False if singular."""
    i = idx[0]
    j = idx[1]
    k = idx[2]
    # Shift to the first point: keeps the 3x3 solve well conditioned.
    x1 = sx[j] - sx[i]
    y1 = sy[j] - sy[i]
    x2 = sx[k] - sx[i]
    y2 = sy[k] - sy[i]
    det = x1 * y2 - x2 * y1
    if det == 0.0:
        return False
    inv = 1.0 / det
    u1 = dx[j] - dx[i]
    u2 = dx[k] - dx[i]
    v1 = dy[j] - dy[i]
    v2 = dy[k] - dy[i]
    a = (u1 * y2 - u2 * y1) * inv
    b = (x1 * u2 - x2 * u1) * inv
    c = (v1 * y2 - v2 * y1) * inv
    d = (x1 * v2 - x2 * v1) * inv
    set_affine(H, a, b, c, d, dx[i] - a * sx[i] - b * sy[i], dy[i] - c * sx[i] - d * sy[i])
    return True


@njit(cache=True)
def fit_similarity2(sx, sy, dx, dy, idx, H):
    """Rotation, uniform scale and translation through two correspondences."""
    i = idx[0]
    j = idx[1]
    px = sx[j] - sx[i]
    py = sy[j] - sy[i]
    qx = dx[j] - dx[i]
    qy = dy[j] - dy[i]
    n = px * px + py * py
    if n == 0.0:
        return False
    # (a + ib) = (qx + i qy) / (px + i py)
    a = (qx * px + qy * py) / n
    b = (qy * px - qx * py) / n
    set_affine(H, a, -b, b, a, dx[i] - a * sx[i] + b * sy[i], dy[i] - b * sx[i] - a * sy[i])
    return True


@njit(cache=True)
def solve_inplace(A, b, n):
    """Solve A[:n,:n] x = b[:n] by Gaussian elimination with partial pivoting.

    Overwrites A and leaves x in b; False when A is (numerically) singular.
    """
    for col in range(n):
        piv = col
        best = abs(A[col, col])
        for r in range(col + 1, n):
            v = abs(A[r, col])
            if v > best:
                best = v
                piv = r
        if best < 1e-12:
            return False
        if piv != col:
            for c in range(col, n):
                t = A[col, c]
                A[col, c] = A[piv, c]
                A[piv, c] = t
            t = b[col]
            b[col] = b[piv]
            b[piv] = t
        inv = 1.0 / A[col, col]
        for r in range(col + 1, n):
            f = A[r, col] * inv
            if f != 0.0:
                for c in range(col + 1, n):
                    A[r, c] -= f * A[col, c]
                b[r] -= f * b[col]
    for r in range(n - 1, -1, -1):
        s = b[r]
        for c in range(r + 1, n):
            s -= A[r, c] * b[c]
        b[r] = s / A[r, r]
    return True


@njit(cache=True)
def fit_homography4(sx, sy, dx, dy, idx, H):
    """Homography through four correspondences, no three collinear.

    Each quadruple is the image of the projective basis (e1, e2, e3, 1)
    under M diag(lambda) with M = [p1 p2 p3] (homogeneous) and
    M lambda = p4; composing the destination map with the inverse source
    map gives H = M_d diag(lambda_d / lambda_s) adj(M_s): about a hundred
    flops, no pivoting, no scratch space.
    """
    i0 = idx[0]
    i1 = idx[1]
    i2 = idx[2]
    i3 = idx[3]
    # adj(M_s), M_s = [[x0 x1 x2], [y0 y1 y2], [1 1 1]]
    x0 = sx[i0]
    x1 = sx[i1]
    x2 = sx[i2]
    y0 = sy[i0]
    y1 = sy[i1]
    y2 = sy[i2]
    a00 = y1 - y2
    a01 = x2 - x1
    a02 = x1 * y2 - x2 * y1
    a10 = y2 - y0
    a11 = x0 - x2
    a12 = x2 * y0 - x0 * y2
    a20 = y0 - y1
    a21 = x1 - x0
    a22 = x0 * y1 - x1 * y0
    px = sx[i3]
    py = sy[i3]
    ls0 = a00 * px + a01 * py + a02
    ls1 = a10 * px + a11 * py + a12
    ls2 = a20 * px + a21 * py + a22
    # Same for the destination, only lambda_d is needed (up to scale).
    u0 = dx[i0]
    u1 = dx[i1]
    u2 = dx[i2]
    v0 = dy[i0]
    v1 = dy[i1]
    v2 = dy[i2]
    qx = dx[i3]
    qy = dy[i3]
    ld0 = (v1 - v2) * qx + (u2 - u1) * qy + (u1 * v2 - u2 * v1)
    ld1 = (v2 - v0) * qx + (u0 - u2) * qy + (u2 * v0 - u0 * v2)
    ld2 = (v0 - v1) * qx + (u1 - u0) * qy + (u0 * v1 - u1 * v0)
    if ls0 == 0.0 or ls1 == 0.0 or ls2 == 0.0:
        return False
    k0 = ld0 / ls0
    k1 = ld1 / ls1
    k2 = ld2 / ls2
    # N = M_d diag(k): columns k_j (u_j, v_j, 1)
    n00 = k0 * u0
    n01 = k1 * u1
    n02 = k2 * u2
    n10 = k0 * v0
    n11 = k1 * v1
    n12 = k2 * v2
    H[0, 0] = n00 * a00 + n01 * a10 + n02 * a20
    H[0, 1] = n00 * a01 + n01 * a11 + n02 * a21
    H[0, 2] = n00 * a02 + n01 * a12 + n02 * a22
    H[1, 0] = n10 * a00 + n11 * a10 + n12 * a20
    H[1, 1] = n10 * a01 + n11 * a11 + n12 * a21
    H[1, 2] = n10 * a02 + n11 * a12 + n12 * a22
    h20 = k0 * a00 + k1 * a10 + k2 * a20
    h21 = k0 * a01 + k1 * a11 + k2 * a21
    h22 = k0 * a02 + k1 * a12 + k2 * a22
    # Points are normalised around the origin, so h22 = 0 (the centroid
    # sent to infinity) marks a useless hypothesis anyway.
    if abs(h22) < 1e-12:
        return False
    inv = 1.0 / h22
    H[0, 0] *= inv
    H[0, 1] *= inv
    H[0, 2] *= inv
    H[1, 0] *= inv
    H[1, 1] *= inv
    H[1, 2] *= inv
    H[2, 0] = h20 * inv
    H[2, 1] = h21 * inv
    H[2, 2] = 1.0
    return True


@njit(cache=True)
def fit_minimal(model_id, sx, sy, dx, dy, idx, H):
    if model_id == AFFINE:
        return fit_affine3(sx, sy, dx, dy, idx, H)
    if model_id == SIMILARITY:
        return fit_similarity2(sx, sy, dx, dy, idx, H)
    return fit_homography4(sx, sy, dx, dy, idx, H)


# ---------------------------------------------------------------- least squares


@njit(cache=True)
def weighted_means(sx, sy, dx, dy, w):
    """Total weight and weighted centroids (mx, my) of the sources, (mu, mv) of the destinations."""
    sw = 0.0
    mx = 0.0
    my = 0.0
    mu = 0.0
    mv = 0.0
    for i in range(sx.shape[0]):
        wi = w[i]
        if wi > 0.0:
            sw += wi
            mx += wi * sx[i]
            my += wi * sy[i]
            mu += wi * dx[i]
            mv += wi * dy[i]
    if sw > 0.0:
        mx /= sw
        my /= sw
        mu /= sw
        mv /= sw
    return sw, mx, my, mu, mv


@njit(cache=True)
def fit_affine_lsq(sx, sy, dx, dy, w, H):
    """Weighted least-squares affine map (weights w >= 0; zero weight = unused)."""
    sw, mx, my, mu, mv = weighted_means(sx, sy, dx, dy, w)
    if sw <= 0.0:
        return False
    # Centred normal equations: the translation drops out of the 2x2 system.
    sxx = 0.0
    sxy = 0.0
    syy = 0.0
    sxu = 0.0
    syu = 0.0
    sxv = 0.0
    syv = 0.0
    for i in range(sx.shape[0]):
        wi = w[i]
        if wi > 0.0:
            x = sx[i] - mx
            y = sy[i] - my
            u = dx[i] - mu
            v = dy[i] - mv
            sxx += wi * x * x
            sxy += wi * x * y
            syy += wi * y * y
            sxu += wi * x * u
            syu += wi * y * u
            sxv += wi * x * v
            syv += wi * y * v
    det = sxx * syy - sxy * sxy
    if det <= 1e-12 * (sxx * syy + 1e-300):
        return False
    inv = 1.0 / det
    a = (sxu * syy - syu * sxy) * inv
    bb = (syu * sxx - sxu * sxy) * inv
    c = (sxv * syy - syv * sxy) * inv
    d = (syv * sxx - sxv * sxy) * inv
    set_affine(H, a, bb, c, d, mu - a * mx - bb * my, mv - c * mx - d * my)
    return True


@njit(cache=True)
def fit_similarity_lsq(sx, sy, dx, dy, w, H):
    """Weighted least-squares similarity (no reflection), closed form."""
    sw, mx, my, mu, mv = weighted_means(sx, sy, dx, dy, w)
    if sw <= 0.0:
        return False
    den = 0.0
    pa = 0.0
    pb = 0.0
    for i in range(sx.shape[0]):
        wi = w[i]
        if wi > 0.0:
            x = sx[i] - mx
            y = sy[i] - my
            u = dx[i] - mu
            v = dy[i] - mv
            den += wi * (x * x + y * y)
            pa += wi * (x * u + y * v)
            pb += wi * (x * v - y * u)
    if den <= 0.0:
        return False
    a = pa / den
    b = pb / den
    set_affine(H, a, -b, b, a, mu - a * mx + b * my, mv - b * mx - a * my)
    return True


@njit(cache=True)
def smallest_eigenvector(M, out):
    """Unit eigenvector of the smallest eigenvalue of a symmetric matrix (cyclic Jacobi).

    Overwrites M. Own code rather than LAPACK: no workspace queries, no
    thread pool, and the same result on every machine.
    """
    n = M.shape[0]
    V = np.zeros((n, n))
    for p in range(n):
        V[p, p] = 1.0
    for sweep in range(50):
        off = 0.0
        diag = 0.0
        for p in range(n):
            diag += M[p, p] * M[p, p]
            for q in range(p + 1, n):
                off += M[p, q] * M[p, q]
        if off <= 1e-30 * diag or off == 0.0:
            break
        for p in range(n - 1):
            for q in range(p + 1, n):
                apq = M[p, q]
                if abs(apq) < 1e-300:
                    continue
                app = M[p, p]
                aqq = M[q, q]
                theta = (aqq - app) / (2.0 * apq)
                t = (1.0 if theta >= 0.0 else -1.0) / (abs(theta) + math.sqrt(theta * theta + 1.0))
                c = 1.0 / math.sqrt(t * t + 1.0)
                s = t * c
                for k in range(n):
                    mkp = M[k, p]
                    mkq = M[k, q]
                    M[k, p] = c * mkp - s * mkq
                    M[k, q] = s * mkp + c * mkq
                for k in range(n):
                    mpk = M[p, k]
                    mqk = M[q, k]
                    M[p, k] = c * mpk - s * mqk
                    M[q, k] = s * mpk + c * mqk
                for k in range(n):
                    vkp = V[k, p]
                    vkq = V[k, q]
                    V[k, p] = c * vkp - s * vkq
                    V[k, q] = s * vkp + c * vkq
    best = 0
    for p in range(1, n):
        if M[p, p] < M[best, best]:
            best = p
    for k in range(n):
        out[k] = V[k, best]


@njit(cache=True)
def fit_homography_lsq(sx, sy, dx, dy, w, H):
    """Weighted DLT: the eigenvector of the smallest eigenvalue of sum w a a^T.

    Points are assumed normalised already (the RANSAC driver normalises all
    correspondences once), which is what makes the algebraic fit usable.
    With p = (x, y, 1) the 9x9 matrix has blocks sum w p p^T times 1, -u,
    -v and u^2 + v^2, so four symmetric 3x3 sums (24 numbers) build it.
    """
    S = np.zeros(6)
    U = np.zeros(6)
    V = np.zeros(6)
    Q = np.zeros(6)
    cnt = 0
    for i in range(sx.shape[0]):
        wi = w[i]
        if wi <= 0.0:
            continue
        cnt += 1
        x = sx[i]
        y = sy[i]
        u = dx[i]
        v = dy[i]
        p0 = wi * x * x
        p1 = wi * x * y
        p2 = wi * x
        p3 = wi * y * y
        p4 = wi * y
        p5 = wi
        S[0] += p0
        S[1] += p1
        S[2] += p2
        S[3] += p3
        S[4] += p4
        S[5] += p5
        U[0] += u * p0
        U[1] += u * p1
        U[2] += u * p2
        U[3] += u * p3
        U[4] += u * p4
        U[5] += u * p5
        V[0] += v * p0
        V[1] += v * p1
        V[2] += v * p2
        V[3] += v * p3
        V[4] += v * p4
        V[5] += v * p5
        q = u * u + v * v
        Q[0] += q * p0
        Q[1] += q * p1
        Q[2] += q * p2
        Q[3] += q * p3
        Q[4] += q * p4
        Q[5] += q * p5
    if cnt < 4:
        return False
    M = np.zeros((9, 9))
    for r in range(3):
        for c in range(3):
            # Index of (r, c) of a symmetric 3x3 among its 6 packed entries.
            lo = min(r, c)
            k = 3 * lo - (lo * (lo - 1)) // 2 + abs(r - c)
            M[r, c] = S[k]
            M[3 + r, 3 + c] = S[k]
            M[r, 6 + c] = -U[k]
            M[6 + c, r] = -U[k]
            M[3 + r, 6 + c] = -V[k]
            M[6 + c, 3 + r] = -V[k]
            M[6 + r, 6 + c] = Q[k]
    h = np.empty(9)
    smallest_eigenvector(M, h)
    if abs(h[8]) < 1e-12:
        return False
    for k in range(9):
        H[k // 3, k % 3] = h[k] / h[8]
    return True


@njit(cache=True)
def refine_homography(sx, sy, dx, dy, w, H, iters, A, g):
    """Gauss-Newton on the weighted transfer error sum w |H(src) - dst|^2 (h22 fixed to 1).

    The DLT minimises an algebraic error that weighs points by their
    projective depth; this polishes it to the geometric one. With
    b = (x, y, 1) / z and c = (x, y) / z the normal matrix has blocks
    sum w b b^T, -sum w u' b c^T, -sum w v' b c^T and sum w (u'^2 + v'^2) c c^T
    (u', v' the mapped point), so 21 sums per point build it. ``A`` (8x8)
    and ``g`` (8) are scratch space. False if a step could not be solved.
    """
    S = np.empty(6)
    U = np.empty(6)
    V = np.empty(6)
    Q = np.empty(3)
    for _ in range(iters):
        for k in range(6):
            S[k] = 0.0
            U[k] = 0.0
            V[k] = 0.0
        for k in range(3):
            Q[k] = 0.0
        for k in range(8):
            g[k] = 0.0
        for i in range(sx.shape[0]):
            wi = w[i]
            if wi <= 0.0:
                continue
            x = sx[i]
            y = sy[i]
            z = H[2, 0] * x + H[2, 1] * y + H[2, 2]
            if z <= 1e-12:
                continue
            iz = 1.0 / z
            b0 = x * iz
            b1 = y * iz
            b2 = iz
            u = (H[0, 0] * x + H[0, 1] * y + H[0, 2]) * iz
            v = (H[1, 0] * x + H[1, 1] * y + H[1, 2]) * iz
            ru = u - dx[i]
            rv = v - dy[i]
            wb0 = wi * b0
            wb1 = wi * b1
            wb2 = wi * b2
            S[0] += wb0 * b0
            S[1] += wb0 * b1
            S[2] += wb0 * b2
            S[3] += wb1 * b1
            S[4] += wb1 * b2
            S[5] += wb2 * b2
            # b c^T (3x2), row-major
            U[0] += u * wb0 * b0
            U[1] += u * wb0 * b1
            U[2] += u * wb1 * b0
            U[3] += u * wb1 * b1
            U[4] += u * wb2 * b0
            U[5] += u * wb2 * b1
            V[0] += v * wb0 * b0
            V[1] += v * wb0 * b1
            V[2] += v * wb1 * b0
            V[3] += v * wb1 * b1
            V[4] += v * wb2 * b0
            V[5] += v * wb2 * b1
            q = u * u + v * v
            Q[0] += q * wb0 * b0
            Q[1] += q * wb0 * b1
            Q[2] += q * wb1 * b1
            g[0] -= ru * wb0
            g[1] -= ru * wb1
            g[2] -= ru * wb2
            g[3] -= rv * wb0
            g[4] -= rv * wb1
            g[5] -= rv * wb2
            t = u * ru + v * rv
            g[6] += t * wb0
            g[7] += t * wb1
        for r in range(8):
            for c in range(8):
                A[r, c] = 0.0
        A[0, 0] = S[0]
        A[0, 1] = S[1]
        A[0, 2] = S[2]
        A[1, 1] = S[3]
        A[1, 2] = S[4]
        A[2, 2] = S[5]
        for r in range(3):
            for c in range(r, 3):
                A[3 + r, 3 + c] = A[r, c]
            A[r, 6] = -U[2 * r]
            A[r, 7] = -U[2 * r + 1]
            A[3 + r, 6] = -V[2 * r]
            A[3 + r, 7] = -V[2 * r + 1]
        A[6, 6] = Q[0]
        A[6, 7] = Q[1]
        A[7, 7] = Q[2]
        for r in range(8):
            for c in range(r):
                A[r, c] = A[c, r]
            # A touch of Levenberg damping keeps near-singular steps bounded.
            A[r, r] *= 1.0 + 1e-9
        if not solve_inplace(A, g, 8):
            return False
        H[0, 0] += g[0]
        H[0, 1] += g[1]
        H[0, 2] += g[2]
        H[1, 0] += g[3]
        H[1, 1] += g[4]
        H[1, 2] += g[5]
        H[2, 0] += g[6]
        H[2, 1] += g[7]
    return True


@njit(cache=True)
def fit_lsq(model_id, sx, sy, dx, dy, w, H):
    if model_id == AFFINE:
        return fit_affine_lsq(sx, sy, dx, dy, w, H)
    if model_id == SIMILARITY:
        return fit_similarity_lsq(sx, sy, dx, dy, w, H)
    return fit_homography_lsq(sx, sy, dx, dy, w, H)


# ---------------------------------------------------------------- residuals and scores


@njit(cache=True)
def residuals_sq(model_id, H, sx, sy, dx, dy, out):
    """Squared transfer error |H(src) - dst|^2 per correspondence.

    Points that a homography sends behind the camera get +inf.
    """
    h00 = H[0, 0]
    h01 = H[0, 1]
    h02 = H[0, 2]
    h10 = H[1, 0]
    h11 = H[1, 1]
    h12 = H[1, 2]
    if model_id == HOMOGRAPHY:
        h20 = H[2, 0]
        h21 = H[2, 1]
        h22 = H[2, 2]
        for i in range(sx.shape[0]):
            z = h20 * sx[i] + h21 * sy[i] + h22
            if z <= 1e-12:
                out[i] = np.inf
            else:
                iz = 1.0 / z
                ex = (h00 * sx[i] + h01 * sy[i] + h02) * iz - dx[i]
                ey = (h10 * sx[i] + h11 * sy[i] + h12) * iz - dy[i]
                out[i] = ex * ex + ey * ey
    else:
        for i in range(sx.shape[0]):
            ex = h00 * sx[i] + h01 * sy[i] + h02 - dx[i]
            ey = h10 * sx[i] + h11 * sy[i] + h12 - dy[i]
            out[i] = ex * ex + ey * ey


@njit(cache=True)
def msac_score(model_id, H, sx, sy, dx, dy, thr2, bound):
    """Truncated quadratic loss sum(min(r^2, thr^2)); stops once it exceeds ``bound``.

    A partial sum above the best score so far already proves the model
    loses, so most bad hypotheses are dropped after a fraction of the points.
    """
    h00 = H[0, 0]
    h01 = H[0, 1]
    h02 = H[0, 2]
    h10 = H[1, 0]
    h11 = H[1, 1]
    h12 = H[1, 2]
    n = sx.shape[0]
    s = 0.0
    if model_id == HOMOGRAPHY:
        h20 = H[2, 0]
        h21 = H[2, 1]
        h22 = H[2, 2]
        for i in range(n):
            z = h20 * sx[i] + h21 * sy[i] + h22
            r2 = thr2
            if z > 1e-12:
                iz = 1.0 / z
                ex = (h00 * sx[i] + h01 * sy[i] + h02) * iz - dx[i]
                ey = (h10 * sx[i] + h11 * sy[i] + h12) * iz - dy[i]
                e = ex * ex + ey * ey
                if e < thr2:
                    r2 = e
            s += r2
            if s > bound:
                return s
    else:
        for i in range(n):
            ex = h00 * sx[i] + h01 * sy[i] + h02 - dx[i]
            ey = h10 * sx[i] + h11 * sy[i] + h12 - dy[i]
            e = ex * ex + ey * ey
            s += e if e < thr2 else thr2
            if s > bound:
                return s
    return s


@njit(cache=True)
def count_inliers(model_id, H, sx, sy, dx, dy, thr2, r2buf, weights, tukey):
    """Inlier count; writes per-point weights for a refit.

    Weights are 1 for inliers (0 for the rest), or with ``tukey`` the
    biweight (1 - r^2/thr^2)^2, which lets points near the threshold
    (often outliers that happen to fit) pull the refit less.
    """
    residuals_sq(model_id, H, sx, sy, dx, dy, r2buf)
    cnt = 0
    for i in range(sx.shape[0]):
        e = r2buf[i]
        if e < thr2:
            cnt += 1
            if tukey:
                t = 1.0 - e / thr2
                weights[i] = t * t
            else:
                weights[i] = 1.0
        else:
            weights[i] = 0.0
    return cnt


@njit(cache=True)
def tukey_cost(model_id, H, sx, sy, dx, dy, c2, r2buf):
    """Sum of Tukey's biweight loss with squared scale c2 (its IRLS weights are (1 - r^2/c2)^2)."""
    residuals_sq(model_id, H, sx, sy, dx, dy, r2buf)
    s = 0.0
    for i in range(sx.shape[0]):
        e = r2buf[i]
        if e < c2:
            t = 1.0 - e / c2
            s += 1.0 - t * t * t
        else:
            s += 1.0
    return s * c2 / 6.0


@njit(cache=True)
def msac_full(model_id, H, sx, sy, dx, dy, thr2, r2buf):
    residuals_sq(model_id, H, sx, sy, dx, dy, r2buf)
    s = 0.0
    for i in range(sx.shape[0]):
        e = r2buf[i]
        s += e if e < thr2 else thr2
    return s


# ---------------------------------------------------------------- RANSAC


@njit(cache=True)
def _copy3(src, dst):
    for r in range(3):
        for c in range(3):
            dst[r, c] = src[r, c]


@njit(cache=True)
def _local_opt(model_id, sx, sy, dx, dy, thr2, H, score, iters, r2buf, w, cand,
               min_scale2, max_scale2, allow_reflection, m, tukey):
    """Iterated least-squares refits on the inliers of H; keeps each improvement.

    Returns the (possibly improved) score; H is updated in place.
    """
    for _ in range(iters):
        cnt = count_inliers(model_id, H, sx, sy, dx, dy, thr2, r2buf, w, tukey)
        if cnt <= m:
            break
        if not fit_lsq(model_id, sx, sy, dx, dy, w, cand):
            break
        if not model_ok(model_id, cand, min_scale2, max_scale2, allow_reflection):
            break
        s = msac_full(model_id, cand, sx, sy, dx, dy, thr2, r2buf)
        if s < score:
            score = s
            _copy3(cand, H)
        else:
            break
    return score


@njit(cache=True)
def prosac_trials(inlier_weights, m, confidence, min_trials, max_trials, beta):
    """PROSAC's stopping rule: trials needed judged on the best-quality prefixes.

    With rows sorted best first, the inlier ratio of a prefix of n rows is
    what PROSAC's samples see; any prefix whose inlier count could not come
    from a wrong model by chance (binomial with success ``beta``, about
    three standard deviations above its mean) may set the number of trials.
    Returns the smallest such number (``max_trials`` if none qualifies).
    """
    # Fewer trials for a higher ratio: only the best qualifying ratio matters,
    # and it can only peak at a prefix ending on an inlier.
    best_ratio = -1.0
    inl = 0
    for k in range(inlier_weights.shape[0]):
        if inlier_weights[k] <= 0.0:
            continue
        inl += 1
        nn = k + 1
        if nn <= m:
            continue
        ratio = inl / nn
        if ratio <= best_ratio:
            continue
        q = nn - m
        if inl >= m + beta * q + 3.0 * math.sqrt(beta * (1.0 - beta) * q):
            best_ratio = ratio
    if best_ratio < 0.0:
        return max_trials
    return adaptive_trials(best_ratio, m, confidence, min_trials, max_trials)


@njit(cache=True)
def denormalise(B, ss, scx, scy, ds, dcx, dcy, projective, out):
    """Pixel-space model T_dst^-1 B T_src, with T(p) = s (p - c).

    Written out by hand: a matrix product here would pull BLAS into the
    compiled kernel for nine multiply-adds.
    """
    c = np.empty((3, 3))
    for r in range(3):
        c[r, 0] = B[r, 0] * ss
        c[r, 1] = B[r, 1] * ss
        c[r, 2] = B[r, 2] - B[r, 0] * ss * scx - B[r, 1] * ss * scy
    for k in range(3):
        out[0, k] = c[0, k] / ds + dcx * c[2, k]
        out[1, k] = c[1, k] / ds + dcy * c[2, k]
        out[2, k] = c[2, k]
    if projective:
        z = out[2, 2]
        if z != 0.0 and np.isfinite(z):
            for r in range(3):
                for k in range(3):
                    out[r, k] /= z
    else:
        out[2, 0] = 0.0
        out[2, 1] = 0.0
        out[2, 2] = 1.0


@njit(cache=True)
def clear_result(out_model, out_mask):
    """The "no model" result: a zero matrix and no inliers."""
    for i in range(out_mask.shape[0]):
        out_mask[i] = False
    for r in range(3):
        for c in range(3):
            out_model[r, c] = 0.0


@njit(cache=True)
def bounding_box(xs, ys):
    """(x0, y0, x1, y1) of non-empty coordinate vectors."""
    x0 = xs[0]
    x1 = xs[0]
    y0 = ys[0]
    y1 = ys[0]
    for i in range(1, xs.shape[0]):
        x0 = min(x0, xs[i])
        x1 = max(x1, xs[i])
        y0 = min(y0, ys[i])
        y1 = max(y1, ys[i])
    return x0, y0, x1, y1


@njit(cache=True)
def ransac_core(src, dst, model_id, thr, confidence, min_trials, max_trials, order,
                min_scale, max_scale, allow_reflection, lo_iters, final_iters, seed,
                out_model, out_mask):
    """RANSAC over one pair of aligned (N, 2) float64 arrays.

    When ``order`` holds N row indices, best quality first, samples are
    drawn from a growing prefix of that order (PROSAC) and the stopping rule
    also looks at prefixes; with an empty ``order``, uniformly. Scores are
    MSAC; each new best model is polished by iterated least squares; the
    winner gets a final (biweight) least-squares refit. Writes the pixel-space
    model into ``out_model`` and the inliers into ``out_mask``; returns
    (inlier count, trials). An inlier count of 0 means no model.
    """
    n = src.shape[0]
    m = sample_size(model_id)
    clear_result(out_model, out_mask)
    if n < m:
        return 0, 0

    # Normalise once: minimal solvers and the DLT work in well-conditioned
    # units, and the pixel threshold scales with the destination factor.
    prosac = order.shape[0] == n
    sx = np.empty(n)
    sy = np.empty(n)
    dx = np.empty(n)
    dy = np.empty(n)
    for i in range(n):
        j = order[i] if prosac else i
        sx[i] = src[j, 0]
        sy[i] = src[j, 1]
        dx[i] = dst[j, 0]
        dy[i] = dst[j, 1]
    scx, scy, ss = normalisation(sx, sy)
    dcx, dcy, ds = normalisation(dx, dy)
    for i in range(n):
        sx[i] = (sx[i] - scx) * ss
        sy[i] = (sy[i] - scy) * ss
        dx[i] = (dx[i] - dcx) * ds
        dy[i] = (dy[i] - dcy) * ds
    thr_n = thr * ds
    thr2 = thr_n * thr_n
    # det of the linear part in normalised units = (ds / ss)^2 * pixel det.
    k2 = (ds / ss) ** 2
    min_scale2 = min_scale * min_scale * k2
    max_scale2 = max_scale * max_scale * k2

    # Chance that an outlier lands within the threshold of a wrong model:
    # the threshold disc over the area the destination points cover.
    beta = 0.01
    if prosac:
        x0, y0, x1, y1 = bounding_box(dx, dy)
        area = (x1 - x0) * (y1 - y0)
        if area > 0.0:
            beta = min(0.5, max(0.01, math.pi * thr2 / area))

    state = rng_init(seed)
    idx = np.empty(m, dtype=np.int64)
    H = np.empty((3, 3))
    best = np.zeros((3, 3))
    cand = np.empty((3, 3))
    r2buf = np.empty(n)
    w = np.empty(n)

    best_score = np.inf
    found = False
    needed = max_trials
    trials = 0

    # PROSAC growth: after T'_k trials samples come from the k best points.
    k_sub = m
    t_k = float(max_trials)
    for i in range(m):
        t_k *= (m - i) / (n - i)
    t_prime = 1

    while trials < needed:
        trials += 1
        if prosac and k_sub < n:
            while k_sub < n and trials > t_prime:
                t_next = t_k * (k_sub + 1) / (k_sub + 1 - m)
                t_prime += int(math.ceil(t_next - t_k))
                t_k = t_next
                k_sub += 1
            if trials <= t_prime:
                # The newest point joins m - 1 drawn from the points before it.
                idx[0] = k_sub - 1
                draw_distinct(state, 0, k_sub - 1, m - 1, idx, 1)
            else:
                draw_distinct(state, 0, k_sub, m, idx, 0)
        else:
            draw_distinct(state, 0, n, m, idx, 0)

        if not sample_ok(model_id, sx, sy, dx, dy, idx, allow_reflection):
            continue
        if not fit_minimal(model_id, sx, sy, dx, dy, idx, H):
            continue
        if not model_ok(model_id, H, min_scale2, max_scale2, allow_reflection):
            continue
        s = msac_score(model_id, H, sx, sy, dx, dy, thr2, best_score)
        if s >= best_score:
            continue
        best_score = s
        _copy3(H, best)
        found = True
        if lo_iters > 0:
            best_score = _local_opt(model_id, sx, sy, dx, dy, thr2, best, best_score, lo_iters,
                                    r2buf, w, cand, min_scale2, max_scale2, allow_reflection, m,
                                    False)
        cnt = count_inliers(model_id, best, sx, sy, dx, dy, thr2, r2buf, w, False)
        needed = adaptive_trials(cnt / n, m, confidence, min_trials, max_trials)
        if prosac:
            needed = min(needed, prosac_trials(w, m, confidence, min_trials, max_trials, beta))

    if not found:
        return 0, trials

    if final_iters > 0:
        # Final polish: iteratively reweighted least squares with Tukey's
        # biweight reaching 1.5 thresholds. Hard inlier sets make the fit jump
        # with every point crossing the threshold; smooth weights that fade
        # out past it (as MAGSAC++'s marginalised ones do) gave models that
        # were more stable across thresholds on the homography benchmark.
        c2 = _FINAL_REACH * _FINAL_REACH * thr2
        A = np.empty((8, 8))
        g = np.empty(8)
        cost = tukey_cost(model_id, best, sx, sy, dx, dy, c2, r2buf)
        for _ in range(final_iters):
            cnt = count_inliers(model_id, best, sx, sy, dx, dy, c2, r2buf, w, True)
            if cnt <= m:
                break
            if model_id == HOMOGRAPHY:
                _copy3(best, cand)
                ok = refine_homography(sx, sy, dx, dy, w, cand, 1, A, g)
            else:
                ok = fit_lsq(model_id, sx, sy, dx, dy, w, cand)
            if not ok or not model_ok(model_id, cand, min_scale2, max_scale2, allow_reflection):
                break
            c = tukey_cost(model_id, cand, sx, sy, dx, dy, c2, r2buf)
            if c < cost:
                # Stop once an iteration gains next to nothing.
                done = c > cost * (1.0 - 1e-9)
                cost = c
                _copy3(cand, best)
                if done:
                    break
            else:
                break

    cnt = count_inliers(model_id, best, sx, sy, dx, dy, thr2, r2buf, w, False)
    for i in range(n):
        out_mask[order[i] if prosac else i] = w[i] > 0.0

    denormalise(best, ss, scx, scy, ds, dcx, dcy, model_id == HOMOGRAPHY, out_model)
    return cnt, trials


@njit(cache=True)
def spans_plane(pts):
    """False when all points coincide or lie on one line (no affine map is defined then)."""
    n = pts.shape[0]
    mx = 0.0
    my = 0.0
    for i in range(n):
        mx += pts[i, 0]
        my += pts[i, 1]
    mx /= n
    my /= n
    sxx = 0.0
    sxy = 0.0
    syy = 0.0
    for i in range(n):
        x = pts[i, 0] - mx
        y = pts[i, 1] - my
        sxx += x * x
        sxy += x * y
        syy += y * y
    tr = sxx + syy
    if tr <= 0.0:
        return False
    # det / tr^2 is about the ratio of the two principal variances: ~0 when collinear.
    return sxx * syy - sxy * sxy > 1e-12 * tr * tr


@njit(cache=True)
def not_all_equal(pts):
    for i in range(1, pts.shape[0]):
        if pts[i, 0] != pts[0, 0] or pts[i, 1] != pts[0, 1]:
            return True
    return False


@njit(cache=True)
def usable(src, dst, model_id):
    """Whether a model of this type can be fitted at all (enough points, not degenerate)."""
    n = src.shape[0]
    m = sample_size(model_id)
    if n < m:
        return False
    if model_id == SIMILARITY:
        return not_all_equal(src) and not_all_equal(dst)
    return spans_plane(src) and spans_plane(dst)


@njit(cache=True)
def grid_spread(pts, mask, width, height, grid):
    """Fraction of the grid x grid cells holding a masked point.

    The photo is [0, width) x [0, height), or, when width <= 0, the bounding
    box of all points.
    """
    n = pts.shape[0]
    if width > 0.0 and height > 0.0:
        x0 = 0.0
        y0 = 0.0
        w = width
        h = height
    else:
        if n == 0:
            return 0.0
        x0, y0, x1, y1 = bounding_box(pts[:, 0], pts[:, 1])
        w = max(x1 - x0, 1e-9)
        h = max(y1 - y0, 1e-9)
    cells = np.zeros(grid * grid, dtype=np.bool_)
    fx = grid / w
    fy = grid / h
    count = 0
    for i in range(n):
        if not mask[i]:
            continue
        cx = int(math.floor((pts[i, 0] - x0) * fx))
        cy = int(math.floor((pts[i, 1] - y0) * fy))
        cx = min(max(cx, 0), grid - 1)
        cy = min(max(cy, 0), grid - 1)
        c = cy * grid + cx
        if not cells[c]:
            cells[c] = True
            count += 1
    return count / (grid * grid)


@njit(cache=True)
def quality_order(quality):
    """Row indices best quality first: a stable counting sort on 1024 quality levels.

    PROSAC only needs the better correspondences roughly first, and a full
    comparison sort would cost a third of a typical verification.
    """
    n = quality.shape[0]
    order = np.empty(n, dtype=np.int64)
    if n == 0:
        return order
    lo = quality[0]
    hi = quality[0]
    for i in range(n):
        lo = min(lo, quality[i])
        hi = max(hi, quality[i])
    levels = 1024
    counts = np.zeros(levels + 1, dtype=np.int64)
    scale = (levels - 1) / (hi - lo) if hi > lo else 0.0
    key = np.empty(n, dtype=np.int64)
    for i in range(n):
        # Level 0 = best.
        k = int((hi - quality[i]) * scale)
        key[i] = k
        counts[k + 1] += 1
    for k in range(levels):
        counts[k + 1] += counts[k]
    for i in range(n):
        k = key[i]
        order[counts[k]] = i
        counts[k] += 1
    return order


@njit(cache=True)
def verify_pair(src, dst, quality, model_id, thr, confidence, min_trials, max_trials, prosac, min_scale,
                max_scale, allow_reflection, lo_iters, final_iters, seed, grid, sizes,
                out_model, out_mask, out_info):
    """Degeneracy check, RANSAC and spread of one pair in one compiled call.

    ``quality`` (N,), higher = better, orders the PROSAC samples when
    ``prosac`` is set (ignored otherwise; may then be empty).
    ``sizes`` = (src w, src h, dst w, dst h), zeros where unknown;
    ``out_info`` receives (inliers, trials, spread in src, spread in dst).
    """
    for k in range(4):
        out_info[k] = 0.0
    if not usable(src, dst, model_id):
        clear_result(out_model, out_mask)
        return
    if prosac and quality.shape[0] == src.shape[0]:
        order = quality_order(quality)
    else:
        order = np.empty(0, dtype=np.int64)
    cnt, trials = ransac_core(src, dst, model_id, thr, confidence, min_trials, max_trials, order,
                              min_scale, max_scale, allow_reflection, lo_iters, final_iters, seed,
                              out_model, out_mask)
    out_info[0] = cnt
    out_info[1] = trials
    if cnt > 0:
        out_info[2] = grid_spread(src, out_mask, sizes[0], sizes[1], grid)
        out_info[3] = grid_spread(dst, out_mask, sizes[2], sizes[3], grid)


@njit(cache=True, parallel=True)
def verify_batch(src, dst, quality, offsets, model_id, thr, confidence, min_trials, max_trials, prosac,
                 min_scale, max_scale, allow_reflection, lo_iters, final_iters, seeds, grid, sizes,
                 out_models, out_mask, out_info):
    """``verify_pair`` over many pairs in parallel; pair p owns rows offsets[p]:offsets[p+1].

    ``quality`` is concatenated like the points (empty without ``prosac``);
    ``sizes`` is (P, 4) and ``out_info`` (P, 4), one row per pair.
    """
    for p in prange(offsets.shape[0] - 1):
        a = offsets[p]
        e = offsets[p + 1]
        q = quality[a:e] if prosac else quality[0:0]
        verify_pair(src[a:e], dst[a:e], q, model_id, thr, confidence, min_trials, max_trials, prosac,
                    min_scale, max_scale, allow_reflection, lo_iters, final_iters, seeds[p], grid,
                    sizes[p], out_models[p], out_mask[a:e], out_info[p])
